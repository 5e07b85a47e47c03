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

import sys
import weakref
from collections.abc import Iterable
from typing import Any

# model -> its traced training-mode forward pass, kept across calls (the training loop
# re-estimates the statistics after every epoch) and dropped with the model.
_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _training_forward(model):
    """``model(x, training=True)`` as one traced function per model.

    Eager execution dispatches every op from Python: 50 batches took ~15 s per epoch on the
    digits, longer than the epoch's training. The function holds the model weakly so the
    cache does not keep it alive.
    """
    import tensorflow as tf

    step = _STEPS.get(model)
    if step is None:
        ref = weakref.ref(model)
        step = tf.function(lambda x: ref()(x, training=True), reduce_retracing=True)
        _STEPS[model] = step
    return step


def average_bn_statistics(model, batches: Iterable[Any]) -> int:
    """Set every BN layer's moving mean/variance to the average of its batch statistics over
    ``batches`` (model inputs). Weights and optimizer state are untouched; if the iteration
    is interrupted the layers keep the statistics they had. Returns the number of batches
    used."""
    import keras
    import numpy as np

    bns = [layer for layer in model._flatten_layers()
           if isinstance(layer, keras.layers.BatchNormalization)]
    if not bns:
        return 0
    saved = [(layer.momentum, layer.moving_mean.numpy(), layer.moving_variance.numpy())
             for layer in bns]
    sums = [[np.zeros_like(m), np.zeros_like(v)] for _, m, v in saved]
    step = _training_forward(model)
    used = 0
    try:
        # Momentum 0: each training-mode call leaves exactly that batch's statistics in the
        # moving variables (the traced function sees the constant 0 every time).
        for layer in bns:
            layer.momentum = 0.0
        for x in batches:
            step(x)
            for acc, layer in zip(sums, bns, strict=True):
                acc[0] += layer.moving_mean.numpy()
                acc[1] += layer.moving_variance.numpy()
            used += 1
    finally:
        # Interrupted or empty: the statistics the model had; otherwise the averages.
        done = used and sys.exc_info()[0] is None
        for layer, (momentum, mean, var), acc in zip(bns, saved, sums, strict=True):
            layer.momentum = momentum
            layer.moving_mean.assign(acc[0] / used if done else mean)
            layer.moving_variance.assign(acc[1] / used if done else var)
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
