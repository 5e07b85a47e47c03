"""QAT layers: a convolution (or the classifier) with its batch normalization folded in and
its weights fake-quantized, and the zoo's activations as their int8 graphs compute them.

Folding uses the BN's moving statistics, frozen during QAT (the standard "freeze BN"
phase): ``w' = w * gamma / sqrt(var + eps)`` per output channel, ``b' = beta - mean * gamma
/ sqrt(var + eps)``. This is exactly the CONV_2D + bias TFLite runs after the converter
folds BN, so the weights that are fake-quantized are the ones the int8 file stores.
``gamma`` and ``beta`` stay trainable.
"""

from __future__ import annotations

import numpy as np

from hmff_edge._lazy import keras as _keras
from hmff_edge.models.layers import grouped_pointwise_conv
from hmff_edge.quant.fakequant import UNIT_RANGE, quantize_fixed, quantize_weights, weight_range

keras = _keras()
import tensorflow as tf  # noqa: E402

KINDS = ("conv", "depthwise", "grouped", "dense")


@keras.saving.register_keras_serializable(package="hmff_edge")
class QuantConvBN(keras.layers.Layer):
    """One convolution-like op (``kind``) + folded BN + per-channel weight fake quant.

    ``kernel_shape`` is the float layer's kernel shape: ``conv`` (kh, kw, Cin, F),
    ``depthwise`` (kh, kw, C, 1), ``grouped`` (1, 1, Cin/G, F), ``dense`` (Cin, F).
    ``centre_tap`` marks a padding-aware depthwise that only ever sees its centre tap: it
    runs (and is quantized) as the 1x1 depthwise its export is.
    """

    def __init__(self, kind: str, kernel_shape, *, strides=(1, 1), padding: str = "same",
                 dilation=(1, 1), groups: int = 1, interleave_input: bool = False,
                 centre_tap: bool = False, use_bn: bool = True, use_bias: bool = False,
                 epsilon: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
        self.kind = kind
        self.kernel_shape = tuple(int(v) for v in kernel_shape)
        self.strides = tuple(int(v) for v in strides)
        self.padding = str(padding).lower()
        self.dilation = tuple(int(v) for v in dilation)
        self.groups = int(groups)
        self.interleave_input = bool(interleave_input)
        self.centre_tap = bool(centre_tap)
        self.use_bn = bool(use_bn)
        self.use_bias = bool(use_bias)
        self.epsilon = float(epsilon)

    @property
    def channels(self) -> int:
        """Output channels (the axis BN and the weight scales run along)."""
        if self.kind == "depthwise":
            return self.kernel_shape[2] * self.kernel_shape[3]
        return self.kernel_shape[-1]

    def build(self, input_shape):
        c = self.channels
        self.kernel = self.add_weight(name="kernel", shape=self.kernel_shape)
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(c,), initializer="zeros")
        if self.use_bn:
            self.gamma = self.add_weight(name="gamma", shape=(c,), initializer="ones")
            self.beta = self.add_weight(name="beta", shape=(c,), initializer="zeros")
            self.moving_mean = self.add_weight(name="moving_mean", shape=(c,),
                                               initializer="zeros", trainable=False)
            self.moving_variance = self.add_weight(name="moving_variance", shape=(c,),
                                                   initializer="ones", trainable=False)

    def folded(self):
        """``(kernel, bias)`` with BN folded in, before fake quantization."""
        c = self.channels
        kernel = self.kernel
        bias = self.bias if self.use_bias else tf.zeros((c,), dtype=kernel.dtype)
        if self.kind == "depthwise" and self.centre_tap:
            kh, kw = self.kernel_shape[:2]
            kernel = kernel[kh // 2:kh // 2 + 1, kw // 2:kw // 2 + 1]
        if not self.use_bn:
            return kernel, bias
        scale = self.gamma * tf.math.rsqrt(self.moving_variance + self.epsilon)
        shift = self.beta + (bias - self.moving_mean) * scale
        if self.kind == "depthwise":
            scale = tf.reshape(scale, self.kernel_shape[2:])
        return kernel * scale, shift

    def _channels_last(self, kernel):
        """The kernel with one output channel per index of its last axis: a depthwise
        (kh, kw, C, M) kernel has C * M of them."""
        if self.kind != "depthwise":
            return kernel
        s = kernel.shape
        return tf.reshape(kernel, (s[0], s[1], s[2] * s[3]))

    def fake_quant_kernel(self):
        kernel, bias = self.folded()
        q = quantize_weights(self._channels_last(kernel), per_channel=self.kind != "dense")
        return (tf.reshape(q, kernel.shape) if self.kind == "depthwise" else q), bias

    def weight_scales(self) -> np.ndarray:
        """The int8 weight scale of each output channel (the classifier's one scale, repeated),
        as :meth:`fake_quant_kernel` quantizes and the converter stores them."""
        kernel, _ = self.folded()
        m = weight_range(self._channels_last(kernel), per_channel=self.kind != "dense")
        return np.broadcast_to(np.asarray(m, np.float64) / 127.0, (self.channels,))

    def call(self, x):
        w, b = self.fake_quant_kernel()
        if self.kind == "dense":
            return tf.matmul(x, w) + b
        if self.kind == "grouped":
            return grouped_pointwise_conv(x, w, self.groups, self.interleave_input) + b
        pad = "VALID" if self.centre_tap else self.padding.upper()
        if self.kind == "depthwise":
            strides = (1, *self.strides, 1)
            dil = (1, 1) if self.centre_tap else self.dilation
            return tf.nn.depthwise_conv2d(x, w, strides, pad, dilations=dil) + b
        return tf.nn.conv2d(x, w, self.strides, pad, dilations=self.dilation) + b

    def compute_output_shape(self, input_shape):
        if self.kind == "dense":
            return (*input_shape[:-1], self.channels)
        n, h, w = input_shape[0], input_shape[1], input_shape[2]
        if self.padding == "same":
            h = None if h is None else -(-h // self.strides[0])
            w = None if w is None else -(-w // self.strides[1])
        else:
            kh, kw = self.kernel_shape[:2]
            h = None if h is None else (h - (kh - 1) * self.dilation[0] - 1) // self.strides[0] + 1
            w = None if w is None else (w - (kw - 1) * self.dilation[1] - 1) // self.strides[1] + 1
        return (n, h, w, self.channels)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(kind=self.kind, kernel_shape=list(self.kernel_shape),
                   strides=list(self.strides), padding=self.padding,
                   dilation=list(self.dilation), groups=self.groups,
                   interleave_input=self.interleave_input, centre_tap=self.centre_tap,
                   use_bn=self.use_bn, use_bias=self.use_bias, epsilon=self.epsilon)
        return cfg


# hard_swish has no entry of its own: the QAT rebuild spells it as two of these, each with
# its quantizer, and a Multiply (see hmff_edge.quant.transform).
ACTIVATIONS = ("swish", "sixth", "relu6_plus_3", "relu", "relu6", "softmax", "linear")


@keras.saving.register_keras_serializable(package="hmff_edge")
class QuantActivation(keras.layers.Layer):
    """An activation spelled as its int8 graph computes it.

    ``swish``: ``x * q(sigmoid(x))``, the sigmoid on LOGISTIC's fixed 1/256 grid (the
    product is requantized by the :class:`FakeQuant` that follows). ``sixth`` (``x / 6``)
    and ``relu6_plus_3`` (``relu6(x + 3)``): the two factors of hard_swish
    ``(x / 6) * relu6(x + 3)``, a MUL and an ADD with RELU6 fused that XNNPACK runs in int8
    (its int8 HARD_SWISH and MINIMUM it does not take). ``softmax``: on SOFTMAX's fixed
    1/256 output grid. ``relu`` / ``relu6`` / ``linear`` as in float (the quantizer after
    them sets their range).
    """

    def __init__(self, activation: str, **kwargs):
        super().__init__(**kwargs)
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from "
                             f"{', '.join(ACTIVATIONS)}")
        self.activation = activation

    def call(self, x):
        a = self.activation
        if a == "swish":
            return x * quantize_fixed(tf.sigmoid(x), *UNIT_RANGE)
        if a == "sixth":
            return x * (1.0 / 6.0)
        if a == "relu6_plus_3":
            return tf.nn.relu6(x + 3.0)
        if a == "softmax":
            return quantize_fixed(tf.nn.softmax(x, axis=-1), *UNIT_RANGE)
        if a == "relu":
            return tf.nn.relu(x)
        if a == "relu6":
            return tf.nn.relu6(x)
        return x

    # No compute_output_shape: Keras traces ``call`` for it, and an activation keeps the shape.

    def get_config(self):
        cfg = super().get_config()
        cfg.update(activation=self.activation)
        return cfg
