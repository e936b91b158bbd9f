"""Robust per-tomogram intensity normalisation, so any contrast range, offset and MRC mode works.

Statistics come from a strided sample of the volume (cheap on a memory map of any size); voxels are
then mapped to (value - median) / robust_sigma and clipped, so a few hot pixels or a gold bead do not
squash the contrast of the rest.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from .errors import InputError

CLIP = 5.0
# Simulated cells give -0.07 (SNR 0.1) to -1.7 (denoised) with dense matter dark, the same positive
# when inverted; a tomogram above this is more likely inverted than not.
INVERTED_SKEWNESS = 0.2
TOMOSEG_CLIP = 3.0


@dataclass(frozen=True)
class Normalization:
    """center and scale such that (v - center) / scale is ~N(0, 1) for the bulk of the voxels."""

    center: float
    scale: float
    invert: bool = False  # True for tomograms where dense matter is bright
    tomoseg_filter: bool = False  # EMAN2 tomoseg's band-pass and per-slice normalisation instead
    # Skewness of the normalised sample, as the model sees it (after any inversion): negative when dense
    # matter is dark, as annotomo expects; strongly positive suggests the contrast is the other way round.
    skewness: float | None = field(default=None, compare=False)
    # Per-frequency amplitude gain that matches the tomogram's in-plane spectrum to the model's training
    # data's range (`spectrum.matching_gain`), applied slice by slice after scaling; None: no matching.
    spectrum_gain: tuple | None = None

    @property
    def looks_inverted(self) -> bool:
        """True when the intensities are skewed towards bright values, as where dense matter is bright."""
        return self.skewness is not None and self.skewness > INVERTED_SKEWNESS

    def apply(self, block: np.ndarray, overwrite: bool = False, match_spectrum: bool = True) -> np.ndarray:
        """The normalised float32 (z, y, x) block; overwrite=True may reuse a float32 `block`'s memory (no
        copy); match_spectrum=False leaves out the spectrum matching (to measure the spectrum it matches).
        """
        if self.tomoseg_filter:
            return tomoseg_preprocess(block, self.invert)
        if overwrite and isinstance(block, np.ndarray) and block.dtype == np.float32 and block.flags.writeable:
            out = np.subtract(block, np.float32(self.center), out=block)
            out *= np.float32(1.0 / self.scale)
        else:
            out = (np.asarray(block, dtype=np.float32) - np.float32(self.center)) * np.float32(1.0 / self.scale)
        if self.invert:
            np.negative(out, out=out)
        if match_spectrum and self.spectrum_gain is not None:
            from .spectrum import filter_slices

            out = filter_slices(out, self.spectrum_gain)
        return np.clip(out, -CLIP, CLIP, out=out)

    def to_dict(self):
        """The settings as a plain dict (for JSON)."""
        return asdict(self)


def warn_if_inverted(norm, path, invert_contrast=False):
    """Warn when the tomogram's intensities suggest the opposite contrast of what the model expects."""
    if norm.looks_inverted:
        advice = "drop --invert-contrast" if invert_contrast else "if so, use --invert-contrast"
        warnings.warn(
            f"{path}: intensities are skewed towards bright values (skewness {norm.skewness:+.2f} as the "
            f"model sees them), as where dense matter is bright; {advice}",
            stacklevel=3,
        )


def sample_voxels(volume, max_voxels: int = 4_000_000) -> np.ndarray:
    """A strided sample of up to `max_voxels` voxels spread over the whole volume."""
    nz, ny, nx = volume.shape
    step = max(1, int(np.ceil((nz * ny * nx / max_voxels) ** (1 / 3))))
    zs = range(step // 2, nz, step) if nz > step else range(nz)
    from .volumes import release_pages

    parts = []
    for z in zs:
        parts.append(np.array(volume[z, ::step, ::step], dtype=np.float32).ravel())
        release_pages(volume, z, z + 1)
    return np.concatenate(parts)


def robust_normalization(volume, path="tomogram", invert: bool = False, tomoseg_filter: bool = False) -> Normalization:
    """Median and percentile-based sigma of the volume; raise InputError for unusable data."""
    sample = sample_voxels(volume)
    if not np.all(np.isfinite(sample)):
        raise InputError(path, "contains NaN or infinite voxels")
    lo, med, hi = np.percentile(sample, [1.0, 50.0, 99.0])
    sigma = (hi - lo) / (2 * 2.326)  # the 1st..99th percentile span of a Gaussian is 4.65 sigma
    if not sigma > 0:
        sigma = float(sample.std())
    if not sigma > 0:
        raise InputError(path, f"is constant (every voxel is {float(med):g}); nothing to segment")
    seen = np.clip((sample - med) / sigma, -CLIP, CLIP)
    spread = float(seen.std())
    skewness = float(np.mean((seen - seen.mean()) ** 3) / spread**3) if spread > 0 else 0.0
    return Normalization(float(med), float(sigma), invert, tomoseg_filter, -skewness if invert else skewness)


def tomoseg_preprocess(block: np.ndarray, invert: bool = False) -> np.ndarray:
    """EMAN2 tomoseg's preprocessing (e2tomoseg_preproc.py), slice by slice.

    Gaussian low-pass with cutoff 0.25 (absolute frequency, Nyquist = 0.5), Gaussian high-pass with a
    cutoff of 5 Fourier pixels, normalisation to zero mean and unit variance, clamping at +-3 sigma.
    EMAN2 filters the 3D volume; here each xy slice is filtered in 2D, so any slab can be processed alone.
    """
    from scipy import ndimage

    block = np.asarray(block, dtype=np.float32)
    out = np.empty_like(block)
    n = max(block.shape[1:])
    sigma_low = 1.0 / (2 * np.pi * 0.25)  # real-space sigma of a Gaussian with frequency sigma 0.25
    sigma_high = n / (2 * np.pi * 5.0)  # frequency sigma of 5 Fourier pixels of an n-pixel box
    for z, image in enumerate(block):
        low = ndimage.gaussian_filter(image, sigma_low, mode="reflect")
        band = low - ndimage.gaussian_filter(low, sigma_high, mode="reflect")
        sd = band.std()
        band = (band - band.mean()) / (sd if sd > 0 else 1.0)
        out[z] = np.clip(-band if invert else band, -TOMOSEG_CLIP, TOMOSEG_CLIP)
    return out
