import math

import pytest
import torch

from harness.archs.single import SingleRM
from harness.archs.train import bradley_terry_loss


def test_bt_loss_is_log2_for_equal_rewards():
    r = torch.tensor([0.3, -1.0, 2.0])
    assert bradley_terry_loss(r, r).item() == pytest.approx(math.log(2))


def test_bt_loss_falls_with_margin():
    assert bradley_terry_loss(torch.tensor([2.0]), torch.tensor([0.0])) < bradley_terry_loss(
        torch.tensor([0.5]), torch.tensor([0.0]))


def test_single_trains_scores_and_counts(tiny):
    rm = SingleRM()
    ctx = tiny.ctx()
    rm.build(ctx, 0)
    before = {n: p.detach().clone() for n, p in rm.named_parameters()}
    rm.fit(tiny.train, tiny.val, ctx)
    changed = [n for n, p in rm.named_parameters() if not torch.equal(before[n], p)]
    assert changed, "training changed no parameter"
    scores = rm.score(tiny.test.chosen)
    assert scores.shape == (len(tiny.test),) and torch.isfinite(scores).all()
    counts = rm.param_counts()
    numel = sum(p.numel() for p in rm.model.parameters())
    assert counts == {"total": numel, "trainable": numel, "active": numel, "active_per_token": numel}


def test_single_reward_shape_and_gradients(tiny):
    rm = SingleRM().build(tiny.ctx(), 0)
    batch = tiny.train.batch(torch.arange(8))
    out = rm(batch)
    assert out.reward.shape == (16,)
    bradley_terry_loss(*out.reward.chunk(2)).backward()
    assert all(p.grad is not None for p in rm.parameters() if p.requires_grad)


def test_nan_loss_stops_training_with_a_clear_error(tiny):
    rm = SingleRM().build(tiny.ctx(), 0)
    with torch.no_grad():
        rm.model.score.weight.fill_(float("nan"))
    from harness.archs.train import train_bradley_terry

    with pytest.raises(FloatingPointError, match="loss is nan"):
        train_bradley_terry(rm, list(rm.parameters()), tiny.train, None, tiny.ctx().train, 0, phase="single")
