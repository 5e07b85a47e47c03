"""The training loss: sparse cross-entropy, optionally with label smoothing.

Keras' ``SparseCategoricalCrossentropy`` has no ``label_smoothing``; this one one-hot
encodes the integer labels and uses the categorical form, which has. It is registered
with Keras so that checkpoints (saved compiled) load for ``--resume``.
"""

from __future__ import annotations

from hmff_edge._lazy import keras as _keras

keras = _keras()


@keras.saving.register_keras_serializable(package="hmff_edge")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of softmax outputs against integer labels smoothed by ``smoothing``."""

    def __init__(self, smoothing: float = 0.0, name: str = "smoothed_sparse_crossentropy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.smoothing = float(smoothing)

    def call(self, y_true, y_pred):
        ops = keras.ops
        n = ops.shape(y_pred)[-1]
        onehot = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), n, dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            onehot, y_pred, label_smoothing=self.smoothing)

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing}


def make_loss(label_smoothing: float):
    """The loss ``compile`` gets: Keras' own name when there is no smoothing."""
    if not label_smoothing:
        return "sparse_categorical_crossentropy"
    return SmoothedSparseCrossentropy(label_smoothing)
