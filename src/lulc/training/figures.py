"""Figures written into every bundle: the confusion matrix and the learning curves."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_figure(metrics: dict, path: Path) -> None:
    """Row-normalised confusion matrix with counts, so rare classes stay readable."""
    plt = _pyplot()
    cm = np.asarray(metrics["confusion_matrix"], dtype=np.float64)
    names = list(metrics["per_class"])
    rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = 1.6 + 0.55 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                    color="white" if rows[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(f"OA {metrics['overall_accuracy']:.3f}  kappa {metrics['kappa']:.3f}  macro F1 {metrics['macro_f1']:.3f}")
    fig.colorbar(im, ax=ax, fraction=0.046, label=f"share of reference {metrics.get('unit', 'pixel')}s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def learning_curve_figure(history: dict[str, list[float]], path: Path, best_epoch: int | None = None) -> None:
    """Training vs validation loss and accuracy per epoch: overfitting (the curves part) or a
    train/inference gap (validation far below training from the start) show at a glance."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for key, label, style in ((metric, "training", "-o"), (f"val_{metric}", "validation", "-s")):
            values = history.get(key) or []
            ax.plot(range(1, len(values) + 1), values, style, markersize=3, label=label)
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
