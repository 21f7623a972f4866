"""What a person reads when a job or a sweep ends: a short table of the headline numbers, each with its unit in
one line, and where the result files are.

Tables are rendered by rich as plain text (no colour, no terminal codes), so the same lines go to the terminal
and into the job's log file. Everything here reads ``metrics.json``-shaped dicts; nothing is recomputed.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.results import read_summary

# Wide enough that rich never wraps a cell: a long line reads better than a table broken across lines.
RENDER_WIDTH = 400

# One line per headline number: what it is and in which unit (shared by the job table and the sweep table).
UNITS = {
    "acc": "accuracy: fraction of test pairs ordered as the gold reward / the noisy human label orders them "
           "(0.5 = chance)",
    "params": "params: total = stored; active = used to score one response, mean over the test responses (fewer "
              "when the arch routes; a token-routed MoE: the experts any of its tokens used); per token (metrics.json "
              "params.active_per_token): what one token uses",
    "d": "d = √KL(optimized policy ‖ initial policy), in nats^½ (best-of-n: KL = log n − (n−1)/n)",
    "bon": "BoN R*: peak of the fitted gold curve R = d(α − βd), in s.d. of the initial policy's gold (0 = its mean; "
           "within-prompt s.d. unless opt.*.reward_scale=total); 'extrapolated': the peak lies beyond the data. "
           "BoN max gold: the highest gold measured over n, same unit (tables over jobs use it: a fitted peak beyond "
           "the data can be arbitrarily large); BoN final gap = proxy − gold at the largest n",
    "ppo": "PPO max gold: highest gold measured during PPO (± its s.e. over prompts; a maximum of noisy points, "
           "biased up), same unit; PPO final gap = proxy − gold at the common d of opt.ppo.common_sqrt_kl, the same "
           "for every arch (> 0: the proxy over-states gold; blank: the run never got that far)",
}


def table_text(header: Sequence[str], rows: Sequence[Sequence], title: str | None = None,
               right: Sequence[bool] | None = None) -> str:
    """A plain-text table; ``right[i]`` right-aligns column i (numbers). No blank lines, no trailing spaces."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  title=Text(title) if title else None, title_justify="left")
    for i, h in enumerate(header):
        table.add_column(Text(str(h)), justify="right" if right and right[i] else "left", no_wrap=True)
    for row in rows:
        # Text(), not str: a cell like "opt=[bon,ppo]" must not be read as rich markup.
        table.add_row(*(Text("" if c is None else str(c)) for c in row))
    buf = io.StringIO()
    Console(file=buf, width=RENDER_WIDTH, color_system=None, force_terminal=False, highlight=False).print(table)
    lines = [line.rstrip() for line in buf.getvalue().splitlines()]
    return "\n".join(line for line in lines if line.strip())


def frame_text(df: pd.DataFrame, title: str | None = None, float_format: str = "{:.3f}") -> str:
    """``table_text`` of a DataFrame: NaN blank, floats with ``float_format``, numeric columns right-aligned."""
    def cell(v) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        return float_format.format(v) if isinstance(v, float) else str(v)

    right = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    rows = [[cell(v) for v in r] for r in df.itertuples(index=False, name=None)]
    return table_text([str(c) for c in df.columns], rows, title=title, right=right)


# ------------------------------------------------------------------------------------------ one job


def _num(x, fmt: str = "{:.3f}") -> str:
    return "" if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt.format(x)


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 60 else f"{int(s // 60)} min {s % 60:.0f} s"


def _sd_unit(block: Mapping) -> str:
    # The unit in words: which s.d. of the initial policy's samples (harness.optimize.bon.reward_units).
    kind = ((block.get("units") or {}).get("gold") or {}).get("scale_kind", "")
    # gold=verifier: gold is a pass rate less the initial policy's (harness/optimize/study.py gold_units).
    return {"within_prompt": "within-prompt s.d.", "total": "total s.d.",
            "pass_rate": "pass-rate units (proxy: within-prompt s.d.)"}.get(kind, "s.d.")


def _fit_note(block: Mapping) -> str:
    notes = [f"R² {block['r2']:.2f}"] if block.get("r2") is not None else []
    if block.get("peak_extrapolated") and block.get("gold_peak") is not None:
        notes.append("extrapolated")
    return f" ({', '.join(notes)})" if notes else ""


def _study_rows(metrics: Mapping) -> list[list[str]]:
    rows = []
    bon = metrics.get("bon")
    if bon:
        unit = _sd_unit(bon)
        if bon.get("gold_peak") is not None:
            rows.append(["BoN R* (fitted peak gold)",
                         f"{bon['gold_peak']:.3f} at d = {bon['d_peak']:.2f}{_fit_note(bon)}",
                         f"gold {unit} of the initial policy"])
        else:
            # beta <= 0: the fitted parabola never turns down within reach (gold still rising, or never rose).
            rows.append(["BoN R* (fitted peak gold)", "no peak in reach", "fitted gold still rising at the largest n"])
        at = f"d = {bon['common_sqrt_kl']:.2f}" if bon.get("common_sqrt_kl") is not None else "largest n"
        rows.append([f"BoN gold / proxy at {at}",
                     f"{_num(bon.get('final_gold'))} / {_num(bon.get('final_proxy'))}",
                     f"gold {unit} / proxy {unit} of the initial policy"])
        if rates := bon.get("pass_rate"):  # gold=verifier: the pick's pass rate itself
            rows.append(["BoN pass rate: initial / peak / largest n",
                         f"{rates['initial']:.3f} / {rates['peak']:.3f} (n = {rates['peak_n']}) / "
                         f"{rates['at_max_n']:.3f} (n = {rates['max_n']})",
                         "over-optimized: pass rate fell after its peak while the proxy rose" if rates["overoptimized"]
                         else "no fall after the peak with a rising proxy"])
    ppo = metrics.get("ppo")
    if ppo:
        unit = _sd_unit(ppo)
        se = f" ± {ppo['observed_gold_peak_se']:.3f}" if ppo.get("observed_gold_peak_se") is not None else ""
        rows.append(["PPO max gold", f"{_num(ppo.get('observed_gold_peak'))}{se} at d = "
                     f"{_num(ppo.get('observed_d_peak'), '{:.2f}')}", f"gold {unit} of the initial policy"])
        at = f" at d = {ppo['common_sqrt_kl']:.2f}" if ppo.get("common_sqrt_kl") is not None else ""
        gap = _num(ppo.get("final_gap")) or "not reached"
        rows.append([f"PPO final proxy − gold gap{at}", gap, f"{unit}; > 0: proxy over-states gold"])
    return rows


def job_summary(metrics: Mapping, job_dir: str | Path) -> str:
    """The end-of-job table (accuracy, parameters, BoN/PPO headline, time), unit lines, and the result files."""
    job_dir = Path(job_dir)
    choices = metrics.get("choices") or {}
    what = " ".join(f"{k}={choices[k]}" for k in ("arch", "data", "backbone", "policy") if k in choices)
    rows = []
    acc = metrics.get("accuracy") or {}
    for label, name in (("gold", "gold accuracy"), ("human", "human-label accuracy")):
        if acc.get(label):
            rows.append([name, _num(acc[label].get("overall")), f"fraction of {acc[label].get('n', '?')} test pairs"])
    params = metrics.get("params") or {}
    if params:
        per_token = params.get("active_per_token")
        detail = f" ({per_token:,} per token)" if per_token is not None and per_token != params.get("active") else ""
        lora = ((metrics.get("fit") or {}).get("lora") or {})
        if lora:
            detail += f"; LoRA r={lora['r']} = {lora['r_fraction_of_hidden']:.1%} of hidden {lora['hidden_size']}"
        rows.append(["params total / active", f"{params.get('total', 0):,} / {params.get('active', 0):,}{detail}",
                     f"count ({params.get('trainable', 0):,} trained)"])
    rows += _study_rows(metrics)
    timing = metrics.get("timing_s") or {}
    if "total" in timing:
        parts = ", ".join(f"{k} {_seconds(timing[k])}" for k in ("prepare", "train", "optimize") if k in timing)
        rows.append(["time", _seconds(timing["total"]), parts])

    notes = [UNITS["acc"], UNITS["params"]]
    if metrics.get("bon") or metrics.get("ppo"):
        notes.append(UNITS["d"])
    notes += [UNITS[k] for k in ("bon", "ppo") if metrics.get(k)]
    files = [job_dir / name for name in ("metrics.json", "curves.csv")] + sorted(job_dir.glob("**/*.png"))
    lines = [table_text(["", "value", "unit"], rows, title=f"job done: {what} seed={metrics.get('seed')}",
                        right=[False, True, False])]
    lines += [f"  {n}" for n in notes]
    lines += [f"results: {p}" for p in files if p.is_file()]
    model = job_dir / "reward_model"  # harness.export.EXPORT_DIR
    if model.is_dir():
        lines.append(f"reward model: {model} (load: harness.export.load_reward_model)")
    return "\n".join(lines)


def job_line(metrics: Mapping) -> str:
    """One line per finished job of a sweep (the sweep's table comes at its end)."""
    choices = metrics.get("choices") or {}
    acc = (metrics.get("accuracy") or {}).get("gold") or (metrics.get("accuracy") or {}).get("human") or {}
    bits = [f"arch={choices.get('arch')}", f"seed={metrics.get('seed')}", f"acc={_num(acc.get('overall'))}"]
    if (metrics.get("bon") or {}).get("gold_peak") is not None:
        bits.append(f"BoN R*={metrics['bon']['gold_peak']:.3f}")
    bits.append(f"{_seconds((metrics.get('timing_s') or {}).get('total', 0.0))}")
    return "job done: " + " ".join(bits) + f" -> {metrics.get('job_dir', '')}"


# ------------------------------------------------------------------------------------------ a sweep's tables

# (column in summary.csv, header printed) for the short table; columns a sweep lacks are left out.
TABLE_COLUMNS = (
    ("job_dir", "job"),
    ("choices.arch", "arch"),
    ("seed", "seed"),
    ("status", "status"),
    ("accuracy.gold.overall", "gold acc"),
    ("accuracy.human.overall", "human acc"),
    ("params.total", "params"),
    ("params.active", "active"),
    ("fit.lora.r", "LoRA r"),
    # Observed, not fitted: a Gao fit whose peak lies beyond the data extrapolates without bound, and PPO's fit is
    # often poor (R² in metrics.json); the units line names both.
    ("bon.observed_gold_peak", "BoN max gold"),
    ("bon.final_gap", "BoN final gap"),
    ("ppo.observed_gold_peak", "PPO max gold"),
    ("ppo.final_gap", "PPO gap at common d"),
    ("timing_s.total", "time (s)"),
    ("error", "error"),
)
ERROR_WIDTH = 60


def _first_line(error: object) -> str:
    if not isinstance(error, str) or not error.strip():
        return ""
    lines = error.strip().splitlines()
    # A traceback's useful line is its last one ("ValueError: ..."), a message's its first.
    line = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    return line[:ERROR_WIDTH]


def short_table(df: pd.DataFrame) -> str:
    """One line per job: status, headline numbers, the first line of any error."""
    return frame_text(short_table_frame(df))


def short_table_frame(df: pd.DataFrame) -> pd.DataFrame:
    cols = [(c, h) for c, h in TABLE_COLUMNS if c in df.columns]
    table = df[[c for c, _ in cols]].rename(columns=dict(cols)).copy()
    if "error" in table.columns:
        # First line only: a traceback would wreck the table; the full text is in summary.csv.
        table["error"] = [_first_line(e) for e in table["error"]]
    for c in ("seed", "params", "active", "LoRA r"):
        if c in table.columns:
            table[c] = [f"{int(v):,}" if pd.notna(v) else "" for v in table[c]]
    return table


# (column, header) of the over-seeds table: mean ± sample s.d. over the seeds of one configuration.
SEED_COLUMNS = (
    ("accuracy.gold.overall", "gold acc"),
    ("accuracy.human.overall", "human acc"),
    ("params.total", "params"),
    ("params.active", "active"),
    # The observed peak, not the fitted R*: averaged over seeds, one extrapolated fit dominates (ens_wco's R* in
    # the paper suite: 54.9 ± 107.5 over 4 seeds).
    ("bon.observed_gold_peak", "BoN max gold"),
    ("bon.final_gap", "BoN final gap"),
    ("ppo.observed_gold_peak", "PPO max gold"),
    # At the study's common sqrt(KL), the same for every arch (opt.ppo.common_sqrt_kl).
    ("ppo.gold_auc", "PPO gold AUC"),
    ("ppo.final_gap", "PPO gap at common d"),
    ("timing_s.total", "time (s)"),
)


def seed_table(df: pd.DataFrame, min_seeds: int = 2) -> pd.DataFrame | None:
    """One row per configuration (every ``choices.*`` column) of the ok jobs: ``n`` seeds and each metric as
    "mean ± s.d." (s.d. over seeds, blank for one seed). None when no configuration ran with ``min_seeds`` seeds
    (the terminal then shows the per-job table only; the HTML report asks with ``min_seeds=1``)."""
    ok = df[df["status"] == "ok"]
    keys = [c for c in df.columns if c.startswith("choices.")]
    if ok.empty or not keys or ok.groupby(keys, dropna=False, sort=False).size().max() < min_seeds:
        return None
    cols = [(c, h) for c, h in SEED_COLUMNS if c in ok.columns]
    rows = []
    for key, group in ok.groupby(keys, dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        # The choices that vary name the row; arch always does (a one-arch sweep still says which).
        row = {k.removeprefix("choices."): v for k, v in zip(keys, key, strict=True)
               if ok[k].nunique() > 1 or k == "choices.arch"}
        row["n"] = len(group)
        for c, h in cols:
            v = pd.to_numeric(group[c], errors="coerce").dropna()
            if v.empty:
                row[h] = ""
            elif c.startswith("params."):
                row[h] = f"{v.mean():,.0f}"
            else:
                row[h] = f"{v.mean():.3f}" + (f" ± {v.std(ddof=1):.3f}" if len(v) > 1 else "")
        rows.append(row)
    return pd.DataFrame(rows)


def sweep_text(out: dict) -> str:
    """What a sweep's end prints (this CLI and the end-of-sweep callback alike): every job, the per-configuration
    table over seeds, one line per unit, and where summary.csv, the report and the figures are."""
    summary = read_summary(out["summary"])
    parts = [short_table(summary)]
    pooled = seed_table(summary)
    if pooled is not None:
        parts.append(frame_text(pooled, title="over seeds (mean ± s.d.)"))
    studies = [k for k in ("bon", "ppo") if any(c.startswith(f"{k}.") for c in summary.columns)]
    parts += [f"  {UNITS[k]}" for k in ["acc", "params"] + (["d"] if studies else []) + studies]
    parts.append(f"{out['n_jobs']} jobs, {out['n_failed']} failed -> {out['summary']}")
    for job in out.get("user_errors", []):  # stopped before computing anything: not results, not in the table
        parts.append(f"job {job['job_dir']} not run (user error): {job['error']}")
    if out.get("tables"):
        parts.append(f"statistics and claims: {', '.join(Path(p).name for p in out['tables'])} beside it")
    if out.get("report"):
        parts.append(f"report: {out['report']}")
    pngs = [p for p in out["figures"] if Path(p).suffix == ".png"]
    if pngs:
        parts.append(f"figures: {Path(pngs[0]).parent}/ ({', '.join(Path(p).name for p in pngs)}; PDFs beside them)")
    return "\n".join(parts)
