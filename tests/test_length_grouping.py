"""Length-grouped batches for the tiny models' causal-LM training (backbone pre-training, policy SFT)."""

from __future__ import annotations

import torch
from conftest import TINY_BACKBONE

from harness.backbones import TinyBackbone, draws


def test_one_chunk_draws_the_random_batches_of_before():
    lengths = torch.randint(5, 90, (500,), generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(7)
    got = list(draws(500, lengths, steps=6, batch_size=32, bucket_chunks=1, generator=gen))
    gen = torch.Generator().manual_seed(7)
    expected = [torch.randint(0, 500, (32,), generator=gen) for _ in range(6)]
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


def test_grouped_draws_keep_the_rows_and_cut_the_padding():
    lengths = torch.randint(5, 90, (2000,), generator=torch.Generator().manual_seed(1))
    random_batches = list(draws(2000, lengths, steps=40, batch_size=32, bucket_chunks=1,
                                generator=torch.Generator().manual_seed(3)))
    grouped = list(draws(2000, lengths, steps=40, batch_size=32, bucket_chunks=16,
                         generator=torch.Generator().manual_seed(3)))
    assert len(grouped) == 40 and all(len(b) == 32 for b in grouped)  # 40 = 2 chunks of 16 + a chunk of 8
    # Each chunk holds the rows one draw of its size gives, only regrouped.
    gen = torch.Generator().manual_seed(3)
    for start, size in ((0, 16), (16, 16), (32, 8)):
        drawn = torch.randint(0, 2000, (size * 32,), generator=gen)
        torch.randperm(size, generator=gen)  # the batch order's shuffle
        assert sorted(torch.cat(grouped[start:start + size]).tolist()) == sorted(drawn.tolist())

    def padded_tokens(batches):
        return sum(int(lengths[b].max()) * len(b) for b in batches)

    assert padded_tokens(grouped) < 0.8 * padded_tokens(random_batches)


def test_random_batches_keep_the_cache_key_of_before_grouping_existed():
    plain = TinyBackbone(**TINY_BACKBONE)
    assert "pretrain_bucket_chunks" not in plain.spec
    assert TinyBackbone(**TINY_BACKBONE, pretrain_bucket_chunks=1).spec == plain.spec
    assert TinyBackbone(**TINY_BACKBONE, pretrain_bucket_chunks=16).spec["pretrain_bucket_chunks"] == 16


def test_policy_random_batches_keep_their_cache_key_too():
    from conftest import TINY_POLICY

    from harness.optimize.policy import TinyPolicy

    kwargs = {k: v for k, v in TINY_POLICY.items() if k != "_target_"}
    assert "sft_bucket_chunks" not in TinyPolicy(**kwargs).sft
    assert TinyPolicy(**kwargs, sft_bucket_chunks=16).sft["sft_bucket_chunks"] == 16
