"""The claims table: each published claim of ``conf/claims.yaml`` checked against a sweep.

A claim is data (text, family, metric, arch a, arch b, direction, filters; see the YAML's header); this module
turns each into paired comparisons (``harness.stats.compare``) and gives each one verdict by one rule for both
directions (``verdict``): a comparison is decided — reproduced or refuted — only when its 95 % interval over
seeds lies strictly on one side of the claim's bound *and* its test against that bound passes after Holm's
adjustment within the claim's family (declared in the YAML: primary, exploratory). A degenerate comparison (no
spread over seeds; the arm to be beaten at the metric's floor or ceiling in every seed; the baseline never in
the regime the claim is about) is "not testable", with the reason, and never decides a claim. A deterministic
scale fact (a parameter saving) is "measured", with the paper's figure beside it. Written as ``claims.csv`` (one
row per comparison) and ``claims.md`` (one row per claim, its comparisons below it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats as sps

from . import stats
from .results import atomic_write_text

CLAIMS_FILE = Path(__file__).resolve().parents[1] / "conf" / "claims.yaml"
CSV_FILE, MD_FILE = "claims.csv", "claims.md"
# Which side of the bound each direction claims a - b is on, and where the bound is (+1: +margin, -1: -margin).
SIDED = {"greater": (1, 1), "less": (-1, -1), "not_less": (1, -1), "not_greater": (-1, 1)}
DIRECTIONS = (*SIDED, "equal", "reduction")
NEEDS_MARGIN = ("equal", "not_less", "not_greater")
KEYS = {"id", "claim", "source", "note", "family", "metric", "metric_b", "a", "b", "direction", "margin",
        "expected", "tolerance", "filters", "versus", "needs"}
TOP_KEYS = {"baseline", "families", "default_filters", "bounds", "regimes", "secondary", "claims"}
REPRODUCED, REFUTED, INCONCLUSIVE = "reproduced", "refuted", "inconclusive"
NOT_TESTABLE, NOT_MEASURED, MEASURED = "not testable", "not measured", "measured"
ALPHA = 1 - stats.CONFIDENCE
POWER = 0.8


def claim_context(default_filters: Mapping | None = None, families: Mapping | None = None,
                  bounds: Mapping | None = None, regimes: Mapping | None = None,
                  secondary: Mapping | None = None) -> dict:
    """The sections of a claims file other than its claims, as ``claims_table`` reads them (empty where absent)."""
    return {"default_filters": dict(default_filters or {}), "families": dict(families or {}),
            "bounds": dict(bounds or {}), "regimes": dict(regimes or {}), "secondary": dict(secondary or {})}


def load_claims(path: str | Path = CLAIMS_FILE) -> tuple[list[dict], dict]:
    """(claims, context) from a claims YAML, checked: errors name the file and the claim. ``context`` holds the
    file's other sections: ``default_filters``, ``families``, ``bounds``, ``regimes``, ``secondary``."""
    path = Path(path)
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(doc) - TOP_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown sections {sorted(unknown)} (valid: {sorted(TOP_KEYS)})")
    claims = doc.get("claims") or []
    context = claim_context(doc.get("default_filters"), doc.get("families"), doc.get("bounds"), doc.get("regimes"),
                            doc.get("secondary"))
    for name, regime in context["regimes"].items():
        if not {"metric", "above", "text"} <= set(regime):
            raise ValueError(f"{path}: regime {name!r} needs `metric`, `above` and `text`")
    for metric, bound in context["bounds"].items():
        if not bound or set(bound) - {"floor", "ceiling"}:
            raise ValueError(f"{path}: bounds of {metric!r} take `floor` and/or `ceiling`")
    seen = set()
    for i, c in enumerate(claims):
        where = f"{path}: claim {c.get('id', i)!r}"
        unknown = set(c) - KEYS
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)} (valid: {sorted(KEYS)})")
        for key in ("id", "claim", "family", "metric", "a", "b", "direction"):
            if key not in c:
                raise ValueError(f"{where}: missing `{key}`")
        if c["id"] in seen:
            raise ValueError(f"{where}: id used twice")
        seen.add(c["id"])
        if c["family"] not in context["families"]:
            raise ValueError(f"{where}: family {c['family']!r} is not one of the file's families "
                             f"{sorted(context['families'])}")
        for need in _as_list(c.get("needs") or []):
            if need not in context["regimes"]:
                raise ValueError(f"{where}: needs {need!r}, not one of the file's regimes "
                                 f"{sorted(context['regimes'])}")
        directions = _as_list(c["direction"])
        bad = [d for d in directions if d not in DIRECTIONS]
        if bad:
            raise ValueError(f"{where}: direction {bad} is not one of {list(DIRECTIONS)}")
        if len(directions) not in (1, len(_as_list(c["metric"]))):
            raise ValueError(f"{where}: give one direction, or one per metric")
        if any(d in NEEDS_MARGIN for d in directions) and not c.get("margin", 0) > 0:
            raise ValueError(f"{where}: directions {list(NEEDS_MARGIN)} need a margin > 0")
        if "reduction" in directions and ("expected" not in c or "tolerance" not in c or "note" not in c):
            raise ValueError(f"{where}: direction reduction needs `expected`, `tolerance` and a `note` (why the "
                             "measured saving differs from the paper's, where it does)")
    return claims, context


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
    curve = stats.parse_curve_metric(metric)
    if curve is not None:
        return any(c.startswith(f"{curve[0]}.") for c in jobs.columns)
    return metric in jobs.columns and pd.to_numeric(jobs[metric], errors="coerce").notna().any()


def _empty_row(claim: Mapping, comp: Mapping, context: Mapping) -> dict:
    return {"id": claim["id"], "family": claim["family"], **comp, "filters": _filters_text(claim, context),
            "n_seeds": 0, "effect": math.nan, "sd": math.nan, "ci_low": math.nan, "ci_high": math.nan,
            "ci_method": "", "boot_low": math.nan, "boot_high": math.nan, "boot_method": "", "bound": math.nan,
            "p": math.nan, "a_value": math.nan, "b_value": math.nan, "secondary": "", "regimes": "", "missing": "",
            "not_testable": ""}


def evaluate_comparison(jobs: pd.DataFrame, claim: Mapping, comp: Mapping, context: Mapping) -> dict:
    """Effect, intervals, the raw p of the test against the claim's bound, and why the comparison cannot be
    tested (``not_testable``) where it cannot; or a "not measured" row saying what is missing."""
    row = _empty_row(claim, comp, context)
    defaults = context["default_filters"]
    filters = {**defaults, **(claim.get("filters") or {})}
    side = jobs[stats.matches(jobs, filters)] if len(jobs) else jobs
    missing = [x for x in (comp["a"], comp["b"]) if side.empty or x not in set(side["arch"])]
    missing += [m for m in {comp["metric"], comp["metric_b"]} if jobs.empty or not _has_metric(side, m)]
    if claim.get("versus") is not None:
        versus = jobs[stats.matches(jobs, {**defaults, **claim["versus"]})] if len(jobs) else jobs
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
                   ci_method="deterministic (parameter counts do not vary with the seed)", a_value=a, b_value=b)
        return row
    heavy = comp["metric"] in stats.HEAVY_TAILED
    try:
        block, per_seed = stats.compare(jobs_a, jobs_b, comp["metric"], comp["metric_b"])
        diffs = [r["diff"] for r in per_seed]
        if claim.get("versus") is not None:
            versus = jobs[stats.matches(jobs, {**defaults, **claim["versus"]})]
            _, base_seeds = stats.compare(versus[versus["arch"] == comp["a"]], versus[versus["arch"] == comp["b"]],
                                          comp["metric"], comp["metric_b"])
            block, diffs = interaction(per_seed, base_seeds, heavy)
        row["secondary"] = _secondary(jobs_a, jobs_b, comp, context)
        seeds = [r["seed"] for r in per_seed]
        row["regimes"] = "; ".join(
            "{}: {} in {} of {} seeds".format(comp["b"], context["regimes"][need]["text"], *regime_seeds(
                jobs_b, context["regimes"][need], seeds)) for need in _as_list(claim.get("needs") or []))
    except ValueError as e:  # several jobs per seed: the filters do not pin one setting
        row["missing"] = f"ambiguous: {e}"
        return row
    row.update({k: block[k] for k in ("n_seeds", "effect", "sd", "ci_low", "ci_high", "ci_method", "boot_low",
                                      "boot_high", "boot_method")})
    row.update(a_value=block.get("a_value", math.nan), b_value=block.get("b_value", math.nan))
    row["not_testable"] = _degenerate(diffs, per_seed if claim.get("versus") is None else [], jobs_b, claim, comp,
                                      context)
    bound = _bound(claim, comp["direction"], row["effect"])
    row["bound"] = bound
    if not row["not_testable"]:
        row["p"] = _test_p(diffs, heavy, claim, comp["direction"], row["effect"])
    return row


def interaction(per_seed: list[dict], base_seeds: list[dict], heavy_tailed: bool = False
                ) -> tuple[dict, list[float]]:
    """Per seed, (a - b) in the claim's setting minus (a - b) in the `versus` setting: its effect block over
    seeds, and the differences."""
    base = {r["seed"]: r["diff"] for r in base_seeds}
    diffs = [r["diff"] - base[r["seed"]] for r in per_seed if r["seed"] in base]
    block = stats.seed_effect(diffs, heavy_tailed)
    block["ci_method"] += " (difference of paired differences)"
    block["a_value"] = float(np.nanmean([r["diff"] for r in per_seed])) if per_seed else math.nan
    block["b_value"] = float(np.nanmean(list(base.values()))) if base else math.nan
    return block, diffs


def _filters_text(claim: Mapping, context: Mapping) -> str:
    filters = {**context["default_filters"], **(claim.get("filters") or {})}
    text = ", ".join(f"{k}={v}" for k, v in filters.items())
    if claim.get("versus") is not None:
        text += " vs " + ", ".join(f"{k}={v}" for k, v in claim["versus"].items())
    return text


def _secondary(jobs_a: pd.DataFrame, jobs_b: pd.DataFrame, comp: Mapping, context: Mapping) -> str:
    """The same comparison at the other readings the YAML's ``secondary`` lists for its metric (e.g. PPO gold at
    other √KL): effect [t-interval] each, shown, never read for the verdict."""
    parts = []
    for other in context["secondary"].get(comp["metric"], []):
        if not _has_metric(jobs_a, other) or not _has_metric(jobs_b, other):
            continue
        block, _ = stats.compare(jobs_a, jobs_b, other, other)
        label = other.split("@", 1)[1].replace("sqrt_kl=", "√KL ") if "@" in other else other
        parts.append(f"{label}: {stats.describe(block)} ({block['n_seeds']} seeds)")
    return "; ".join(parts)


def _degenerate(diffs: Sequence[float], per_seed: Sequence[Mapping], jobs_b: pd.DataFrame, claim: Mapping,
                comp: Mapping, context: Mapping) -> str:
    """Why a comparison cannot be tested ("" when it can), the cause before its symptom: b at the bound a must
    get past in every seed (per_seed: the paired values, empty for an interaction); b out of a regime the claim
    ``needs`` in every seed; no spread over seeds."""
    d = np.asarray([x for x in diffs if np.isfinite(x)], dtype=float)
    if len(d) < 2:
        return f"{len(d)} paired seed(s): no spread to test"
    direction, b = comp["direction"], comp["b"]
    b_values = np.asarray([r["b"] for r in per_seed if np.isfinite(r["diff"])], dtype=float)
    bounds = context["bounds"].get(comp["metric_b"], {})
    if direction in SIDED and len(b_values):
        claimed_side = SIDED[direction][0]
        edge = "ceiling" if claimed_side > 0 else "floor"
        if edge in bounds and np.all(np.isclose(b_values, bounds[edge], rtol=0, atol=1e-12)):
            what = "above" if claimed_side > 0 else "below"
            return f"{b} at the {edge} of {comp['metric_b']} ({bounds[edge]:g}) in every seed: nothing to be {what}"
    seeds = sorted({r["seed"] for r in per_seed}) if per_seed else None
    for need in _as_list(claim.get("needs") or []):
        regime = context["regimes"][need]
        if not regime_seeds(jobs_b, regime, seeds)[0]:
            return f"{b}: {regime['text']} in no seed ({regime['metric']} <= {regime['above']:g})"
    if np.ptp(d) == 0:
        return f"every seed the same difference ({d[0]:+.3f}): no spread to test"
    return ""


def regime_seeds(jobs_b: pd.DataFrame, regime: Mapping, seeds: Sequence[int] | None = None) -> tuple[int, int]:
    """(seeds of b in the regime, seeds of b looked at), over ``seeds`` (all of b's when None)."""
    values = jobs_b if seeds is None else jobs_b[jobs_b["seed"].isin(seeds)]
    x = pd.to_numeric(values.get(regime["metric"], pd.Series(dtype=float)), errors="coerce").to_numpy(float)
    return int(np.sum(x > regime["above"])), int(np.sum(np.isfinite(x)))


def _bound(claim: Mapping, direction: str, effect: float) -> float:
    """The value the test is against: ±margin for the sided directions; for equal, the margin on the side the
    effect lies on (the equivalence test uses both)."""
    margin = float(claim.get("margin", 0.0))
    if direction in SIDED:
        return SIDED[direction][1] * margin
    if direction == "equal":
        return math.copysign(margin, effect) if np.isfinite(effect) else math.nan
    return math.nan


def _test_p(diffs: Sequence[float], heavy: bool, claim: Mapping, direction: str, effect: float) -> float:
    """The raw two-sided p of the one test that decides a comparison (Holm counts one per comparison).

    Sided directions: the test of "a - b equals the bound" (its side is read off the interval). Equal: where the
    effect lies inside ±margin, the equivalence test (TOST: the larger of the two one-sided p, doubled, so that
    it passes exactly when the 95 % t-interval lies inside ±margin); outside, the test against the nearer margin."""
    margin = float(claim.get("margin", 0.0))
    if direction in SIDED:
        return stats.seed_p_value(diffs, heavy, null=SIDED[direction][1] * margin)
    if abs(effect) < margin:
        d = np.asarray([x for x in diffs if np.isfinite(x)], dtype=float)
        worst = max(_one_sided(d, heavy, -margin, above=True), _one_sided(d, heavy, margin, above=False))
        return min(1.0, 2 * worst)
    return stats.seed_p_value(diffs, heavy, null=math.copysign(margin, effect))


def _one_sided(d: np.ndarray, heavy: bool, null: float, above: bool) -> float:
    """One-sided p of "the effect is beyond ``null`` on the far side" (above=True: H1 effect > null)."""
    alternative = "greater" if above else "less"
    if heavy:
        nonzero = (d - null)[d != null]
        return float(sps.wilcoxon(nonzero, method="exact", alternative=alternative).pvalue) if len(nonzero) else 1.0
    return float(sps.ttest_1samp(d, null, alternative=alternative).pvalue)


def verdict(row: Mapping, claim: Mapping) -> str:
    """One comparison's verdict: the same rule for both directions. Reproduced needs the 95 % interval strictly
    on the claimed side of the bound and the family's Holm-adjusted p (``p_holm``) < 0.05; refuted needs the
    interval strictly on the other side and the same p < 0.05; otherwise inconclusive. Degenerate comparisons are
    not testable; parameter reductions are measured facts."""
    if row["missing"]:
        return NOT_MEASURED
    direction = row["direction"]
    if direction == "reduction":
        return MEASURED
    if row["not_testable"]:
        return NOT_TESTABLE
    low, high = row["ci_low"], row["ci_high"]
    significant = np.isfinite(row.get("p_holm", math.nan)) and row["p_holm"] < ALPHA
    if not (np.isfinite(low) and np.isfinite(high)) or not significant:
        return INCONCLUSIVE
    if direction == "equal":
        margin = float(claim["margin"])
        if -margin < low and high < margin:
            return REPRODUCED
        return REFUTED if (low > margin or high < -margin) else INCONCLUSIVE
    side, bound = SIDED[direction][0], row["bound"]
    if (low > bound if side > 0 else high < bound):
        return REPRODUCED
    if (high < bound if side > 0 else low > bound):
        return REFUTED
    return INCONCLUSIVE


def claim_verdict(verdicts: Sequence[str]) -> str:
    """A claim's verdict from its comparisons'. Not-testable comparisons never decide it (``comparisons_note``
    says how many were testable): refuted when any testable one is, reproduced when all testable ones are (and
    none is unmeasured), not testable when none is testable; a measured fact is measured."""
    if not verdicts or all(v == NOT_MEASURED for v in verdicts):
        return NOT_MEASURED
    if all(v == MEASURED for v in verdicts):
        return MEASURED
    decided = [v for v in verdicts if v != NOT_TESTABLE]
    if not decided:
        return NOT_TESTABLE
    if any(v == REFUTED for v in decided):
        return REFUTED
    if all(v == REPRODUCED for v in decided):
        return REPRODUCED
    return INCONCLUSIVE


def comparisons_note(verdicts: Sequence[str]) -> str:
    testable = sum(v != NOT_TESTABLE for v in verdicts)
    return f" ({testable} of {len(verdicts)} comparisons testable)" if testable < len(verdicts) and testable else ""


def claims_table(jobs: pd.DataFrame, claims: list[dict], context: Mapping) -> pd.DataFrame:
    """One row per comparison of every claim, with raw and Holm-adjusted p-values (Holm within each family over
    its testable comparisons), the seeds each needs, and verdicts."""
    rows = []
    for claim in claims:
        for comp in comparisons(claim, list(jobs.columns)):
            rows.append(evaluate_comparison(jobs, claim, comp, context))
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["p_holm"], table["family_tests"], table["alpha_family"] = np.nan, 0, np.nan
    table["seeds_to_pass"], table["seeds_80"] = "", ""
    for _, idx in table.groupby("family").groups.items():
        tested = table.loc[idx, "p"].notna()
        tested_idx = tested[tested].index
        m = len(tested_idx)
        table.loc[tested_idx, "p_holm"] = stats.holm(table.loc[tested_idx, "p"].tolist())
        table.loc[idx, "family_tests"] = m
        table.loc[idx, "alpha_family"] = ALPHA / m if m else np.nan
    by_id = {c["id"]: c for c in claims}
    for i, r in table.iterrows():
        if np.isfinite(r["p"]):
            table.at[i, "seeds_to_pass"], table.at[i, "seeds_80"] = _seeds_needed(r, by_id[r["id"]])
    table["verdict"] = [verdict(r, by_id[r["id"]]) for r in table.to_dict("records")]
    return table


def _seeds_needed(row: Mapping, claim: Mapping) -> tuple[str, str]:
    """Seeds for the decisive test to pass the family's threshold, and for 80 % power at it (``seeds_to_pass``,
    ``seeds_for_power`` in harness.stats), from the observed distance of the effect from its bound and the
    per-seed s.d."""
    effect, margin = row["effect"], float(claim.get("margin", 0.0))
    if row["direction"] == "equal":
        distance = margin - abs(effect)  # inside: to the nearer margin (the equivalence test's weaker side)
    else:
        distance = effect - row["bound"]
    alpha = row["alpha_family"]
    heavy = row["metric"] in stats.HEAVY_TAILED
    need = stats.seeds_to_pass(distance, row["sd"], alpha, heavy)
    power = stats.seeds_for_power(distance, row["sd"], alpha, POWER)
    return (str(need) if need else f">{stats.MAX_SEEDS}"), (str(power) if power else f">{stats.MAX_SEEDS}")


def _fmt_p(p: float) -> str:
    if not np.isfinite(p):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _interval(r: Mapping, low: str, high: str, digits: int = 3) -> str:
    if not (np.isfinite(r[low]) and np.isfinite(r[high])):
        return ""
    f = f"{{:+.{digits}f}}"
    return f"[{f.format(r[low])}, {f.format(r[high])}]"


def legend(table: pd.DataFrame, context: Mapping, n_jobs: int) -> list[str]:
    families = []
    for name, spec in context["families"].items():
        rows = table[table["family"] == name] if not table.empty else table
        m = int(rows["family_tests"].max()) if len(rows) else 0
        threshold = f"; passing needs raw p < 0.05/{m} = {ALPHA / m:.4f} at the first Holm step" if m else ""
        families.append(f"**{name}** ({m} tests{threshold}): {spec.get('text', '')}")
    return [
        f"Generated by `python -m harness.aggregate` from {n_jobs} ok jobs, claims from `conf/claims.yaml`. Effect "
        "= a − b, paired by seed (mean over seeds; median for heavy-tailed metrics). **95% CI**: a t-interval over "
        "seeds (mean ± t₀.₉₇₅,ₙ₋₁·s/√n) for means, the order-statistic interval for medians (at 5 seeds [min, max], "
        "93.75% coverage); **bootstrap CI** beside it (BCa over seeds, or seeds × test pairs for accuracies) "
        "under-covers at few seeds and decides nothing. **p**: the two-sided test of the comparison against its "
        "bound (paired t-test; exact Wilcoxon for medians; equal: the equivalence test, TOST), Holm-adjusted within "
        "the claim's family.",
        "",
        "**Verdicts**, one rule for both directions: *reproduced* = the CI strictly on the claimed side of the bound "
        "(0, or the claim's margin; inside ±margin for equal) and Holm p < 0.05; *refuted* = the CI strictly on the "
        "other side and Holm p < 0.05; *inconclusive* otherwise; *not testable* = degenerate (no spread over seeds, "
        "the arm to be beaten at the metric's floor or ceiling in every seed, or never in the regime the claim is "
        "about), with the reason, never deciding a claim; *measured* = a deterministic scale fact, with the paper's "
        "figure beside it; *not measured* = the sweep lacks an arch or a metric. A claim is refuted when any "
        "testable comparison is, reproduced when all testable ones are.",
        "",
        "**Families** (Holm runs within each): " + "; ".join(families) + ".",
        "",
        "**Seeds needed** (to pass / for 80% power): from the observed distance δ between the effect and the bound "
        "and the per-seed s.d. s, at the family's threshold α = 0.05/m (m its tests: Holm's first step). To pass: "
        "the smallest n with |δ|/(s/√n) > t₁₋α/₂,ₙ₋₁ (for medians also 2¹⁻ⁿ < α, the exact Wilcoxon test's "
        "smallest p). 80% power: the smallest n with P(|T| > t₁₋α/₂,ₙ₋₁) ≥ 0.8, T noncentral t with n − 1 d.f. "
        "and noncentrality δ/s·√n. For equal, δ is the distance to the nearer margin.",
    ]


def regime_lines(jobs: pd.DataFrame, context: Mapping) -> list[str]:
    """Per regime of the YAML, in how many seeds each arch of the default setting is in it: which archs a claim
    that needs the regime can be tested against."""
    lines = []
    if jobs.empty:
        return lines
    side = jobs[stats.matches(jobs, context["default_filters"])]
    for name, regime in context["regimes"].items():
        if regime["metric"] not in side.columns:
            continue
        counts = ["{} {}/{}".format(arch, *regime_seeds(side[side["arch"] == arch], regime))
                  for arch in sorted(side["arch"].unique())]
        lines.append(f"**Regime `{name}`** ({regime['text']}: `{regime['metric']}` > {regime['above']:g}), seeds in "
                     f"it per arch, {_filters_text({}, context)}: " + ", ".join(counts) + ".")
    return lines


def markdown(table: pd.DataFrame, claims: list[dict], n_jobs: int, context: Mapping,
             regimes: Sequence[str] = ()) -> str:
    """claims.md: per claim its verdict and, below, each comparison's effect, intervals, p, seeds needed and
    measurement; ``regimes``: lines from ``regime_lines``."""
    lines = ["# Claims table", "", *legend(table, context, n_jobs), "", *(x for line in regimes for x in (line, "")),
             "| claim | verdict | comparison | effect [95% CI] | bootstrap CI | p (Holm) | seeds: have / to pass "
             "/ 80% power | measurement |",
             "|---|---|---|---|---|---|---|---|"]
    for claim in claims:
        rows = table[table["id"] == claim["id"]].to_dict("records") if not table.empty else []
        verdicts = [r["verdict"] for r in rows]
        overall = claim_verdict(verdicts)
        first = True
        for r in rows:
            text = f"{claim['claim']} ({claim.get('source', '')}; {claim['family']})" if first else ""
            verdict_cell = f"**{overall}**{comparisons_note(verdicts)}" if first else ""
            comparison = f"{r['a']} vs {r['b']} ({r['direction']})"
            boot, p_cell, seed_counts = "", _fmt_p(r["p_holm"]), ""
            if r["verdict"] == NOT_MEASURED:
                effect, measurement = "not measured", f"missing: {r['missing']}"
            else:
                digits = 0 if r["metric"].startswith("params.") and r["direction"] != "reduction" else 3
                effect = stats.describe(r, digits) if r["direction"] != "reduction" else ""
                if r["direction"] == "reduction":
                    fits = abs(r["effect"] - claim["expected"]) <= claim["tolerance"]
                    effect = (f"{r['effect']:.1%} fewer; paper {claim['expected']:.0%} ± {claim['tolerance']:.0%}: "
                              f"{'matches' if fits else 'differs'} ({r['a_value']:,.0f} vs {r['b_value']:,.0f})")
                else:
                    boot = _interval(r, "boot_low", "boot_high")
                    seed_counts = f"{int(r['n_seeds'])}"
                    if r["seeds_to_pass"]:
                        seed_counts = f"{seed_counts} / {r['seeds_to_pass']} / {r['seeds_80']}"
                measurement = f"`{r['metric']}`" + (f" vs `{r['metric_b']}`" if r["metric_b"] != r["metric"] else "")
                measurement += f"; CI: {r['ci_method']}"
                if r["not_testable"]:
                    measurement = f"not testable: {r['not_testable']}; " + measurement
                if r["regimes"] and not r["not_testable"]:
                    measurement += f"; {r['regimes']}"
                if r["secondary"]:
                    measurement += f"; other readings: {r['secondary']}"
                if r["filters"]:
                    measurement += f"; {r['filters']}"
            lines.append(f"| {text} | {verdict_cell} | {comparison}: {r['verdict']} | {effect} | {boot} | {p_cell} "
                         f"| {seed_counts} | {measurement} |")
            first = False
        if claim.get("note"):
            # In the measurement column, the widest: in the claim column a long note wraps into a narrow tower.
            lines.append(f"| | | | | | | | ↳ note: {claim['note']} |")
    return "\n".join(lines) + "\n"


def write_claims(sweep_dir: str | Path, claims_file: str | Path = CLAIMS_FILE, jobs: pd.DataFrame | None = None,
                 only_if_measured: bool = False) -> list[Path]:
    """claims.csv and claims.md in ``sweep_dir`` (with ``only_if_measured``: nothing when no claim is measured,
    e.g. a one-arch sweep)."""
    root = Path(sweep_dir)
    claims, context = load_claims(claims_file)
    jobs = stats.load_jobs(root) if jobs is None else jobs
    table = claims_table(jobs, claims, context)
    if only_if_measured and (table.empty or (table["verdict"] == NOT_MEASURED).all()):
        return []
    paths = [root / CSV_FILE, root / MD_FILE]
    atomic_write_text(paths[0], table.to_csv(index=False, lineterminator="\n"))
    atomic_write_text(paths[1], markdown(table, claims, len(jobs), context, regime_lines(jobs, context)))
    return paths
