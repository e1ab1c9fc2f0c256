"""Honest segmentation metrics on held-out pixels: ignore-valued pixels never count."""
from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, ignore: int = 255) -> np.ndarray:
    """Rows: reference class, columns: predicted class."""
    keep = y_true != ignore
    t = y_true[keep].astype(np.int64)
    p = y_pred[keep].astype(np.int64)
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def report(cm: np.ndarray, class_names: list[str]) -> dict:
    """Overall accuracy, Cohen's kappa, per-class precision/recall/F1, micro and macro F1."""
    total = cm.sum()
    diag = np.diag(cm).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(cm.sum(0) > 0, diag / cm.sum(0), 0.0)
        recall = np.where(cm.sum(1) > 0, diag / cm.sum(1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    oa = diag.sum() / total if total else 0.0
    expected = (cm.sum(0) * cm.sum(1)).sum() / total**2 if total else 0.0
    kappa = (oa - expected) / (1 - expected) if expected < 1 else 0.0
    present = cm.sum(1) > 0
    return {
        "pixels": int(total),
        "overall_accuracy": round(float(oa), 4),
        "kappa": round(float(kappa), 4),
        # micro F1 equals overall accuracy for single-label classification
        "micro_f1": round(float(oa), 4),
        "macro_f1": round(float(f1[present].mean()) if present.any() else 0.0, 4),
        "per_class": {
            name: {"precision": round(float(precision[i]), 4), "recall": round(float(recall[i]), 4),
                   "f1": round(float(f1[i]), 4), "support": int(cm[i].sum())}
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": cm.tolist(),
    }


def _summary(metrics: dict) -> str:
    return (f"overall accuracy {metrics['overall_accuracy']:.3f}  kappa {metrics['kappa']:.3f}  "
            f"macro F1 {metrics['macro_f1']:.3f}")


def format_table(metrics: dict) -> str:
    """The printed report: summary, per-class table, and with a baseline its figures beside
    the model's (an ``RF F1`` column and a summary line)."""
    base = metrics.get("baseline")
    w = max(14, *(len(name) + 2 for name in metrics["per_class"]))
    lines = [_summary(metrics),
             f"{'class':<{w}}{'precision':>10}{'recall':>10}{'F1':>8}" + (f"{'RF F1':>8}" if base else "") + f"{'pixels':>10}"]
    for name, m in metrics["per_class"].items():
        rf = f"{base['per_class'][name]['f1']:>8.3f}" if base else ""
        lines.append(f"{name:<{w}}{m['precision']:>10.3f}{m['recall']:>10.3f}{m['f1']:>8.3f}{rf}{m['support']:>10}")
    if base:
        lines.append(f"random forest ({base['trees']} trees, {base['train_samples']} training {base['unit']}s): "
                     + _summary(base))
    if metrics.get("blocks") is not None:
        lines.append(f"{metrics['pixels']} {metrics.get('unit', 'pixel')}s from {metrics['blocks']} spatial block(s) "
                     f"of the {metrics.get('split', 'test')} split")
    return "\n".join(lines)
