"""Drift metrics against values computed by hand on tiny arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgec.errors import BadInputError
from edgec.harness.accuracy import SQNR_CAP_DB, degeneracy, drift, looks_like_class_scores, output_drift


def f32(*rows: list[float]) -> list[np.ndarray]:
    return [np.asarray(row, dtype=np.float32) for row in rows]


def test_output_drift_hand_computed() -> None:
    # s1: a=[1,2] b=[1,1]  d=[0,1]  cos=3/sqrt(10)
    # s2: both zero        d=[0,0]  cos=1 by definition
    # s3: a=[0,0] b=[2,0]  d=[2,0]  cos=0 (exactly one zero vector)
    artifact = f32([1, 2], [0, 0], [0, 0])
    baseline = f32([1, 1], [0, 0], [2, 0])
    result = output_drift(artifact, baseline)
    assert result["max_abs"] == pytest.approx(2.0)
    assert result["mean_abs"] == pytest.approx(3.0 / 6.0)
    assert result["cosine_mean"] == pytest.approx((3 / math.sqrt(10) + 1.0 + 0.0) / 3)
    assert result["cosine_min"] == pytest.approx(0.0)
    assert result["cosines"] == [round(3 / math.sqrt(10), 6), 1.0, 0.0]  # every sample, in order, 6 decimals
    # sum b^2 = 1+1+4 = 6, sum d^2 = 1+4 = 5
    assert result["sqnr_db"] == pytest.approx(10 * math.log10(6 / 5))
    assert result["nonfinite"] == 0


def test_output_drift_antiparallel_and_scaled() -> None:
    assert output_drift(f32([-1, -2]), f32([1, 2]))["cosine_min"] == pytest.approx(-1.0)
    # A scaled copy has cosine exactly 1 but a nonzero error: sum b^2 = 5, sum d^2 = 5 -> 0 dB.
    scaled = output_drift(f32([2, 4]), f32([1, 2]))
    assert scaled["cosine_mean"] == pytest.approx(1.0)
    assert scaled["sqnr_db"] == pytest.approx(0.0)


def test_identical_outputs_cap_sqnr() -> None:
    outputs = f32([0.5, -1.5, 3.0], [1.0, 2.0, 3.0])
    result = output_drift(outputs, [x.copy() for x in outputs])
    assert result["max_abs"] == 0.0 and result["mean_abs"] == 0.0
    assert result["cosine_mean"] == 1.0 and result["cosine_min"] == 1.0
    assert result["sqnr_db"] == SQNR_CAP_DB == 200.0


def test_zero_vectors() -> None:
    both_zero = output_drift(f32([0, 0]), f32([0, 0]))
    assert both_zero["cosine_min"] == 1.0 and both_zero["sqnr_db"] == 200.0
    zero_baseline = output_drift(f32([1, 0]), f32([0, 0]))
    assert zero_baseline["cosine_min"] == 0.0
    assert zero_baseline["sqnr_db"] == -200.0


def test_nan_propagates_and_is_counted() -> None:
    result = output_drift(f32([np.nan, 1.0], [1.0, 1.0]), f32([1.0, 1.0], [1.0, 1.0]))
    assert math.isnan(result["max_abs"])
    assert math.isnan(result["cosine_min"])
    assert result["nonfinite"] == 1


def test_shape_and_count_mismatch_raise() -> None:
    with pytest.raises(BadInputError, match="shape"):
        output_drift([np.zeros((1, 3))], [np.zeros((3,))])
    with pytest.raises(BadInputError, match="samples"):
        output_drift([np.zeros(3)], [np.zeros(3), np.zeros(3)])
    with pytest.raises(BadInputError):
        output_drift([], [])


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.zeros((1, 10), np.float32), True),
        (np.zeros((10,), np.float32), True),
        (np.zeros((1, 1, 2), np.float16), True),
        (np.zeros((1, 1), np.float32), False),  # one class: a regression value
        (np.zeros((2, 10), np.float32), False),  # not batch 1 of a vector
        (np.zeros((1, 10), np.int64), False),  # already an index, not scores
        (np.zeros((), np.float32), False),
        (np.zeros((1, 8, 384), np.float32), False),  # an embedding sequence
    ],
)
def test_looks_like_class_scores(array: np.ndarray, expected: bool) -> None:
    assert looks_like_class_scores(array) is expected


def scores(*argmaxes: int, classes: int = 3) -> list[dict[str, np.ndarray]]:
    """One (1, classes) score vector per sample whose argmax is the given class."""
    out = []
    for index in argmaxes:
        row = np.zeros((1, classes), np.float32)
        row[0, index] = 1.0
        out.append({"logits": row})
    return out


def test_top1_agreement() -> None:
    result = drift(scores(0, 1, 2, 0), scores(0, 1, 2, 1))
    assert result["top1_agreement"] == pytest.approx(0.75)
    assert result["accuracy"] is None and result["baseline_accuracy"] is None and result["accuracy_drop_pp"] is None
    assert set(result["outputs"]) == {"logits"}


def test_accuracy_drop_with_labels() -> None:
    labels = np.array([0, 1, 2, 2])
    # artifact right on 2 of 4 (samples 0, 1), baseline right on 3 of 4 (samples 0, 1, 2)
    result = drift(scores(0, 1, 0, 1), scores(0, 1, 2, 0), labels)
    assert result["accuracy"] == pytest.approx(0.5)
    assert result["baseline_accuracy"] == pytest.approx(0.75)
    assert result["accuracy_drop_pp"] == pytest.approx(25.0)
    assert result["top1_agreement"] == pytest.approx(0.5)


def test_label_errors() -> None:
    with pytest.raises(BadInputError, match="one label per sample"):
        drift(scores(0, 1), scores(0, 1), np.array([0, 1, 2]))
    with pytest.raises(BadInputError, match="integer"):
        drift(scores(0, 1), scores(0, 1), np.array([0.0, 1.0]))
    with pytest.raises(BadInputError, match=r"\[0, 3\)"):
        drift(scores(0, 1), scores(0, 1), np.array([1, 3]))  # 1-based labels
    embeddings = [{"emb": np.ones((1, 4, 8), np.float32)}]
    with pytest.raises(BadInputError, match="class scores"):
        drift(embeddings, embeddings, np.array([0]))


def test_non_scores_give_no_top1() -> None:
    embeddings = [{"emb": np.ones((1, 4, 8), np.float32)}]
    result = drift(embeddings, embeddings)
    assert result["top1_agreement"] is None
    assert result["outputs"]["emb"]["max_abs"] == 0.0


def test_renamed_outputs_match_by_position() -> None:
    baseline = [{"logits": np.array([[1.0, 2.0]], np.float32), "feat": np.zeros((1, 5), np.float32)}]
    artifact = [{"out0": np.array([[1.0, 3.0]], np.float32), "out1": np.zeros((1, 5), np.float32)}]
    result = drift(artifact, baseline)
    assert list(result["outputs"]) == ["logits", "feat"]
    assert result["outputs"]["logits"]["max_abs"] == pytest.approx(1.0)
    assert result["outputs"]["feat"]["max_abs"] == 0.0
    assert result["top1_agreement"] == 1.0


def test_same_names_in_other_order_match_by_name() -> None:
    baseline = [{"a": np.zeros((1, 2), np.float32), "b": np.ones((1, 3), np.float32)}]
    artifact = [{"b": np.ones((1, 3), np.float32), "a": np.zeros((1, 2), np.float32)}]
    result = drift(artifact, baseline)  # by position the shapes would clash
    assert result["outputs"]["a"]["max_abs"] == 0.0 and result["outputs"]["b"]["max_abs"] == 0.0


def test_unmatchable_outputs_raise() -> None:
    baseline = [{"a": np.zeros(2), "b": np.zeros(2)}]
    artifact = [{"c": np.zeros(2)}]
    with pytest.raises(BadInputError, match="cannot match"):
        drift(artifact, baseline)
    with pytest.raises(BadInputError, match="samples"):
        drift(artifact, baseline * 2)


# --------------------------------------------------------------------------------------------
# Degenerate outputs: all zero, or the same for every input
# --------------------------------------------------------------------------------------------


def test_two_all_zero_models_agree_perfectly_but_are_flagged() -> None:
    zeros = [{"logits": np.zeros((1, 10), np.float32)} for _ in range(4)]
    result = drift(zeros, zeros)
    assert result["outputs"]["logits"]["cosine_min"] == 1.0 and result["top1_agreement"] == 1.0
    assert result["degenerate"] == {"logits": "artifact output all zero; baseline output all zero"}


def test_output_that_ignores_its_input_is_constant_across_samples() -> None:
    rng = np.random.default_rng(0)
    bias = rng.standard_normal((1, 5))
    baseline = [{"y": bias + 1e-9 * rng.standard_normal((1, 5))} for _ in range(6)]  # a head fed ~1e-13 activations
    artifact = [{"y": bias.copy()} for _ in range(6)]
    assert degeneracy([b["y"] for b in baseline]) == "constant across samples"
    assert drift(artifact, baseline)["degenerate"] == {
        "y": "artifact output constant across samples; baseline output constant across samples"}


def test_healthy_outputs_are_not_degenerate() -> None:
    rng = np.random.default_rng(1)
    outputs = [{"y": rng.standard_normal((1, 5))} for _ in range(6)]
    assert drift(outputs, outputs)["degenerate"] == {}
    assert degeneracy([outputs[0]["y"]]) is None  # one sample cannot show constancy
    assert degeneracy([np.array([np.nan, 0.0])]) is None  # non-finite values are reported elsewhere
