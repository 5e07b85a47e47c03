"""A tiny trained run folder for the QAT and int8-ladder tests (TensorFlow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import make_image_folder

SIZE = 16
CLASSES = ("blue", "green", "red")  # sorted, as class folders are read


def tiny_model(activation: str = "swish"):
    """Conv-BN-act, depthwise-BN-act, grouped 1x1 with the folded interleave, an add, GAP,
    softmax: every layer kind the QAT rebuild folds, at 16 px."""
    import keras

    from hmff_edge.models.layers import (
        FusedActivation,
        FusedBatchNormalization,
        GroupedPointwiseConv2D,
    )

    def act(x, name):
        if activation == "relu6":
            return keras.layers.ReLU(6.0, name=name)(x)
        return FusedActivation(activation, name=name)(x)

    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem")(inp)
    x = act(FusedBatchNormalization(name="stem_bn")(x), "stem_act")
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = act(FusedBatchNormalization(name="dw_bn")(x), "dw_act")
    y = GroupedPointwiseConv2D(8, 2, name="pw1")(x)
    y = act(FusedBatchNormalization(name="pw1_bn")(y), "pw1_act")
    z = GroupedPointwiseConv2D(8, 2, interleave_input=True, name="pw2")(y)
    z = act(FusedBatchNormalization(name="pw2_bn")(z), "pw2_act")
    x = keras.layers.Add(name="add")([y, z])
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    out = keras.layers.Dense(len(CLASSES), activation="softmax", name="classifier")(x)
    return keras.Model(inp, out, name="tiny")


def grey_levels_folder(root: Path, per_class: int = 40, seed: int = 0) -> Path:
    """Classes told apart by a small brightness difference (levels 104, 120, 136): easy to
    learn, and lost when int8 ranges are calibrated far too wide."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for ci, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = np.clip(104 + 16 * ci + rng.normal(0, 3, (SIZE, SIZE, 3)), 0, 255)
            Image.fromarray(img.astype(np.uint8)).save(root / name / f"{i:03d}.png")
    return root


def flat_grey(root: Path, n: int = 8) -> Path:
    """A deliberately bad calibration set: flat mid-grey images narrow every range to one
    class's activations, so the other classes' clip."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((SIZE, SIZE, 3), 120, np.uint8)).save(root / f"{i}.png")
    return root


def make_run(root: Path, *, activation: str = "swish", per_class: int = 40,
             epochs: int = 25, grey: bool = False) -> Path:
    """Train :func:`tiny_model` on a colour-coded (or ``grey``-level) image folder and
    write a run folder."""
    import keras

    from hmff_edge import data as D
    from hmff_edge.preprocess import normalize

    images = (grey_levels_folder(root / "data", per_class) if grey else
              make_image_folder(root / "data", classes=CLASSES, per_class=per_class, size=SIZE))
    px, y = D.load_eval_arrays(str(images), SIZE, None, "all")
    x = normalize(px, [0.5] * 3, [0.5] * 3)
    keras.utils.set_random_seed(0)
    model = tiny_model(activation)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0)
    from hmff_edge.models.bn_stats import average_bn_statistics

    average_bn_statistics(model, [x[i:i + 32] for i in range(0, len(x), 32)])
    run = root / "run"
    run.mkdir()
    model.save(run / "model.keras")
    config = {"model": "tiny", "data": str(images), "img_size": SIZE, "batch_size": 16,
              "val_split": 0.25, "seed": 0, "augment": False, "mean": [0.5] * 3,
              "std": [0.5] * 3, "labels": list(CLASSES), "num_classes": len(CLASSES)}
    (run / "config.json").write_text(json.dumps(config))
    (run / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    return run


def normalized(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    from hmff_edge import data as D
    from hmff_edge.preprocess import normalize

    px, y = D.load_eval_arrays(str(folder), SIZE, None, "all")
    return normalize(px, [0.5] * 3, [0.5] * 3), y


def tflite_predict(path: Path, x: np.ndarray) -> np.ndarray:
    """Probabilities of a (possibly integer-I/O) TFLite file in LiteRT, batch by batch."""
    from ai_edge_litert.interpreter import Interpreter

    from hmff_edge.preprocess import dequantize, quantize

    it = Interpreter(model_path=str(path))
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], [len(x), *x.shape[1:]])
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    dt = np.dtype(inp["dtype"])
    if dt.kind in "iu":
        x = quantize(x, *inp["quantization"], dt.name)
    it.set_tensor(inp["index"], x.astype(dt, copy=False))
    it.invoke()
    y = it.get_tensor(out["index"])
    if np.dtype(out["dtype"]).kind in "iu":
        y = dequantize(y, *out["quantization"])
    return np.asarray(y, np.float32)


def convert_tflite(run: Path, x: np.ndarray, out: Path, quantization: str = "int8") -> Path:
    """``run``'s model as a ``quantization`` TFLite file at ``out`` (int8 I/O), calibrated
    on the first 32 rows of ``x``."""
    from hmff_edge.convert import to_tflite
    from hmff_edge.convert.spec import ConversionSpec

    calib = out.with_suffix(".calib.npy")
    np.save(calib, x[:32])
    to_tflite.convert(ConversionSpec(keras=str(run / "model.keras"), img_size=SIZE,
                                     quantization=quantization, out=str(out), calib=str(calib),
                                     io_dtype="int8"))
    return out
