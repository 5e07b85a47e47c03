"""Set BatchNormalization moving statistics from data ("precise BN").

Used twice: after a training epoch (``hmff_edge.train``), and on a freshly built variant
before it is exported with random weights. A random-init network keeps Keras' start values
(mean 0, variance 1) while its real activations shrink by about 10x per block: at 224 px a
kMobileNet-16Ch's last swish inputs are ~1e-30. On such tiny values onnxruntime's fused
swish took 24 ns an element (the 14x14 layers, inputs 1e-12 to 1e-25) against 0.4 ns on the
first layers, so a benchmark of that model measured the underflow, not the network (31.6 ms
instead of 5.6). With statistics taken from inputs every BN output is unit-scale, as in a
trained network.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def average_bn_statistics(model, batches: Iterable[Any]) -> int:
    """Set every BN layer's moving mean/variance to the average of its batch statistics over
    ``batches`` (model inputs). Weights and optimizer state are untouched. Returns the number
    of batches used."""
    import keras

    bns = [layer for layer in model._flatten_layers()
           if isinstance(layer, keras.layers.BatchNormalization)]
    if not bns:
        return 0
    saved = [layer.momentum for layer in bns]
    used = 0
    try:
        for k, x in enumerate(batches):
            # momentum k/(k+1): a running *average* of the per-batch statistics.
            for layer in bns:
                layer.momentum = k / (k + 1.0)
            model(x, training=True)
            used += 1
    finally:
        for layer, m in zip(bns, saved, strict=True):
            layer.momentum = m
    return used


def calibrate_random_model(model, *, batches: int = 4, batch_size: int = 8, seed: int = 0) -> int:
    """BN statistics of a random-weight model from standard-normal images (the normalized
    pixel domain), so its activations keep a trained network's scale."""
    import numpy as np

    shape = tuple(int(d) for d in model.input_shape[1:])
    rng = np.random.default_rng(seed)
    return average_bn_statistics(
        model, (rng.standard_normal((batch_size, *shape)).astype("float32")
                for _ in range(batches)))
