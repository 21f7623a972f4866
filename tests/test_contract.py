"""The contract every architecture keeps, checked for each conf/arch/*.yaml (found by globbing the directory: a new
YAML is covered without editing this file).

Each architecture is instantiated from its YAML as the job does it, fitted once on the tiny backbone and the tiny
learnable set (every chosen response ends with a marker word, see conftest ``learnable``), and checked through
the stable interface only (forward -> RewardOutput, fit, score, param_counts, views, routing):

- forward gives a RewardOutput whose reward is (B,) and finite, aux_loss None or a finite scalar, and ``score``
  gives the same rewards as the forward; every view scores finite (N,), a router gives known domains;
- gradients reach every trained parameter. "Trained" is what the shared loops optimise: every phase of every
  architecture hands exactly the parameters it is about to optimise to ``RewardModel.mark_trained`` (the record
  param_counts' ``trainable`` comes from). Each of them must receive a finite, non-zero gradient at some step
  and end up changed (weight decay is 0 here, so only a gradient moves a parameter);
- and none is forgotten: a backward of the fitted RM's loss reaches no parameter that fit did not train;
- the loss falls: the Bradley-Terry loss of the fitted RM on the learnable training pairs is below that of the
  same RM as built, copied when its first training phase starts;
- param_counts are ints and honest: every parameter scoring runs is counted in ``total``, ``total`` counts no
  more than the module's unique parameters, ``trainable`` and ``active`` lie in (0, total], and each scored
  response's ``active_params`` lies between ``active_per_token`` and ``active``.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from conftest import CONF_DIR, compose

from harness.archs.base import RewardModel, RewardOutput
from harness.archs.train import bradley_terry_loss
from harness.cache import ArtifactCache
from harness.job import build

ARCHS = sorted(path.stem for path in (Path(CONF_DIR) / "arch").glob("*.yaml"))

# The loop's settings for the contract fit (the rest: conftest TINY_TRAIN). Weight decay 0 makes "changed" mean
# "a gradient moved it". Batches of 8 give every phase several steps even on one domain's share of the learnable
# pairs; two at least are needed, since a LoRA A matrix gets its first gradient on the second step (B starts at 0).
CONTRACT_TRAIN = dict(weight_decay=0.0, batch_size=8, lr=3e-3)

# Pairs in the batch the forward is checked on.
FORWARD_PAIRS = 6


class TrainingRecord:
    """What the spy saw during one fit: the RM as built, each trained parameter's value when its phase began,
    and which of them received a non-zero / a non-finite gradient."""

    def __init__(self):
        self.initial: RewardModel | None = None
        self.before: dict[int, tuple[torch.nn.Parameter, torch.Tensor]] = {}
        self.nonzero_grad: set[int] = set()
        self.nonfinite_grad: set[int] = set()
        self.hooks: list = []

    def on_grad(self, p: torch.nn.Parameter) -> None:
        if not torch.isfinite(p.grad).all():
            self.nonfinite_grad.add(id(p))
        elif p.grad.abs().sum() > 0:
            self.nonzero_grad.add(id(p))


@contextmanager
def watch_training(rm: RewardModel):
    """Spy on ``RewardModel.mark_trained``, which both shared loops call with the parameters they optimise,
    right before their first step."""
    record = TrainingRecord()
    mark_trained = RewardModel.mark_trained

    def spy(self, params):
        params = list(params)
        if record.initial is None:  # the first phase starts: nothing is trained yet
            record.initial = copy.deepcopy(rm).eval()  # a copy: probing it cannot disturb the fit
        for p in params:
            if id(p) not in record.before:  # a parameter's first phase (a later re-mark is bookkeeping)
                record.before[id(p)] = (p, p.detach().clone())
                record.hooks.append(p.register_post_accumulate_grad_hook(record.on_grad))
        mark_trained(self, params)

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(RewardModel, "mark_trained", spy)
            yield record
    finally:
        for hook in record.hooks:
            hook.remove()


@pytest.fixture(scope="module", params=ARCHS)
def fitted(request, tiny, learnable, tmp_path_factory):
    """(arch name, the RM fitted on the learnable set, its TrainingRecord)."""
    arch = request.param
    rm = build(compose([f"arch={arch}"]).arch, "arch")
    # A fresh cache: an ensemble sharing members trained by another test would load them instead of training.
    ctx = tiny.ctx(**CONTRACT_TRAIN, cache=ArtifactCache(tmp_path_factory.mktemp(f"{arch}-cache")),
                   data=learnable.data, artifact_dir=tmp_path_factory.mktemp(f"{arch}-job"))
    with watch_training(rm) as record:
        rm.fit(learnable.train, learnable.val, ctx)
    return arch, rm, record


def parameter_names(rm: RewardModel) -> dict[int, str]:
    return {id(p): name for name, p in rm.named_parameters()}


def bt_loss(rm: RewardModel, pairs) -> float:
    return bradley_terry_loss(rm.score(pairs.chosen), rm.score(pairs.rejected)).item()


def test_forward_gives_one_finite_reward_per_sequence(fitted, learnable):
    arch, rm, _ = fitted
    batch = learnable.test.batch(torch.arange(FORWARD_PAIRS))
    with torch.no_grad():
        out = rm.eval()(batch)
    assert isinstance(out, RewardOutput), f"arch={arch}: forward returned {type(out).__name__}"
    assert out.reward.shape == (2 * FORWARD_PAIRS,) and out.reward.is_floating_point()
    assert torch.isfinite(out.reward).all(), f"arch={arch}: non-finite rewards {out.reward}"
    assert out.aux_loss is None or (out.aux_loss.dim() == 0 and torch.isfinite(out.aux_loss))
    scores = rm.score(learnable.test.chosen)
    assert scores.shape == (len(learnable.test),) and torch.isfinite(scores).all()
    # score batches by length (other padding) under inference_mode: the same rewards all the same.
    torch.testing.assert_close(scores[:FORWARD_PAIRS], out.reward[:FORWARD_PAIRS].float(), atol=1e-4, rtol=1e-4)


def test_views_and_router_answer_every_sequence(fitted, learnable):
    """The alternative scorers (``views``) score like the RM, finite (N,); a router (``routing``) sends each
    sequence to one known domain."""
    arch, rm, _ = fitted
    seqs = learnable.test.chosen
    for name, view in rm.views().items():
        scores = rm.score(seqs, scorer=view.score)
        assert scores.shape == (len(seqs),) and torch.isfinite(scores).all(), f"arch={arch}: view {name}: {scores}"
    routing = rm.routing()
    if routing is not None:
        domains = rm.score(seqs, scorer=routing)
        assert domains.shape == (len(seqs),) and torch.equal(domains, domains.round()), f"arch={arch}: {domains}"
        assert ((domains >= 0) & (domains < len(learnable.data.domains))).all(), f"arch={arch}: {domains}"


def test_gradients_reach_every_trained_parameter(fitted):
    arch, rm, record = fitted
    assert record.before, f"arch={arch}: fit trained nothing through the shared loops"
    names = parameter_names(rm)

    def named(ids) -> list[str]:
        return sorted(names.get(i, "<not in the fitted model>") for i in ids)

    assert not record.nonfinite_grad, f"arch={arch}: non-finite gradients reached {named(record.nonfinite_grad)}"
    no_gradient = set(record.before) - record.nonzero_grad
    assert not no_gradient, f"arch={arch}: trained parameters that never got a non-zero gradient: {named(no_gradient)}"
    unchanged = [i for i, (p, before) in record.before.items() if torch.equal(p.detach(), before)]
    assert not unchanged, f"arch={arch}: trained parameters that did not change: {named(unchanged)}"


def test_the_loss_reaches_only_trained_parameters(fitted, learnable):
    """No parameter forgotten: one backward of the fitted RM's BT loss (+ aux) on a learnable batch reaches only
    parameters its fit trained. Frozen ones, and routers behind a hard argmax, get no gradient at all."""
    arch, rm, record = fitted
    out = rm.train()(learnable.train.batch(torch.arange(FORWARD_PAIRS)))
    loss = bradley_terry_loss(*out.reward.chunk(2))
    if out.aux_loss is not None:
        loss = loss + out.aux_loss
    if loss.requires_grad:  # umm scores with its merged model, frozen once merged: nothing to reach
        loss.backward()
    reached = {id(p) for p in rm.parameters() if p.grad is not None}
    nonfinite = [name for name, p in rm.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    rm.zero_grad(set_to_none=True)
    rm.eval()
    assert not nonfinite, f"arch={arch}: non-finite gradients reach {nonfinite}"
    untrained = reached - set(record.before)
    assert not untrained, f"arch={arch}: the loss reaches parameters fit never trained: " \
        f"{sorted(parameter_names(rm)[i] for i in untrained)}"


def test_loss_falls_on_the_learnable_set(fitted, learnable):
    arch, rm, record = fitted
    before, after = bt_loss(record.initial, learnable.train), bt_loss(rm, learnable.train)
    assert after < before, f"arch={arch}: BT loss on the learnable training pairs {before:.4f} -> {after:.4f}"


def test_param_counts_match_the_parameters(fitted, learnable):
    arch, rm, _ = fitted
    counts = rm.param_counts()
    assert set(counts) == {"total", "trainable", "active", "active_per_token"}
    assert all(type(v) is int for v in counts.values())
    stored = sum(p.numel() for p in rm.parameters())  # each parameter once, however often it is shared
    # The parameters scoring runs: those of every module whose forward it calls, below the RewardModels (an RM's
    # forward only dispatches, and its own parameters need not score: umm keeps its merge weights there).
    ran: dict[int, torch.nn.Parameter] = {}

    def note(module, args, output):
        ran.update({id(p): p for p in module.parameters(recurse=False)})

    hooks = [m.register_forward_hook(note) for m in rm.modules() if not isinstance(m, RewardModel)]
    try:
        rm.score(learnable.test.chosen), rm.score(learnable.test.rejected)
    finally:
        for hook in hooks:
            hook.remove()
    scored = sum(p.numel() for p in ran.values())
    assert scored <= counts["total"] <= stored, f"arch={arch}: {counts}, scoring runs {scored}, {stored} stored"
    assert 0 < counts["trainable"] <= counts["total"] and 0 < counts["active"] <= counts["total"], \
        f"arch={arch}: {counts}"
    # Per response at least what one token uses; each scored response's count within (0, active].
    assert 0 < counts["active_per_token"] <= counts["active"], f"arch={arch}: {counts}"
    per_response = rm.active_params(learnable.test.chosen)
    assert per_response.shape == (len(learnable.test),)
    assert ((counts["active_per_token"] <= per_response) & (per_response <= counts["active"])).all(), arch
