"""Training settings: one dataclass, stored in every model file's provenance and training log."""

from __future__ import annotations

from dataclasses import dataclass, field

NEW_NETWORK_LEARNING_RATE = 6e-3
# Fine-tuning for features the model knows: it carries over further than at 6e-3 (RESULTS.md#generalise).
FINE_TUNING_LEARNING_RATE = 1e-3
# Fine-tuning a model that knows every feature stops after this many iterations per FINE_TUNING_VOXELS
# annotated voxels (at least this many), if the minutes last longer: on one tomogram, longer costs the
# model's breadth on other conditions (RESULTS.md#generalise, "Fine-tuning length").
FINE_TUNING_ITERATIONS = 2000
FINE_TUNING_VOXELS = 64 * 256 * 256
# Extra noise for denoised training tomograms: the model then carries over to raw ones (RESULTS.md#generalise).
AUTO_NOISE_FRACTION = 0.3


@dataclass
class TrainConfig:
    """Training settings; the defaults are what measured best on simulated tomograms.

    Evidence for the defaults: benchmarks/RESULTS.md, "Accuracy levers".

    Attributes:
        arch: network architecture, a name from `annotomo.models.ARCHITECTURES` ("unet" default,
            "unet-original", "tomoseg-cnn").
        arch_params: keyword arguments overriding the architecture's defaults (e.g. widths).
        context_slices: slices fed to the network (odd): 5 = the slice and 2 on each side ("2.5D");
            1 = 2D.
        patch: training patch size in pixels (square, in the slice plane).
        batch_size: patches per iteration.
        learning_rate: AdamW's peak learning rate (cosine schedule over the budget, 30 warm-up steps);
            None: FINE_TUNING_LEARNING_RATE when training starts from a model that knows every feature
            (lower, so that minutes on one tomogram keep more of what it knew), else
            NEW_NETWORK_LEARNING_RATE (a new network, or a model fine-tuned for a feature it lacks).
        weight_decay: AdamW's weight decay.
        minutes: wall-clock training budget (ignored when `iterations` is set).
        iterations: train exactly this many iterations (a deterministic length) instead of `minutes`.
        max_iterations: with a `minutes` budget, stop after this many iterations if they come first (the
            learning-rate schedule ends with whichever does). None: for fine-tuning a model that knows
            every feature, FINE_TUNING_ITERATIONS per FINE_TUNING_VOXELS annotated voxels (at least
            FINE_TUNING_ITERATIONS), else no limit; 0: no limit.
        epoch_iterations: iterations between validations (and checkpoints).
        seed: seeds the patch draws, augmentation and weight initialisation.
        class_weight_power: cross-entropy class weights are inverse class frequency to this power.
        dice_loss_weight: weight of the soft Dice term added to the cross-entropy (0: none).
        max_class_weight: cap on a class's cross-entropy weight relative to the lightest class.
        focus_fraction: share of patches centred on a voxel of a randomly chosen feature (rare features
            are seen often).
        warp_fraction: share of patches rotated by a random in-plane angle and rescaled.
        warp_scale: their scale factor is drawn from [1/warp_scale, warp_scale].
        z_flip_fraction: share of patches whose context slices are taken in reverse order.
        blur_fraction: share of patches low-passed in-plane (SIRT-like, denoised, coarser looks).
        noise_fraction: share of patches given extra z-correlated noise (lower SNR). None: AUTO_NOISE_FRACTION
            when every training tomogram holds little noise at fine scales (denoised, as
            `spectrum.fine_to_middle_power` tells), so that the model also segments raw tomograms; else 0.
        invert_contrast: the training tomograms show dense matter bright (the model remembers it).
        pixel_size: train at this pixel size (Angstrom): pairs at another pixel size are resampled to it
            (None: the smallest pixel size of the training tomograms; fine-tuning keeps the model's).
        validation_slices: slices per tomogram scored after each epoch.
        threads: CPU threads for torch (default: torch's own choice).
        device: "cpu", "cuda", "cuda:1" ...; None: a GPU when there is one, else the CPU.
        precision: mixed precision of the network: "auto" (bf16 on GPUs and AMX/AVX512-BF16 CPUs), "fp32",
            "bf16" or "fp16".
        prefetch_batches: batches made ahead in a background thread; None: 2 on GPUs (their steps wait
            for the CPU otherwise), 0 on CPUs (there the thread costs iterations).
    """

    arch: str = "unet"
    arch_params: dict = field(default_factory=dict)
    context_slices: int = 5
    patch: int = 128
    batch_size: int = 8
    learning_rate: float | None = None
    weight_decay: float = 1e-4
    minutes: float | None = 5.0
    iterations: int | None = None
    max_iterations: int | None = None
    epoch_iterations: int = 100
    seed: int = 0
    class_weight_power: float = 0.25
    dice_loss_weight: float = 1.0
    max_class_weight: float = 30.0
    focus_fraction: float = 0.5
    warp_fraction: float = 0.5
    warp_scale: float = 1.15
    z_flip_fraction: float = 0.5
    blur_fraction: float = 0.0
    noise_fraction: float | None = None
    invert_contrast: bool = False
    pixel_size: float | None = None
    validation_slices: int = 12
    threads: int | None = None
    device: str | None = None
    precision: str = "auto"
    prefetch_batches: int | None = None


def tomoseg_config(config: TrainConfig) -> TrainConfig:
    """Training settings of EMAN2 tomoseg's CNN (2D, 64-pixel boxes, batch 20, Adam at 1e-4), in place."""
    config.context_slices, config.patch, config.batch_size, config.learning_rate = 1, 64, 20, 1e-4
    config.weight_decay = 0.0
    config.warp_fraction, config.warp_scale = 1.0, 1.0  # every box at a random angle, no rescaling
    return config
