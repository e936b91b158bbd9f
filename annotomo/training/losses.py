"""Training losses: class-weighted cross-entropy (with a soft Dice term by default), and EMAN2
tomoseg's loss for its CNN. Unannotated pixels (255) are left out of every loss.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from ..conventions import NOT_ANNOTATED


def class_weights(data, n_outputs, power, max_weight) -> torch.Tensor:
    """Inverse class-frequency weights to the given power, normalised so the average voxel weighs 1."""
    counts = np.zeros(n_outputs)
    for d in data:
        counts += np.bincount(d.labels.ravel(), minlength=256)[:n_outputs]
    freq = counts / counts.sum()
    w = np.where(counts > 0, (freq + 1e-12) ** -power, 0.0)
    w = np.minimum(w / w[counts > 0].min(), max_weight)
    w = w / (w * freq).sum()
    return torch.tensor(w, dtype=torch.float32)


def weighted_cross_entropy(model, x, y, weights):
    """The U-Net's loss: class-weighted cross-entropy over annotated pixels."""
    return F.cross_entropy(model(x).float(), y, weight=weights, ignore_index=NOT_ANNOTATED)


def cross_entropy_and_dice(model, x, y, weights, dice_weight):
    """Weighted cross-entropy plus `dice_weight` x (1 - soft Dice averaged over the features present).

    One log-softmax serves both terms, and the Dice sums are gathered per class instead of multiplying
    the probabilities with a one-hot copy of the labels (the loss is a noticeable part of a CPU step).
    """
    logits = model(x).float()  # the loss in fp32 under mixed precision
    log_prob = torch.log_softmax(logits, 1)
    ce = F.nll_loss(log_prob, y, weight=weights, ignore_index=NOT_ANNOTATED)
    n = logits.shape[1]
    annotated = y != NOT_ANNOTATED
    target = torch.where(annotated, y, 0)
    prob = log_prob.exp() * annotated.unsqueeze(1)  # unannotated pixels count for no class
    predicted = prob.sum((0, 2, 3))[1:]  # per class: probability mass, true voxels, their overlap
    true = torch.bincount(target[annotated], minlength=n)[1:].to(prob.dtype)
    overlap = torch.zeros(n, dtype=prob.dtype, device=prob.device).index_add_(
        0, target.reshape(-1), prob.gather(1, target.unsqueeze(1)).reshape(-1)
    )[1:]
    present = true > 0
    dice = (2 * overlap + 1.0) / (predicted + true + 1.0)
    soft_dice = dice[present].mean() if present.any() else torch.ones((), device=logits.device)
    return ce + dice_weight * (1 - soft_dice)


def tomoseg_loss(model, x, y, weights=None):
    """EMAN2 tomoseg's loss, per feature network: log of the mean squared error between the label
    (binary mask, mean-shrunk by 2 to the output's half resolution) and min(output, 1), summed over
    features. Unannotated pixels are left out.
    """
    out = model.half_resolution(x).float()
    annotated = F.avg_pool2d((y != NOT_ANNOTATED).float()[:, None], 2)[:, 0] > 0.99
    total = 0.0
    for k in range(out.shape[1]):
        target = F.avg_pool2d((y == k + 1).float()[:, None], 2)[:, 0]
        err = (target - torch.clamp(out[:, k], max=1.0)) ** 2
        total = total + torch.log(err[annotated].mean() + 1e-8)
    return total
