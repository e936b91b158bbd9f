"""Augmentation of training patches: in-plane rotations and rescaling, 90-degree turns and flips, z
flips of the context slices, intensity jitter; and the batch maker that combines them.

Augmentation keeps z as z: the missing wedge elongates and fades features along z, and slices keep
that character.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F


def warp_margin(patch: int, scale: float) -> int:
    """Pixels to crop around a patch so that any rotation at up to `scale` stays inside the crop."""
    return int(math.ceil((patch * math.sqrt(2) * scale - patch) / 2)) + 1


def warp_patches(images: np.ndarray, labels: np.ndarray, patch: int, rng, scale: float):
    """Central `patch` x `patch` crops of larger patches, each rotated by a random in-plane angle and
    rescaled by a factor in [1/scale, scale] (bilinear images, nearest labels).

    Rotations about z keep the missing wedge's main effect (features elongated and faded along z); they
    do turn the tilt axis within the slice, so the network learns not to rely on its direction. The
    90-degree ones of `augment` cannot show the network features at other orientations relative to
    the pixel grid, and the scale jitter covers cells whose features are a little larger or smaller.
    """
    n, src = len(images), images.shape[-1]
    angle = rng.uniform(0, 2 * np.pi, n)
    zoom = np.exp(rng.uniform(-np.log(scale), np.log(scale), n)) * patch / src
    theta = np.zeros((n, 2, 3), np.float32)
    theta[:, 0, 0], theta[:, 0, 1] = zoom * np.cos(angle), -zoom * np.sin(angle)
    theta[:, 1, 0], theta[:, 1, 1] = zoom * np.sin(angle), zoom * np.cos(angle)
    grid = F.affine_grid(torch.from_numpy(theta), (n, 1, patch, patch), align_corners=False)
    img = F.grid_sample(
        torch.from_numpy(np.ascontiguousarray(images)),
        grid,
        mode="bilinear",
        padding_mode="reflection",
        align_corners=False,
    )
    lab = F.grid_sample(
        torch.from_numpy(labels[:, None].astype(np.float32)),
        grid,
        mode="nearest",
        padding_mode="zeros",
        align_corners=False,
    )
    return img.numpy(), lab[:, 0].numpy().astype(np.uint8)


def augment(images: np.ndarray, labels: np.ndarray, rng, z_flip_fraction=0.0):
    """In-plane rotations/flips and intensity jitter; images (B, C, H, W), labels (B, H, W).

    A `z_flip_fraction` of the patches also get their context slices in reverse order: a cell mirrored
    in z is imaged with the same missing wedge (symmetric about the xy plane) and, as far as the defocus
    does not change across the section's thickness, the same CTF.
    """
    out_i, out_l = np.empty_like(images), np.empty_like(labels)
    n = len(images)
    turns, flips = rng.integers(4, size=n), rng.random(n) < 0.5
    z_flips = rng.random(n) < z_flip_fraction if z_flip_fraction > 0 else np.zeros(n, bool)
    for b in range(n):
        img = images[b][::-1] if z_flips[b] else images[b]
        img, lab = np.rot90(img, turns[b], axes=(1, 2)), np.rot90(labels[b], turns[b])
        out_i[b], out_l[b] = (img[:, :, ::-1], lab[:, ::-1]) if flips[b] else (img, lab)
    # gain and offset per patch; extra Gaussian noise on 30% of them, at a random strength
    out_i *= rng.uniform(0.75, 1.3, n).astype(np.float32)[:, None, None, None]
    out_i += rng.normal(0, 0.15, n).astype(np.float32)[:, None, None, None]
    noisy = np.flatnonzero(rng.random(n) < 0.3)
    if len(noisy):  # torch draws normal numbers faster than NumPy, and this is most of augmenting a batch
        strength = rng.uniform(0.1, 0.5, len(noisy)).astype(np.float32)[:, None, None, None]
        generator = torch.Generator().manual_seed(int(rng.integers(2**63)))
        out_i[noisy] += torch.randn((len(noisy),) + out_i.shape[1:], generator=generator).numpy() * strength
    return out_i, out_l


def vary_imaging(images: np.ndarray, rng, blur_fraction=0.0, noise_fraction=0.0) -> np.ndarray:
    """Imaging variation the simulator's conditions span, in place on normalised patches (B, C, H, W).

    A `blur_fraction` of the patches are low-passed in the slice plane (Gaussian, sigma 0.5-1.5 pixels), as
    SIRT-like and denoised reconstructions, lower resolution and resampling from finer pixels look; a
    `noise_fraction` get noise correlated over about a slice in z and half a pixel in-plane, as
    reconstructed noise is, at 0.2-1.0 of the patch's own spread (lower SNR).
    """
    from scipy import ndimage

    n = len(images)
    for b in np.flatnonzero(rng.random(n) < blur_fraction):
        sigma = rng.uniform(0.5, 1.5)
        images[b] = ndimage.gaussian_filter(images[b], (0, sigma, sigma), mode="reflect")
    for b in np.flatnonzero(rng.random(n) < noise_fraction):
        noise = ndimage.gaussian_filter(rng.standard_normal(images[b].shape, dtype=np.float32), (1.0, 0.5, 0.5))
        images[b] += noise * (rng.uniform(0.2, 1.0) * images[b].std() / (noise.std() + 1e-12))
    return images


def make_training_batch(sampler, config, rng):
    """One training batch as CPU tensors: images (B, C, H, W) float32 and labels (B, H, W) int64, sampled,
    warped (when the sampler leaves room for it) and augmented.
    """
    n = config.batch_size
    # Only the patches to be warped are cropped with the margin warp_patches needs (2.8x the pixels at the
    # default patch and scale), so cropping every patch with it would make batches much slower.
    n_warped = int(rng.binomial(n, config.warp_fraction)) if sampler.margin else 0
    imgs, labs = sampler.batch(n - n_warped)
    if n_warped:
        warped = warp_patches(*sampler.batch(n_warped, sampler.margin), config.patch, rng, config.warp_scale)
        imgs, labs = np.concatenate([imgs, warped[0]]), np.concatenate([labs, warped[1]])
    imgs, labs = augment(imgs, labs, rng, config.z_flip_fraction)
    if config.blur_fraction or config.noise_fraction:
        imgs = vary_imaging(imgs, rng, config.blur_fraction, config.noise_fraction)
    return torch.from_numpy(np.ascontiguousarray(imgs)), torch.from_numpy(labs.astype(np.int64))
