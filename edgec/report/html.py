"""`edgec report`: bench reports as one self-contained HTML page, with plots people would rather see than read.

The page needs nothing at view time: plots are matplotlib PNGs inlined as base64 `data:` images, the
style sheet is inline, and it holds no script at all. A Content-Security-Policy meta tag forbids
scripts and every remote load besides, so even a browser that misread an escaped string could not
run one. Every string that comes from a report (model names, paths, warnings, output names: all of
them user-controlled) passes through `html.escape`.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgec.artifact import MANIFEST, strict_loads
from edgec.errors import EdgecError
from edgec.gating import GateResult
from edgec.report.types import BenchReport, LatencyStats, Manifest, Measurement, NodeCounts

__all__ = ["render_html"]

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1, h2, h3 { font-weight: 600; } table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; } td.num { text-align: right; }
td.pass { color: #17692f; font-weight: 600; } td.fail { color: #a11; font-weight: 600; }
img.plot { max-width: 100%; display: block; margin: 0.5em 0 1.5em; } .note { color: #555; }
"""
#: Most sensitive layers drawn.
_SENSITIVE = 20
#: Percentiles drawn as bars, as (label, LatencyStats attribute).
_BARS = (("p50", "p50"), ("p90", "p90"), ("p99", "p99"))


def _esc(value: Any) -> str:
    """A report's value as HTML text: None as a dash, floats to 6 significant digits, everything escaped."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return html.escape(f"{value:.6g}")
    if isinstance(value, (list, tuple)):
        return html.escape(", ".join(map(str, value)))
    return html.escape(str(value))


def _cell(value: Any, css: str | None = None) -> str:
    """One `<td>`: numbers right-aligned, `css` (pass/fail) when given."""
    css = css or ("num" if isinstance(value, (int, float)) and not isinstance(value, bool) else None)
    return f'<td class="{css}">{_esc(value)}</td>' if css else f"<td>{_esc(value)}</td>"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], classes: Sequence[str | None] = ()) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = []
    for index, row in enumerate(rows):
        css = classes[index] if index < len(classes) else None
        cells = [_cell(c) for c in row[:-1]] + [_cell(row[-1], css)]
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend; a clear error when the `report` extra is missing."""
    try:
        import matplotlib
    except ImportError:
        raise EdgecError("edgec report draws its plots with matplotlib: pip install 'edgec[report]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _image(figure: Any, alt: str) -> str:
    """The figure as an inline PNG `<img>`; the figure is closed."""
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    plt.close(figure)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="plot" alt="{html.escape(alt, quote=True)}" src="data:image/png;base64,{data}">'


def _sections(report: BenchReport) -> list[tuple[str, Measurement | BenchReport]]:
    """(label, section) of each model the report timed: the artifact, its baseline, the source in its framework."""
    found: list[tuple[str, Measurement | BenchReport]] = [("artifact", report)]
    found += [(label, section) for label, section in (("baseline", report.baseline), ("framework", report.framework_baseline))
              if section is not None]
    return found


def _runs(stats: LatencyStats | None) -> list[float]:
    samples = stats.samples if stats else None
    return [v for v in samples or [] if isinstance(v, (int, float)) and math.isfinite(v)]


def _distribution(name: str, report: BenchReport) -> str:
    """Histogram and CDF of every timed run of each model in one report; a note when it kept no raw runs."""
    series = [(label, _runs(section.latency_ms)) for label, section in _sections(report)]
    series = [(label, runs) for label, runs in series if runs]
    if not series:
        return '<p class="note">No raw latency runs in this report (written by an older edgec): no distribution to draw.</p>'
    plt = _pyplot()
    import numpy as np

    figure, (hist, cdf) = plt.subplots(1, 2, figsize=(11, 3.6))
    everything = np.concatenate([runs for _, runs in series])
    high = float(np.quantile(everything, 0.995))  # the far tail would squash the body of the histogram
    bins = np.linspace(float(everything.min()), high if high > everything.min() else float(everything.max()) + 1e-9, 60)
    for label, runs in series:
        values = np.sort(np.asarray(runs))
        hist.hist(np.clip(values, None, bins[-1]), bins=bins, alpha=0.55, label=f"{label} ({values.size} runs)")
        cdf.plot(values, np.arange(1, values.size + 1) / values.size, label=label)
    hist.set(xlabel="latency (ms), last bin holds the slowest 0.5%", ylabel="runs", title="distribution")
    cdf.set(xlabel="latency (ms)", ylabel="fraction of runs at or below", title="CDF", xscale="log")
    cdf.grid(alpha=0.3)
    hist.legend()
    cdf.legend()
    return _image(figure, f"latency histogram and CDF of {name}")


def _percentile_bars(names: Sequence[str], reports: Sequence[BenchReport]) -> str:
    """p50/p90/p99 of every timed model of every report, as grouped bars."""
    groups = [(f"{name}: {label}", section.latency_ms) for name, report in zip(names, reports)
              for label, section in _sections(report) if section.latency_ms is not None]
    if not groups:
        return ""
    plt = _pyplot()
    import numpy as np

    figure, axes = plt.subplots(figsize=(11, 0.9 + 0.45 * len(groups) * len(_BARS) / 2))
    positions = np.arange(len(groups))
    height = 0.8 / len(_BARS)
    for k, (label, attribute) in enumerate(_BARS):
        values = [getattr(stats, attribute) or 0.0 for _, stats in groups]
        axes.barh(positions + k * height, values, height, label=label)
    axes.set_yticks(positions + height * (len(_BARS) - 1) / 2, [label for label, _ in groups])
    axes.invert_yaxis()
    axes.set(xlabel="latency (ms)", title="latency percentiles")
    axes.legend()
    axes.grid(axis="x", alpha=0.3)
    return _image(figure, "p50, p90 and p99 latency of every model")


def _drift_plot(name: str, report: BenchReport) -> str:
    """1 - cosine (worst sample and mean) per output, on a log scale where small losses stay visible."""
    outputs = report.drift.outputs if report.drift else None
    rows = [(output, d.cosine_min, d.cosine_mean) for output, d in (outputs or {}).items()
            if d.cosine_min is not None and d.cosine_mean is not None]
    if not rows:
        return ""
    plt = _pyplot()
    import numpy as np

    figure, axes = plt.subplots(figsize=(11, 1.0 + 0.5 * len(rows)))
    positions = np.arange(len(rows))
    floor = 1e-9  # identical outputs: 1 - cosine is 0, which a log axis cannot show
    axes.barh(positions, [max(1 - low, floor) for _, low, _ in rows], 0.4, label="1 - cosine, worst sample")
    axes.barh(positions + 0.4, [max(1 - mean, floor) for _, _, mean in rows], 0.4, label="1 - cosine, mean")
    axes.set_yticks(positions + 0.2, [output for output, _, _ in rows])
    axes.invert_yaxis()
    axes.set(xscale="log", xlabel="1 - cosine to the float baseline (smaller is closer)", title="drift per output")
    axes.legend()
    return _image(figure, f"drift per output of {name}")


def _sample_drift_plot(name: str, report: BenchReport) -> str:
    """1 - cosine of every sample, one row of dots per output: whether drift is one broken sample or a broad tail.

    Reports written before per-sample cosines were recorded (`OutputDrift.cosines` absent) get no plot.
    """
    outputs = report.drift.outputs if report.drift else None
    rows = [(output, d.cosines) for output, d in (outputs or {}).items() if d.cosines]
    if not rows:
        return ""
    plt = _pyplot()
    import numpy as np

    figure, axes = plt.subplots(figsize=(11, 1.2 + 0.6 * len(rows)))
    rng = np.random.default_rng(0)  # vertical jitter only, so dots of equal cosines stay apart; seeded for one look
    floor = 1e-9  # identical outputs: 1 - cosine is 0, which a log axis cannot show
    for k, (_, cosines) in enumerate(rows):
        losses = np.maximum(1.0 - np.asarray(cosines, dtype=np.float64), floor)
        axes.scatter(losses, k + rng.uniform(-0.25, 0.25, losses.size), s=12, alpha=0.6)
        axes.plot([np.median(losses)] * 2, [k - 0.35, k + 0.35], color="black", linewidth=1.5)
    axes.set_yticks(np.arange(len(rows)), [f"{output} ({len(cosines)} samples)" for output, cosines in rows])
    axes.invert_yaxis()
    axes.set(xscale="log", xlabel="1 - cosine to the float baseline, per sample (bar: median)",
             title="drift per sample")
    axes.grid(axis="x", alpha=0.3)
    return _image(figure, f"drift of every sample per output of {name}")


def _artifact_section(report: BenchReport) -> str:
    """The compile behind the artifact, when its directory is on this machine: the passes with node counts, and
    the most sensitive quantized layers (`sensitivity.json`, written by `compile --report`)."""
    directory = Path(report.artifact).parent if report.artifact else None
    if directory is None or not (directory / MANIFEST).is_file():
        return ""
    try:
        manifest = Manifest.read(directory)
    except EdgecError as exc:
        return f'<p class="note">The manifest of the artifact cannot be read: {_esc(exc)}</p>'
    nodes = manifest.nodes or NodeCounts()
    parts = ["<h3>Compile</h3>",
             _table(["nodes", "source", "optimized", "artifact"], [["count", nodes.source, nodes.optimized, nodes.artifact]]),
             _table(["pass", "nodes before", "nodes after", "changed the graph", "seconds"],
                    [[p.name, p.nodes_before, p.nodes_after, "yes" if p.modified else "no", p.seconds]
                     for p in manifest.passes or []])]
    sensitivity = manifest.quantization.sensitivity if manifest.quantization else None
    if isinstance(sensitivity, str):
        parts.append(_sensitivity_plot(directory / sensitivity))
    return "\n".join(parts)


def _sensitivity_plot(path: Path) -> str:
    """SQNR of the model's outputs with only one layer quantized, for the `_SENSITIVE` worst layers."""
    try:
        layers = strict_loads(path.read_text(encoding="utf-8"))["layers"]
        rows = sorted(((f"{layer['node']} ({layer['op_type']}, {layer['scheme']})", float(layer["model_alone"]["sqnr_db"]))
                       for layer in layers), key=lambda row: row[1])[:_SENSITIVE]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f'<p class="note">{_esc(path.name)} cannot be read: {_esc(exc)}</p>'
    if not rows:
        return ""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(11, 1.0 + 0.32 * len(rows)))
    axes.barh(range(len(rows)), [min(sqnr, 200.0) for _, sqnr in rows], color="tab:red")
    axes.set_yticks(range(len(rows)), [label for label, _ in rows])
    axes.invert_yaxis()
    axes.set(xlabel="output SQNR (dB) with only this layer int8 (lower hurts more)",
             title=f"the {len(rows)} most sensitive layers")
    return "<h3>Per-layer sensitivity</h3>" + _image(figure, "per-layer sensitivity")


def _latency_rows(report: BenchReport) -> list[list[Any]]:
    rows = []
    for label, section in _sections(report):
        stats = section.latency_ms or LatencyStats()
        rows.append([label, stats.p50, stats.p90, stats.p99, stats.mean, stats.runs, section.throughput_per_s,
                     section.peak_rss_mb, (section.size_bytes or 0) / 2**20 if section.size_bytes is not None else None])
    return rows


def _report_section(name: str, report: BenchReport) -> str:
    model = report.artifact_model
    provenance = report.provenance
    host = report.host
    facts = [
        ("model", report.model_name), ("artifact", report.artifact), ("precision", model.precision if model else None),
        ("target", report.target), ("threads", report.threads), ("batch", report.batch), ("data", report.data),
        ("samples", report.samples), ("input shapes", report.input_shapes), ("created (UTC)", report.created_utc),
        ("speedup vs baseline (p50)", report.speedup_p50), ("schema", report.schema),
    ]
    if provenance:
        facts += [("artifact sha256", provenance.artifact_sha256), ("baseline sha256", provenance.baseline_sha256),
                  ("source sha256", provenance.source_sha256), ("edgec", provenance.edgec_version),
                  ("git describe", provenance.git_describe)]
    if host:
        facts += [("CPU", host.cpu_model), ("architecture", host.machine), ("int8 ISA", host.isa),
                  ("cores (usable)", f"{host.cpus} ({host.usable_cpus})"), ("system", host.system),
                  ("runtime versions", [f"{k} {v}" for k, v in (host.versions or {}).items()])]
    parts = [f"<h2>{_esc(name)}</h2>", _table(["fact", "value"], facts),
             "<h3>Latency (ms)</h3>",
             _table(["model", "p50", "p90", "p99", "mean", "runs", "throughput (/s)", "peak RSS (MiB)", "size (MiB)"],
                    _latency_rows(report)),
             _distribution(name, report)]
    drift = report.drift
    if drift:
        rows = [[output, d.cosine_min, d.cosine_mean, d.max_abs, d.sqnr_db] for output, d in (drift.outputs or {}).items()]
        parts += ["<h3>Drift against the float baseline</h3>",
                  _table(["output", "cosine min", "cosine mean", "max |diff|", "SQNR (dB)"], rows)]
        top1 = [("top-1 agreement", drift.top1_agreement), ("accuracy", drift.accuracy),
                ("baseline accuracy", drift.baseline_accuracy), ("accuracy drop (pp)", drift.accuracy_drop_pp)]
        shown = [(label, value) for label, value in top1 if value is not None]
        if shown:
            parts.append(_table(["figure", "value"], shown))
        parts += [_drift_plot(name, report), _sample_drift_plot(name, report)]
    parts.append(_artifact_section(report))
    if report.warnings:
        parts.append("<h3>Warnings</h3><ul>" + "".join(f"<li>{_esc(w)}</li>" for w in report.warnings) + "</ul>")
    return "\n".join(parts)


def _gate_section(title: str, result: GateResult) -> str:
    rows = [[check.name, check.message, "PASS" if check.passed else "FAIL"] for check in result.checks]
    verdict = "PASS" if result.passed else "FAIL"
    return (f"<h3>{_esc(title)}: {verdict}</h3>"
            + _table(["check", "verdict", "result"], rows, ["pass" if check.passed else "fail" for check in result.checks]))


def render_html(named_reports: Sequence[tuple[str, BenchReport]], *,
                gates: Sequence[tuple[str, GateResult]] = (), title: str = "edgec bench report") -> str:
    """The whole page: gate verdicts (if any), the percentile bars of every report, then one section per report.

    Args:
        named_reports: (name shown, report) pairs, in display order.
        gates: (heading, result) of gate runs to show first.
        title: The page's title and heading.
    """
    names = [name for name, _ in named_reports]
    reports = [report for _, report in named_reports]
    body = [f"<h1>{_esc(title)}</h1>"]
    if gates:
        body += ["<h2>Gate</h2>", *(_gate_section(heading, result) for heading, result in gates)]
    body += ["<h2>All models</h2>", _percentile_bars(names, reports)]
    body += [_report_section(name, report) for name, report in named_reports]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_CSP}\">"
            f"<title>{_esc(title)}</title><style>{_STYLE}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")
