"""How good the trained model is: confusion matrix, precision/recall/F1 (numpy), and the plots.

Plots are drawn with matplotlib's Agg canvas directly (no pyplot, no global backend switch).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    """n x n counts: rows are the true class, columns the predicted one."""
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return m


def scores(cm: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class precision/recall/F1/support from a confusion matrix.

    A class never predicted has precision 0 (and never present, recall 0), as scikit-learn's
    ``zero_division=0``; macro-F1 averages over classes present in the data or predictions.
    """
    tp = np.diag(cm).astype(float)
    pred = cm.sum(axis=0).astype(float)
    true = cm.sum(axis=1).astype(float)
    precision = np.divide(tp, pred, out=np.zeros_like(tp), where=pred > 0)
    recall = np.divide(tp, true, out=np.zeros_like(tp), where=true > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    seen = (pred + true) > 0
    total = cm.sum()
    return {
        "accuracy": _r(tp.sum() / total) if total else 0.0,
        "macro_f1": _r(f1[seen].mean()) if seen.any() else 0.0,
        "balanced_accuracy": _r(recall[true > 0].mean()) if (true > 0).any() else 0.0,
        "count": int(total),
        "per_class": {name: {"precision": _r(precision[i]), "recall": _r(recall[i]), "f1": _r(f1[i]), "support": int(true[i])}
                      for i, name in enumerate(labels)},
        "confusion": cm.astype(int).tolist(),
    }


def _r(x: float) -> float:
    return round(float(x), 4)


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def curves_png(history: Sequence[dict[str, Any]], title: str) -> bytes:
    """Loss and accuracy per epoch, train vs val, side by side."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    epochs = [int(h["epoch"]) for h in history]
    for ax, metric, name in zip(fig.subplots(1, 2), ("loss", "accuracy"), ("loss", "accuracy"), strict=True):
        ax.plot(epochs, [h[metric] for h in history], "o-", ms=3, label="train")
        ax.plot(epochs, [h[f"val_{metric}"] for h in history], "o-", ms=3, label="val")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return _png(fig)


def confusion_png(cm: np.ndarray, labels: Sequence[str], title: str) -> bytes:
    """Row-normalised confusion matrix with the counts written in each cell."""
    from matplotlib.figure import Figure

    n = len(labels)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    side = max(4.0, 0.7 * n + 2)
    fig = Figure(figsize=(side + 1, side), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{cm[i, j]}\n{norm[i, j]:.0%}", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the true class")
    ax.set_title(title)
    return _png(fig)
