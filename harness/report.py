"""`python -m harness.report DIR`: one self-contained HTML page per sweep, `report.html` beside summary.csv.

What a reader of a leaderboard page expects, from the sweep's result files only (summary.csv, figures/*.png,
claims.md / claims.csv when the aggregation wrote them, Hydra's multirun.yaml): the results table (one row per
architecture / configuration, mean ± s.d. over seeds), the figures embedded as base64 PNG (the file can be mailed
or archived alone), the claims and their confidence intervals, the failed jobs, every job, the config and the
software versions. The end-of-sweep aggregation writes it; this command rewrites it (and runs the aggregation
first when the sweep has no summary.csv yet).

``aggregate`` is that end-of-sweep step (the callback and `python -m harness.aggregate` call it): summary.csv
from the job files (``harness.results``), then the figures (``harness.plots``), then this page. It lives here, at
the top of the chain, so that data flows results -> plots -> report one way and nothing imports back.

A small script marks the page once every image has loaded (``<body data-images="ok">``), which the headless
browser test reads back.
"""

from __future__ import annotations

import argparse
import base64
import html
import importlib.metadata
import logging
import os
import platform
import sys
from pathlib import Path

import pandas as pd

from harness.cache import atomic_write_text
from harness.console import SEED_COLUMNS, UNITS, seed_table, short_table_frame, sweep_text
from harness.results import METRICS_FILE, SUMMARY_FILE, collect, read_summary

REPORT_FILE = "report.html"
CLAIMS_MD = "claims.md"
CLAIMS_CSV = "claims.csv"
# Hydra writes the sweep's composed config here; a plain job dir has .hydra/config.yaml instead.
SWEEP_CONFIG_FILES = ("multirun.yaml", ".hydra/config.yaml")
# The software whose version a number depends on; listed under "versions" as installed when the report is written.
VERSIONED_PACKAGES = ("rmharness", "torch", "transformers", "peft", "hydra-core", "numpy", "pandas", "matplotlib")

# Figure name (plots.make_figures) -> caption; figures not listed get their file name.
CAPTIONS = {
    "bon": "Best-of-n: gold (points, ±1 s.d. over seeds) and proxy (dashed) reward against d = √KL, with the "
           "Gao et al. fit d(α − βd) of gold (solid).",
    "bon_per_arch": "Best-of-n, one panel per architecture.",
    "ppo": "PPO: gold (points) and proxy (dashed) against d = √KL at each evaluation step, with the fit "
           "d(α − β log d) of gold (solid).",
    "ppo_per_arch": "PPO, one panel per architecture.",
    "accuracy_per_domain": "Preference accuracy per domain and overall, against gold and against the noisy human "
                           "labels (bars: mean over seeds, error bars ±1 s.d.).",
    "params_vs_accuracy": "Parameters (filled: stored; hollow: active per scored response) against gold accuracy.",
    "capability_heatmap": "DMoERM: each capability expert's accuracy alone on its capability point.",
}
FIGURE_ORDER = ("bon", "ppo", "accuracy_per_domain", "params_vs_accuracy", "bon_per_arch", "ppo_per_arch",
                "capability_heatmap")

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #e5e5e5; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed td { color: #a00; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.units { font-size: 0.9em; color: #444; } .muted { color: #777; }
"""

# Marks the page once every image has loaded (complete, non-zero width): what the headless browser test reads.
SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.every(function (im) { return im.complete && im.naturalWidth > 0; });
  document.body.dataset.images = ok ? "ok" : "broken";
  document.body.dataset.imageCount = String(imgs.length);
});
"""

log = logging.getLogger(__name__)


def _esc(x) -> str:
    return html.escape("" if x is None else str(x))


def _is_number(text: str) -> bool:
    head = str(text).split(" ", 1)[0].replace(",", "")
    try:
        float(head)
        return True
    except ValueError:
        return False


def _table(df: pd.DataFrame, row_attrs=None, fmt: str = "{:.3f}") -> str:
    """An HTML table of a DataFrame; numeric cells right-aligned, NaN blank; ``row_attrs(row)`` -> attributes."""
    head = "".join(f"<th>{_esc(c)}</th>" for c in df.columns)
    body = []
    for _, row in df.iterrows():
        cells = []
        for v in row:
            text = "" if v is None or (isinstance(v, float) and pd.isna(v)) else (
                fmt.format(v) if isinstance(v, float) else str(v))
            cls = ' class="num"' if text and _is_number(text) else ""
            cells.append(f"<td{cls}>{_esc(text)}</td>")
        body.append(f"<tr{row_attrs(row) if row_attrs else ''}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _results_section(summary: pd.DataFrame) -> str:
    table = seed_table(summary, min_seeds=1)
    if table is None:
        return "<p>No job finished ok: there is nothing to compare.</p>"
    studies = [k for k in ("bon", "ppo") if any(c.startswith(f"{k}.") for c in summary.columns)]
    units = [UNITS[k] for k in ["acc", "params"] + (["d"] if studies else []) + studies]
    headers = ", ".join(h for c, h in SEED_COLUMNS if h in table.columns)
    return (f"<p>One row per configuration; n = seeds; each cell mean ± s.d. over seeds ({_esc(headers)}).</p>"
            + _table(table, lambda r: f' class="result" data-arch="{_esc(r.get("arch", ""))}"')
            + "<ul class=\"units\">" + "".join(f"<li>{_esc(u)}</li>" for u in units) + "</ul>")


def _claims_section(root: Path) -> str:
    parts = []
    md = root / CLAIMS_MD
    if md.is_file():
        text = md.read_text(encoding="utf-8")
        try:
            from markdown_it import MarkdownIt

            # Raw HTML in the markdown stays escaped text: the page shows what the file says, nothing more.
            parts.append(MarkdownIt("commonmark", {"html": False}).enable("table").render(text))
        except ImportError:
            parts.append(f"<pre>{_esc(text)}</pre>")
    csv = root / CLAIMS_CSV
    if csv.is_file():
        parts.append(_table(pd.read_csv(csv, keep_default_na=False, na_values=[""])))
    if not parts:
        return ""
    return "<h2 id=\"claims\">Claims and confidence intervals</h2>" + "".join(parts)


def _figures_section(root: Path) -> str:
    pngs = {p.stem: p for p in sorted((root / "figures").glob("*.png"))}
    if not pngs:
        return ""
    order = [n for n in FIGURE_ORDER if n in pngs] + sorted(set(pngs) - set(FIGURE_ORDER))
    parts = ["<h2 id=\"figures\">Figures</h2>"]
    for name in order:
        data = base64.b64encode(pngs[name].read_bytes()).decode("ascii")
        caption = CAPTIONS.get(name, name)
        pdf = pngs[name].with_suffix(".pdf")
        if pdf.is_file():
            caption += f" (PDF: figures/{pdf.name})"
        parts.append(f'<figure id="fig-{_esc(name)}"><img alt="{_esc(name)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{_esc(caption)}</figcaption></figure>")
    return "".join(parts)


def _jobs_section(summary: pd.DataFrame) -> str:
    jobs = short_table_frame(summary)
    failed = summary["status"] != "ok"
    out = []
    if failed.any():
        out.append(f"<h2 id=\"failed\">Failed jobs ({int(failed.sum())})</h2>"
                   "<p>Not in the results table or the figures; the full error is in summary.csv and the job's "
                   "log.</p>" + _table(jobs[failed.to_numpy()], lambda r: ' class="failed"'))
    out.append(f"<h2 id=\"jobs\">Every job ({len(jobs)})</h2><details><summary>show</summary>"
               + _table(jobs, lambda r: ' class="failed"' if r.get("status") != "ok" else "")
               + "</details>")
    return "".join(out)


def _config_section(root: Path, summary: pd.DataFrame) -> str:
    parts = ["<h2 id=\"config\">Config and versions</h2>"]
    for name in SWEEP_CONFIG_FILES:
        path = root / name
        if path.is_file():
            parts.append(f"<p>The sweep's composed config ({_esc(name)}):</p><details><summary>show</summary>"
                         f"<pre>{_esc(path.read_text(encoding='utf-8'))}</pre></details>")
            break
    if "overrides" in summary.columns:
        overrides = sorted({str(o) for o in summary["overrides"].dropna()})
        parts.append("<p>Overrides of the jobs:</p><pre>" + _esc("\n".join(overrides)) + "</pre>")
    # Versions the jobs recorded themselves (metrics.json "versions"/"git", when present), then this machine's.
    recorded = [c for c in summary.columns if c.startswith(("versions.", "git."))]
    if recorded:
        rows = [(c, ", ".join(sorted({str(v) for v in summary[c].dropna()}))) for c in recorded]
        parts.append("<p>Recorded by the jobs:</p>" + _table(pd.DataFrame(rows, columns=["", "value"])))
    parts.append("<p>Installed where this report was written:</p>"
                 + _table(pd.DataFrame(_installed_versions(), columns=["package", "version"])))
    return "".join(parts)


def _installed_versions() -> list[tuple[str, str]]:
    rows = [("python", platform.python_version()), ("platform", platform.platform())]
    for pkg in VERSIONED_PACKAGES:
        try:
            rows.append((pkg, importlib.metadata.version(pkg)))
        except importlib.metadata.PackageNotFoundError:
            rows.append((pkg, "not installed"))
    return rows


def render_report(sweep_dir: str | Path) -> str:
    root = Path(sweep_dir)
    summary = read_summary(root / SUMMARY_FILE)
    n_failed = int((summary["status"] != "ok").sum())
    archs = sorted({str(a) for a in summary.get("choices.arch", pd.Series(dtype=str)).dropna()})
    seeds = sorted({int(s) for s in pd.to_numeric(summary.get("seed", pd.Series(dtype=float)),
                                                   errors="coerce").dropna()})
    title = f"rmharness sweep {root.resolve().name}"
    body = [
        f"<h1>{_esc(title)}</h1>",
        f"<p>{len(summary)} jobs ({n_failed} failed) · architectures: {_esc(', '.join(archs) or '?')} · seeds: "
        f"{_esc(', '.join(map(str, seeds)) or '?')} · <span class=\"muted\">{_esc(root.resolve())}</span></p>",
        "<h2 id=\"results\">Results</h2>", _results_section(summary),
        _claims_section(root), _figures_section(root), _jobs_section(summary), _config_section(root, summary),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_esc(title)}</title><style>{STYLE}</style><script>{SCRIPT}</script></head>\n"
            f"<body>{''.join(body)}</body></html>\n")


def write_report(sweep_dir: str | Path) -> Path:
    """Write ``report.html`` into the sweep dir (needs its summary.csv; embeds whatever figures exist)."""
    path = Path(sweep_dir) / REPORT_FILE
    atomic_write_text(path, render_report(sweep_dir))
    return path


def aggregate(sweep_dir: str | os.PathLike, figures: bool = True, baseline: str | None = None,
              claims_file: str | os.PathLike | None = None) -> dict:
    """Write `summary.csv`, the paired statistics against `baseline` (stats.csv, stats_per_seed.csv; None: the
    claims file's `baseline`), the claims table (claims.md, claims.csv; when any claim of `claims_file`, default
    conf/claims.yaml, is measured), figures and the HTML report into `sweep_dir`.

    summary.csv is written before anything else, so a statistics or plotting error can never cost the table.
    Raises FileNotFoundError when `sweep_dir` holds no job at all.
    """
    from harness import claims, stats  # scipy's statistics are only imported when a sweep is aggregated

    root = Path(sweep_dir)
    user_errors: list[dict] = []
    df = collect(root, user_errors)
    if df.empty and not user_errors:
        raise FileNotFoundError(f"no {METRICS_FILE} (and no Hydra job dir) under {root}")
    summary = root / SUMMARY_FILE
    atomic_write_text(summary, df.to_csv(index=False, lineterminator="\n"))
    claims_file = claims_file or claims.CLAIMS_FILE
    claims.load_claims(claims_file)  # a malformed claims file is the user's error: it fails, naming the claim
    baseline = baseline or claims.load_baseline(claims_file)
    tables: list[Path] = []
    try:  # like a figure, a statistics error must not cost the rest of the aggregation
        jobs = stats.load_jobs(root)
        tables = stats.write_stats(root, baseline, jobs=jobs)
        tables += claims.write_claims(root, claims_file, jobs=jobs, only_if_measured=True)
    except (ValueError, KeyError, OSError) as e:
        log.warning("statistics and claims not written: %s: %s", type(e).__name__, e)
    paths: list[Path] = []
    report = None
    if figures and not df.empty:
        from harness import plots  # matplotlib is only imported when figures are asked for

        try:
            paths = plots.make_figures(root)
        finally:
            report = write_report(root)  # with whichever figures were drawn, even when one of them failed
    return {
        "n_jobs": len(df),
        "n_failed": int((df["status"] != "ok").sum()),
        "user_errors": user_errors,
        "summary": summary,
        "tables": tables,
        "figures": paths,
        "report": report,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.report", description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="a sweep dir (hydra.sweep.dir)")
    args = parser.parse_args(argv)
    if not (args.dir / SUMMARY_FILE).is_file():
        try:
            out = aggregate(args.dir)  # summary.csv, figures and this report
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(sweep_text(out))
        return 1 if out["n_failed"] else 0
    print(f"report: {write_report(args.dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
