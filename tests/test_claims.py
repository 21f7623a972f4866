"""The claims table on synthetic sweeps with analytic answers: a known difference is reproduced, a zero effect is
inconclusive, the opposite sign refutes, a missing arch or metric is "not measured"; and the shipped claims file
loads."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import CONF_DIR
from conftest import paired_jobs_table as jobs_table

from harness import claims as claims_mod


def claim(**kw) -> dict:
    return {"id": kw.pop("id", "c"), "claim": "text", "metric": "accuracy.gold.overall", "a": "x", "b": "single",
            "direction": "greater", **kw}


def verdicts(jobs: pd.DataFrame, *claims, defaults=None) -> dict[str, str]:
    table = claims_mod.claims_table(jobs, list(claims), defaults or {})
    return {cid: claims_mod.claim_verdict(list(group["verdict"])) for cid, group in table.groupby("id")}


def test_known_difference_reproduces_zero_effect_is_inconclusive_opposite_refutes():
    jobs = jobs_table({"up": 0.05, "flat": 0.0, "down": -0.05})
    got = verdicts(jobs, claim(id="up", a="up"), claim(id="flat", a="flat"), claim(id="down", a="down"),
                   claim(id="less", a="down", direction="less"))
    assert got == {"up": "reproduced", "flat": "inconclusive", "down": "refuted", "less": "reproduced"}


def test_missing_arch_or_metric_is_not_measured():
    jobs = jobs_table({"up": 0.05})
    table = claims_mod.claims_table(jobs, [claim(id="arch", a="nope"), claim(id="metric", a="up",
                                                                             metric="ppo.final_gap")], {})
    assert list(table["verdict"]) == ["not measured", "not measured"]
    assert "nope" in table.iloc[0]["missing"] and "ppo.final_gap" in table.iloc[1]["missing"]


def test_all_comparisons_must_hold_and_any_refutation_refutes():
    jobs = jobs_table({"top": 0.05, "mid": 0.02, "low": 0.0})
    got = verdicts(jobs, claim(id="all", a="top", b=["mid", "single"]), claim(id="mixed", a="mid", b=["top", "low"]))
    assert got == {"all": "reproduced", "mixed": "refuted"}


def test_equivalence_and_parameter_reduction():
    jobs = jobs_table({"twin": 0.001, "far": 0.05}, noise=0.001)
    jobs["params.total"] = jobs["arch"].map({"single": 1000, "twin": 450, "far": 900})
    got = verdicts(jobs, claim(id="twin", a="twin", direction="equal", margin=0.01),
                   claim(id="far", a="far", direction="equal", margin=0.01),
                   claim(id="cut", a="twin", metric="params.total", direction="reduction", expected=0.55,
                         tolerance=0.02),
                   claim(id="nocut", a="far", metric="params.total", direction="reduction", expected=0.55,
                         tolerance=0.02))
    assert got == {"twin": "reproduced", "far": "refuted", "cut": "reproduced", "nocut": "refuted"}


def test_interaction_compares_the_gain_across_settings_and_default_filters_apply():
    noisy = jobs_table({"ens": 0.05}, extra={"config.data.world.human_agreement": 0.6})
    clean = jobs_table({"ens": 0.01}, extra={"config.data.world.human_agreement": 0.7})
    jobs = pd.concat([noisy, clean], ignore_index=True)
    defaults = {"data.world.human_agreement": 0.7}
    interaction = claim(id="gain", a="ens", filters={"data.world.human_agreement": 0.6},
                        versus={"data.world.human_agreement": 0.7})
    table = claims_mod.claims_table(jobs, [interaction, claim(id="plain", a="ens")], defaults)
    gain = table[table["id"] == "gain"].iloc[0]
    assert gain["effect"] == pytest.approx(0.04) and gain["verdict"] == "reproduced"
    plain = table[table["id"] == "plain"].iloc[0]  # the default filter keeps the 0.7 jobs only
    assert plain["effect"] == pytest.approx(0.01) and plain["n_seeds"] == 5


def test_wildcard_metric_expands_per_domain_and_ambiguous_setting_is_reported():
    jobs = jobs_table({"spec": 0.03}, metric="accuracy.gold.per_domain.a")
    jobs["accuracy.gold.per_domain.b"] = jobs["accuracy.gold.per_domain.a"] + (jobs["arch"] == "single") * 0.06
    table = claims_mod.claims_table(jobs, [claim(a="spec", metric="accuracy.gold.per_domain.*")], {})
    assert list(table["metric"]) == ["accuracy.gold.per_domain.a", "accuracy.gold.per_domain.b"]
    assert list(table["verdict"]) == ["reproduced", "refuted"]
    # A wildcard metric_b follows the same suffix: a view of one arch against another arch's own accuracy.
    jobs["views.oracle.accuracy.gold.per_domain.a"] = jobs["accuracy.gold.per_domain.a"] + 0.05
    view = claims_mod.claims_table(jobs, [claim(a="spec", metric="views.oracle.accuracy.gold.per_domain.*",
                                                metric_b="accuracy.gold.per_domain.*")], {})
    assert list(view["metric_b"]) == ["accuracy.gold.per_domain.a"] and list(view["verdict"]) == ["reproduced"]
    doubled = pd.concat([jobs, jobs], ignore_index=True)
    row = claims_mod.claims_table(doubled, [claim(a="spec", metric="accuracy.gold.per_domain.a")], {}).iloc[0]
    assert row["verdict"] == "not measured" and row["missing"].startswith("ambiguous")


def test_shipped_claims_file_loads_and_writes_tables(tmp_path):
    claims, defaults = claims_mod.load_claims()
    ids = {c["id"] for c in claims}
    assert {"dmoerm_accuracy", "dmoerm_vs_information", "ensembles_noisy_labels", "disturbance"} <= ids
    jobs = jobs_table({"dmoerm": 0.05, "umm": 0.0})
    for col, value in defaults.items():
        jobs[f"config.{col}"] = value
    paths = claims_mod.write_claims(tmp_path, jobs=jobs)
    table = pd.read_csv(paths[0])
    by_id = table.groupby("id")["verdict"].apply(list).to_dict()
    assert by_id["dmoerm_accuracy"] == ["reproduced"] and by_id["umm_accuracy"] == ["inconclusive"]
    assert by_id["disturbance"] == ["not measured"]
    text = paths[1].read_text()
    assert "| DMoERM is more accurate (gold) than a single RM" in text and "**reproduced**" in text


def test_the_baseline_is_named_once_in_the_claims_file(tmp_path):
    # The shipped file names an architecture the harness ships (conf/arch/<baseline>.yaml).
    assert (Path(CONF_DIR) / "arch" / f"{claims_mod.load_baseline()}.yaml").is_file()
    path = tmp_path / "claims.yaml"
    path.write_text("baseline: ensemble\nclaims: []\n")
    assert claims_mod.load_baseline(path) == "ensemble"
    path.write_text("claims: []\n")
    with pytest.raises(ValueError, match="claims.yaml: `baseline` must name"):
        claims_mod.load_baseline(path)


def test_bad_claims_file_names_the_claim(tmp_path):
    path = tmp_path / "claims.yaml"
    path.write_text("claims:\n  - {id: a1, claim: t, metric: m, a: x, b: y, direction: sideways}\n")
    with pytest.raises(ValueError, match="a1.*sideways"):
        claims_mod.load_claims(path)
