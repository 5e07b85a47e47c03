"""Parameter and multiply-accumulate (MAC) counting over a built Keras model.

MACs are counted for convolutions (standard, grouped, depthwise, dilated: one MAC per kernel
tap per output element, padding included) and dense layers, and nothing else: the paper's
profiler also counted some element-wise work (its figures run 1-2% above these).
"""

from __future__ import annotations

import math


def count_params(model) -> int:
    """Trainable parameters (what the paper's Table 2 reports)."""
    return int(sum(math.prod(w.shape) for w in model.trainable_weights))


def layer_macs(layer) -> int:
    """MACs of one layer for one input image (0 for layers without multiply-accumulates)."""
    from hmff_edge._lazy import keras as _keras
    from hmff_edge.models.layers import GroupedPointwiseConv2D

    keras = _keras()
    L = keras.layers
    if isinstance(layer, L.DepthwiseConv2D):  # before Conv2D: a subclass in some versions
        _, oh, ow, cout = layer.output.shape
        kh, kw = layer.kernel_size
        return int(oh * ow * cout * kh * kw)
    if isinstance(layer, L.Conv2D):
        _, oh, ow, cout = layer.output.shape
        cin = layer.input.shape[-1]
        kh, kw = layer.kernel_size
        return int(oh * ow * cout * kh * kw * (cin // layer.groups))
    if isinstance(layer, GroupedPointwiseConv2D):
        _, oh, ow, cout = layer.output.shape
        cin = layer.input.shape[-1]
        return int(oh * ow * cout * (cin // layer.groups))
    if isinstance(layer, L.Dense):
        return int(layer.input.shape[-1] * layer.units)
    return 0


def count_macs(model) -> int:
    """Total MACs of ``model`` for one input image."""
    return int(sum(layer_macs(layer) for layer in model.layers))
