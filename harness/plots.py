"""Paper-style figures of a sweep, drawn from result files only: `summary.csv`, each job's `curves.csv`,
and (for the capability heatmap) the `explain` block of the jobs' `metrics.json`. Never from logs.

`make_figures(sweep_dir)` writes whichever of these apply, as PNG (150 dpi) and PDF, to `sweep_dir/figures/`:

- `bon`: gold (points, error bars +-1 s.d. over seeds) with its Gao et al. fit R = d(alpha - beta d) (solid line;
  dotted where the fit explains little, R^2 < MIN_FIT_R2; a star at the fitted peak when it lies inside the
  measured range) and proxy (dashed, +-1 s.d. band) reward vs sqrt(KL) under best-of-n, per arch, mean over
  seeds; a grey vertical line at the common sqrt(KL) where final gold / gap and the area under gold are read;
- `ppo`: the same for PPO eval steps, fit R = d(alpha - beta log d);
- `bon_per_arch`, `ppo_per_arch`: the same curves as small multiples, one panel per arch (sweeps of 4+ archs);
- `accuracy_per_domain`: grouped bars, one group per domain plus "overall", one bar per arch;
- `params_vs_accuracy`: stored (filled) and active-per-response (hollow) parameters vs gold accuracy;
- `capability_heatmap`: per-domain capability scores, for the jobs that report them.

Figures key on what the results hold, never on an arch name: a view that is a model of its own (metrics.json
`views.<name>.params`, e.g. a model before a merge) joins the accuracy and parameter figures as the series
`<arch>:<name>`; jobs with `explain.capability_scores` get a heatmap.

Conventions every figure shares: one colour per arch (fixed by the arch's place among the configs the harness
ships, conf/arch/*.yaml, so figures of different sweeps compare at a glance; a view a lighter shade of its arch's);
only jobs with status "ok"; jobs that differ only in their seed are pooled into one series (error bars / bands
are +-1 sample s.d. over those seeds); other varied choices (data, backbone, ...) become separate panels, other
varied overrides and the arch's own nested choices (arch/labeler) separate series.
Rendering is deterministic: the same inputs give byte-identical PNG and PDF files.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never open a window, work on headless nodes
# PDF font subsetting logs every pruned table at INFO: noise in a job's log.
logging.getLogger("fontTools").setLevel(logging.WARNING)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from harness.optimize.fits import FORMS  # noqa: E402
from harness.results import (  # noqa: E402
    SUMMARY_FILE,
    read_curves,
    read_metrics,
    read_summary,
    split_overrides,
)

log = logging.getLogger(__name__)

FIGURES_DIR = "figures"
DPI = 150
# The config group is the registry of the architectures the harness ships.
ARCH_CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "arch"
# Between an arch and one of its views in a series name ("<arch>:<view>").
VIEW_SEP = ":"
# Summary columns a view's row takes from `views.<name>.*` (the rest of the job's row is kept as it is).
METRIC_PREFIXES = ("accuracy.", "params.", "timing_s.", "bon.", "ppo.")
REWARD_LABEL = "reward (s.d. of initial policy; 0 = its mean)"
# The unit in words, per harness.optimize.bon.reward_units scale (metrics.json <opt>.units.gold.scale_kind).
REWARD_LABELS = {"within_prompt": "reward (within-prompt s.d. of initial policy;\n0 = its mean)",
                 "total": "reward (total s.d. of initial policy; 0 = its mean)",
                 # gold=verifier: gold is the pass rate less the initial policy's; the proxy keeps its s.d. units.
                 "pass_rate": "gold: pass-rate gain (fraction; 0 = initial policy)\nproxy: within-prompt s.d."}
# A Gao fit whose R^2 (mean over seeds) is below this is drawn dotted: the form does not describe the points,
# so its line and peak are not to be read as the curve's shape.
MIN_FIT_R2 = 0.5
SQRT_KL_LABEL = r"$\sqrt{\mathrm{KL}}$ (nats$^{1/2}$)"
BAND_LABEL = r"band / bars: $\pm$1 s.d. over seeds"

# Applied with rc_context, so importing this module changes no one else's matplotlib settings.
PAPER_RC = {
    "svg.hashsalt": "rmharness",  # fixed ids in SVG output: reruns diff clean
    "pdf.fonttype": 42,  # embed TrueType so text stays editable in the PDF
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "legend.frameon": False,
    "lines.linewidth": 1.5,
}
# No timestamps in the files, so two renders of the same data are byte-identical.
SAVE_METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "ModDate": None, "Producer": None}}


# ------------------------------------------------------------------------------------------ colours


def shipped_archs() -> list[str]:
    """The architectures the harness ships (conf/arch/*.yaml), in name order."""
    return sorted(p.stem for p in ARCH_CONF_DIR.glob("*.yaml"))


def arch_colors(archs) -> dict[str, tuple]:
    """Shipped archs keep their colour (by their place in the registry: tab10, then Dark2 past ten, so eleven and
    more stay distinct) in every sweep; others take the light tab20 shades in alphabetical order; a view's series
    ("<arch>:<view>") is a lighter shade of its arch's."""
    palette = list(colormaps["tab10"].colors) + list(colormaps["Dark2"].colors)
    tab20 = colormaps["tab20"].colors
    colors = {a: palette[i % len(palette)] for i, a in enumerate(shipped_archs())}
    others = sorted({a.partition(VIEW_SEP)[0] for a in archs} - set(colors))
    for i, a in enumerate(others):
        colors[a] = tab20[(2 * i + 1) % 20]
    out = {}
    for a in archs:
        arch, _, view = a.partition(VIEW_SEP)
        out[a] = _shade(colors[arch], 0, 3) if view else colors[arch]
    return out


def arch_order(archs) -> list[str]:
    """Shipped archs in registry order, then the others alphabetically; each arch's views right after it."""
    shipped = shipped_archs()

    def rank(a: str) -> tuple:
        arch, _, view = a.partition(VIEW_SEP)
        return arch not in shipped, shipped.index(arch) if arch in shipped else 0, arch, view

    return sorted(set(archs), key=rank)


def _shade(color, i: int, n: int) -> tuple:
    """i-th of n shades of one arch colour (light to dark) for variants of the same arch."""
    if n == 1:
        return to_rgb(color)
    t = -0.45 + 0.9 * i / (n - 1)  # <0 mixes toward white, >0 toward black
    rgb = np.array(to_rgb(color))
    mixed = rgb + (1 - rgb) * -t if t < 0 else rgb * (1 - t)
    return tuple(float(v) for v in mixed)


# ------------------------------------------------------------------------------------ grouping rows


@dataclass
class Series:
    """Jobs pooled into one line / bar: same panel, arch and non-seed overrides; differ only in seed."""

    panel: str
    arch: str
    label: str
    color: tuple
    rows: pd.DataFrame


def _panel_columns(ok: pd.DataFrame) -> list[str]:
    # Choices that change what is measured and vary across the sweep. arch is the series; opt only says
    # which studies ran, and hydra/* (launcher, sweeper) never change a number.
    # The arch's own nested choices (arch/labeler) exist for some archs only: they make series, not panels.
    cols = [c for c in ok.columns if c.startswith("choices.") and c not in ("choices.arch", "choices.opt")
            and not c.startswith(("choices.hydra", "choices.arch/")) and c != "choices.suite"]
    return [c for c in cols if ok[c].nunique(dropna=False) > 1]


def _variant_overrides(ok: pd.DataFrame) -> pd.Series:
    """Per row: the overrides beside seed and config-group choices, the arch's own nested choices
    (arch/labeler=...) and the suite (the paper suite's parts share one directory: β = 0.01 and noisier labels
    are other settings, not more seeds), that vary across rows, as a label."""
    groups = {c[len("choices."):] for c in ok.columns if c.startswith("choices.")} | {"seed"}
    nested = [c for c in ok.columns if (c.startswith("choices.arch/") or c == "choices.suite")
              and ok[c].dropna().nunique() > 1]
    per_row = []
    overrides = ok.get("overrides", pd.Series([None] * len(ok), index=ok.index))
    for (_, row), text in zip(ok.iterrows(), overrides, strict=True):
        keep = [f"{c.removeprefix('choices.arch/').removeprefix('choices.')}={row[c]}" for c in nested
                if pd.notna(row[c])]
        for o in split_overrides(text):
            key = o.split("=", 1)[0].lstrip("+~")
            if key not in groups and not key.startswith("hydra"):
                keep.append(o)
        per_row.append(tuple(sorted(keep)))
    common = set.intersection(*(set(v) for v in per_row)) if per_row else set()
    return pd.Series([" ".join(o for o in v if o not in common) for v in per_row], index=ok.index)


def _with_model_views(ok: pd.DataFrame) -> pd.DataFrame:
    """Add a row `<arch>:<view>` for each job and each of its views that is a model of its own (it reports
    `views.<view>.params`, e.g. a model before a merge), its metric columns taken from `views.<view>.*`."""
    suffix = ".params.total"
    names = sorted({c[len("views."):-len(suffix)] for c in ok.columns
                    if c.startswith("views.") and c.endswith(suffix)})
    rows = [ok]
    for name in names:
        has = ok[f"views.{name}{suffix}"].notna()
        if not has.any():
            continue
        extra = ok[has].copy()
        for c in extra.columns:
            if c.startswith(METRIC_PREFIXES):
                src = f"views.{name}.{c}"
                extra[c] = extra[src] if src in extra.columns else np.nan
        extra["choices.arch"] = extra["choices.arch"].astype(str) + VIEW_SEP + name
        rows.append(extra)
    return pd.concat(rows, ignore_index=True) if len(rows) > 1 else ok


def _series(ok: pd.DataFrame, colors: dict[str, tuple]) -> list[Series]:
    if ok.empty:
        return []
    ok = ok.copy()
    ok["_arch"] = ok["choices.arch"].fillna("?").astype(str)
    panel_cols = _panel_columns(ok)
    ok["_panel"] = [", ".join(f"{c[len('choices.'):]}={r[c]}" for c in panel_cols) for _, r in ok.iterrows()]
    ok["_variant"] = _variant_overrides(ok)
    out = []
    for panel in sorted(ok["_panel"].unique()):
        in_panel = ok[ok["_panel"] == panel]
        for arch in arch_order(in_panel["_arch"].unique()):
            in_arch = in_panel[in_panel["_arch"] == arch]
            variants = sorted(in_arch["_variant"].unique())
            for i, v in enumerate(variants):
                rows = in_arch[in_arch["_variant"] == v]
                label = f"{arch} ({v})" if v else arch
                out.append(Series(panel, arch, label, _shade(colors[arch], i, len(variants)), rows))
    return out


def _mean_sd(values) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


# ------------------------------------------------------------------------------------------- layout


def _panels(series: list[Series]) -> list[str]:
    return sorted({s.panel for s in series})


def _figure(n_panels: int, panel_size: tuple[float, float], legend_width: float = 1.6):
    ncols = min(n_panels, 3)
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(panel_size[0] * ncols + legend_width, panel_size[1] * nrows), layout="constrained")
    # Shared y: panels are compared by eye, so a common scale matters more than filling each panel.
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _legend(fig: Figure, series: list[Series], extra: list = ()) -> None:
    handles, seen = [], set()
    for s in series:
        if s.label not in seen:
            seen.add(s.label)
            handles.append(Patch(facecolor=s.color, label=s.label))
    if extra:
        handles.append(Line2D([], [], linestyle="none", label=""))  # a gap between archs and the key
        handles.extend(extra)
    # Outside the axes: a legend inside would sit on top of some arch's curve in one sweep or another.
    fig.legend(handles=handles, loc="outside right upper")


def _spread_key(handle, series: list[Series]) -> list:
    """The error band / bar legend entry, only when some series pools several seeds (has a spread)."""
    return [handle] if any(len(s.rows) > 1 for s in series) else []


def _save(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in ("png", "pdf"):
        path = out_dir / f"{name}.{fmt}"
        tmp = out_dir / f".{name}.{fmt}.tmp"
        # Written aside and renamed: a reader never sees half a figure.
        fig.savefig(tmp, format=fmt, dpi=DPI, metadata=SAVE_METADATA[fmt])
        os.replace(tmp, path)
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------------ figures


# Sweeps with at least this many archs also get the curves as small multiples (one panel per arch).
MIN_ARCHS_PER_ARCH_FIGURE = 4

# opt -> (x key column in curves.csv, fit formula for the legend, title); the fit's curve and peak are
# optimize.fits.FORMS[opt], drawn with the (alpha, beta) the jobs' fits found (summary.csv).
CURVE_KINDS = {
    "bon": ("n", r"fit $d(\alpha-\beta d)$", "Best-of-n over-optimization"),
    "ppo": ("step", r"fit $d(\alpha-\beta\,\log d)$", "PPO over-optimization"),
}


def _curve_stats(sweep_dir: Path, rows: pd.DataFrame, opt: str) -> pd.DataFrame | None:
    """Per n (BoN) or step (PPO): mean sqrt_kl and mean / s.d. of gold and proxy over the series' jobs."""
    key = CURVE_KINDS[opt][0]
    frames = []
    for job_dir in rows["job_dir"]:
        c = read_curves(sweep_dir / job_dir)
        c = c[c["opt"] == opt].copy()
        if c.empty:
            continue
        # sqrt_kl is the x axis; tolerate files that only filled kl.
        c["sqrt_kl"] = c["sqrt_kl"].fillna(np.sqrt(c["kl"].clip(lower=0)))
        c["_job"] = job_dir
        frames.append(c)
    if not frames:
        return None
    c = pd.concat(frames, ignore_index=True)
    g = c.groupby(key, sort=True)
    stats = pd.DataFrame({
        "sqrt_kl": g["sqrt_kl"].mean(),
        "gold": g["gold"].mean(), "gold_sd": g["gold"].std(ddof=1).fillna(0.0),
        "proxy": g["proxy"].mean(), "proxy_sd": g["proxy"].std(ddof=1).fillna(0.0),
    })
    return stats.sort_values("sqrt_kl")


def curves_figure(sweep_dir: Path, series: list[Series], opt: str, by_arch: bool = False) -> Figure | None:
    """Gold and proxy against sqrt(KL), one panel per sweep variant; ``by_arch``: one panel per arch as well
    (small multiples, in arch order), for sweeps with too many archs to read on one panel. None: too few archs
    for small multiples, or no curve of ``opt`` at all."""
    key, fit_label, title = CURVE_KINDS[opt]
    fit, peak = FORMS[opt]
    if by_arch:
        if len({s.label for s in series}) < MIN_ARCHS_PER_ARCH_FIGURE:
            return None
        series = [replace(s, panel=f"{s.panel} · {s.label}" if s.panel else s.label) for s in series]
    curves = [(s, _curve_stats(sweep_dir, s.rows, opt)) for s in series]
    curves = [(s, st) for s, st in curves if st is not None and not st.empty]
    if not curves:
        return None
    panels = list(dict.fromkeys(s.panel for s, _ in curves)) if by_arch else _panels([s for s, _ in curves])
    all_rows = pd.concat([s.rows for s, _ in curves])
    common = _one_value(all_rows.get(f"{opt}.common_sqrt_kl"))
    reward_label = REWARD_LABELS.get(_one_value(all_rows.get(f"{opt}.units.gold.scale_kind")), REWARD_LABEL)
    fig, axes = _figure(len(panels), (4.6, 3.4), legend_width=1.9)
    for ax, panel in zip(axes, panels, strict=True):
        for s, st in curves:
            if s.panel != panel:
                continue
            x = st["sqrt_kl"].to_numpy()
            several = len(s.rows) > 1
            # Proxy: a dashed line with its seed band (it has no fit to set it apart from).
            y, sd = st["proxy"].to_numpy(), st["proxy_sd"].to_numpy()
            ax.plot(x, y, "--", color=s.color, linewidth=1.2)
            if several:
                ax.fill_between(x, y - sd, y + sd, color=s.color, alpha=0.08, linewidth=0)
            alpha = _mean_sd(s.rows.get(f"{opt}.alpha", pd.Series(dtype=float)))[0]
            beta = _mean_sd(s.rows.get(f"{opt}.beta", pd.Series(dtype=float)))[0]
            has_fit = bool(np.isfinite(alpha) and np.isfinite(beta) and np.nanmax(x) > 0)
            r2 = _mean_sd(s.rows.get(f"{opt}.r2", pd.Series(dtype=float)))[0]
            good_fit = bool(np.isfinite(r2) and r2 >= MIN_FIT_R2)
            # Gold: the measured points (error bars over seeds), and the fit as the line through them -- so the
            # fit is seen beside the data instead of hidden under a line joining the points.
            y, sd = st["gold"].to_numpy(), st["gold_sd"].to_numpy()
            ax.errorbar(x, y, yerr=sd if several else None, fmt="o", color=s.color, markersize=3.5,
                        elinewidth=0.8, capsize=1.5, zorder=3)
            if has_fit:
                # Both fits are linear in (alpha, beta), so the fit of the seed-mean parameters is the mean
                # of the seeds' fitted curves. PPO's d log d -> 0, so starting just above 0 is exact enough.
                d = np.linspace(1e-3, np.nanmax(x), 200)
                ax.plot(d, fit(d, alpha, beta), "-" if good_fit else ":", color=s.color,
                        linewidth=1.4 if good_fit else 1.0)
                # The fitted peak, only where the data reach: beyond them it is the formula's, not the data's.
                d_star = peak(alpha, beta)[0]
                if good_fit and 0 < d_star <= np.nanmax(x):
                    ax.plot([d_star], [fit(d_star, alpha, beta)], "*", color=s.color, markersize=8,
                            markeredgecolor="white", markeredgewidth=0.5, zorder=4)
            else:
                ax.plot(x, y, "-", color=s.color, linewidth=0.6, alpha=0.5)  # no fit: a faint guide
        ax.axhline(0.0, color="0.6", linewidth=0.6, zorder=0)
        if common is not None:
            ax.axvline(common, color="0.45", linestyle=(0, (4, 2)), linewidth=0.8, zorder=0)
        ax.set_xlabel(SQRT_KL_LABEL)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel(reward_label)
        ax.set_title(panel or title)
    if len(panels) > 1:
        fig.suptitle(title)
    key_handles = [
        Line2D([], [], color="0.2", linestyle="none", marker="o", markersize=3.5, label="gold (measured)"),
        Line2D([], [], color="0.2", linestyle="-", linewidth=1.4, label=f"gold, {fit_label}"),
        Line2D([], [], color="0.2", linestyle=":", linewidth=1.0, label=f"fit with $R^2$ < {MIN_FIT_R2:g}"),
        Line2D([], [], color="0.2", linestyle="none", marker="*", markersize=8, label="fitted peak (in range)"),
        Line2D([], [], color="0.2", linestyle="--", linewidth=1.2, label="proxy (measured)"),
    ]
    if common is not None:
        key_handles.append(Line2D([], [], color="0.45", linestyle=(0, (4, 2)), linewidth=0.8,
                                  label="final gap, AUC read at\n" + rf"$\sqrt{{\mathrm{{KL}}}}$ = {common:.2f}"))
    key_handles += _spread_key(Line2D([], [], color="0.2", linewidth=0.8, marker="_", markersize=4,
                                          label=BAND_LABEL), [s for s, _ in curves])
    _legend(fig, [s for s, _ in curves], key_handles)
    return fig


def _one_value(column: pd.Series | None):
    """The value every row shares in ``column`` (a summary column), None when absent or when rows differ."""
    if column is None:
        return None
    values = column.dropna().unique()
    return values[0] if len(values) == 1 else None


def _domains(summary: pd.DataFrame, label: str) -> list[str]:
    prefix = f"accuracy.{label}.per_domain."
    return [c[len(prefix):] for c in summary.columns if c.startswith(prefix)]


def accuracy_figure(series: list[Series]) -> Figure | None:
    rows_all = pd.concat([s.rows for s in series]) if series else pd.DataFrame()
    labels = [lab for lab in ("gold", "human")
              if f"accuracy.{lab}.overall" in rows_all and rows_all[f"accuracy.{lab}.overall"].notna().any()]
    if not labels:
        return None
    panels = _panels(series)
    titles = {"gold": "agreement with gold preferences", "human": "agreement with (noisy) human labels"}
    n_domains = max(len(_domains(rows_all, lab)) for lab in labels) + 1
    per_panel = max(sum(s.panel == p for s in series) for p in panels)
    # >= 0.9 in per group so two-line domain labels never touch; bars ~0.15 in wide.
    width = max(4.5, n_domains * max(0.9, 0.15 * per_panel) + 1.0)
    fig = Figure(figsize=(width + 1.8, 2.9 * len(panels) * len(labels)), layout="constrained")
    axes = fig.subplots(len(panels) * len(labels), 1, squeeze=False).ravel()
    lo = 1.0
    for i, (panel, lab) in enumerate((p, lab) for p in panels for lab in labels):
        ax = axes[i]
        groups = _domains(rows_all, lab) + ["overall"]
        cols = [f"accuracy.{lab}.per_domain.{d}" for d in groups[:-1]] + [f"accuracy.{lab}.overall"]
        # Only series with this label kind: a view may report gold accuracy and not human.
        in_panel = [s for s in series if s.panel == panel and f"accuracy.{lab}.overall" in s.rows
                    and s.rows[f"accuracy.{lab}.overall"].notna().any()]
        # The overall group sits one slot further right, apart from the domains it averages.
        xs = np.arange(len(groups), dtype=float)
        xs[-1] += 0.5
        width_bar = 0.8 / max(len(in_panel), 1)
        for j, s in enumerate(in_panel):
            stats = [_mean_sd(s.rows[c]) if c in s.rows else (math.nan, math.nan) for c in cols]
            means = np.array([m for m, _ in stats])
            sds = np.array([sd for _, sd in stats])
            offset = (j - (len(in_panel) - 1) / 2) * width_bar
            ax.bar(xs + offset, means, width_bar, color=s.color, yerr=sds if len(s.rows) > 1 else None,
                   error_kw={"elinewidth": 0.8, "capsize": 1.5, "ecolor": "0.25"})
            if np.isfinite(means - sds).any():
                lo = min(lo, float(np.nanmin(means - sds)))
        ax.axhline(0.5, color="0.4", linestyle=":", linewidth=0.8)
        ax.text(1.0, 0.5, " chance", transform=ax.get_yaxis_transform(), va="center", ha="left",
                fontsize=7, color="0.4")
        ax.axvline(xs[-1] - 0.75, color="0.7", linewidth=0.6)
        ax.set_xticks(xs, [g.replace("_", "\n") for g in groups])
        ax.set_ylabel("accuracy (fraction of pairs)")  # the axis break, if any, is added to it below
        ax.set_title(f"{titles[lab]}" + (f" -- {panel}" if panel else ""))
        ax.grid(axis="x", visible=False)
    # Accuracies live in 0.5..1 (chance is 0.5); a 0-based axis would hide the differences that matter, so the
    # axis starts higher and says so: a break mark on it and the start in its label (bar lengths are not ratios).
    bottom = max(0.0, min(0.4, math.floor(lo * 10) / 10 - 0.05) if np.isfinite(lo) else 0.4)
    for ax in axes:
        ax.set_ylim(bottom, 1.0)
        if bottom > 0:
            _mark_broken_y(ax)
            ax.set_ylabel(f"accuracy (fraction of pairs;\naxis broken, starts at {bottom:g})")
    _legend(fig, series, _spread_key(Line2D([], [], color="0.25", linewidth=0.8, label=BAND_LABEL), series))
    return fig


# summary.csv columns of gold=verifier's Best-of-N: the pass rate of the proxy's pick at each n (harness/optimize/
# study.py pass_rate_curve), and the initial policy's.
PASS_RATE_PREFIX = "bon.pass_rate.at_n."
PASS_RATE_INITIAL = "bon.pass_rate.initial"


def pass_rate_figure(series: list[Series]) -> Figure | None:
    """gold=verifier: the pass rate of the proxy's pick against n (log scale), mean ± 1 s.d. over seeds, with the
    initial policy's pass rate: the curve falling while the proxy rises is over-optimization read in the gold's
    own unit (the bon figure draws it as a gain beside the proxy's s.d.). None when no job has it."""
    rows_all = pd.concat([s.rows for s in series]) if series else pd.DataFrame()
    cols = sorted((c for c in rows_all.columns if c.startswith(PASS_RATE_PREFIX) and rows_all[c].notna().any()),
                  key=lambda c: int(c[len(PASS_RATE_PREFIX):]))
    if not cols:
        return None
    ns = np.array([int(c[len(PASS_RATE_PREFIX):]) for c in cols], dtype=float)
    panels = _panels(series)
    fig, axes = _figure(len(panels), (4.6, 3.2))
    for ax, panel in zip(axes, panels, strict=True):
        in_panel = [s for s in series if s.panel == panel and any(c in s.rows for c in cols)]
        for s in in_panel:
            stats = [_mean_sd(s.rows[c]) if c in s.rows else (math.nan, math.nan) for c in cols]
            mean, sd = np.array([m for m, _ in stats]), np.array([d for _, d in stats])
            ax.plot(ns, mean, marker="o", markersize=3, color=s.color)
            if len(s.rows) > 1:
                ax.fill_between(ns, mean - sd, mean + sd, color=s.color, alpha=0.15, linewidth=0)
        initial = _mean_sd(pd.concat([s.rows[PASS_RATE_INITIAL] for s in in_panel if PASS_RATE_INITIAL in s.rows]))
        if np.isfinite(initial[0]):
            ax.axhline(initial[0], color="0.4", linestyle=":", linewidth=0.8)
            ax.text(1.0, initial[0], " initial", transform=ax.get_yaxis_transform(), va="center", ha="left",
                    fontsize=7, color="0.4")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("n (best of n samples)")
        ax.set_ylabel("pass rate of the proxy's pick")
        ax.set_title("Best-of-n against the verifier" + (f" -- {panel}" if panel else ""))
    _legend(fig, series, _spread_key(Patch(facecolor="0.5", alpha=0.3, label=BAND_LABEL), series))
    return fig


BROKEN_AXIS_GID = "broken-y-axis"


def _mark_broken_y(ax) -> None:
    """The usual '//' across the y axis near its foot: this axis does not start at 0."""
    y0, gap = 0.035, 0.03  # axes fractions: where the break sits and how wide it is
    style = dict(transform=ax.transAxes, clip_on=False, linestyle="none", gid=BROKEN_AXIS_GID)
    # A short white stroke cuts the spine, two slanted ticks frame the cut.
    ax.plot([0, 0], [y0, y0 + gap], transform=ax.transAxes, clip_on=False, color="white", linewidth=2.5,
            zorder=4, gid=BROKEN_AXIS_GID)
    for y in (y0, y0 + gap):
        ax.plot([0], [y], marker=[(-1, -0.5), (1, 0.5)], markersize=7, color="0.15", markeredgewidth=1.0,
                zorder=5, **style)


def _count_label(x: float, _pos=None) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:g}{suffix}"
    return f"{x:g}"


def params_figure(series: list[Series]) -> Figure | None:
    usable = [s for s in series if {"params.total", "accuracy.gold.overall"} <= set(s.rows.columns)
              and s.rows["params.total"].notna().any() and s.rows["accuracy.gold.overall"].notna().any()]
    if not usable:
        return None
    panels = _panels(usable)
    fig, axes = _figure(len(panels), (4.6, 3.4), legend_width=1.9)
    for ax, panel in zip(axes, panels, strict=True):
        for s in usable:
            if s.panel != panel:
                continue
            y, sd = _mean_sd(s.rows["accuracy.gold.overall"])
            total = _mean_sd(s.rows["params.total"])[0]
            active = _mean_sd(s.rows["params.active"])[0] if "params.active" in s.rows else math.nan
            yerr = sd if len(s.rows) > 1 else None
            if np.isfinite(active) and active != total:
                ax.plot([active, total], [y, y], "-", color=s.color, linewidth=0.8, alpha=0.6)
            if np.isfinite(active):
                # Drawn larger than the filled marker, so when active == total it shows as a ring around it.
                ax.errorbar(active, y, yerr=yerr, fmt="o", markersize=9, markerfacecolor="none",
                            markeredgecolor=s.color, markeredgewidth=1.2, ecolor=s.color, elinewidth=0.8)
            ax.errorbar(total, y, yerr=yerr, fmt="o", markersize=5, color=s.color, elinewidth=0.8, capsize=2)
        ax.set_xscale("log")
        # Ticks at 1-2-5 with short labels ("200k"): matplotlib's default minor labels collide here.
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(_count_label))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.margins(x=0.15, y=0.15)
        ax.set_xlabel("parameters (count, log scale)")
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("gold preference accuracy (fraction)")
        ax.set_title(panel or "parameters vs accuracy")
    if len(panels) > 1:
        fig.suptitle("parameters vs accuracy")
    key = [
        Line2D([], [], linestyle="none", marker="o", markersize=5, color="0.2", label="total stored"),
        Line2D([], [], linestyle="none", marker="o", markersize=9, markerfacecolor="none",
               markeredgecolor="0.2", label="active per response"),
    ] + _spread_key(Line2D([], [], color="0.2", linewidth=0.8, label=BAND_LABEL), usable)
    _legend(fig, usable, key)
    return fig


def _capability_table(sweep_dir: Path, rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """domains x capabilities: mean and sample s.d. (NaN for one job) over the jobs' explain.capability_scores
    (NaN where not scored)."""
    tables = []
    for job_dir in rows["job_dir"]:
        try:
            scores = read_metrics(sweep_dir / job_dir).get("explain", {}).get("capability_scores")
        except (OSError, ValueError):
            continue
        if scores:
            tables.append(pd.DataFrame(scores).T.astype(float))  # rows: domains, cols: capabilities
    if not tables:
        return None
    # Order of first appearance, not alphabetical: the world lists a domain's capabilities meaningfully.
    domains = list(dict.fromkeys(d for t in tables for d in t.index))
    caps = list(dict.fromkeys(c for t in tables for c in t.columns))
    stacked = np.stack([t.reindex(index=domains, columns=caps).to_numpy() for t in tables])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells stay NaN, which is what we want
        mean = np.nanmean(stacked, axis=0)
        sd = np.nanstd(stacked, axis=0, ddof=1) if len(tables) > 1 else np.full_like(mean, np.nan)
    return pd.DataFrame(mean, index=domains, columns=caps), pd.DataFrame(sd, index=domains, columns=caps)


def capability_figure(sweep_dir: Path, series: list[Series]) -> Figure | None:
    found = [(s, _capability_table(sweep_dir, s.rows)) for s in series]
    found = [(s, t) for s, t in found if t is not None]
    if not found:
        return None
    spread = {id(s): sd for s, (_, sd) in found}
    found = [(s, mean) for s, (mean, _) in found]
    n_caps = max(t.shape[1] for _, t in found)
    n_domains = max(t.shape[0] for _, t in found)
    fig = Figure(figsize=(1.8 + 0.62 * n_caps, (0.9 + 0.42 * n_domains) * len(found) + 0.6),
                 layout="constrained")
    axes = fig.subplots(len(found), 1, squeeze=False).ravel()
    values = np.concatenate([t.to_numpy().ravel() for _, t in found])
    vmin, vmax = np.nanmin(values), np.nanmax(values)
    if vmin < 0 < vmax:  # signed scores: diverging map centred on 0
        cmap, vmax = colormaps["RdBu_r"], max(abs(vmin), abs(vmax))
        vmin = -vmax
    else:
        cmap = colormaps["viridis"]
    cmap = cmap.with_extremes(bad="0.93")  # capabilities a domain does not have: light grey, unannotated
    for ax, (s, t) in zip(axes, found, strict=True):
        data = np.ma.masked_invalid(t.to_numpy())
        im = ax.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
        sd = spread[id(s)].to_numpy()
        for (r, c), v in np.ndenumerate(t.to_numpy()):
            if np.isfinite(v):
                rgb = cmap((v - vmin) / (vmax - vmin) if vmax > vmin else 0.5)[:3]
                dark = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] < 0.5
                # Several seeds: the cell's error bar is its s.d., printed under the mean.
                text = f"{v:.2f}" + (f"\n±{sd[r, c]:.2f}" if np.isfinite(sd[r, c]) else "")
                ax.text(c, r, text, ha="center", va="center", fontsize=7 if "\n" not in text else 6,
                        color="white" if dark else "black", linespacing=1.0)
        ax.set_xticks(range(t.shape[1]), [c.replace("_", " ") for c in t.columns], rotation=35, ha="right")
        ax.set_yticks(range(t.shape[0]), [d.replace("_", " ") for d in t.index])
        ax.grid(False)
        ax.tick_params(length=0)
        for side in ("top", "right", "bottom", "left"):
            ax.spines[side].set_visible(False)
        n = len(s.rows)
        ax.set_title(f"{s.label} capability scores ({s.panel + '; ' if s.panel else ''}"
                     f"mean{' ± s.d.' if n > 1 else ''} of {n} seed{'s' if n > 1 else ''})")
        ax.set_xlabel("capability point")
        ax.set_ylabel("domain")
    fig.colorbar(im, ax=list(axes), label="expert-alone accuracy on its capability point", shrink=0.9)
    return fig


# ------------------------------------------------------------------------------------------ driver


def make_figures(sweep_dir: str | os.PathLike) -> list[Path]:
    """Draw every figure the sweep's results support; returns the PNG and PDF paths written.

    Each figure is attempted even if another fails; failures are raised together at the end.
    """
    sweep_dir = Path(sweep_dir)
    summary_path = sweep_dir / SUMMARY_FILE
    if not summary_path.is_file():
        raise FileNotFoundError(f"{summary_path} not found; `python -m harness.aggregate DIR` writes it")
    summary = read_summary(summary_path)
    if "choices.arch" not in summary:
        summary["choices.arch"] = "?"
    ok = summary[summary["status"] == "ok"]
    ok_plus = _with_model_views(ok)
    colors = arch_colors(ok_plus["choices.arch"].fillna("?").astype(str).unique() if len(ok_plus) else [])
    series = _series(ok, colors)
    series_plus = _series(ok_plus, colors)
    out_dir = sweep_dir / FIGURES_DIR

    builders = {
        "bon": lambda: curves_figure(sweep_dir, series, "bon"),
        "ppo": lambda: curves_figure(sweep_dir, series, "ppo"),
        "bon_per_arch": lambda: curves_figure(sweep_dir, series, "bon", by_arch=True),
        "bon_pass_rate": lambda: pass_rate_figure(series),
        "ppo_per_arch": lambda: curves_figure(sweep_dir, series, "ppo", by_arch=True),
        "accuracy_per_domain": lambda: accuracy_figure(series_plus),
        "params_vs_accuracy": lambda: params_figure(series_plus),
        "capability_heatmap": lambda: capability_figure(sweep_dir, series),
    }
    paths, errors = [], []
    with matplotlib.rc_context(PAPER_RC):
        for name, build in builders.items():
            try:
                fig = build()
                if fig is not None:
                    paths += _save(fig, out_dir, name)
            except Exception as e:  # one broken figure must not cost the others
                log.exception("figure %s failed", name)
                errors.append(f"{name}: {type(e).__name__}: {e}")
    if errors:
        raise RuntimeError("some figures failed: " + "; ".join(errors))
    return paths
