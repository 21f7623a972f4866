"""The claims table: each published claim of ``conf/claims.yaml`` checked against a sweep.

A claim is data (text, metric, arch a, arch b, direction, filters; see the YAML's header); this module turns
each into paired comparisons (``harness.stats.compare``), adjusts their p-values together (Holm, over every
comparison of the file) and gives each a verdict — reproduced, refuted, inconclusive or not measured — written as
``claims.csv`` (one row per comparison) and ``claims.md`` (one row per claim, its comparisons below it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .results import atomic_write_text
from .stats import CONFIDENCE, bootstrap_seeds, compare, describe, holm, load_jobs, matches, parse_curve_metric

CLAIMS_FILE = Path(__file__).resolve().parents[1] / "conf" / "claims.yaml"
CSV_FILE, MD_FILE = "claims.csv", "claims.md"
DIRECTIONS = ("greater", "less", "equal", "reduction")
KEYS = {"id", "claim", "source", "note", "metric", "metric_b", "a", "b", "direction", "margin", "expected",
        "tolerance", "filters", "versus"}
REPRODUCED, REFUTED, INCONCLUSIVE, NOT_MEASURED = "reproduced", "refuted", "inconclusive", "not measured"
ALPHA = 1 - CONFIDENCE


def load_claims(path: str | Path = CLAIMS_FILE) -> tuple[list[dict], dict]:
    """(claims, default filters) from a claims YAML, checked: errors name the file and the claim."""
    path = Path(path)
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    claims, defaults = doc.get("claims") or [], doc.get("default_filters") or {}
    seen = set()
    for i, c in enumerate(claims):
        where = f"{path}: claim {c.get('id', i)!r}"
        unknown = set(c) - KEYS
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)} (valid: {sorted(KEYS)})")
        for key in ("id", "claim", "metric", "a", "b", "direction"):
            if key not in c:
                raise ValueError(f"{where}: missing `{key}`")
        if c["id"] in seen:
            raise ValueError(f"{where}: id used twice")
        seen.add(c["id"])
        directions = _as_list(c["direction"])
        bad = [d for d in directions if d not in DIRECTIONS]
        if bad:
            raise ValueError(f"{where}: direction {bad} is not one of {list(DIRECTIONS)}")
        if len(directions) not in (1, len(_as_list(c["metric"]))):
            raise ValueError(f"{where}: give one direction, or one per metric")
        if "equal" in directions and not c.get("margin", 0) > 0:
            raise ValueError(f"{where}: direction equal needs a margin > 0")
        if "reduction" in directions and ("expected" not in c or "tolerance" not in c):
            raise ValueError(f"{where}: direction reduction needs `expected` and `tolerance`")
    return claims, defaults


def load_baseline(path: str | Path = CLAIMS_FILE) -> str:
    """The architecture stats.csv compares every other one with: the claims file's ``baseline``."""
    doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    baseline = doc.get("baseline")
    if not isinstance(baseline, str) or not baseline:
        raise ValueError(f"{path}: `baseline` must name the architecture stats.csv compares every other one with, "
                         f"got {baseline!r}")
    return baseline


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def expand_metric(metric: str, columns: Sequence[str]) -> list[str]:
    """"accuracy.gold.per_domain.*" -> every such column of the sweep; other names as they are."""
    if not metric.endswith(".*"):
        return [metric]
    prefix = metric[:-1]
    return sorted(c for c in columns if c.startswith(prefix) and "." not in c[len(prefix):])


def comparisons(claim: Mapping, columns: Sequence[str]) -> list[dict]:
    """The (metric, metric_b, a, b, direction) tuples one claim stands for."""
    metrics, directions = _as_list(claim["metric"]), _as_list(claim["direction"])
    directions = directions * len(metrics) if len(directions) == 1 else directions
    out = []
    for metric, direction in zip(metrics, directions, strict=True):
        expanded = expand_metric(metric, columns) or [metric]
        for m in expanded:
            metric_b = claim.get("metric_b") or m
            if metric_b.endswith(".*"):  # the same per-domain (etc.) suffix on b's side
                metric_b = metric_b[:-1] + m[len(metric) - 1:]
            for a in _as_list(claim["a"]):
                for b in _as_list(claim["b"]):
                    out.append({"metric": m, "metric_b": metric_b, "a": a, "b": b, "direction": direction})
    return out


def _has_metric(jobs: pd.DataFrame, metric: str) -> bool:
    curve = parse_curve_metric(metric)
    if curve is not None:
        return any(c.startswith(f"{curve[0]}.") for c in jobs.columns)
    return metric in jobs.columns and pd.to_numeric(jobs[metric], errors="coerce").notna().any()


def evaluate_comparison(jobs: pd.DataFrame, claim: Mapping, comp: Mapping, defaults: Mapping) -> dict:
    """Effect, CI and raw p-value of one comparison, or a "not measured" row saying what is missing."""
    row = {"id": claim["id"], **comp, "filters": _filters_text(claim, defaults), "n_seeds": 0,
           "effect": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan, "ci_basis": "",
           "a_value": math.nan, "b_value": math.nan, "missing": ""}
    filters = {**defaults, **(claim.get("filters") or {})}
    side = jobs[matches(jobs, filters)] if len(jobs) else jobs
    missing = [x for x in (comp["a"], comp["b"]) if side.empty or x not in set(side["arch"])]
    missing += [m for m in {comp["metric"], comp["metric_b"]} if jobs.empty or not _has_metric(side, m)]
    if claim.get("versus") is not None:
        versus = jobs[matches(jobs, {**defaults, **claim["versus"]})] if len(jobs) else jobs
        missing += [f"{x} at {claim['versus']}" for x in (comp["a"], comp["b"])
                    if versus.empty or x not in set(versus["arch"])]
    if missing:
        row["missing"] = ", ".join(dict.fromkeys(str(m) for m in missing))
        return row
    jobs_a, jobs_b = side[side["arch"] == comp["a"]], side[side["arch"] == comp["b"]]
    if comp["direction"] == "reduction":
        a = pd.to_numeric(jobs_a[comp["metric"]]).median()
        b = pd.to_numeric(jobs_b[comp["metric_b"]]).median()
        effect = 1 - a / b
        row.update(n_seeds=int(min(len(jobs_a), len(jobs_b))), effect=effect, ci_low=effect, ci_high=effect,
                   ci_basis="deterministic (parameter counts do not vary with the seed)", a_value=a, b_value=b)
        return row
    try:
        block, per_seed = compare(jobs_a, jobs_b, comp["metric"], comp["metric_b"])
        if claim.get("versus") is not None:
            versus = jobs[matches(jobs, {**defaults, **claim["versus"]})]
            _, base_seeds = compare(versus[versus["arch"] == comp["a"]], versus[versus["arch"] == comp["b"]],
                                       comp["metric"], comp["metric_b"])
            block = interaction(per_seed, base_seeds)
    except ValueError as e:  # several jobs per seed: the filters do not pin one setting
        row["missing"] = f"ambiguous: {e}"
        return row
    row.update({k: block[k] for k in ("n_seeds", "effect", "ci_low", "ci_high", "p", "ci_basis")})
    row.update(a_value=block.get("a_value", math.nan), b_value=block.get("b_value", math.nan))
    return row


def interaction(per_seed: list[dict], base_seeds: list[dict]) -> dict:
    """Per seed, (a - b) in the claim's setting minus (a - b) in the `versus` setting, bootstrapped over seeds."""
    base = {r["seed"]: r["diff"] for r in base_seeds}
    diffs = [r["diff"] - base[r["seed"]] for r in per_seed if r["seed"] in base]
    block = bootstrap_seeds(diffs)
    block["ci_basis"] = "seeds (difference of paired differences)"
    block["a_value"] = float(np.nanmean([r["diff"] for r in per_seed])) if per_seed else math.nan
    block["b_value"] = float(np.nanmean(list(base.values()))) if base else math.nan
    return block


def _filters_text(claim: Mapping, defaults: Mapping) -> str:
    filters = {**defaults, **(claim.get("filters") or {})}
    text = ", ".join(f"{k}={v}" for k, v in filters.items())
    if claim.get("versus") is not None:
        text += " vs " + ", ".join(f"{k}={v}" for k, v in claim["versus"].items())
    return text


def verdict(row: Mapping, claim: Mapping) -> str:
    """One comparison's verdict from its CI (and Holm-adjusted p, ``p_holm``)."""
    if row["missing"]:
        return NOT_MEASURED
    low, high, direction = row["ci_low"], row["ci_high"], row["direction"]
    if not (np.isfinite(low) and np.isfinite(high)):
        return INCONCLUSIVE
    if direction == "reduction":
        return REPRODUCED if abs(row["effect"] - claim["expected"]) <= claim["tolerance"] else REFUTED
    margin = float(claim.get("margin", 0.0))
    significant = np.isfinite(row.get("p_holm", math.nan)) and row["p_holm"] < ALPHA
    if direction == "equal":
        if -margin < low and high < margin:
            return REPRODUCED
        return REFUTED if (low >= margin or high <= -margin) else INCONCLUSIVE
    sign = 1 if direction == "greater" else -1
    low, high = (low, high) if sign > 0 else (-high, -low)  # now "greater" in every case
    if low > 0 and significant:
        return REPRODUCED
    return REFUTED if high < margin or (high <= 0 and margin == 0) else INCONCLUSIVE


def claim_verdict(verdicts: Sequence[str]) -> str:
    if not verdicts or all(v == NOT_MEASURED for v in verdicts):
        return NOT_MEASURED
    if any(v == REFUTED for v in verdicts):
        return REFUTED
    if all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    return INCONCLUSIVE


def claims_table(jobs: pd.DataFrame, claims: list[dict], defaults: Mapping) -> pd.DataFrame:
    """One row per comparison of every claim, with raw and Holm-adjusted p-values and verdicts."""
    rows = []
    for claim in claims:
        for comp in comparisons(claim, list(jobs.columns)):
            rows.append(evaluate_comparison(jobs, claim, comp, defaults))
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    # Holm over every tested comparison of the file (equivalence and parameter rows have no test of "≠ 0").
    tested = table["direction"].isin(["greater", "less"]) & table["p"].notna()
    table["p_holm"] = np.nan
    table.loc[tested, "p_holm"] = holm(table.loc[tested, "p"].tolist())
    by_id = {c["id"]: c for c in claims}
    table["verdict"] = [verdict(r, by_id[r["id"]]) for r in table.to_dict("records")]
    return table


def _fmt_p(p: float) -> str:
    if not np.isfinite(p):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def markdown(table: pd.DataFrame, claims: list[dict], n_jobs: int) -> str:
    """claims.md: per claim its verdict and, below, each comparison's effect, CI, p and measurement."""
    lines = [
        "# Claims table",
        "",
        f"Generated by `python -m harness.aggregate` from {n_jobs} ok jobs, claims from `conf/claims.yaml`. Effect = "
        "a − b (mean over seeds; median for heavy-tailed metrics), [95% bootstrap CI], p two-sided, Holm-adjusted "
        "over every tested comparison. Reproduced: the CI lies on the claimed side of 0 and the adjusted p < 0.05; "
        "refuted: the CI lies on the other side; inconclusive: neither.",
        "",
        "| claim | verdict | comparison | effect [95% CI] | p (Holm) | seeds | measurement |",
        "|---|---|---|---|---|---|---|",
    ]
    for claim in claims:
        rows = table[table["id"] == claim["id"]].to_dict("records") if not table.empty else []
        overall = claim_verdict([r["verdict"] for r in rows])
        first = True
        for r in rows:
            text = f"{claim['claim']} ({claim.get('source', '')})" if first else ""
            verdict_cell = f"**{overall}**" if first else ""
            comparison = f"{r['a']} vs {r['b']} ({r['direction']})"
            if r["verdict"] == NOT_MEASURED:
                effect, measurement = "not measured", f"missing: {r['missing']}"
            else:
                digits = 0 if r["metric"].startswith("params.") and r["direction"] != "reduction" else 3
                effect = describe(r, digits)
                if r["direction"] == "reduction":
                    effect = (f"{r['effect']:.1%} fewer (claimed {claim['expected']:.0%} ± "
                              f"{claim['tolerance']:.0%}); {r['a_value']:,.0f} vs {r['b_value']:,.0f}")
                measurement = f"`{r['metric']}`" + (f" vs `{r['metric_b']}`" if r["metric_b"] != r["metric"] else "")
                measurement += f"; CI over {r['ci_basis']}"
                if r["filters"]:
                    measurement += f"; {r['filters']}"
            lines.append(f"| {text} | {verdict_cell} | {comparison}: {r['verdict']} | {effect} | {_fmt_p(r['p_holm'])} "
                         f"| {int(r['n_seeds']) if r['n_seeds'] else ''} | {measurement} |")
            first = False
        if claim.get("note"):
            # In the measurement column, the widest: in the claim column a long note wraps into a narrow tower.
            lines.append(f"| | | | | | | ↳ note: {claim['note']} |")
    return "\n".join(lines) + "\n"


def write_claims(sweep_dir: str | Path, claims_file: str | Path = CLAIMS_FILE, jobs: pd.DataFrame | None = None,
                 only_if_measured: bool = False) -> list[Path]:
    """claims.csv and claims.md in ``sweep_dir`` (with ``only_if_measured``: nothing when no claim is measured,
    e.g. a one-arch sweep)."""
    root = Path(sweep_dir)
    claims, defaults = load_claims(claims_file)
    jobs = load_jobs(root) if jobs is None else jobs
    table = claims_table(jobs, claims, defaults)
    if only_if_measured and (table.empty or (table["verdict"] == NOT_MEASURED).all()):
        return []
    paths = [root / CSV_FILE, root / MD_FILE]
    atomic_write_text(paths[0], table.to_csv(index=False, lineterminator="\n"))
    atomic_write_text(paths[1], markdown(table, claims, len(jobs)))
    return paths
