"""Bringing a tomogram to the model's pixel size and back (trilinear interpolation).

A model works at the pixel size it was trained at; a tomogram whose pixel size differs by more than 5%
is resampled for inference, and the class probabilities are brought back to the input grid.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

TOLERANCE = 0.05


def needs_resampling(model_pixel_size, pixel_size, tolerance=TOLERANCE) -> bool:
    """True when a tomogram's pixel size differs from the model's by more than `tolerance` (relative)."""
    return bool(model_pixel_size and pixel_size and abs(pixel_size / model_pixel_size - 1) > tolerance)


def resample_to_pixel_size(volume, voxel_size, pixel_size):
    """Trilinear resampling of a (z, y, x) volume from `voxel_size` (z, y, x) to an isotropic `pixel_size`."""
    factors = [v / pixel_size for v in voxel_size]
    shape = [max(2, int(round(n * f))) for n, f in zip(volume.shape, factors, strict=True)]
    zoom = [s / n for s, n in zip(shape, volume.shape, strict=True)]
    return ndimage.zoom(np.asarray(volume, dtype=np.float32), zoom, order=1, mode="nearest", grid_mode=True)


def resample_labels(labels, shape):
    """Nearest-neighbour resampling of a uint8 label volume to `shape` (same field of view)."""
    labels = np.asarray(labels)
    zoom = [s / n for s, n in zip(shape, labels.shape, strict=True)]
    return ndimage.zoom(labels, zoom, order=0, mode="nearest", grid_mode=True)
