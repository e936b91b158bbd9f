"""Training data: annotated tomograms in memory, and the patches drawn from them.

Labels: 0 background, k = k-th class name, 255 = not annotated (ignored), so sparse annotation (a few
slices or regions) is the normal case: patches come only from slices with annotated voxels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..conventions import NOT_ANNOTATED
from ..errors import InputError
from ..normalize import robust_normalization
from ..resample import needs_resampling, resample_labels, resample_to_pixel_size
from ..volumes import Volume, open_volume, read_labels
from .augment import warp_margin
from .config import TrainConfig


@dataclass
class AnnotatedTomogram:
    """A normalised tomogram (float32, in memory) and its uint8 labels."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    pixel_size: float | None


def load_annotated(
    tomogram, labels, n_classes: int, invert=False, name=None, tomoseg=False, pixel_size=None, target_pixel_size=None
) -> AnnotatedTomogram:
    """Read and check a tomogram/labels pair (paths or arrays) and normalise the tomogram.

    Args:
        tomogram: a file path, an open `volumes.Volume` (data with voxel size), or a (z, y, x) array.
        labels: a file path, or a uint8 array of the tomogram's shape.
        n_classes: the number of named features (label values above it, except 255, are refused).
        invert: the tomogram shows dense matter bright.
        name: a name for arrays in messages and provenance.
        tomoseg: EMAN2 tomoseg's preprocessing instead of annotomo's normalisation.
        pixel_size: Angstrom per voxel of array inputs (files carry their own).
        target_pixel_size: the model's pixel size (fine-tuning): a pair whose pixel size differs by more than
            5% is resampled to it (tomogram trilinear, labels nearest-neighbour).

    Raises:
        InputError: naming the file and the problem (shape, values, nothing annotated, NaN).
    """
    if isinstance(tomogram, Volume):  # an open volume, e.g. a napari layer's data with its voxel size
        path, pixel_size, raw, shape = tomogram.path, tomogram.pixel_size, tomogram.data, tomogram.shape
    elif isinstance(tomogram, (str, Path)):
        vol = open_volume(tomogram, min_slices=2)
        path, pixel_size, raw, shape = vol.path, vol.pixel_size, vol.data, vol.shape
    else:
        path, raw = name or "array", np.asarray(tomogram)
        shape = raw.shape
    normalization = robust_normalization(raw, path, invert, tomoseg)
    resample = needs_resampling(target_pixel_size, pixel_size)
    if resample:
        raw = resample_to_pixel_size(raw, (pixel_size,) * 3, target_pixel_size)
    image = normalization.apply(raw)
    if isinstance(tomogram, (str, Path)):
        vol.close()
    if isinstance(labels, (str, Path)):
        lab_vol = read_labels(labels, expected_shape=shape)
        lab, lab_path = np.ascontiguousarray(lab_vol.data), lab_vol.path
        lab_vol.close()
    else:
        lab, lab_path = np.asarray(labels, dtype=np.uint8), "labels"
        if lab.shape != shape:
            raise InputError(lab_path, f"labels have shape {lab.shape} but the tomogram has {shape}")
    if resample:
        lab = resample_labels(lab, image.shape)
        pixel_size = target_pixel_size
    if not np.all(np.isfinite(image)):
        raise InputError(path, "contains NaN or infinite voxels")
    bad = (lab > n_classes) & (lab != NOT_ANNOTATED)
    if bad.any():
        raise InputError(
            lab_path,
            f"label values up to {int(lab[bad].max())} but only {n_classes} classes are named "
            f"(0 = background, 1..{n_classes} = classes, 255 = not annotated)",
        )
    if not np.any(lab != NOT_ANNOTATED):
        raise InputError(lab_path, "no annotated voxel (every voxel is 255 = not annotated)")
    return AnnotatedTomogram(str(name or path), image, lab, pixel_size)


class PatchSampler:
    """Random training patches, with a fraction centred on voxels of a randomly chosen feature."""

    @classmethod
    def for_config(cls, data: list[AnnotatedTomogram], n_outputs: int, config: TrainConfig, rng) -> PatchSampler:
        """The sampler `train` uses: patches with room around them for warp_patches when warps are on."""
        margin = warp_margin(config.patch, config.warp_scale) if config.warp_fraction > 0 else 0
        return cls(data, n_outputs, config.patch, config.context_slices // 2, rng, config.focus_fraction, margin)

    def __init__(
        self, data: list[AnnotatedTomogram], n_outputs: int, patch: int, context: int, rng, focus=0.5, margin=0
    ):
        self.data, self.patch, self.context, self.rng, self.focus = data, patch, context, rng, focus
        self.margin = margin  # extra pixels on each side of patches that warp_patches rotates and rescales
        self.slices = [np.flatnonzero((d.labels != NOT_ANNOTATED).any(axis=(1, 2))) for d in data]
        self.class_voxels = {}
        for k in range(1, n_outputs):
            coords = []
            for i, d in enumerate(data):
                zyx = np.argwhere(d.labels == k)
                if len(zyx) > 200_000:
                    zyx = zyx[rng.choice(len(zyx), 200_000, replace=False)]
                coords.append(np.column_stack([np.full(len(zyx), i), zyx]))
            coords = np.concatenate(coords) if coords else np.zeros((0, 4), int)
            if len(coords):
                self.class_voxels[k] = coords

    def _one(self, margin):
        rng, p = self.rng, self.patch
        if self.class_voxels and rng.random() < self.focus:
            k = rng.choice(list(self.class_voxels))
            i, z, y, x = self.class_voxels[k][rng.integers(len(self.class_voxels[k]))]
            y0, x0 = y - rng.integers(p // 4, 3 * p // 4), x - rng.integers(p // 4, 3 * p // 4)
        else:
            i = rng.integers(len(self.data))
            z = rng.choice(self.slices[i])
            y0, x0 = (
                rng.integers(-p // 4, self.data[i].image.shape[1] - 3 * p // 4 + 1),
                rng.integers(-p // 4, self.data[i].image.shape[2] - 3 * p // 4 + 1),
            )
        d = self.data[i]
        zs = np.clip(np.arange(z - self.context, z + self.context + 1), 0, d.image.shape[0] - 1)
        m = margin
        img = crop(d.image, zs, y0 - m, x0 - m, p + 2 * m, 0.0, reflect=True)
        lab = crop(d.labels, [z], y0 - m, x0 - m, p + 2 * m, NOT_ANNOTATED, reflect=False)[0]
        return img, lab

    def batch(self, size: int, margin: int = 0):
        """`size` patches (images (size, context, s, s), labels (size, s, s)), s = patch + 2 margin."""
        s = self.patch + 2 * margin
        if size == 0:
            return np.zeros((0, 2 * self.context + 1, s, s), np.float32), np.zeros((0, s, s), np.uint8)
        imgs, labs = zip(*(self._one(margin) for _ in range(size)), strict=True)
        return np.stack(imgs), np.stack(labs)


def crop(vol, zs, y0, x0, size, fill, reflect):
    """A (len(zs), size, size) crop at (y0, x0) that may hang over the edges (reflected or filled).

    Costs O(crop) whatever the slice size: only the bounding box of the needed pixels is gathered.
    """
    ny, nx = vol.shape[1:]
    zs = np.asarray(zs)
    if 0 <= y0 and y0 + size <= ny and 0 <= x0 and x0 + size <= nx:  # inside: one gather of the crop
        return vol[zs, y0 : y0 + size, x0 : x0 + size]
    if reflect:
        ys, xs = reflect_index(np.arange(y0, y0 + size), ny), reflect_index(np.arange(x0, x0 + size), nx)
        box = vol[:, ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        return np.take(np.take(box[zs], ys - ys.min(), axis=1), xs - xs.min(), axis=2)
    out = np.full((len(zs), size, size), fill, dtype=vol.dtype)
    top, bottom, left, right = max(0, -y0), min(size, ny - y0), max(0, -x0), min(size, nx - x0)
    if top < bottom and left < right:
        out[:, top:bottom, left:right] = vol[zs, y0 + top : y0 + bottom, x0 + left : x0 + right]
    return out


def reflect_index(idx, n):
    """Indices reflected into [0, n) without repeating the edge (NumPy's 'reflect' padding)."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.abs(idx) % period
    return np.where(idx >= n, period - idx, idx)
