"""WARM (harness/archs/warm.py): the average is the mean of the members' weights, members share one initialisation
(member 0 is the single RM and ensemble member 0, shared through the cache), M identical members average to that
member, LoRA members average their folded updates, and the RM is one model while its ens_mean view is M."""

import copy
import dataclasses

import pytest
import torch
from conftest import compose

import harness.archs.warm as warm_module
from harness.archs.ensemble import EnsembleRM
from harness.archs.single import SingleRM
from harness.archs.warm import WARM, average_state_dicts, dense_state, warm_member_seeds
from harness.cache import ArtifactCache
from harness.job import build


def test_the_average_is_the_mean_of_the_state_dicts():
    gen = torch.Generator().manual_seed(0)
    states = [{"w": torch.randn(3, 4, generator=gen), "b": torch.randn(4, generator=gen),
               "steps": torch.tensor([7])} for _ in range(3)]
    average = average_state_dicts(states)
    for key in ("w", "b"):
        expected = sum(s[key].double() for s in states) / 3
        assert average[key].dtype == torch.float32
        torch.testing.assert_close(average[key].double(), expected, rtol=0, atol=1e-7)
    assert torch.equal(average["steps"], torch.tensor([7]))
    # The mean of equal tensors is that tensor, bit for bit (float64 accumulation), for any M.
    one = states[0]
    for m in (2, 3, 7):
        same = average_state_dicts([copy.deepcopy(one) for _ in range(m)])
        assert all(torch.equal(same[k], one[k]) for k in one)


def test_averaging_refuses_what_has_no_mean():
    a = {"w": torch.zeros(2), "steps": torch.tensor([1])}
    with pytest.raises(ValueError, match="non-float tensor 'steps'"):
        average_state_dicts([a, {"w": torch.ones(2), "steps": torch.tensor([2])}])
    with pytest.raises(ValueError, match="other tensors"):
        average_state_dicts([a, {"w": torch.ones(2)}])
    with pytest.raises(ValueError, match="no member states"):
        average_state_dicts([])


def test_members_share_one_initialisation_and_differ_in_data_order():
    inits, orders = zip(*(warm_member_seeds(0, i) for i in range(4)), strict=True)
    assert len(set(inits)) == 1 and len(set(orders)) == 4
    with pytest.raises(ValueError, match="arch.m=1"):
        WARM(m=1)
    with pytest.raises(ValueError, match="arch.normalize"):
        WARM(m=2, normalize="zscore")


@pytest.fixture(scope="module")
def warm_and_single(tiny, tmp_path_factory):
    """WARM (M = 3) and single fitted on the tiny world, with a cache that first held an ensemble's members."""
    cache = ArtifactCache(tmp_path_factory.mktemp("warm-cache"))
    ctx = tiny.ctx(cache=cache)
    ensemble = EnsembleRM("mean", k=2)
    ensemble.fit(tiny.train, tiny.val, ctx)
    rm = build(compose(["arch=warm", "arch.m=3"]).arch, "arch")
    rm.fit(tiny.train, tiny.val, ctx)
    single = SingleRM()
    single.fit(tiny.train, tiny.val, tiny.ctx(cache=cache))
    return rm, single, ensemble


def test_member_zero_is_the_single_rm_and_the_ensembles_first_member(warm_and_single, tiny):
    rm, single, ensemble = warm_and_single
    # Same head init, same data order, same loop: the same weights, so the same rewards.
    for name, p in single.model.named_parameters():
        assert torch.equal(rm.members[0].get_parameter(name), p), name
        assert torch.equal(ensemble.members[0].get_parameter(name), p), name
    view = rm.views()["member_0"]
    assert torch.equal(rm.score(tiny.test.chosen, scorer=view.score), single.score(tiny.test.chosen))
    # Member 0 came from the ensemble's cache entry (its training tokens counted as reused), the others trained here.
    report = rm.fit_report()
    assert report["members_cached"] == 1 and report["members_trained"] == 2
    assert rm.cost()["reused_train_backbone_tokens"] > 0
    # Members 1, 2 start where member 0 did (the shared head) but end elsewhere (their own data order).
    assert not torch.equal(rm.members[1].score.weight, rm.members[0].score.weight)


def test_the_rm_is_the_weight_average_of_its_members(warm_and_single, tiny):
    rm, single, _ = warm_and_single
    average = average_state_dicts([m.state_dict() for m in rm.members])
    state = rm.model.state_dict()
    assert state.keys() == average.keys() and all(torch.equal(state[k], average[k]) for k in state)
    # One RM's parameters (single's), its ens_mean view M of them.
    counts, one = rm.param_counts(), single.param_counts()
    assert counts == {"total": one["total"], "trainable": one["total"], "active": one["total"],
                      "active_per_token": one["total"]}
    assert rm.views()["ens_mean"].params["total"] == 3 * one["total"]
    spread = rm.fit_report()["spread"]
    assert 0 < spread["to_average"] < spread["from_init"]  # the average lies between the members


def test_the_ens_mean_view_is_the_mean_ensemble_of_the_same_members(warm_and_single, tiny):
    rm, _, _ = warm_and_single
    ensemble = EnsembleRM("mean", k=3)
    ensemble.members = rm.members  # the very same members, aggregated by arch=ens_mean's own code
    ensemble.set_reference(tiny.val)
    assert torch.equal(rm.member_shift, ensemble.member_shift) and torch.equal(rm.member_scale, ensemble.member_scale)
    view = rm.views()["ens_mean"]
    assert torch.equal(rm.score(tiny.test.chosen, scorer=view.score), ensemble.score(tiny.test.chosen))


def test_identical_members_average_to_that_member(tiny, monkeypatch, tmp_path):
    """Every member in model 0's data order: M copies of one model, whose average is that model bit for bit."""
    monkeypatch.setattr(warm_module, "warm_member_seeds", lambda seed, member: warm_member_seeds(seed, 0))
    rm = WARM(m=3, normalize="none")
    rm.fit(tiny.train, tiny.val, tiny.ctx(cache=ArtifactCache(tmp_path)))
    state = rm.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in rm.members[0].state_dict().items())
    member = rm.score(tiny.test.chosen, scorer=rm.views()["member_0"].score)
    assert torch.equal(rm.score(tiny.test.chosen), member)
    assert rm.fit_report()["spread"]["to_average"] == 0.0


def test_lora_members_average_their_folded_updates(tiny):
    """With backbone.finetune=lora the average is of W + s B_i A_i (adapters folded in), not of the factors."""
    backbone = copy.copy(tiny.backbone)
    backbone.finetune, backbone.lora_r, backbone.lora_alpha = "lora", 4, 8.0
    ctx = dataclasses.replace(tiny.ctx(), backbone=backbone)
    rm = WARM(m=2).build(ctx, 0)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # pretend training moved each member's adapters differently
        for member in rm.members:
            for name, p in member.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn(p.shape, generator=gen))
    dense = [dense_state(m) for m in rm.members]
    assert not any("lora_" in k for k in dense[0]) and dense[0].keys() == rm.model.state_dict().keys()
    folded = average_state_dicts(dense)
    factors = average_state_dicts([m.state_dict() for m in rm.members])  # what averaging the factors would give
    q = "model.layers.0.self_attn.q_proj.weight"
    assert torch.allclose(folded[q], (dense[0][q] + dense[1][q]) / 2)
    scale = 8.0 / 4
    a = [m.state_dict()[q.replace(".weight", ".lora_A.default.weight")] for m in rm.members]
    b = [m.state_dict()[q.replace(".weight", ".lora_B.default.weight")] for m in rm.members]
    base = factors[q.replace(".weight", ".base_layer.weight")]
    torch.testing.assert_close(folded[q], base + scale * (b[0] @ a[0] + b[1] @ a[1]) / 2)
    assert not torch.allclose(folded[q], base + scale * ((b[0] + b[1]) / 2) @ ((a[0] + a[1]) / 2))
