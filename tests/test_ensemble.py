import copy
import dataclasses

import pytest
import torch
from conftest import compose
from torch import nn

from harness.archs.base import RewardModel, RewardOutput, TrainConfig
from harness.archs.ensemble import AGGREGATORS, EnsembleRM, aggregate
from harness.archs.single import SingleRM
from harness.archs.train import train_bradley_terry
from harness.cache import ArtifactCache
from harness.evaluate import evaluate_architecture, evaluate_views
from harness.job import build

# ---------------------------------------------------------------- aggregator math on hand values

REWARDS = torch.tensor([[1.0, 2.0, 3.0, 6.0],
                        [0.5, 0.5, 0.5, 0.5],
                        [-2.0, 0.0, 1.0, -3.0]])  # (B=3, k=4)


def test_mean_and_worst_case():
    assert torch.allclose(aggregate(REWARDS, "mean", 0.5), torch.tensor([3.0, 0.5, -1.0]))
    assert torch.equal(aggregate(REWARDS, "wco", 0.5), torch.tensor([1.0, 0.5, -3.0]))


def test_uwo_uses_population_variance():
    # Row 0: mean 3, squared deviations 4+1+0+9 = 14, population variance 14/4 = 3.5 (sample: 14/3).
    # Row 2: mean -1, squared deviations 1+1+4+4 = 10, population variance 2.5 (sample: 10/3).
    expected = torch.tensor([3.0 - 0.5 * 3.5, 0.5, -1.0 - 0.5 * 2.5])
    assert torch.allclose(aggregate(REWARDS, "uwo", 0.5), expected)
    sample = torch.tensor([3.0 - 0.5 * 14 / 3, 0.5, -1.0 - 0.5 * 10 / 3])
    assert not torch.allclose(aggregate(REWARDS, "uwo", 0.5), sample)
    assert torch.allclose(aggregate(REWARDS, "uwo", 2.0), torch.tensor([3.0 - 7.0, 0.5, -1.0 - 5.0]))


def test_uwo_with_zero_lambda_is_the_mean():
    assert torch.equal(aggregate(REWARDS, "uwo", 0.0), aggregate(REWARDS, "mean", 0.0))


# ---------------------------------------------------------------- validation and configs


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"arch\.aggregator='median'.*mean, wco, uwo"):
        EnsembleRM("median")
    with pytest.raises(ValueError, match=r"arch\.k=1"):
        EnsembleRM("mean", k=1)
    with pytest.raises(ValueError, match=r"arch\.uwo_lambda\.bon=-0\.1"):
        EnsembleRM("uwo", uwo_lambda=-0.1)
    with pytest.raises(ValueError, match=r"arch\.uwo_lambda=.*one per study \(bon, ppo\)"):
        EnsembleRM("uwo", uwo_lambda={"bon": 0.5})
    with pytest.raises(ValueError, match=r"arch\.normalize='zscore'"):
        EnsembleRM("wco", normalize="zscore")


@pytest.mark.parametrize("name,aggregator", [("ens_mean", "mean"), ("ens_wco", "wco"), ("ens_uwo", "uwo")])
def test_configs_instantiate(name, aggregator):
    rm = build(compose([f"arch={name}"]).arch, "arch")
    assert isinstance(rm, EnsembleRM)
    # Coste et al.'s λ per study, on the population variance: BoN 0.5, PPO 0.1 on torch.var's unbiased one at k=5.
    assert (rm.aggregator, rm.k, rm.uwo_lambda, rm.normalize) == (aggregator, 5, {"bon": 0.5, "ppo": 0.1 * 5 / 4},
                                                                  "standardize")


def test_bad_aggregator_from_the_command_line():
    with pytest.raises(ValueError, match=r"^arch\.aggregator='max'.*mean, wco, uwo"):
        build(compose(["arch=ens_mean", "arch.aggregator=max"]).arch, "arch")


# ---------------------------------------------------------------- an ensemble of identical members is one member


@pytest.mark.parametrize("aggregator", ["mean", "wco", "uwo"])
def test_identical_members_equal_one_member(tiny, aggregator):
    single = SingleRM().build(tiny.ctx(), 0)
    ens = EnsembleRM(aggregator, k=3)
    ens.members = torch.nn.ModuleList(copy.deepcopy(single.model) for _ in range(3))
    expected = single.score(tiny.test.chosen)
    got = ens.score(tiny.test.chosen)
    # Summing k equal floats and dividing by k may round in the last bit, so "equal" is to float precision.
    assert torch.allclose(got, expected, rtol=0, atol=1e-6)
    if aggregator == "uwo":
        members = ens.explain(tiny.test.chosen)["members"]
        assert members.var(dim=-1, unbiased=False).max() < 1e-10


# ---------------------------------------------------------------- training, cache, counts


@pytest.fixture(scope="module")
def fitted(tiny, tmp_path_factory):
    """A k=2 ensemble fitted into a fresh cache (so the build counts below are exact)."""
    ctx = dataclasses.replace(tiny.ctx(), cache=ArtifactCache(tmp_path_factory.mktemp("ens_cache")))
    ens = EnsembleRM("mean", k=2)
    ens.fit(tiny.train, tiny.val, ctx)
    return ens, ctx


def test_fit_trains_k_distinct_members(fitted, tiny):
    ens, ctx = fitted
    assert ctx.cache.stats == {"hits": 0, "builds": 2}
    assert ens.provenance == ["trained", "trained"]
    fresh = tiny.backbone.reward_model(0)
    heads = [m.score.weight for m in ens.members]
    assert not torch.equal(heads[0], heads[1])
    for m in ens.members:  # every parameter moved away from the shared backbone weights
        assert not torch.equal(m.model.embed_tokens.weight, fresh.model.embed_tokens.weight)
    members = ens.explain(tiny.test.chosen)["members"]
    assert members.shape == (len(tiny.test), 2) and torch.isfinite(members).all()
    assert not torch.equal(members[:, 0], members[:, 1])


def test_second_fit_loads_members_and_scores_identically(fitted, tiny):
    ens, ctx = fitted
    before = ctx.cache.stats
    again = EnsembleRM("mean", k=2)
    again.fit(tiny.train, tiny.val, dataclasses.replace(ctx, logs=[]))
    assert ctx.cache.stats["builds"] == before["builds"]
    assert ctx.cache.stats["hits"] == before["hits"] + 2
    assert again.provenance == ["cached", "cached"]
    assert torch.equal(again.score(tiny.test.chosen), ens.score(tiny.test.chosen))
    # Cost: the reused members' training still counts (one epoch of both sides of every pair, per member).
    assert ens.cost() == {"reused_train_backbone_tokens": 0}
    tokens_per_epoch = int(tiny.train.chosen.lengths.sum() + tiny.train.rejected.lengths.sum())
    assert again.cost()["reused_train_backbone_tokens"] == 2 * tokens_per_epoch


def test_other_aggregator_and_smaller_k_hit_the_cache(fitted, tiny):
    ens, ctx = fitted
    before = ctx.cache.stats
    wco = EnsembleRM("wco", k=2, uwo_lambda=3.0)
    wco.fit(tiny.train, tiny.val, dataclasses.replace(ctx, logs=[]))
    assert ctx.cache.stats["builds"] == before["builds"]
    members = ens.explain(tiny.test.chosen)["members"]
    assert torch.equal(wco.score(tiny.test.chosen), members.min(dim=-1).values)


def test_changing_the_learning_rate_misses(fitted, tiny):
    _, ctx = fitted
    before = ctx.cache.stats
    slower = dataclasses.replace(ctx, train=dataclasses.replace(ctx.train, lr=ctx.train.lr / 2), logs=[])
    EnsembleRM("mean", k=2).fit(tiny.train, tiny.val, slower)
    assert ctx.cache.stats["builds"] == before["builds"] + 2


def test_param_counts_are_k_members_also_when_loaded(fitted, tiny):
    ens, ctx = fitted
    numel = sum(p.numel() for p in tiny.backbone.reward_model(0).parameters())
    every = {"total": 2 * numel, "trainable": 2 * numel, "active": 2 * numel, "active_per_token": 2 * numel}
    assert ens.param_counts() == every
    loaded = EnsembleRM("uwo", k=2)
    loaded.fit(tiny.train, tiny.val, dataclasses.replace(ctx, logs=[]))
    assert loaded.provenance == ["cached", "cached"]
    assert loaded.param_counts() == every


def test_cached_fit_logs_the_members_training(fitted, tiny):
    _, ctx = fitted
    logs = []
    EnsembleRM("mean", k=2).fit(tiny.train, tiny.val, dataclasses.replace(ctx, logs=logs))
    results = [r for r in logs if "best_val_acc" in r]
    assert [r["member"] for r in results] == [0, 1] and all(r["source"] == "cached" for r in results)
    assert any(r.get("cached") and "val_acc" in r for r in logs)


def test_explain_views_and_fit_report(fitted, tiny):
    ens, _ = fitted
    info = ens.explain(tiny.test.chosen)
    assert torch.allclose(info["aggregate"], info["members"].mean(-1))
    assert torch.equal(info["aggregate"], ens.score(tiny.test.chosen))
    assert ens.fit_report()["members_trained"] + ens.fit_report()["members_cached"] == 2
    views = evaluate_views(ens, tiny.test, tiny.data.splits["test"], 64)["views"]
    assert set(views) == {"member_0", "member_1"}
    for block in views.values():
        assert all(0 <= block["accuracy"][labels]["overall"] <= 1 for labels in ("human", "gold"))
        assert "params" not in block  # a member is a part of the ensemble, not a model the figures show apart
    # Member 0's human accuracy recomputed by hand from its own scores.
    r_c = info["members"][:, 0]
    r_r = ens.explain(tiny.test.rejected)["members"][:, 0]
    assert views["member_0"]["accuracy"]["human"]["overall"] == pytest.approx((r_c > r_r).float().mean().item())


def test_member_key_follows_the_backbone_content_not_its_path(tiny, tmp_path):
    """Before: the key held the backbone's path, so weights replaced in place reused stale members and a moved
    model (or cache) retrained them all."""
    import shutil

    from safetensors.torch import load_file, save_file

    from harness.backbones import PretrainedBackbone

    a, b = tmp_path / "model", tmp_path / "moved" / "model"
    shutil.copytree(tiny.backbone.path, a, ignore=shutil.ignore_patterns("_manifest.json"))
    shutil.copytree(a, b)

    def key(path):
        backbone = PretrainedBackbone(name="local", path=str(path), max_length=tiny.backbone.max_length,
                                      finetune="full")
        backbone.prepare(tiny.cache, corpus=None, seed=0)
        spec = EnsembleRM("mean", k=2).member_spec(dataclasses.replace(tiny.ctx(), backbone=backbone), member=1)
        assert str(tmp_path) not in repr(spec)
        return ArtifactCache.key("ens_member", spec)

    assert key(a) == key(b)  # the same weights elsewhere: the same members
    weights = load_file(a / "model.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name] + 1.0
    save_file(weights, a / "model.safetensors")  # replaced in place: same path, other weights
    assert key(a) != key(b)


# ---------------------------------------------------------------- offsets: pinned in training, removed before use


def offset_copies(single: SingleRM, offsets: list[float]) -> nn.ModuleList:
    """Copies of one trained model whose rewards differ only by a constant each (a bias on the scalar head): what
    the Bradley-Terry loss cannot tell apart."""
    members = []
    for offset in offsets:
        member = copy.deepcopy(single.model)
        head = nn.Linear(member.score.in_features, 1, bias=True)
        with torch.no_grad():
            head.weight.copy_(member.score.weight)
            head.bias.fill_(offset)
        member.score = head
        members.append(member)
    return nn.ModuleList(members)


@pytest.mark.parametrize("normalize", ["center", "standardize"])
@pytest.mark.parametrize("aggregator", AGGREGATORS)
def test_members_differing_by_offsets_aggregate_like_one_member_after_centring(tiny, aggregator, normalize):
    single = SingleRM().build(tiny.ctx(), 0)
    ens = EnsembleRM(aggregator, k=3, normalize=normalize)
    ens.members = offset_copies(single, [0.0, 0.7, -1.3])
    ens.set_reference(tiny.val)
    # The one member, re-expressed on the same reference: minus its mean over the validation responses (and over
    # its within-pair s.d.).
    c, r = single.score(tiny.val.chosen).double(), single.score(tiny.val.rejected).double()
    shift = torch.cat([c, r]).mean()
    scale = ((c - r) ** 2).mean().div(2).sqrt() if normalize == "standardize" else torch.tensor(1.0)
    expected = ((single.score(tiny.test.chosen).double() - shift) / scale).float()
    assert torch.allclose(ens.score(tiny.test.chosen), expected, rtol=0, atol=1e-5)
    assert torch.allclose(ens.member_shift, torch.tensor([0.0, 0.7, -1.3]) + shift.float(), atol=1e-5)
    # Raw, the offsets decide: worst-case optimization is the member with the lowest offset on every response.
    ens.normalize = "none"
    ens.set_reference(tiny.val)
    assert evaluate_architecture(ens, tiny.val, tiny.test, tiny.data.splits["test"], tiny.data.domains,
                                 64)["members"]["min_share"] == [0.0, 0.0, 1.0]


def test_uwo_lambda_is_set_per_study_and_the_rm_uses_bons(tiny):
    single = SingleRM().build(tiny.ctx(), 0)
    # Raw members (normalize=none), so that the variance between them is the offsets' (0, 0.7, -1.3).
    ens = EnsembleRM("uwo", k=3, uwo_lambda={"bon": 0.5, "ppo": 4.0}, normalize="none")
    ens.members = offset_copies(single, [0.0, 0.7, -1.3])
    ens.set_reference(tiny.val)
    base = single.score(tiny.test.chosen)
    var = torch.tensor([0.0, 0.7, -1.3]).var(unbiased=False)
    assert torch.allclose(ens.score(tiny.test.chosen), base - 0.2 - 0.5 * var, atol=1e-5)
    assert torch.allclose(ens.score(tiny.test.chosen, scorer=ens.study_scorer("ppo")), base - 0.2 - 4.0 * var,
                          atol=1e-5)
    assert EnsembleRM("wco", k=2).study_scorer("ppo") is None  # nothing to set per study
    with pytest.raises(ValueError, match="no UWO weight for study 'dpo'"):
        ens.study_scorer("dpo")


class ConstantRM(RewardModel):
    """Rewards b for every sequence: the Bradley-Terry loss has no gradient on b, only the L2 penalty does."""

    def __init__(self, b: float):
        super().__init__()
        self.b = nn.Parameter(torch.tensor(b))

    def forward(self, batch):
        return RewardOutput(reward=self.b.expand(len(batch)) + 0.0 * batch.input_ids[:, 0])


@pytest.mark.parametrize("score_l2", [0.0, 0.001])
def test_score_l2_pins_the_offset_the_bradley_terry_loss_leaves_free(tiny, score_l2):
    from conftest import TINY_TRAIN

    rm = ConstantRM(2.0)
    cfg = TrainConfig(**{**TINY_TRAIN, "batch_size": 8, "score_l2": score_l2})
    train_bradley_terry(rm, [rm.b], tiny.train, None, cfg, 0)
    if score_l2 == 0:
        assert rm.b.item() == 2.0  # no gradient at all: the offset stays where it started
    else:
        assert 0 <= rm.b.item() < 2.0 - 0.01  # pulled towards 0 (one Adam step per batch of 8, lr 1e-3 decaying to 0)
