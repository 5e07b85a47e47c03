"""Which model to train: a zoo name, or ``package.module:function`` for a custom builder."""

from __future__ import annotations

import contextlib
import importlib

from hmff_edge.errors import ConfigError


def build(name: str, *, img_size: int, num_classes: int, dropout: float = 0.0):
    """A fresh Keras model ``img_size x img_size x 3 -> num_classes`` probabilities.

    ``name`` is a zoo variant (``hmff_edge.models.list_models()``) or
    ``module:function``: a callable ``f(img_size=, num_classes=, dropout=)`` returning an
    uncompiled ``keras.Model`` with a softmax output (used by tests and custom models).
    """
    if ":" in name:
        mod_name, _, fn_name = name.partition(":")
        try:
            fn = getattr(importlib.import_module(mod_name), fn_name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot import model builder {name!r}: {exc}") from exc
        return fn(img_size=img_size, num_classes=num_classes, dropout=dropout)
    try:
        from hmff_edge.models import build_model
    except ImportError as exc:
        raise ConfigError(f"the model zoo (hmff_edge.models) is not available: {exc}") from exc
    return build_model(name, img_size=img_size, num_classes=num_classes, dropout=dropout)


def register_custom_objects() -> None:
    """Import the zoo's layers and the training loss so they are registered before
    ``load_model`` of a compiled checkpoint."""
    import hmff_edge.train.losses  # noqa: F401

    with contextlib.suppress(ImportError):
        import hmff_edge.models.layers  # noqa: F401
