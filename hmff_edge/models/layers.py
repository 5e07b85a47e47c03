"""Custom Keras layers: the grouped pointwise convolution, the channel interleave, a
depthwise convolution that skips the taps that can only ever see padding, a batch
normalization that trains through TensorFlow's fused kernel, and an activation whose
gradient is one fused XLA kernel.

The grouped convolution has one weight layout and these graph forms:

* one grouped ``tf.nn.conv2d`` (after an explicit interleave when ``interleave_input``). It
  converts to a single TFLite ``CONV_2D`` with a grouped filter and to ONNX
  ``Conv(group=g)``, and it is what export traces (:func:`export_mode`) unless an export plan picks an exact
  alternative form per layer (:mod:`hmff_edge.convert.forms`). Where
  TensorFlow can differentiate it (its oneDNN CPU kernels, and cuDNN on GPUs) it is the
  training form too (``bench/train_speed.py --no-native-grouped-conv`` measures the
  fallback instead).
  TensorFlow turns oneDNN on by default on Linux x86 only for CPUs with AVX512_VNNI,
  AVX512_BF16, AVX_VNNI or AMX; :func:`hmff_edge._lazy.tensorflow_env_defaults` sets
  ``TF_ENABLE_ONEDNN_OPTS=1`` on Linux x86-64 when it is unset.
* fallback training form, where a grouped ``tf.nn.conv2d`` has no gradient (TensorFlow's
  Eigen CPU kernels, e.g. ``TF_ENABLE_ONEDNN_OPTS=0``): one batched matmul over
  ``[G, N*H*W, Cin/G]``, or, for 4 groups or fewer, a dense 1x1 convolution over the
  block-diagonal kernel. (Keras' ``Conv2D(groups=g)`` compiles through XLA, which trains
  several times slower on CPU.)

The interleave (:func:`interleave_channels`) is reshape -> transpose -> reshape with constant
shapes (``-1`` batch): one TFLite ``TRANSPOSE`` instead of one ``STRIDED_SLICE`` per step, and
no dynamic ``SHAPE``/``PACK`` ops that would split the XNNPACK delegate. The builder folds it
into the grouped convolution that follows (``interleave_input=True``); the fallback
matmul form reads its input in interleaved order with the transpose it needs anyway.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from collections.abc import Iterator

from hmff_edge._lazy import keras as _keras

keras = _keras()
import tensorflow as tf  # noqa: E402  (after the backend is pinned by _keras())

_EXPORT_MODE = contextvars.ContextVar("hmff_edge_export_mode", default=False)

# Fallback training form: with few groups the transposes of the batched-matmul form cost
# more than the MACs the grouping saves (a 4-group 64->128 layer at 32x32 ran 1.8x faster as
# one dense convolution over the block-diagonal kernel); with many groups the matmul wins.
DENSE_MAX_GROUPS = 4

def native_grouped_training() -> bool:
    """Whether training may use a grouped ``tf.nn.conv2d`` (see module doc).

    Probed once per process (:func:`grouped_conv_has_gradient`), because whether it works
    depends on the TensorFlow build and its flags (oneDNN's CPU kernels and cuDNN have a
    gradient, TensorFlow's Eigen CPU kernels do not).
    ``HMFF_EDGE_NATIVE_GROUPED_CONV=0`` forces the matmul fallback (for A/B benchmarks).
    """
    if os.environ.get("HMFF_EDGE_NATIVE_GROUPED_CONV", "1") == "0":
        return False
    return grouped_conv_has_gradient()


@functools.cache
def grouped_conv_has_gradient() -> bool:
    """A tiny grouped convolution's two backprop ops, run on the default device."""
    # Eager even while a tf.function or a Keras model is being traced. init_scope also
    # pauses gradient tapes, so the two backprop ops are called directly.
    with tf.init_scope():
        x, k, dy = tf.ones((1, 1, 1, 4)), tf.ones((1, 1, 2, 4)), tf.ones((1, 1, 1, 4))
        args = {"strides": [1, 1, 1, 1], "padding": "VALID"}
        try:
            gx = tf.raw_ops.Conv2DBackpropInput(input_sizes=x.shape, filter=k,
                                                out_backprop=dy, **args)
            gk = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=k.shape,
                                                 out_backprop=dy, **args)
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError,
                tf.errors.NotFoundError):
            return False
        # Every output gets 2 (input) / 1 (filter): a wrong result counts as no.
        return bool(tf.reduce_all(gx == 2.0) and tf.reduce_all(gk == 1.0))


@contextlib.contextmanager
def export_mode(enabled: bool = True) -> Iterator[None]:
    """Trace models inside this context to get the export graph form (see module doc)."""
    token = _EXPORT_MODE.set(enabled)
    try:
        yield
    finally:
        _EXPORT_MODE.reset(token)


def in_export_mode() -> bool:
    return _EXPORT_MODE.get()


@keras.saving.register_keras_serializable(package="hmff_edge")
class GroupedPointwiseConv2D(keras.layers.Layer):
    """A 1x1 convolution split into ``groups`` independent groups, without bias.

    The kernel has the layout of ``Conv2D(groups=g)``: ``(1, 1, Cin // g, filters)``, output
    channel ``o`` belonging to group ``o // (filters // g)``.

    With ``interleave_input=True`` the layer first interleaves its input channels with step
    ``groups`` (what :class:`ChannelInterleave` does: channel ``i`` of group ``h`` is input
    channel ``i * groups + h``), kMobileNet's second path. In the fallback training forms
    that costs nothing extra: the batched matmul's input transpose reads the channels in
    interleaved order, and the block-diagonal kernel's rows are permuted instead of the
    activation. The grouped-convolution form keeps one explicit interleave
    (a single TFLite ``TRANSPOSE``), because a grouped ``CONV_2D`` needs each group's
    channels to be contiguous.
    """

    def __init__(self, filters: int, groups: int, kernel_initializer="glorot_uniform",
                 interleave_input: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.groups = int(groups)
        self.interleave_input = bool(interleave_input)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        if self.filters % self.groups:
            raise ValueError(f"filters={filters} is not divisible by groups={groups}")

    def build(self, input_shape):
        cin = int(input_shape[-1])
        if cin % self.groups:
            raise ValueError(f"input channels {cin} not divisible by groups={self.groups}")
        self.kernel = self.add_weight(
            name="kernel",
            shape=(1, 1, cin // self.groups, self.filters),
            initializer=self.kernel_initializer,
        )

    def call(self, x):
        return grouped_pointwise_conv(x, self.kernel, self.groups, self.interleave_input,
                                      name=self.name)

    def block_diagonal_kernel(self):
        """The same weights as a dense ``(1, 1, Cin, F)`` kernel, zero outside the groups
        (rows in the layer's input order, so interleaved when ``interleave_input``)."""
        return block_diagonal_kernel(self.kernel, self.groups, self.interleave_input)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(filters=self.filters, groups=self.groups,
                   interleave_input=self.interleave_input,
                   kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return cfg


def grouped_pointwise_conv(x, kernel, groups: int, interleave_input: bool = False,
                           name: str | None = None):
    """``x`` through a grouped 1x1 ``kernel`` of shape ``(1, 1, Cin/G, F)`` in the graph form
    for the context (see module doc): export mode emits the form chosen for layer ``name``
    (:func:`hmff_edge.convert.forms.current_form`: one grouped ``tf.nn.conv2d`` unless an
    export plan says otherwise), native training the grouped ``tf.nn.conv2d``; the fallback
    uses a block-diagonal dense kernel or a batched matmul.
    A function of the kernel, so that quantization-aware layers can pass a folded,
    fake-quantized kernel through the same forms."""
    if in_export_mode():
        from hmff_edge.convert import forms

        form = forms.current_form(name, groups)
        return forms.emit(x, kernel, groups, interleave_input, form)
    if x.dtype == tf.float64:  # a QAT model's exact reference: no grouped conv in double
        return _batched_matmul(x, kernel, groups, interleave_input)
    if native_grouped_training():
        if interleave_input:
            x = interleave_channels(x, groups)
        return tf.nn.conv2d(x, kernel, strides=1, padding="VALID")
    if groups <= DENSE_MAX_GROUPS:
        return tf.nn.conv2d(x, block_diagonal_kernel(kernel, groups, interleave_input),
                            strides=1, padding="VALID")
    return _batched_matmul(x, kernel, groups, interleave_input)


def _grouped_kernel(kernel, groups: int):
    """``(1, 1, Cin/G, F)`` -> ``(Cin/G, G, F/G)``: group j's weights are ``[:, j, :]``."""
    return tf.reshape(kernel, (kernel.shape[2], groups, kernel.shape[3] // groups))


def block_diagonal_kernel(kernel, groups: int, interleave_input: bool = False):
    """A grouped ``(1, 1, Cin/G, F)`` kernel as a dense ``(1, 1, Cin, F)`` one, zero outside
    the groups (rows in input order, so interleaved when ``interleave_input``)."""
    k = _grouped_kernel(kernel, groups)
    bd = tf.einsum("cjf,jh->jchf", k, tf.eye(groups, dtype=k.dtype))
    cin_g = kernel.shape[2]
    if interleave_input:
        # Row (group j, channel c) reads input channel c * G + j.
        bd = tf.transpose(bd, (1, 0, 2, 3))
    return tf.reshape(bd, (1, 1, cin_g * groups, kernel.shape[3]))


def _batched_matmul(x, kernel, groups: int, interleave_input: bool):
    # [N*H*W, G, Cin/G] -> [G, N*H*W, Cin/G] @ [G, Cin/G, F/G] -> [N*H*W, G, F/G].
    # Spelled as transpose + matmul: tf.einsum picks a 1.4-3x slower path for this
    # contraction on CPU (forward + backward, measured on the zoo's layer shapes).
    g, cin_g, filters = groups, kernel.shape[2], kernel.shape[3]
    h, w = x.shape[1], x.shape[2]
    k = tf.transpose(_grouped_kernel(kernel, g), (1, 0, 2))
    if interleave_input:
        # Input channel c * G + j is channel c of group j: one transpose does both.
        xt = tf.transpose(tf.reshape(x, (-1, cin_g, g)), (2, 0, 1))
    else:
        xt = tf.transpose(tf.reshape(x, (-1, g, cin_g)), (1, 0, 2))
    y = tf.transpose(tf.matmul(xt, k), (1, 0, 2))
    return tf.reshape(y, (-1, h, w, filters))


def interleave_channels(x, step: int):
    """Take every ``step``-th channel starting at 0, 1, ..., step-1 (NHWC, static H, W, C).

    reshape -> transpose -> reshape with constant shapes and a ``-1`` batch: one TFLite
    ``TRANSPOSE``, no ``SHAPE``/``PACK`` ops that would split the XNNPACK delegate.
    """
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    if c % step:
        raise ValueError(f"channels {c} not divisible by interleave step {step}")
    y = tf.reshape(x, (-1, h * w, c // step, step))
    y = tf.transpose(y, (0, 1, 3, 2))
    return tf.reshape(y, (-1, h, w, c))


@keras.saving.register_keras_serializable(package="hmff_edge")
class ChannelInterleave(keras.layers.Layer):
    """Channel shuffle: take every ``step``-th channel starting at 0, 1, ..., step-1.

    The builder folds the interleave into the following grouped convolution
    (``GroupedPointwiseConv2D(interleave_input=True)``); this layer stays for models saved
    before that, and for custom models.
    """

    def __init__(self, step: int, **kwargs):
        super().__init__(**kwargs)
        self.step = int(step)

    def call(self, x):
        return interleave_channels(x, self.step)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        cfg = super().get_config()
        cfg.update(step=self.step)
        return cfg


@keras.saving.register_keras_serializable(package="hmff_edge")
class PaddingAwareDepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """``DepthwiseConv2D`` (stride 1, ``"same"``) that drops taps which only ever see padding.

    With ``"same"`` padding an off-centre tap at offset ``k * dilation`` reads only zeros
    when ``|k * dilation| >= `` the map size along that axis. When that holds for every
    off-centre tap on both axes, which happens to HMFF's dilation-4/8 branches at 7x7 and to
    every 3x3 at a 1x1 map, the convolution is exactly a per-channel scale by the centre
    tap: TensorFlow would otherwise run a dilated depthwise as SPACE_TO_BATCH + depthwise +
    BATCH_TO_SPACE over a mostly-padding tensor (a fifth of HMFF's training step at 64x64),
    and the off-centre taps get zero gradient either way. In export mode the centre tap is a
    1x1 depthwise convolution (BN folds into it; int8 quantizes it per channel). Weights,
    counting and serialization are those of ``DepthwiseConv2D``; other shapes fall through.
    """

    def centre_tap_only(self, input_shape) -> bool:
        h, w = input_shape[1], input_shape[2]
        if (h is None or w is None or self.padding != "same" or tuple(self.strides) != (1, 1)
                or self.data_format != "channels_last"):
            return False
        (kh, kw), (dh, dw) = self.kernel_size, self.dilation_rate
        if kh % 2 == 0 or kw % 2 == 0:
            return False
        return (kh == 1 or dh >= h) and (kw == 1 or dw >= w)

    def call(self, inputs):
        if not self.centre_tap_only(inputs.shape):
            return super().call(inputs)
        kh, kw = self.kernel_size
        if in_export_mode():
            # A 1x1 depthwise convolution, not a MUL by a constant vector: the converter folds
            # the following BN into it and int8 quantizes its weights per channel. A MUL's
            # constant gets one int8 scale for all 1024 channels, which took a CIFAR-10
            # model's int8 top-1 agreement from 91% to 67%.
            centre = self.kernel[kh // 2:kh // 2 + 1, kw // 2:kw // 2 + 1]
            y = tf.nn.depthwise_conv2d(inputs, centre, strides=(1, 1, 1, 1), padding="VALID")
        else:
            # kernel: (kh, kw, Cin, multiplier) -> the centre tap as (Cin * multiplier,)
            centre = tf.reshape(self.kernel[kh // 2, kw // 2], (-1,))
            if self.depth_multiplier > 1:
                inputs = tf.repeat(inputs, self.depth_multiplier, axis=-1)
            y = inputs * centre
        if self.use_bias:
            y = y + self.bias
        return y if self.activation is None else self.activation(y)


@keras.saving.register_keras_serializable(package="hmff_edge")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``BatchNormalization`` whose training step is one fused kernel each way.

    Keras 3 spells a training-mode batch norm as moments + normalize, about ten element-wise
    ops forward and fifteen backward; TensorFlow's ``FusedBatchNormV3`` (oneDNN on CPU) does
    the same work in one op each way, 2.2x faster on a 64x16x16x256 tensor here, and BN is
    close to half of a MobileNet-style training step on CPU. The result is the same layer:
    same weights, same batch statistics (the fused kernel's Bessel-corrected variance is
    scaled back to Keras' biased one before the moving-average update), same inference path
    (Keras' own), so exports and saved models do not change. Anything the fused kernel does
    not cover (masks, renorm, non-NHWC axes, non-float32) falls through to Keras.
    """

    def _fusable(self, inputs, mask) -> bool:
        return (mask is None and not self.renorm and self.scale and self.center
                and len(inputs.shape) == 4 and self.axis in (-1, 3)
                and inputs.dtype == tf.float32 and self.compute_dtype == "float32")

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable and self._fusable(inputs, mask)):
            return super().call(inputs, training=training, mask=mask)
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, self.gamma, self.beta, epsilon=self.epsilon, data_format="NHWC",
            is_training=True)
        n = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], variance.dtype)
        variance = variance * ((n - 1.0) / tf.maximum(n, 1.0))
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return y


# swish and hard_swish with their backward passes as single XLA kernels. TensorFlow spells
# each backward as 5-6 element-wise ops (tf.nn.silu recomputes the sigmoid, then
# Sub/Mul/AddV2...), each a full pass over the activation in an Eigen kernel; one fused
# kernel reads x and dy once and writes dx once. On a 64x32x32x64 tensor here the backward
# went from 5.5 to 1.0 ms (swish) and 5.6 to 1.1 ms (hard_swish). hard_swish's forward,
# four TensorFlow ops, is fused too (3.1 -> 1.1 ms; equal to float32 rounding, <= 1 ulp);
# swish keeps TensorFlow's forward op, which oneDNN already fuses, so its values do not
# change at all.
@tf.function(jit_compile=True, reduce_retracing=True)
def _swish_grad(x, dy):
    s = tf.sigmoid(x)
    return dy * (s * (1.0 + x * (1.0 - s)))


@tf.function(jit_compile=True, reduce_retracing=True)
def _hard_swish(x):
    return keras.activations.hard_silu(x)


@tf.function(jit_compile=True, reduce_retracing=True)
def _hard_swish_grad(x, dy):
    # d/dx x * relu6(x + 3) / 6 = relu6(x + 3) / 6 + x / 6 on -3 < x < 3 (Relu6Grad's open
    # interval), the gradient TensorFlow derives for Keras' hard_silu.
    gate = tf.nn.relu6(x + 3.0) * (1.0 / 6.0)
    slope = tf.where((x > -3.0) & (x < 3.0), x * (1.0 / 6.0), tf.zeros_like(x))
    return dy * (gate + slope)


def _with_fused_grad(forward, grad):
    @tf.custom_gradient
    def act(x):
        return forward(x), lambda dy: grad(x, dy)

    return act


def fused_activations_enabled() -> bool:
    """False when ``HMFF_EDGE_XLA_ACTIVATIONS=0``: for a TensorFlow build without XLA's JIT."""
    return os.environ.get("HMFF_EDGE_XLA_ACTIVATIONS", "1") != "0"


@keras.saving.register_keras_serializable(package="hmff_edge")
class FusedActivation(keras.layers.Activation):
    """``Activation`` whose swish / hard_swish run as fused XLA kernels in training.

    Unfused, swish's backward is the largest element-wise cost of an HMFF training step on
    CPU (Sigmoid + Mul + Sub + AddV2 ops, about a quarter of the step at 64x64).
    Only ``training=True`` calls (``fit``) take the fused path; inference, any graph a user
    exports with Keras or TensorFlow, and :func:`export_mode` get Keras' own ops. Config and
    serialization are those of ``keras.layers.Activation``; other activations fall through.
    """

    def call(self, inputs, training=None):
        fused = _FUSED.get(self.activation)
        if (not training or fused is None or in_export_mode() or not fused_activations_enabled()
                or inputs.dtype != tf.float32):
            return super().call(inputs)
        return fused(inputs)


_FUSED = {
    keras.activations.silu: _with_fused_grad(keras.activations.silu, _swish_grad),
    keras.activations.hard_silu: _with_fused_grad(_hard_swish, _hard_swish_grad),
}
