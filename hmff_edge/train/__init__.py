"""Training: the paper's recipe (section 4.2), run folders, metrics, plots, resume, scale-out.

Public API: :class:`TrainConfig`, :func:`fit` -> :class:`TrainResult`, :func:`evaluate`,
:func:`lr_at`, :func:`compute_metrics` / :func:`metrics_from_confusion`,
:func:`format_summary`. Importing this package does not import TensorFlow.
"""

from hmff_edge.train.config import DIGITS_DEFAULTS, PAPER_DEFAULTS, TrainConfig, lr_at
from hmff_edge.train.evaluate import evaluate
from hmff_edge.train.loop import TrainResult, fit
from hmff_edge.train.metrics import (
    compute_metrics,
    confusion_matrix,
    format_metrics,
    metrics_from_confusion,
)
from hmff_edge.train.runfolder import RunFolder
from hmff_edge.train.summary import format_summary

__all__ = [
    "DIGITS_DEFAULTS", "PAPER_DEFAULTS", "RunFolder", "TrainConfig", "TrainResult",
    "compute_metrics", "confusion_matrix", "evaluate", "fit", "format_metrics",
    "format_summary", "lr_at", "metrics_from_confusion",
]
