"""Tests for edgec.data: .npz datasets (stacked and ragged), every user error, the writer, random feeds, labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgec.data import DYNAMIC_DIM_DEFAULT, load_labels, load_samples, parse_input_map, random_samples, save_samples
from edgec.errors import BadInputError
from edgec.tensors import TensorSpec

F32 = np.dtype(np.float32)
I64 = np.dtype(np.int64)

IMAGE = TensorSpec("image", (1, 3, 4, 4), F32)
TOKENS = TensorSpec("tokens", ("batch", "seq"), I64)


def _npz(tmp_path: Path, name: str = "data.npz", **arrays: np.ndarray) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


# --------------------------------------------------------------------------------------------
# load_samples: the two layouts
# --------------------------------------------------------------------------------------------


def test_layout_with_batch_axis(tmp_path: Path) -> None:
    """Rank equal to the input's: samples are sliced x[i:i+1] along the batch axis."""
    spec = TensorSpec("x", ("N", 3), F32)
    x = np.arange(15, dtype=np.float32).reshape(5, 3)
    samples = load_samples(_npz(tmp_path, x=x), [spec])
    assert len(samples) == 5
    for i, feed in enumerate(samples):
        assert list(feed) == ["x"]
        assert feed["x"].shape == (1, 3)
        np.testing.assert_array_equal(feed["x"][0], x[i])


def test_input_map_feeds_keys_saved_under_other_names(tmp_path: Path) -> None:
    x = np.zeros((2, 1, 3, 4, 4), np.float32)
    tokens = [np.arange(n, dtype=np.int64)[None] for n in (3, 5)]
    path = _npz(tmp_path, pixels=x, **{"ids/0": tokens[0], "ids/1": tokens[1]})
    samples = load_samples(path, [IMAGE, TOKENS], input_map=parse_input_map(["pixels=image", "ids=tokens"]))
    assert [list(feed) for feed in samples] == [["image", "tokens"]] * 2
    np.testing.assert_array_equal(samples[1]["tokens"], tokens[1])
    with pytest.raises(BadInputError, match=r"--input-map names \['imgae'\], but the model's inputs are"):
        load_samples(path, [IMAGE, TOKENS], input_map={"pixels": "imgae"})
    with pytest.raises(BadInputError, match="tokens"):  # an unmapped input still needs its own key
        load_samples(path, [IMAGE, TOKENS], input_map={"pixels": "image"})


@pytest.mark.parametrize("text", ["pixels", "=image", "pixels="])
def test_input_map_syntax(text: str) -> None:
    with pytest.raises(BadInputError, match="expected KEY=NAME"):
        parse_input_map([text])
    assert parse_input_map(["a=x, b=y", "c=z"]) == {"a": "x", "b": "y", "c": "z"}


def test_layout_without_batch_axis(tmp_path: Path) -> None:
    """Rank one more than the input's: each x[i] is a complete input."""
    x = np.random.default_rng(0).standard_normal((4, 1, 3, 4, 4)).astype(np.float32)
    samples = load_samples(_npz(tmp_path, image=x), [IMAGE])
    assert len(samples) == 4
    for i, feed in enumerate(samples):
        assert feed["image"].shape == (1, 3, 4, 4)
        np.testing.assert_array_equal(feed["image"], x[i])


def test_two_inputs_and_dynamic_dims(tmp_path: Path) -> None:
    tokens = np.arange(6 * 7, dtype=np.int64).reshape(6, 7)
    mask = np.ones((6, 7), np.int64)
    specs = [TOKENS, TensorSpec("mask", ("batch", "seq"), I64)]
    samples = load_samples(_npz(tmp_path, tokens=tokens, mask=mask), specs)
    assert len(samples) == 6
    assert list(samples[2]) == ["tokens", "mask"]
    np.testing.assert_array_equal(samples[2]["tokens"], tokens[2:3])


# --------------------------------------------------------------------------------------------
# load_samples: errors
# --------------------------------------------------------------------------------------------


def _bad(path: Path, specs: list[TensorSpec], *fragments: str, what: str = "calibration data") -> str:
    with pytest.raises(BadInputError) as info:
        load_samples(path, specs, what=what)
    message = str(info.value)
    assert message.startswith(what), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def test_missing_file(tmp_path: Path) -> None:
    _bad(tmp_path / "nope.npz", [IMAGE], "no such file", "nope.npz")


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    _bad(tmp_path, [IMAGE], "is a directory")


def test_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    path.write_bytes(b"this is not numpy data at all" * 10)
    _bad(path, [IMAGE], "cannot read", "data.npz")


def test_truncated_npz(tmp_path: Path) -> None:
    good = _npz(tmp_path, "good.npz", image=np.zeros((20, 1, 3, 4, 4), np.float32))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(good.read_bytes()[:200])
    _bad(bad, [IMAGE], "cannot read")


def test_single_npy_array(tmp_path: Path) -> None:
    path = tmp_path / "data.npy"
    np.save(path, np.zeros((2, 1, 3, 4, 4), np.float32))
    _bad(path, [IMAGE], "single .npy", ".npz keyed by input name")


def test_object_array_is_refused(tmp_path: Path) -> None:
    _bad(_npz(tmp_path, image=np.array([{"a": 1}], dtype=object)), [IMAGE], "cannot read")


def test_wrong_keys(tmp_path: Path) -> None:
    message = _bad(_npz(tmp_path, img=np.zeros((2, 1, 3, 4, 4), np.float32)), [IMAGE], "image", "img")
    assert "missing ['image']" in message and "unexpected ['img']" in message


def test_extra_key(tmp_path: Path) -> None:
    x = np.zeros((2, 1, 3, 4, 4), np.float32)
    message = _bad(_npz(tmp_path, image=x, extra=x), [IMAGE], "extra")
    assert "unexpected ['extra']" in message


def test_wrong_dtype(tmp_path: Path) -> None:
    _bad(_npz(tmp_path, image=np.zeros((2, 1, 3, 4, 4), np.float64)), [IMAGE], "'image'", "float64", "float32")


def test_wrong_rank(tmp_path: Path) -> None:
    _bad(_npz(tmp_path, image=np.zeros((2, 3, 4), np.float32)), [IMAGE], "'image'", "shape [2, 3, 4]")


def test_wrong_shape(tmp_path: Path) -> None:
    _bad(_npz(tmp_path, image=np.zeros((2, 1, 3, 5, 4), np.float32)), [IMAGE], "'image'", "axis 2")


def test_wrong_fixed_batch(tmp_path: Path) -> None:
    # batch-axis layout with a fixed batch of 1: slices are (1, 3, 4, 4) and fine...
    load_samples(_npz(tmp_path, "ok.npz", image=np.zeros((3, 3, 4, 4), np.float32)), [IMAGE])
    # ...but a rank-5 array whose per-sample batch is 2 is not
    _bad(_npz(tmp_path, image=np.zeros((3, 2, 3, 4, 4), np.float32)), [IMAGE], "'image'", "axis 0")


def test_empty_array(tmp_path: Path) -> None:
    _bad(_npz(tmp_path, image=np.zeros((0, 1, 3, 4, 4), np.float32)), [IMAGE], "'image'", "empty")


def test_scalar_array(tmp_path: Path) -> None:
    _bad(_npz(tmp_path, image=np.float32(1.0)), [IMAGE], "'image'")


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite(tmp_path: Path, bad_value: float) -> None:
    x = np.zeros((2, 1, 3, 4, 4), np.float32)
    x[1, 0, 2, 3, 1] = bad_value
    _bad(_npz(tmp_path, image=x), [IMAGE], "'image'", "NaN or infinite")


def test_different_sample_counts(tmp_path: Path) -> None:
    specs = [TOKENS, TensorSpec("mask", ("batch", "seq"), I64)]
    path = _npz(tmp_path, tokens=np.zeros((5, 7), np.int64), mask=np.zeros((4, 7), np.int64))
    message = _bad(path, specs, "different sample counts")
    assert "'tokens': 5" in message and "'mask': 4" in message


def test_default_label_is_data(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=r"^data: "):
        load_samples(tmp_path / "missing.npz", [IMAGE])


# --------------------------------------------------------------------------------------------
# load_samples: the ragged form (NAME/INDEX, one array per sample)
# --------------------------------------------------------------------------------------------

MASK = TensorSpec("mask", ("batch", "seq"), I64)


def _sequences(lengths: list[int], batch_axis: bool = True) -> list[np.ndarray]:
    shape = (lambda n: (1, n)) if batch_axis else (lambda n: (n,))
    return [np.arange(n, dtype=np.int64).reshape(shape(n)) + 100 * i for i, n in enumerate(lengths)]


def test_ragged_samples_keep_their_own_lengths(tmp_path: Path) -> None:
    tokens = _sequences([3, 1, 5])
    arrays = {f"tokens/{i}": t for i, t in enumerate(tokens)}
    arrays |= {f"mask/{i}": np.ones_like(t) for i, t in enumerate(tokens)}
    samples = load_samples(_npz(tmp_path, **arrays), [TOKENS, MASK])
    assert [list(feed) for feed in samples] == [["tokens", "mask"]] * 3
    for feed, expected in zip(samples, tokens):
        np.testing.assert_array_equal(feed["tokens"], expected)
        assert feed["mask"].shape == expected.shape


def test_ragged_samples_without_batch_axis_get_one(tmp_path: Path) -> None:
    tokens = _sequences([2, 4], batch_axis=False)
    samples = load_samples(_npz(tmp_path, **{f"tokens/{i}": t for i, t in enumerate(tokens)}), [TOKENS])
    assert [feed["tokens"].shape for feed in samples] == [(1, 2), (1, 4)]
    np.testing.assert_array_equal(samples[1]["tokens"][0], tokens[1])


def test_ragged_indices_are_numeric_not_lexical(tmp_path: Path) -> None:
    tokens = _sequences(list(range(1, 13)))
    samples = load_samples(_npz(tmp_path, **{f"tokens/{i}": t for i, t in enumerate(tokens)}), [TOKENS])
    assert [feed["tokens"].shape[1] for feed in samples] == list(range(1, 13))


def test_one_input_stacked_another_ragged(tmp_path: Path) -> None:
    image = np.zeros((2, 1, 3, 4, 4), np.float32)
    tokens = _sequences([2, 3])
    path = _npz(tmp_path, image=image, **{f"tokens/{i}": t for i, t in enumerate(tokens)})
    samples = load_samples(path, [IMAGE, TOKENS])
    assert [feed["image"].shape for feed in samples] == [(1, 3, 4, 4)] * 2
    assert [feed["tokens"].shape for feed in samples] == [(1, 2), (1, 3)]


def test_input_name_with_a_slash(tmp_path: Path) -> None:
    spec = TensorSpec("encoder/ids", ("batch", "seq"), I64)
    samples = load_samples(_npz(tmp_path, **{"encoder/ids/0": np.ones((1, 2), np.int64)}), [spec])
    assert samples[0]["encoder/ids"].shape == (1, 2)


def test_ragged_and_stacked_for_one_input(tmp_path: Path) -> None:
    path = _npz(tmp_path, tokens=np.zeros((2, 3), np.int64), **{"tokens/0": np.zeros((1, 3), np.int64)})
    _bad(path, [TOKENS], "'tokens'", "both stacked", "keep one form")


@pytest.mark.parametrize("indices", [[0, 1, 3], [1, 2], [5]])
def test_ragged_gap_in_indices(tmp_path: Path, indices: list[int]) -> None:
    first_gap = min(set(range(len(indices))) - set(indices))
    path = _npz(tmp_path, **{f"tokens/{i}": np.zeros((1, 2), np.int64) for i in indices})
    _bad(path, [TOKENS], f"lacks 'tokens/{first_gap}'", "without gaps")


@pytest.mark.parametrize("key", ["ids/0", "tokens/01", "tokens/-1", "tokens/x", "tokens/"])
def test_ragged_unknown_key(tmp_path: Path, key: str) -> None:
    path = _npz(tmp_path, **{"tokens/0": np.zeros((1, 2), np.int64), key: np.zeros((1, 2), np.int64)})
    _bad(path, [TOKENS], f"unexpected ['{key}']")


def test_ragged_input_missing(tmp_path: Path) -> None:
    path = _npz(tmp_path, **{"tokens/0": np.zeros((1, 2), np.int64)})
    _bad(path, [TOKENS, MASK], "missing ['mask']", "unexpected []")


def test_many_unknown_keys_are_summarized(tmp_path: Path) -> None:
    path = _npz(tmp_path, **{f"ids/{i}": np.zeros((1, 2), np.int64) for i in range(50)})
    message = _bad(path, [TOKENS], "'ids/0'", "and 44 more")
    assert "\n" not in message and "ids/49" not in message


def test_ragged_inputs_with_different_counts(tmp_path: Path) -> None:
    arrays = {f"tokens/{i}": np.zeros((1, 2), np.int64) for i in range(3)} | {"mask/0": np.zeros((1, 2), np.int64)}
    _bad(_npz(tmp_path, **arrays), [TOKENS, MASK], "different sample counts", "'tokens': 3", "'mask': 1")


@pytest.mark.parametrize(
    ("sample", "fragments"),
    [
        (np.zeros((1, 3), np.int32), ["dtype int32", "int64"]),
        (np.zeros((1, 1, 3), np.int64), ["rank 3"]),
        (np.zeros((1, 0), np.int64), ["empty"]),
    ],
)
def test_ragged_sample_is_checked_on_its_own(tmp_path: Path, sample: np.ndarray, fragments: list[str]) -> None:
    path = _npz(tmp_path, **{"tokens/0": np.zeros((1, 2), np.int64), "tokens/1": sample})
    _bad(path, [TOKENS], "sample 1 (key 'tokens/1')", *fragments)


def test_ragged_sample_fixed_dim_and_finiteness(tmp_path: Path) -> None:
    spec = TensorSpec("x", ("N", 3, "t"), F32)
    good = np.zeros((3, 2), np.float32)
    wrong_dim = np.zeros((4, 2), np.float32)
    _bad(_npz(tmp_path, "dim.npz", **{"x/0": good, "x/1": wrong_dim}), [spec], "sample 1", "axis 1")
    nan = np.full((3, 5), np.nan, np.float32)
    _bad(_npz(tmp_path, "nan.npz", **{"x/0": good, "x/1": nan}), [spec], "sample 1", "NaN")
    with_batch = np.zeros((1, 3, 7), np.float32)
    samples = load_samples(_npz(tmp_path, **{"x/0": good, "x/1": with_batch}), [spec])
    assert [feed["x"].shape for feed in samples] == [(1, 3, 2), (1, 3, 7)]


def test_stacked_scalar_is_refused(tmp_path: Path) -> None:
    _bad(_npz(tmp_path, tokens=np.int64(3)), [TOKENS], "'tokens'", "scalar")


# --------------------------------------------------------------------------------------------
# save_samples
# --------------------------------------------------------------------------------------------


def _keys(path: Path) -> list[str]:
    with np.load(path) as archive:
        return sorted(archive.files)


def test_save_samples_same_shapes_are_stacked(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    feeds = [{"image": rng.standard_normal((1, 3, 4, 4)).astype(np.float32)} for _ in range(3)]
    path = tmp_path / "d.npz"
    save_samples(path, feeds)
    assert _keys(path) == ["image"]
    for loaded, saved in zip(load_samples(path, [IMAGE]), feeds, strict=True):
        np.testing.assert_array_equal(loaded["image"], saved["image"])


def test_save_samples_different_shapes_are_ragged(tmp_path: Path) -> None:
    tokens = _sequences([4, 2, 7])
    feeds = [{"tokens": t, "mask": np.ones_like(t)} for t in tokens]
    path = tmp_path / "d.npz"
    save_samples(path, feeds)
    assert _keys(path) == sorted(f"{name}/{i}" for name in ("tokens", "mask") for i in range(3))
    for loaded, saved in zip(load_samples(path, [TOKENS, MASK]), feeds, strict=True):
        for name in ("tokens", "mask"):
            np.testing.assert_array_equal(loaded[name], saved[name])


def test_save_samples_chooses_the_form_per_input(tmp_path: Path) -> None:
    tokens = _sequences([2, 3])
    feeds = [{"image": np.zeros((1, 3, 4, 4), np.float32), "tokens": t} for t in tokens]
    path = tmp_path / "d.npz"
    save_samples(path, feeds)
    assert _keys(path) == ["image", "tokens/0", "tokens/1"]
    assert [feed["tokens"].shape for feed in load_samples(path, [IMAGE, TOKENS])] == [(1, 2), (1, 3)]


def test_save_samples_replaces_the_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    path.write_bytes(b"old")
    save_samples(path, [{"tokens": np.ones((1, 2), np.int64)}])
    assert [p.name for p in tmp_path.iterdir()] == ["d.npz"]
    assert load_samples(path, [TOKENS])[0]["tokens"].shape == (1, 2)


@pytest.mark.parametrize(
    ("feeds", "fragment"),
    [
        ([], "at least one sample"),
        ([{"tokens": np.ones((1, 2), np.int64)}, {"mask": np.ones((1, 2), np.int64)}], "sample 1 has inputs ['mask']"),
        ([{"tokens": np.ones((1, 2), np.int64)}, {"tokens": np.ones((1, 2), np.int32)}], "different dtypes"),
    ],
)
def test_save_samples_refuses_inconsistent_feeds(
    tmp_path: Path, feeds: list[dict[str, np.ndarray]], fragment: str
) -> None:
    with pytest.raises(ValueError) as info:
        save_samples(tmp_path / "d.npz", feeds)
    assert fragment in str(info.value)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# random_samples
# --------------------------------------------------------------------------------------------


def test_random_samples_deterministic() -> None:
    specs = [IMAGE, TOKENS]
    a = random_samples(specs, 3, seed=5)
    b = random_samples(specs, 3, seed=5)
    c = random_samples(specs, 3, seed=6)
    assert len(a) == 3
    for fa, fb in zip(a, b):
        for name in ("image", "tokens"):
            np.testing.assert_array_equal(fa[name], fb[name])
    assert not np.array_equal(a[0]["image"], c[0]["image"])
    assert not np.array_equal(a[0]["image"], a[1]["image"])  # samples differ from each other


def test_random_samples_shapes_and_dtypes() -> None:
    specs = [
        IMAGE,
        TOKENS,
        TensorSpec("flags", (None, 2, "n"), np.dtype(np.bool_)),
        TensorSpec("ids", (2,), np.dtype(np.int32)),
    ]
    (feed,) = random_samples(specs, 1)
    assert feed["image"].shape == (1, 3, 4, 4) and feed["image"].dtype == np.float32
    # dynamic batch -> 1, other dynamic dims -> DYNAMIC_DIM_DEFAULT
    assert feed["tokens"].shape == (1, DYNAMIC_DIM_DEFAULT) and feed["tokens"].dtype == np.int64
    assert feed["tokens"].min() >= 0 and feed["tokens"].max() < 10
    assert feed["flags"].shape == (1, 2, DYNAMIC_DIM_DEFAULT) and feed["flags"].dtype == np.bool_
    assert feed["ids"].shape == (2,) and feed["ids"].dtype == np.int32
    for spec in specs:
        assert spec.accepts(feed[spec.name]) is None


def test_random_samples_zero_count() -> None:
    assert random_samples([IMAGE], 0) == []


# --------------------------------------------------------------------------------------------
# load_labels
# --------------------------------------------------------------------------------------------


def test_load_labels_ok(tmp_path: Path) -> None:
    path = tmp_path / "labels.npy"
    np.save(path, np.array([3, 1, 4], np.int64))
    np.testing.assert_array_equal(load_labels(path, 3), [3, 1, 4])


@pytest.mark.parametrize(
    ("labels", "fragment"),
    [
        (np.array([1, 2], np.int64), "has 2 labels but the data has 3 samples"),
        (np.array([1.0, 2.0, 3.0], np.float32), "1-D integer"),
        (np.array([[1], [2], [3]], np.int64), "1-D integer"),
        (np.array([True, False, True]), "1-D integer"),
    ],
)
def test_load_labels_errors(tmp_path: Path, labels: np.ndarray, fragment: str) -> None:
    path = tmp_path / "labels.npy"
    np.save(path, labels)
    with pytest.raises(BadInputError, match=r"^labels: ") as info:
        load_labels(path, 3)
    assert fragment in str(info.value)


def test_load_labels_missing_and_garbage(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no such file"):
        load_labels(tmp_path / "labels.npy", 3)
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"\x00\x01not numpy")
    with pytest.raises(BadInputError, match="cannot read"):
        load_labels(garbage, 3)


def test_load_labels_npz_is_refused(tmp_path: Path) -> None:
    path = _npz(tmp_path, "labels.npz", y=np.zeros(3, np.int64))
    with pytest.raises(BadInputError, match="npz archive.*1-D .npy"):
        load_labels(path, 3)


def test_fixed_batch_larger_than_one_is_fed_in_chunks_of_that_batch(tmp_path: Path) -> None:
    spec = TensorSpec("x", (2, 3), F32)
    rows = np.arange(12, dtype=np.float32).reshape(4, 3)
    samples = load_samples(_npz(tmp_path, "d.npz", x=rows), [spec])
    assert len(samples) == 2
    np.testing.assert_array_equal(samples[1]["x"], rows[2:4])
    with pytest.raises(BadInputError, match="not a multiple of the model's fixed batch 2"):
        load_samples(_npz(tmp_path, "odd.npz", x=rows[:3]), [spec])


@pytest.mark.parametrize("field, value", [("method", 99), ("flags", 1)], ids=["unknown-compression", "encrypted"])
def test_an_npz_zipfile_cannot_open_is_one_error(tmp_path: Path, field: str, value: int) -> None:
    """zipfile raises NotImplementedError for a compression method it lacks and RuntimeError for an encrypted member."""
    path = tmp_path / "data.npz"
    np.savez(path, image=np.zeros((2, 3, 4, 4), np.float32))
    raw = bytearray(path.read_bytes())
    offsets = {"method": (8, 10), "flags": (6, 8)}[field]  # in the local and the central header
    for header, offset in zip((b"PK\x03\x04", b"PK\x01\x02"), offsets):
        raw[raw.find(header) + offset] = value
    path.write_bytes(bytes(raw))
    _bad(path, [IMAGE], "cannot read")
