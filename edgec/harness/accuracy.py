"""Drift metrics: how far a compiled artifact's outputs moved from its source model's outputs.

The baseline (usually the fp32 source model) is the oracle: every metric here compares the two
models on the same samples, so a gate can bound the damage compilation did (quantization, fused
kernels, fp16) without needing ground truth. Labels, when given, add task accuracy for both.

All arithmetic is in float64 whatever the outputs' dtype, so the metrics measure the models'
disagreement and not the rounding of the metric itself.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgec.errors import BadInputError

__all__ = ["SQNR_CAP_DB", "CONSTANT_RTOL", "output_drift", "degeneracy", "looks_like_class_scores", "drift"]

logger = logging.getLogger(__name__)

#: |sqnr_db| never exceeds this: identical outputs would give +inf dB and JSON has no infinity.
#: 200 dB is far above what any float format reaches (float64 round-off is ~ -320 dB relative).
SQNR_CAP_DB = 200.0
#: Decimals each sample's cosine keeps in a report: 1 - cosine down to 1e-6 stays visible, and the list stays short.
COSINE_DIGITS = 6


#: An output whose samples all agree to this fraction of its largest magnitude is "constant": the model
#: ignores its input there (a head fed activations of ~1e-13 outputs its bias), so drift says nothing.
CONSTANT_RTOL = 1e-6


def _as_float64(array: Any, what: str) -> np.ndarray:
    """Convert one output to float64, saying which output could not be compared."""
    try:
        return np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"{what} is not numeric ({np.asarray(array).dtype}); drift needs numeric outputs") from exc


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two flattened float64 vectors, with the zero-vector cases defined."""
    norm_a = float(np.linalg.norm(a))
    norm_b = float(np.linalg.norm(b))
    if norm_a == 0.0 and norm_b == 0.0:
        return 1.0
    if norm_a == 0.0 or norm_b == 0.0:
        return 0.0
    cos = float(np.dot(a, b)) / (norm_a * norm_b)
    if math.isnan(cos):
        return cos
    return min(1.0, max(-1.0, cos))


def output_drift(artifact: Sequence[np.ndarray], baseline: Sequence[np.ndarray]) -> dict[str, Any]:
    """Compare one output of two models across samples (one array per sample in each sequence).

    With `a_i`, `b_i` sample i's artifact and baseline output flattened to float64 and `d = a - b`
    over every element of every sample:

    - `max_abs = max |d|`; `mean_abs = sum |d| / number of elements` (element-weighted, so a
      sample with a larger output weighs more).
    - `cosine_i = a_i . b_i / (|a_i| |b_i|)`, clipped to [-1, 1] against round-off; defined as 1.0
      when both vectors are zero (they agree exactly) and 0.0 when exactly one is (no direction
      in common). `cosine_mean` and `cosine_min` are over samples; the min is what exposes the one
      sample quantization broke (see FINDINGS: the shortest sentence is usually worst).
    - `cosines`: every sample's `cosine_i`, in sample order, rounded to `COSINE_DIGITS` decimals: the
      distribution behind min and mean (one bad sample or a broad tail?) for the HTML report.
    - `sqnr_db = 10 log10(sum b^2 / sum d^2)` over all samples: signal-to-quantization-noise ratio,
      higher is better. Clamped to [-SQNR_CAP_DB, +SQNR_CAP_DB] = [-200, 200] dB because JSON has
      no infinity: zero error gives +200 (also when the baseline is all zeros), an all-zero
      baseline with nonzero error gives -200.

    NaN in either model's outputs propagates into `max_abs`, `mean_abs`, the cosines and
    `sqnr_db` instead of being hidden, so a gate comparing against a threshold must treat NaN as a
    failure. `nonfinite` (an extra key) counts artifact elements that are NaN or infinite where the
    baseline's element is finite: the usual sign of an fp16 overflow.

    Args:
        artifact: The compiled model's output, one array per sample.
        baseline: The reference model's same output, one array per sample, in the same order.

    Returns:
        `max_abs`, `mean_abs`, `cosine_mean`, `cosine_min`, `sqnr_db` (floats), `nonfinite` and `cosines`.

    Raises:
        BadInputError: If the sample counts differ, there are no samples, a sample's shapes differ,
            or an output is not numeric.
    """
    if len(artifact) != len(baseline):
        raise BadInputError(f"artifact has outputs for {len(artifact)} samples but the baseline for {len(baseline)}")
    if len(baseline) == 0:
        raise BadInputError("no samples to compare; give at least one sample")
    maxima: list[float] = []
    sum_abs = 0.0
    sum_signal = 0.0
    sum_noise = 0.0
    elements = 0
    nonfinite = 0
    cosines: list[float] = []
    for index, (a_raw, b_raw) in enumerate(zip(artifact, baseline)):
        a = _as_float64(a_raw, f"artifact output of sample {index}")
        b = _as_float64(b_raw, f"baseline output of sample {index}")
        if a.shape != b.shape:
            raise BadInputError(
                f"sample {index}: artifact output has shape {list(a.shape)} but the baseline {list(b.shape)}; "
                "the artifact does not compute the same tensor"
            )
        a = a.ravel()
        b = b.ravel()
        d = np.abs(a - b)
        if d.size:
            maxima.append(float(np.max(d)))  # np.max propagates NaN; Python's max() would hide it
        sum_abs += float(np.sum(d))
        sum_signal += float(np.dot(b, b))
        sum_noise += float(np.dot(d, d))
        elements += d.size
        nonfinite += int(np.count_nonzero(~np.isfinite(a) & np.isfinite(b)))
        cosines.append(_cosine(a, b))
    cos = np.asarray(cosines, dtype=np.float64)
    return {
        "max_abs": float(np.max(maxima)) if maxima else 0.0,
        "mean_abs": sum_abs / elements if elements else 0.0,
        "cosine_mean": float(np.mean(cos)),
        "cosine_min": float(np.min(cos)),
        "sqnr_db": _sqnr_db(sum_signal, sum_noise),
        "nonfinite": nonfinite,
        "cosines": [round(float(c), COSINE_DIGITS) for c in cos],
    }


def _sqnr_db(signal: float, noise: float) -> float:
    """`10 log10(signal / noise)` clamped to +-SQNR_CAP_DB; NaN in, NaN out."""
    if math.isnan(signal) or math.isnan(noise):
        return math.nan
    if noise == 0.0:
        return SQNR_CAP_DB
    if signal == 0.0:
        return -SQNR_CAP_DB
    if math.isinf(noise):
        return -SQNR_CAP_DB if not math.isinf(signal) else math.nan
    if math.isinf(signal):
        return SQNR_CAP_DB
    return min(SQNR_CAP_DB, max(-SQNR_CAP_DB, 10.0 * math.log10(signal / noise)))


def degeneracy(column: Sequence[np.ndarray]) -> str | None:
    """Why one model's output cannot carry a drift measurement, or None when it can.

    "all zero": every element of every sample is 0 (two all-zero models agree at cosine 1 and
    200 dB). "constant across samples": with two or more samples of finite values, every sample
    equals the first to within `CONSTANT_RTOL` of the largest magnitude (a model that ignores its input).
    """
    arrays = [np.asarray(x, dtype=np.float64).ravel() for x in column]
    if not arrays or any(not np.all(np.isfinite(a)) for a in arrays):
        return None  # non-finite values are reported by `nonfinite` and NaN metrics
    peak = max((float(np.max(np.abs(a))) if a.size else 0.0) for a in arrays)
    if peak == 0.0:
        return "all zero"
    if len(arrays) > 1 and all(a.shape == arrays[0].shape for a in arrays):
        spread = max(float(np.max(np.abs(a - arrays[0]))) if a.size else 0.0 for a in arrays[1:])
        if spread <= CONSTANT_RTOL * peak:
            return "constant across samples"
    return None


def looks_like_class_scores(sample_output: np.ndarray) -> bool:
    """Whether one sample's output looks like a vector of per-class scores (logits or probabilities).

    True for a floating-point array whose size equals its last dimension, with at least two
    classes: `(C,)`, `(1, C)`, `(1, 1, C)`. Why a shape heuristic: the harness knows nothing of the
    task, and top-1 agreement over anything else (an embedding, a feature map, a single
    regression value) would be a meaningless number in the report.

    Args:
        sample_output: One sample's value of one output (batch 1).

    Returns:
        Whether top-1 metrics make sense for this output.
    """
    array = np.asarray(sample_output)
    if not np.issubdtype(array.dtype, np.floating) or array.ndim == 0:
        return False
    return array.shape[-1] >= 2 and array.size == array.shape[-1]


def _match_outputs(artifact_names: list[str], baseline_names: list[str]) -> list[tuple[str, str]]:
    """Pair (baseline name, artifact name): by name when the artifact has every baseline name, else by position."""
    if all(name in artifact_names for name in baseline_names):
        return [(name, name) for name in baseline_names]
    if len(artifact_names) == len(baseline_names):
        logger.info(
            "output names differ (artifact %s, baseline %s); matching them by position",
            artifact_names,
            baseline_names,
        )
        return list(zip(baseline_names, artifact_names))
    raise BadInputError(
        f"cannot match the artifact's outputs {artifact_names} to the baseline's {baseline_names}: "
        "names differ and so do their counts; compare models that compute the same outputs"
    )


def _column(outputs: Sequence[Mapping[str, np.ndarray]], name: str, who: str) -> list[np.ndarray]:
    """One output's value on every sample, failing clearly when a sample lacks it."""
    column = []
    for index, sample in enumerate(outputs):
        if name not in sample:
            raise BadInputError(f"{who} output '{name}' is missing for sample {index} (it has {sorted(sample)})")
        column.append(np.asarray(sample[name]))
    return column


def _validate_labels(labels: Any, samples: int) -> np.ndarray:
    """Return labels as a 1-D int64 array of one label per sample, or raise BadInputError."""
    array = np.asarray(labels)
    if array.ndim != 1:
        raise BadInputError(f"labels must be a 1-D array (one class index per sample), got shape {list(array.shape)}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise BadInputError(f"labels must be integer class indices, got dtype {array.dtype}")
    if array.shape[0] != samples:
        raise BadInputError(f"{array.shape[0]} labels for {samples} samples; give exactly one label per sample")
    return array.astype(np.int64)


def drift(
    artifact_outputs: Sequence[Mapping[str, np.ndarray]],
    baseline_outputs: Sequence[Mapping[str, np.ndarray]],
    labels: np.ndarray | None = None,
) -> dict[str, Any]:
    """Compare every output of an artifact with its baseline over the same samples.

    Outputs are matched by name; when the artifact lacks some baseline name but has as many outputs,
    they are matched by position instead, because a compiler or converter may rename outputs. The
    result is keyed by the baseline's names (the source model's vocabulary). The "first output" is
    the baseline's first output (outputs in declaration order) and its matched artifact output.

    Top-1 metrics are computed only when the first output looks like class scores
    (`looks_like_class_scores`) in both models, using `argmax` of each sample's flattened scores:

    - `top1_agreement = mean_i [argmax a_i == argmax b_i]`, or None when not class scores.
    - With labels: `accuracy = mean_i [argmax a_i == label_i]`, `baseline_accuracy` likewise for
      the baseline, `accuracy_drop_pp = (baseline_accuracy - accuracy) * 100` (percentage points;
      negative when the artifact is more accurate). All three are None without labels.

    Args:
        artifact_outputs: One `{output name: array}` per sample from the artifact.
        baseline_outputs: The same from the baseline, same samples in the same order.
        labels: Optional 1-D integer class index per sample.

    Returns:
        `{"outputs": {name: output_drift(...)}, "degenerate": {name: why, for outputs where either
        model's output is all zero or constant across samples (see `degeneracy`)}, "top1_agreement",
        "accuracy", "baseline_accuracy", "accuracy_drop_pp"}`.

    Raises:
        BadInputError: If sample counts differ or are zero, outputs cannot be matched or have
            different shapes, labels are not one integer per sample or index past the class count,
            or labels are given but the first output is not class scores.
    """
    if len(artifact_outputs) != len(baseline_outputs):
        raise BadInputError(
            f"artifact has outputs for {len(artifact_outputs)} samples but the baseline for {len(baseline_outputs)}"
        )
    samples = len(baseline_outputs)
    if samples == 0:
        raise BadInputError("no samples to compare; give at least one sample")
    label_array = None if labels is None else _validate_labels(labels, samples)

    pairs = _match_outputs(list(artifact_outputs[0]), list(baseline_outputs[0]))
    per_output: dict[str, dict[str, float]] = {}
    degenerate: dict[str, str] = {}
    columns: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    for base_name, art_name in pairs:
        art_column = _column(artifact_outputs, art_name, "artifact")
        base_column = _column(baseline_outputs, base_name, "baseline")
        columns[base_name] = (art_column, base_column)
        per_output[base_name] = output_drift(art_column, base_column)
        found = {who: degeneracy(column) for who, column in (("artifact", art_column), ("baseline", base_column))}
        if any(found.values()):
            degenerate[base_name] = "; ".join(f"{who} output {why}" for who, why in found.items() if why)

    result: dict[str, Any] = {
        "outputs": per_output,
        "degenerate": degenerate,
        "top1_agreement": None,
        "accuracy": None,
        "baseline_accuracy": None,
        "accuracy_drop_pp": None,
    }
    if not pairs:
        if label_array is not None:
            raise BadInputError("labels were given but the models have no outputs to score")
        return result
    first = pairs[0][0]
    art_first, base_first = columns[first]
    is_scores = looks_like_class_scores(art_first[0]) and looks_like_class_scores(base_first[0])
    if not is_scores:
        if label_array is not None:
            raise BadInputError(
                f"labels were given but the first output '{first}' (shape {list(base_first[0].shape)}, "
                f"dtype {base_first[0].dtype}) does not look like class scores; accuracy needs a model whose "
                "first output is a float vector of per-class scores, so drop the labels for this model"
            )
        return result

    art_top1 = np.array([int(np.argmax(np.ravel(x))) for x in art_first], dtype=np.int64)
    base_top1 = np.array([int(np.argmax(np.ravel(x))) for x in base_first], dtype=np.int64)
    result["top1_agreement"] = float(np.mean(art_top1 == base_top1))
    if label_array is not None:
        classes = int(base_first[0].shape[-1])
        bad = label_array[(label_array < 0) | (label_array >= classes)]
        if bad.size:
            raise BadInputError(
                f"labels must be class indices in [0, {classes}) for the first output '{first}', "
                f"found {sorted(set(bad.tolist()))[:5]}; are the labels 1-based or for another model?"
            )
        accuracy = float(np.mean(art_top1 == label_array))
        baseline_accuracy = float(np.mean(base_top1 == label_array))
        result.update(
            accuracy=accuracy,
            baseline_accuracy=baseline_accuracy,
            accuracy_drop_pp=(baseline_accuracy - accuracy) * 100.0,
        )
    return result
