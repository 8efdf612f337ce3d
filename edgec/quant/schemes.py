"""Static or dynamic int8 for a MatMul/Gemm, decided from float activations without building a model.

Both schemes quantize the same weights the same way and feed the same downstream graph; they
differ only in the input's scale: the calibrated range (static) or each call's own range
(dynamic). So comparing the node's own output error under each, simulated in numpy on the float
model's activations of one run, ranks them as a whole-model build would, at a fraction of its cost
(a MiniLM build and run takes ~0.3 s; the simulation of all its MatMuls ~1 s in total).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgec.quant.calibrator import run_exposing
from edgec.quant.dynamic import weight_kn
from edgec.quant.qparams import dequantize, qparams_from_range, quantize, weight_qparams
from edgec.quant.quantizer import Quantizer
from edgec.tensors import Feeds

__all__ = ["compare_schemes"]


def compare_schemes(quantizer: Quantizer, samples: Sequence[Feeds]) -> dict[str, dict[str, float]]:
    """Per candidate that can be static or dynamic: {scheme: SQNR dB of its output on the worst sample}.

    The worst sample, not all pooled: a budget holds on every sample, and pooled noise is the loud
    samples' (a calibrated range fits them; the quiet ones lose). A node whose static input range
    is unknown gets only its dynamic figure.
    """
    both = [name for name in quantizer.candidates if set(quantizer.options(name)) == {"static", "dynamic"}]
    if not both:
        return {}
    nodes = {node.name: node for node in quantizer.model.graph}
    inputs = {name: nodes[name].inputs[0].name for name in both}
    runs = run_exposing(quantizer.model, list(dict.fromkeys(inputs.values())), samples, quantizer.threads)
    scheme = quantizer.scheme
    result = {}
    for name in both:
        weight = weight_kn(nodes[name])
        wq = scheme.weights
        w_params = weight_qparams(weight, wq.dtype, wq.symmetric, 1 if wq.granularity == "per_channel" else None,
                                  wq.reduce_range)
        weight_int8 = dequantize(quantize(weight, w_params), w_params)
        activations = [run[inputs[name]] for run in runs]
        static_range = quantizer.static_input_range(name)
        errors = {"dynamic": [_dynamic(x) for x in activations]}
        if static_range is not None:
            act = scheme.activations
            params = qparams_from_range(*static_range, act.dtype, act.symmetric, reduce_range=act.reduce_range)
            errors["static"] = [dequantize(quantize(x, params), params) for x in activations]
        reference = [x @ weight for x in activations]
        result[name] = {kind: _sqnr_db(reference, [x @ weight_int8 for x in quantized])
                        for kind, quantized in errors.items()}
    return result


def _dynamic(x: np.ndarray) -> np.ndarray:
    """x through DynamicQuantizeLinear: uint8, asymmetric, the range of this call (always holding 0)."""
    params = qparams_from_range(float(x.min()), float(x.max()), "uint8", False)
    return dequantize(quantize(x, params), params)


def _sqnr_db(reference: Sequence[np.ndarray], actual: Sequence[np.ndarray]) -> float:
    """The lowest per-sample SQNR (dB); a sample with no error counts as +inf, one with no signal as -inf."""
    worst = float("inf")
    for r, a in zip(reference, actual):
        signal = float(np.sum(np.square(r.astype(np.float64))))
        noise = float(np.sum(np.square(r.astype(np.float64) - a)))
        if noise > 0:
            worst = min(worst, 10 * np.log10(signal / noise) if signal > 0 else float("-inf"))
    return worst
