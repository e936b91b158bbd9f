"""How unsure the model is of each voxel, from its class probabilities: where annotation would help.

The measure is computed from the probabilities the network already gives (after z merging), so it costs
little beside segmenting: `margin` (the default: 1 minus the gap between the two most probable
classes) or `entropy` (the class distribution's entropy over its maximum, log(features + 1)). Both lie
in 0..1, 0 where one class takes all the probability. benchmarks/bench_uncertainty.py chose the default
by how well each ranks wrong voxels above right ones (average precision of error detection; RESULTS.md).

Background's probability is 1 minus the features' sum, as everywhere in annotomo.
"""

from __future__ import annotations

import numpy as np

from .resample import FeatureSlices
from .volumes import release_pages

MEASURES = ("margin", "entropy")
DEFAULT_MEASURE = "margin"


def with_background(features: np.ndarray) -> np.ndarray:
    """(features + 1, ...) class probabilities from the (features, ...) feature probabilities."""
    features = np.clip(np.asarray(features, dtype=np.float32), 0, 1)
    background = np.clip(np.float32(1) - features.sum(axis=0), 0, 1)
    return np.concatenate([background[None], features])


def uncertainty(features: np.ndarray, measure: str = DEFAULT_MEASURE) -> np.ndarray:
    """float32 uncertainty in 0..1 of each voxel, from its (features, ...) feature probabilities."""
    if measure not in MEASURES:
        raise ValueError(f"unknown uncertainty measure {measure!r}; choose one of {', '.join(MEASURES)}")
    p = with_background(features)
    if measure == "entropy":
        logs = np.log(np.maximum(p, np.float32(1e-12)))
        value = -(p * logs).sum(axis=0) / np.float32(np.log(len(p)))
    else:
        top = np.partition(p, len(p) - 2, axis=0)[-2:]
        value = np.float32(1) - (top[1] - top[0])
    return np.clip(value, 0, 1).astype(np.float32)


class UncertaintyTap:
    """Feature-probability sinks for `Predictor.segment` (or `BackResampler`) that write each slice's
    uncertainty into `out` once all its features have arrived, and its probabilities into `forward` (the
    probability outputs) when given. Holds one slice at a time.
    """

    def __init__(self, out, n_features: int, forward=None, measure: str = DEFAULT_MEASURE):
        self.out, self.forward, self.measure = out, forward, measure
        self.sinks = FeatureSlices(n_features, self._write).sinks

    def _write(self, z: int, features: np.ndarray):
        for out, value in zip(self.forward or [], features, strict=self.forward is not None):
            out[z] = value
            release_pages(out, z, z + 1, flush=True)  # a written slice leaves memory (memory maps)
        self.out[z] = uncertainty(features, self.measure)
        release_pages(self.out, z, z + 1, flush=True)


def slice_means(volume) -> list[float]:
    """The mean of each z slice of a (z, y, x) array-like, read one slice at a time."""
    return [float(np.mean(volume[z], dtype=np.float64)) for z in range(volume.shape[0])]


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """Average precision of ranking `positives` (e.g. wrong voxels) first by descending `scores`."""
    scores, positives = np.ravel(scores), np.ravel(positives).astype(bool)
    total = int(positives.sum())
    if total == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = positives[order]
    precision_at_hits = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
    return float(precision_at_hits.sum() / total)
