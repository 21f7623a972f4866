"""The studies a job runs: Best-of-N end to end on the tiny world (cached samples, Gao units) and PPO wiring."""

import numpy as np
import pytest
from conftest import TINY_POLICY, tiny_policy_cfg
from hydra.utils import get_class, instantiate

import harness.optimize.study as study
from harness.archs.single import SingleRM
from harness.results import CURVE_COLUMNS

BON = {"n_prompts": 4, "n_samples": 8, "ns": [1, 2, 4, 8]}
PPO = dict(steps=2, rollout_batch=8, ppo_epochs=1, minibatches=2, lr=1e-3, value_lr=1e-3, kl_coef=0.0, gamma=1.0,
           lam=0.95, clip_range=0.2, value_clip_range=0.2, max_grad_norm=1.0, eval_every=1, eval_prompts=3,
           eval_samples=2, train_prompts=16)


@pytest.fixture(scope="module")
def proxy(tiny):
    # An untrained head on the pre-trained backbone is a proxy too: the studies only need it to score.
    return SingleRM().build(tiny.ctx(), 0)


def run(tiny, proxy, studies, seed=0, **policy):
    return study.run_studies(studies, arch=proxy, data=tiny.data, backbone=tiny.backbone,
                             policy_cfg=tiny_policy_cfg(**policy), cache=tiny.cache, seed=seed, eval_batch_size=64)


def test_bon_study_end_to_end_and_cached(tiny, proxy, monkeypatch):
    # Count generation passes: each samples the policy once, all prompts x N together.
    policy_class, passes = get_class(TINY_POLICY["_target_"]), []
    sample = policy_class.sample

    def counted_sample(self, *args, **kwargs):
        passes.append(args)
        return sample(self, *args, **kwargs)

    monkeypatch.setattr(policy_class, "sample", counted_sample)
    # A sampling setting no other test uses, so the first call here must generate.
    results, curves = run(tiny, proxy, {"bon": BON}, temperature=0.9)
    assert len(passes) == 1
    assert [r["n"] for r in curves] == BON["ns"] and all(r["opt"] == "bon" for r in curves)
    assert all(set(r) <= set(CURVE_COLUMNS) and {"opt", "n", "kl", "sqrt_kl", "proxy", "gold"} <= set(r)
               for r in curves)
    # Gao units: n=1 is the initial policy itself, at 0 on both scales.
    assert curves[0]["proxy"] == pytest.approx(0, abs=1e-9) and curves[0]["gold"] == pytest.approx(0, abs=1e-9)
    # Best-of-n by proxy can only raise the expected proxy.
    proxies = [r["proxy"] for r in curves]
    assert all(b >= a - 1e-12 for a, b in zip(proxies, proxies[1:], strict=False))
    block = results["bon"]
    for key in ("alpha", "beta", "d_peak", "gold_peak", "final_gap", "units", "r2", "peak_extrapolated",
                "observed_gold_peak_se", "gold_auc"):
        assert key in block
    # BoN's common sqrt(KL) defaults to the largest n's, which every arch shares.
    assert block["final_gap"] == pytest.approx(curves[-1]["proxy"] - curves[-1]["gold"])
    assert block["common_sqrt_kl"] == pytest.approx(curves[-1]["sqrt_kl"])
    assert block["units"]["proxy"]["scale_kind"] == "within_prompt"

    hits = tiny.cache.stats["hits"]
    again, curves_again = run(tiny, proxy, {"bon": BON}, temperature=0.9)
    assert len(passes) == 1, "the second call generated its samples again"
    assert tiny.cache.stats["hits"] > hits
    assert curves_again == curves


def test_bon_top_n_is_the_top_proxy_samples_gold(tiny, proxy):
    """At n = N the curve is each prompt's top-proxy sample's gold, re-centred on all samples' gold and divided
    by its pooled within-prompt s.d."""
    results, curves = run(tiny, proxy, {"bon": BON})
    policy = instantiate(tiny_policy_cfg()).prepare(tiny.cache, tiny.data, 0)
    s = study.bon_samples(policy, tiny.data, tiny.cache, 0, BON["n_prompts"], BON["n_samples"])
    raw = np.array([study.proxy_scores(proxy, tiny.backbone, tiny.data, [p] * len(rs), rs, [d] * len(rs), 64)
                    for p, d, rs in zip(s["prompts"], s["domains"], s["responses"], strict=True)])
    gold = np.asarray(s["gold"])
    top = gold[np.arange(len(gold)), raw.argmax(1)]
    P, N = gold.shape
    sd_within = np.sqrt(((gold - gold.mean(1, keepdims=True)) ** 2).sum() / (P * (N - 1)))
    assert curves[-1]["gold"] == pytest.approx((top.mean() - gold.mean()) / sd_within, rel=1e-6)
    units = results["bon"]["units"]["gold"]
    assert units["scale"] == pytest.approx(sd_within) and units["sd_total"] == pytest.approx(gold.std())
    assert units["within_share"] == pytest.approx((N - 1) * sd_within**2 / (N * gold.std() ** 2))
    # The total-s.d. variant, kept as an option, divides by the total s.d.
    total, curves_total = run(tiny, proxy, {"bon": {**BON, "reward_scale": "total"}})
    assert curves_total[-1]["gold"] == pytest.approx((top.mean() - gold.mean()) / gold.std(), rel=1e-6)


def test_ppo_study_uses_bon_units_and_writes_rows(tiny, proxy):
    results, curves = run(tiny, proxy, {"bon": BON, "ppo": PPO})
    ppo_rows = [r for r in curves if r["opt"] == "ppo"]
    assert [r["step"] for r in ppo_rows] == [0, 1, 2]
    assert ppo_rows[0]["kl"] == pytest.approx(0, abs=1e-6)
    assert results["ppo"]["units_from"] == "bon"
    assert results["ppo"]["units"] == results["bon"]["units"]
    assert results["ppo"]["kl_coef"] == PPO["kl_coef"]
    assert {"alpha", "beta", "d_peak", "gold_peak", "final_gap", "r2", "peak_extrapolated"} <= set(results["ppo"])
    assert all(r["gold_se"] >= 0 for r in ppo_rows)
    assert [r["step"] for r in results["ppo_log"]] == [1, 2]


@pytest.mark.parametrize("studies,match", [
    ({"dpo": {}}, "unknown studies"),
    ({"bon": {**BON, "ns": [1, 16]}}, "opt.bon.ns"),
    ({"bon": {**BON, "n": 3}}, "opt.bon"),
    ({"ppo": {**PPO, "lr": 0.0}}, "opt.ppo.lr"),
    ({"bon": {**BON, "reward_scale": "iqr"}}, "opt.bon.reward_scale"),
    ({"ppo": {**PPO, "sqrt_kl_grid": [0.0, 1.0]}}, "opt.ppo.sqrt_kl_grid"),
    ({"ppo": {**PPO, "common_sqrt_kl": -1.0}}, "opt.ppo.common_sqrt_kl"),
])
def test_bad_study_configs_fail_clearly(tiny, proxy, studies, match):
    with pytest.raises(ValueError, match=match):
        run(tiny, proxy, studies)


def test_studies_need_a_gold_reward(tiny, proxy):
    class NoGold:
        name = "jsonl"
        domains = tiny.data.domains

    with pytest.raises(ValueError, match="gold"):
        study.run_studies({"bon": BON}, proxy, NoGold(), tiny.backbone, tiny_policy_cfg(), tiny.cache, 0, 64)
