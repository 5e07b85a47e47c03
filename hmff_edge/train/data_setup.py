"""Turn a TrainConfig's data options into decoded train / validation / test pipelines."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hmff_edge.data import (
    DataSource,
    InMemoryData,
    Split,
    StreamingData,
    decode_split,
    resolve_source,
    split_validation,
)
from hmff_edge.errors import DataError

from .config import TrainConfig


@dataclass
class PreparedData:
    source: DataSource
    labels: list[str]
    train: InMemoryData | StreamingData
    val: InMemoryData | StreamingData
    test: InMemoryData | StreamingData | None
    mode: str  # memory | streaming
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {"train": self.train.n, "val": self.val.n,
                "test": self.test.n if self.test is not None else 0}


def _test_split(cfg: TrainConfig, source: DataSource) -> Split | None:
    if not cfg.test_data:
        return source.test
    tsrc = resolve_source(cfg.test_data)
    split = tsrc.test if tsrc.test is not None else tsrc.train
    unknown = sorted(set(tsrc.class_names) - set(source.class_names))
    if unknown:
        raise DataError(f"--test-data {cfg.test_data!r} has classes {unknown} that the training "
                        f"data does not have (training classes: {source.class_names})")
    remap = np.array([source.class_names.index(n) for n in tsrc.class_names], np.int64)
    return Split(labels=remap[split.labels], paths=split.paths, images=split.images)


def _materialize(split: Split, cfg: TrainConfig, in_memory: bool, name: str, progress: bool,
                 skipped: list) -> InMemoryData | StreamingData:
    if in_memory:
        dec = decode_split(split, cfg.img_size, progress=progress, desc=f"decode {name}")
        skipped.extend(dec.skipped)
        return InMemoryData(dec.images, dec.labels)
    return StreamingData(split.paths, split.labels, cfg.img_size)


@dataclass
class PlannedSplits:
    """Which images go where (labels and paths only; nothing decoded yet)."""

    source: DataSource
    train: Split
    val: Split
    test: Split | None

    @property
    def labels(self) -> list[str]:
        return list(self.source.class_names)


def plan_splits(cfg: TrainConfig) -> PlannedSplits:
    """Resolve ``cfg.data`` and split it (``val_split``/``seed``, ``train_limit``): cheap, so
    that class counts are known before any image is decoded."""
    source = resolve_source(cfg.data)
    train_split, val_split = split_validation(source.train, cfg.val_split, cfg.seed)
    if cfg.train_limit and cfg.train_limit < len(train_split):
        # Same subset for the same seed; every class keeps its share (bounded CPU runs).
        keep = np.random.default_rng(cfg.seed + 17).permutation(len(train_split))[:cfg.train_limit]
        train_split = train_split.subset(np.sort(keep))
    return PlannedSplits(source, train_split, val_split, _test_split(cfg, source))


def prepare_data(cfg: TrainConfig, *, progress: bool = True, distributed: bool = False,
                 splits: PlannedSplits | None = None) -> PreparedData:
    """The run's decoded train / validation / test data for ``cfg`` (a resolved
    :class:`TrainConfig`, e.g. ``RunConfig.load(run).train``); each part builds its
    tf.data pipeline with ``train_dataset(...)`` / ``eval_dataset(...)``.

    Raises :class:`DataError` naming the folder when a class ends up without readable images.
    """
    sp = splits or plan_splits(cfg)
    source = sp.source
    n_all = len(sp.train) + len(sp.val) + (len(sp.test) if sp.test is not None else 0)
    need = n_all * cfg.img_size * cfg.img_size * 3
    budget = cfg.cache_gb * 2**30
    if distributed:
        # A distributed dataset is serialized as a graph; tensors over 2 GB cannot be.
        budget = min(budget, 1.5 * 2**30)
    in_memory = sp.train.paths is None or need <= budget
    skipped: list[tuple[str, str]] = []
    train = _materialize(sp.train, cfg, in_memory, "train", progress, skipped)
    val = _materialize(sp.val, cfg, in_memory, "val", progress, skipped)
    test = (_materialize(sp.test, cfg, in_memory, "test", progress, skipped)
            if sp.test is not None else None)
    if in_memory:
        present = set(np.unique(train.labels).tolist())
        missing = [source.class_names[i] for i in range(source.num_classes) if i not in present]
        if missing:
            raise DataError(f"class {missing[0]!r} of {source.spec!r} has no readable training "
                            f"images ({len(skipped)} files were unreadable)")
        if val.n == 0:
            raise DataError(f"no readable validation images in {source.spec!r}")
    return PreparedData(source, list(source.class_names), train, val, test,
                        "memory" if in_memory else "streaming", skipped)
