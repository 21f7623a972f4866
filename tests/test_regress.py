"""harness.regress against fake sweeps (built by conftest's make_sweep)."""

from __future__ import annotations

import json

import pytest
from conftest import FAKE_ARCHS, FAKE_FAILED, make_sweep

from harness import regress, results


def _baseline(sweep, jobs=("arch=single,seed=0", "arch=dmoerm,seed=1")) -> dict:
    """A baseline whose values are exactly the sweep's."""
    records = results.collect_records(sweep)
    out = {"suite": "test", "regenerate": "n/a", "jobs": {}}
    for key in jobs:
        (row,) = regress.select(records, key)
        out["jobs"][key] = {
            "accuracy.gold.overall": {"value": row["accuracy.gold.overall"], "tol": 0.03},
            "params.total": {"value": row["params.total"], "tol": 0},
            "bon.gold_peak": {"value": row["bon.gold_peak"], "tol": 0.3, "direction": "higher_is_better"},
            "bon.final_gap": {"value": row["bon.final_gap"], "tol": 0.2, "direction": "lower_is_better"},
        }
    return out


@pytest.fixture
def sweep(tmp_path):
    return make_sweep(tmp_path / "run", archs=("single", "dmoerm", "more"))


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_identical_values_pass(sweep, tmp_path, capsys):
    path = _write(tmp_path / "b.json", _baseline(sweep))
    assert regress.main([str(sweep), str(path)]) == 0
    out = capsys.readouterr().out
    assert "8/8 checks passed" in out
    for header in ("job", "metric", "baseline", "tol", "run", "delta", "verdict"):
        assert header in out.splitlines()[0]


@pytest.mark.parametrize(
    ("metric", "shift", "expect"),
    [
        ("accuracy.gold.overall", +0.031, 1),  # direction both: too high fails too
        ("accuracy.gold.overall", -0.031, 1),
        ("accuracy.gold.overall", +0.029, 0),
        ("accuracy.gold.overall", +0.03, 0),  # exactly at the tolerance edge passes despite float rounding
        ("params.total", +1, 1),  # tol 0
        ("bon.gold_peak", +0.31, 1),  # higher_is_better, baseline above the run by more than tol
        ("bon.gold_peak", -5.0, 0),  # the run far above the baseline: better, not a regression
        ("bon.final_gap", +5.0, 0),  # lower_is_better, the run far below the baseline
        ("bon.final_gap", -0.21, 1),
    ],
)
def test_moved_baseline_value(sweep, tmp_path, capsys, metric, shift, expect):
    # Moving the *baseline* by +shift is the run moving by -shift relative to it.
    b = _baseline(sweep)
    b["jobs"]["arch=single,seed=0"][metric]["value"] += shift
    assert regress.main([str(sweep), str(_write(tmp_path / "b.json", b))]) == expect
    out = capsys.readouterr().out
    assert ("REGRESSED" in out) == bool(expect)


def test_direction_semantics_directly(sweep):
    records = results.collect_records(sweep)
    run = regress.select(records, "arch=single,seed=0")[0]["bon.gold_peak"]
    for value, direction, ok in [
        (run + 1.0, "higher_is_better", False),  # run fell 1.0 below the baseline
        (run - 1.0, "higher_is_better", True),  # run rose: an improvement is no regression
        (run - 1.0, "lower_is_better", False),
        (run + 1.0, "lower_is_better", True),
        (run + 1.0, "both", False),
        (run - 1.0, "both", False),
    ]:
        entry = {"value": value, "tol": 0.5, "direction": direction}
        b = {"jobs": {"arch=single,seed=0": {"bon.gold_peak": entry}}}
        (check,) = regress.compare(records, b)
        assert check.ok is ok, (value - run, direction)
        assert check.delta == pytest.approx(run - value)


PARAMS_ENTRY = {"params.total": {"value": 1, "tol": 0}}


@pytest.mark.parametrize(
    ("edit", "verdict"),
    [
        (lambda b: b["jobs"]["arch=single,seed=0"].update({"no.such.metric": {"value": 1, "tol": 1}}),
         "MISSING METRIC"),
        (lambda b: b["jobs"].update({"arch=rodos,seed=0": PARAMS_ENTRY}), "MISSING JOB"),
        (lambda b: b["jobs"].update({f"arch={FAKE_FAILED[0]},seed={FAKE_FAILED[1]}": PARAMS_ENTRY}), "FAILED JOB"),
        (lambda b: b["jobs"].update({"arch=single": PARAMS_ENTRY}), "AMBIGUOUS"),
        # ppo.final_gap is NaN in every fake job (written as null).
        (lambda b: b["jobs"]["arch=single,seed=0"].update({"ppo.final_gap": {"value": 1, "tol": 9}}), "NAN"),
    ],
)
def test_uncomparable_checks_fail(sweep, tmp_path, capsys, edit, verdict):
    b = _baseline(sweep)
    edit(b)
    assert regress.main([str(sweep), str(_write(tmp_path / "b.json", b))]) == 1
    out = capsys.readouterr().out
    assert verdict in out and "FAILED" in out.splitlines()[-1]


def test_job_key_may_name_any_choice(sweep):
    records = results.collect_records(sweep)
    assert len(regress.select(records, "arch=dmoerm, backbone=tiny, seed=1")) == 1
    assert len(regress.select(records, "arch=dmoerm,opt=[bon,ppo],seed=1.0")) == 1
    assert regress.select(records, "arch=dmoerm,backbone=smollm2") == []
    with pytest.raises(ValueError, match="not k=v"):
        regress.parse_job_key("arch=single,seed")


def test_update_round_trip_keeps_tolerances(sweep, tmp_path, capsys):
    b = _baseline(sweep)
    for entry in b["jobs"]["arch=single,seed=0"].values():
        entry["value"] += 10  # far off: every check fails
    path = _write(tmp_path / "b.json", b)
    assert regress.main([str(sweep), str(path)]) == 1
    assert regress.main([str(sweep), str(path), "--update"]) == 0
    new = json.loads(path.read_text())
    assert new == _baseline(sweep)  # values back from the run; tol, direction, suite, regenerate kept
    capsys.readouterr()
    assert regress.main([str(sweep), str(path)]) == 0


def test_update_refuses_when_a_value_is_missing(sweep, tmp_path):
    b = _baseline(sweep)
    b["jobs"]["arch=single,seed=0"]["no.such.metric"] = {"value": 1, "tol": 1}
    b["jobs"]["arch=single,seed=0"]["params.total"]["value"] = 7
    path = _write(tmp_path / "b.json", b)
    before = path.read_text()
    assert regress.main([str(sweep), str(path), "--update"]) == 1
    assert path.read_text() == before  # all or nothing


def test_init_creates_baseline_that_then_passes(tmp_path, capsys):
    sweep = make_sweep(tmp_path / "run", archs=("single", "umm"))
    path = tmp_path / "baselines" / "regression.json"
    assert regress.main([str(sweep), str(path)]) == 2  # no baseline and no --init-tolerance
    assert regress.main([str(sweep), str(path), "--update"]) == 2
    assert not path.exists()
    assert regress.main([str(sweep), str(path), "--update", "--init-tolerance"]) == 0
    b = json.loads(path.read_text())
    assert b["suite"] == "regression" and "--update" in b["regenerate"]
    assert sorted(b["jobs"]) == [f"arch={a},seed={s}" for a in ("single", "umm") for s in (0, 1)]
    entries = b["jobs"]["arch=umm,seed=1"]
    assert entries["params.total"] == {"value": FAKE_ARCHS["umm"][1], "tol": 0, "direction": "both"}
    assert entries["accuracy.gold.overall"]["tol"] == 0.03
    assert entries["bon.final_gap"]["direction"] == "lower_is_better"
    assert "ppo.final_gap" not in entries  # not in the default list (and NaN in this run)
    assert set(entries) == set(regress.DEFAULT_METRICS)
    capsys.readouterr()
    assert regress.main([str(sweep), str(path)]) == 0


def test_init_keys_name_a_nested_arch_choice_only_where_it_varies(tmp_path, capsys):
    sweep = make_sweep(tmp_path / "run", archs=("single", "dmoerm"))
    path = tmp_path / "b.json"
    assert regress.main([str(sweep), str(path), "--update", "--init-tolerance"]) == 0
    assert sorted(json.loads(path.read_text())["jobs"]) == [f"arch={a},seed={s}" for a in ("dmoerm", "single")
                                                            for s in (0, 1)]
    for p in sorted(sweep.rglob("metrics.json")):  # dmoerm's seed 1 with another labeler
        m = json.loads(p.read_text())
        if m["choices"]["arch"] == "dmoerm" and m["seed"] == 1:
            m["choices"]["arch/labeler"] = "local"
            p.write_text(json.dumps(m))
    path.unlink()
    assert regress.main([str(sweep), str(path), "--update", "--init-tolerance"]) == 0
    jobs = sorted(json.loads(path.read_text())["jobs"])
    assert "arch=dmoerm,arch/labeler=local,seed=1" in jobs and "arch=single,seed=0" in jobs
    capsys.readouterr()
    assert regress.main([str(sweep), str(path)]) == 0


def test_init_refuses_failed_run_and_unusable_inputs(sweep, tmp_path, capsys):
    path = tmp_path / "new.json"
    assert regress.main([str(sweep), str(path), "--update", "--init-tolerance"]) == 1  # `more` seed 1 failed
    assert not path.exists()
    assert regress.main([str(tmp_path / "nothing"), str(path)]) == 2
    bad = _write(tmp_path / "bad.json", {"jobs": {"arch=single,seed=0": {"params.total": {"value": 1}}}})
    assert regress.main([str(sweep), str(bad)]) == 2
    (tmp_path / "torn.json").write_text("{")
    assert regress.main([str(sweep), str(tmp_path / "torn.json")]) == 2
