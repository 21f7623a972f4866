"""Result files: each job's `metrics.json` and `curves.csv`, and the sweep's tidy `summary.csv`.

These files are the only interface between running jobs and everything that reports on them (the
aggregate CLI, the end-of-sweep callback, figures, regression checks), so their shapes live here:

- `metrics.json` (SPEC §8): nested dict; `write_metrics` turns NaN/inf into null so the file is strict JSON.
- `curves.csv`: one row per BoN n or PPO eval step, columns `CURVE_COLUMNS`; `n` is set on BoN rows,
  `step` on PPO rows, the other is left empty; `proxy_se` / `gold_se` are standard errors over prompts (files
  written before they existed read back with them empty).
- `test_scores.csv`: one row per test pair, its domain, gold order and the RM's (and its views') rewards
  (`write_test_scores`): what harness.stats resamples.
- `summary.csv`: one row per job found under a sweep directory (at any depth), flattened to dotted
  columns (`accuracy.gold.overall`, `choices.arch`, `bon.alpha`, ...). A job that failed -- or died
  before writing `metrics.json` at all -- is still a row, with `status=failed` and its `error`. A job stopped by
  a user error (`status=user_error`: a bad value, a missing file; nothing was computed) is not a result and
  gets no row; `aggregate` counts and names it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from harness.cache import atomic_write_json, atomic_write_text

METRICS_FILE = "metrics.json"
CURVES_FILE = "curves.csv"
TEST_SCORES_FILE = "test_scores.csv"
SUMMARY_FILE = "summary.csv"
CURVE_COLUMNS = ("opt", "n", "step", "kl", "sqrt_kl", "proxy", "gold", "proxy_se", "gold_se")
# Columns a curves.csv of an older harness lacks: read back empty rather than refused.
_LATER_CURVE_COLUMNS = ("proxy_se", "gold_se")

# Blocks too big or too nested for a table row (a key at any depth, or a dotted path): the resolved config is
# already in each job's `.hydra/config.yaml`, `explain` is read straight from metrics.json by the figures that need
# it, and `fit.experts` (per expert of an architecture) stays in metrics.json.
FLATTEN_SKIP = ("config", "explain", "fit.experts")

# Columns that hold text even when every value looks like a number (job dir "0", seed aside).
_TEXT_COLUMNS = ("job_dir", "status", "error", "overrides", "git.commit")
_TEXT_PREFIXES = ("choices.", "versions.")  # "2.10" is a version, not the number 2.1
# Leading columns of summary.csv, in this order; everything else follows alphabetically.
_LEAD_COLUMNS = ("job_dir", "status", "error", "seed")
_CHOICE_ORDER = ("arch", "data", "backbone", "policy", "opt")


# ----------------------------------------------------------------------------------------- per job


def _jsonable(obj: Any) -> Any:
    """Plain JSON types only: NaN/inf become None, numpy/torch scalars and arrays become Python values."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item) and not isinstance(obj, (str, bytes)):
        obj = obj.item()  # numpy scalar or 0-d torch tensor
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_metrics(job_dir: str | os.PathLike, metrics: Mapping) -> Path:
    path = Path(job_dir) / METRICS_FILE
    atomic_write_json(path, _jsonable(metrics))
    return path


def read_metrics(job_dir: str | os.PathLike) -> dict:
    path = Path(job_dir) / METRICS_FILE
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); a damaged or hand-edited file?") from e


def _csv_cell(value: Any) -> Any:
    value = _jsonable(value)
    return "" if value is None else value


def write_curves(job_dir: str | os.PathLike, rows: list[Mapping]) -> Path:
    unknown = sorted({k for r in rows for k in r} - set(CURVE_COLUMNS))
    if unknown:
        # A typo here would silently produce an empty column that every figure then skips.
        raise ValueError(f"curves.csv rows have unknown keys {unknown}; columns are {list(CURVE_COLUMNS)}")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CURVE_COLUMNS)
    for r in rows:
        writer.writerow([_csv_cell(r.get(c)) for c in CURVE_COLUMNS])
    path = Path(job_dir) / CURVES_FILE
    atomic_write_text(path, buf.getvalue())
    return path


def read_curves(job_dir: str | os.PathLike) -> pd.DataFrame:
    """The job's curves, or an empty frame with the right columns when it wrote none."""
    path = Path(job_dir) / CURVES_FILE
    if not path.is_file():
        return pd.DataFrame(columns=list(CURVE_COLUMNS))
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    for c in _LATER_CURVE_COLUMNS:
        if c not in df.columns:
            df[c] = np.nan
    for c in CURVE_COLUMNS[1:]:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    df["opt"] = df["opt"].astype(str)
    return df


def write_test_scores(job_dir: str | os.PathLike, r_chosen, r_rejected, dataset,
                      views: Mapping[str, tuple] | None = None) -> Path:
    """Per test pair of ``dataset`` (the raw test split): its domain, the gold order (+1 chosen better, -1 rejected
    better, 0 tie; absent without gold) and the RM's rewards (``chosen``/``rejected``), plus ``views.<name>.chosen``
    / ``.rejected`` for views scored on every pair — what statistics resample."""
    columns = dataset.column_names
    table = {"domain": [str(d) for d in (dataset["domain"] if "domain" in columns else [""] * len(dataset))]}
    if "gold_chosen" in columns:
        g_c, g_r = np.asarray(dataset["gold_chosen"], dtype=float), np.asarray(dataset["gold_rejected"], dtype=float)
        table["gold_order"] = np.sign(g_c - g_r).astype(int)
    table["chosen"], table["rejected"] = np.asarray(r_chosen, dtype=float), np.asarray(r_rejected, dtype=float)
    for view, (c, r) in (views or {}).items():
        table[f"views.{view}.chosen"] = np.asarray(c, dtype=float)
        table[f"views.{view}.rejected"] = np.asarray(r, dtype=float)
    path = Path(job_dir) / TEST_SCORES_FILE
    atomic_write_text(path, pd.DataFrame(table).to_csv(index=False, lineterminator="\n", float_format="%.9g"))
    return path


# ----------------------------------------------------------------------------------------- flatten


def _flat_value(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        # "arch=single,seed=0" reads like Hydra's own override_dirname.
        return ",".join(v if isinstance(v, str) else json.dumps(v) for v in value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def flatten(metrics: Mapping, prefix: str = "") -> dict:
    """{"accuracy": {"gold": {"overall": .8}}} -> {"accuracy.gold.overall": .8}.

    Lists of scalars become one comma-joined string; `FLATTEN_SKIP` blocks and lists of records are left out.
    """
    out = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if key in FLATTEN_SKIP or name in FLATTEN_SKIP:
            continue
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple)) and any(isinstance(v, (Mapping, list, tuple)) for v in value):
            continue  # a log of records (e.g. train_log) is not a table cell; it stays in metrics.json
        else:
            out[name] = _flat_value(value)
    return out


# ----------------------------------------------------------------------------------------- collect


def _natural_key(text: str) -> list:
    # Hydra numbers job dirs 0, 1, ..., 10: sort them as numbers so row order follows job order.
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _rel(path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix()
    return rel if rel else "."


def _hydra_job_info(job_dir: Path) -> dict:
    """What a crashed job's `.hydra/` says about it, so its failed row still names arch and seed."""

    def load(name: str) -> Any:
        return yaml.safe_load((job_dir / ".hydra" / name).read_text(encoding="utf-8"))

    info: dict[str, Any] = {}
    # Each piece on its own: a job killed mid-start may have written some of these files and not others.
    try:
        choices = load("hydra.yaml")["hydra"]["runtime"]["choices"]
        info["choices"] = {k: v for k, v in choices.items() if not k.startswith("hydra/")}
    except Exception:
        pass
    try:
        info["overrides"] = load("overrides.yaml")
    except Exception:
        pass
    try:
        info["seed"] = load("config.yaml")["seed"]
    except Exception:
        pass
    return info


def find_job_dirs(sweep_dir: str | os.PathLike) -> list[Path]:
    """Every directory under `sweep_dir` (itself included) holding metrics.json or a Hydra `.hydra/`."""
    root = Path(sweep_dir)
    dirs = {p.parent for p in root.rglob(METRICS_FILE) if p.is_file()}
    dirs |= {p.parent.parent for p in root.rglob("config.yaml") if p.parent.name == ".hydra"}
    return sorted(dirs, key=lambda d: _natural_key(_rel(d, root)))


def collect_records(sweep_dir: str | os.PathLike, user_errors: list[dict] | None = None) -> list[dict]:
    """One flattened dict per job under `sweep_dir`, `job_dir` relative to it, in natural job order. Jobs
    stopped by a user error are left out (appended to ``user_errors`` when given, as {job_dir, error})."""
    root = Path(sweep_dir)
    records = []
    for job_dir in find_job_dirs(root):
        if (job_dir / METRICS_FILE).is_file():
            try:
                metrics = read_metrics(job_dir)
            except (OSError, ValueError) as e:
                metrics = {**_hydra_job_info(job_dir), "status": "failed",
                           "error": f"unreadable {METRICS_FILE}: {e}"}
        else:
            metrics = {**_hydra_job_info(job_dir), "status": "failed",
                       "error": f"no {METRICS_FILE}: the job did not finish (see its log)"}
        if metrics.get("status") == "user_error":
            if user_errors is not None:
                user_errors.append({"job_dir": _rel(job_dir, root), "error": metrics.get("error")})
            continue
        row = flatten(metrics)
        row["job_dir"] = _rel(job_dir, root)  # replaces the absolute path a job records about itself
        row.setdefault("status", "failed")
        row.setdefault("error", None)
        records.append(row)
    return records


def _choice_rank(column: str) -> tuple:
    group = column.removeprefix("choices.").split("/")[0]  # a nested group (arch/labeler) follows its parent
    return group not in _CHOICE_ORDER, _CHOICE_ORDER.index(group) if group in _CHOICE_ORDER else 0, column


def _column_order(columns: list[str]) -> list[str]:
    lead = [c for c in _LEAD_COLUMNS if c in columns]
    choices = sorted((c for c in columns if c.startswith("choices.")), key=_choice_rank)
    rest = sorted(c for c in columns if c not in lead and c not in choices)
    return lead + choices + rest


def collect(sweep_dir: str | os.PathLike, user_errors: list[dict] | None = None) -> pd.DataFrame:
    """Tidy table of every job under `sweep_dir`: one row per job, dotted metric columns (user errors left out,
    see ``collect_records``)."""
    records = collect_records(sweep_dir, user_errors)
    if not records:
        return pd.DataFrame(columns=list(_LEAD_COLUMNS))
    df = pd.DataFrame.from_records(records)
    return df[_column_order(list(df.columns))]


def read_summary(path: str | os.PathLike) -> pd.DataFrame:
    """summary.csv back as written: text columns stay text ("none" and job dir "0" are not NaN / 0)."""
    path = Path(path)
    header = pd.read_csv(path, nrows=0).columns
    text = {c: str for c in header if c in _TEXT_COLUMNS or c.startswith(_TEXT_PREFIXES)}
    return pd.read_csv(path, dtype=text, keep_default_na=False, na_values=[""])


def split_overrides(text) -> list[str]:
    """Split comma-joined overrides, keeping commas inside [..] / {..}: "arch=x,opt=[bon,ppo]" has two parts."""
    if not isinstance(text, str) or not text:
        return []
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return parts + [cur]
