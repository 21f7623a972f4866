"""`python -m harness.aggregate DIR [--no-figures]`: summary.csv and figures for a finished sweep.

The end-of-sweep callback does the same automatically; this command is for sweeps where Hydra never
reached it (a job raised, the sweep was killed, jobs ran on a cluster) and for re-drawing figures.

Exit status: 0 every job ok, 1 some job failed (its row says why), 2 no job found under DIR.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from harness.console import UNITS, frame_text
from harness.results import METRICS_FILE, aggregate, read_summary

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
    ("bon.gold_peak", "BoN R*"),
    ("ppo.gold_peak", "PPO R*"),
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
    for c in ("seed", "params", "active"):
        if c in table.columns:
            table[c] = [f"{int(v):,}" if pd.notna(v) else "" for v in table[c]]
    return table


# (column, header) of the over-seeds table: mean ± sample s.d. over the seeds of one configuration.
SEED_COLUMNS = (
    ("accuracy.gold.overall", "gold acc"),
    ("accuracy.human.overall", "human acc"),
    ("params.total", "params"),
    ("params.active", "active"),
    ("bon.gold_peak", "BoN R*"),
    ("ppo.observed_gold_peak", "PPO max gold"),
    ("ppo.final_gap", "PPO final gap"),
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
    if out.get("report"):
        parts.append(f"report: {out['report']}")
    pngs = [p for p in out["figures"] if Path(p).suffix == ".png"]
    if pngs:
        parts.append(f"figures: {Path(pngs[0]).parent}/ ({', '.join(Path(p).name for p in pngs)}; PDFs beside them)")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.aggregate", description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="a Hydra sweep dir (or one job dir)")
    parser.add_argument("--no-figures", action="store_true", help="write summary.csv only")
    args = parser.parse_args(argv)

    if not args.dir.is_dir():
        print(f"error: {args.dir} is not a directory", file=sys.stderr)
        return 2
    if not any(p.is_file() for p in args.dir.rglob(METRICS_FILE)):
        print(f"error: no {METRICS_FILE} anywhere under {args.dir}; is it a sweep dir "
              f"(hydra.sweep.dir) and did any job finish? Check the jobs' logs.", file=sys.stderr)
        return 2

    out = aggregate(args.dir, figures=not args.no_figures)
    print(sweep_text(out))
    return 1 if out["n_failed"] or out["user_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
