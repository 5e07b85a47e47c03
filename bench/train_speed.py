#!/usr/bin/env python
"""Training speed: HMFF variants vs MobileNetV1, and the input pipeline's cost.

    .venv/bin/python bench/train_speed.py [--steps 20] [--batch 64] [--sizes 32 64]

1. images/s of ``model.fit`` (Adam as ``hmff-edge train`` runs it, batch 64,
   cross-entropy) for hmff-mobilenet-16ch, hmff-mobilenet-64ch and mobilenet-v1 at each
   size, fed from in-memory tensors; the ratio to mobilenet-v1 at the same size.
2. pipeline cost for hmff-mobilenet-16ch at the first size: step time with the real
   training pipeline (uint8 images held in memory -> shuffle -> batch -> augment ->
   normalize -> prefetch; CIFAR-10 images when ../shared/data/cifar10 exists, else the
   digits) against the same model fed pre-normalized tensors. Conditions alternate
   (A B A B ...) and the median is reported, because the CPU may be shared; the
   models of one size are timed round-robin for the same reason.

Writes bench/results/train_speed.json and .md (with the command and the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from hmff_edge.tables import markdown_table

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


_FORMS = {"conv2d": "grouped conv2d", "matmul": "batched matmul (fallback)"}


def write_json(out: Path, res: dict) -> None:
    """``out``.json with the record (parents created)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")


def timed_fit(model, ds, steps: int) -> float:
    """Median seconds per training step inside one ``fit`` call.

    Timed between consecutive ``on_train_batch_end`` calls, so what ``fit`` does once per
    call (iterator and callback set-up, ~0.3 s here) stays out: at 32 px it would otherwise
    be a third of a 20-step run and pull every ratio toward 1.
    """
    import keras

    marks: list[float] = []

    class _Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            marks.append(time.perf_counter())

    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False,
              callbacks=[_Clock()])
    return statistics.median(b - a for a, b in zip(marks, marks[1:]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--models", nargs="+",
                    default=["mobilenet-v1", "hmff-mobilenet-16ch", "hmff-mobilenet-64ch"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_speed"))
    ap.add_argument("--no-xla-activations", action="store_true",
                    help="train with Keras' own swish/hard_swish gradients (A/B of the fused "
                         "XLA kernels; same as HMFF_EDGE_XLA_ACTIVATIONS=0)")
    ap.add_argument("--no-native-grouped-conv", action="store_true",
                    help="train grouped 1x1s through the batched-matmul fallback instead of a "
                         "grouped conv2d (A/B; same as HMFF_EDGE_NATIVE_GROUPED_CONV=0)")
    a = ap.parse_args()
    if a.steps < 2:
        ap.error(f"--steps must be at least 2 (steps are timed between batch ends), got {a.steps}")
    if a.no_xla_activations:
        os.environ["HMFF_EDGE_XLA_ACTIVATIONS"] = "0"
    if a.no_native_grouped_conv:
        os.environ["HMFF_EDGE_NATIVE_GROUPED_CONV"] = "0"

    import keras
    import numpy as np
    import tensorflow as tf

    from hmff_edge.data import InMemoryData, decode_split, resolve_source, split_validation
    from hmff_edge.metadata import DEFAULT_MEAN, DEFAULT_STD
    from hmff_edge.models import build_model
    from hmff_edge.models.layers import fused_activations_enabled, native_grouped_training
    from hmff_edge.train.optim import prepare_adam

    def compiled(name, size):
        # The optimizer as `hmff-edge train` sets it up (fused Adam kernel, slots built).
        keras.utils.set_random_seed(0)
        m = build_model(name, img_size=size, num_classes=10)
        m.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
        prepare_adam(m)
        return m

    def tensor_ds(size):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((a.batch * 4, size, size, 3)).astype(np.float32)
        y = rng.integers(0, 10, a.batch * 4).astype(np.int32)
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(a.batch).cache().repeat()

    speed = []
    for size in a.sizes:
        steps = a.steps if size <= 32 else max(5, a.steps // 2)
        ds = tensor_ds(size)
        models = {name: compiled(name, size) for name in a.models}
        for m in models.values():
            timed_fit(m, ds, 3)  # trace/compile + warm-up
        # Round-robin repeats: on a shared CPU a load burst hits every model alike.
        times: dict[str, list[float]] = {name: [] for name in a.models}
        for _ in range(a.repeats):
            for name, m in models.items():
                times[name].append(timed_fit(m, ds, steps))
        for name in a.models:
            ips = a.batch / statistics.median(times[name])
            speed.append({"model": name, "img_size": size, "images_per_s": round(ips, 1),
                          "step_ms": round(1000 * statistics.median(times[name]), 1)})
            print(f"{name:>22} @ {size:>3}px: {ips:7.1f} images/s", flush=True)
    for r in speed:
        base = next(s for s in speed if s["model"] == "mobilenet-v1" and s["img_size"] == r["img_size"])
        r["ratio_vs_mobilenet_v1"] = round(r["images_per_s"] / base["images_per_s"], 2)

    # pipeline cost
    size = a.sizes[0]
    cifar = ROOT.parent / "shared" / "data" / "cifar10"
    src = resolve_source(str(cifar) if (cifar / "train").is_dir() else None)
    tr, _ = split_validation(src.train, 0.1, 0)
    tr = tr.subset(np.arange(min(len(tr), 20 * a.batch * 4)))  # bounded decode
    dec = decode_split(tr, size)
    mem = InMemoryData(dec.images, dec.labels)
    m = compiled("hmff-mobilenet-16ch", size)
    real = mem.train_dataset(batch_size=a.batch, epoch=0, seed=0, augment=True,
                             mean=DEFAULT_MEAN, std=DEFAULT_STD, drop_remainder=True).repeat()
    fake = tensor_ds(size)
    timed_fit(m, real, 3)
    timed_fit(m, fake, 3)
    t_real, t_fake = [], []
    for _ in range(a.repeats + 2):
        t_real.append(timed_fit(m, real, a.steps))
        t_fake.append(timed_fit(m, fake, a.steps))
    r_ms = 1000 * statistics.median(t_real)
    f_ms = 1000 * statistics.median(t_fake)
    pipe = {"model": "hmff-mobilenet-16ch", "img_size": size, "data": src.kind,
            "pipeline_step_ms": round(r_ms, 1), "tensor_step_ms": round(f_ms, 1),
            "overhead_percent": round(100 * (r_ms / f_ms - 1), 1)}
    print(f"pipeline: {r_ms:.1f} ms/step vs in-memory tensors {f_ms:.1f} ms/step "
          f"({pipe['overhead_percent']:+.1f}%)")

    import psutil

    res = {"command": "python bench/train_speed.py " + " ".join(sys.argv[1:]),
           "batch": a.batch, "steps": a.steps, "repeats": a.repeats,
           "machine": {"cpus": os.cpu_count(), "arch": platform.machine(),
                       "load_avg_at_end": list(os.getloadavg()),
                       "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)},
           "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
           "xla_activations": fused_activations_enabled(),
           "grouped_training_form": "conv2d" if native_grouped_training() else "matmul",
           "training_speed": speed, "pipeline": pipe}
    out = Path(a.out)
    write_json(out, res)
    lines = [f"# Training speed ({res['command']})", "",
             f"CPU: {os.cpu_count()} cores {platform.machine()}, load average at the end "
             f"{os.getloadavg()[0]:.1f} (shared machine); batch {a.batch}; median step time "
             f"over {a.repeats} round-robin runs of {a.steps} steps (half at 64 px), each "
             "step timed between batch ends so fit()'s per-call set-up is left out; swish / "
             "hard_swish gradients as fused XLA kernels: "
             f"{'yes' if res['xla_activations'] else 'no (Keras ops)'}; grouped 1x1s trained "
             f"as {_FORMS[res['grouped_training_form']]}.", "",
             markdown_table([{**r, "ratio": f"{r['ratio_vs_mobilenet_v1']}x"} for r in speed],
                            [("model", "model"), ("img_size", "input"),
                             ("images_per_s", "images/s"), ("step_ms", "ms/step"),
                             ("ratio", "vs mobilenet-v1")])]
    lines += ["", f"Input pipeline ({pipe['data']} images, augmentation on, "
              f"hmff-mobilenet-16ch @ {size}px): {pipe['pipeline_step_ms']} ms/step vs "
              f"{pipe['tensor_step_ms']} ms/step from in-memory tensors = "
              f"{pipe['overhead_percent']:+.1f}%.", ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    print(f"wrote {out.with_suffix('.json')} and .md")


if __name__ == "__main__":
    main()
