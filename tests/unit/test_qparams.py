"""Tests for edgec.quant.qparams: scale / zero-point math, per-channel weights, round trips, bias.

Expected scales and zero points are computed by hand from the affine formulas
(scale = (hi - lo) / (qmax - qmin), zero_point = round(qmin - lo / scale)), never by edgec itself.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edgec.quant.qparams import (
    fixed_output_qparams,
    QParams,
    dequantize,
    qparams_from_range,
    qrange,
    quantize,
    quantize_bias,
    weight_qparams,
)

#: Scales are stored as float32: allow float32 rounding of a hand-computed float64 scale.
SCALE_RTOL = 1e-6
#: Float slack on top of the half-step bound: float32 scale and float32 dequantized output.
ROUND_TRIP_RTOL = 1e-5


# --------------------------------------------------------------------------------------------
# qrange
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "symmetric", "reduce_range", "expected"),
    [
        ("int8", False, False, (-128, 127)),
        ("int8", True, False, (-127, 127)),
        ("int8", True, True, (-63, 63)),
        ("int8", False, True, (-64, 63)),
        ("uint8", False, False, (0, 255)),
        ("uint8", True, False, (0, 255)),
        ("uint8", False, True, (0, 127)),
        ("int32", True, False, (-(2**31) + 1, 2**31 - 1)),
    ],
)
def test_qrange(dtype: str, symmetric: bool, reduce_range: bool, expected: tuple[int, int]) -> None:
    assert qrange(dtype, symmetric, reduce_range) == expected


def test_qrange_rejects_unknown_dtype() -> None:
    with pytest.raises(ValueError, match="int4"):
        qrange("int4", True)


# --------------------------------------------------------------------------------------------
# qparams_from_range: hand-computed cases
# --------------------------------------------------------------------------------------------


def test_asymmetric_uint8_hand_computed() -> None:
    # [-1, 3]: scale = 4 / 255; zero_point = round(0 - (-1) / (4/255)) = round(63.75) = 64
    p = qparams_from_range(-1.0, 3.0, "uint8", symmetric=False)
    assert p.scale.dtype == np.float32 and p.zero_point.dtype == np.uint8
    assert p.scale.shape == () and p.axis is None
    np.testing.assert_allclose(p.scale, 4.0 / 255.0, rtol=SCALE_RTOL)
    assert int(p.zero_point) == 64


def test_asymmetric_int8_hand_computed() -> None:
    # [-1, 3]: scale = 4 / 255; zero_point = round(-128 + 63.75) = round(-64.25) = -64
    p = qparams_from_range(-1.0, 3.0, "int8", symmetric=False)
    assert p.zero_point.dtype == np.int8
    np.testing.assert_allclose(p.scale, 4.0 / 255.0, rtol=SCALE_RTOL)
    assert int(p.zero_point) == -64


def test_symmetric_int8_hand_computed() -> None:
    # [-2, 1]: a = max(|lo|, |hi|) = 2, range [-127, 127] -> scale = 2 / 127, zero_point 0
    p = qparams_from_range(-2.0, 1.0, "int8", symmetric=True)
    np.testing.assert_allclose(p.scale, 2.0 / 127.0, rtol=SCALE_RTOL)
    assert int(p.zero_point) == 0
    assert p.zero_point.dtype == np.int8
    # -a and +a both map onto the ends of the symmetric range
    q = quantize(np.array([-2.0, 2.0], np.float32), p)
    assert q.tolist() == [-127, 127]


def test_symmetric_uint8_zero_point_is_128() -> None:
    p = qparams_from_range(-0.5, 1.0, "uint8", symmetric=True)
    assert int(p.zero_point) == 128
    np.testing.assert_allclose(p.scale, 1.0 / 127.5, rtol=SCALE_RTOL)


def test_reduce_range_symmetric_int8_uses_7_bits() -> None:
    # a = 3 over [-63, 63] -> scale = 3 / 63
    p = qparams_from_range(-3.0, 2.0, "int8", symmetric=True, reduce_range=True)
    np.testing.assert_allclose(p.scale, 3.0 / 63.0, rtol=SCALE_RTOL)
    assert int(p.zero_point) == 0
    q = quantize(np.linspace(-3, 3, 101).astype(np.float32), p)
    assert q.min() == -63 and q.max() == 63


def test_reduce_range_uint8_uses_7_bits() -> None:
    # [0, 127] over [0, 2.54] -> scale 0.02, zero point 0
    p = qparams_from_range(0.0, 2.54, "uint8", symmetric=False, reduce_range=True)
    np.testing.assert_allclose(p.scale, 2.54 / 127.0, rtol=SCALE_RTOL)
    assert int(p.zero_point) == 0
    q = quantize(np.array([0.0, 2.54, 100.0], np.float32), p)
    assert q.tolist() == [0, 127, 127]


@pytest.mark.parametrize(("dtype", "symmetric", "zero"), [("uint8", False, 0), ("int8", False, -128), ("int8", True, 0),
                                                          ("uint8", True, 128)])
def test_degenerate_zero_range_gets_scale_one(dtype: str, symmetric: bool, zero: int) -> None:
    p = qparams_from_range(0.0, 0.0, dtype, symmetric)
    assert float(p.scale) == 1.0
    assert int(p.zero_point) == zero
    x = np.zeros((3, 4), np.float32)
    np.testing.assert_array_equal(dequantize(quantize(x, p), p), x)


def test_positive_range_is_widened_to_include_zero() -> None:
    # [2, 5] -> [0, 5]: scale = 5 / 255, zero point 0
    p = qparams_from_range(2.0, 5.0, "uint8", symmetric=False)
    np.testing.assert_allclose(p.scale, 5.0 / 255.0, rtol=SCALE_RTOL)
    assert int(p.zero_point) == 0


def test_negative_range_is_widened_to_include_zero() -> None:
    # [-5, -2] -> [-5, 0]: scale = 5 / 255, zero point = round(0 + 255) = 255
    p = qparams_from_range(-5.0, -2.0, "uint8", symmetric=False)
    np.testing.assert_allclose(p.scale, 5.0 / 255.0, rtol=SCALE_RTOL)
    assert int(p.zero_point) == 255
    assert float(dequantize(quantize(np.float32(0.0).reshape(()), p), p)) == 0.0


def test_per_channel_ranges() -> None:
    lo = np.array([-1.0, 0.0, 0.0, 2.0])
    hi = np.array([3.0, 0.0, 1.0, 4.0])
    p = qparams_from_range(lo, hi, "uint8", symmetric=False, axis=0)
    # widened: [-1,3], [0,0] (degenerate), [0,1], [0,4]
    np.testing.assert_allclose(p.scale, [4 / 255, 1.0, 1 / 255, 4 / 255], rtol=SCALE_RTOL)
    assert p.zero_point.tolist() == [64, 0, 0, 0]
    assert p.axis == 0


# --------------------------------------------------------------------------------------------
# weight_qparams
# --------------------------------------------------------------------------------------------


def test_weight_qparams_per_tensor() -> None:
    w = np.array([[-0.5, 0.25], [1.0, -2.0]], np.float32)
    p = weight_qparams(w, "int8", symmetric=True, axis=None)
    assert p.axis is None and p.scale.shape == ()
    np.testing.assert_allclose(p.scale, 2.0 / 127.0, rtol=SCALE_RTOL)


def test_weight_qparams_per_channel_axis0() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    w[1] *= 10.0
    p = weight_qparams(w, "int8", symmetric=True, axis=0)
    assert p.axis == 0 and p.scale.shape == (3,) and p.zero_point.shape == (3,)
    expected = np.abs(w).reshape(3, -1).max(axis=1) / 127.0
    np.testing.assert_allclose(p.scale, expected, rtol=SCALE_RTOL)
    assert (p.zero_point == 0).all()


def test_weight_qparams_per_channel_last_axis_negative_index() -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 5)).astype(np.float32)
    p = weight_qparams(w, "int8", symmetric=False, axis=-1)
    assert p.axis == 1 and p.scale.shape == (5,)
    lo, hi = np.minimum(w.min(axis=0), 0), np.maximum(w.max(axis=0), 0)
    np.testing.assert_allclose(p.scale, (hi - lo) / 255.0, rtol=SCALE_RTOL)
    np.testing.assert_array_equal(p.zero_point, np.clip(np.round(-128 - lo / ((hi - lo) / 255.0)), -128, 127))
    # per-channel round trip: every element within half its own channel's step
    err = np.abs(dequantize(quantize(w, p), p) - w)
    assert (err <= p.scale[None, :] / 2 * (1 + ROUND_TRIP_RTOL)).all()


def test_weight_qparams_zero_channel_gets_scale_one() -> None:
    w = np.ones((3, 4), np.float32)
    w[1] = 0.0
    p = weight_qparams(w, "int8", symmetric=True, axis=0)
    assert p.scale[1] == 1.0
    np.testing.assert_array_equal(dequantize(quantize(w, p), p)[1], 0.0)


# --------------------------------------------------------------------------------------------
# quantize / dequantize
# --------------------------------------------------------------------------------------------


def test_quantize_rounds_half_to_even_like_onnx() -> None:
    p = QParams(np.float32(1.0), np.int8(0), "int8", symmetric=True)
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5], np.float32)
    assert quantize(x, p).tolist() == [0, 2, 2, 0, -2]


def test_quantize_saturates() -> None:
    p = qparams_from_range(-1.0, 1.0, "int8", symmetric=True)
    assert quantize(np.array([-100.0, 100.0], np.float32), p).tolist() == [-127, 127]
    p = qparams_from_range(0.0, 1.0, "uint8", symmetric=False)
    assert quantize(np.array([-100.0, 100.0], np.float32), p).tolist() == [0, 255]


_range_value = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False, allow_subnormal=False)
_schemes = st.sampled_from([
    ("uint8", False, False), ("int8", False, False), ("int8", True, False), ("uint8", True, False),
    ("int8", True, True), ("uint8", False, True), ("int8", False, True),
])


@settings(max_examples=200, deadline=None)
@given(a=_range_value, b=_range_value, scheme=_schemes, data=st.data())
def test_round_trip_within_half_step(a: float, b: float, scheme: tuple[str, bool, bool], data: st.DataObject) -> None:
    """For x inside [lo, hi]: |dequantize(quantize(x)) - x| <= scale / 2 (+ float slack)."""
    lo, hi = min(a, b), max(a, b)
    assume(hi - lo > 1e-3)
    dtype, symmetric, reduce_range = scheme
    p = qparams_from_range(lo, hi, dtype, symmetric, reduce_range=reduce_range)
    fractions = data.draw(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=20))
    x = np.array([lo + f * (hi - lo) for f in fractions] + [lo, hi], np.float32)
    x = x[(x >= lo) & (x <= hi)]  # float32 rounding of the ends must not leave [lo, hi]
    err = np.abs(dequantize(quantize(x, p), p).astype(np.float64) - x.astype(np.float64))
    bound = float(p.scale) / 2 * (1 + ROUND_TRIP_RTOL) + np.abs(x).astype(np.float64) * np.finfo(np.float32).eps
    assert (err <= bound).all(), (lo, hi, scheme, float(p.scale), x[err > bound], err[err > bound])


@settings(max_examples=200, deadline=None)
@given(a=_range_value, b=_range_value, scheme=_schemes)
def test_zero_is_exactly_representable(a: float, b: float, scheme: tuple[str, bool, bool]) -> None:
    dtype, symmetric, reduce_range = scheme
    p = qparams_from_range(min(a, b), max(a, b), dtype, symmetric, reduce_range=reduce_range)
    q = quantize(np.zeros(1, np.float32), p)
    assert int(q[0]) == int(p.zero_point)
    assert dequantize(q, p)[0] == 0.0
    lo_q, hi_q = qrange(dtype, symmetric, reduce_range)
    assert lo_q <= int(p.zero_point) <= hi_q
    assert float(p.scale) > 0


@settings(max_examples=100, deadline=None)
@given(
    channels=st.integers(1, 6),
    width=st.integers(1, 8),
    symmetric=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
    magnitude=st.floats(1e-3, 1e3),
)
def test_per_channel_weight_round_trip_property(channels: int, width: int, symmetric: bool, seed: int,
                                                magnitude: float) -> None:
    w = (np.random.default_rng(seed).standard_normal((channels, width)) * magnitude).astype(np.float32)
    p = weight_qparams(w, "int8", symmetric, axis=0)
    err = np.abs(dequantize(quantize(w, p), p) - w)
    assert (err <= p.scale[:, None] / 2 * (1 + ROUND_TRIP_RTOL) + np.abs(w) * np.finfo(np.float32).eps).all()


# --------------------------------------------------------------------------------------------
# quantize_bias
# --------------------------------------------------------------------------------------------


def test_quantize_bias_per_channel() -> None:
    bias = np.array([0.1, -0.2, 0.0], np.float32)
    input_scale = 0.02
    weight_scale = np.array([0.01, 0.005, 0.1], np.float32)
    q, p = quantize_bias(bias, input_scale, weight_scale)
    assert q.dtype == np.int32 and p.dtype == "int32" and p.axis == 0
    expected_scale = input_scale * weight_scale.astype(np.float64)  # 2e-4, 1e-4, 2e-3
    np.testing.assert_allclose(p.scale, expected_scale, rtol=SCALE_RTOL)
    assert (p.zero_point == 0).all() and p.zero_point.dtype == np.int32
    # round(0.1 / 2e-4) = 500, round(-0.2 / 1e-4) = -2000, 0
    assert q.tolist() == [500, -2000, 0]
    np.testing.assert_allclose(dequantize(q, p), bias, atol=float(expected_scale.max()) / 2)


def test_quantize_bias_per_tensor() -> None:
    q, p = quantize_bias(np.array([1.0, -1.0], np.float32), 0.5, np.float32(0.25))
    assert p.axis is None and p.scale.shape == ()
    np.testing.assert_allclose(p.scale, 0.125, rtol=SCALE_RTOL)
    assert q.dtype == np.int32 and q.tolist() == [8, -8]


def test_quantize_bias_saturates_at_int32() -> None:
    q, _ = quantize_bias(np.array([1e6, -1e6], np.float32), 1e-6, np.array([1e-6, 1e-6], np.float32))
    assert q.tolist() == [2**31 - 1, -(2**31) + 1]


@pytest.mark.parametrize(("op_type", "dtype", "scale", "zero_point", "covered"), [
    ("Sigmoid", "int8", 1 / 256, -128, (0.0, 255 / 256)),
    ("Softmax", "uint8", 1 / 256, 0, (0.0, 255 / 256)),
    ("Tanh", "int8", 1 / 128, 0, (-1.0, 127 / 128)),
    ("Tanh", "uint8", 1 / 128, 128, (-1.0, 127 / 128)),
])
def test_fixed_output_qparams_cover_the_ops_output_range(op_type: str, dtype: str, scale: float, zero_point: int,
                                                         covered: tuple[float, float]) -> None:
    """TFLite's LOGISTIC/SOFTMAX/TANH output parameters: the integer range maps onto [0, 1) or [-1, 1)."""
    params = fixed_output_qparams(op_type, dtype)
    assert float(params.scale) == scale and int(params.zero_point) == zero_point and params.axis is None
    lo, hi = np.iinfo(np.dtype(dtype)).min, np.iinfo(np.dtype(dtype)).max
    assert dequantize(np.array([lo, hi], np.dtype(dtype)), params).tolist() == list(covered)
