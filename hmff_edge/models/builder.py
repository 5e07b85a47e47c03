"""One builder for every variant: the stage table of a :class:`Variant` expanded block by block.

Layer names are stable and derived from the block index (``block3_dw``, ``block3_pw1``,
``hmff_b2_dw``...), as in Keras' mobilenet.py, so weights and profiles can be matched by name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from hmff_edge._lazy import keras as _keras
from hmff_edge.models.layers import (
    FusedActivation,
    FusedBatchNormalization,
    GroupedPointwiseConv2D,
    PaddingAwareDepthwiseConv2D,
)
from hmff_edge.models.registry import (
    DEFAULT_DILATIONS,
    STEM_FILTERS,
    Variant,
    check_build_args,
    get_variant,
)

keras = _keras()
layers = keras.layers

_BN = {"momentum": 0.99, "epsilon": 1e-3}


def _bn(x, name: str):
    return FusedBatchNormalization(name=name, **_BN)(x)


def _act(x, activation: str, name: str):
    if activation == "relu6":
        return layers.ReLU(6.0, name=name)(x)
    return FusedActivation(activation, name=name)(x)


def _conv_bn_act(x, filters, kernel, stride, activation, name):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                      name=f"{name}_conv")(x)
    x = _bn(x, f"{name}_bn")
    return _act(x, activation, f"{name}_act")


def _depthwise_bn_act(x, stride, dilation, activation, name):
    # Stride 1 may meet maps smaller than the dilated kernel (HMFF at 7x7, any 3x3 at 1x1).
    dw = PaddingAwareDepthwiseConv2D if stride == 1 else layers.DepthwiseConv2D
    x = dw(3, strides=stride, dilation_rate=dilation, padding="same", use_bias=False, name=name)(x)
    x = _bn(x, f"{name}_bn")
    return _act(x, activation, f"{name}_act")


def _grouped_conv_bn_act(x, filters, groups, activation, name, interleave_input=False):
    if groups == 1:
        x = layers.Conv2D(filters, 1, use_bias=False, name=name)(x)
    else:
        x = GroupedPointwiseConv2D(filters, groups, interleave_input=interleave_input,
                                   name=name)(x)
    x = _bn(x, f"{name}_bn")
    return _act(x, activation, f"{name}_act")


def grouped_pointwise(x, filters: int, ch: int | None, activation: str, name: str):
    """kMobileNet's grouped pointwise convolution (the K-CAI library's, Schwarz Schuler et al.).

    * too narrow to group (``Cin <= 2*Ch``, or ``Cin <= Ch`` when expanding): a plain 1x1;
    * otherwise a grouped 1x1 with ``ceil(Cin / Ch)`` groups (at most ``filters``);
    * when it does not expand and has more than one group, a second path: interleave the
      channels, a grouped 1x1 with the same group count, and add it to the first path (the
      interleave is folded into that second layer, see ``GroupedPointwiseConv2D``).

    With ``ch=None`` it is MobileNet's plain pointwise convolution.
    """
    cin = int(x.shape[-1])
    expanding = filters > cin
    if ch is None or (cin <= ch if expanding else cin <= 2 * ch):
        return _grouped_conv_bn_act(x, filters, 1, activation, f"{name}_pw")
    groups = min(math.ceil(cin / ch), filters)
    if cin % groups or filters % groups:
        # Widths that do not divide never occur at MobileNet widths; refuse rather than
        # silently build a different network.
        raise ValueError(f"{name}: {cin}->{filters} channels do not split into {groups} groups")
    y = _grouped_conv_bn_act(x, filters, groups, activation, f"{name}_pw1")
    if expanding or groups == 1:
        return y
    z = _grouped_conv_bn_act(y, filters, groups, activation, f"{name}_pw2",
                             interleave_input=True)
    return layers.Add(name=f"{name}_add")([y, z])


def _separable_block(x, filters, stride, v: Variant, index: int):
    name = f"block{index}"
    x = _depthwise_bn_act(x, stride, 1, v.activation, f"{name}_dw")
    return grouped_pointwise(x, filters, v.ch, v.activation, name)


def branch_widths(n: int, k: int) -> list[int]:
    """Eq. (11): ``n1 = N - (K-1)*ceil(N/K)`` for the first branch, ``ceil(N/K)`` for the rest."""
    n2 = math.ceil(n / k)
    n1 = n - (k - 1) * n2
    if n1 <= 0:
        raise ValueError(f"cannot split {n} channels into {k} branches")
    return [n1] + [n2] * (k - 1)


def _hmff_module(f_hat, v: Variant, dilations: Sequence[int]):
    """Hierarchical multi-scale feature fusion (section 3.2.2; choices in models/hmff-mobilenet.md).

    Every branch is a depthwise dilated separable convolution of the whole input ``F^i``
    (eq. 10), dilation ``d_p``, producing ``n_p`` channels (eq. 11). Branches after the first
    are summed hierarchically (eq. 12: ``S_1 = O_2``, ``S_p = S_{p-1} + O_{p+1}``), all are
    concatenated, batch-normalized and activated (eq. 13), and added to ``F^i`` (eq. 14).
    """
    n = int(f_hat.shape[-1])
    outs = []
    for p, (d, width) in enumerate(zip(dilations, branch_widths(n, len(dilations)))):
        name = f"hmff_b{p + 1}"
        b = _depthwise_bn_act(f_hat, 1, int(d), v.activation, f"{name}_dw")
        outs.append(grouped_pointwise(b, width, v.ch, v.activation, name))
    fused = [outs[0]]
    running = None
    for p, o in enumerate(outs[1:], start=2):
        running = o if running is None else layers.Add(name=f"hmff_sum{p}")([running, o])
        fused.append(running)
    x = layers.Concatenate(name="hmff_concat")(fused) if len(fused) > 1 else fused[0]
    x = _bn(x, "hmff_concat_bn")
    x = _act(x, v.activation, "hmff_concat_act")
    x = layers.Add(name="hmff_residual")([x, f_hat])
    return _act(x, v.activation, "hmff_out")


def build_model(
    name: str,
    *,
    img_size: int = 224,
    num_classes: int = 10,
    dropout: float = 0.0,
    dilations: Sequence[int] = DEFAULT_DILATIONS,
):
    """Build a registered variant as a Keras functional model.

    Input: ``float32`` NHWC pixels normalized as ``(pixel / 255 - mean) / std``.
    Output: softmax probabilities over ``num_classes``.
    Raises :class:`~hmff_edge.errors.ConfigError` for an unknown name, an input smaller than
    the network's downsampling allows, fewer than 2 classes or bad dilation rates.
    """
    v = get_variant(name)
    check_build_args(img_size, num_classes, dilations, dropout)
    inputs = keras.Input((img_size, img_size, 3), name="image")
    x = _conv_bn_act(inputs, STEM_FILTERS, 3, 2, v.activation, "stem")
    for i, (filters, stride) in enumerate(v.blocks, start=1):
        x = _separable_block(x, filters, stride, v, i)
    if v.family == "hmff":
        x = _hmff_module(x, v, tuple(dilations))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name=v.name)
