"""arch=odin: ODIN's two losses against reference computations on hand-made values, the forward's two modes, the
heads as views, the quality head exported as a plain transformers model, and a tiny job with both length-bias
blocks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_OVERRIDES, compose
from transformers import AutoModelForSequenceClassification

from harness.archs.odin import (
    LENGTH,
    ODINRM,
    QUALITY,
    length_correlation_loss,
    orthogonality_loss,
    pearson,
    response_tokens,
)
from harness.data.schema import Batch
from harness.job import build, run_job

# A hand-made batch: six sequences' heads and response lengths, neither head a linear function of the length.
QUALITY_HEAD = [0.3, -1.2, 0.8, 2.0, -0.4, 0.1]
LENGTH_HEAD = [1.0, 2.5, 0.2, 3.1, 1.7, -0.6]
TOKENS = [5.0, 12.0, 3.0, 15.0, 9.0, 2.0]


def test_correlation_loss_is_odins_on_a_hand_made_batch():
    quality, length, n = (torch.tensor(v, dtype=torch.float64) for v in (QUALITY_HEAD, LENGTH_HEAD, TOKENS))
    # The repository's computation: torch.corrcoef of (length, head) rows; here numpy's, independently.
    rho_l = np.corrcoef(TOKENS, LENGTH_HEAD)[0, 1]
    rho_q = np.corrcoef(TOKENS, QUALITY_HEAD)[0, 1]
    assert 0 < rho_l < 1 and rho_q != 0
    assert length_correlation_loss(quality, length, n).item() == pytest.approx((1 - rho_l) + abs(rho_q), rel=1e-9)
    # A length head that is the length and a quality head uncorrelated with it: no loss.
    centred = torch.tensor([1.0, -1.0, 1.0, -1.0])
    lengths = torch.tensor([1.0, 1.0, 3.0, 3.0])
    assert float(pearson(centred, lengths)) == 0.0
    assert length_correlation_loss(centred, 2 * lengths + 1, lengths).item() == pytest.approx(0.0, abs=1e-9)
    # All lengths equal: no correlation to read (0, not 0/0), and the gradient stays finite.
    heads = torch.tensor(LENGTH_HEAD, requires_grad=True)
    same = torch.full((6,), 7.0)
    loss = length_correlation_loss(heads, heads, same)
    loss.backward()
    assert loss.item() == pytest.approx(1.0) and torch.isfinite(heads.grad).all()


def test_orthogonality_loss_is_zero_for_orthogonal_heads_and_the_abs_cosine_otherwise():
    assert orthogonality_loss(torch.tensor([[3.0, 0.0, 0.0], [0.0, -2.0, 0.0]])).item() == 0.0
    assert orthogonality_loss(torch.tensor([[1.0, 2.0, 0.0], [-4.0, 2.0, 5.0]])).item() == pytest.approx(0.0, abs=1e-7)
    assert orthogonality_loss(torch.tensor([[1.0, 2.0, 3.0], [-2.0, -4.0, -6.0]])).item() == pytest.approx(1.0)
    a, b = np.array([0.5, -1.0, 2.0]), np.array([1.5, 0.3, -0.2])
    cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    assert orthogonality_loss(torch.tensor(np.stack([a, b]))).item() == pytest.approx(abs(cos), rel=1e-6)


def test_response_tokens_leave_the_prompt_out():
    batch = Batch(input_ids=torch.zeros(2, 6, dtype=torch.long),
                  attention_mask=torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]]),
                  prompt_ids=torch.zeros(2, 3, dtype=torch.long), prompt_mask=torch.tensor([[1, 1, 0], [1, 1, 1]]),
                  domain=torch.zeros(2, dtype=torch.long))
    assert response_tokens(batch).tolist() == [3.0, 3.0]


@pytest.mark.parametrize("key,value", [("length_coef", -1.0), ("orthogonality_coef", float("nan")),
                                       ("length_coef", True)])
def test_bad_coefficients_name_the_key(key, value):
    with pytest.raises(ValueError, match=key):
        ODINRM(**{"length_coef": 1.0, "orthogonality_coef": 1.0, key: value})


def test_training_reads_the_sum_and_the_losses_scoring_the_quality_head(exported, tiny):
    _, rm, out, _ = exported("odin")
    batch = tiny.train.batch(torch.arange(8))
    rm.eval()
    with torch.no_grad():
        quality, length = rm.heads(batch)
        scored = rm(batch)
        trained = rm.train()(batch)
    rm.eval()
    torch.testing.assert_close(scored.reward, quality)
    assert scored.aux_loss is None
    torch.testing.assert_close(trained.reward, quality + length)
    # The aux loss is the two losses with their YAML weights (conf/arch/odin.yaml).
    want = (rm.length_coef * length_correlation_loss(quality, length, response_tokens(batch))
            + rm.orthogonality_coef * orthogonality_loss(rm.model.score.weight))
    torch.testing.assert_close(trained.aux_loss, want)
    # The views: the quality head is the reward; sum = quality + length.
    seqs = tiny.test.chosen
    views = {name: rm.score(seqs, scorer=view.score) for name, view in rm.views().items()}
    assert set(views) == {"quality", "length", "sum"}
    torch.testing.assert_close(views["quality"], rm.score(seqs))
    torch.testing.assert_close(views["sum"], views["quality"] + views["length"], atol=1e-5, rtol=1e-5)
    assert rm.fit_report()["heads_abs_cos"] == pytest.approx(orthogonality_loss(rm.model.score.weight).item())
    assert rm.model.score.weight.shape[0] == 2 and (QUALITY, LENGTH) == (0, 1)


def test_after_training_the_length_head_follows_length_and_the_quality_head_less(exported, tiny):
    """On the test responses (not trained on), the length head's rewards correlate with response length in tokens
    (as ``response_tokens`` counts it) and the quality head's much less (measured: 0.90 and -0.24)."""
    _, rm, _, _ = exported("odin")
    seqs = tiny.test.chosen
    tokens = (seqs.lengths - seqs.prompt_lengths).double()
    corr = {name: float(pearson(rm.score(seqs, scorer=view.score).double(), tokens))
            for name, view in rm.views().items()}
    assert corr["length"] > 0.5 and abs(corr["quality"]) < corr["length"] - 0.3, corr


def test_the_quality_head_exports_as_a_plain_transformers_model(exported, tiny):
    _, rm, out, info = exported("odin")
    assert info["dense"] == ["quality"]
    model = AutoModelForSequenceClassification.from_pretrained(out / "dense" / "quality").eval()
    assert model.config.num_labels == 1
    seqs = tiny.test.chosen
    with torch.inference_mode():
        reward = model(input_ids=seqs.ids, attention_mask=(torch.arange(seqs.ids.shape[1]) < seqs.lengths[:, None])
                       .long()).logits.squeeze(-1)
    torch.testing.assert_close(reward, rm.score(seqs), rtol=0, atol=1e-5)
    assert rm.model.score.weight.shape[0] == 2  # the job's own model keeps both heads


def test_a_tiny_odin_job_reports_both_length_bias_blocks(tmp_path):
    overrides = ["arch=odin", "opt=bon", "policy.hidden_size=32", "policy.intermediate_size=64",
                 "policy.sft_steps=20", "policy.sft_sequences=300", "opt.bon.n_prompts=5", "opt.bon.n_samples=8",
                 "opt.bon.ns=[1,2,4,8]", "data.world.human_length_share=0.3"]
    cfg = compose([*TINY_OVERRIDES, f"cache_dir={tmp_path / 'cache'}", *overrides])
    metrics = run_job(cfg, tmp_path / "job", {"arch": "odin"}, overrides)
    assert metrics["status"] == "ok", metrics["error"]
    style = metrics["length_bias"]["style"]
    assert style["n_pairs"] == 150 and style["gold_prefers_concise"] == 1.0
    assert set(style["views"]) == {"quality", "length", "sum"}
    assert style["views"]["quality"] == style["accuracy"]  # the quality head is the reward
    assert style["words"]["verbose"] > style["words"]["concise"]
    corr = metrics["bon"]["length_corr"]
    assert set(corr) >= {"reward", "gold", "views", "mean_words"} and set(corr["views"]) == {"quality", "length", "sum"}
    assert all(-1 <= v <= 1 for v in [corr["reward"], corr["gold"], *corr["views"].values()])
    assert corr["views"]["quality"] == pytest.approx(corr["reward"])  # BoN optimised the quality head
    assert "heads_abs_cos" in metrics["fit"]
    assert build(compose(["arch=odin"]).arch, "arch").train_overrides == {"bucket_chunks": 1}
