"""The training loop: one network for all features, trained on annotated tomograms.

Patches are drawn from annotated slices (`data`), augmented (`augment`), and the loss (`losses`)
minimised with AdamW and a cosine learning-rate schedule over the time (or iteration) budget. After each
epoch the model is scored on validation tomograms (or, without them, on a fixed sample of training
slices); the best is kept (`checkpoint`), and a resumable state is saved.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..conventions import MAX_CLASSES, NOT_ANNOTATED
from ..device import choose_device, choose_precision, mixed_precision
from ..errors import AnnotomoError
from ..modelfile import ModelInfo, builtin_models_for, read_model_info
from ..models import build_model
from ..resample import needs_resampling
from ..spectrum import QUIET_FINE_SCALES, fine_to_middle_power, volume_power
from ..volumes import Volume, read_pixel_size
from . import distributed
from .augment import make_training_batch
from .batches import BatchMaker
from .checkpoint import (
    check_training_outputs,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
    save_final,
    write_log,
)
from .config import (
    AUTO_NOISE_FRACTION,
    FINE_TUNING_ITERATIONS,
    FINE_TUNING_LEARNING_RATE,
    FINE_TUNING_VOXELS,
    NEW_NETWORK_LEARNING_RATE,
    TrainConfig,
)
from .data import PatchSampler, load_annotated
from .finetune import start_from
from .losses import class_weights, cross_entropy_and_dice, tomoseg_loss, weighted_cross_entropy
from .signals import StopSignals
from .validation import evaluate_slices, validation_plan

AUTO = "auto"  # train(init=AUTO): start from a fitting built-in model (choose_start), else a new network
AUTO_PIXEL_RATIO = 1.5  # the furthest training pixel size from the built-in model's that AUTO accepts


@dataclass
class TrainResult:
    """What `train` did: the model written, its history, the best epoch, and whether it was stopped."""

    model_path: Path
    history: list
    best: dict
    iterations: int
    seconds: float
    interrupted: bool = False


def train(
    tomograms,
    labels,
    class_names,
    out,
    config: TrainConfig | None = None,
    validation=(),
    progress=True,
    resume=False,
    log=print,
    overwrite=False,
    init=AUTO,
    stop=None,
    on_epoch=None,
    preview=None,
    preview_seconds=5.0,
) -> TrainResult:
    """Train one network for all features on (tomogram, labels) pairs; write the best model to `out`.

    Args:
        tomograms: file paths (any format annotomo reads) or (z, y, x) arrays.
        labels: one label volume per tomogram (0 background, k = class_names[k - 1], 255 = not annotated).
        class_names: the feature names, label 1 first (letters, digits, '_' and '-').
        out: the model file to write; beside it `out`.log.json (history), `out`.training.png (curves)
            and, while training, `out`.checkpoint (resumable state, removed at the end).
        config: the training settings (default TrainConfig()).
        validation: (tomogram, labels) pairs scored after each epoch; without them, a fixed sample of
            training slices is scored. The best epoch by mean Dice is kept.
        progress: show a progress bar (tqdm), or a callable taking (fraction done, seconds so far).
        resume: continue from `out`.checkpoint.
        log: where messages go.
        overwrite: replace an existing `out`.
        init: a model file or built-in model name to start from (fine-tuning): its architecture, context
            slices, normalisation and pixel size are kept; training pairs at another pixel size are
            resampled to it. "auto" (default): the built-in model for `class_names` (`choose_start`), when
            the settings and pixel sizes suit it, else a new network. None: a new network.
        stop: an object with `is_set()` (e.g. threading.Event) or a callable; when true, training stops
            at the end of the current iteration and keeps the best model so far (like Ctrl-C).
        on_epoch: called with each epoch's history entry (losses, Dice per feature).
        preview: called with a Predictor over the current weights (fp32, unfused: it follows training),
            from the training thread: a live view of what the model has learnt so far (the napari
            panel segments the slice in view). Its time counts as training time, and it is spaced so
            that it takes at most a tenth of it.
        preview_seconds: the least time between two previews.

    Returns:
        TrainResult: the model path, the history, the best epoch, iterations, seconds, whether stopped.

    Raises:
        AnnotomoError: unusable class names, outputs, inputs (InputError names the file), or no epoch
            finished before a stop.
    """
    config = config or TrainConfig()
    out = Path(out)
    class_names = list(class_names)
    _check_class_names(class_names)
    if len(tomograms) != len(labels) or not tomograms:
        raise AnnotomoError("give one --labels file per --tomogram (and at least one pair)")
    inputs = [p for p in (*tomograms, *labels, *(v for pair in validation for v in pair)) if isinstance(p, str | Path)]
    check_training_outputs(out, inputs, overwrite=overwrite, resume=resume)
    device = choose_device(config.device)
    ctx = distributed.context(device)  # None unless this process is one of several (DDP)
    if ctx is not None:
        device = ctx.device
    main = ctx is None or ctx.is_main
    precision = choose_precision(device, config.precision)
    prefetch = config.prefetch_batches if config.prefetch_batches is not None else 2 * (device.type == "cuda")
    if int(prefetch) != prefetch or prefetch < 0:
        raise ValueError(f"prefetch_batches must be a whole number >= 0, got {config.prefetch_batches}")
    # the log and model say what ran
    config = replace(config, device=str(device), precision=precision, prefetch_batches=int(prefetch))
    torch.manual_seed(config.seed)
    model, config, parent, parent_record = _starting_point(
        init, tomograms, class_names, config, log if main else (lambda *a: None)
    )
    rng = np.random.default_rng(config.seed if ctx is None else [config.seed, ctx.rank])  # each process its patches
    torch.set_num_threads(config.threads or torch.get_num_threads())
    n_outputs = len(class_names) + 1
    tomoseg = config.arch == "tomoseg-cnn"
    target = parent.pixel_size if parent else config.pixel_size
    data = [
        load_annotated(t, lab, len(class_names), config.invert_contrast, tomoseg=tomoseg, target_pixel_size=target)
        for t, lab in zip(tomograms, labels, strict=True)
    ]
    val_data = [
        load_annotated(t, lab, len(class_names), config.invert_contrast, tomoseg=tomoseg, target_pixel_size=target)
        for t, lab in validation
    ]
    _check_classes_present(data, class_names)
    config = _resolve_max_iterations(config, parent, class_names, data, log if main else (lambda *a: None))
    pixel_sizes = {d.pixel_size for d in data if d.pixel_size}
    if len(pixel_sizes) > 1:
        warnings.warn(f"training tomograms have different pixel sizes {sorted(pixel_sizes)} A", stacklevel=2)

    if parent is None:
        model, info = _new_model(config, class_names, pixel_sizes)
    else:
        info = ModelInfo(
            arch=config.arch,
            arch_params=parent.arch_params,
            class_names=class_names,
            context_slices=config.context_slices,
            pixel_size=parent.pixel_size,
            invert_contrast=config.invert_contrast,
            preprocessing=parent.preprocessing,
        )
    info.training_spectra = _training_spectra(data) if info.preprocessing == "robust" else None
    config = _resolve_noise_fraction(config, info.training_spectra, log if main else (lambda *a: None))
    model = model.to(device, memory_format=torch.channels_last)  # faster convolutions on CPUs
    loss_fn = _loss_function(config)
    weights = class_weights(data, n_outputs, config.class_weight_power, config.max_class_weight).to(device)
    # fused: one kernel for all parameters instead of a loop over them
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, fused=True
    )
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")  # fp16 gradients underflow
    sampler = PatchSampler.for_config(data, n_outputs, config, rng)
    plan_data = val_data or data
    plan = validation_plan(plan_data, config.validation_slices, np.random.default_rng(config.seed + 1))

    state = dict(iteration=0, elapsed=0.0, history=[], best=None)
    ckpt = checkpoint_path(out)
    if resume:
        state = load_checkpoint(ckpt, model, optimizer, info)
        if main:
            log(f"resuming from {ckpt} at iteration {state['iteration']} ({state['elapsed']:.0f} s trained)")
    trained = model if ctx is None else ctx.wrap(model)  # DDP averages the processes' gradients
    budget_iters = config.iterations
    budget_seconds = None if budget_iters else (config.minutes or 5.0) * 60
    start = time.perf_counter() - state["elapsed"]
    warmup = 30
    report = progress if callable(progress) else None
    stop_requested = _stop_check(stop)
    show_preview = _Previewer(preview, preview_seconds, model, info, device) if preview and main else None

    def fraction_done():
        if budget_iters:
            return state["iteration"] / budget_iters
        by_time = (time.perf_counter() - start) / budget_seconds
        return max(by_time, state["iteration"] / config.max_iterations) if config.max_iterations else by_time

    def where_are_we(stopping):
        """(fraction done, whether to stop): process 0's clock and anyone's stop, when there are several."""
        fraction = fraction_done()
        stop_now = fraction >= 1.0 or stopping()
        return (fraction, stop_now) if ctx is None else ctx.sync(fraction, stop_now)

    bar = tqdm(
        total=budget_iters or int(budget_seconds),
        unit="it" if budget_iters else "s",
        desc="training",
        disable=report is not None or not progress or not main,
        leave=False,
        initial=state["iteration"] if budget_iters else int(state["elapsed"]),
    )
    with (
        StopSignals() as signals,
        BatchMaker(partial(make_training_batch, sampler, config, rng), config.prefetch_batches) as batches,
    ):

        def stopping():
            return signals.requested or stop_requested()

        while not where_are_we(stopping)[1]:
            model.train()
            losses = []
            for _ in range(config.epoch_iterations):
                fraction, stop_now = where_are_we(stopping)
                if stop_now:
                    break
                lr_scale = (
                    min(1.0, (state["iteration"] + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(fraction, 1.0)))
                )
                for g in optimizer.param_groups:
                    g["lr"] = config.learning_rate * max(lr_scale, 0.01)
                x, y = batches.next()
                x = x.to(device).contiguous(memory_format=torch.channels_last)
                y = y.to(device)
                with mixed_precision(device, precision):
                    loss = loss_fn(trained, x, y, weights)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                losses.append(loss.item())
                state["iteration"] += 1
                before = bar.n
                bar.update(1 if budget_iters else int(time.perf_counter() - start) - before)
                if report is not None:
                    report(min(fraction_done(), 1.0), time.perf_counter() - start)
                if show_preview is not None:
                    show_preview.maybe()
            if not losses:
                break
            if not main:  # process 0 validates and writes; the others wait for it
                ctx.barrier()
                continue
            model.eval()
            ev = evaluate_slices(model, info, plan_data, plan, weights, device)
            entry = dict(
                epoch=len(state["history"]) + 1,
                iteration=state["iteration"],
                seconds=round(time.perf_counter() - start, 1),
                train_loss=float(np.mean(losses)),
                val_loss=ev["loss"],
                mean_dice=ev["scores"]["mean_dice"],
                **{f"dice_{k}": v["dice"] for k, v in ev["scores"]["classes"].items()},
            )
            state["history"].append(entry)
            bar.set_postfix(loss=f"{entry['train_loss']:.3f}", dice=f"{entry['mean_dice']:.3f}")
            if state["best"] is None or _better(entry, state["best"]):
                state["best"] = entry
                save_final(out, model, info, config, data, val_data, state, parent_record)
            state["elapsed"] = time.perf_counter() - start
            save_checkpoint(ckpt, model, optimizer, info, state)
            if on_epoch is not None:
                on_epoch(entry)
            if ctx is not None:
                ctx.barrier()
        signalled = signals.requested
        interrupted = stopping() if ctx is None else ctx.sync(0.0, stopping())[1]
    if not interrupted and bar.n < bar.total:  # the iteration limit ended a minutes budget early: done
        bar.update(bar.total - bar.n)
    bar.close()
    seconds = time.perf_counter() - start
    if main:
        _wrap_up(out, state, config, bool(val_data), signalled, interrupted, log)
    return TrainResult(out, state["history"] if main else [], state["best"], state["iteration"], seconds, interrupted)


class _Previewer:
    """Calls `preview` with a Predictor over the current weights, at most every `seconds`, and spaced so
    that previews take at most `share` of the training time.
    """

    def __init__(self, preview, seconds, model, info, device, share=0.1):
        self.preview, self.seconds, self.share = preview, float(seconds), share
        self.model, self.info, self.device = model, info, device
        self.due = time.perf_counter() + self.seconds
        self.spent = 0.0  # seconds spent in previews

    def maybe(self):
        """Preview now if it is due."""
        now = time.perf_counter()
        if now < self.due:
            return
        from ..predict import Predictor

        self.model.eval()
        try:
            with torch.no_grad():
                self.preview(
                    Predictor(
                        self.model, self.info, device=self.device, precision="fp32", fuse=False, channels_last=False
                    )
                )
        finally:
            self.model.train()
        took = time.perf_counter() - now
        self.spent += took
        self.due = now + took + max(self.seconds, took * (1 - self.share) / self.share)


def _starting_point(init, tomograms, class_names, config, log):
    """(network, config, parent info, parent record) where training starts; all but config None for a new
    network, which `_new_model` makes once the data's pixel size is known. The config gets the learning
    rate for the case when it leaves it unset: the fine-tuning rate where the parent knows every feature,
    else the new-network rate (a feature new to the parent learns too slowly at the fine-tuning rate:
    benchmarks/RESULTS.md#beyond).
    """
    model = parent = record = None
    if init == AUTO:
        init = choose_start(tomograms, class_names, config, log)
    if init is not None:
        model, config, parent, record = start_from(init, class_names, config, log)
    if config.learning_rate is None:  # the log and model record the rate used
        rate = FINE_TUNING_LEARNING_RATE if _knows_every_feature(parent, class_names) else NEW_NETWORK_LEARNING_RATE
        config = replace(config, learning_rate=rate)
    return model, config, parent, record


def _knows_every_feature(parent, class_names) -> bool:
    """Whether training fine-tunes a model (`parent`, or None for a new network) that knows every feature."""
    return parent is not None and set(class_names) <= set(parent.class_names)


def _resolve_max_iterations(config, parent, class_names, data, log):
    """`config` with max_iterations settled: as given (0: none), else for fine-tuning a model that knows
    every feature FINE_TUNING_ITERATIONS per FINE_TUNING_VOXELS annotated voxels (at least that), else 0.
    """
    if config.max_iterations is not None or config.iterations:
        return config
    if not _knows_every_feature(parent, class_names):
        return replace(config, max_iterations=0)
    annotated = sum(int(np.count_nonzero(d.labels != NOT_ANNOTATED)) for d in data)
    limit = int(FINE_TUNING_ITERATIONS * max(1.0, annotated / FINE_TUNING_VOXELS))
    log(
        f"fine-tuning stops after {limit} iterations if the {config.minutes or 5.0:g} minutes last longer: on this "
        "much annotation, longer costs the model's breadth on other data (--max-iterations 0: the full minutes)"
    )
    return replace(config, max_iterations=limit)


def _resolve_noise_fraction(config, spectra, log):
    """`config` with noise_fraction settled: as given, else AUTO_NOISE_FRACTION when every training
    tomogram holds little noise at fine scales (denoised), else 0.
    """
    if config.noise_fraction is not None:
        return config
    quiet = bool(spectra) and all(fine_to_middle_power(p) < QUIET_FINE_SCALES for p in spectra)
    if quiet:
        log(
            f"the training tomograms hold little noise at fine scales (denoised?): extra noise on "
            f"{AUTO_NOISE_FRACTION:.0%} of patches, so that the model also segments raw tomograms "
            "(--noise-fraction 0 to turn it off)"
        )
    return replace(config, noise_fraction=AUTO_NOISE_FRACTION if quiet else 0.0)


def _training_spectra(data) -> list[list[float]]:
    """Each training tomogram's power spectrum: the range segmenting brings new tomograms' spectra into."""
    return [[float(v) for v in volume_power(d.image)] for d in data]


def _new_model(config, class_names, pixel_sizes):
    """A freshly initialised network and its model file metadata."""
    tomoseg = config.arch == "tomoseg-cnn"
    model, arch_params = build_model(config.arch, config.context_slices, len(class_names) + 1, **config.arch_params)
    info = ModelInfo(
        arch=config.arch,
        arch_params=arch_params,
        class_names=class_names,
        context_slices=config.context_slices,
        pixel_size=config.pixel_size or (min(pixel_sizes) if pixel_sizes else None),
        invert_contrast=config.invert_contrast,
        preprocessing="tomoseg" if tomoseg else "robust",
    )
    return model, info


def _loss_function(config):
    """The loss of `config`: tomoseg's for its CNN, else weighted cross-entropy (plus soft Dice)."""
    if config.arch == "tomoseg-cnn":
        return tomoseg_loss
    if config.dice_loss_weight:
        return partial(cross_entropy_and_dice, dice_weight=config.dice_loss_weight)
    return weighted_cross_entropy


def _wrap_up(out, state, config, validated, signalled, interrupted, log):
    """After the loop: the log and curves, and the checkpoint kept (stopped) or removed (finished)."""
    ckpt = checkpoint_path(out)
    if state["best"] is None:
        raise AnnotomoError("training stopped before the first epoch finished; no model was written")
    write_log(out, state["history"], config, "validation tomograms" if validated else "training slices")
    if signalled:
        print(
            f"annotomo: interrupted: best model so far in {out}; continue with --resume (state in {ckpt})",
            file=sys.stderr,
        )
    elif interrupted:
        log(f"stopped: best model so far in {out} (state for resuming in {ckpt})")
    else:
        ckpt.unlink(missing_ok=True)


def _stop_check(stop):
    """A function telling whether `stop` (None, an Event-like with is_set(), or a callable) asks to stop."""
    if stop is None:
        return lambda: False
    if hasattr(stop, "is_set"):
        return stop.is_set
    return stop


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


def choose_start(tomograms, class_names, config: TrainConfig, log=print) -> str | None:
    """What `init="auto"` starts from: a built-in model for these features (`builtin_models_for`), or None.

    A model that knows exactly these features comes first; one that knows them among others is
    fine-tuned with its other features as background (its outputs for them are dropped); one whose
    features are all named, with others it does not know, is fine-tuned with new outputs for those; one
    that shares some of them, both. A model that shares none is not used.

    Fine-tuning it carries over to other imaging conditions far better than a new network trained as long
    (benchmarks/RESULTS.md#generalise, #subsets, #beyond), so it is the default wherever the result can be the same
    kind of model: the same architecture, context slices and contrast as the built-in model, and every
    training tomogram's pixel size known and within a factor of AUTO_PIXEL_RATIO of its own (fine-tuning
    resamples the pairs to the model's pixel size; further off, a model at the data's own pixel size keeps
    detail). Each refusal says why.
    """
    for name in builtin_models_for(class_names):
        info = read_model_info(name)
        new = [n for n in class_names if n not in info.class_names]
        shared = [n for n in class_names if n in info.class_names]
        knows = f"{', '.join(shared)} of these features" if new else "these features"
        why = _unsuitable_start(name, info, tomograms, config)
        if why is None:
            others = [n for n in info.class_names if n not in class_names]
            log(
                f"starting from the built-in model {name}, which knows {knows}"
                + (f" (its {', '.join(others)} count as background here)" if others else "")
                + (f" (it learns {', '.join(new)} anew)" if new else "")
                + ": it carries over to other imaging conditions far better than a new network "
                "(benchmarks/RESULTS.md#generalise); --from-scratch (init=None) trains a new one"
            )
            return name
        log(f"training a new network: the built-in model {name} knows {knows}, but {why}")
    return None


def _unsuitable_start(name: str, info: ModelInfo, tomograms, config: TrainConfig) -> str | None:
    """Why the built-in model `name` (`info`) is not a fitting start for this training run (None: it is)."""
    arch_params = {**info.arch_params, **config.arch_params}
    if config.arch != info.arch or arch_params != info.arch_params or config.context_slices != info.context_slices:
        return f"it is a {info.arch} with {info.context_slices} context slices and these settings differ"
    if config.invert_contrast != info.invert_contrast:
        return "it was trained on tomograms whose dense matter is dark, and fine-tuning keeps a model's contrast"
    if config.pixel_size and needs_resampling(info.pixel_size, config.pixel_size):
        return f"its pixel size is {info.pixel_size:g} A, not the {config.pixel_size:g} A asked for"
    for tomogram in tomograms:
        size = _pixel_size_of(tomogram)
        if not size:
            return f"the pixel size of {_name_of(tomogram)} is unknown (fine-tuning resamples to the model's)"
        ratio = max(size / info.pixel_size, info.pixel_size / size)
        if ratio > AUTO_PIXEL_RATIO:
            return (
                f"{_name_of(tomogram)} has {size:g} A pixels and it works at {info.pixel_size:g} A "
                f"(--init {name} fine-tunes it anyway, on the pairs resampled to its pixel size)"
            )
    return None


def _pixel_size_of(tomogram) -> float | None:
    """A training tomogram's pixel size in Angstrom (from its header), or None (arrays, unset headers)."""
    if isinstance(tomogram, Volume):
        return tomogram.pixel_size
    if isinstance(tomogram, str | Path):
        return read_pixel_size(tomogram)  # the header only: load_annotated reads the data once, later
    return None


def _name_of(tomogram) -> str:
    if isinstance(tomogram, Volume):
        return str(tomogram.path)
    return str(tomogram) if isinstance(tomogram, str | Path) else "the array"


def _check_classes_present(data, class_names):
    counts = np.zeros(len(class_names) + 1, dtype=np.int64)
    for d in data:
        counts += np.bincount(d.labels.ravel(), minlength=256)[: len(class_names) + 1]
    for k, name in enumerate(class_names, start=1):
        if counts[k] == 0:
            warnings.warn(
                f"class {k} ({name}) has no annotated voxel in the training labels; the model cannot learn it",
                stacklevel=2,
            )
