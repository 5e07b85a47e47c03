"""PNG plots of a run: loss and accuracy curves, confusion matrix, per-class scores and the
most confident mistakes (matplotlib, Agg)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _plt():
    from hmff_edge._lazy import require

    mpl = require("matplotlib")
    mpl.use("Agg")  # never open a window; works on headless machines
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict], out_dir: str | os.PathLike) -> list[Path]:
    """``loss.png`` and ``accuracy.png`` (train and validation per epoch)."""
    plt = _plt()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    epochs = [int(r["epoch"]) for r in history]
    paths = []
    for key, title in (("loss", "cross-entropy loss"), ("accuracy", "accuracy")):
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(epochs, [float(r[key]) for r in history], "o-", label="train")
        ax.plot(epochs, [float(r[f"val_{key}"]) for r in history], "o-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        p = out / f"{key}.png"
        fig.savefig(p, dpi=100)
        plt.close(fig)
        paths.append(p)
    return paths


def plot_confusion(cm, labels: Sequence[str], path: str | os.PathLike,
                   title: str = "confusion matrix") -> Path:
    plt = _plt()
    cm = np.asarray(cm)
    n = len(labels)
    size = max(4.0, min(12.0, 0.6 * n + 2))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 20:
        thresh = cm.max() / 2 if cm.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > thresh else "black")
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p


def worst_mistakes(y_true, probs, k: int = 16) -> list[dict]:
    """The ``k`` wrong predictions made with the highest confidence, worst first:
    ``[{"index", "true", "pred", "confidence"}]`` (indices into ``y_true``)."""
    y_true = np.asarray(y_true, np.int64)
    probs = np.asarray(probs, np.float64)
    pred = probs.argmax(axis=-1)
    conf = probs.max(axis=-1)
    wrong = np.flatnonzero(pred != y_true)
    order = wrong[np.argsort(-conf[wrong], kind="stable")][:k]
    return [{"index": int(i), "true": int(y_true[i]), "pred": int(pred[i]),
             "confidence": float(conf[i])} for i in order]


def plot_misclassified(images, mistakes: list[dict], labels: Sequence[str],
                       path: str | os.PathLike, cols: int = 4) -> Path:
    """A grid of ``mistakes`` (from :func:`worst_mistakes`) over the uint8 ``images``, each
    titled ``true -> predicted (confidence)``."""
    plt = _plt()
    n = max(1, len(mistakes))
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, m in zip(axes.flat, mistakes, strict=False):
        ax.imshow(np.asarray(images[m["index"]]), interpolation="nearest")
        ax.set_title(f"{labels[m['true']]} -> {labels[m['pred']]}\n({m['confidence']:.2f})",
                     fontsize=8)
    if not mistakes:
        axes.flat[0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    fig.suptitle("most confident mistakes: true -> predicted (confidence)", fontsize=9)
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_per_class(metrics: dict, path: str | os.PathLike) -> Path:
    """Grouped bars of precision, recall and F1 per class."""
    plt = _plt()
    names = list(metrics["per_class"])
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5.0, min(16.0, 0.7 * len(names) + 2)), 4))
    for j, key in enumerate(("precision", "recall", "f1")):
        ax.bar(x + (j - 1) * 0.27, [metrics["per_class"][c][key] for c in names], 0.27,
               label=key)
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.set_title(f"per-class scores (accuracy {metrics['accuracy']:.3f})")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig, plt, path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p
