"""``evaluate``: the metrics of a saved model (or run folder) on any image data."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from hmff_edge.data import load_eval_arrays, resolve_source
from hmff_edge.errors import ArtifactError, DataError
from hmff_edge.metadata import DEFAULT_MEAN, DEFAULT_STD
from hmff_edge.preprocess import normalize

from .metrics import compute_metrics
from .runconfig import RunConfig


def _locate(model_or_run: str | os.PathLike) -> tuple[Path, RunConfig | None]:
    p = Path(model_or_run)
    if p.is_dir():
        model_path, cfg_path = p / "model.keras", p / "config.json"
    elif p.is_file():
        model_path, cfg_path = p, p.parent / "config.json"
    else:
        raise ArtifactError(f"{str(p)!r} does not exist (expected a run folder or a .keras file)")
    if not model_path.is_file():
        raise ArtifactError(f"no model.keras in run folder {str(p)!r}")
    return model_path, RunConfig.load(cfg_path.parent) if cfg_path.is_file() else None


def evaluate(model_or_run: str | os.PathLike, data, *, split: str | None = None,
             limit: int | None = None, batch_size: int = 64) -> dict[str, Any]:
    """Accuracy, micro precision/recall, per-class precision/recall/F1, the confusion matrix
    and the most confused pairs (``most_confused``: true, predicted, count, share).

    The images go through ``load_rgb`` + ``normalize(mean, std)`` from the run's
    config.json (the runtime's preprocessing). ``split`` defaults to the data's test split
    when it has one (``train/`` + ``test/`` folders, CIFAR pickles) and all images otherwise.
    Class names in the data are matched to the model's labels by name.
    """
    from hmff_edge.models import load_model

    model_path, rc = _locate(model_or_run)
    model = load_model(model_path, compile=False)  # predictions only: no loss, no optimizer
    img_size = int((rc.img_size if rc else 0) or model.input_shape[1])
    mean = rc.mean if rc else list(DEFAULT_MEAN)
    std = rc.std if rc else list(DEFAULT_STD)
    n_out = int(model.output_shape[-1])
    source = resolve_source(data)
    labels = list((rc.labels if rc else None) or source.class_names)
    if len(labels) != n_out:
        raise ArtifactError(f"model {str(model_path)!r} has {n_out} outputs but {len(labels)} labels")
    unknown = [c for c in source.class_names if c not in labels]
    if unknown:
        raise DataError(f"data {source.spec!r} has classes {unknown} that the model does not know "
                        f"(model labels: {labels})")
    chosen = split or ("test" if source.test is not None else "all")
    images, y = load_eval_arrays(source, img_size, limit=limit, split=chosen)
    remap = np.array([labels.index(c) for c in source.class_names], np.int64)
    y = remap[y]
    preds = []
    for i in range(0, len(images), batch_size):
        x = normalize(images[i:i + batch_size], mean, std)
        preds.append(np.argmax(np.asarray(model.predict_on_batch(x)), axis=-1))
    m = compute_metrics(y, np.concatenate(preds), labels)
    m.update({"model": str(model_path), "data": source.spec, "split": chosen,
              "img_size": img_size})
    return m
