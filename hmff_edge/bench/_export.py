"""Child process: export a variant with random weights for benchmarking (imports TensorFlow).

``python -m hmff_edge.bench._export --variant NAME --img-size 224 --classes 10 --out DIR
--targets litert:fp32,litert:int8,onnxruntime:fp32``

Exports through :func:`hmff_edge.convert.export` (the same files users ship). int8 calibrates
on random pixels: the weights are random too, so no data set is more representative. Writes
``bench_export.json`` (params, MACs, recipe) beside the files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

# Bumped when what an export contains changes, so bench caches from older recipes are
# re-exported (2: BN statistics from inputs, see hmff_edge.models.bn_stats; 3: int8 hard_swish
# as x * clip(x / 6 + 1/2, 0, 1); 4: a
# centre-tap depthwise exported as a 1x1 DEPTHWISE_CONV_2D instead of a MUL; 5: int8 grouped 1x1
# layers in the graph form measured fastest, hmff_edge.convert.forms; 6: int8 hard_swish as
# x * relu6(x + 3) with its 1/6 folded into the next weights, hmff_edge.convert.int8_activations).
EXPORT_RECIPE = 6
INFO_NAME = "bench_export.json"  # params, MACs, exporter and recipe, beside the files
_FORMAT = {"litert": "tflite", "onnxruntime": "onnx", "tensorflow": "savedmodel"}


def _random_calibration_folder(folder: Path, img_size: int) -> Path:
    """Two classes of eight random images: enough for int8 ranges of a random-weight model."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(2):
        (folder / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(8):
            px = rng.integers(0, 256, (img_size, img_size, 3), dtype=np.uint8)
            Image.fromarray(px).save(folder / f"c{c}" / f"{i}.png")
    return folder


def export_targets(name: str, out: Path, img_size: int, classes: int,
                   targets: list[tuple[str, str]]) -> None:
    """One :func:`hmff_edge.convert.export` call per format, with that format's quantizations."""
    from hmff_edge.convert import ExportOptions, export

    plan: dict[str, set[str]] = {}
    for runtime, quant in targets:
        plan.setdefault(_FORMAT[runtime], set()).add("none" if quant == "fp32" else quant)
    needs_int8 = any("int8" in qs for qs in plan.values())
    calib = _random_calibration_folder(out / ".calib", img_size) if needs_int8 else None
    try:
        for form, quants in plan.items():
            export(name, ExportOptions(formats=[form], quantizations=sorted(quants), out=out,
                                       verify=False, img_size=img_size, classes=classes,
                                       progress=False, calib_samples=16, calib_data=calib))
    finally:
        if calib is not None:
            shutil.rmtree(calib, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variant", required=True)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--out", required=True)
    p.add_argument("--targets", default="litert:fp32")
    a = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    targets = [tuple(t.split(":")) for t in a.targets.split(",") if t]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    export_targets(a.variant, out, a.img_size, a.classes, targets)
    from hmff_edge.models import build_model, count_macs, count_params

    model = build_model(a.variant, img_size=a.img_size, num_classes=a.classes)
    info = {"variant": a.variant, "img_size": a.img_size, "classes": a.classes,
            "params": int(count_params(model)), "macs": int(count_macs(model)),
            "exporter": "hmff_edge.convert", "random_weights": True,
            "bn_statistics": "from random inputs", "recipe": EXPORT_RECIPE}
    (out / INFO_NAME).write_text(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
