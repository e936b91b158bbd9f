"""Merging slices along z: each slice's class logits are averaged with its neighbours' before labels
are chosen.

The network decides each slice on its own (with context slices as much as without), and its
slice-to-slice jitter costs accuracy on features that extend across slices; a binomial average over
`radius` slices on each side (1: weights 1/4, 1/2, 1/4) removes it. Evidence: benchmarks/RESULTS.md,
"Accuracy levers".
"""

from __future__ import annotations

import math

import numpy as np
import torch


def binomial_weights(radius: int) -> np.ndarray:
    """The 2 radius + 1 binomial weights that sum to 1 (radius 1: 1/4, 1/2, 1/4; radius 0: [1])."""
    if int(radius) != radius or radius < 0:
        raise ValueError(f"z_smooth must be a whole number of slices >= 0, got {radius}")
    radius = int(radius)
    weights = np.array([math.comb(2 * radius, k) for k in range(2 * radius + 1)], float)
    return (weights / weights.sum()).astype(np.float32)


def decide(logits: torch.Tensor, probabilities: bool):
    """Labels (B, H, W) uint8 and optionally feature probabilities (features, B, H, W) of single slices."""
    # max().indices, not argmax(): several times faster over a short channel axis on CPU (torch 2.x).
    labels = logits.max(1).indices.to(torch.uint8).cpu().numpy()
    if not probabilities:
        return labels, None
    prob = torch.softmax(logits, dim=1, dtype=torch.float32)[:, 1:].transpose(0, 1).cpu().numpy()
    return labels, prob


class SliceMerger:
    """Turns the network's output for consecutive slices lo..hi-1 into labels, merging slices along z.

    Without smoothing (radius 0) each slice is decided at once (argmax of its logits). With it, each
    slice's logits are kept until the slices within `radius` after it are known; then the weighted sum of
    its neighbours' logits (indices clamped to lo..hi-1, i.e. the edge slice repeated) is decided. Slices
    larger than HALF_PRECISION_BYTES of logits are kept as float16, so unbinned slices stay within the
    memory bound. `add` returns the slices it could finish: (z, uint8 labels, float32 probabilities or
    None).
    """

    HALF_PRECISION_BYTES = 16 << 20

    @classmethod
    def keeps_half(cls, values_per_slice: int) -> bool:
        """Whether a slice's logits (this many float32 values) are kept as float16."""
        return values_per_slice * 4 > cls.HALF_PRECISION_BYTES

    def __init__(self, weights: np.ndarray, lo: int, hi: int, probabilities: bool):
        self.lo, self.hi, self.probabilities = lo, hi, probabilities
        self.radius, self.weights = len(weights) // 2, [float(w) for w in weights]
        self.window: dict[int, torch.Tensor] = {}  # slice -> (classes, y, x) logits
        self.next = lo  # the next slice to finish

    def add(self, z0: int, logits: torch.Tensor) -> list:
        """Take the logits (B, classes, y, x) of slices z0..z0+B-1; return the slices now finished."""
        if self.radius == 0:
            labels, prob = decide(logits, self.probabilities)
            return [(z0 + j, labels[j], None if prob is None else prob[:, j]) for j in range(len(labels))]
        if self.keeps_half(logits[0].numel()):  # (on the GPU, logits stay there)
            logits = logits.half()
        for j in range(len(logits)):
            self.window[z0 + j] = logits[j]
        known = z0 + len(logits)
        done = []
        while self.next < self.hi and (self.next + self.radius < known or known >= self.hi):
            done.append((self.next, *self._finish(self.next)))
            for old in [z for z in self.window if z < self.next - self.radius + 1]:
                del self.window[old]
            self.next += 1
        return done

    @torch.inference_mode()
    def _finish(self, z: int):
        r = self.radius
        neighbours = [self.window[min(max(z + k, self.lo), self.hi - 1)] for k in range(-r, r + 1)]
        classes, rows, cols = neighbours[0].shape
        labels = np.empty((rows, cols), np.uint8)
        prob = np.empty((classes - 1, rows, cols), np.float32) if self.probabilities else None
        band = max(1, (1 << 21) // cols)  # rows per pass: temporaries of ~8 MB per class
        for y in range(0, rows, band):
            part = [n[:, y : y + band] for n in neighbours]
            acc = part[0].float() * self.weights[0]  # a new tensor: the window's logits stay as they are
            for w, n in zip(self.weights[1:], part[1:], strict=True):
                acc.add_(n.float() if n.dtype != torch.float32 else n, alpha=w)
            labels[y : y + band] = acc.max(0).indices.to(torch.uint8).cpu().numpy()
            if prob is not None:
                prob[:, y : y + band] = torch.softmax(acc, dim=0)[1:].cpu().numpy()
        return labels, prob
