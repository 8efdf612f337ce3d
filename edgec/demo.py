"""`edgec demo`: the embedded default job on real data, with no user files.

Trains a small CNN on scikit-learn's bundled 8x8 digits (1,797 real handwritten digits), exports it to
ONNX, compiles it for the host's int8 CPU target with held-out calibration samples, benchmarks it
against the float model on the held-out test split and gates the release. The trained model is
cached, so later runs skip training. Needs the `demo` extra (scikit-learn, torch).

The compile runs with precision "auto": int8 is kept only where it is measurably faster than fp32 on
this host. A 90k-parameter CNN runs in tens of microseconds, mostly fixed per-call cost, and int8's
(de)quantization often costs more than it saves there; the demo then ships the float model and says
why, instead of passing a release gate with an artifact slower than its source.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import BadInputError
from edgec.report.types import AutoPrecision, Manifest

__all__ = ["DigitsData", "DemoResult", "digits_data", "digits_cnn_onnx", "host_int8_target", "run_demo", "DEMO_POLICY",
           "default_workdir"]

#: Bump when the architecture or training recipe changes, so stale cached models are not reused.
MODEL_VERSION = "digits-cnn-v1"
SEED = 0
INPUT_NAME, OUTPUT_NAME = "pixels", "logits"
#: Release policy of the demo: the int8 model must agree with the float one and keep its accuracy.
DEMO_POLICY = {"max_accuracy_drop_pp": 1.0, "min_top1_agreement": 0.98, "min_cosine": 0.98}

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DigitsData:
    """Stratified split of sklearn's digits: images (N, 1, 8, 8) float32 in [0, 1], labels int64."""

    train: tuple[np.ndarray, np.ndarray]
    calib: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError as exc:
        raise BadInputError(f"the demo needs {module}: pip install 'edgec[demo]'") from exc


def digits_data(seed: int = SEED) -> DigitsData:
    """60% train, 10% calibration, 30% test; the calibration and test samples are never trained on."""
    _require("sklearn")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(images, labels, test_size=0.3, stratify=labels, random_state=seed)
    x_train, x_calib, y_train, y_calib = train_test_split(x_rest, y_rest, test_size=1 / 7, stratify=y_rest, random_state=seed)
    return DigitsData((x_train, y_train), (x_calib, y_calib), (x_test, y_test))


def _train(data: DigitsData, epochs: int = 40, seed: int = SEED) -> Any:
    torch = _require("torch")
    nn = torch.nn
    torch.manual_seed(seed)

    def block(cin: int, cout: int) -> list[Any]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    model = nn.Sequential(*block(1, 16), *block(16, 32), nn.MaxPool2d(2), *block(32, 64),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    x, y = (torch.from_numpy(a) for a in data.train)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
        schedule.step()
    return model.eval()


def _export(model: Any, path: Path) -> None:
    """ONNX through the dynamo exporter: dynamic batch, weights inside the file, opset 18 (its lowest)."""
    torch = _require("torch")
    from edgec.frontends.torch_frontend import quiet_exporter

    example = (torch.zeros(1, 1, 8, 8),)
    with quiet_exporter():
        torch.onnx.export(model, example, str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=18, dynamo=True,
                          external_data=False)


def digits_cnn_onnx(cache_dir: Path, data: DigitsData | None = None, progress: Progress | None = None) -> Path:
    """Path of the trained digits CNN as ONNX, training and caching it on first use."""
    cached = cache_dir / f"{MODEL_VERSION}.onnx"
    if cached.is_file():
        return cached
    say = progress or (lambda message: None)
    say("training a digits CNN on scikit-learn's digits (first run only; cached afterwards)")
    model = _train(data or digits_data())
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as staging:
        staged = Path(staging) / cached.name
        _export(model, staged)
        os.replace(staged, cached)
    return cached


def host_int8_target() -> str:
    """The built-in int8 ONNX Runtime target that runs correctly on this machine's CPU."""
    from edgec.target import host_target

    return host_target("onnxruntime", "int8").name


def default_workdir() -> Path:
    """Where the demo writes by default: the user's cache dir, not the current (maybe a git) directory."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("edgec")) / "demo-run"


@dataclass(frozen=True)
class DemoResult:
    workdir: Path
    files: dict[str, Path]
    report: dict[str, Any]
    gate: Any  # edgec.gating.GateResult
    #: what precision "auto" measured and chose, in one sentence
    precision: str


def _precision_sentence(auto: AutoPrecision) -> str:
    chosen, speedup = auto.chosen, auto.speedup
    sentence = f"precision auto: int8 measured {speedup:.2f}x fp32 on this host at build time -> the artifact is {chosen}"
    if chosen == "fp32":
        sentence += (f" (int8 must be >= {auto.min_speedup:.2f}x to be kept; on a model this small its"
                     " (de)quantization costs more than it saves, and larger models gain: see bench/)")
    return sentence


def run_demo(workdir: Path | None = None, *, cache_dir: Path | None = None, runs: int = 200, threads: int = 1,
             progress: Progress | None = None) -> DemoResult:
    """Run the whole flow in `workdir` (default `default_workdir()`; created if needed; the demo's own
    files in it are replaced)."""
    from edgec.api import gate
    from edgec.benchmark import bench
    from edgec.compiler import compile as compile_model
    from edgec.gating import to_junit, to_markdown

    import platformdirs

    say = progress or (lambda message: None)
    workdir = workdir or default_workdir()
    workdir.mkdir(parents=True, exist_ok=True)
    cache_dir = cache_dir or Path(platformdirs.user_cache_dir("edgec")) / "demo"
    data = digits_data()
    files = {
        "model": workdir / "digits_cnn.onnx",
        "calib": workdir / "calib.npz",
        "test": workdir / "test.npz",
        "labels": workdir / "test_labels.npy",
        "policy": workdir / "gate.toml",
        "report": workdir / "report.json",
        "junit": workdir / "gate.junit.xml",
        "markdown": workdir / "gate.md",
    }
    shutil.copyfile(digits_cnn_onnx(cache_dir, data, say), files["model"])
    np.savez(files["calib"], **{INPUT_NAME: data.calib[0]})
    np.savez(files["test"], **{INPUT_NAME: data.test[0]})
    np.save(files["labels"], data.test[1])
    files["policy"].write_text("".join(f"{k} = {v}\n" for k, v in DEMO_POLICY.items()), encoding="utf-8")

    target = host_int8_target()
    say(f"compiling for {target} with {len(data.calib[0])} held-out calibration images")
    files["artifact"] = workdir / f"digits_cnn-{target}"
    compiled = compile_model(files["model"], target, calib=files["calib"], output_dir=files["artifact"], force=True,
                             precision="auto", progress=say)
    quantization = Manifest.from_dict(compiled.manifest).quantization
    assert quantization is not None and quantization.auto is not None, "the demo's target builds with precision auto"
    precision = _precision_sentence(quantization.auto)
    say(f"benchmarking the artifact vs float on {len(data.test[0])} held-out test images, {threads} thread(s)")
    report = bench(files["artifact"], data=files["test"], labels=files["labels"], threads=threads, runs=runs,
                   json_path=files["report"], progress=say)
    result = gate(report, policy=files["policy"])
    files["junit"].write_text(to_junit(result), encoding="utf-8")
    files["markdown"].write_text(to_markdown(result), encoding="utf-8")
    return DemoResult(workdir, files, report, result, precision)
