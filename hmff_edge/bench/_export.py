"""Child process: export a variant with random weights for benchmarking (imports TensorFlow).

``python -m hmff_edge.bench._export --variant NAME --img-size 224 --classes 10 --out DIR
--targets litert:fp32,litert:int8,onnxruntime:fp32``

Uses :func:`hmff_edge.convert.export` when the convert package provides it (the files users
ship); otherwise (``--exporter bench``, or no convert package yet) a minimal path: trace the
Keras model with a fixed batch-1 signature inside ``export_mode()`` and convert with
``TFLiteConverter.from_concrete_functions``; ONNX through tf2onnx from the same function with
a free batch dimension. int8 calibrates on random normal inputs (the weights are random too).
Writes ``bench_export.json`` (params, MACs, exporter) beside the files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# Bumped when what an export contains changes, so bench caches from older recipes are
# re-exported (2: BN statistics from inputs, see hmff_edge.models.bn_stats; 3: int8 hard_swish
# as int8-native elementwise ops, see hmff_edge.convert.trace.decompose_for_int8; 4: a
# centre-tap depthwise exported as a 1x1 DEPTHWISE_CONV_2D instead of a MUL; 5: int8 grouped 1x1
# layers in the graph form measured fastest, hmff_edge.convert.forms).
EXPORT_RECIPE = 5
INFO_NAME = "bench_export.json"  # params, MACs, exporter and recipe, beside the files

_NAMES = {("litert", "fp32"): "model_fp32.tflite", ("litert", "int8"): "model_int8.tflite",
          ("onnxruntime", "fp32"): "model_fp32.onnx", ("onnxruntime", "int8"): "model_int8.onnx",
          ("tensorflow", "fp32"): "model_savedmodel"}


def _convert_available() -> bool:
    try:
        from hmff_edge.convert import export  # noqa: F401
    except ImportError:
        return False
    return True


def _with_convert(name, out: Path, img_size, classes, targets) -> None:
    from hmff_edge.convert import ExportOptions, export

    fmt = {"litert": "tflite", "onnxruntime": "onnx", "tensorflow": "savedmodel"}
    plan: dict[str, list[str]] = {}  # one export call per format: its own quantizations
    for r, q in targets:
        plan.setdefault(fmt[r], []).append("none" if q == "fp32" else q)
    quants = sorted({q for qs in plan.values() for q in qs})
    calib = None
    if "int8" in quants:
        # Random weights, so random pixels calibrate as well as anything (a tiny folder).
        import numpy as np
        from PIL import Image

        calib = out / ".calib"
        rng = np.random.default_rng(0)
        for c in range(2):
            (calib / f"c{c}").mkdir(parents=True, exist_ok=True)
            for i in range(8):
                px = rng.integers(0, 256, (img_size, img_size, 3), dtype=np.uint8)
                Image.fromarray(px).save(calib / f"c{c}" / f"{i}.png")
    try:
        for form, qs in plan.items():
            export(name, ExportOptions(formats=[form], quantizations=sorted(set(qs)), out=out,
                                       verify=False, img_size=img_size, classes=classes,
                                       progress=False, calib_samples=16, calib_data=calib))
    finally:
        if calib is not None:
            import shutil

            shutil.rmtree(calib, ignore_errors=True)


def _fallback(name, out: Path, img_size, classes, targets, model) -> None:
    import numpy as np
    import tensorflow as tf

    from hmff_edge.models.layers import export_mode

    with export_mode():
        fn1 = tf.function(lambda x: model(x, training=False)).get_concrete_function(
            tf.TensorSpec([1, img_size, img_size, 3], tf.float32))
    for runtime, quant in targets:
        path = out / _NAMES[(runtime, quant)]
        if runtime == "litert":
            conv = tf.lite.TFLiteConverter.from_concrete_functions([fn1], model)
            if quant == "int8":
                def rep():
                    rng = np.random.default_rng(0)
                    for _ in range(8):
                        yield [rng.standard_normal((1, img_size, img_size, 3)).astype("float32")]

                conv.optimizations = [tf.lite.Optimize.DEFAULT]
                conv.representative_dataset = rep
                conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                conv.inference_input_type = tf.int8
                conv.inference_output_type = tf.int8
            path.write_bytes(conv.convert())
        elif runtime == "onnxruntime" and quant == "fp32":
            import tf2onnx

            spec = (tf.TensorSpec([None, img_size, img_size, 3], tf.float32, name="input"),)
            with export_mode():
                fn = tf.function(lambda x: model(x, training=False))
                tf2onnx.convert.from_function(fn, input_signature=spec, opset=17,
                                              output_path=str(path))
        else:
            raise SystemExit(f"the bench fallback exporter cannot make {runtime}:{quant}; "
                             f"it needs hmff_edge.convert")


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--variant", required=True)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--out", required=True)
    p.add_argument("--targets", default="litert:fp32")
    p.add_argument("--exporter", choices=("auto", "convert", "bench"), default="auto")
    a = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    targets = [tuple(t.split(":")) for t in a.targets.split(",") if t]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    from hmff_edge.models import build_model, count_macs, count_params

    model = build_model(a.variant, img_size=a.img_size, num_classes=a.classes)
    use_convert = a.exporter == "convert" or (a.exporter == "auto" and _convert_available())
    if use_convert:
        _with_convert(a.variant, out, a.img_size, a.classes, targets)
    else:
        from hmff_edge.models.bn_stats import calibrate_random_model

        calibrate_random_model(model)  # as hmff_edge.convert does for variant names
        _fallback(a.variant, out, a.img_size, a.classes, targets, model)
    info = {"variant": a.variant, "img_size": a.img_size, "classes": a.classes,
            "params": int(count_params(model)), "macs": int(count_macs(model)),
            "exporter": "hmff_edge.convert" if use_convert else "hmff_edge.bench._export",
            "random_weights": True, "bn_statistics": "from random inputs",
            "recipe": EXPORT_RECIPE}
    (out / INFO_NAME).write_text(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
