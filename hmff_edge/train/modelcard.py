"""``RUN/MODEL_CARD.md``: what was trained, on what, how, from which weights, how well."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hmff_edge.metadata import atomic_write_bytes

from .config import describe_schedule
from .runconfig import RunConfig


def _recipe_lines(rc: RunConfig) -> list[str]:
    t = rc.train
    return [
        f"- optimizer: {rc.to_dict()['optimizer']}, lr {t.lr:g}, batch {t.batch_size}, "
        f"{t.epochs} epochs",
        f"- schedule: {describe_schedule(t)}",
        f"- loss: {rc.to_dict()['loss']}",
        f"- class weights: {t.class_weight}"
        + (" (" + ", ".join(f"{k} {v:.3g}" for k, v in rc.class_weights.items()) + ")"
           if rc.class_weights else ""),
        f"- augmentation: {'on' if t.augment else 'off'}; precise BN batches: {t.bn_recalibrate}; "
        f"mixed precision: {'on' if t.mixed_precision else 'off'}; seed {t.seed}",
    ]


def _origin_lines(rc: RunConfig) -> list[str]:
    o = rc.init
    if o is None:
        return ["Random initialization (Glorot, the Keras default)."]
    src = f"run `{o.run}`" if o.run else f"file `{o.source}`"
    head = ("classifier head kept (same classes)" if o.head == "kept" else
            "new classifier head (the class list differs"
            + (f" from the source's {len(o.labels)} classes" if o.labels else "") + ")")
    frozen = (f"; body frozen for the first {rc.train.freeze_epochs} epochs"
              if rc.train.freeze_epochs else "")
    return [f"Fine-tuned from the {src} ({o.model or 'architecture checked layer by layer'}): "
            f"{o.copied_layers} weighted layers copied, {head}{frozen}."]


def write_model_card(path: Path, rc: RunConfig, metrics: dict[str, Any],
                     history: list[dict[str, Any]]) -> Path:
    """Write the card (Markdown) atomically."""
    t = rc.train
    worst = sorted(metrics["per_class"].items(), key=lambda kv: kv[1]["f1"])[:3]
    confused = metrics.get("most_confused") or []
    lines = [
        f"# {t.model} on {t.data}",
        "",
        f"{rc.num_classes} classes ({', '.join(rc.labels[:12])}"
        + (", ..." if rc.num_classes > 12 else "") + f"), input {t.img_size}x{t.img_size} RGB, "
        f"normalized with mean {t.mean} / std {t.std}.",
        "",
        "## Weights", "", *_origin_lines(rc), "",
        "## Training", "",
        f"- data: {rc.data_kind} `{t.data}`; {rc.counts.get('train', 0)} train / "
        f"{rc.counts.get('val', 0)} validation / {rc.counts.get('test', 0)} test images",
        *_recipe_lines(rc),
        f"- epochs completed: {len(history)}; best validation accuracy "
        f"{max((r['val_accuracy'] for r in history), default=0.0):.4f} at epoch "
        f"{metrics.get('best_epoch')}",
        "",
        f"## Results ({metrics.get('split')} split, {metrics['num_samples']} images)", "",
        f"- accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['f1_macro']:.4f}",
        "- lowest F1: " + ", ".join(f"{k} {v['f1']:.3f}" for k, v in worst),
    ]
    if confused:
        lines.append("- most confused: " + ", ".join(
            f"{p['true']} -> {p['predicted']} ({p['count']})" for p in confused))
    lines += ["", "Plots: `plots/` (curves, confusion matrix, per-class scores, most confident "
              "mistakes). Versions: " + ", ".join(f"{k} {v}" for k, v in rc.versions.items()), ""]
    atomic_write_bytes(path, "\n".join(lines).encode())
    return path
