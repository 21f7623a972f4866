"""report.html: written by the aggregation with every section, self-contained, and rendered by a real browser
(headless Chromium, Debian's package; .ci/run installs it, the test is skipped where it is missing)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_sweep

from harness import results
from harness.report import REPORT_FILE, aggregate, main, write_report

CHROMIUM = Path("/usr/bin/chromium")
# Seconds of page time Chromium grants before dumping: the data: URI images and the load handler need far less.
VIRTUAL_TIME_MS = 10_000


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = make_sweep(tmp_path_factory.mktemp("report") / "sweep", crashed=True)
    out = aggregate(root)  # summary, figures and the report, as at the end of a sweep
    assert out["report"] == root / REPORT_FILE
    return root


def _ok_archs(root: Path) -> list[str]:
    summary = results.read_summary(root / "summary.csv")
    return list(dict.fromkeys(summary.loc[summary["status"] == "ok", "choices.arch"]))


def test_report_has_one_result_row_per_arch_and_embeds_every_figure(sweep):
    page = (sweep / REPORT_FILE).read_text(encoding="utf-8")
    rows = re.findall(r'<tr class="result" data-arch="([^"]*)">', page)
    assert rows == _ok_archs(sweep)  # rodos only failed: not a result row
    # Self-contained: every PNG of figures/ inline, no file or network reference to load.
    pngs = sorted((sweep / "figures").glob("*.png"))
    assert page.count('src="data:image/png;base64,') == len(pngs) == 7
    assert not re.search(r'src="(?!data:)', page)
    # mean ± s.d. over seeds (single ran seeds 0 and 1), the failed jobs, the config and versions.
    summary = results.read_summary(sweep / "summary.csv")
    gold = summary[summary["choices.arch"] == "single"]["accuracy.gold.overall"]
    assert f"{gold.mean():.3f} ± {gold.std(ddof=1):.3f}" in page
    assert "CUDA out of memory" in page and "Failed jobs (2)" in page
    assert "multirun.yaml" in page and "torch" in page
    # The aggregation checked conf/claims.yaml (dmoerm and single ran on 2 seeds): its claims table is embedded.
    assert 'id="claims"' in page and "DMoERM is more accurate (gold) than a single RM" in page


def test_claims_rendered_when_present_and_markdown_html_escaped(sweep, tmp_path):
    root = shutil.copytree(sweep, tmp_path / "s")
    (root / "claims.md").write_text("# Claims\n\n| claim | CI |\n|---|---|\n| dmoerm > single | [0.05, 0.11] |\n"
                                    "\n<script>alert(1)</script>\n", encoding="utf-8")
    (root / "claims.csv").write_text("claim,diff,ci_low,ci_high\ndmoerm > single,0.08,0.05,0.11\n")
    page = write_report(root).read_text(encoding="utf-8")
    assert "Claims and confidence intervals" in page
    assert "<td>dmoerm &gt; single</td>" in page  # the markdown table, rendered
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert '<td class="num">0.110</td>' in page  # claims.csv as a table


def test_cli_writes_report_and_aggregates_when_needed(tmp_path, capsys):
    root = make_sweep(tmp_path / "fresh", archs=("single", "dmoerm"))
    assert main([str(root)]) == 0  # no summary.csv yet: the aggregation runs first (and writes the report)
    assert (root / "summary.csv").is_file() and (root / REPORT_FILE).is_file()
    (root / REPORT_FILE).unlink()
    assert main([str(root)]) == 0 and (root / REPORT_FILE).is_file()
    assert f"report: {root / REPORT_FILE}" in capsys.readouterr().out


def _chromium(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    # --no-sandbox: CI runs as root; a private profile dir so parallel runs never share a lock.
    return subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Debian's chromium (apt-get install chromium)")
def test_report_renders_in_headless_chromium(sweep, tmp_path):
    url = (sweep / REPORT_FILE).resolve().as_uri()
    dom = _chromium(f"--virtual-time-budget={VIRTUAL_TIME_MS}", "--dump-dom", url, tmp_path=tmp_path).stdout
    # The page's load handler marks the body once every image is complete with a non-zero natural width.
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:500]
    assert 'data-images="ok"' in body.group(0) and 'data-image-count="7"' in body.group(0)
    assert re.findall(r'<tr class="result" data-arch="([^"]*)">', dom) == _ok_archs(sweep)

    # And the check can fail: one image whose data does not decode marks the page broken.
    page = (sweep / REPORT_FILE).read_text(encoding="utf-8")
    broken = tmp_path / "broken.html"
    broken.write_text(re.sub(r"base64,[^\"]+", "base64,AAAA", page, count=1), encoding="utf-8")
    dom = _chromium(f"--virtual-time-budget={VIRTUAL_TIME_MS}", "--dump-dom", broken.as_uri(), tmp_path=tmp_path).stdout
    assert 'data-images="broken"' in dom

    shot = tmp_path / "report.png"
    _chromium("--hide-scrollbars", "--window-size=1280,2000", f"--screenshot={shot}", url, tmp_path=tmp_path)
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels[..., :3].std() > 0.05  # text, tables and figures: not a blank page


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
