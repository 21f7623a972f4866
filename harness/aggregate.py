"""`python -m harness.aggregate DIR [--no-figures] [--baseline ARCH] [--claims FILE]`: summary.csv, paired statistics
(stats.csv, stats_per_seed.csv), the claims table (claims.md, claims.csv), figures and report.html for a finished
sweep (``harness.report.aggregate``), then the sweep's tables (``harness.console``).

The end-of-sweep callback does the same automatically; this command is for sweeps where Hydra never
reached it (a job raised, the sweep was killed, jobs ran on a cluster) and for re-drawing figures.

Exit status: 0 every job ok, 1 some job failed (its row says why), 2 no job found under DIR.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.console import sweep_text
from harness.report import aggregate
from harness.results import METRICS_FILE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.aggregate", description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="a Hydra sweep dir (or one job dir)")
    parser.add_argument("--no-figures", action="store_true", help="write summary.csv only")
    parser.add_argument("--baseline", default=None,
                        help="arch every other arch is compared with in stats.csv (paired by seed; default: the "
                             "claims file's `baseline`)")
    parser.add_argument("--claims", type=Path, default=None,
                        help="claims YAML checked into claims.md / claims.csv (default conf/claims.yaml)")
    args = parser.parse_args(argv)

    if not args.dir.is_dir():
        print(f"error: {args.dir} is not a directory", file=sys.stderr)
        return 2
    if not any(p.is_file() for p in args.dir.rglob(METRICS_FILE)):
        print(f"error: no {METRICS_FILE} anywhere under {args.dir}; is it a sweep dir "
              f"(hydra.sweep.dir) and did any job finish? Check the jobs' logs.", file=sys.stderr)
        return 2

    out = aggregate(args.dir, figures=not args.no_figures, baseline=args.baseline, claims_file=args.claims)
    print(sweep_text(out))
    return 1 if out["n_failed"] or out["user_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
