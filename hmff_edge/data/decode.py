"""Decode a :class:`Split` into uint8 arrays with *the* preprocessing (``load_rgb``).

Files are decoded in a thread pool (Pillow releases the GIL while decoding), unreadable
ones are skipped and counted. Arrays (CIFAR, digits) are resized with the same Pillow
bilinear filter ``load_rgb`` uses, so the evaluation pixels equal the runtime's.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from hmff_edge.errors import DataError
from hmff_edge.preprocess import load_rgb, resize_pixels

from .sources import DataSource, Split, resolve_source, split_validation

log = logging.getLogger(__name__)


@dataclass
class Decoded:
    """Decoded images (uint8 NxHxWx3), their labels and the files that were skipped."""

    images: np.ndarray
    labels: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def resize_rgb(img: np.ndarray, size: int) -> np.ndarray:
    """Resize an RGB uint8 array exactly as :func:`hmff_edge.preprocess.load_rgb` would."""
    return resize_pixels(img, size)


def default_workers() -> int:
    return max(1, min(16, (os.cpu_count() or 2)))


def decode_split(split: Split, img_size: int, *, workers: int | None = None,
                 progress: bool = False, desc: str = "decode") -> Decoded:
    """All images of ``split`` at ``img_size`` x ``img_size``; unreadable files skipped."""
    n = len(split)
    out = np.empty((n, img_size, img_size, 3), np.uint8)
    ok = np.ones(n, bool)
    skipped: list[tuple[str, str]] = []
    bar = None
    if progress and n > 2000:
        from tqdm import tqdm

        bar = tqdm(total=n, desc=desc, unit="img", leave=False)

    if split.images is not None:
        for i in range(n):
            out[i] = resize_rgb(split.images[i], img_size)
            if bar is not None and i % 1000 == 999:
                bar.update(1000)
    else:
        assert split.paths is not None

        def _one(i: int) -> tuple[int, str | None]:
            try:
                out[i] = load_rgb(split.paths[i], img_size)
                return i, None
            except DataError as exc:
                return i, str(exc)

        with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
            for i, err in pool.map(_one, range(n), chunksize=64):
                if err is not None:
                    ok[i] = False
                    skipped.append((split.paths[i], err))
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    for path, reason in skipped:
        log.warning("skipped unreadable image %s: %s", path, reason)
    if skipped:
        out, labels = out[ok], split.labels[ok]
    else:
        labels = split.labels
    return Decoded(out, labels.astype(np.int64), skipped)


def select_split(source: DataSource, split: str, *, val_split: float = 0.1,
                 seed: int = 0) -> Split:
    """``train`` / ``val`` (the training split minus / only its validation share), ``test``
    (the source's test split, or the validation share when it has none) or ``all``."""
    if split == "all":
        return source.train
    if split == "test" and source.test is not None:
        return source.test
    if split not in ("train", "val", "test"):
        raise DataError(f"unknown split {split!r}: expected train, val, test or all")
    tr, va = split_validation(source.train, val_split, seed)
    return tr if split == "train" else va


def load_eval_arrays(source, img_size: int, limit: int | None = None, split: str = "test", *,
                     val_split: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 NHWC images and int64 labels for evaluation or calibration.

    ``source`` is a :class:`DataSource` or anything :func:`resolve_source` accepts. Pixels
    are exactly ``hmff_edge.preprocess.load_rgb(path, img_size)``; normalize them with
    ``hmff_edge.preprocess.normalize(images, mean, std)``. ``limit`` takes a deterministic
    (``seed``) random subset before decoding. Unreadable files are skipped (logged).
    """
    src = resolve_source(source)
    sp = select_split(src, split, val_split=val_split, seed=seed)
    if limit is not None and limit < len(sp):
        idx = np.sort(np.random.default_rng(seed).permutation(len(sp))[:limit])
        sp = sp.subset(idx)
    dec = decode_split(sp, img_size)
    if len(dec.labels) == 0:
        raise DataError(f"no readable images in the {split} split of {src.spec!r}")
    return dec.images, dec.labels
