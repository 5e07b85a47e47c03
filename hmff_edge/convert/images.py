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
    ids: list[str] | None = None  # file paths, or "train[i]" rows of an in-memory set

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


def run_split(config: dict[str, Any], part: str):
    """The rows of a run's data that training used for ``part``: ``"train"`` (the training
    split: calibration) or ``"held_out"`` (the split ``metrics.json`` was computed on: the
    test split, or ``--test-data``, or else the validation share, with the run's own
    ``val_split`` and ``seed``). Returns ``(source, split, ids)``: ``ids`` are file paths,
    or ``train[i]`` rows of an in-memory training set."""
    from hmff_edge import data

    source = data.resolve_source(config.get("data"))
    if part == "held_out" and config.get("test_data"):
        tsrc = data.resolve_source(config["test_data"])
        split = tsrc.test if tsrc.test is not None else tsrc.train
        remap = np.array([source.class_names.index(n) for n in tsrc.class_names], np.int64)
        split = data.Split(labels=remap[split.labels], paths=split.paths, images=split.images)
        return source, split, _ids(split, "test-data")
    if part == "held_out" and source.test is not None:
        return source, source.test, _ids(source.test, "test")
    # The same split_validation call as training, on row numbers: which rows went where.
    rows = data.Split(labels=source.train.labels,
                      paths=[str(i) for i in range(len(source.train))])
    train, val = data.split_validation(rows, float(config.get("val_split", 0.1)),
                                       int(config.get("seed", 0)))
    chosen = train if part == "train" else val
    idx = np.asarray([int(p) for p in chosen.paths], np.int64)
    split = source.train.subset(idx)
    return source, split, _ids(split, "train", idx)


def _ids(split, tag: str, rows: np.ndarray | None = None) -> list[str]:
    if split.paths is not None:
        return [str(p) for p in split.paths]
    rows = np.arange(len(split)) if rows is None else rows
    return [f"{tag}[{int(i)}]" for i in rows]


def load_run_images(config: dict[str, Any], part: str, *, img_size: int, mean: list[float],
                    std: list[float], labels: list[str], limit: int = 0,
                    seed: int = 0) -> ImageSet:
    """Up to ``limit`` images (0 = all, sampled with ``seed``) of :func:`run_split`'s
    ``part``, through the training preprocessing, labels mapped onto the model's labels."""
    from hmff_edge import data

    source, split, ids = run_split(config, part)
    if limit and limit < len(split):
        keep = np.sort(np.random.default_rng(seed).permutation(len(split))[:limit])
        split, ids = split.subset(keep), [ids[i] for i in keep]
    dec = data.decode_split(split, img_size)
    if dec.skipped:
        bad = {p for p, _ in dec.skipped}
        ids = [i for i in ids if i not in bad]
    if len(dec.labels) == 0:
        raise DataError(f"no readable images in the {part} split of {source.spec!r}")
    index = {name: i for i, name in enumerate(labels)}
    remap = np.asarray([index.get(n, -1) for n in source.class_names], np.int64)
    y = remap[dec.labels]
    name = "held-out" if part == "held_out" else part
    return ImageSet(x=normalize(dec.images, mean, std), y=None if (y < 0).any() else y,
                    source=f"{source.spec} ({name})", ids=ids)
