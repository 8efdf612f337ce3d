"""Accuracy budgets on a TFLite target hold for the `.tflite` that ships, measured in LiteRT.

The search judges each int8 candidate as the flatbuffer LiteRT runs, so the figures the manifest
records are the shipped artifact's: recomputing them from `model.tflite` on the same samples gives
the same cosines. The Q/DQ graph's ONNX Runtime figures are recorded beside them (LiteRT's
fixed-point requantization rounds differently, so the two differ in the last digits).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

import edgec
from edgec.int8 import split_holdout
from tflite_lowering import activations_net, cosine, mobilenet_v3_block, random_samples, run_onnx, run_tflite

#: All-int8 reaches ~0.998 on `activations_net` in LiteRT, and its expected worst over more samples (what the
#: search judges a cosine bar on) ~0.9964: the search must keep nodes float to get past it.
_BUDGET = 0.9975
#: The recorded figures and their recomputation differ only by the float reference (source vs optimized ONNX).
_SAME = 1e-9


def _compile_inputs(root: Path, build: Callable[[], onnx.ModelProto], shape: tuple[int, ...]
                    ) -> tuple[Path, Path, onnx.ModelProto, list[dict[str, np.ndarray]]]:
    proto = build()
    onnx.save_model(proto, root / "net.onnx")
    samples = random_samples(16, shape, 3)
    np.savez(root / "calib.npz", x=np.concatenate([s["x"] for s in samples]))
    return root / "net.onnx", root / "calib.npz", proto, samples


def _litert_min_cosine(model_path: Path, proto: onnx.ModelProto, samples: list[dict[str, np.ndarray]],
                       tmp_path: Path) -> float:
    flatbuffer = model_path.read_bytes()
    output = proto.graph.output[0].name
    return min(cosine(run_tflite(flatbuffer, tmp_path, feeds)[output], run_onnx(proto, feeds)[output])
               for feeds in samples)


def test_budget_search_judges_candidates_as_the_shipped_tflite(tmp_path: Path) -> None:
    model, calib, proto, samples = _compile_inputs(tmp_path, activations_net, (1, 3, 16, 16))
    result = edgec.compile(model, "tflite-int8", calib=calib, output_dir=tmp_path / "out", verify_import=False,
                           min_cosine=_BUDGET)
    quantization = result.manifest["quantization"]
    fallback = quantization["fallback"]
    assert quantization["judged_in"].startswith("LiteRT")
    assert fallback["met"] and fallback["kept_float"]  # all-int8 missed in LiteRT: the search kept layers float
    assert fallback["attempts"][0]["expected_worst_cosine"] < _BUDGET
    search, holdout, _, _ = split_holdout(samples, None)
    for part, part_samples in (("search", search), ("holdout", holdout)):
        shipped = _litert_min_cosine(result.model_path, proto, part_samples, tmp_path)
        assert fallback[part]["min_cosine"] == pytest.approx(shipped, abs=_SAME), part
        assert shipped >= _BUDGET
        assert fallback["onnx_qdq"][part]["samples"] == len(part_samples)
        assert 0.99 < fallback["onnx_qdq"][part]["min_cosine"] <= 1.0


def test_drift_without_a_budget_is_the_shipped_tflites_not_the_qdq_graphs(tmp_path: Path) -> None:
    model, calib, proto, samples = _compile_inputs(tmp_path, mobilenet_v3_block, (1, 3, 24, 24))
    result = edgec.compile(model, "tflite-int8", calib=calib, output_dir=tmp_path / "out", verify_import=False)
    drift = result.manifest["quantization"]["drift"]
    shipped = _litert_min_cosine(result.model_path, proto, samples, tmp_path)
    assert drift["min_cosine"] == pytest.approx(shipped, abs=_SAME)
    assert abs(drift["onnx_qdq_min_cosine"] - shipped) > 10 * _SAME  # ONNX Runtime's figure is another model's
