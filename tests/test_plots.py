"""Figures from fake sweeps (conftest's make_sweep): written, reproducible, plotting the right numbers."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import make_sweep
from matplotlib.colors import to_rgb
from matplotlib.container import BarContainer

from harness import plots, results
from harness.report import aggregate

ALL_FIGURES = ("bon", "ppo", "bon_per_arch", "ppo_per_arch", "accuracy_per_domain", "params_vs_accuracy",
               "capability_heatmap")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = make_sweep(tmp_path_factory.mktemp("plots") / "sweep", crashed=True)
    aggregate(root, figures=False)
    return root


def _figures(root):
    return sorted(p.name for p in (root / "figures").iterdir())


@pytest.fixture(scope="module")
def rendered(sweep):
    """The figures of the fake sweep, rendered once for the tests that only read them."""
    return plots.make_figures(sweep)


def test_every_figure_written_as_png_and_pdf(sweep, rendered):
    paths = rendered
    assert sorted(p.name for p in paths) == sorted(f"{n}.{e}" for n in ALL_FIGURES for e in ("png", "pdf"))
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" if p.suffix == ".png" else data[:5] == b"%PDF-"
        assert len(data) > 5000, p
    assert _figures(sweep) == sorted(p.name for p in paths)  # and no temp files left behind


def test_renders_are_byte_identical(sweep, rendered, tmp_path):
    # A copy at another path, rendered again: neither timestamps nor paths may leak into the files.
    copy = shutil.copytree(sweep, tmp_path / "elsewhere")
    shutil.rmtree(copy / "figures", ignore_errors=True)
    a = {p.name: p.read_bytes() for p in rendered}
    b = {p.name: p.read_bytes() for p in plots.make_figures(copy)}
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], name


def test_curve_figures_skipped_without_curves(tmp_path):
    root = make_sweep(tmp_path / "s", archs=("single", "ens_mean"))
    for p in root.rglob("curves.csv"):
        p.unlink()
    aggregate(root)
    assert _figures(root) == sorted(f"{n}.{e}" for n in ("accuracy_per_domain", "params_vs_accuracy")
                                    for e in ("png", "pdf"))


def test_bon_points_are_seed_means_with_error_bars_and_the_fit_a_line(sweep):
    summary = results.read_summary(sweep / "summary.csv")
    ok = summary[summary["status"] == "ok"]
    series = plots._series(ok, plots.arch_colors(ok["choices.arch"].unique()))
    single = [s for s in series if s.arch == "single"]
    assert len(single) == 1 and len(single[0].rows) == 2  # two seeds pooled into one series
    fig = plots.curves_figure(sweep, single, "bon")
    ax = fig.axes[0]
    curves = [results.read_curves(sweep / j) for j in single[0].rows["job_dir"]]
    bon = [c[c["opt"] == "bon"].sort_values("n") for c in curves]
    mean = {col: (bon[0][col].to_numpy() + bon[1][col].to_numpy()) / 2 for col in ("gold", "proxy")}
    sd = np.abs(bon[0]["gold"].to_numpy() - bon[1]["gold"].to_numpy()) / np.sqrt(2)  # s.d. of two values
    # Gold: the measured points (markers, no line) with their error bars over the seeds.
    (gold_bars,) = ax.containers
    gold_points = gold_bars.lines[0]
    assert gold_points.get_linestyle() == "None" and gold_points.get_marker() == "o"
    np.testing.assert_allclose(gold_points.get_ydata(), mean["gold"])
    (bar_segments,) = gold_bars.lines[2]
    np.testing.assert_allclose([seg[1, 1] - seg[0, 1] for seg in bar_segments.get_segments()], 2 * sd, atol=1e-12)
    # Proxy dashed; the fit a solid line of its own, in the arch's colour, beside the points.
    (proxy_line,) = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    np.testing.assert_allclose(proxy_line.get_ydata(), mean["proxy"])
    (fit_line,) = [ln for ln in ax.lines if ln.get_linestyle() == "-" and len(ln.get_xdata()) == 200]
    alpha, beta = single[0].rows["bon.alpha"].mean(), single[0].rows["bon.beta"].mean()
    d = fit_line.get_xdata()
    np.testing.assert_allclose(fit_line.get_ydata(), d * (alpha - beta * d))
    assert to_rgb(fit_line.get_color()) == to_rgb(gold_points.get_color()) == plots.arch_colors(["single"])["single"]


def test_common_sqrt_kl_marked_poor_fits_dotted_and_in_range_peaks_starred(sweep):
    summary = results.read_summary(sweep / "summary.csv")
    ok = summary[(summary["status"] == "ok") & (summary["choices.arch"] == "single")]
    [series] = plots._series(ok, plots.arch_colors(["single"]))
    rows = series.rows.assign(**{"bon.common_sqrt_kl": 1.5, "bon.units.gold.scale_kind": "within_prompt"})
    ax = plots.curves_figure(sweep, [plots.replace(series, rows=rows)], "bon").axes[0]
    [vline] = [ln for ln in ax.lines if list(ln.get_xdata()) == [1.5, 1.5]]  # where final gap / AUC are read
    assert "within-prompt" in ax.get_ylabel()
    [fit] = [ln for ln in ax.lines if len(ln.get_xdata()) == 200]
    assert fit.get_linestyle() == "-"
    alpha, beta = rows["bon.alpha"].mean(), rows["bon.beta"].mean()
    assert alpha / (2 * beta) < fit.get_xdata().max()  # the fake fit peaks inside the data: starred there
    [star] = [ln for ln in ax.lines if ln.get_marker() == "*"]
    assert star.get_xdata()[0] == pytest.approx(alpha / (2 * beta))
    poor = rows.assign(**{"bon.r2": 0.1})
    ax = plots.curves_figure(sweep, [plots.replace(series, rows=poor)], "bon").axes[0]
    [fit] = [ln for ln in ax.lines if len(ln.get_xdata()) == 200]
    assert fit.get_linestyle() == ":" and not [ln for ln in ax.lines if ln.get_marker() == "*"]
    assert "0 = its mean" in ax.get_ylabel()


def test_one_seed_has_no_error_bars(sweep):
    summary = results.read_summary(sweep / "summary.csv")
    ok = summary[(summary["status"] == "ok") & (summary["choices.arch"] == "more")]  # its seed 1 failed
    series = plots._series(ok, plots.arch_colors(["more"]))
    assert len(series[0].rows) == 1
    ax = plots.curves_figure(sweep, series, "bon").axes[0]
    assert not ax.containers[0].has_yerr
    acc = plots.accuracy_figure(series).axes[0]
    assert [c.errorbar for c in acc.containers if isinstance(c, BarContainer)] == [None]


def test_accuracy_bars_have_error_bars_and_a_marked_broken_axis(sweep):
    summary = results.read_summary(sweep / "summary.csv")
    ok = summary[(summary["status"] == "ok") & summary["choices.arch"].isin(["single", "dmoerm"])]
    series = plots._series(ok, plots.arch_colors(ok["choices.arch"].unique()))
    fig = plots.accuracy_figure(series)
    for ax in fig.axes[:2]:  # gold and human panels
        bottom = ax.get_ylim()[0]
        # Bars either start at 0, or the axis is marked broken and its label says where it starts.
        assert bottom == 0 or ([ln for ln in ax.lines if ln.get_gid() == plots.BROKEN_AXIS_GID]
                               and f"starts at {bottom:g}" in ax.get_ylabel())
        bars = [c for c in ax.containers if isinstance(c, BarContainer)]
        assert len(bars) == 2 and all(c.errorbar is not None and c.errorbar.has_yerr for c in bars)


def test_params_figure_marks_total_and_active(sweep):
    summary = results.read_summary(sweep / "summary.csv")
    ok = plots._with_model_views(summary[summary["status"] == "ok"])
    assert "umm:unmerged" in set(ok["choices.arch"])  # the view with params of its own, as a series
    unmerged = ok[ok["choices.arch"] == "umm:unmerged"]
    assert (unmerged["params.total"] == 520_000).all() and unmerged["bon.alpha"].isna().all()
    series = plots._series(ok, plots.arch_colors(ok["choices.arch"].unique()))
    dmoerm = [s for s in series if s.arch == "dmoerm"]
    fig = plots.params_figure(dmoerm)
    xs = sorted(float(x) for line in fig.axes[0].lines for x in np.atleast_1d(line.get_xdata()))
    assert min(xs) == 410_000 and max(xs) == 1_420_000  # active and total of the fake dmoerm
    assert fig.axes[0].get_xscale() == "log"


def test_colors_fixed_per_arch_whatever_the_sweep():
    a = plots.arch_colors(["umm", "single", "zeta", "alpha", "umm:unmerged"])
    b = plots.arch_colors(["single"])
    assert a["single"] == b["single"]
    assert len({a[k] for k in a}) == 5
    # the shipped archs are the arch config group; each keeps its place in it
    assert "single" in plots.shipped_archs() and "zeta" not in plots.shipped_archs()
    assert plots.arch_order(["zeta", "umm:unmerged", "umm", "alpha", "single"]) == [
        "single", "umm", "umm:unmerged", "alpha", "zeta"]


def test_nested_arch_choice_makes_series_not_panels(sweep):
    summary = results.read_summary(sweep / "summary.csv")
    ok = summary[summary["status"] == "ok"]
    assert plots._panel_columns(ok) == []  # arch/labeler is set for dmoerm only: not a panel
    varied = ok.copy()
    varied.loc[varied["choices.arch"] == "dmoerm", "choices.arch/labeler"] = ["oracle", "local"]
    labels = {s.label for s in plots._series(varied, plots.arch_colors(varied["choices.arch"].unique()))}
    assert {"dmoerm (labeler=local)", "dmoerm (labeler=oracle)", "single"} <= labels


def test_suite_parts_in_one_directory_are_separate_series(sweep):
    # The paper suite's parts (paper, paper_kl, paper_noisy) share a directory: one arch's jobs of two parts are
    # two settings, never pooled as if they were more seeds.
    summary = results.read_summary(sweep / "summary.csv")
    ok = summary[summary["status"] == "ok"].copy()
    ok["choices.suite"] = ["paper" if i % 2 else "paper_kl" for i in range(len(ok))]
    series = plots._series(ok, plots.arch_colors(ok["choices.arch"].unique()))
    single = {s.label: len(s.rows) for s in series if s.arch == "single"}
    assert set(single) == {"single (suite=paper)", "single (suite=paper_kl)"}
    assert sum(single.values()) == int((ok["choices.arch"] == "single").sum())


def test_panels_for_varied_choices_and_series_for_varied_overrides(tmp_path):
    root = make_sweep(tmp_path / "s", archs=("single", "dmoerm"))
    for i, p in enumerate(sorted(root.rglob("metrics.json"))):
        m = results.read_metrics(p.parent)
        m["choices"]["backbone"] = "tiny" if i % 2 else "smollm2"  # panel per backbone
        m["overrides"].append(f"arch.lr={1e-3 if i < 2 else 1e-4}")  # single's 2 jobs: one per lr
        results.write_metrics(p.parent, m)
    aggregate(root, figures=False)
    summary = results.read_summary(root / "summary.csv")
    series = plots._series(summary, plots.arch_colors(summary["choices.arch"].unique()))
    assert sorted({s.panel for s in series}) == ["backbone=smollm2", "backbone=tiny"]
    assert {s.label for s in series} == {"single (arch.lr=0.001)", "dmoerm (arch.lr=0.0001)"}
    assert all(len(s.rows) == 1 for s in series)
    paths = plots.make_figures(root)
    per_arch = {"bon_per_arch", "ppo_per_arch"}  # two archs: no small multiples
    assert sorted(p.name for p in paths) == sorted(f"{n}.{e}" for n in ALL_FIGURES if n not in per_arch
                                                   for e in ("png", "pdf"))


def test_broken_figure_does_not_stop_the_others(tmp_path):
    root = make_sweep(tmp_path / "s", archs=("single", "dmoerm"))
    (root / "0" / "curves.csv").write_text("opt,n\nbon,1\n")  # a curves.csv without its columns
    aggregate(root, figures=False)
    with pytest.raises(RuntimeError, match="bon"):
        plots.make_figures(root)
    assert "accuracy_per_domain.png" in _figures(root) and "capability_heatmap.pdf" in _figures(root)


def test_make_figures_needs_summary(tmp_path):
    with pytest.raises(FileNotFoundError, match="summary.csv"):
        plots.make_figures(tmp_path)


def test_per_arch_small_multiples_one_panel_per_arch_in_arch_order(sweep):
    summary = results.read_summary(sweep / "summary.csv")
    ok = summary[summary["status"] == "ok"]
    series = plots._series(ok, plots.arch_colors(ok["choices.arch"].unique()))
    fig = plots.curves_figure(sweep, series, "ppo", by_arch=True)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == [s.label for s in series] == plots.arch_order(ok["choices.arch"])
    for ax, s in zip(axes, series, strict=True):  # each panel holds its own arch only: gold, proxy, fit
        assert {to_rgb(line.get_color()) for line in ax.lines if line.get_color() != "0.6"} == {s.color}
    # Too few archs for small multiples: the one-panel figure says it all.
    assert plots.curves_figure(sweep, series[:3], "ppo", by_arch=True) is None


def test_every_shipped_arch_has_its_own_colour():
    # Eleven shipped archs outgrew tab10: the eleventh used to take the first one's colour.
    shipped = plots.shipped_archs()
    assert len(shipped) > 10 and len(set(plots.arch_colors(shipped).values())) == len(shipped)


def test_pass_rate_figure_plots_seed_means_of_the_picks_pass_rate(sweep):
    summary = results.read_summary(sweep / "summary.csv")
    ok = summary[summary["status"] == "ok"].copy()
    assert plots.pass_rate_figure(plots._series(ok, plots.arch_colors(ok["choices.arch"].unique()))) is None
    rng = np.random.default_rng(0)
    for n in (1, 2, 4, 8):  # gold=verifier's columns (harness/optimize/study.py pass_rate_curve)
        ok[f"bon.pass_rate.at_n.{n}"] = 0.3 - 0.01 * n + 0.01 * rng.random(len(ok))
    ok["bon.pass_rate.initial"] = 0.3
    single = ok[ok["choices.arch"] == "single"]
    series = plots._series(single, plots.arch_colors(["single"]))
    ax = plots.pass_rate_figure(series).axes[0]
    line = ax.lines[0]
    expected = [single[f"bon.pass_rate.at_n.{n}"].mean() for n in (1, 2, 4, 8)]
    assert list(line.get_xdata()) == [1, 2, 4, 8] and np.allclose(line.get_ydata(), expected)
    assert ax.get_xscale() == "log" and ax.lines[-1].get_ydata()[0] == 0.3  # the initial policy's line
