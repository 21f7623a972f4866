"""Padding-free reward forwards (harness/packing.py): a packed row gives the padded batch's rewards (and
gradients) on the CPU with sdpa, no attention mask and no KV cache."""

import logging

import pytest
import torch
from conftest import compose
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
    Qwen2Config,
    Qwen2ForSequenceClassification,
)

from harness.device import resolve_compute
from harness.job import build
from harness.packing import PACK_MULTIPLE, can_pack, note_padded, pack, packed_logits, sequence_logits, use_packing

TINY = dict(vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, pad_token_id=0, num_labels=1)


def tiny_rm(cls=LlamaForSequenceClassification, config_cls=LlamaConfig, **extra):
    torch.manual_seed(0)
    return cls(config_cls(**TINY, **extra, attn_implementation="sdpa"))


def right_padded(lengths: list[int], seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    T = max(lengths)
    mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()
    ids = torch.randint(1, TINY["vocab_size"], (len(lengths), T), generator=gen) * mask  # pad id 0
    return ids, mask


def test_pack_restarts_positions_and_finds_each_last_token():
    ids, mask = right_padded([3, 1, 4])
    row = pack(ids, mask)
    assert row.input_ids.shape == (1, PACK_MULTIPLE) == row.position_ids.shape
    assert row.position_ids[0, :8].tolist() == [0, 1, 2, 0, 0, 1, 2, 3]
    assert row.last.tolist() == [2, 3, 7]
    assert torch.equal(row.input_ids[0, row.last], ids[torch.arange(3), mask.sum(1) - 1])
    # The padding segment is a sequence of its own: positions restart at 0 after the last real token.
    assert row.position_ids[0, 8:11].tolist() == [0, 1, 2]
    exact = pack(ids, mask, multiple=1)
    assert exact.input_ids.shape == (1, 8)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_packed_rewards_equal_padded_rewards(family):
    model = (tiny_rm() if family == "llama" else
             tiny_rm(Qwen2ForSequenceClassification, Qwen2Config)).eval()
    ids, mask = right_padded([5, 12, 1, 9, 12, 3])
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        packed = packed_logits(model, ids, mask)
    assert packed.shape == padded.shape == (6, 1)
    assert torch.allclose(packed, padded, atol=1e-5), (packed - padded).abs().max()
    # Without the restarts the sequences would read each other: the test can tell the difference.
    row = pack(ids, mask)
    with torch.no_grad():
        hidden = model.base_model(input_ids=row.input_ids, position_ids=torch.arange(row.input_ids.shape[1])[None],
                                  use_cache=False).last_hidden_state
    leaked = model.score(hidden[0, row.last])
    assert not torch.allclose(leaked[1:], padded[1:], atol=1e-3)


def test_packed_gradients_equal_padded_gradients():
    ids, mask = right_padded([4, 7, 2, 7], seed=1)
    grads = []
    for packed in (False, True):
        model = tiny_rm().train()
        logits = packed_logits(model, ids, mask) if packed else model(input_ids=ids, attention_mask=mask,
                                                                       use_cache=False).logits
        r_chosen, r_rejected = logits.squeeze(-1).chunk(2)
        (-torch.nn.functional.logsigmoid(r_chosen - r_rejected).mean()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-5), name


def test_which_models_pack_and_when():
    llama = tiny_rm()
    bert = BertForSequenceClassification(BertConfig(vocab_size=101, hidden_size=32, num_hidden_layers=1,
                                                    num_attention_heads=4, intermediate_size=64, num_labels=1))
    assert can_pack(llama) and not can_pack(bert)
    # auto packs only on a GPU with flex / flash attention; on packs wherever the model can (sdpa on the CPU).
    assert not use_packing(llama, resolve_compute("cpu", packing="auto"))
    assert not use_packing(llama, resolve_compute("cpu", packing="off"))
    assert use_packing(llama, resolve_compute("cpu", packing="on"))
    assert llama.config._attn_implementation == "sdpa"
    assert not use_packing(bert, resolve_compute("cpu", packing="on"))


def test_sequence_logits_packed_on_the_cpu_matches_padded():
    ids, mask = right_padded([6, 2, 9])
    padded_model, packed_model = tiny_rm().eval(), tiny_rm().eval()
    with torch.no_grad():
        padded = sequence_logits(padded_model, ids, mask)
        packed = sequence_logits(packed_model, ids, mask, resolve_compute("cpu", packing="on"))
    assert torch.allclose(padded, packed, atol=1e-5)


def test_padding_free_training_on_the_cpu_follows_padded_training(tiny):
    """The shared loop with packing=on (sdpa on the CPU) trains a single RM to the weights padded training
    reaches, up to float summation order; and its scores are the padded scores."""
    from harness.archs.single import SingleRM
    from harness.archs.train import train_bradley_terry

    trained = {}
    for packing in ("off", "on"):
        rm = SingleRM()
        ctx = tiny.ctx(epochs=1)
        rm.build(ctx, 0)
        rm.compute = resolve_compute("cpu", packing=packing)
        result = train_bradley_terry(rm, list(rm.model.parameters()), tiny.train, tiny.val, ctx.train, 0)
        trained[packing] = (rm, result)
    (padded, r_off), (packed, r_on) = trained["off"], trained["on"]
    assert use_packing(packed.model, packed.compute) and not use_packing(padded.model, padded.compute)
    assert r_on["steps"] == r_off["steps"] and r_on["best_val_acc"] == r_off["best_val_acc"]
    for (name, a), b in zip(padded.model.named_parameters(), packed.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-4), name
    assert torch.allclose(packed.score(tiny.test.chosen), padded.score(tiny.test.chosen), atol=1e-4)


@pytest.mark.parametrize("name", ["more", "umm", "dmoerm", "arliss", "armo"])
def test_architectures_that_cannot_pack_stay_padded_and_say_so_once(name, caplog):
    """more / umm (balance losses on the padded layout), dmoerm (peft experts pooling padded hidden states),
    arliss (peft's multi-adapter model) and armo (hidden states of the response and of the prompt) keep padded
    forwards: where packing is wanted the job logs one line."""
    arch = build(compose([f"arch={name}"]).arch, "arch")
    with caplog.at_level(logging.INFO, logger="harness.packing"):
        assert note_padded(arch, resolve_compute("cpu", "fp32", "on"))
        assert not note_padded(arch, resolve_compute("cpu", "fp32", "auto"))  # the CPU packs only when asked
        assert not note_padded(arch, resolve_compute("cpu", "fp32", "off"))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and type(arch).__name__ in lines[0] and "length-bucketed" in lines[0]
    assert not note_padded(build(compose(["arch=single"]).arch, "arch"), resolve_compute("cpu", "fp32", "on"))
