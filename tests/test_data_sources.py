"""Data sources: folders (with broken files), CIFAR pickles, digits, splits, errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_folder
from PIL import Image

from hmff_edge.data import (
    decode_split,
    load_eval_arrays,
    resolve_source,
    split_validation,
)
from hmff_edge.errors import DataError
from hmff_edge.preprocess import load_rgb


def _messy_folder(root: Path) -> Path:
    """Two RGB classes plus a grayscale PNG, an RGBA PNG, a corrupt JPEG and a text .jpg."""
    make_image_folder(root, classes=("cat", "dog"), per_class=4, size=12)
    Image.fromarray(np.full((10, 14), 90, np.uint8), "L").save(root / "cat" / "gray.png")
    rgba = np.zeros((9, 9, 4), np.uint8)
    rgba[..., 1] = 200
    rgba[..., 3] = 128
    Image.fromarray(rgba, "RGBA").save(root / "dog" / "rgba.png")
    good = (root / "cat" / "000.png").read_bytes()
    Image.open(root / "cat" / "000.png").save(root / "cat" / "full.jpg")
    (root / "cat" / "corrupt.jpg").write_bytes((root / "cat" / "full.jpg").read_bytes()[:40])
    (root / "dog" / "notes.jpg").write_text("this is not an image")
    assert good
    return root


def test_messy_folder_skips_and_counts_bad_files(tmp_path):
    src = resolve_source(_messy_folder(tmp_path / "messy"))
    assert src.kind == "folder" and src.class_names == ["cat", "dog"]
    assert len(src.train) == 13  # every file with an image extension
    dec = decode_split(src.train, 16)
    bad = sorted(Path(p).name for p, _ in dec.skipped)
    assert bad == ["corrupt.jpg", "notes.jpg"]
    assert dec.images.shape == (11, 16, 16, 3) and dec.images.dtype == np.uint8
    assert len(dec.labels) == 11
    # grayscale and RGBA became 3-channel RGB, resized by the shared preprocessing
    paths = [p for p in src.train.paths if Path(p).name not in bad]
    i = [Path(p).name for p in paths].index("gray.png")
    assert np.array_equal(dec.images[i], load_rgb(paths[i], 16))
    assert (dec.images[i] == 90).all()


def test_eval_arrays_are_the_runtime_pixels(tmp_path):
    root = make_image_folder(tmp_path / "f", per_class=3, size=21)
    x, y = load_eval_arrays(root, 16, split="all")
    src = resolve_source(root)
    for k in (0, 4, 8):
        assert np.array_equal(x[k], load_rgb(src.train.paths[k], 16))
    assert y.tolist() == src.train.labels.tolist()


@pytest.mark.parametrize("layout, message", [
    ("empty_class", "class folder"),
    ("no_images", "contains no images"),
    ("one_class", "only one class"),
    ("loose_files", "no class subfolders"),
])
def test_folder_errors_name_the_folder(tmp_path, layout, message):
    root = tmp_path / layout
    if layout == "empty_class":
        make_image_folder(root, classes=("a", "b"), per_class=2)
        (root / "empty").mkdir()
        named = str(root / "empty")
    elif layout == "no_images":
        (root / "a").mkdir(parents=True)
        (root / "a" / "readme.txt").write_text("x")
        named = str(root)
    elif layout == "one_class":
        make_image_folder(root, classes=("only",), per_class=2)
        named = str(root)
    else:
        root.mkdir()
        Image.new("RGB", (4, 4)).save(root / "x.png")
        named = str(root)
    with pytest.raises(DataError, match=message) as exc:
        resolve_source(root)
    assert named in str(exc.value)


def test_missing_path_and_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        resolve_source(tmp_path / "nope")
    f = tmp_path / "f.txt"
    f.write_text("x")
    with pytest.raises(DataError, match="is a file"):
        resolve_source(f)


def test_train_test_folder(tmp_path):
    make_image_folder(tmp_path / "d" / "train", classes=("a", "b", "c"), per_class=3)
    make_image_folder(tmp_path / "d" / "test", classes=("b", "c"), per_class=2)
    src = resolve_source(tmp_path / "d")
    assert src.kind == "folder-split"
    assert src.class_names == ["a", "b", "c"]
    assert sorted(set(src.test.labels.tolist())) == [1, 2]  # mapped by name, not position


def _write_cifar(folder: Path, n_per_batch=6, batches=2) -> np.ndarray:
    """Batches in the published format: dict of bytes keys, data (N, 3072) R-G-B planes."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    first = None
    for b in range(1, batches + 1):
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = [int(i % 10) for i in range(n_per_batch)]
        with open(folder / f"data_batch_{b}", "wb") as fh:
            pickle.dump({b"batch_label": b"training batch", b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * n_per_batch}, fh, protocol=2)
        first = data if first is None else first
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({b"labels": [0, 1, 2], b"data": first[:3]}, fh, protocol=2)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)],
                     b"num_vis": 3072}, fh, protocol=2)
    return first


def test_cifar_pickles(tmp_path):
    first = _write_cifar(tmp_path / "cifar-10-batches-py")
    src = resolve_source(tmp_path)  # the parent folder works too
    assert src.kind == "cifar-pickle"
    assert src.class_names[:2] == ["c0", "c1"]
    assert src.train.images.shape == (12, 32, 32, 3)
    assert len(src.test) == 3
    # pixel (row 0, col 1) of image 0: red plane byte 1, green 1025, blue 2049
    assert src.train.images[0, 0, 1].tolist() == [first[0, 1], first[0, 1025], first[0, 2049]]
    x, y = load_eval_arrays(src, 40, split="test")
    assert x.shape == (3, 40, 40, 3) and y.tolist() == [0, 1, 2]


def test_cifar_pickle_refuses_code(tmp_path):
    d = tmp_path / "evil"
    d.mkdir()

    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(d / "data_batch_1", "wb") as fh:
        pickle.dump({b"data": Boom(), b"labels": [0]}, fh)
    with pytest.raises(DataError, match="refusing"):
        resolve_source(d)


def test_digits_default_and_split_determinism():
    pytest.importorskip("sklearn")  # the embedded digits ship with scikit-learn (train extra)
    src = resolve_source(None)
    assert src.kind == "digits" and len(src.train) == 1797 and src.num_classes == 10
    assert src.train.images.shape == (1797, 8, 8, 3)
    a_tr, a_va = split_validation(src.train, 0.1, seed=3)
    b_tr, b_va = split_validation(src.train, 0.1, seed=3)
    c_tr, c_va = split_validation(src.train, 0.1, seed=4)
    assert np.array_equal(a_va.images, b_va.images)
    assert not np.array_equal(a_va.images, c_va.images)
    assert len(a_va) + len(a_tr) == 1797 and abs(len(a_va) - 180) <= 10
    assert set(a_va.labels.tolist()) == set(range(10))  # stratified
    with pytest.raises(DataError, match="val-split"):
        split_validation(src.train, 1.5, 0)


@pytest.mark.tf
def test_cifar10_keyword_offline_message(monkeypatch):
    import keras

    def offline():
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    with pytest.raises(DataError, match="offline"):
        resolve_source("cifar10")
