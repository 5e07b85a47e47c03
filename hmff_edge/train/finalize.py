"""The end of a training run: metrics of the best model, plots, the model card."""

from __future__ import annotations

import numpy as np

from .data_setup import PreparedData
from .metrics import compute_metrics
from .modelcard import write_model_card
from .plots import plot_confusion, plot_curves, plot_misclassified, plot_per_class, worst_mistakes
from .runconfig import RunConfig
from .runfolder import RunFolder

MISCLASSIFIED_SHOWN = 16
def _predict(model, ds) -> tuple[np.ndarray, np.ndarray]:
    """True labels and predicted probabilities over ``ds``."""
    ys, ps = [], []
    for x, y in ds:
        ps.append(np.asarray(model.predict_on_batch(x), np.float32))
        ys.append(np.asarray(y))
    if not ys:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    return np.concatenate(ys).astype(np.int64), np.concatenate(ps)


def _eval_images(part):
    """uint8 images of an evaluation part by index (decoded on demand when streaming);
    None when streaming skipped files (indices would not line up)."""
    images = getattr(part, "images", None)
    if images is not None:
        return images
    if getattr(part, "skipped", None):
        return None
    from hmff_edge.preprocess import load_rgb

    class _Lazy:
        def __getitem__(self, i):
            return load_rgb(part.paths[i], part.img_size)

    return _Lazy()


def finalize(run: RunFolder, rc: RunConfig, data: PreparedData, history, split, keras):
    """Metrics of the best model on the test (or validation) split, plots, model card."""
    cfg = rc.train
    best = keras.models.load_model(run.model_path)
    part = data.test if data.test is not None else data.val
    ds = part.eval_dataset(batch_size=max(cfg.batch_size, 64), mean=cfg.mean, std=cfg.std)
    y_true, probs = _predict(best, ds)
    y_pred = probs.argmax(axis=-1) if len(probs) else np.zeros(0, np.int64)
    metrics = compute_metrics(y_true, y_pred, data.labels)
    best_row = max(history, key=lambda r: r["val_accuracy"]) if history else {}
    metrics.update({"split": split, "model": cfg.model, "img_size": cfg.img_size,
                    "best_epoch": best_row.get("epoch"), "data": data.source.spec})
    run.write_json(run.metrics_path, metrics)
    if history:
        plot_curves(history, run.plots_dir)
    plot_confusion(metrics["confusion_matrix"], data.labels, run.plots_dir / "confusion_matrix.png",
                   title=f"{cfg.model} on the {split} split (accuracy {metrics['accuracy']:.3f})")
    plot_per_class(metrics, run.plots_dir / "per_class.png")
    images = _eval_images(part)
    if images is not None and len(probs):
        plot_misclassified(images, worst_mistakes(y_true, probs, MISCLASSIFIED_SHOWN),
                           data.labels, run.plots_dir / "misclassified.png")
    write_model_card(run.root / "MODEL_CARD.md", rc, metrics, history)
    return metrics


def report_streamed_skips(data: PreparedData, echo) -> None:
    if data.mode != "streaming":
        return
    # Streamed files are decoded (and found unreadable) during the epochs.
    seen_bad: dict[str, str] = {}
    for part in (data.train, data.val, data.test):
        seen_bad.update(getattr(part, "skipped", {}) or {})
    data.skipped = sorted(seen_bad.items())
    if data.skipped:
        echo(f"skipped {len(data.skipped)} unreadable image files while streaming "
             f"(first: {data.skipped[0][0]}: {data.skipped[0][1]})")
