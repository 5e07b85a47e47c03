"""Data sources: what images exist and which class each belongs to (no decoding here).

A :class:`DataSource` is either a list of files per split (image folders) or in-memory
``uint8`` arrays (CIFAR pickles, the embedded digits). :func:`resolve_source` turns what a
user typed after ``--data`` into one.

Supported specs:

- ``None`` or ``"digits"``: scikit-learn's handwritten digits (1,797 8x8 grayscale images,
  shipped inside the wheel, so no download), converted to RGB.
- ``"cifar10"`` (when no such path exists): CIFAR-10 through ``keras.datasets`` (downloads
  on first use into ``~/.keras/datasets``; a clear error when offline).
- a folder with ``data_batch_1`` ... ``test_batch`` (``cifar-10-batches-py``), or a folder
  holding such a ``cifar-10-batches-py`` folder.
- a folder with ``train/`` and ``test/`` subfolders, each one subfolder per class.
- a folder with one subfolder per class (Malaria's ``cell_images``, ``kvasir-dataset``).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hmff_edge.errors import DataError
from hmff_edge.preprocess import list_images

CIFAR10_LABELS = ["airplane", "automobile", "bird", "cat", "deer",
                  "dog", "frog", "horse", "ship", "truck"]


@dataclass
class Split:
    """One split: either ``paths`` (image files) or ``images`` (uint8 NxHxWx3), and labels."""

    labels: np.ndarray  # int64 class indices
    paths: list[str] | None = None
    images: np.ndarray | None = None

    def __len__(self) -> int:
        return int(len(self.labels))

    def subset(self, idx: np.ndarray) -> Split:
        """The rows ``idx`` of this split (a new object; arrays are copied by fancy indexing)."""
        idx = np.asarray(idx, dtype=np.int64)
        return Split(
            labels=self.labels[idx],
            paths=[self.paths[i] for i in idx] if self.paths is not None else None,
            images=self.images[idx] if self.images is not None else None,
        )


@dataclass
class DataSource:
    """A resolved data set: class names, a training split and an optional test split."""

    kind: str  # digits | cifar-pickle | cifar10-keras | folder | folder-split
    spec: str  # what the user passed (for config.json and messages)
    class_names: list[str]
    train: Split
    test: Split | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def describe(self) -> str:
        n_test = len(self.test) if self.test is not None else 0
        return (f"{self.kind} {self.spec!r}: {self.num_classes} classes, "
                f"{len(self.train)} train" + (f" + {n_test} test" if self.test else "") + " images")


def resolve_source(spec: str | os.PathLike | DataSource | None) -> DataSource:
    """Turn a ``--data`` value into a :class:`DataSource` (see the module docstring)."""
    if isinstance(spec, DataSource):
        return spec
    if spec is None or str(spec) == "digits":
        return load_digits_source()
    path = Path(spec).expanduser()
    if not path.exists():
        if str(spec).lower() in ("cifar10", "cifar-10"):
            return load_keras_cifar10()
        raise DataError(f"data source {str(spec)!r} does not exist (expected an image folder, "
                        "a cifar-10-batches-py folder, 'cifar10' or nothing for the digits)")
    if not path.is_dir():
        raise DataError(f"data source {str(path)!r} is a file; expected a folder")
    if (path / "data_batch_1").is_file():
        return load_cifar_pickles(path)
    if (path / "cifar-10-batches-py" / "data_batch_1").is_file():
        return load_cifar_pickles(path / "cifar-10-batches-py")
    if (path / "train").is_dir() and (path / "test").is_dir():
        names, train = scan_class_folders(path / "train")
        test_names, test = scan_class_folders(path / "test", min_classes=1)
        unknown = sorted(set(test_names) - set(names))
        if unknown:
            raise DataError(f"test folder {str(path / 'test')!r} has classes {unknown} that "
                            f"are not in the train folder (train classes: {names})")
        remap = np.array([names.index(n) for n in test_names], dtype=np.int64)
        test.labels = remap[test.labels]
        return DataSource("folder-split", str(path), names, train, test)
    names, train = scan_class_folders(path)
    return DataSource("folder", str(path), names, train)


def scan_class_folders(root: Path, *, min_classes: int = 2) -> tuple[list[str], Split]:
    """One subfolder per class (images found recursively inside it), sorted by name.

    Raises :class:`DataError` naming the folder for: no subfolders, a class folder without
    images, no images at all, fewer than ``min_classes`` classes.
    """
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not subdirs:
        loose = list_images(root)
        if loose:
            raise DataError(f"data folder {str(root)!r} holds {len(loose)} images but no class "
                            "subfolders; put each class in its own subfolder")
        raise DataError(f"data folder {str(root)!r} contains no images and no class subfolders")
    names: list[str] = []
    paths: list[str] = []
    labels: list[int] = []
    empty: list[str] = []
    for d in subdirs:
        files = list_images(d)
        if not files:
            empty.append(str(d))
            continue
        names.append(d.name)
        paths.extend(files)
        labels.extend([len(names) - 1] * len(files))
    if not paths:
        raise DataError(f"data folder {str(root)!r} contains no images "
                        f"(looked in {len(subdirs)} subfolders)")
    if empty:
        raise DataError(f"class folder {empty[0]!r} contains no images"
                        + (f" (and {len(empty) - 1} more empty class folders)" if len(empty) > 1
                           else ""))
    if len(names) < min_classes:
        raise DataError(f"data folder {str(root)!r} has only one class ({names[0]!r}); "
                        "a classifier needs at least 2 class subfolders")
    return names, Split(labels=np.asarray(labels, np.int64), paths=paths)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the published CIFAR batches (dicts, lists, bytes, numpy arrays) and nothing
    else, so that a crafted pickle cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 protocol-2 pickles store bytes (harmless)
    }

    def find_class(self, module: str, name: str):  # noqa: D102
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data pickle")


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            obj = _ArrayUnpickler(fh, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise DataError(f"cannot read CIFAR batch {str(path)!r}: {exc}") from exc
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR batch {str(path)!r} is not a dict")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = _read_pickle(path)
    if "data" not in d or ("labels" not in d and "fine_labels" not in d):
        raise DataError(f"CIFAR batch {str(path)!r} lacks 'data'/'labels' (keys: {sorted(d)})")
    data = np.asarray(d["data"], dtype=np.uint8)
    labels = np.asarray(d.get("labels", d.get("fine_labels")), dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataError(f"CIFAR batch {str(path)!r} has data of shape {data.shape} and "
                        f"{len(labels)} labels; expected (N, 3072) and N")
    # Published layout: each row is the red plane, then green, then blue, 32x32 row-major.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def load_cifar_pickles(folder: Path) -> DataSource:
    """CIFAR-10 in its published python form: ``data_batch_1..5``, ``test_batch``,
    ``batches.meta`` (label names)."""
    batches = sorted(folder.glob("data_batch_*"))
    xs, ys = zip(*(_cifar_batch(b) for b in batches), strict=True)
    names = _cifar_label_names(folder)
    train = Split(labels=np.concatenate(ys), images=np.concatenate(xs))
    test = None
    if (folder / "test_batch").is_file():
        tx, ty = _cifar_batch(folder / "test_batch")
        test = Split(labels=ty, images=tx)
    top = int(train.labels.max()) + 1
    if top > len(names):
        raise DataError(f"CIFAR batches in {str(folder)!r} have label {top - 1} but "
                        f"batches.meta names only {len(names)} classes")
    return DataSource("cifar-pickle", str(folder), names, train, test)


def _cifar_label_names(folder: Path) -> list[str]:
    """``batches.meta``'s label names, else the published CIFAR-10 ones."""
    meta = folder / "batches.meta"
    if meta.is_file():
        raw = _read_pickle(meta).get("label_names")
        if raw:
            return [n.decode() if isinstance(n, bytes) else str(n) for n in raw]
    return list(CIFAR10_LABELS)


def peek_class_names(spec: str | os.PathLike | None) -> list[str]:
    """The class names of a ``--data`` value without reading pixel data: folders are only
    listed, CIFAR batches not opened (their names come from ``batches.meta``). Raises the
    same :class:`DataError` as :func:`resolve_source` for a missing or unusable folder."""
    if spec is None or str(spec) == "digits":
        return [str(i) for i in range(10)]
    path = Path(spec).expanduser()
    if not path.exists() and str(spec).lower() in ("cifar10", "cifar-10"):
        return list(CIFAR10_LABELS)
    for folder in (path, path / "cifar-10-batches-py"):
        if (folder / "data_batch_1").is_file():
            return _cifar_label_names(folder)
    return resolve_source(path).class_names


def load_keras_cifar10() -> DataSource:
    """CIFAR-10 through ``keras.datasets`` (downloads once into ``~/.keras/datasets``)."""
    from hmff_edge._lazy import keras

    try:
        (x, y), (tx, ty) = keras().datasets.cifar10.load_data()
    except Exception as exc:  # urllib/HTTP/SSL/OS errors all mean "could not fetch"
        raise DataError(
            "could not fetch CIFAR-10 through Keras (is this machine offline?): "
            f"{type(exc).__name__}: {exc}. Download cifar-10-python.tar.gz elsewhere and pass "
            "--data path/to/cifar-10-batches-py, or pass an image folder"
        ) from exc
    return DataSource(
        "cifar10-keras", "cifar10", list(CIFAR10_LABELS),
        Split(labels=np.asarray(y).reshape(-1).astype(np.int64), images=np.asarray(x, np.uint8)),
        Split(labels=np.asarray(ty).reshape(-1).astype(np.int64), images=np.asarray(tx, np.uint8)),
    )


def load_digits_source() -> DataSource:
    """scikit-learn's digits (values 0..16) as 8x8 RGB uint8 images, classes "0".."9"."""
    from hmff_edge._lazy import require

    datasets = require("sklearn.datasets")
    d = datasets.load_digits()
    gray = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    return DataSource("digits", "digits", [str(i) for i in range(10)],
                      Split(labels=np.asarray(d.target, np.int64), images=rgb),
                      notes=["scikit-learn digits: 1797 8x8 grayscale images, upscaled"])


def split_validation(split: Split, val_split: float, seed: int) -> tuple[Split, Split]:
    """Stratified, deterministic train/validation split: the same ``seed`` gives the same rows.

    Each class with at least two images contributes ``round(n * val_split)`` (at least 1)
    images to validation.
    """
    if not 0.0 < val_split < 1.0:
        raise DataError(f"--val-split must be between 0 and 1 (exclusive), got {val_split}")
    rng = np.random.default_rng(seed)
    val_idx: list[np.ndarray] = []
    train_idx: list[np.ndarray] = []
    for c in np.unique(split.labels):
        idx = np.flatnonzero(split.labels == c)
        idx = idx[rng.permutation(len(idx))]
        k = 0 if len(idx) < 2 else min(len(idx) - 1, max(1, int(round(len(idx) * val_split))))
        val_idx.append(idx[:k])
        train_idx.append(idx[k:])
    tr = np.sort(np.concatenate(train_idx))
    va = np.sort(np.concatenate(val_idx))
    if len(va) == 0:
        raise DataError("the validation split is empty: every class has a single image")
    return split.subset(tr), split.subset(va)
