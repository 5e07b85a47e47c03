"""Models and graph readers for the export tests.

* :func:`plain_model`: plain Keras layers with a dilated depthwise convolution and a
  colour-driven head, so fp32/fp16/int8 exports all agree with Keras on the test images.
* :func:`zoo_model`: a real zoo variant at 32 px whose BatchNorm statistics are set from
  the images and whose classifier is re-drawn, so that its predictions vary from image to
  image (an untrained zoo model in inference mode outputs exactly uniform probabilities:
  the signal shrinks ~2x per block with identity BatchNorm statistics).
* :func:`delegate_partitions`: how many XNNPACK partitions LiteRT makes of a ``.tflite``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from hmff_edge.metadata import DEFAULT_MEAN, DEFAULT_STD
from hmff_edge.preprocess import list_images, load_rgb, normalize


def folder_arrays(folder: Path, size: int = 32) -> np.ndarray:
    pixels = np.stack([load_rgb(p, size) for p in list_images(folder)])
    return normalize(pixels, DEFAULT_MEAN, DEFAULT_STD)


def plain_model(path: Path, classes: int = 3, size: int = 32, activation: str = "swish") -> Path:
    from hmff_edge._lazy import keras as _keras

    keras = _keras()
    keras.utils.set_random_seed(0)
    inp = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation(activation)(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", dilation_rate=2)(x)
    x = keras.layers.Conv2D(16, 1)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    colour = keras.layers.GlobalAveragePooling2D()(inp)
    x = keras.layers.Concatenate()([x, colour])
    out = keras.layers.Dense(classes, activation="softmax")(x)
    model = keras.Model(inp, out)
    dense = model.layers[-1]
    k, b = dense.get_weights()
    k[-3:, :] = 0
    k[-3:, :3] = np.eye(3) * 8  # the dominant colour decides the class
    dense.set_weights([k, b])
    model.save(path)
    return path


def zoo_model(path: Path, images: np.ndarray, name: str = "hmff-mobilenet-16ch",
              classes: int = 3, size: int = 32) -> Path:
    from hmff_edge._lazy import keras as _keras
    from hmff_edge.models import build_model
    from hmff_edge.models.bn_stats import average_bn_statistics

    keras = _keras()
    keras.utils.set_random_seed(0)
    model = build_model(name, img_size=size, num_classes=classes)
    average_bn_statistics(model, [images])  # one batch: its statistics become the moving ones
    dense = [la for la in model.layers if isinstance(la, keras.layers.Dense)][-1]
    feats = keras.Model(model.input, dense.input).predict(images, verbose=0)
    rng = np.random.default_rng(0)
    k = rng.normal(0, 1, (feats.shape[1], classes)).astype("float32")
    k *= 4 / (feats.std() * np.sqrt(feats.shape[1]))
    dense.set_weights([k, -(feats.mean(0) @ k)])
    model.save(path)
    return path


def tflite_ops(path: Path) -> list[dict]:
    """Per operator: name, filter/input channels (conv) and dilation (depthwise)."""
    from tensorflow.lite.python import schema_py_generated as schema

    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(path.read_bytes(), 0))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    sg = m.subgraphs[0]
    out = []
    for op in sg.operators:
        code = m.operatorCodes[op.opcodeIndex]
        rec = {"op": names[max(code.builtinCode, code.deprecatedBuiltinCode)]}
        if rec["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            rec["in_ch"] = int(sg.tensors[op.inputs[0]].shape[-1])
            rec["filter_in_ch"] = int(sg.tensors[op.inputs[1]].shape[-1])
            rec["dilation"] = int(op.builtinOptions.dilationWFactor)
        out.append(rec)
    return out


_PARTITIONS = (
    "import sys\n"
    "from ai_edge_litert.interpreter import Interpreter\n"
    "it = Interpreter(model_path=sys.argv[1], num_threads=1)\n"
    "it.allocate_tensors()\n"
    "d = [o for o in it._get_ops_details() if o['op_name'] == 'DELEGATE']\n"
    "ins = {t['index'] for t in it.get_input_details()}\n"
    "outs = {t['index'] for t in it.get_output_details()}\n"
    "whole = len(d) == 1 and ins <= set(d[0]['inputs']) and outs <= set(d[0]['outputs'])\n"
    "print(len(d), int(whole))\n")


def delegate_partitions(path, whole: bool = False) -> int:
    """How many XNNPACK partitions LiteRT makes of a file (its 'DELEGATE' nodes). With
    ``whole``, an op left out at either end (e.g. a SPLIT XNNPACK cannot take in front of
    the one partition) counts as a second partition."""
    n, complete = subprocess.run([sys.executable, "-c", _PARTITIONS, str(path)],
                                 capture_output=True, text=True, check=True).stdout.split()
    return int(n) if not whole or complete == "1" or int(n) != 1 else 2
