"""The claims table on synthetic sweeps with analytic answers: a known difference is reproduced, a zero effect is
inconclusive, the opposite sign refutes — by the same rule (interval on the side AND Holm p < 0.05, Holm within
the claim's family); degenerate comparisons are not testable and never decide a claim; parameter savings are
measured; a missing arch or metric is "not measured"; and the shipped claims file loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CONF_DIR
from conftest import paired_jobs_table as jobs_table

from harness import claims as claims_mod

FAMILIES = {"primary": {"text": "main"}, "exploratory": {"text": "side"}}


def claim(**kw) -> dict:
    return {"id": kw.pop("id", "c"), "claim": "text", "family": "primary", "metric": "accuracy.gold.overall",
            "a": "x", "b": "single", "direction": "greater", **kw}


def context(**sections) -> dict:
    return claims_mod.claim_context(families=FAMILIES, **sections)


def table(jobs: pd.DataFrame, *claims, **sections) -> pd.DataFrame:
    return claims_mod.claims_table(jobs, list(claims), context(**sections))


def verdicts(jobs: pd.DataFrame, *claims, **sections) -> dict[str, str]:
    t = table(jobs, *claims, **sections)
    return {cid: claims_mod.claim_verdict(list(group["verdict"])) for cid, group in t.groupby("id")}


def test_known_difference_reproduces_zero_effect_is_inconclusive_opposite_refutes():
    jobs = jobs_table({"up": 0.05, "flat": 0.0, "down": -0.05})
    got = verdicts(jobs, claim(id="up", a="up"), claim(id="flat", a="flat"), claim(id="down", a="down"),
                   claim(id="less", a="down", direction="less"))
    assert got == {"up": "reproduced", "flat": "inconclusive", "down": "refuted", "less": "reproduced"}


def jobs_with_diffs(diffs: dict[str, list[float]], metric: str = "accuracy.gold.overall") -> pd.DataFrame:
    """single at 0.7 plus a seed-level offset; each arch = single + its given per-seed differences."""
    seed_level = np.array([0.01, -0.02, 0.0, 0.015, -0.005])
    rows = [{"arch": "single", "seed": s, metric: 0.7 + seed_level[s]} for s in range(5)]
    rows += [{"arch": arch, "seed": s, metric: 0.7 + seed_level[s] + d[s]} for arch, d in diffs.items()
             for s in range(5)]
    return pd.DataFrame(rows)


def test_refuting_needs_the_same_evidence_as_reproducing():
    # Mean ±0.01, s.d. 0.0071 over 5 seeds: the t-interval excludes 0 (raw p 0.034), but Holm over a family of 4
    # does not pass. The old rule refuted on an interval alone; now neither direction is decided.
    spread = np.array([0.002, 0.018, 0.01, 0.004, 0.016])
    jobs = jobs_with_diffs({"plus": spread, "minus": -spread, "big": spread + 0.05, "big2": spread + 0.06})
    t = table(jobs, *(claim(id=a, a=a) for a in ("plus", "minus", "big", "big2")))
    row = t.set_index("id")
    for arm in ("plus", "minus"):
        assert row.loc[arm, "p"] == pytest.approx(0.0343, abs=1e-3) and row.loc[arm, "p_holm"] > 0.05
        assert row.loc[arm, "ci_low"] > 0 or row.loc[arm, "ci_high"] < 0  # the interval alone would decide
        assert row.loc[arm, "verdict"] == "inconclusive"
    assert set(row.loc[["big", "big2"], "verdict"]) == {"reproduced"}
    # Each alone in its family: both decided, one each way, by the same evidence.
    alone = table(jobs, claim(id="plus", a="plus"), claim(id="minus", a="minus", family="exploratory"))
    assert list(alone["verdict"]) == ["reproduced", "refuted"]
    # An interval that only touches the bound decides nothing (the old rule refuted on high <= 0).
    touching = table(jobs_with_diffs({"edge": [0.0, -0.001, -0.002, -0.001, 0.0]}), claim(a="edge")).iloc[0]
    assert touching["verdict"] == "inconclusive"


def test_holm_runs_within_each_declared_family():
    spread = np.array([0.002, 0.018, 0.01, 0.004, 0.016])
    jobs = jobs_with_diffs({"a1": spread, "a1b": spread[::-1], "a2": spread + 0.05, "a3": spread + 0.06})
    crowded = table(jobs, *(claim(id=a, a=a) for a in ("a1", "a1b", "a2", "a3")))
    split = table(jobs, claim(id="a1", a="a1", family="exploratory"),
                  *(claim(id=a, a=a) for a in ("a1b", "a2", "a3")))
    assert crowded.set_index("id").loc["a1", "verdict"] == "inconclusive"  # Holm: 2 x 0.034 at its step
    by_id = split.set_index("id")
    assert by_id.loc["a1", "verdict"] == "reproduced" and by_id.loc["a1", "family_tests"] == 1
    assert by_id.loc["a2", "family_tests"] == 3 and by_id.loc["a2", "alpha_family"] == pytest.approx(0.05 / 3)
    text = claims_mod.markdown(split, [claim(id="a1", a="a1", family="exploratory")], 10, context())
    assert "**primary** (3 tests" in text and "**exploratory** (1 tests" in text


def test_degenerate_comparisons_are_not_testable_and_never_decide_a_claim():
    jobs = jobs_table({"same": 0.0, "better": -0.05}, metric="bon.gold_drop", noise=0.01, base=0.2)
    jobs.loc[jobs["arch"] == "same", "bon.gold_drop"] = jobs.loc[jobs["arch"] == "single", "bon.gold_drop"].values
    floor = jobs[jobs["arch"] == "single"].assign(arch="never_fell", **{"bon.gold_drop": 0.0})  # gold never fell
    jobs = pd.concat([jobs, floor], ignore_index=True)
    both = claim(id="both", metric="bon.gold_drop", a=["better", "same"], b="single", direction="less")
    t = table(jobs, both, claim(id="floor", metric="bon.gold_drop", a="better", b="never_fell", direction="less"),
              bounds={"bon.gold_drop": {"floor": 0.0}})
    rows = t.set_index(["id", "a"])
    assert rows.loc[("both", "better"), "verdict"] == "reproduced"
    same = rows.loc[("both", "same")]
    assert same["verdict"] == "not testable" and "no spread" in same["not_testable"] and np.isnan(same["p"])
    assert rows.loc[("floor", "better"), "verdict"] == "not testable"
    assert rows.loc[("floor", "better"), "not_testable"].startswith("never_fell at the floor of bon.gold_drop (0)")
    got = {cid: claims_mod.claim_verdict(list(g["verdict"])) for cid, g in t.groupby("id")}
    assert got == {"both": "reproduced", "floor": "not testable"}
    assert claims_mod.comparisons_note(["reproduced", "not testable"]) == " (1 of 2 comparisons testable)"
    # Not-testable comparisons do not count in the family's Holm adjustment.
    assert set(t["family_tests"]) == {1}


def test_a_claim_that_needs_a_regime_is_not_testable_where_b_is_never_in_it():
    jobs = jobs_table({"ens": 0.1}, metric="bon.final_gold", base=1.0)
    jobs["bon.gold_drop"] = 0.0  # gold never fell: no over-optimization to mitigate
    regimes = {"overopt": {"metric": "bon.gold_drop", "above": 0.0, "text": "gold peaks and falls"}}
    c = claim(a="ens", metric="bon.final_gold", needs="overopt")
    row = table(jobs, c, regimes=regimes).iloc[0]
    assert row["verdict"] == "not testable" and "gold peaks and falls in no seed" in row["not_testable"]
    jobs.loc[(jobs["arch"] == "single") & (jobs["seed"] == 3), "bon.gold_drop"] = 0.2  # one seed over-optimizes
    row = table(jobs, c, regimes=regimes).iloc[0]
    assert row["verdict"] == "reproduced" and row["regimes"] == "single: gold peaks and falls in 1 of 5 seeds"


def test_missing_arch_or_metric_is_not_measured():
    jobs = jobs_table({"up": 0.05})
    t = table(jobs, claim(id="arch", a="nope"), claim(id="metric", a="up", metric="ppo.final_gap"))
    assert list(t["verdict"]) == ["not measured", "not measured"]
    assert "nope" in t.iloc[0]["missing"] and "ppo.final_gap" in t.iloc[1]["missing"]


def test_all_comparisons_must_hold_and_any_refutation_refutes():
    jobs = jobs_table({"top": 0.05, "mid": 0.02, "low": 0.0})
    got = verdicts(jobs, claim(id="all", a="top", b=["mid", "single"]), claim(id="mixed", a="mid", b=["top", "low"]))
    assert got == {"all": "reproduced", "mixed": "refuted"}


def test_equivalence_non_inferiority_and_parameter_reduction():
    jobs = jobs_table({"twin": 0.001, "far": 0.05, "worse": -0.004}, noise=0.001)
    jobs["params.total"] = jobs["arch"].map({"single": 1000, "twin": 450, "far": 900, "worse": 1000})
    t = table(jobs, claim(id="twin", a="twin", direction="equal", margin=0.01),
              claim(id="far", a="far", direction="equal", margin=0.01),
              claim(id="noninf", a="worse", direction="not_less", margin=0.01),
              claim(id="inferior", a="worse", direction="not_less", margin=0.001),
              claim(id="cut", a="twin", metric="params.total", direction="reduction", expected=0.55,
                    tolerance=0.02))
    got = t.set_index("id")["verdict"].to_dict()
    assert got == {"twin": "reproduced", "far": "refuted", "noninf": "reproduced", "inferior": "refuted",
                   "cut": "measured"}
    # Equivalence: the test against the margins (TOST), which passes with the interval inside ±margin.
    twin = t.set_index("id").loc["twin"]
    assert -0.01 < twin["ci_low"] and twin["ci_high"] < 0.01 and twin["p"] < 0.01
    text = claims_mod.markdown(t, [claim(id="cut", a="twin", metric="params.total", direction="reduction",
                                         expected=0.55, tolerance=0.02, note="why")], 20, context())
    assert "55.0% fewer; paper 55% ± 2%: matches" in text


def test_interaction_compares_the_gain_across_settings_and_default_filters_apply():
    noisy = jobs_table({"ens": 0.05}, extra={"config.data.world.human_agreement": 0.6})
    clean = jobs_table({"ens": 0.01}, noise=0.002, extra={"config.data.world.human_agreement": 0.7})
    jobs = pd.concat([noisy, clean], ignore_index=True)
    defaults = {"data.world.human_agreement": 0.7}
    interaction = claim(id="gain", a="ens", filters={"data.world.human_agreement": 0.6},
                        versus={"data.world.human_agreement": 0.7})
    t = table(jobs, interaction, claim(id="plain", a="ens"), default_filters=defaults)
    gain = t[t["id"] == "gain"].iloc[0]
    assert gain["effect"] == pytest.approx(0.04) and gain["verdict"] == "reproduced"
    plain = t[t["id"] == "plain"].iloc[0]  # the default filter keeps the 0.7 jobs only
    assert plain["effect"] == pytest.approx(0.01) and plain["n_seeds"] == 5


def test_wildcard_metric_expands_per_domain_and_ambiguous_setting_is_reported():
    jobs = jobs_table({"spec": 0.03}, metric="accuracy.gold.per_domain.a")
    jobs["accuracy.gold.per_domain.b"] = jobs["accuracy.gold.per_domain.a"] + (jobs["arch"] == "single") * 0.06
    t = table(jobs, claim(a="spec", metric="accuracy.gold.per_domain.*"))
    assert list(t["metric"]) == ["accuracy.gold.per_domain.a", "accuracy.gold.per_domain.b"]
    assert list(t["verdict"]) == ["reproduced", "refuted"]
    # A wildcard metric_b follows the same suffix: a view of one arch against another arch's own accuracy.
    jobs["views.oracle.accuracy.gold.per_domain.a"] = jobs["accuracy.gold.per_domain.a"] + 0.05
    view = table(jobs, claim(a="spec", metric="views.oracle.accuracy.gold.per_domain.*",
                             metric_b="accuracy.gold.per_domain.*"))
    assert list(view["metric_b"]) == ["accuracy.gold.per_domain.a"] and list(view["verdict"]) == ["reproduced"]
    doubled = pd.concat([jobs, jobs], ignore_index=True)
    row = table(doubled, claim(a="spec", metric="accuracy.gold.per_domain.a")).iloc[0]
    assert row["verdict"] == "not measured" and row["missing"].startswith("ambiguous")


def test_seeds_needed_follow_the_family_threshold():
    jobs = jobs_table({"small": 0.004, "big": 0.05, "b3": 0.05}, noise=0.004)
    t = table(jobs, *(claim(id=a, a=a) for a in ("small", "big", "b3"))).set_index("id")
    small = t.loc["small"]
    need, power = int(small["seeds_to_pass"]), int(small["seeds_80"])
    assert 5 < need < power  # it needs more seeds than it has, and more still for 80 % power
    alone = table(jobs, claim(id="small", a="small")).iloc[0]
    assert int(alone["seeds_to_pass"]) < need  # a smaller family: a looser threshold


def test_secondary_readings_are_shown_beside_and_never_decide():
    jobs = jobs_table({"ens": 0.3}, metric="ppo.final_gold", noise=0.01, base=0.5)
    jobs["ppo.gold@sqrt_kl=2"] = jobs["ppo.final_gold"] - (jobs["arch"] == "ens") * 0.6  # the other sign there
    t = table(jobs, claim(a="ens", metric="ppo.final_gold"), secondary={"ppo.final_gold": ["ppo.gold@sqrt_kl=2"]})
    row = t.iloc[0]
    assert row["verdict"] == "reproduced" and row["secondary"].startswith("√KL 2: -0.300 [")


def test_shipped_claims_file_loads_and_writes_tables(tmp_path):
    claims, ctx = claims_mod.load_claims()
    ids = {c["id"] for c in claims}
    assert {"dmoerm_accuracy", "dmoerm_vs_information", "ensembles_noisy_labels", "disturbance"} <= ids
    assert {c["family"] for c in claims} == set(ctx["families"]) == {"primary", "exploratory"}
    # ODIN (Chen et al. 2024): less length-correlated, and no loss of gold accuracy within a margin.
    odin = {c["id"]: c for c in claims if c["a"] == "odin"}
    assert odin["odin_length_corr"]["metric"] == "bon.length_corr.reward" and odin["odin_length_corr"]["b"] == "single"
    assert odin["odin_accuracy"]["direction"] == "not_less" and odin["odin_accuracy"]["margin"] > 0
    assert odin["odin_style"]["family"] == "exploratory"
    # Every PPO claim is read at the one common √KL, never at the distance each pair of runs reached.
    ppo_metrics = {m for c in claims for m in claims_mod._as_list(c["metric"]) if m.startswith("ppo.")}
    assert ppo_metrics == {"ppo.final_gold", "ppo.final_gap"}
    # Parameter savings are measured facts with a note on why they differ.
    assert all(c.get("note") for c in claims if c["direction"] == "reduction")
    jobs = jobs_table({"dmoerm": 0.05, "umm": 0.0})
    for col, value in ctx["default_filters"].items():
        jobs[f"config.{col}"] = value
    paths = claims_mod.write_claims(tmp_path, jobs=jobs)
    t = pd.read_csv(paths[0])
    by_id = t.groupby("id")["verdict"].apply(list).to_dict()
    assert by_id["dmoerm_accuracy"] == ["reproduced"] and by_id["umm_accuracy"] == ["inconclusive"]
    assert by_id["disturbance"] == ["not measured"]
    text = paths[1].read_text()
    assert "| DMoERM is more accurate (gold) than a single RM" in text and "**reproduced**" in text
    assert "**primary** (" in text and "80% power" in text


def test_the_baseline_is_named_once_in_the_claims_file(tmp_path):
    # The shipped file names an architecture the harness ships (conf/arch/<baseline>.yaml).
    assert (Path(CONF_DIR) / "arch" / f"{claims_mod.load_baseline()}.yaml").is_file()
    path = tmp_path / "claims.yaml"
    path.write_text("baseline: ensemble\nclaims: []\n")
    assert claims_mod.load_baseline(path) == "ensemble"
    path.write_text("claims: []\n")
    with pytest.raises(ValueError, match="claims.yaml: `baseline` must name"):
        claims_mod.load_baseline(path)


@pytest.mark.parametrize(("body", "match"), [
    ("claims:\n  - {id: a1, claim: t, family: primary, metric: m, a: x, b: y, direction: sideways}\n",
     "a1.*sideways"),
    ("claims:\n  - {id: a2, claim: t, family: nope, metric: m, a: x, b: y, direction: less}\n", "a2.*family"),
    ("claims:\n  - {id: a3, claim: t, metric: m, a: x, b: y, direction: less}\n", "a3.*missing `family`"),
    ("claims:\n  - {id: a4, claim: t, family: primary, metric: m, a: x, b: y, direction: less, needs: hot}\n",
     "a4.*needs 'hot'"),
    ("claims:\n  - {id: a5, claim: t, family: primary, metric: m, a: x, b: y, direction: reduction, expected: 0.5,"
     " tolerance: 0.1}\n", "a5.*note"),
    ("famlies: {}\nclaims: []\n", "unknown sections"),
])
def test_bad_claims_file_names_the_claim(tmp_path, body, match):
    path = tmp_path / "claims.yaml"
    path.write_text("families: {primary: {text: t}}\n" + body if not body.startswith("fam") else body)
    with pytest.raises(ValueError, match=match):
        claims_mod.load_claims(path)
