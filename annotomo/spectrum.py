"""Spectrum matching: make a tomogram's in-plane power spectrum look like the model's training data.

Tomograms of the same cell differ most in how their power is spread over spatial frequencies: a low SNR
adds white noise, SIRT-like reconstructions and denoising remove the high frequencies, another defocus
moves the CTF's weight, and a tomogram resampled from a smaller pixel size holds nothing near the
Nyquist frequency. A model trained on one of these looks at the others through features it never saw.
A model file carries the radially averaged power spectrum of each of its (normalised) training
tomograms; before segmenting, each slice of a new tomogram is filtered so that its spectrum falls within
their range (the idea of MemBrain-seg's `match_spectrum` preprocessing, which matches to one reference),
so the network sees the noise and resolution it was trained on.

Spectra are 2D (each xy slice, radially averaged, then averaged over a sample of slices) because the
network sees xy slices and the missing wedge makes z unlike x and y. Filtering slice by slice keeps any
z slab of a tomogram independent of the others (the `Predictor.halo` contract).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import fft

BINS = 48  # radial frequency bins from 0 to the Nyquist frequency (0.5 cycles per pixel)
MAX_GAIN = 4.0  # a filter never amplifies a frequency more than this (nor attenuates below 1 / 64)
MIN_GAIN = 1.0 / 64
CONTENT_FREQUENCY = 1 / 64  # cycles per pixel: below it (features over 64 pixels) spectra show the cell
CONTENT_BINS = int(CONTENT_FREQUENCY * 2 * BINS)  # the bins wholly below CONTENT_FREQUENCY
BIN_CENTRES = (np.arange(BINS) + 0.5) / (2 * BINS)  # cycles per pixel
SAMPLE_SLICES = 24
PAD = 32  # pixels mirrored at each edge before filtering, so the slice's borders do not ring


def radial_frequency(shape) -> np.ndarray:
    """|f| in cycles per pixel at each point of a (y, x) slice's rfft2."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    return np.sqrt(fy**2 + fx**2)


def _bin_index(frequency: np.ndarray) -> np.ndarray:
    return np.minimum((frequency * 2 * BINS).astype(np.int64), BINS - 1)  # corners join the last bin


def slice_power(image: np.ndarray) -> np.ndarray:
    """The radially averaged power spectrum (BINS values) of one 2D slice, per pixel of the slice.

    The slice's edges are tapered (Hann over 1/8 of each side) so that its borders add no false high
    frequencies; power is divided by the pixel count, so slices of any size compare.
    """
    image = np.asarray(image, dtype=np.float32)
    image = (image - image.mean()) * _edge_taper(image.shape)
    power = np.abs(fft.rfft2(image)) ** 2 / image.size
    index = _bin_index(radial_frequency(image.shape))
    weights = np.ones_like(power)
    weights[:, 1 : -1 if image.shape[1] % 2 == 0 else None] = 2.0  # the half of the spectrum rfft2 leaves out
    totals = np.bincount(index.ravel(), (power * weights).ravel(), BINS)
    counts = np.bincount(index.ravel(), weights.ravel(), BINS)
    return totals / np.maximum(counts, 1)


def _edge_taper(shape) -> np.ndarray:
    def ramp(n):
        width = max(1, n // 8)
        w = np.ones(n, np.float32)
        edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(width) + 0.5) / width)
        w[:width], w[n - width :] = edge, edge[::-1]
        return w

    return ramp(shape[0])[:, None] * ramp(shape[1])[None, :]


def volume_power(volume, normalization=None, slices: int = SAMPLE_SLICES) -> np.ndarray:
    """The mean radial power spectrum of up to `slices` evenly spaced xy slices of a (z, y, x) volume.

    normalization: applied to each slice first (without spectrum matching), so the spectrum is that of
    what the network sees; None for an already normalised volume.
    """
    from .volumes import release_pages

    nz = volume.shape[0]
    picks = np.unique(np.linspace(0, nz - 1, min(slices, nz)).round().astype(int))
    total = np.zeros(BINS)
    for z in picks:
        image = np.array(volume[z : z + 1], dtype=np.float32)  # a copy: a view would keep the pages resident
        release_pages(volume, int(z), int(z) + 1)
        if normalization is not None:
            image = normalization.apply(image, match_spectrum=False)
        total += slice_power(image[0])
    return total / len(picks)


def matching_gain(source_power, training_powers) -> tuple[float, ...]:
    """The amplitude gain per frequency bin that brings spectrum `source_power` into the range of the
    training tomograms' spectra `training_powers` (one spectrum each).

    Per bin, a source power below the training tomograms' lowest is raised to it, one above their
    highest lowered to it, one inside the range kept: a model trained on one tomogram has its input
    matched to that tomogram's spectrum, a model trained on many conditions (the built-in ones) sees its
    input unchanged where some training tomogram looked like it.
    """
    source = np.maximum(np.asarray(source_power, float), 1e-12)
    training = np.atleast_2d(np.asarray(training_powers, float))
    target = np.clip(source, training.min(axis=0), training.max(axis=0))
    gain = np.sqrt(np.maximum(target, 0.0) / source)
    # The lowest frequencies hold the cell's large-scale content (two cells of one condition differ by
    # 2x there), not the imaging: bins wholly below CONTENT_FREQUENCY get the gain of the next one.
    gain[:CONTENT_BINS] = gain[CONTENT_BINS]
    return tuple(float(g) for g in np.clip(gain, MIN_GAIN, MAX_GAIN))


FINE_BAND, MIDDLE_BAND = (0.3, 0.5), (0.05, 0.15)  # cycles per pixel
QUIET_FINE_SCALES = 0.1  # fine-to-middle power ratio below which a tomogram holds little fine noise


def fine_to_middle_power(power) -> float:
    """Mean power at fine scales (FINE_BAND: noise, in a raw tomogram) over that at middle scales
    (MIDDLE_BAND: membranes, ribosomes) of a spectrum from `volume_power`.

    WBP and SIRT-like reconstructions keep noise up to the Nyquist frequency; denoised tomograms hold
    almost none there (benchmarks/RESULTS.md#generalise has the ratios of simulated cells).
    """
    power = np.asarray(power, float)
    fine = power[(BIN_CENTRES > FINE_BAND[0]) & (BIN_CENTRES < FINE_BAND[1])].mean()
    middle = power[(BIN_CENTRES > MIDDLE_BAND[0]) & (BIN_CENTRES < MIDDLE_BAND[1])].mean()
    return float(fine / max(middle, 1e-12))


@lru_cache(maxsize=8)
def _gain_map(gain: tuple, shape: tuple) -> np.ndarray:
    """The rfft2-shaped map of `gain` (one value per radial bin) for slices of `shape`."""
    gain_map = np.interp(radial_frequency(shape), BIN_CENTRES, np.asarray(gain)).astype(np.float32)
    gain_map[0, 0] = 1.0  # the mean stays where the normalisation put it
    return gain_map


def filter_slices(block: np.ndarray, gain: tuple) -> np.ndarray:
    """`block` (float32 (z, y, x), modified in place and returned) with every xy slice filtered by `gain`."""
    _, ny, nx = block.shape
    pad_y, pad_x = min(PAD, ny - 1), min(PAD, nx - 1)
    shape = (ny + 2 * pad_y, nx + 2 * pad_x)
    gain_map = _gain_map(tuple(gain), shape)
    for z in range(block.shape[0]):
        padded = np.pad(block[z], ((pad_y, pad_y), (pad_x, pad_x)), mode="reflect")
        spectrum = fft.rfft2(padded)
        spectrum *= gain_map
        block[z] = fft.irfft2(spectrum, s=shape)[pad_y : pad_y + ny, pad_x : pad_x + nx]
    return block
