"""Calibration and verification images, through exactly the training preprocessing.

Every image goes through :func:`hmff_edge.preprocess.load_rgb` (Pillow, bilinear resize)
and :func:`hmff_edge.preprocess.normalize` with the run's mean/std, the same path as the
training's evaluation and the device runtime.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hmff_edge.errors import DataError
from hmff_edge.preprocess import list_images, load_rgb, normalize


@dataclass
class ImageSet:
    x: np.ndarray  # float32 NHWC normalized
    y: np.ndarray | None  # label index into the model's labels, or None when unknown
    source: str

    def __len__(self) -> int:
        return len(self.x)


def resolve_folder(path: str | os.PathLike, prefer: tuple[str, ...]) -> Path:
    """A data root with ``train/``/``test/`` subfolders -> the preferred split."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"image folder {str(path)!r} does not exist")
    if not p.is_dir():
        raise DataError(f"{str(path)!r} is not a folder of images")
    for name in prefer:
        if (p / name).is_dir():
            return p / name
    return p


def load_images(folder: str | os.PathLike, *, img_size: int, mean: list[float],
                std: list[float], labels: list[str], limit: int = 0, seed: int = 0,
                prefer: tuple[str, ...] = ("test", "val", "validation"),
                progress: bool = False) -> ImageSet:
    """Load up to ``limit`` images (0 = all) from an image folder, sampled with a fixed seed.

    Class subfolders named like the model's labels give ``y`` (for accuracy); otherwise
    ``y`` is None. Raises :class:`DataError` for a folder with no readable image.
    """
    root = resolve_folder(folder, prefer)
    paths = list_images(root)
    if not paths:
        raise DataError(f"no images (extensions .jpg .png ...) under {str(root)!r}")
    if limit and len(paths) > limit:
        rng = np.random.default_rng(seed)
        paths = sorted(rng.choice(paths, size=limit, replace=False).tolist())
    index = {name: i for i, name in enumerate(labels)}
    ys = []
    for p in paths:
        rel = Path(p).relative_to(root).parts
        ys.append(index.get(rel[0], -1) if len(rel) > 1 else -1)
    y = np.asarray(ys, np.int64)
    it: Any = paths
    if progress:
        from tqdm import tqdm

        it = tqdm(paths, desc=f"images {root.name}", unit="img", leave=False)
    pixels = np.stack([load_rgb(p, img_size) for p in it])
    x = normalize(pixels, mean, std)
    return ImageSet(x=x, y=None if (y < 0).any() else y, source=str(root))


def load_run_data(spec: Any, *, split: str, img_size: int, mean: list[float],
                  std: list[float], labels: list[str], limit: int = 0, seed: int = 0) -> ImageSet:
    """Images from the run's own data spec (``config.json`` ``data``) through the training
    helper's data API (:func:`hmff_edge.data.load_eval_arrays`: image folders, CIFAR
    pickles, the embedded digits), labels mapped by name onto the model's labels."""
    from hmff_edge import data

    source = data.resolve_source(spec)
    pixels, y = data.load_eval_arrays(source, img_size, limit or None, split, seed=seed)
    index = {name: i for i, name in enumerate(labels)}
    remap = np.asarray([index.get(n, -1) for n in source.class_names], np.int64)
    y = remap[np.asarray(y, np.int64)]
    return ImageSet(x=normalize(pixels, mean, std), y=None if (y < 0).any() else y,
                    source=f"{source.spec} ({split})")
