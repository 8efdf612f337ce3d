"""Scale / zero-point math for affine int8 quantization: pure functions, no graphs.

Affine mapping: q = clamp(round(x / scale) + zero_point, qmin, qmax); x' = (q - zero_point) * scale.
Ranges are first widened to include 0 so that 0.0 (padding, ReLU floors, zero bias) is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["QParams", "FIXED_OUTPUT_OPS", "fixed_output_qparams", "qrange", "qparams_from_range", "weight_qparams",
           "quantize", "dequantize", "quantize_bias"]

#: Smallest scale handed out: a constant-zero tensor (range 0) gets scale 1.0 instead, see qparams_from_range.
MIN_SCALE = 1e-12

_NP_DTYPES = {"int8": np.int8, "uint8": np.uint8, "int32": np.int32}


@dataclass(frozen=True)
class QParams:
    """Per-tensor (`axis` None, scalar arrays) or per-channel (`axis` set, 1-D arrays) parameters."""

    scale: np.ndarray
    zero_point: np.ndarray
    dtype: str
    axis: int | None = None
    symmetric: bool = False
    reduce_range: bool = False


def qrange(dtype: str, symmetric: bool, reduce_range: bool = False) -> tuple[int, int]:
    """Integer range for a dtype. Symmetric int8 uses [-127, 127] so that -x is representable for every x.

    `reduce_range` keeps 7 bits ([-63, 63], [-64, 63] or [0, 127]), for x86 kernels without VNNI
    whose int16 intermediate sums would otherwise saturate.
    """
    if dtype == "int8":
        if reduce_range:
            return (-63, 63) if symmetric else (-64, 63)
        return (-127, 127) if symmetric else (-128, 127)
    if dtype == "uint8":
        return (0, 127) if reduce_range else (0, 255)
    if dtype == "int32":
        return (-(2**31) + 1, 2**31 - 1)
    raise ValueError(f"unsupported quantized dtype {dtype}")


def qparams_from_range(lo: np.ndarray | float, hi: np.ndarray | float, dtype: str, symmetric: bool,
                       axis: int | None = None, reduce_range: bool = False) -> QParams:
    """Scale and zero point covering [lo, hi] (arrays for per-channel).

    Asymmetric: lo' = min(lo, 0), hi' = max(hi, 0); scale = (hi' - lo') / (qmax - qmin);
    zero_point = round(qmin - lo' / scale), clamped to [qmin, qmax].
    Symmetric: a = max(|lo|, |hi|); scale = a / ((qmax - qmin) / 2); zero_point = 0 for int8, 128 for uint8.
    A degenerate range (all zeros) gets scale 1.0, so the zero tensor round-trips exactly.
    """
    qmin, qmax = qrange(dtype, symmetric, reduce_range)
    lo = np.minimum(np.asarray(lo, dtype=np.float64), 0.0)
    hi = np.maximum(np.asarray(hi, dtype=np.float64), 0.0)
    if symmetric:
        scale = np.maximum(-lo, hi) / ((qmax - qmin) / 2.0)
        zero_point = np.full_like(scale, 0 if dtype == "int8" else (qmax + qmin + 1) // 2)
    else:
        scale = (hi - lo) / float(qmax - qmin)
        safe = np.where(scale > 0, scale, 1.0)
        zero_point = np.clip(np.round(qmin - lo / safe), qmin, qmax)
    scale = np.where(scale > 0, np.maximum(scale, MIN_SCALE), 1.0)
    return QParams(scale.astype(np.float32), zero_point.astype(_NP_DTYPES[dtype]), dtype, axis, symmetric, reduce_range)


#: Ops whose integer kernels have fixed output parameters (TFLite's int8 spec; what its LOGISTIC, SOFTMAX and
#: TANH kernels write): the output's lowest value and the steps per unit. Sigmoid and Softmax cover [0, 1) in
#: 1/256 steps, Tanh [-1, 1) in 1/128 steps, whatever range calibration saw.
FIXED_OUTPUT_OPS: dict[str, tuple[float, int]] = {"Sigmoid": (0.0, 256), "Softmax": (0.0, 256), "Tanh": (-1.0, 128)}


def fixed_output_qparams(op_type: str, dtype: str) -> QParams:
    """The asymmetric per-tensor parameters of a `FIXED_OUTPUT_OPS` op's output (int8: zero point -128 / 0)."""
    low, steps = FIXED_OUTPUT_OPS[op_type]
    qmin, _ = qrange(dtype, False)
    return QParams(np.asarray(1.0 / steps, np.float32), np.asarray(qmin - low * steps).astype(_NP_DTYPES[dtype]), dtype)


def weight_qparams(weight: np.ndarray, dtype: str, symmetric: bool, axis: int | None,
                   reduce_range: bool = False) -> QParams:
    """Exact min/max parameters of a constant tensor, per channel along `axis` (or per tensor if None)."""
    if axis is None:
        return qparams_from_range(weight.min(), weight.max(), dtype, symmetric, None, reduce_range)
    axis = axis % weight.ndim
    others = tuple(d for d in range(weight.ndim) if d != axis)
    return qparams_from_range(weight.min(axis=others), weight.max(axis=others), dtype, symmetric, axis, reduce_range)


def _broadcast(params: QParams, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    if params.axis is None:
        return params.scale, params.zero_point.astype(np.int64)
    shape = [1] * ndim
    shape[params.axis % ndim] = -1
    return params.scale.reshape(shape), params.zero_point.astype(np.int64).reshape(shape)


def quantize(x: np.ndarray, params: QParams) -> np.ndarray:
    """q = clamp(round_half_even(x / scale) + zero_point, qmin, qmax), as ONNX QuantizeLinear rounds."""
    scale, zero_point = _broadcast(params, x.ndim)
    qmin, qmax = qrange(params.dtype, params.symmetric, params.reduce_range)
    q = np.round(x.astype(np.float64) / scale) + zero_point
    return np.clip(q, qmin, qmax).astype(_NP_DTYPES[params.dtype])


def dequantize(q: np.ndarray, params: QParams) -> np.ndarray:
    """x' = (q - zero_point) * scale."""
    scale, zero_point = _broadcast(params, q.ndim)
    return ((q.astype(np.int64) - zero_point) * scale).astype(np.float32)


def quantize_bias(bias: np.ndarray, input_scale: float, weight_scale: np.ndarray) -> tuple[np.ndarray, QParams]:
    """int32 bias with scale = input_scale * weight_scale (per output channel) and zero point 0.

    That scale is what integer kernels accumulate in, so the bias adds with no rescaling; values
    beyond the int32 range (a tiny input or weight scale) saturate.
    """
    scale = (np.float64(input_scale) * np.asarray(weight_scale, dtype=np.float64)).reshape(-1)
    scale = np.maximum(scale, MIN_SCALE)
    axis = 0 if scale.size > 1 else None
    params = QParams(
        (scale if axis == 0 else scale.reshape(())).astype(np.float32),
        np.zeros(scale.shape if axis == 0 else (), np.int32),
        "int32",
        axis,
        symmetric=True,
    )
    return quantize(bias, params), params
