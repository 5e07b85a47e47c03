"""``--class-weight auto|none|FILE`` and the class-imbalance warning."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from hmff_edge.errors import ConfigError

IMBALANCE_RATIO = 3.0  # largest / smallest class above this: warn at start


def read_weight_file(path: str, class_names: Sequence[str]) -> dict[str, float]:
    """A JSON object ``{class name: positive weight}``; classes it omits weigh 1.0.

    Unknown class names are refused (a typo would otherwise silently weigh 1.0)."""
    try:
        with open(path) as fh:
            raw = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--class-weight {path!r} is not a readable JSON file: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"--class-weight {path!r} must hold a JSON object "
                          f"{{class: weight}}, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(class_names))
    if unknown:
        raise ConfigError(f"--class-weight {path!r} names classes {unknown} that the data does "
                          f"not have (classes: {list(class_names)})")
    out = {}
    for k, v in raw.items():
        if not isinstance(v, int | float) or isinstance(v, bool) or not v > 0:
            raise ConfigError(f"--class-weight {path!r}: weight of {k!r} must be a positive "
                              f"number, got {v!r}")
        out[str(k)] = float(v)
    return {name: out.get(name, 1.0) for name in class_names}


def auto_weights(labels: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """Inverse frequency, scaled so that the weighted number of images stays the same:
    ``n / (k * count_c)``."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=len(class_names))
    n, k = float(counts.sum()), len(class_names)
    return {name: (n / (k * c) if c else 0.0) for name, c in zip(class_names, counts, strict=True)}


def resolve_weights(option: str, labels: np.ndarray,
                    class_names: Sequence[str]) -> dict[str, float] | None:
    """The per-class weights for ``option`` (None for ``none``)."""
    if option == "none":
        return None
    if option == "auto":
        return auto_weights(labels, class_names)
    return read_weight_file(option, class_names)


def imbalance_warning(labels: np.ndarray, class_names: Sequence[str]) -> str | None:
    """A one-line warning when the largest class is more than 3x the smallest."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=len(class_names))
    lo, hi = int(counts.argmin()), int(counts.argmax())
    if counts[lo] and counts[hi] / counts[lo] <= IMBALANCE_RATIO:
        return None
    return (f"warning: the classes are imbalanced: {class_names[hi]!r} has {counts[hi]} training "
            f"images, {class_names[lo]!r} {counts[lo]} (more than {IMBALANCE_RATIO:g}x); "
            "consider --class-weight auto")


def format_weights(weights: dict[str, float]) -> str:
    return "class weights: " + ", ".join(f"{k} {v:.3g}" for k, v in weights.items())
