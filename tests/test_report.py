"""The HTML report: self-contained, escaped, and drawn without errors by a real browser.

The browser check opens the report in headless Chromium (Debian's ``chromium``; installed here
with apt-get when missing and we are root, else the test skips saying why). A probe script is
injected at the top of <head>, before plotly.js, so it sees everything: it records
``console.error`` calls, uncaught errors and failed resource loads (capture-phase ``error``
events), rejected promises and ``alert`` calls; after the load event it measures every figure
(size, number of plotly SVG layers) and lists the resources the page fetched, and writes that
verdict as JSON into the DOM. ``--dump-dom`` after a virtual-time budget prints the DOM, and the
test reads the verdict back. Chromium also logs console messages to stderr (``CONSOLE``), which
the test checks for uncaught errors as a second witness. A screenshot is saved with
``--screenshot``. Network: all host names resolve to nothing (``--host-resolver-rules``), so a
report that needed the network would fail visibly.

Run on any report by hand: ``python tests/test_report.py REPORT.html [SCREENSHOT.png]``.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for the __main__ use below; pytest does this itself
from conftest import cli_in_process  # noqa: E402

PROBE_JS = r"""
window.__errors = [];
(function () {
  var orig = console.error;
  console.error = function () {
    window.__errors.push("console.error: " + Array.prototype.map.call(arguments, String).join(" "));
    return orig.apply(console, arguments);
  };
  window.alert = function (m) { window.__errors.push("alert called: " + m); };
  window.addEventListener("error", function (e) {
    var what = e.message || (e.target && (e.target.src || e.target.href)) || e.type;
    window.__errors.push("error: " + what);
  }, true);
  window.addEventListener("unhandledrejection", function (e) { window.__errors.push("unhandledrejection: " + e.reason); });
  window.addEventListener("load", function () {
    setTimeout(function () {
      var figs = Array.prototype.map.call(document.querySelectorAll("div.figure"), function (d) {
        var r = d.getBoundingClientRect();
        return {id: d.id, title: d.getAttribute("data-title"), width: r.width, height: r.height,
                svgs: d.querySelectorAll("svg.main-svg").length, drawn: !!d._fullLayout};
      });
      var res = performance.getEntriesByType("resource").map(function (e) { return e.name; });
      var pre = document.createElement("pre");
      pre.id = "__verdict";
      pre.textContent = JSON.stringify({errors: window.__errors, figures: figs, resources: res,
                                        failed: document.querySelectorAll("div.error").length,
                                        title: document.title});
      document.body.appendChild(pre);
    }, 1000);
  });
})();
"""

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


def ensure_chromium() -> str:
    """Path of a Chromium binary, installing Debian's package when missing (root + apt-get only)."""
    path = find_chromium()
    if path:
        return path
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("chromium is not installed and this test may only install it as root (apt-get install chromium)")
    if not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and there is no apt-get to install it with")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            pytest.skip(f"could not install chromium ({' '.join(cmd)}: {e})")
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["?"]
            pytest.skip(f"could not install chromium ({' '.join(cmd)} exited {r.returncode}: {tail[0]})")
    path = find_chromium()
    if not path:
        pytest.skip("apt-get install chromium succeeded but no chromium binary is on PATH")
    return path


def check_in_browser(
    report: Path, screenshot: Path | None = None, chromium: str | None = None, budget_ms: int = 20_000
) -> dict:
    """Open ``report`` in headless Chromium; returns the probe's verdict (+ ``console`` lines from stderr)."""
    chromium = chromium or find_chromium()
    if not chromium:
        raise RuntimeError("no chromium on PATH")
    work = Path(tempfile.mkdtemp(prefix="interp-browser-"))
    try:
        page = work / "page.html"
        text = Path(report).read_text(encoding="utf-8")
        assert text.count("<head>") == 1
        page.write_text(text.replace("<head>", "<head>\n<script>" + PROBE_JS + "</script>", 1), encoding="utf-8")
        common = [chromium, *CHROMIUM_FLAGS, f"--virtual-time-budget={budget_ms}", "--window-size=1400,4000"]
        r = subprocess.run(
            [
                *common,
                f"--user-data-dir={work / 'profile1'}",
                "--enable-logging=stderr",
                "--v=0",
                "--dump-dom",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        m = re.search(r'<pre id="__verdict">(.*?)</pre>', r.stdout, re.S)
        if not m:
            raise AssertionError(
                f"no verdict in the dumped DOM (chromium exit {r.returncode}); stderr tail:\n"
                + "\n".join(r.stderr.splitlines()[-15:])
            )
        verdict = json.loads(html.unescape(m.group(1)))
        verdict["console"] = [ln for ln in r.stderr.splitlines() if ":CONSOLE" in ln]
        if screenshot is not None:
            screenshot = Path(screenshot)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [
                    *common,
                    f"--user-data-dir={work / 'profile2'}",
                    f"--screenshot={screenshot}",
                    Path(report).resolve().as_uri(),
                ],
                capture_output=True,
                text=True,
                timeout=300,
            )
            verdict["screenshot"] = str(screenshot) if screenshot.exists() else None
        return verdict
    finally:
        shutil.rmtree(work, ignore_errors=True)


def assert_clean(verdict: dict, n_figures: int) -> None:
    assert verdict["errors"] == [], verdict["errors"]
    assert not [c for c in verdict["console"] if "Uncaught" in c or "Error" in c], verdict["console"]
    assert verdict["failed"] == 0
    assert [r for r in verdict["resources"] if not r.startswith(("file:", "data:", "blob:"))] == []
    figs = verdict["figures"]
    assert len(figs) == n_figures
    for f in figs:
        assert f["drawn"] and f["width"] > 0 and f["height"] > 0 and f["svgs"] >= 1, f


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def report(quick_run, tmp_path_factory):
    from interp.viz.report import write_report

    out = tmp_path_factory.mktemp("report") / "report.html"
    return write_report(quick_run, out)


@pytest.fixture(scope="module")
def evil_run(quick_run, tmp_path_factory):
    """A copy of the quick run whose directory and notes try to break out of the HTML and the scripts
    (run names are plain file names, checked by the config; the config hash leaves out the notes, so
    the checkpoints stay valid)."""
    from interp.store import Run

    dst = tmp_path_factory.mktemp("evil") / "<img src=x onerror=alert(1)>"
    shutil.copytree(quick_run.path, dst, ignore=shutil.ignore_patterns(".lock", "report.html"))
    cfg_path = dst / "config.json"
    body = json.loads(cfg_path.read_text())
    body["config"]["notes"] = "</script><script>alert(2)</script><img src=x onerror=alert(3)> & \u2028"
    cfg_path.write_text(json.dumps(body))
    return Run.open(dst)


# ----------------------------------------------------------------------------- tests


def test_report_is_self_contained(report):
    import plotly

    text = report.read_text(encoding="utf-8")
    assert report.stat().st_size < 20e6
    # plotly.js exactly once, inline; nothing fetched from anywhere
    assert text.count(f"plotly.js {plotly.__version__}, embedded") == 1
    assert len(re.findall(r"<script[^>]*\ssrc=", text)) == 0
    assert not re.search(r"<link[^>]+href=", text)
    # the summary carries the numbers a researcher looks for first
    for want in ("T_mem", "T_grok", "circuit formation", "cleanup", "key frequencies", "weight_decay"):
        assert want in text
    assert text.count('class="figure"') >= 15
    assert 'data-title="Representation Quality Index over training"' in text
    assert "Heavy-tailed spectra" not in text  # the quick run was analysed without spectra


def test_report_draws_rqi_and_spectra_when_the_table_has_them(tmp_path):
    from conftest import tiny_config

    from interp.analysis.run_table import analyze
    from interp.training.loop import train
    from interp.viz import training as tr
    from interp.viz.report import build_run_sections

    run = train(tiny_config(d_model=32, d_mlp=64), tmp_path / "tiny", progress=False)
    table, s = analyze(run, progress=False, spectra=True)
    sections, _ = build_run_sections(run)
    figs = {f.title: f for sec in sections for f in sec.figures}
    rqi, spec = figs["Representation Quality Index over training"], figs["Heavy-tailed spectra of the weight matrices"]
    assert spec.figure is not None, spec.error
    names = {t.name for t in spec.figure.data}
    assert {"W_E", "W_in", "W_out", "W_Q"} <= names
    assert any(sh.line.dash == "dot" and sh.y0 == 2.0 for sh in spec.figure.layout.shapes)  # alpha = 2 marked
    if rqi.figure is not None:  # a tiny run may have no key frequencies; then the note says why
        assert rqi.figure.data[0].name.startswith("RQI")
    else:
        assert "no key frequencies" in rqi.error
    # the figures on their own: phases marked like the other progress plots, no RQI without planes
    fig = tr.representation_quality(table.assign(rqi=0.5), s.phases, "tiny")
    assert any(sh.type == "line" for sh in fig.layout.shapes) == (s.phases.t_mem is not None)
    with pytest.raises(tr.EmptyFigure):
        tr.representation_quality(table.assign(rqi=float("nan")))


def test_user_strings_are_escaped(evil_run, tmp_path):
    from interp.viz.report import write_comparison_report, write_report

    out = write_report(evil_run, tmp_path / "evil.html")
    text = out.read_text(encoding="utf-8")
    for raw in ("alert(2)</script>", "<img src=x"):
        assert raw not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text  # the directory shows, as text
    assert "&lt;/script&gt;&lt;script&gt;alert(2)" in text
    # every <script> element is one of ours: plotly.js, the draw helper, one per figure
    n_fig = text.count('class="figure"')
    assert text.count("<script") == 2 + n_fig and text.count("</script>") == 2 + n_fig
    cmp = write_comparison_report(f"{evil_run.path}@T_mem", str(evil_run.path), tmp_path / "evil_cmp.html")
    ctext = cmp.read_text(encoding="utf-8")
    assert "<img src=x" not in ctext and "&lt;img src=x onerror=alert(1)&gt;" in ctext
    if find_chromium():
        v = check_in_browser(out)
        assert_clean(v, n_fig)


def test_report_reads_stored_analysis_and_loads_no_model(quick_run, tmp_path, monkeypatch):
    """One-way data path: once analysed, the report reads tables and stored results only; a stale
    analysis (a new checkpoint) is brought up to date by the analysis first, not by the report."""
    from interp.analysis.results import ANALYSIS_FILES, CKA_FILE
    from interp.analysis.run_table import analyze
    from interp.store import Run, save_checkpoint
    from interp.viz.report import write_report

    dst = tmp_path / "run"
    shutil.copytree(quick_run.path, dst, ignore=shutil.ignore_patterns(".lock", "report.html", *ANALYSIS_FILES))
    run = Run.open(dst)
    analyze(run, progress=False)
    loads = []
    orig = Run.load_state_dict
    monkeypatch.setattr(Run, "load_state_dict", lambda self, e: loads.append(e) or orig(self, e))
    write_report(run, tmp_path / "r.html")
    assert loads == []
    # a new checkpoint makes the stored results stale: the analysis (not the report) recomputes them
    last = run.checkpoint_epochs()[-1]
    save_checkpoint(dst, last + 25, run.load_model(last), run.config)
    loads.clear()
    before = (dst / CKA_FILE).stat().st_mtime_ns
    write_report(run, tmp_path / "r2.html")
    assert loads and (dst / CKA_FILE).stat().st_mtime_ns != before
    assert f"epoch {last + 25}" in (tmp_path / "r2.html").read_text(encoding="utf-8")


def test_report_in_headless_chromium(report, tmp_path):
    chromium = ensure_chromium()
    shot = Path(os.environ.get("INTERP_SCREENSHOT_DIR", tmp_path)) / "report.png"
    v = check_in_browser(report, shot, chromium)
    assert_clean(v, report.read_text(encoding="utf-8").count('class="figure"'))
    assert v["screenshot"] and Path(v["screenshot"]).stat().st_size > 10_000
    print(f"screenshot: {v['screenshot']}")


def test_cli_report(quick_run, tmp_path):
    out = tmp_path / "cmp.html"
    r = cli_in_process("report", f"{quick_run.path}@T_mem", str(quick_run.path), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert f"report written to {out}" in r.stdout and re.search(r"\((\d+(\.\d)?) (MB|kB)\)", r.stdout)
    assert out.exists() and "T_mem" in out.read_text(encoding="utf-8")


def test_cli_report_bad_input(tmp_path):
    for args, msg in (
        (["report", str(tmp_path / "nope")], "does not exist"),
        (["report", "a", "b", "c"], "one run or two checkpoints"),
    ):
        r = cli_in_process(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith("interp: error:") and msg in r.stderr and r.stderr.count("\n") == 1


if __name__ == "__main__":  # check any report by hand
    if len(sys.argv) < 2:
        sys.exit("usage: python tests/test_report.py REPORT.html [SCREENSHOT.png]")
    rep = Path(sys.argv[1])
    res = check_in_browser(rep, Path(sys.argv[2]) if len(sys.argv) > 2 else None)
    figs = res.pop("figures")
    print(json.dumps(res, indent=2))
    for f in figs:
        print(
            f"{f['id']:>6} {f['width']:>5.0f} x {f['height']:<5.0f} svgs {f['svgs']} drawn {f['drawn']}  {f['title']}"
        )
    print(f"{len(figs)} figures, {len(res['errors'])} errors, {rep.stat().st_size / 1e6:.1f} MB")


def test_failed_report_leaves_the_stored_analysis_as_it_was(quick_run, tmp_path):
    """An output that cannot be written is refused before the analysis runs (issue 15 item 5)."""
    from interp.analysis.results import ANALYSIS_FILES

    dst = tmp_path / "run"
    shutil.copytree(quick_run.path, dst, ignore=shutil.ignore_patterns(".lock", "report.html", *ANALYSIS_FILES))
    before = sorted(p.name for p in dst.iterdir())
    for bad in (dst / "metrics.csv" / "r.html", dst / "checkpoints"):  # under a file; a directory
        r = cli_in_process("report", str(dst), "-o", str(bad))
        assert r.returncode == 2 and r.stderr.startswith("interp: error: cannot write"), r.stderr
    assert sorted(p.name for p in dst.iterdir()) == before  # no analysis.json / analysis.csv written
