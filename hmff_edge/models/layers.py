"""Custom Keras layers: the grouped pointwise convolution and the channel interleave.

Both have two graph forms over one set of weights:

* training form (default): the grouped 1x1 is one ``einsum`` over ``[N*H*W, G, Cin/G]``.
  Keras' ``Conv2D(groups=g)`` compiles through XLA and trains 5-8x slower on CPU, and a raw
  grouped ``tf.nn.conv2d`` has no CPU gradient (reference notes, section 4).
* export form (inside :func:`export_mode`): one grouped ``tf.nn.conv2d``, which converts to a
  single TFLite ``CONV_2D`` with a grouped filter and to ONNX ``Conv(group=g)``.

The interleave is reshape -> transpose -> reshape with constant shapes (``-1`` batch) in both
forms: one TFLite ``TRANSPOSE`` instead of one ``STRIDED_SLICE`` per step, and no dynamic
``SHAPE``/``PACK`` ops that would split the XNNPACK delegate.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from hmff_edge._lazy import keras as _keras

keras = _keras()
import tensorflow as tf  # noqa: E402  (after the backend is pinned by _keras())

_EXPORT_MODE = contextvars.ContextVar("hmff_edge_export_mode", default=False)


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
    """

    def __init__(self, filters: int, groups: int, kernel_initializer="glorot_uniform",
                 **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.groups = int(groups)
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
        if in_export_mode():
            return tf.nn.conv2d(x, self.kernel, strides=1, padding="VALID")
        g = self.groups
        cin_g = self.kernel.shape[2]
        cout_g = self.filters // g
        h, w = x.shape[1], x.shape[2]
        # [Cin/G, G*Cout/G] -> [G, Cin/G, Cout/G]
        k = tf.transpose(tf.reshape(self.kernel, (cin_g, g, cout_g)), (1, 0, 2))
        y = tf.einsum("ngc,gcf->ngf", tf.reshape(x, (-1, g, cin_g)), k)
        return tf.reshape(y, (-1, h, w, self.filters))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(filters=self.filters, groups=self.groups,
                   kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return cfg


@keras.saving.register_keras_serializable(package="hmff_edge")
class ChannelInterleave(keras.layers.Layer):
    """Channel shuffle: take every ``step``-th channel starting at 0, 1, ..., step-1."""

    def __init__(self, step: int, **kwargs):
        super().__init__(**kwargs)
        self.step = int(step)

    def call(self, x):
        h, w, c = x.shape[1], x.shape[2], x.shape[3]
        if c % self.step:
            raise ValueError(f"channels {c} not divisible by interleave step {self.step}")
        y = tf.reshape(x, (-1, h * w, c // self.step, self.step))
        y = tf.transpose(y, (0, 1, 3, 2))
        return tf.reshape(y, (-1, h, w, c))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        cfg = super().get_config()
        cfg.update(step=self.step)
        return cfg
