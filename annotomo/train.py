"""Training a model on annotated tomograms.

Labels: 0 background, k = k-th class name, 255 = not annotated (ignored by the loss and the scores),
so sparse annotation (a few slices or regions) is the normal case. Patches are drawn from annotated
slices, half of them centred on a voxel of a randomly chosen feature so rare features are seen often;
the loss is cross-entropy weighted by inverse class frequency to the power 0.25, plus a soft Dice term.
Augmentation keeps z as z (the missing wedge elongates and fades features along z, and slices keep that
character): half of the patches are rotated in the slice plane by a random angle and rescaled by up
to 15%, all get 90-degree rotations and flips, intensity jitter and sometimes extra noise, and half get
their context slices in reverse order (a cell mirrored in z images the same). The learning rate follows
a cosine over the time (or iteration) budget. After each epoch the model is scored on validation
tomograms (or, without them, on a fixed sample of training slices); the best checkpoint is kept, and
a resumable state is saved.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import queue
import signal
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from . import __version__
from .conventions import MAX_CLASSES, NOT_ANNOTATED
from .errors import AnnotomoError, InputError
from .metrics import confusion_matrix, scores_from_confusion
from .modelfile import ModelInfo, load_model, save_model
from .models import build_model
from .normalize import robust_normalization
from .predict import Predictor, choose_device, choose_precision, mixed_precision
from .volumes import atomic_path, open_volume, read_labels


@dataclass
class TrainConfig:
    """Training settings; the defaults are what measured best on simulated tomograms (see README)."""

    arch: str = "unet"
    arch_params: dict = field(default_factory=dict)
    context_slices: int = 5  # 2.5D: +0.011..0.019 mean Dice over 2D (1) on simulated cells, at ~the same speed (README)
    patch: int = 128
    batch_size: int = 8
    learning_rate: float = 6e-3
    weight_decay: float = 1e-4
    minutes: float | None = 5.0
    iterations: int | None = None  # when set, overrides minutes (deterministic length)
    epoch_iterations: int = 100
    seed: int = 0
    class_weight_power: float = 0.25
    dice_loss_weight: float = 1.0  # adds a soft Dice term over the features to the cross-entropy
    max_class_weight: float = 30.0
    focus_fraction: float = 0.5
    warp_fraction: float = 0.5  # patches rotated by any in-plane angle and rescaled (see warp_patches)
    warp_scale: float = 1.15  # their scale factor is drawn from [1/warp_scale, warp_scale]
    # Patches whose context slices are taken in reverse order (see augment): +0.004 to +0.007 mean Dice over
    # three test cells in 4 of 5 paired 5-minute runs, -0.014 in one (README, "Accuracy levers").
    z_flip_fraction: float = 0.5
    invert_contrast: bool = False
    validation_slices: int = 12
    threads: int | None = None
    device: str | None = None  # None: a GPU when there is one, else the CPU
    precision: str = "auto"  # mixed precision of the network: bf16 where it runs fast (GPUs, AVX512-BF16/AMX CPUs)
    # Batches made ahead in a background thread; None: 2 on GPUs (whose steps waited for the CPU to make
    # batches: 45% of a step on an H200), 0 on CPUs (on 2 cores the thread took 20% of the iterations).
    prefetch_batches: int | None = None


@dataclass
class AnnotatedTomogram:
    """A normalised tomogram (float32, in memory) and its uint8 labels."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    pixel_size: float | None


@dataclass
class TrainResult:
    model_path: Path
    history: list
    best: dict
    iterations: int
    seconds: float
    interrupted: bool = False


def load_annotated(tomogram, labels, n_classes: int, invert=False, name=None, tomoseg=False) -> AnnotatedTomogram:
    """Read and check a tomogram/labels pair (paths or arrays) and normalise the tomogram."""
    if isinstance(tomogram, (str, Path)):
        vol = open_volume(tomogram, min_slices=2)
        path, pixel_size = vol.path, vol.pixel_size
        image = robust_normalization(vol.data, path, invert, tomoseg).apply(vol.data)
        vol.close()
    else:
        path, pixel_size = name or "array", None
        image = robust_normalization(tomogram, path, invert, tomoseg).apply(tomogram)
    if isinstance(labels, (str, Path)):
        lab_vol = read_labels(labels, expected_shape=image.shape)
        lab, lab_path = np.ascontiguousarray(lab_vol.data), lab_vol.path
        lab_vol.close()
    else:
        lab, lab_path = np.asarray(labels, dtype=np.uint8), "labels"
        if lab.shape != image.shape:
            raise InputError(lab_path, f"labels have shape {lab.shape} but the tomogram has {image.shape}")
    if not np.all(np.isfinite(image)):
        raise InputError(path, "contains NaN or infinite voxels")
    bad = (lab > n_classes) & (lab != NOT_ANNOTATED)
    if bad.any():
        raise InputError(lab_path, f"label values up to {int(lab[bad].max())} but only {n_classes} classes are named "
                                   f"(0 = background, 1..{n_classes} = classes, 255 = not annotated)")
    if not np.any(lab != NOT_ANNOTATED):
        raise InputError(lab_path, "no annotated voxel (every voxel is 255 = not annotated)")
    return AnnotatedTomogram(str(name or path), image, lab, pixel_size)


class PatchSampler:
    """Random training patches, with a fraction centred on voxels of a randomly chosen feature."""

    @classmethod
    def for_config(cls, data: list[AnnotatedTomogram], n_outputs: int, config: TrainConfig, rng) -> "PatchSampler":
        """The sampler `train` uses: patches with room around them for warp_patches when warps are on."""
        margin = warp_margin(config.patch, config.warp_scale) if config.warp_fraction > 0 else 0
        return cls(data, n_outputs, config.patch, config.context_slices // 2, rng, config.focus_fraction, margin)

    def __init__(self, data: list[AnnotatedTomogram], n_outputs: int, patch: int, context: int, rng, focus=0.5,
                 margin=0):
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
            y0, x0 = rng.integers(-p // 4, self.data[i].image.shape[1] - 3 * p // 4 + 1), \
                rng.integers(-p // 4, self.data[i].image.shape[2] - 3 * p // 4 + 1)
        d = self.data[i]
        zs = np.clip(np.arange(z - self.context, z + self.context + 1), 0, d.image.shape[0] - 1)
        m = margin
        img = _crop(d.image, zs, y0 - m, x0 - m, p + 2 * m, 0.0, reflect=True)
        lab = _crop(d.labels, [z], y0 - m, x0 - m, p + 2 * m, NOT_ANNOTATED, reflect=False)[0]
        return img, lab

    def batch(self, size: int, margin: int = 0):
        """`size` patches (images (size, context, s, s), labels (size, s, s)), s = patch + 2 margin."""
        s = self.patch + 2 * margin
        if size == 0:
            return np.zeros((0, 2 * self.context + 1, s, s), np.float32), np.zeros((0, s, s), np.uint8)
        imgs, labs = zip(*(self._one(margin) for _ in range(size)))
        return np.stack(imgs), np.stack(labs)


def _crop(vol, zs, y0, x0, size, fill, reflect):
    """A (len(zs), size, size) crop at (y0, x0) that may hang over the edges (reflected or filled).

    Costs O(crop) whatever the slice size: only the bounding box of the needed pixels is gathered."""
    ny, nx = vol.shape[1:]
    zs = np.asarray(zs)
    if 0 <= y0 and y0 + size <= ny and 0 <= x0 and x0 + size <= nx:  # inside: one gather of the crop
        return vol[zs, y0 : y0 + size, x0 : x0 + size]
    if reflect:
        ys, xs = _reflect_index(np.arange(y0, y0 + size), ny), _reflect_index(np.arange(x0, x0 + size), nx)
        box = vol[:, ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        return np.take(np.take(box[zs], ys - ys.min(), axis=1), xs - xs.min(), axis=2)
    out = np.full((len(zs), size, size), fill, dtype=vol.dtype)
    top, bottom, left, right = max(0, -y0), min(size, ny - y0), max(0, -x0), min(size, nx - x0)
    if top < bottom and left < right:
        out[:, top:bottom, left:right] = vol[zs, y0 + top : y0 + bottom, x0 + left : x0 + right]
    return out


def _reflect_index(idx, n):
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.abs(idx) % period
    return np.where(idx >= n, period - idx, idx)


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
    img = F.grid_sample(torch.from_numpy(np.ascontiguousarray(images)), grid, mode="bilinear",
                        padding_mode="reflection", align_corners=False)
    lab = F.grid_sample(torch.from_numpy(labels[:, None].astype(np.float32)), grid, mode="nearest",
                        padding_mode="zeros", align_corners=False)
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
    if len(noisy):  # torch draws normal numbers twice as fast as NumPy (this was 2/3 of augmenting a batch)
        strength = rng.uniform(0.1, 0.5, len(noisy)).astype(np.float32)[:, None, None, None]
        generator = torch.Generator().manual_seed(int(rng.integers(2**63)))
        out_i[noisy] += torch.randn((len(noisy),) + out_i.shape[1:], generator=generator).numpy() * strength
    return out_i, out_l


def make_training_batch(sampler: PatchSampler, config: TrainConfig, rng):
    """One training batch as CPU tensors: images (B, C, H, W) float32 and labels (B, H, W) int64, sampled,
    warped (when the sampler leaves room for it) and augmented."""
    n = config.batch_size
    # Only the patches to be warped are cropped with the margin warp_patches needs (2.8x the pixels at the
    # default patch and scale; cropping all of them so took 40% of making a batch).
    n_warped = int(rng.binomial(n, config.warp_fraction)) if sampler.margin else 0
    imgs, labs = sampler.batch(n - n_warped)
    if n_warped:
        warped = warp_patches(*sampler.batch(n_warped, sampler.margin), config.patch, rng, config.warp_scale)
        imgs, labs = np.concatenate([imgs, warped[0]]), np.concatenate([labs, warped[1]])
    imgs, labs = augment(imgs, labs, rng, config.z_flip_fraction)
    return torch.from_numpy(np.ascontiguousarray(imgs)), torch.from_numpy(labs.astype(np.int64))


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
    the probabilities with a one-hot copy of the labels (the loss was ~12% of a CPU training step)."""
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
        0, target.reshape(-1), prob.gather(1, target.unsqueeze(1)).reshape(-1))[1:]
    present = true > 0
    dice = (2 * overlap + 1.0) / (predicted + true + 1.0)
    soft_dice = dice[present].mean() if present.any() else torch.ones((), device=logits.device)
    return ce + dice_weight * (1 - soft_dice)


def tomoseg_loss(model, x, y, weights=None):
    """EMAN2 tomoseg's loss, per feature network: log of the mean squared error between the label
    (binary mask, mean-shrunk by 2 to the output's half resolution) and min(output, 1), summed over
    features. Unannotated pixels are left out."""
    out = model.half_resolution(x).float()
    annotated = F.avg_pool2d((y != NOT_ANNOTATED).float()[:, None], 2)[:, 0] > 0.99
    total = 0.0
    for k in range(out.shape[1]):
        target = F.avg_pool2d((y == k + 1).float()[:, None], 2)[:, 0]
        err = (target - torch.clamp(out[:, k], max=1.0)) ** 2
        total = total + torch.log(err[annotated].mean() + 1e-8)
    return total


def _validation_plan(data, n_slices, rng):
    """A fixed set of (tomogram index, slice index) to score every epoch."""
    plan = []
    for i, d in enumerate(data):
        annotated = np.flatnonzero((d.labels != NOT_ANNOTATED).any(axis=(1, 2)))
        pick = annotated[np.linspace(0, len(annotated) - 1, min(n_slices, len(annotated))).round().astype(int)]
        plan += [(i, int(z)) for z in np.unique(pick)]
    return plan


def evaluate_slices(model, info, data, plan, loss_weights, device="cpu") -> dict:
    """Validation loss and per-class scores of `model` on the planned slices (in fp32, so that epochs
    compare on the same footing whatever precision trains)."""
    predictor = Predictor(model, info, device=device, precision="fp32", fuse=False, channels_last=False)
    loss_weights = loss_weights.cpu()
    n = info.n_outputs
    cm = np.zeros((n, n), dtype=np.int64)
    losses = []
    for i, z in plan:
        d = data[i]
        zs = np.clip(np.arange(z - predictor.context, z + predictor.context + 1), 0, d.image.shape[0] - 1)
        logits = predictor.logits(d.image[zs][None]).cpu()
        target = torch.from_numpy(d.labels[z].astype(np.int64))[None]
        losses.append(float(F.cross_entropy(logits, target, weight=loss_weights, ignore_index=NOT_ANNOTATED)))
        cm += confusion_matrix(d.labels[z][None], logits.argmax(1).numpy(), n)
    scores = scores_from_confusion(cm, info.class_names)
    return dict(loss=float(np.nanmean(losses)), scores=scores)


class BatchMaker:
    """Makes training batches ahead in a background thread, so the network's step does not wait while the
    CPU crops, warps and augments patches (on an H200 making a batch took 45% of a training step).

    One producer calls `make` in order, so the batches are those an inline loop would make with the same
    random generator (which nothing else may use meanwhile). `depth` 0 makes each batch on demand.
    """

    def __init__(self, make, depth: int):
        self._make, self._depth = make, depth
        self._queue = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread = None
        if depth:
            self._thread = threading.Thread(target=self._produce, name="annotomo-batches", daemon=True)
            self._thread.start()

    def _produce(self):
        try:
            while not self._stop.is_set():
                self._put(self._make())
        except BaseException as exc:  # noqa: BLE001 - handed to the training loop, which raises it
            self._put(exc)

    def _put(self, item):
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def next(self):
        if not self._depth:
            return self._make()
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Interrupt:
    """Turns SIGINT/SIGTERM into a flag, so training stops at a safe point and keeps its checkpoint."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def checkpoint_path(model_path) -> Path:
    """Where the resumable training state of `model_path` lives."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".checkpoint")


def train(tomograms, labels, class_names, out, config: TrainConfig | None = None, validation=(),
          progress=True, resume=False, log=print) -> TrainResult:
    """Train a model on (tomogram, labels) pairs and write the best one to `out`.

    tomograms/labels: paths (MRC) or arrays; validation: sequence of (tomogram, labels) pairs.
    Writes `out` (the model), `out`.log.json (history), `out`.training.png (curves) and, while
    training, `out`.checkpoint (resumable state, removed at the end).
    """
    config = config or TrainConfig()
    out = Path(out)
    class_names = list(class_names)
    _check_class_names(class_names)
    device = choose_device(config.device)
    precision = choose_precision(device, config.precision)
    prefetch = config.prefetch_batches if config.prefetch_batches is not None else 2 * (device.type == "cuda")
    if int(prefetch) != prefetch or prefetch < 0:
        raise ValueError(f"prefetch_batches must be a whole number >= 0, got {config.prefetch_batches}")
    # the log and model say what ran
    config = replace(config, device=str(device), precision=precision, prefetch_batches=int(prefetch))
    if len(tomograms) != len(labels) or not tomograms:
        raise AnnotomoError("give one --labels file per --tomogram (and at least one pair)")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    torch.set_num_threads(config.threads or torch.get_num_threads())
    n_outputs = len(class_names) + 1
    tomoseg = config.arch == "tomoseg-cnn"
    data = [load_annotated(t, l, len(class_names), config.invert_contrast, tomoseg=tomoseg)
            for t, l in zip(tomograms, labels)]
    val_data = [load_annotated(t, l, len(class_names), config.invert_contrast, tomoseg=tomoseg) for t, l in validation]
    _check_classes_present(data, class_names)
    pixel_sizes = {d.pixel_size for d in data if d.pixel_size}
    if len(pixel_sizes) > 1:
        warnings.warn(f"training tomograms have different pixel sizes {sorted(pixel_sizes)} A", stacklevel=2)

    model, arch_params = build_model(config.arch, config.context_slices, n_outputs, **config.arch_params)
    model = model.to(device, memory_format=torch.channels_last)  # ~17% faster training steps on CPUs
    info = ModelInfo(arch=config.arch, arch_params=arch_params, class_names=class_names,
                     context_slices=config.context_slices, pixel_size=min(pixel_sizes) if pixel_sizes else None,
                     invert_contrast=config.invert_contrast, preprocessing="tomoseg" if tomoseg else "robust")
    if tomoseg:
        loss_fn = tomoseg_loss
    elif config.dice_loss_weight:
        loss_fn = lambda m, x, y, w: cross_entropy_and_dice(m, x, y, w, config.dice_loss_weight)  # noqa: E731
    else:
        loss_fn = weighted_cross_entropy
    weights = class_weights(data, n_outputs, config.class_weight_power, config.max_class_weight).to(device)
    # fused: one kernel for all parameters (the per-tensor loop took ~4% of a CPU training step)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay,
                                  fused=True)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")  # fp16 gradients underflow
    sampler = PatchSampler.for_config(data, n_outputs, config, rng)
    plan_data = val_data or data
    plan = _validation_plan(plan_data, config.validation_slices, np.random.default_rng(config.seed + 1))

    state = dict(iteration=0, elapsed=0.0, history=[], best=None)
    ckpt = checkpoint_path(out)
    if resume:
        state = _load_checkpoint(ckpt, model, optimizer, info)
        log(f"resuming from {ckpt} at iteration {state['iteration']} ({state['elapsed']:.0f} s trained)")
    budget_iters = config.iterations
    budget_seconds = None if budget_iters else (config.minutes or 5.0) * 60
    start = time.perf_counter() - state["elapsed"]
    warmup = 30

    def fraction_done():
        if budget_iters:
            return state["iteration"] / budget_iters
        return (time.perf_counter() - start) / budget_seconds

    bar = tqdm(total=budget_iters or int(budget_seconds), unit="it" if budget_iters else "s", desc="training",
               disable=not progress, leave=False, initial=state["iteration"] if budget_iters else int(state["elapsed"]))
    interrupted = False
    with _Interrupt() as interrupt, BatchMaker(partial(make_training_batch, sampler, config, rng),
                                                   config.prefetch_batches) as batches:
        while fraction_done() < 1.0 and not interrupt.requested:
            model.train()
            losses = []
            for _ in range(config.epoch_iterations):
                if fraction_done() >= 1.0 or interrupt.requested:
                    break
                lr_scale = min(1.0, (state["iteration"] + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(fraction_done(), 1.0)))
                for g in optimizer.param_groups:
                    g["lr"] = config.learning_rate * max(lr_scale, 0.01)
                x, y = batches.next()
                x = x.to(device).contiguous(memory_format=torch.channels_last)
                y = y.to(device)
                with mixed_precision(device, precision):
                    loss = loss_fn(model, x, y, weights)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                losses.append(loss.item())
                state["iteration"] += 1
                before = bar.n
                bar.update(1 if budget_iters else int(time.perf_counter() - start) - before)
            if not losses:
                break
            model.eval()
            ev = evaluate_slices(model, info, plan_data, plan, weights, device)
            entry = dict(epoch=len(state["history"]) + 1, iteration=state["iteration"],
                         seconds=round(time.perf_counter() - start, 1), train_loss=float(np.mean(losses)),
                         val_loss=ev["loss"], mean_dice=ev["scores"]["mean_dice"],
                         **{f"dice_{k}": v["dice"] for k, v in ev["scores"]["classes"].items()})
            state["history"].append(entry)
            bar.set_postfix(loss=f"{entry['train_loss']:.3f}", dice=f"{entry['mean_dice']:.3f}")
            if state["best"] is None or _better(entry, state["best"]):
                state["best"] = entry
                _save_final(out, model, info, config, data, val_data, state)
            state["elapsed"] = time.perf_counter() - start
            _save_checkpoint(ckpt, model, optimizer, info, state)
        interrupted = interrupt.requested
    bar.close()
    seconds = time.perf_counter() - start
    if state["best"] is None:
        raise AnnotomoError("training stopped before the first epoch finished; no model was written")
    _write_log(out, state["history"], config, "validation tomograms" if val_data else "training slices")
    if interrupted:
        print(f"annotomo: interrupted: best model so far in {out}; continue with --resume (state in {ckpt})",
              file=sys.stderr)
    else:
        ckpt.unlink(missing_ok=True)
    return TrainResult(out, state["history"], state["best"], state["iteration"], seconds, interrupted)


def _better(entry, best):
    a, b = entry["mean_dice"], best["mean_dice"]
    if math.isnan(b):
        return True
    if math.isnan(a):
        return False
    return a > b or (a == b and entry["val_loss"] < best["val_loss"])


def _check_class_names(class_names):
    if not class_names or any(not n or not n.strip() for n in class_names):
        raise AnnotomoError("--classes needs one or more non-empty names, e.g. --classes membrane,ribosome")
    if len(set(class_names)) != len(class_names):
        raise AnnotomoError(f"--classes has repeated names: {','.join(class_names)}")
    if len(class_names) > MAX_CLASSES:
        raise AnnotomoError(f"at most {MAX_CLASSES} classes are supported")
    bad = [n for n in class_names if not all(c.isalnum() or c in "_-" for c in n)]
    if bad:
        raise AnnotomoError(f"class names may use letters, digits, '_' and '-' only (used in file names): {bad}")


def _check_classes_present(data, class_names):
    counts = np.zeros(len(class_names) + 1, dtype=np.int64)
    for d in data:
        counts += np.bincount(d.labels.ravel(), minlength=256)[: len(class_names) + 1]
    for k, name in enumerate(class_names, start=1):
        if counts[k] == 0:
            warnings.warn(f"class {k} ({name}) has no annotated voxel in the training labels; "
                          "the model cannot learn it", stacklevel=2)


def _provenance(config, data, val_data, state):
    return dict(
        annotomo_version=__version__, torch_version=torch.__version__,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        training_tomograms=[dict(name=d.name, shape=list(d.image.shape), pixel_size=d.pixel_size) for d in data],
        validation_tomograms=[d.name for d in val_data],
        iterations=state["iteration"], best_epoch=state["best"]["epoch"] if state["best"] else None,
        best_mean_dice=state["best"]["mean_dice"] if state["best"] else None,
        dice_on="validation" if val_data else "training slices",
        config={k: v for k, v in asdict(config).items() if k != "threads"},
    )


def _save_final(out, model, info, config, data, val_data, state):
    info.provenance = _provenance(config, data, val_data, state)
    save_model(out, model, info)


def _write_log(out, history, config, dice_on):
    from .preview import save_training_curves

    with atomic_path(out.with_name(out.name + ".log.json")) as tmp:
        tmp.write_text(json.dumps(dict(history=history, config=asdict(config)), indent=1))
    if history:
        with atomic_path(out.with_name(out.name + ".training.png")) as tmp:
            save_training_curves(tmp, history, fmt="png", dice_on=dice_on)


def _save_checkpoint(path, model, optimizer, info, state):
    """Model + optimiser state in a data-only file (safetensors), with the loop state as JSON."""
    extra = {}
    opt = optimizer.state_dict()
    for pid, s in opt["state"].items():
        for key, value in s.items():
            if torch.is_tensor(value):
                extra[f"_opt.{pid}.{key}"] = value if value.dim() else value.reshape(1)
    info_copy = ModelInfo(**{**info.__dict__, "provenance": dict(training_state=dict(
        iteration=state["iteration"], elapsed=state["elapsed"], history=state["history"], best=state["best"]))})
    save_model(path, model, info_copy, extra_tensors=extra)


def _load_checkpoint(path, model, optimizer, info):
    from safetensors.torch import load_file

    if not path.exists():
        raise InputError(path, "no checkpoint to resume from (train without --resume first)")
    saved_model, saved_info = load_model(path)
    if saved_info.class_names != info.class_names or saved_info.arch != info.arch:
        raise InputError(path, f"checkpoint is for classes {saved_info.class_names} ({saved_info.arch}), "
                               f"not {info.class_names} ({info.arch})")
    model.load_state_dict(saved_model.state_dict())
    tensors = load_file(str(path))
    opt = optimizer.state_dict()
    for pid in range(len(opt["param_groups"][0]["params"])):
        keys = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"_opt.{pid}.")}
        if keys:
            opt["state"][pid] = {k: (v.reshape(()) if k == "step" else v) for k, v in keys.items()}
    optimizer.load_state_dict(opt)
    # The moments come back in the file's (contiguous) layout, but the fused AdamW kernel on CUDA needs them
    # in the layout of their parameters (channels-last for the convolutions): resuming on a GPU failed with
    # "params, grads, exp_avgs, and exp_avg_sqs must have same dtype, device, and layout".
    for param, param_state in optimizer.state.items():
        for key, value in param_state.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                param_state[key] = torch.empty_like(param).copy_(value)
    st = saved_info.provenance["training_state"]
    return dict(iteration=st["iteration"], elapsed=st["elapsed"], history=st["history"], best=st["best"])

