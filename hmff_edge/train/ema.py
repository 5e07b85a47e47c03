"""``--ema``: Keras' optimizer-held moving average of the weights (``use_ema``).

Keras replaces the weights by their average at the end of every ``fit`` call. Training runs
one ``fit`` per epoch, so that would restart each epoch from the average; instead the
replacement is switched off and :func:`average_weights_applied` swaps the average in for
validation, checkpoints and the exported model, then puts the raw weights back. A
checkpoint holds the average as the model's weights (what export and evaluation see) and
the raw weights beside it (``epoch-NNNN.raw.npz``), so a resumed run continues from exactly
the raw weights an uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from hmff_edge.metadata import atomic_write_bytes


def base_optimizer(optimizer):
    """The optimizer that owns the slots (inside a mixed-precision loss-scale wrapper)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def keep_raw_weights_after_fit(optimizer) -> None:
    """Stop ``fit`` from overwriting the weights with their average when it returns."""
    opt = base_optimizer(optimizer)
    opt.finalize_variable_values = lambda var_list: None


def _pairs(optimizer):
    opt = base_optimizer(optimizer)
    return list(zip(opt._trainable_variables, opt._model_variables_moving_average, strict=True))


def raw_values(optimizer) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v, _ in _pairs(optimizer)]


def average_values(optimizer) -> list[np.ndarray]:
    return [np.array(a.numpy()) for _, a in _pairs(optimizer)]


def assign_raw(optimizer, values: list[np.ndarray]) -> None:
    for (v, _), x in zip(_pairs(optimizer), values, strict=True):
        v.assign(x)


@contextlib.contextmanager
def average_weights_applied(optimizer):
    """Inside the block the model's trainable weights are their moving average; the raw
    weights (yielded) are restored afterwards."""
    raw = raw_values(optimizer)
    for v, a in _pairs(optimizer):
        v.assign(a)
    try:
        yield raw
    finally:
        assign_raw(optimizer, raw)


def raw_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.stem + ".raw.npz")


def save_raw(checkpoint: Path, values: list[np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, *values)
    atomic_write_bytes(raw_path(checkpoint), buf.getvalue())


def load_raw(optimizer, checkpoint: Path) -> None:
    with np.load(raw_path(checkpoint)) as z:
        assign_raw(optimizer, [z[f"arr_{i}"] for i in range(len(z.files))])
