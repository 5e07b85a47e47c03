"""The one-screen summary printed at the end of `hmff-edge train`."""

from __future__ import annotations

from .loop import TrainResult


def format_summary(r: TrainResult) -> str:
    c, d, m = r.config, r.data, r.metrics or {}
    lines = [
        "",
        f"== hmff-edge train: {c['model']} on {d['kind']} {d['spec']!r} ==",
        f"data      {d['classes']} classes; {d['train']} train / {d['val']} val / {d['test']} test "
        f"images at {c['img_size']}x{c['img_size']} ({d['mode']}); {d['skipped']} unreadable skipped",
        f"recipe    {c['optimizer']}, lr {c['lr']:g}: {c['lr_schedule']}; batch "
        f"{c['batch_size']}, augment {'on' if c['augment'] else 'off'}, seed {c['seed']}, "
        f"strategy {c['strategy']}"
        + (f", label smoothing {c['label_smoothing']}" if c["label_smoothing"] else "")
        + (f", class weights {c['class_weight']}" if c["class_weight"] != "none" else ""),
        f"model     {r.params:,} parameters"
        + (f"; from {c['init']['run'] or c['init']['source']} (head {c['init']['head']})"
           if c.get("init") else ""),
        f"training  {r.epochs_done}/{c['epochs']} epochs"
        + (f" (resumed after epoch {r.resumed_from})" if r.resumed_from else "")
        + (" (early stop)" if r.stopped_early else "")
        + f", {r.train_seconds:.0f} s training in this call, "
        f"{r.images_per_second:.0f} train images/s",
        f"best      epoch {r.best_epoch}: val_accuracy {r.best_val_accuracy:.4f}",
    ]
    if m:
        worst = sorted(m["per_class"].items(), key=lambda kv: kv[1]["recall"])[:3]
        lines += [
            f"{r.eval_split:<9} accuracy {m['accuracy']:.4f}  precision_micro "
            f"{m['precision_micro']:.4f}  recall_micro {m['recall_micro']:.4f}  "
            f"({m['num_samples']} images, best model)",
            "lowest recall  " + ", ".join(f"{k} {v['recall']:.3f}" for k, v in worst),
        ]
    lines += [
        f"run folder {r.run_dir}: model.keras, config.json, MODEL_CARD.md, labels.txt, "
        "history.csv, metrics.json, plots/, checkpoints/",
        f"next      hmff-edge export {r.run_dir}   |   hmff-edge evaluate {r.run_dir} --data PATH",
    ]
    return "\n".join(lines)
