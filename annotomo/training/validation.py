"""Validation after each epoch: loss and per-class scores on a fixed set of annotated slices."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from ..conventions import NOT_ANNOTATED
from ..metrics import confusion_matrix, scores_from_confusion


def validation_plan(data, n_slices, rng):
    """A fixed set of (tomogram index, slice index) to score every epoch."""
    plan = []
    for i, d in enumerate(data):
        annotated = np.flatnonzero((d.labels != NOT_ANNOTATED).any(axis=(1, 2)))
        pick = annotated[np.linspace(0, len(annotated) - 1, min(n_slices, len(annotated))).round().astype(int)]
        plan += [(i, int(z)) for z in np.unique(pick)]
    return plan


def evaluate_slices(model, info, data, plan, loss_weights, device="cpu") -> dict:
    """Validation loss and per-class scores of `model` on the planned slices (in fp32, so that epochs
    compare on the same footing whatever precision trains).
    """
    from ..predict import Predictor  # the inference engine scores the slices, as it would segment them

    predictor = Predictor(model, info, device=device, precision="fp32", fuse=False, channels_last=False)
    loss_weights = loss_weights.cpu()
    n = info.n_outputs
    cm = np.zeros((n, n), dtype=np.int64)
    losses = []
    for i, z in plan:
        d = data[i]
        zs = np.clip(np.arange(z - predictor.context, z + predictor.context + 1), 0, d.image.shape[0] - 1)
        logits = predictor.logits(d.image[zs][None]).cpu()
        target = torch.from_numpy(d.labels[z].astype(np.int64))[None]
        losses.append(float(F.cross_entropy(logits, target, weight=loss_weights, ignore_index=NOT_ANNOTATED)))
        cm += confusion_matrix(d.labels[z][None], logits.argmax(1).numpy(), n)
    scores = scores_from_confusion(cm, info.class_names)
    return dict(loss=float(np.nanmean(losses)), scores=scores)
