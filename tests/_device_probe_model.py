"""How ``hmff_edge/device/probe_int8.tflite`` is made: a tiny full-integer model (conv,
depthwise conv, pooling, dense, softmax) whose only job is to show whether LiteRT applied
XNNPACK inside the emulated root. Run ``python tests/_device_probe_model.py OUT.tflite``."""

from __future__ import annotations

import sys


def make_probe(path: str) -> bytes:
    import numpy as np
    import tensorflow as tf

    keras = tf.keras
    inp = keras.Input((8, 8, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(4, activation="softmax")(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)

    def data():
        for _ in range(16):
            yield [rng.standard_normal((1, 8, 8, 3)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = data
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    blob = conv.convert()
    with open(path, "wb") as f:
        f.write(blob)
    return blob


if __name__ == "__main__":
    make_probe(sys.argv[1])
