"""The model zoo: HMFF-MobileNet, kMobileNet and MobileNetV1, registered by name.

``list_models`` / ``get_variant`` are TF-free; ``build_model``, ``count_params``,
``count_macs`` and the layers import TensorFlow on first use.
"""

from __future__ import annotations

from hmff_edge.models.registry import (
    DEFAULT_DILATIONS,
    MIN_IMG_SIZE,
    PAPER_TABLE2,
    REGISTRY,
    Variant,
    check_build_args,
    get_variant,
    list_models,
)


def build_model(name: str, **kwargs):
    """Build a variant; see :func:`hmff_edge.models.builder.build_model`."""
    get_variant(name)  # fail fast (and TF-free) on unknown names
    check_build_args(kwargs.get("img_size", 224), kwargs.get("num_classes", 10),
                     kwargs.get("dilations", DEFAULT_DILATIONS), kwargs.get("dropout", 0.0))
    from hmff_edge.models.builder import build_model as _build

    return _build(name, **kwargs)


def count_params(model) -> int:
    from hmff_edge.models.counting import count_params as _count

    return _count(model)


def count_macs(model) -> int:
    from hmff_edge.models.counting import count_macs as _count

    return _count(model)


def load_model(path, *, compile: bool = True):
    """``keras.models.load_model`` with the project's custom layers registered.

    Raises :class:`~hmff_edge.errors.ArtifactError` naming the file when Keras cannot load it.
    """
    import hmff_edge.models.layers  # noqa: F401  (registers the custom layers)
    import hmff_edge.quant.layers  # noqa: F401  (and the QAT layers of a QAT run)
    from hmff_edge._lazy import keras
    from hmff_edge.errors import ArtifactError

    try:
        return keras().models.load_model(str(path), compile=compile)
    except Exception as exc:  # Keras raises many types for a bad file
        raise ArtifactError(f"cannot load Keras model {str(path)!r}: {type(exc).__name__}: "
                            f"{str(exc)[:500]}") from exc


__all__ = [
    "DEFAULT_DILATIONS", "MIN_IMG_SIZE", "PAPER_TABLE2", "REGISTRY", "Variant",
    "build_model", "check_build_args", "count_macs", "count_params", "get_variant",
    "list_models", "load_model",
]
