"""`python -m harness.regress RUN_DIR BASELINE.json [--update [--init-tolerance]]`: compare a seeded run
against committed reference metrics (SPEC §10), print a table, exit 0 when every check passes, 1 otherwise.

Baseline file (`baselines/<suite>.json`):

    {"suite": "regression",
     "regenerate": "<shell command: rerun the suite, then regress --update this file>",
     "jobs": {"arch=single,seed=0": {
         "accuracy.gold.overall": {"value": 0.71, "tol": 0.03},
         "params.total": {"value": 164289, "tol": 0},
         "bon.gold_peak": {"value": 1.2, "tol": 0.3, "direction": "higher_is_better"}}}}

A job key `k=v,k=v` selects the run's job whose `choices.<k>` (or top-level `seed`, or a dotted summary
column such as `params.total`) equal the values; it must select exactly one job. Metric names are
summary.csv columns. Per metric, `direction`:
  both (default)     pass iff |run - value| <= tol
  higher_is_better   regression iff run < value - tol  (an improvement passes, flagged "ok (better)")
  lower_is_better    regression iff run > value + tol
A missing or ambiguous job, a failed job, a missing metric and a NaN/null value all fail. Comparisons allow
1e-9 relative slack so that a value exactly at the tolerance edge is not failed by float rounding.

--update rewrites every baseline value from the run, keeping tolerances and directions; nothing is written
unless every value could be taken (so a broken run cannot half-overwrite a baseline). With --init-tolerance,
a baseline file that does not exist yet is created: one job key per job of the run (arch, the choices that
vary across the run, seed) with an entry for each metric of `DEFAULT_METRICS` the job reports, and these
starting tolerances (edit them in the file afterwards):
  params.*                        tol 0, both              counts are exact; any change is a change
  accuracy.*                      tol 0.03, higher_is_better  ~1 s.e. of accuracy on a few thousand pairs
  bon.gold_peak, ppo.gold_peak    tol 0.5, higher_is_better   rewards in initial-policy s.d. units;
  bon.final_gap, ppo.final_gap    tol 0.5, lower_is_better    peaks/gaps from a 2-parameter fit are noisy
  anything else                   tol 0.5, both
Exit status: 0 all pass (or baseline written), 1 a check failed (or update refused), 2 unusable input.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.cache import atomic_write_json
from harness.results import collect_records, split_overrides

DIRECTIONS = ("both", "higher_is_better", "lower_is_better")
DEFAULT_METRICS = (
    "accuracy.gold.overall", "accuracy.human.overall",
    "params.total", "params.active", "params.trainable",
    "bon.gold_peak", "bon.final_gap", "ppo.gold_peak",
)
# Order of choices in generated job keys; choices not listed follow alphabetically.
_KEY_ORDER = ("arch", "data", "backbone", "policy", "opt")
_REL_SLACK = 1e-9


def init_tolerance(metric: str) -> dict:
    """Starting tolerance and direction for a new baseline entry (see the module docstring)."""
    if metric.startswith("params."):
        return {"tol": 0, "direction": "both"}
    if metric.startswith("accuracy."):
        return {"tol": 0.03, "direction": "higher_is_better"}
    if metric.endswith(".gold_peak"):
        return {"tol": 0.5, "direction": "higher_is_better"}
    if metric.endswith(".final_gap"):
        return {"tol": 0.5, "direction": "lower_is_better"}
    return {"tol": 0.5, "direction": "both"}


# ------------------------------------------------------------------------------------ selecting jobs


def _split_key(key: str) -> list[str]:
    return [p.strip() for p in split_overrides(key) if p.strip()]


def parse_job_key(key: str) -> dict[str, str]:
    selector = {}
    for part in _split_key(key):
        if "=" not in part:
            raise ValueError(f"job key {key!r}: {part!r} is not k=v")
        k, v = part.split("=", 1)
        selector[k.strip()] = v.strip()
    return selector


def _norm(value) -> str | None:
    """Compare selector values as text: 0 == 0.0 == "0", [bon,ppo] == "bon,ppo"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip().strip("[]").replace(" ", "").replace("'", "").replace('"', "")
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else repr(number)


def _column(k: str) -> str:
    return k if k == "seed" or "." in k else f"choices.{k}"


def select(records: list[dict], key: str) -> list[dict]:
    selector = parse_job_key(key)
    return [r for r in records if all(_norm(r.get(_column(k))) == _norm(v) for k, v in selector.items())]


# ---------------------------------------------------------------------------------------- comparing


@dataclass
class Check:
    job: str
    metric: str
    baseline: float | None
    tol: float | None
    run: float | None
    verdict: str
    ok: bool

    @property
    def delta(self) -> float | None:
        if self.run is None or self.baseline is None:
            return None
        return self.run - self.baseline


def _finite_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _validate_entry(job: str, metric: str, entry) -> None:
    if not isinstance(entry, dict) or "value" not in entry or "tol" not in entry:
        raise ValueError(f"baseline {job} / {metric}: need {{'value': ..., 'tol': ...}}, got {entry!r}")
    if not _finite_number(entry["tol"]) or entry["tol"] < 0:
        raise ValueError(f"baseline {job} / {metric}: tol must be a number >= 0, got {entry['tol']!r}")
    if entry.get("direction", "both") not in DIRECTIONS:
        raise ValueError(f"baseline {job} / {metric}: direction {entry['direction']!r} not in {DIRECTIONS}")


def _run_value(records: list[dict], job: str, metric: str) -> tuple[float | None, str | None]:
    """(value, None) or (None, why it cannot be compared)."""
    matches = select(records, job)
    if not matches:
        return None, "MISSING JOB"
    if len(matches) > 1:
        return None, f"AMBIGUOUS ({len(matches)} jobs)"
    row = matches[0]
    if row.get("status") != "ok":
        return None, "FAILED JOB"
    if metric not in row:
        return None, "MISSING METRIC"
    value = row[metric]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None, "NAN"
    if not _finite_number(value):
        return None, f"NOT A NUMBER ({value!r})"
    return value, None


def compare(records: list[dict], baseline: dict) -> list[Check]:
    checks = []
    for job, metrics in baseline.get("jobs", {}).items():
        parse_job_key(job)  # a malformed key is a broken baseline, not a failed check
        for metric, entry in metrics.items():
            _validate_entry(job, metric, entry)
            value, tol = entry["value"], entry["tol"]
            direction = entry.get("direction", "both")
            run, problem = _run_value(records, job, metric)
            if problem is None and not _finite_number(value):
                problem = "BASELINE NAN"
            if problem:
                checks.append(Check(job, metric, value, tol, run, problem, False))
                continue
            slack = tol + _REL_SLACK * max(1.0, abs(value))
            delta = run - value
            if direction == "higher_is_better":
                ok, better = delta >= -slack, delta > slack
            elif direction == "lower_is_better":
                ok, better = delta <= slack, delta < -slack
            else:
                ok, better = abs(delta) <= slack, False
            verdict = ("ok (better)" if better else "ok") if ok else "REGRESSED"
            checks.append(Check(job, metric, value, tol, run, verdict, ok))
    return checks


def _fmt(x) -> str:
    if x is None:
        return ""
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) >= 1):
        return f"{int(x)}"
    return f"{x:.5g}"


def format_checks(checks: list[Check]) -> str:
    if not checks:
        return "(baseline has no metrics)"
    table = pd.DataFrame([
        {"job": c.job, "metric": c.metric, "baseline": _fmt(c.baseline), "tol": _fmt(c.tol),
         "run": _fmt(c.run), "delta": _fmt(c.delta), "verdict": c.verdict}
        for c in checks
    ])
    return table.to_string(index=False)


# ----------------------------------------------------------------------------------------- updating


def updated(records: list[dict], baseline: dict) -> tuple[dict, list[Check]]:
    """The baseline with every value taken from the run, and the checks that made that impossible."""
    new = json.loads(json.dumps(baseline))  # deep copy; unknown top-level fields are kept as they are
    problems = []
    for job, metrics in new.get("jobs", {}).items():
        for metric, entry in metrics.items():
            _validate_entry(job, metric, entry)
            run, problem = _run_value(records, job, metric)
            if problem:
                problems.append(Check(job, metric, entry["value"], entry["tol"], None, problem, False))
            else:
                entry["value"] = run
    return new, problems


def _job_key_columns(ok: list[dict]) -> list[str]:
    choice_cols = {k for r in ok for k in r if k.startswith("choices.") and not k.startswith("choices.hydra")}
    # Varying among the jobs that have the choice at all: a nested group (arch/labeler) exists for some archs only.
    varying = [c for c in choice_cols if len({_norm(r[c]) for r in ok if r.get(c) is not None}) > 1]

    def rank(c: str) -> tuple:
        group = c[8:].split("/")[0]  # a nested group sorts with its parent
        return _KEY_ORDER.index(group) if group in _KEY_ORDER else len(_KEY_ORDER), c

    cols = ["choices.arch"] + sorted((c for c in varying if c != "choices.arch"), key=rank)
    return cols + ["seed"]


def _key_value(value) -> str:
    text = _norm(value)
    return f"[{text}]" if text and "," in text else str(text)  # a list choice, as Hydra writes it


def initial_baseline(records: list[dict], suite: str, baseline_path: Path) -> dict:
    """A new baseline from a run: every job, `DEFAULT_METRICS` it reports, `init_tolerance` tolerances."""
    failed = [r["job_dir"] for r in records if r.get("status") != "ok"]
    if failed:
        raise ValueError(f"refusing to create a baseline from a run with failed jobs: {failed}")
    cols = _job_key_columns(records)
    jobs: dict[str, dict] = {}
    for r in records:
        key = ",".join(f"{c.removeprefix('choices.')}={_key_value(r.get(c))}" for c in cols
                       if c in ("choices.arch", "seed") or r.get(c) is not None)
        if key in jobs:
            raise ValueError(f"two jobs share the key {key!r} (they differ in something that is not a choice "
                             f"or the seed); write this baseline by hand")
        entries = {}
        for metric in DEFAULT_METRICS:
            if _finite_number(r.get(metric)):
                entries[metric] = {"value": r[metric], **init_tolerance(metric)}
        jobs[key] = entries
    return {
        "suite": suite,
        "regenerate": f"python -m harness -m +suite={suite} hydra.sweep.dir=DIR && "
                      f"python -m harness.regress DIR {baseline_path} --update",
        "jobs": jobs,
    }


# ----------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.regress",
                                     description="Compare a run against a regression baseline.")
    parser.add_argument("run_dir", type=Path, help="the run's sweep (or job) directory")
    parser.add_argument("baseline", type=Path, help="baselines/<suite>.json")
    parser.add_argument("--update", action="store_true", help="rewrite the baseline's values from the run")
    parser.add_argument("--init-tolerance", action="store_true",
                        help="with --update: create the baseline if it does not exist, default tolerances")
    args = parser.parse_args(argv)

    records = collect_records(args.run_dir) if args.run_dir.is_dir() else []
    if not records:
        print(f"error: no job (metrics.json) under {args.run_dir}", file=sys.stderr)
        return 2

    if not args.baseline.is_file():
        if not (args.update and args.init_tolerance):
            print(f"error: baseline {args.baseline} not found; create it from this run with "
                  f"--update --init-tolerance", file=sys.stderr)
            return 2
        try:
            baseline = initial_baseline(records, args.baseline.stem, args.baseline)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        atomic_write_json(args.baseline, baseline)
        n = sum(len(m) for m in baseline["jobs"].values())
        print(f"created {args.baseline}: {len(baseline['jobs'])} jobs, {n} metrics")
        return 0

    try:
        baseline = json.loads(args.baseline.read_text(encoding="utf-8"))
        checks = compare(records, baseline)
    except ValueError as e:  # includes json.JSONDecodeError
        print(f"error: unusable baseline {args.baseline}: {e}", file=sys.stderr)
        return 2
    print(format_checks(checks))

    if args.update:
        new, problems = updated(records, baseline)
        if problems:
            print(f"\nnot updated: {len(problems)} values could not be taken from the run:\n"
                  f"{format_checks(problems)}", file=sys.stderr)
            return 1
        atomic_write_json(args.baseline, new)
        print(f"\nupdated {sum(len(m) for m in new['jobs'].values())} values in {args.baseline}")
        return 0

    n_bad = sum(not c.ok for c in checks)
    print(f"\n{len(checks) - n_bad}/{len(checks)} checks passed" + (f", {n_bad} FAILED" if n_bad else ""))
    return 1 if n_bad else 0


if __name__ == "__main__":
    sys.exit(main())
