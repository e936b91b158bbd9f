"""File-level operations behind the CLI, for notebooks and scripts: segment, evaluate, synthesize.

Each function checks its inputs and outputs before any work, writes outputs atomically (temporary
name, renamed when complete) and never modifies its inputs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import AnnotomoError, InputError
from .metrics import format_scores, segmentation_scores
from .normalize import warn_if_inverted
from .postprocess import Picks, write_picks
from .predict import Predictor
from .resample import BackResampler, ResampledVolume, needs_resampling
from .volumes import check_output_path, read_labels, write_volume

OUTPUT_FORMATS = {"mrc": ".mrc", "zarr": ".ome.zarr"}


def output_paths(tomogram, outdir, class_names, probabilities, output_format="mrc", uncertainty=False):
    """The files `segment` writes for `tomogram`: labels, one probability map per feature, uncertainty."""
    if output_format not in OUTPUT_FORMATS:
        raise AnnotomoError(f"unknown output format {output_format!r}; choose one of {', '.join(OUTPUT_FORMATS)}")
    name = Path(str(tomogram).rstrip("/")).name
    if name.lower().endswith(".zarr"):
        stem = name[: -len(".zarr")]
        stem = stem[: -len(".ome")] if stem.lower().endswith(".ome") else stem
    else:
        stem = Path(name.removesuffix(".gz").removesuffix(".bz2")).stem
    ext = OUTPUT_FORMATS[output_format]
    outdir = Path(outdir)
    paths = {"labels": outdir / f"{stem}_labels{ext}"}
    if probabilities:
        for name in class_names:
            paths[name] = outdir / f"{stem}_{name}{ext}"
    if uncertainty:
        paths["uncertainty"] = outdir / f"{stem}_uncertainty{ext}"
    return paths


def segment(
    model,
    tomograms,
    outdir,
    probabilities=False,
    overwrite=False,
    progress=True,
    pixel_size=None,
    log=print,
    output_format="mrc",
    min_size=None,
    label_width=None,
    invert_contrast=False,
    match_spectrum=True,
    workers=None,
    dask=None,
    chunk_slices=None,
    uncertainty=False,
    **predictor_options,
) -> list[dict]:
    """Segment each tomogram with `model`; returns the written paths per input.

    Args:
        model: a model file, a built-in model name, or a Predictor (one machine only).
        tomograms: input paths (any format annotomo reads).
        outdir: the output folder (created). It gets annotomo-manifest.json, which records per tomogram
            what was written, with which model and options, how long it took, and errors.
        probabilities: also write one float32 probability volume (0..1) per feature.
        overwrite: replace outputs that exist and are not recorded as complete in the manifest.
        progress: a progress bar over the whole batch (voxels done, tomograms done, ETA).
        pixel_size: Angstrom, overriding the files' headers.
        log: where messages go.
        output_format: "mrc" (default) or "zarr" (OME-Zarr).
        min_size: voxels; an int for every feature or {name: voxels}: smaller connected components of the
            labels become background.
        label_width: {feature name: nm}: redraw those features' labels this wide (how wide labels are
            drawn is a convention, e.g. a membrane as its 4-5 nm bilayer or 8-10 nm as many annotators
            draw it; the model draws them as wide as its training labels were). Needs the pixel size.
        invert_contrast: the tomograms' dense matter is bright, unlike the model's training data.
        match_spectrum: filter each tomogram's slices so that its power spectrum matches the model's
            training data (noise, resolution, defocus; see `annotomo.spectrum`); False: as it is.
        workers: run on a local Dask cluster of this many worker processes (`annotomo[dask]`).
        dask: the address of an existing Dask scheduler (e.g. "tcp://scheduler:8786"), or a Client.
        chunk_slices: on Dask, split tomograms along z into chunks of about this many slices (default:
            tomograms over 256 Mvoxels in chunks of 256 Mvoxels), each a task of its own.
        uncertainty: also write <stem>_uncertainty (float32, 0..1: how unsure the model is of each voxel,
            `annotomo.uncertainty`), and each slice's mean uncertainty in the manifest (`slice_uncertainty`).
        **predictor_options: for a model file or name, as for Predictor (device, precision, tile, ...).

    Writes OUTDIR/<stem>_labels.mrc (uint8 class index, same shape, voxel size and origin as the input,
    feature names in the header) and with probabilities OUTDIR/<stem>_<feature>.mrc; with
    output_format="zarr", <stem>_labels.ome.zarr etc.; with uncertainty, <stem>_uncertainty.mrc. Outputs
    appear only when complete. A rerun skips tomograms whose outputs are complete (same input, model and
    options) and redoes the others.

    Returns:
        [{output name: path}] per input, in order (also for skipped ones).

    Raises:
        InputError, AnnotomoError: a bad input or output, or a failed tomogram; with several tomograms the
            others are done first and the message lists every failure.

    Example:
        >>> annotomo.segment("cellular-v2", ["tomo.mrc"], "annotated/")  # doctest: +SKIP
        [{'labels': 'annotated/tomo_labels.mrc'}]
    """
    distributed = workers is not None or dask is not None
    if distributed and isinstance(model, Predictor):
        raise AnnotomoError("segmenting on Dask needs a model file (workers load it), not a Predictor")
    predictor = model if isinstance(model, Predictor) else Predictor.from_file(model, **predictor_options)
    tomograms = [Path(t) for t in tomograms]
    plan = _plan_segment(
        model,
        predictor,
        tomograms,
        outdir,
        dict(
            probabilities=bool(probabilities),
            format=output_format,
            min_size=min_size,
            label_width=label_width or None,
            pixel_size=pixel_size,
            invert_contrast=bool(invert_contrast),
            match_spectrum=bool(match_spectrum),
            precision=predictor.precision,
            z_smooth=predictor.z_radius,
            tta=predictor.tta,
            uncertainty=bool(uncertainty),
        ),
        overwrite,
        chunk_slices if distributed else None,
    )
    if plan.skipped:
        log(f"{plan.skipped} tomogram(s) already complete in {plan.manifest.path}: skipped")
    if distributed:
        from .cluster import run_on_dask

        done, failed = run_on_dask(
            model,
            plan.jobs,
            predictor_options,
            workers=workers,
            address=dask,
            progress=progress,
            log=log,
            record=plan.record,
        )
    else:
        from .batch import run_here

        done, failed = run_here(predictor, plan.jobs, progress, log, plan.record)
    plan.results.update(done)
    plan.failures.update(failed)
    if plan.failures:
        raise _batch_error(plan.failures, len(tomograms), plan.manifest.path)
    return [plan.results[t] for t in tomograms]


@dataclasses.dataclass
class _SegmentPlan:
    """What `segment` will do: the jobs to run, the inputs already done or failed, and the manifest."""

    manifest: object
    model_record: dict
    options: dict
    jobs: list = dataclasses.field(default_factory=list)
    results: dict = dataclasses.field(default_factory=dict)  # tomogram -> {output name: path}
    failures: dict = dataclasses.field(default_factory=dict)  # tomogram -> error
    skipped: int = 0

    def record(self, job, outputs=None, error=None, seconds=None, chunks=1):
        """Record how a job went in the manifest (runners call it as each tomogram ends)."""
        from .outputs import ManifestEntry, input_identity

        summary = {}
        if outputs and "uncertainty" in outputs:
            from .uncertainty import slice_means
            from .volumes import open_volume

            with open_volume(outputs["uncertainty"]) as vol:
                summary["slice_uncertainty"] = [round(m, 4) for m in slice_means(vol.data)]
        entry = ManifestEntry(
            status="failed" if error else "done",
            outputs=outputs or {},
            seconds=seconds,
            error=error,
            input=input_identity(job.tomogram),
            model=self.model_record,
            options=self.options,
            chunks=chunks,
            summary=summary,
        )
        self.manifest.record(job.tomogram, entry)


def _plan_segment(model, predictor, tomograms, outdir, options, overwrite, chunk_slices) -> _SegmentPlan:
    """Check every input and output before any long work; a job per tomogram that is not complete yet.

    Inputs that cannot be planned are recorded as failed (the others still run); outputs that exist
    without `overwrite` raise.
    """
    from .batch import plan_job, warn_if_resampled
    from .outputs import Manifest, ManifestEntry, file_digest, input_identity, remove_stale_partials

    info = predictor.info
    model_record = dict(model=str(model), sha256=None)
    if not isinstance(model, Predictor):
        from .modelfile import model_label, resolve_model

        model_record = dict(model=model_label(model), sha256=file_digest(resolve_model(model)))
    min_voxels = _min_voxels_by_index(options["min_size"], info.class_names)
    label_widths = _label_widths_by_index(options["label_width"], info.class_names)
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise InputError(outdir, "output path exists and is not a folder")
    outdir.mkdir(parents=True, exist_ok=True)
    plan = _SegmentPlan(Manifest(outdir), model_record, options)
    probabilities, output_format, uncertain = options["probabilities"], options["format"], options["uncertainty"]
    planned = [
        (t, output_paths(t, outdir, info.class_names, probabilities, output_format, uncertain)) for t in tomograms
    ]
    names = [str(p) for _, paths in planned for p in paths.values()]
    if len(set(names)) != len(names):
        raise AnnotomoError(
            "two inputs would write the same output file (same file name stem); segment them into different folders"
        )
    for t, paths in planned:
        if t.exists() and plan.manifest.complete(t, model_record, options):
            plan.results[t] = {k: str(v) for k, v in paths.items()}
            plan.skipped += 1
            continue
        for p in paths.values():
            check_output_path(p, inputs=tomograms, overwrite=overwrite)
        try:
            plan.jobs.append(
                plan_job(
                    t,
                    paths,
                    info,
                    probabilities,
                    options["invert_contrast"],
                    options["pixel_size"],
                    min_voxels,
                    chunk_slices,
                    options["match_spectrum"],
                    label_widths,
                    uncertain,
                )
            )
        except AnnotomoError as exc:
            plan.failures[t] = exc
            identity = input_identity(t) if t.exists() else {}
            entry = ManifestEntry(status="failed", error=str(exc), model=model_record, options=options, input=identity)
            plan.manifest.record(t, entry)
    for job in plan.jobs:
        for output in job.outputs.values():
            remove_stale_partials(output.path)
        warn_if_resampled(job, stacklevel=4)
    return plan


def _batch_error(failures: dict, total: int, manifest_path) -> AnnotomoError:
    """One error for the failed tomograms: the failure itself for one input, else a one-line summary."""
    if total == 1:
        failure = next(iter(failures.values()))
        return failure if isinstance(failure, AnnotomoError) else AnnotomoError(failure)
    listed = "; ".join(map(str, failures.values()))
    return AnnotomoError(
        f"{len(failures)} of {total} tomograms failed (the others are done; {manifest_path} records each): {listed}"
    )


def _min_voxels_by_index(min_size, class_names) -> dict[int, int]:
    """{class index: minimum voxels} from an int (every feature) or {class name: voxels}."""
    if not min_size:
        return {}
    if isinstance(min_size, dict):
        _check_names("min_size", min_size, class_names)
        return {class_names.index(n) + 1: int(v) for n, v in min_size.items() if v}
    return {k + 1: int(min_size) for k in range(len(class_names))}


def _check_names(option, values: dict, class_names):
    """Raise AnnotomoError when `option` ({class name: value}) names classes the model does not have."""
    unknown = [n for n in values if n not in class_names]
    if unknown:
        raise AnnotomoError(f"{option} names {', '.join(unknown)}, not classes of the model ({', '.join(class_names)})")


def _label_widths_by_index(label_width, class_names) -> dict[int, float]:
    """{name: nm} -> {class index: nm}; raises AnnotomoError for unknown names or widths that are not > 0."""
    if not label_width:
        return {}
    _check_names("label_width", label_width, class_names)
    bad = [n for n, nm in label_width.items() if not (float(nm) > 0 and np.isfinite(float(nm)))]
    if bad:
        raise AnnotomoError(f"label widths must be positive (nm): {', '.join(f'{n}={label_width[n]}' for n in bad)}")
    return {class_names.index(n) + 1: float(nm) for n, nm in label_width.items()}


def segment_array(
    model,
    volume,
    voxel_size=None,
    probabilities=False,
    invert_contrast=False,
    match_spectrum=True,
    progress=False,
    name="array",
    uncertainty=False,
    **predictor_options,
):
    """Segment a (z, y, x) array in memory: what `segment` does for a file, without files.

    Args:
        model: a model file, a built-in model name or a Predictor.
        volume: raw voxels (any array-like; a memory map is read slab by slab).
        voxel_size: (z, y, x) Angstrom; when it differs from the model's pixel size by more than 5%, the
            volume is resampled for inference and the result brought back (as `segment` does).
        probabilities: also return the feature probabilities.
        invert_contrast: the volume's dense matter is bright, unlike the model's training data.
        match_spectrum: filter the volume's slices so that its power spectrum matches the model's
            training data (see `annotomo.spectrum`); False: as it is.
        progress: a progress bar (True), none (False), or a callable taking the slices just done.
        name: how messages name the volume.
        uncertainty: also return how unsure the model is of each voxel (`annotomo.uncertainty`).
        **predictor_options: for a model file or name, as for Predictor (device, precision, tile, ...).

    Returns:
        (uint8 labels, float32 probabilities (features, z, y, x) or None); with uncertainty=True a third
        item, the float32 (z, y, x) uncertainty in 0..1.

    Raises:
        InputError: NaN voxels, a constant volume, or an unusable model.
    """
    from .uncertainty import UncertaintyTap

    predictor = model if isinstance(model, Predictor) else Predictor.from_file(model, **predictor_options)
    info = predictor.info
    norm = info.normalization_for(volume, name, invert_contrast, match_spectrum, voxel_size)
    warn_if_inverted(norm, name, invert_contrast)
    pixel_size = None if voxel_size is None else voxel_size[2]
    labels = np.empty(volume.shape, np.uint8)
    probs = np.empty((info.n_outputs - 1,) + tuple(volume.shape), np.float32) if probabilities else None
    unsure = np.empty(volume.shape, np.float32) if uncertainty else None
    sinks = None if probs is None else list(probs)
    if unsure is not None:
        sinks = UncertaintyTap(unsure, info.n_outputs - 1, sinks).sinks
    try:
        if needs_resampling(info.pixel_size, pixel_size):
            source = ResampledVolume(volume, voxel_size, info.pixel_size)
            back = BackResampler(source.shape, volume.shape, labels, sinks)
            model_labels, model_probs = back.sinks(info.n_outputs - 1)
            ratio = volume.shape[0] / source.shape[0]
            scaled = (lambda n: progress(n * ratio)) if callable(progress) else progress
            predictor.segment(source, norm, model_labels, model_probs, progress=scaled)
        else:
            predictor.segment(volume, norm, labels, sinks, progress=progress)
    except ValueError as exc:
        raise InputError(name, str(exc)) from None
    return (labels, probs, unsure) if uncertainty else (labels, probs)


def evaluate(prediction, truth, class_names=None, json_path=None) -> dict:
    """Per-feature Dice, IoU, precision and recall of a predicted label volume against the truth.

    Args:
        prediction: a label file (e.g. `segment`'s output).
        truth: the reference label file of the same shape; voxels labelled 255 there are not scored.
        class_names: feature names, label 1 first (default: the names stored in the files, else
            class_1, class_2, ...).
        json_path: also write the scores to this JSON file.

    Returns:
        {"classes": {name: {dice, iou, precision, recall, true_voxels, predicted_voxels}}, "mean_dice",
        "mean_iou", "accuracy", "voxels_scored"}; a feature absent from both scores NaN and is left out
        of the means.

    Raises:
        InputError: a file cannot be read, or the shapes differ.
    """
    pred = read_labels(prediction)
    true = read_labels(truth, expected_shape=pred.shape)
    with pred, true:
        n = int(max(np.max(np.asarray(pred.data)), np.max(np.where(true.data == 255, 0, true.data))))
        stored = true.class_names or pred.class_names
        if class_names:
            names = list(class_names)
        elif stored and len(stored) >= n:
            names = list(stored)
        else:
            names = [f"class_{k}" for k in range(1, max(n, 1) + 1)]
        scores = segmentation_scores(true.data, pred.data, names)
    if json_path:
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(scores, indent=1))
    return scores


def synthesize(prefix, preview=False, overwrite=False, log=print, **simulate_options):
    """Simulate a tomogram (`annotomo.simulate`) and write it with its ground truth.

    Args:
        prefix: path prefix of the outputs.
        preview: also write PREFIX_preview.png (xy and xz slices with the labels).
        overwrite: replace existing outputs.
        log: where messages go.
        **simulate_options: passed to `annotomo.simulate` (shape, pixel_size, seed, randomise, conditions).

    Returns:
        (SyntheticTomogram, {output name: path}): PREFIX_tomo.mrc, PREFIX_labels.mrc (feature names stored
        in the header), the true ribosome centres as PREFIX_ribosomes.star and .csv, and the conditions
        as PREFIX_conditions.json.

    Raises:
        InputError: an output exists (without overwrite) or cannot be written.
        ValueError: a simulation option out of range.
    """
    from . import synth

    prefix = str(prefix)
    paths = dict(
        tomogram=Path(prefix + "_tomo.mrc"),
        labels=Path(prefix + "_labels.mrc"),
        ribosomes=Path(prefix + "_ribosomes.csv"),
        ribosomes_star=Path(prefix + "_ribosomes.star"),
        conditions=Path(prefix + "_conditions.json"),
    )
    if preview:
        paths["preview"] = Path(prefix + "_preview.png")
    for p in paths.values():
        check_output_path(p, overwrite=overwrite)
    result = synth.simulate(**simulate_options)
    vs = (result.pixel_size,) * 3
    write_volume(paths["tomogram"], result.tomogram, vs)
    write_volume(paths["labels"], result.labels, vs, class_names=result.class_names)
    centres = np.asarray(result.ribosome_centres, dtype=float).reshape(-1, 3)
    write_picks(Picks(centres, None, result.pixel_size), paths["ribosomes_star"], paths["ribosomes"])
    with atomic_path(paths["conditions"]) as tmp:
        record = dict(
            shape=list(result.tomogram.shape),
            pixel_size=result.pixel_size,
            seed=simulate_options.get("seed", 0),
            conditions=dataclasses.asdict(result.conditions),
        )
        tmp.write_text(json.dumps(record, indent=1))
    if preview:
        from .preview import save_overlay

        with atomic_path(paths["preview"]) as tmp:
            save_overlay(
                tmp,
                result.tomogram,
                [result.labels],
                result.class_names,
                titles=["ground truth"],
                pixel_size=result.pixel_size,
                fmt="png",
            )
    return result, {k: str(v) for k, v in paths.items()}


__all__ = ["segment", "segment_array", "evaluate", "synthesize", "output_paths", "format_scores"]
