"""Fake quantization: the int8 rounding of TFLite simulated in float, with straight-through
gradients (TensorFlow's ``FakeQuantWithMinMaxVars*`` ops, which the TFLite converter reads as
quantization parameters).

* activations: :class:`FakeQuant`, an asymmetric 8-bit range per tensor, tracked as a moving
  average of the batch min/max in training, frozen in inference, set from calibration
  batches by :func:`observe_ranges`; or a fixed range for tensors whose int8 scale LiteRT
  fixes (sigmoid and softmax outputs: 1/256 steps from 0);
* weights: :func:`quantize_weights`, symmetric per output channel over [-127, 127] (the int8
  spec's narrow range, zero point 0), scale ``max|w| / 127``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from hmff_edge._lazy import keras as _keras

keras = _keras()
import tensorflow as tf  # noqa: E402  (after the backend is pinned by _keras())

# LiteRT's int8 LOGISTIC and SOFTMAX write scale 1/256, zero point -128: [0, 255/256].
UNIT_RANGE = (0.0, 255.0 / 256.0)

_OBSERVING = contextvars.ContextVar("hmff_edge_qat_observing", default=False)
_FLOAT = contextvars.ContextVar("hmff_edge_qat_float", default=False)


@contextlib.contextmanager
def observing() -> Iterator[None]:
    """Inside: activation quantizers pass tensors through unchanged and widen their range to
    cover them (post-training calibration of a freshly built QAT model)."""
    token = _OBSERVING.set(True)
    try:
        yield
    finally:
        _OBSERVING.reset(token)


@contextlib.contextmanager
def float_mode() -> Iterator[None]:
    """Inside: every fake quantizer is the identity (the folded float model, for checks)."""
    token = _FLOAT.set(True)
    try:
        yield
    finally:
        _FLOAT.reset(token)


def _f32_rounded(v):
    """``v`` (float64) rounded to float32 precision: the int8 file stores its scales so."""
    return tf.cast(tf.cast(v, tf.float32), tf.float64)


def _fake_quant64(x, lo, hi):
    """TensorFlow's nudged 8-bit fake quantization (0..255 around an exact zero), in float64:
    its op takes float32 only, and float32 round-off alone sends a few outputs to the other
    side of a rounding boundary than the int8 file's exact integer sums do."""
    lo, hi = tf.cast(lo, tf.float64), tf.cast(hi, tf.float64)
    exact = (hi - lo) / 255.0
    # The converter nudges the zero point in double, rounding half away from zero.
    zp = tf.clip_by_value(tf.floor(-lo / exact + 0.5), 0.0, 255.0)
    scale = _f32_rounded(exact)
    q = tf.clip_by_value(tf.floor(x / scale + 0.5), -zp, 255.0 - zp)
    return q * scale


def _weights64(w, m):
    """Symmetric narrow-range weight fake quantization (scale ``m / 127``) in float64."""
    scale = _f32_rounded(m / 127.0)
    return tf.clip_by_value(tf.floor(w / scale + 0.5), -127.0, 127.0) * scale


def weight_range(w, per_channel: bool = True):
    """``max |w|`` per output channel (last axis) or per tensor, at least 1e-8: the
    symmetric range whose 127th part is the int8 weight scale."""
    axes = list(range(len(w.shape) - 1)) if per_channel else None
    # The range is a statistic of the weights, not a path for their gradient.
    return tf.maximum(tf.stop_gradient(tf.reduce_max(tf.abs(w), axis=axes)), 1e-8)


def quantize_weights(w, per_channel: bool = True):
    """Symmetric int8 fake quantization of ``w``, per channel over its last axis or (for a
    fully connected layer, whose weights the converter transposes) per tensor."""
    if _FLOAT.get():
        return w
    m = weight_range(w, per_channel)
    if w.dtype == tf.float64:
        return _weights64(w, m)
    if not per_channel:
        return tf.quantization.fake_quant_with_min_max_vars(w, -m, m, num_bits=8,
                                                            narrow_range=True)
    return tf.quantization.fake_quant_with_min_max_vars_per_channel(
        w, -m, m, num_bits=8, narrow_range=True)


def quantize_fixed(x, lo: float, hi: float):
    """8-bit fake quantization over a constant range."""
    if _FLOAT.get():
        return x
    if x.dtype == tf.float64:
        return _fake_quant64(x, lo, hi)
    return tf.quantization.fake_quant_with_min_max_vars(x, lo, hi, num_bits=8)


@keras.saving.register_keras_serializable(package="hmff_edge")
class FakeQuant(keras.layers.Layer):
    """8-bit asymmetric fake quantization of one activation tensor.

    The range always contains 0 (TFLite's zero point must be exact); in training it follows
    ``momentum``-weighted moving averages of the batch min and max (TensorFlow's
    ``MovingAverageQuantize``); in inference the stored range is used. ``value_range`` fixes
    it instead (the model input, whose range the normalization defines).

    One instance may quantize several tensors on one grid: calls with ``track=False`` use
    the range without updating it. TFLite's CONCATENATION gives its inputs its output's
    scale, so a concat's quantizer is also called, untracked, on each of its inputs.
    """

    def __init__(self, momentum: float = 0.99, value_range=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.value_range = None if value_range is None else tuple(float(v) for v in value_range)

    def build(self, input_shape):
        self.range_min = self.add_weight(name="range_min", shape=(), initializer="zeros",
                                         trainable=False)
        self.range_max = self.add_weight(name="range_max", shape=(), initializer="zeros",
                                         trainable=False)
        # 0 until a range was observed: the first observation replaces the initial [0, 0].
        self.observed = self.add_weight(name="observed", shape=(), initializer="zeros",
                                        trainable=False)

    def call(self, x, training=None, track=True):
        if _FLOAT.get():
            return x
        if self.value_range is not None:
            return quantize_fixed(x, *self.value_range)
        if not track:
            return x if _OBSERVING.get() else self.fake_quantize(x)
        lo, hi = tf.reduce_min(x), tf.reduce_max(x)
        first = self.observed < 0.5
        if _OBSERVING.get():
            self.range_min.assign(tf.where(first, lo, tf.minimum(self.range_min, lo)))
            self.range_max.assign(tf.where(first, hi, tf.maximum(self.range_max, hi)))
            self.observed.assign(1.0)
            return x
        if training:
            m = self.momentum
            self.range_min.assign(tf.where(first, lo, m * self.range_min + (1 - m) * lo))
            self.range_max.assign(tf.where(first, hi, m * self.range_max + (1 - m) * hi))
            self.observed.assign(1.0)
        return self.fake_quantize(x)

    def fake_quantize(self, x):
        """``x`` on the stored range's 8-bit grid (the range widened to contain 0)."""
        lo = tf.minimum(self.range_min, 0.0)
        hi = tf.maximum(tf.maximum(self.range_max, 0.0), lo + 1e-6)
        if x.dtype == tf.float64:
            return _fake_quant64(x, lo, hi)
        return tf.quantization.fake_quant_with_min_max_vars(x, lo, hi, num_bits=8)

    def scale_zero_point(self) -> tuple[float, int]:
        """The int8 scale and zero point this range gives (TensorFlow's nudging)."""
        if self.value_range is not None:
            lo, hi = self.value_range
        else:
            lo, hi = float(self.range_min.numpy()), float(self.range_max.numpy())
        lo = min(lo, 0.0)
        hi = max(hi, 0.0, lo + 1e-6)
        scale = (hi - lo) / 255.0
        return scale, int(round(-128 - lo / scale))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        cfg = super().get_config()
        cfg.update(momentum=self.momentum,
                   value_range=None if self.value_range is None else list(self.value_range))
        return cfg


def input_range(mean, std) -> tuple[float, float]:
    """A fixed 8-bit range for inputs normalized as ``(pixel / 255 - mean) / std``.

    The exact pixel range would put every pixel on a rounding tie (with mean = std = 0.5
    pixels are odd multiples of 1/255 and the grid's points even ones), where float32 and
    float64 arithmetic, or TensorFlow's and LiteRT's rounding, pick different neighbours.
    One percent wider, no pixel lies on a tie (the nearest is 0.005 steps from one), at the
    cost of about two pairs of adjacent pixel values sharing a level.
    """
    lo = min((0.0 - m) / s for m, s in zip(mean, std))
    hi = max((1.0 - m) / s for m, s in zip(mean, std))
    pad = 0.005 * (hi - lo)
    return lo - pad, hi + pad


def observe_ranges(model, batches) -> int:
    """Set every :class:`FakeQuant` range of ``model`` to the min/max over ``batches``
    (float arrays of model inputs), quantization off; returns the number of images seen."""
    n = 0
    with observing():
        for x in batches:
            model(x, training=False)
            n += len(x)
    return n
