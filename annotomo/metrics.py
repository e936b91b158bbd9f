"""Segmentation scores per class (Dice, IoU, precision, recall), ignoring unannotated voxels."""

from __future__ import annotations

import numpy as np

from .conventions import NOT_ANNOTATED


def confusion_matrix(truth, prediction, n_outputs: int, slab: int = 16) -> np.ndarray:
    """(n_outputs, n_outputs) counts [truth, prediction], computed slab by slab over z.

    Truth voxels equal to NOT_ANNOTATED (255) or beyond n_outputs are ignored.
    """
    cm = np.zeros((n_outputs, n_outputs), dtype=np.int64)
    for z in range(0, truth.shape[0], slab):
        t = np.asarray(truth[z : z + slab]).astype(np.int64).ravel()
        p = np.asarray(prediction[z : z + slab]).astype(np.int64).ravel()
        keep = (t < n_outputs) & (t != NOT_ANNOTATED)
        p = np.clip(p[keep], 0, n_outputs - 1)
        cm += np.bincount(t[keep] * n_outputs + p, minlength=n_outputs * n_outputs).reshape(n_outputs, n_outputs)
    return cm


def scores_from_confusion(cm: np.ndarray, class_names) -> dict:
    """Per-feature Dice/IoU/precision/recall (background excluded) and their means over features.

    A feature absent from both truth and prediction scores NaN (undefined), and is left out of means.
    """
    tp = np.diag(cm).astype(float)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = 2 * tp / (2 * tp + fp + fn)
        iou = tp / (tp + fp + fn)
        precision = tp / (tp + fp)
        recall = tp / (tp + fn)
    per_class = {}
    for k, name in enumerate(class_names, start=1):
        per_class[name] = dict(
            dice=float(dice[k]),
            iou=float(iou[k]),
            precision=float(precision[k]),
            recall=float(recall[k]),
            true_voxels=int(cm[k].sum()),
            predicted_voxels=int(cm[:, k].sum()),
        )
    valid = [v["dice"] for v in per_class.values() if np.isfinite(v["dice"])]
    return dict(
        classes=per_class,
        mean_dice=float(np.mean(valid)) if valid else float("nan"),
        mean_iou=float(np.nanmean([v["iou"] for v in per_class.values()])) if valid else float("nan"),
        accuracy=float(tp.sum() / max(cm.sum(), 1)),
        voxels_scored=int(cm.sum()),
    )


def segmentation_scores(truth, prediction, class_names) -> dict:
    """Scores of `prediction` against `truth` (label volumes of equal shape)."""
    return scores_from_confusion(confusion_matrix(truth, prediction, len(class_names) + 1), class_names)


def format_scores(scores: dict) -> str:
    """A per-class table for the terminal."""
    lines = [f"{'class':<18}{'Dice':>7}{'IoU':>7}{'prec.':>7}{'recall':>7}{'true vox':>11}"]
    for name, s in scores["classes"].items():
        lines.append(
            f"{name:<18}{s['dice']:>7.3f}{s['iou']:>7.3f}{s['precision']:>7.3f}{s['recall']:>7.3f}"
            f"{s['true_voxels']:>11d}"
        )
    lines.append(f"{'mean':<18}{scores['mean_dice']:>7.3f}{scores['mean_iou']:>7.3f}")
    return "\n".join(lines)
