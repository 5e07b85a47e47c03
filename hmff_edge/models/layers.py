"""Custom Keras layers: the grouped pointwise convolution and the channel interleave.

Both have two graph forms over one set of weights:

* training form (default): the grouped 1x1 is one batched matmul over ``[G, N*H*W, Cin/G]``,
  or, for 4 groups or fewer, a dense 1x1 convolution over the block-diagonal kernel. Keras'
  ``Conv2D(groups=g)`` compiles through XLA and trains 5-8x slower on CPU, and a raw grouped
  ``tf.nn.conv2d`` has no CPU gradient (reference notes, section 4).
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

# Training form: with few groups the transposes of the batched-matmul form cost more than
# the MACs the grouping saves (a 4-group 64->128 layer at 32x32 ran 1.8x faster as one dense
# convolution over the block-diagonal kernel); with many groups the batched matmul wins.
DENSE_MAX_GROUPS = 4


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
        if self.groups <= DENSE_MAX_GROUPS:
            return tf.nn.conv2d(x, self.block_diagonal_kernel(), strides=1, padding="VALID")
        return self._batched_matmul(x)

    def _grouped_kernel(self):
        """``(1, 1, Cin/G, F)`` -> ``(Cin/G, G, F/G)``: group j's weights are ``[:, j, :]``."""
        return tf.reshape(self.kernel, (self.kernel.shape[2], self.groups, self.filters // self.groups))

    def block_diagonal_kernel(self):
        """The same weights as a dense ``(1, 1, Cin, F)`` kernel, zero outside the groups."""
        k = self._grouped_kernel()
        bd = tf.einsum("cjf,jh->jchf", k, tf.eye(self.groups, dtype=k.dtype))
        cin = self.kernel.shape[2] * self.groups
        return tf.reshape(bd, (1, 1, cin, self.filters))

    def _batched_matmul(self, x):
        # [N*H*W, G, Cin/G] -> [G, N*H*W, Cin/G] @ [G, Cin/G, F/G] -> [N*H*W, G, F/G].
        # Spelled as transpose + matmul: tf.einsum picks a 1.4-3x slower path for this
        # contraction on CPU (forward + backward, measured on the zoo's layer shapes).
        g = self.groups
        cin_g = self.kernel.shape[2]
        h, w = x.shape[1], x.shape[2]
        k = tf.transpose(self._grouped_kernel(), (1, 0, 2))
        xt = tf.transpose(tf.reshape(x, (-1, g, cin_g)), (1, 0, 2))
        y = tf.transpose(tf.matmul(xt, k), (1, 0, 2))
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
