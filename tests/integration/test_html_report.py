"""`edgec report`: one self-contained HTML page, rendered by a real headless Chromium (Debian's `chromium`).

The report's strings are user-controlled, so the fixture plants markup in a model name, a warning
and an output name: the browser's DOM must show them as text, hold no script element, and keep the
page's title (a script that ran would have changed it).
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="edgec report draws with matplotlib (install edgec[report] or edgec[test])")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium: apt-get install chromium"
                                    " (.ci/run does where it runs as root with apt)")
V1_REPORT = Path(__file__).parents[1] / "unit" / "data" / "bench-report-v1.json"
EVIL = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"


def _chromium(*args: str) -> str:
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    from edgec.cli import main

    root = tmp_path_factory.mktemp("html")
    report = json.loads(V1_REPORT.read_text())
    report["provenance"]["model"] = EVIL
    report["warnings"] = [EVIL]
    # Per-sample cosines (which the edgec that wrote the v1 fixture did not record) for one output of the new
    # report: it gets the per-sample plot, the old report (no cosines anywhere) renders without one.
    report["drift"]["outputs"][EVIL] = {**report["drift"]["outputs"]["y"], "cosines": [1.0, 0.999998, 0.99995, 0.9991, 0.98]}
    evil = root / "evil.json"
    evil.write_text(json.dumps(report))
    out = root / "report.html"
    assert main(["report", str(evil), "--against", str(V1_REPORT), "--gate", "-o", str(out)]) == 0
    return out


def test_every_report_string_is_escaped(page: Path) -> None:
    text = page.read_text()
    assert EVIL not in text and "<script" not in text and "onerror=\"" not in text
    assert html.escape(EVIL) in text
    assert "Content-Security-Policy" in text and "http://" not in text and "https://" not in text  # nothing fetched


@needs_chromium
def test_chromium_renders_tables_and_plots_and_runs_no_script(page: Path, tmp_path) -> None:
    dom = _chromium("--dump-dom", page.as_uri())
    assert "<title>edgec bench report</title>" in dom and "pwned" not in dom.split("</title>")[0]
    assert "<script" not in dom  # the planted tags stayed text
    assert len(re.findall(r"<table>", dom)) >= 8
    images = re.findall(r'<img class="plot" alt="[^"]*" src="data:image/png;base64,([^"]+)"', dom)
    # The percentile bars; histogram+CDF and drift of the old and the new report; per-sample drift of the new one.
    assert len(images) == 6
    assert 'alt="drift of every sample per output of ' in dom and dom.count('alt="drift of every sample') == 1
    assert len(re.findall(r"<img\b", dom)) == len(images)  # the planted <img onerror> is not an element
    assert "FAIL" not in dom and dom.count(">PASS<") == 3  # min_cosine; p50 and p90 against the old report
    from matplotlib import image

    for data in images:  # each plot holds drawn marks, not a blank canvas
        pixels = image.imread(io.BytesIO(base64.b64decode(data)), format="png")[..., :3]
        assert (pixels.min(axis=2) < 0.9).mean() > 0.02
    shot = tmp_path / "shot.png"
    _chromium(f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri())
    pixels = image.imread(shot)[..., :3]
    colour = pixels.max(axis=2) - pixels.min(axis=2)  # bars and curves are coloured; text and rules are grey
    assert (colour > 0.3).mean() > 0.005, "the screenshot shows no coloured plot marks"


@pytest.fixture(scope="module")
def int8_page(tmp_path_factory) -> Path:
    """An int8 compile with `--report` (sensitivity.json) of a 4 x (MatMul, Tanh) chain whose node names are markup."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgec.cli import main

    root = tmp_path_factory.mktemp("int8")
    rng = np.random.default_rng(0)
    nodes, weights, last = [], [], "x"
    for k in range(4):
        weights.append(numpy_helper.from_array(rng.normal(0, 0.3, (16, 16)).astype(np.float32), f"w{k}"))
        nodes += [helper.make_node("MatMul", [last, f"w{k}"], [f"m{k}"], name=f"<i>mm{k}</i>"),
                  helper.make_node("Tanh", [f"m{k}"], [f"t{k}"])]
        last = f"t{k}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info(last, TensorProto.FLOAT, [1, 16])], weights)
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), root / "chain.onnx")
    np.savez(root / "calib.npz", x=rng.normal(size=(32, 1, 16)).astype(np.float32))
    assert main(["compile", str(root / "chain.onnx"), "-t", "cpu-x86-int8", "--calib", str(root / "calib.npz"),
                 "--report", "-o", str(root / "art"), "--quiet"]) == 0
    out = root / "page.html"
    assert main(["bench", str(root / "art"), "--runs", "20", "--threads", "1", "--quiet", "--html", str(out)]) == 0
    return out


@needs_chromium
def test_chromium_shows_the_pass_table_and_sensitivity_bars(int8_page: Path) -> None:
    dom = _chromium("--dump-dom", int8_page.as_uri())
    assert "<h3>Compile</h3>" in dom and "<td>fold_constants</td>" in dom and "<h3>Per-layer sensitivity</h3>" in dom
    # bars, latency, drift per output, drift per sample (a fresh bench records every sample's cosine), sensitivity
    assert len(re.findall(r'<img class="plot" [^>]*src="data:image/png;base64,', dom)) == 5
    assert "<i>" not in dom
