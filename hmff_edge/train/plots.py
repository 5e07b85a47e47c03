"""PNG plots of a run: loss and accuracy curves, confusion matrix (matplotlib, Agg)."""

from __future__ import annotations

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
