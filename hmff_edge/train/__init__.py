"""Training: the paper's recipe (section 4.2), run folders, metrics, plots, resume, scale-out.

Public API: :class:`TrainConfig`, :func:`fit` -> :class:`TrainResult` (``initial_model=``
starts from a given ``keras.Model``), :class:`RunConfig` (a run's config.json:
``RunConfig.load(run_dir)`` / ``.save(run_dir)``), :func:`prepare_data` (the run's decoded
data and tf.data pipelines from a TrainConfig), :func:`evaluate`, :func:`lr_at` /
:func:`epoch_lr`, :func:`compute_metrics` / :func:`metrics_from_confusion`,
:func:`format_summary`. Importing this package does not import TensorFlow.
"""

from hmff_edge.train.config import DIGITS_DEFAULTS, PAPER_DEFAULTS, TrainConfig, epoch_lr, lr_at
from hmff_edge.train.data_setup import PreparedData, prepare_data
from hmff_edge.train.evaluate import evaluate
from hmff_edge.train.loop import TrainResult, fit
from hmff_edge.train.metrics import (
    compute_metrics,
    confusion_matrix,
    format_metrics,
    metrics_from_confusion,
)
from hmff_edge.train.runconfig import InitOrigin, RunConfig
from hmff_edge.train.runfolder import RunFolder
from hmff_edge.train.summary import format_summary

__all__ = [
    "DIGITS_DEFAULTS", "PAPER_DEFAULTS", "InitOrigin", "PreparedData", "RunConfig", "RunFolder",
    "TrainConfig", "TrainResult", "compute_metrics", "confusion_matrix", "epoch_lr", "evaluate",
    "fit", "format_metrics", "format_summary", "lr_at", "metrics_from_confusion",
    "prepare_data",
]
