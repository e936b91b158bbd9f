"""Bringing a tomogram to the model's pixel size and back (trilinear interpolation).

A model works at the pixel size it was trained at; a tomogram whose pixel size differs by more than 5%
is resampled for inference, and the class probabilities are brought back to the input grid.
scipy.ndimage is imported where it is used: importing it costs a few tenths of a second of every start.
"""

from __future__ import annotations

import numpy as np

from .volumes import release_pages

TOLERANCE = 0.05


def needs_resampling(model_pixel_size, pixel_size, tolerance=TOLERANCE) -> bool:
    """True when a tomogram's pixel size differs from the model's by more than `tolerance` (relative)."""
    return bool(model_pixel_size and pixel_size and abs(pixel_size / model_pixel_size - 1) > tolerance)


def resample_to_pixel_size(volume, voxel_size, pixel_size):
    """Trilinear resampling of a (z, y, x) volume from `voxel_size` (z, y, x) to an isotropic `pixel_size`."""
    from scipy import ndimage

    factors = [v / pixel_size for v in voxel_size]
    shape = [max(2, int(round(n * f))) for n, f in zip(volume.shape, factors, strict=True)]
    zoom = [s / n for s, n in zip(shape, volume.shape, strict=True)]
    return ndimage.zoom(np.asarray(volume, dtype=np.float32), zoom, order=1, mode="nearest", grid_mode=True)


def resample_labels(labels, shape):
    """Nearest-neighbour resampling of a uint8 label volume to `shape` (same field of view)."""
    from scipy import ndimage

    labels = np.asarray(labels)
    zoom = [s / n for s, n in zip(shape, labels.shape, strict=True)]
    return ndimage.zoom(labels, zoom, order=0, mode="nearest", grid_mode=True)


def resampled_shape(shape, voxel_size, pixel_size) -> tuple[int, int, int]:
    """The shape of a (z, y, x) volume of `voxel_size` resampled to an isotropic `pixel_size`."""
    return tuple(max(2, int(round(n * v / pixel_size))) for n, v in zip(shape, voxel_size, strict=True))


def _source_index(i: int, n_out: int, n_in: int) -> tuple[int, int, float]:
    """(lower index, upper index, weight of the upper) of output slice i in an input axis of n_in slices
    (pixel centres aligned, as ndimage.zoom's grid_mode; positions beyond the ends take the edge).
    """
    c = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1.0)
    lo = int(np.floor(c))
    hi = min(lo + 1, n_in - 1)
    return lo, hi, c - lo


def _zoom_plane(plane, shape):
    """Bilinear resampling of one (y, x) plane to `shape` (pixel centres aligned, edges repeated)."""
    from scipy import ndimage

    zoom = [s / n for s, n in zip(shape, plane.shape, strict=True)]
    return ndimage.zoom(plane, zoom, order=1, mode="nearest", grid_mode=True)


class ResampledVolume:
    """A (z, y, x) volume seen at another pixel size, computed slice by slice when read.

    Reading slices j..k computes them from the two source slices around each (linear in z, bilinear in
    the plane), so a memory-mapped tomogram of any size is resampled holding a few slices, not the whole
    volume: this is what `Predictor.segment` reads instead of the tomogram when pixel sizes differ.
    """

    def __init__(self, source, voxel_size, pixel_size):
        self.source = source
        self.shape = resampled_shape(source.shape, voxel_size, pixel_size)
        self.dtype = np.dtype(np.float32)
        self.ndim = 3
        self._cache: dict[int, np.ndarray] = {}

    def _source_slice(self, z: int) -> np.ndarray:
        if z not in self._cache:
            if len(self._cache) >= 4:
                self._cache.pop(min(self._cache))
            self._cache[z] = np.array(self.source[z], dtype=np.float32)  # a copy: a view would fault pages back in
            release_pages(self.source, z, z + 1)
        return self._cache[z]

    def plane(self, j: int) -> np.ndarray:
        """Slice j at the new pixel size (float32)."""
        lo, hi, w = _source_index(j, self.shape[0], self.source.shape[0])
        below = self._source_slice(lo)
        plane = below if w == 0 else below * np.float32(1 - w) + self._source_slice(hi) * np.float32(w)
        return _zoom_plane(plane, self.shape[1:])

    def __getitem__(self, key):
        if isinstance(key, tuple):
            return self[key[0]][(slice(None),) + key[1:]] if not isinstance(key[0], int) else self[key[0]][key[1:]]
        if isinstance(key, int | np.integer):
            return self.plane(int(key) % self.shape[0])
        start, stop, step = key.indices(self.shape[0])
        planes = [self.plane(j) for j in range(start, stop, step)]
        return np.stack(planes) if planes else np.zeros((0,) + self.shape[1:], np.float32)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[:], dtype=dtype)


class BackResampler:
    """Brings per-feature probabilities computed at the model's pixel size back to the tomogram's grid.

    Model-grid slices arrive in order (`add`, or the sinks `Predictor.segment` writes into); each
    tomogram slice is finished as soon as the two model slices around it are known: its feature
    probabilities are interpolated back (linear in z, bilinear in the plane), and its label is the most
    probable class, background being 1 - the features' sum. Holds two model slices and one tomogram slice.

    Args:
        model_shape: the model-grid (z, y, x) shape.
        shape: the tomogram's (z, y, x) shape.
        out_labels: where tomogram slices' labels go (indexed by tomogram slice).
        out_probabilities: optional per-feature arrays for the probabilities (clipped to 0..1).
        first, stop: the tomogram slices to produce (a chunk's), default all.
    """

    def __init__(self, model_shape, shape, out_labels, out_probabilities=None, first=0, stop=None):
        self.model_shape, self.shape = tuple(model_shape), tuple(shape)
        self.out_labels, self.out_probabilities = out_labels, out_probabilities
        self.next, self.stop = first, shape[0] if stop is None else stop
        self.window: dict[int, np.ndarray] = {}

    def model_range(self) -> tuple[int, int]:
        """Model slices [lo, hi) needed to produce tomogram slices first..stop-1."""
        lo = _source_index(self.next, self.shape[0], self.model_shape[0])[0]
        hi = _source_index(self.stop - 1, self.shape[0], self.model_shape[0])[1] + 1
        return lo, hi

    def add(self, j: int, probabilities: np.ndarray):
        """Take model slice j's (features, y, x) probabilities; write every tomogram slice now complete."""
        self.window[j] = np.asarray(probabilities, dtype=np.float32)
        while self.next < self.stop:
            lo, hi, w = _source_index(self.next, self.shape[0], self.model_shape[0])
            if hi not in self.window or lo not in self.window:
                break
            self._finish(self.next, self.window[lo], self.window[hi], w)
            self.next += 1
            keep = _source_index(self.next, self.shape[0], self.model_shape[0])[0] if self.next < self.stop else j + 1
            for old in [k for k in self.window if k < keep]:
                del self.window[old]

    def _finish(self, z, below, above, w):
        probs = []
        for k in range(len(below)):
            plane = below[k] if w == 0 else below[k] * np.float32(1 - w) + above[k] * np.float32(w)
            probs.append(_zoom_plane(plane, self.shape[1:]))
        background = np.float32(1.0) - sum(probs[1:], probs[0])
        self.out_labels[z] = np.argmax(np.stack([background, *probs]), axis=0).astype(np.uint8)
        release_pages(self.out_labels, z, z + 1, flush=True)  # a written slice leaves memory (memory maps)
        if self.out_probabilities is not None:
            for out, p in zip(self.out_probabilities, probs, strict=True):
                out[z] = np.clip(p, 0, 1)
                release_pages(out, z, z + 1, flush=True)

    def sinks(self, n_features: int):
        """(labels sink, feature sinks) for `Predictor.segment`: it writes model slices into these."""
        return _Discard(), FeatureSlices(n_features, self.add).sinks


class _Discard:
    """A write-only sink that keeps nothing (the model-grid labels Predictor.segment also writes)."""

    def __setitem__(self, key, value):
        pass


class FeatureSlices:
    """Feature sinks for `Predictor.segment` (which writes `sink[k][z] = slice`) that hand each slice's
    (features, y, x) probabilities to `on_slice(z, stack)` once all of its features have arrived; holds
    one slice at a time.
    """

    def __init__(self, n_features: int, on_slice):
        self.n_features, self.on_slice = n_features, on_slice
        self._pending: dict[int, dict[int, np.ndarray]] = {}
        self.sinks = [_FeatureSink(self, k) for k in range(n_features)]

    def take(self, z: int, k: int, value):
        """Feature k of slice z; the whole slice goes on when it is complete."""
        slot = self._pending.setdefault(z, {})
        slot[k] = np.array(value, dtype=np.float32)
        if len(slot) == self.n_features:
            del self._pending[z]
            self.on_slice(z, np.stack([slot[i] for i in range(self.n_features)]))


class _FeatureSink:
    def __init__(self, owner: FeatureSlices, k: int):
        self.owner, self.k = owner, k

    def __setitem__(self, z, value):
        self.owner.take(int(z), self.k, value)
