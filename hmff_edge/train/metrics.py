"""Classification metrics from a confusion matrix (section 4.2.1 of the paper).

For single-label classification every error is one false positive (for the predicted class)
and one false negative (for the true class), so micro precision = micro recall = accuracy;
they are reported anyway because the paper does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[i, j]`` = number of samples of true class ``i`` predicted as ``j``."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def _div(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0


def metrics_from_confusion(cm: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """accuracy, micro/macro precision and recall, per-class precision/recall/F1/support."""
    cm = np.asarray(cm, np.int64)
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    total = cm.sum()
    per_class = {}
    precisions, recalls, f1s = [], [], []
    for i, name in enumerate(labels):
        p = _div(tp[i], tp[i] + fp[i])
        r = _div(tp[i], tp[i] + fn[i])
        f1 = _div(2 * p * r, p + r)
        per_class[str(name)] = {"precision": p, "recall": r, "f1": f1,
                                "support": int(cm[i].sum())}
        precisions.append(p)
        recalls.append(r)
        f1s.append(f1)
    return {
        "accuracy": _div(tp.sum(), total),
        "precision_micro": _div(tp.sum(), tp.sum() + fp.sum()),
        "recall_micro": _div(tp.sum(), tp.sum() + fn.sum()),
        "precision_macro": float(np.mean(precisions)) if precisions else 0.0,
        "recall_macro": float(np.mean(recalls)) if recalls else 0.0,
        "f1_macro": float(np.mean(f1s)) if f1s else 0.0,
        "num_samples": int(total),
        "labels": [str(x) for x in labels],
        "per_class": per_class,
        "most_confused": most_confused(cm, labels),
        "confusion_matrix": cm.tolist(),
    }


def most_confused(cm: np.ndarray, labels: Sequence[str], k: int = 5) -> list[dict[str, Any]]:
    """The ``k`` largest off-diagonal cells: ``{"true", "predicted", "count", "share"}``,
    ``share`` being the fraction of the true class's images that went to ``predicted``."""
    cm = np.asarray(cm, np.int64)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:k]
    out = []
    for i, j in zip(*np.unravel_index(flat, off.shape), strict=True):
        if off[i, j] == 0:
            break
        out.append({"true": str(labels[i]), "predicted": str(labels[j]),
                    "count": int(off[i, j]), "share": _div(off[i, j], cm[i].sum())})
    return out


def compute_metrics(y_true, y_pred, labels: Sequence[str]) -> dict[str, Any]:
    """Metrics of predicted class indices against true ones."""
    return metrics_from_confusion(confusion_matrix(y_true, y_pred, len(labels)), labels)


def format_metrics(m: dict[str, Any]) -> str:
    """A per-class table plus the headline numbers, for the terminal."""
    from hmff_edge.tables import text_table

    rows = [{"cls": k, "p": f"{v['precision']:.3f}", "r": f"{v['recall']:.3f}",
             "f1": f"{v['f1']:.3f}", "n": v["support"]} for k, v in m["per_class"].items()]
    table = text_table(rows, [("cls", "class"), ("p", "precision"), ("r", "recall"),
                                ("f1", "F1"), ("n", "support")])
    text = (f"{table}\naccuracy {m['accuracy']:.4f}  precision_micro {m['precision_micro']:.4f}  "
            f"recall_micro {m['recall_micro']:.4f}  ({m['num_samples']} images)")
    pairs = m.get("most_confused") or []
    if pairs:
        text += "\nmost confused  " + ", ".join(
            f"{p['true']} -> {p['predicted']} {p['count']} ({p['share']:.0%})" for p in pairs)
    return text
