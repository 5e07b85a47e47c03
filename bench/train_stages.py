#!/usr/bin/env python
"""Where a training step's time goes, stage by stage: HMFF variants against MobileNetV1.

    .venv/bin/python bench/train_stages.py [--size 64] [--models mobilenet-v1 hmff-mobilenet-16ch]

A profiler's per-op times overlap on a 2-core CPU (TensorFlow runs independent ops side by
side, each then slower), so this measures whole training steps instead: for each cut point
(the end of block 2, 3, 5, 11 and of the network) the model truncated there, with a
pooling + softmax head, is trained with ``fit`` (Adam, batch 64, in-memory tensors); the
difference between consecutive cuts is that stage's cost (forward, backward and optimizer,
Adam as ``hmff-edge train`` runs it).
All truncated models are timed round-robin in one run, so load bursts hit them alike.

Writes bench/results/train_stages.json and .md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from pathlib import Path

from hmff_edge.tables import markdown_table

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Cut after these blocks; "end" is the last layer before pooling (MobileNet's block 13,
# HMFF's fusion module).
CUTS = ("block2", "block3", "block5", "block11", "end")
STAGES = ("stem..block2", "block3", "block4..5", "block6..11", "head (MobileNet block12..13 / HMFF module)")


def _cut_layer(model, cut: str):
    if cut == "end":
        return model.get_layer("pool").input
    names = [layer.name for layer in model.layers if layer.name.startswith(cut + "_")]
    if not names:
        raise SystemExit(f"{model.name} has no layer named {cut}_*")
    return model.get_layer(names[-1]).output


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=["mobilenet-v1", "hmff-mobilenet-16ch"])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_stages"))
    a = ap.parse_args()
    if a.steps < 2:
        ap.error(f"--steps must be at least 2 (steps are timed between batch ends), got {a.steps}")

    import keras
    import numpy as np
    import tensorflow as tf
    from train_speed import timed_fit, write_json

    from hmff_edge.models import build_model
    from hmff_edge.train.optim import prepare_adam

    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.batch * 4, a.size, a.size, 3)).astype(np.float32)
    y = rng.integers(0, 10, a.batch * 4).astype(np.int32)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(a.batch).cache().repeat()

    trunks = {}
    for name in a.models:
        keras.utils.set_random_seed(0)
        full = build_model(name, img_size=a.size, num_classes=10)
        for cut in CUTS:
            h = keras.layers.GlobalAveragePooling2D()(_cut_layer(full, cut))
            h = keras.layers.Dense(10, activation="softmax")(h)
            m = keras.Model(full.input, h)
            m.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
            prepare_adam(m)  # as `hmff-edge train` sets it up
            timed_fit(m, ds, 3)  # trace + warm-up
            trunks[(name, cut)] = m
    times: dict = {k: [] for k in trunks}
    for _ in range(a.repeats):
        for k, m in trunks.items():
            times[k].append(timed_fit(m, ds, a.steps))
    step_ms = {k: 1000 * statistics.median(v) for k, v in times.items()}

    rows = []
    for name in a.models:
        prev = 0.0
        for cut, stage in zip(CUTS, STAGES):
            t = step_ms[(name, cut)]
            rows.append({"model": name, "stage": stage, "cut": cut,
                         "cumulative_ms": round(t, 1), "stage_ms": round(t - prev, 1)})
            prev = t
    base = a.models[0]
    for r in rows:
        ref = next(q for q in rows if q["model"] == base and q["stage"] == r["stage"])
        r[f"minus_{base}_ms"] = round(r["stage_ms"] - ref["stage_ms"], 1)

    res = {"command": "python bench/train_stages.py " + " ".join(sys.argv[1:]),
           "img_size": a.size, "batch": a.batch, "steps": a.steps, "repeats": a.repeats,
           "machine": {"cpus": os.cpu_count(), "arch": platform.machine(),
                       "load_avg_at_end": list(os.getloadavg())},
           "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
           "stages": rows}
    out = Path(a.out)
    write_json(out, res)
    lines = [f"# Training time by stage ({res['command']})", "",
             f"{a.size}x{a.size} input, batch {a.batch}; median step of {a.repeats} round-robin "
             f"runs of {a.steps} steps per truncated model; stage = difference between "
             f"consecutive cuts. CPU: {os.cpu_count()} cores {platform.machine()}, load average "
             f"at the end {os.getloadavg()[0]:.1f}.", ""]
    totals = {m: step_ms[(m, "end")] for m in a.models}
    table = []
    for stage in STAGES:
        r = {q["model"]: q for q in rows if q["stage"] == stage}
        table.append({"stage": stage, **{m: r[m]["stage_ms"] for m in a.models},
                      **{f"{m} - {base}": f"{r[m][f'minus_{base}_ms']:+}" for m in a.models[1:]}})
    table.append({"stage": "whole step", **{m: f"{totals[m]:.1f}" for m in a.models},
                  **{f"{m} - {base}": f"{totals[m] - totals[base]:+.1f}" for m in a.models[1:]}})
    columns = [("stage", "stage"), *((m, m) for m in a.models),
               *((f"{m} - {base}",) * 2 for m in a.models[1:])]
    lines.append(markdown_table(table, columns))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(lines[-1])
    print(f"wrote {out.with_suffix('.json')} and .md")


if __name__ == "__main__":
    main()
