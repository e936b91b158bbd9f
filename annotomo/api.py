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
    from .outputs import Manifest, ManifestEntry, input_identity, remove_stale_partials

    info = predictor.info
    model_record = _model_record(model)
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


def _model_record(model, in_memory_label=None) -> dict:
    """What identifies the model in a manifest or on a copick segmentation: its label and file digest (a
    Predictor in memory has no file: `in_memory_label`, or its repr).
    """
    if isinstance(model, Predictor):
        return dict(model=in_memory_label or str(model), sha256=None)
    from .modelfile import model_label, resolve_model
    from .outputs import file_digest

    return dict(model=model_label(model), sha256=file_digest(resolve_model(model)))


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


def segment_copick(
    model,
    config,
    voxel_spacing: float,
    tomo_type: str,
    runs="all",
    name=None,
    user_id=None,
    session_id=None,
    pick=(),
    outdir=None,
    probabilities=False,
    uncertainty=False,
    overwrite=False,
    progress=True,
    log=print,
    invert_contrast=False,
    match_spectrum=True,
    workers=None,
    dask=None,
    **predictor_options,
) -> list[dict]:
    """Segment runs of a copick project and write each result into the project as a copick segmentation.

    Args:
        model: a model file or built-in name.
        config: the project's copick config (JSON).
        voxel_spacing: Angstrom; which of each run's voxel spacings to segment.
        tomo_type: which tomogram of that spacing (e.g. "wbp", "denoised").
        runs: "all", or run names (a list or comma-separated).
        name: the segmentation's name (default "annotomo"); copick allows no underscores in names.
        user_id: its user id (default "annotomo").
        session_id: its session id (default "0", copick's "made by a tool").
        pick: features whose particles to also store as copick picks (Angstrom) of the same-named objects.
        outdir: a folder for what copick cannot hold (probability and uncertainty maps, as MRC).
        probabilities: also write one probability map per feature into `outdir`.
        uncertainty: also write the uncertainty map into `outdir`.
        overwrite: replace segmentations and picks of the same name, user and session.
        progress: a progress bar per run.
        log: where messages go.
        invert_contrast: as for `segment`.
        match_spectrum: as for `segment`.
        workers: segment the runs on a local Dask cluster of this many worker processes, a run per task.
        dask: or on an existing Dask scheduler (an address or a Client); its workers must reach the project.
        **predictor_options: as for `segment` (device, precision, ...).

    Returns:
        one record per run: {"run", "segmentation" (copick name:user:session), "picks" {feature: count},
        "skipped" (True where annotomo had already written it with this model), files in outdir}.

    Every run, tomogram, object and existing result is checked before anything is written; a run that
    annotomo segmented with the same model is skipped (resuming), one that exists otherwise needs
    `overwrite`. Features the project has no object for are left out of the segmentation (said in `log`).

    Raises:
        InputError, AnnotomoError: an unusable config; a missing run, voxel spacing, tomogram type or object;
            a name copick refuses; an existing result without `overwrite`.
    """
    from . import copick_projects as cp

    name = cp.check_name("segmentation name", name or cp.DEFAULT_NAME)
    user_id = cp.check_name("user id", user_id or cp.DEFAULT_USER)
    session_id = cp.check_name("session id", session_id or cp.DEFAULT_SESSION)
    if (probabilities or uncertainty) and outdir is None:
        raise AnnotomoError(
            "a copick segmentation holds labels only: give an output folder (-o) for the probability and "
            "uncertainty maps (written there as MRC)"
        )
    root = cp.open_project(config)
    selected = cp.select_runs(root, runs, config)
    predictor = model if isinstance(model, Predictor) else Predictor.from_file(model, **predictor_options)
    class_names = list(predictor.info.class_names)
    objects = cp.feature_objects(root, class_names)
    if not objects:
        raise AnnotomoError(
            f"{config}: none of the model's features ({', '.join(class_names)}) is an object of the project; "
            "add objects of these names to its config"
        )
    for feature in pick:
        if feature not in class_names:
            raise AnnotomoError(f"--pick {feature}: not a feature of the model ({', '.join(class_names)})")
        if feature not in objects:
            raise AnnotomoError(f"--pick {feature}: the copick project has no object {feature!r} to hold the picks")
    left_out = [f for f in class_names if f not in objects]
    if left_out:
        log(f"not objects of the project, left out of the segmentation: {', '.join(left_out)}")
    record = dict(_model_record(model, in_memory_label="predictor"), features=[f for f in class_names if f in objects])
    jobs = []
    for run in selected:  # check everything before writing anything
        tomogram = cp.run_tomogram(run, voxel_spacing, tomo_type)
        existing = cp.find_segmentation(run, tomogram.voxel_spacing, name, user_id, session_id)
        done = existing is not None and cp.completed_by_annotomo(existing) == record and not overwrite
        if existing is not None and not done and not overwrite:
            raise AnnotomoError(
                f"run {run.name}: segmentation {name}:{user_id}:{session_id} exists (not written by annotomo with "
                "this model); --overwrite replaces it"
            )
        for feature in pick:
            if (
                not done
                and not overwrite
                and run.get_picks(object_name=feature, user_id=user_id, session_id=session_id)
            ):
                raise AnnotomoError(
                    f"run {run.name}: picks of {feature} by {user_id}:{session_id} exist; --overwrite replaces them"
                )
        jobs.append((run, done))
    if outdir is not None:
        Path(outdir).mkdir(parents=True, exist_ok=True)
    spec = dict(
        name=name,
        user_id=user_id,
        session_id=session_id,
        pick=list(pick),
        outdir=None if outdir is None else str(Path(outdir).resolve()),
        probabilities=probabilities,
        uncertainty=uncertainty,
        invert_contrast=invert_contrast,
        match_spectrum=match_spectrum,
        record=record,
    )
    todo = [run.name for run, done in jobs if not done]
    for run, done in jobs:
        if done:
            log(f"{run.name}: already segmented with this model; skipped")
    if (workers or dask) and todo:
        if isinstance(model, Predictor):
            raise AnnotomoError("segmenting a copick project on Dask needs a model file or built-in name")
        written = _copick_runs_on_dask(
            model, predictor_options, config, todo, voxel_spacing, tomo_type, spec, workers, dask, log
        )
    else:
        written = {}
        for run_name in todo:
            written[run_name] = _copick_run(predictor, config, run_name, voxel_spacing, tomo_type, spec, progress)
            _log_copick_run(written[run_name], log)
    results = []
    for run, done in jobs:
        skipped = dict(run=run.name, segmentation=f"{name}:{user_id}:{session_id}", picks={}, skipped=True)
        results.append(skipped if done else written[run.name])
    return results


def _log_copick_run(result, log):
    picked = ", ".join(f"{n} {f}" for f, n in result["picks"].items())
    log(f"{result['run']}: segmentation {result['segmentation']} written" + (f"; picks: {picked}" if picked else ""))


def _copick_run(predictor, config, run_name, voxel_spacing, tomo_type, spec, progress=False) -> dict:
    """Segment one run of a copick project and write its results into it (here or on a Dask worker)."""
    from . import copick_projects as cp
    from .postprocess import pick_particles

    root = cp.open_project(config)
    (run,) = cp.select_runs(root, [run_name], config)
    tomogram = cp.run_tomogram(run, voxel_spacing, tomo_type)
    class_names = list(predictor.info.class_names)
    name, user_id, session_id = spec["name"], spec["user_id"], spec["session_id"]
    out = segment_array(
        predictor,
        tomogram.voxels(),
        (tomogram.voxel_spacing,) * 3,
        probabilities=spec["probabilities"],
        invert_contrast=spec["invert_contrast"],
        match_spectrum=spec["match_spectrum"],
        progress=progress,
        name=tomogram.name,
        uncertainty=spec["uncertainty"],
    )
    labels, probs = out[0], out[1]
    existing = cp.find_segmentation(run, tomogram.voxel_spacing, name, user_id, session_id)
    if existing is not None:  # checked before: overwrite was given
        existing.delete()
    objects = cp.feature_objects(root, class_names)
    cp.write_segmentation(
        run, tomogram.voxel_spacing, labels, class_names, objects, name, user_id, session_id, spec["record"]
    )
    result = dict(run=run.name, segmentation=f"{name}:{user_id}:{session_id}", picks={}, skipped=False)
    for feature in spec["pick"]:
        picks = pick_particles(labels, class_names.index(feature) + 1, pixel_size=tomogram.voxel_spacing)
        cp.write_picks(run, feature, picks.centres, tomogram.voxel_spacing, user_id, session_id, overwrite=True)
        result["picks"][feature] = len(picks.centres)
    size = (tomogram.voxel_spacing,) * 3
    stem = Path(spec["outdir"] or ".") / f"{run.name}_{tomogram.voxel_spacing:g}A_{tomo_type}"
    if probs is not None:
        for feature, volume in zip(class_names, probs, strict=True):
            path = Path(f"{stem}_{feature}_probability.mrc")
            write_volume(path, volume, size)
            result[f"{feature}_probability"] = str(path)
    if spec["uncertainty"]:
        path = Path(f"{stem}_uncertainty.mrc")
        write_volume(path, out[2], size)
        result["uncertainty"] = str(path)
    return result


def _copick_run_on_worker(model_file, options, digest, config, run_name, voxel_spacing, tomo_type, spec) -> dict:
    """`_copick_run` in a Dask worker, with the worker's one loaded copy of the model."""
    from .cluster import worker_predictor

    predictor, lock = worker_predictor(model_file, options, digest)
    with lock:
        return _copick_run(predictor, config, run_name, voxel_spacing, tomo_type, spec)


def _copick_runs_on_dask(model, options, config, run_names, voxel_spacing, tomo_type, spec, workers, address, log):
    """{run: result} of every run segmented on Dask (a local cluster of `workers`, or `address`); a run that
    fails raises after the others finished (each run's segmentation is whole or absent).
    """
    from .cluster import open_client
    from .modelfile import resolve_model
    from .outputs import file_digest

    model_file = str(resolve_model(model).resolve())
    digest = file_digest(model_file)
    client, cluster = open_client(workers, address, log)  # says how to install dask where it is missing
    from distributed import as_completed

    written, failed = {}, {}
    try:
        config = str(Path(config).resolve())
        futures = {
            client.submit(
                _copick_run_on_worker,
                model_file,
                options,
                digest,
                config,
                r,
                voxel_spacing,
                tomo_type,
                spec,
                pure=False,
            ): r
            for r in run_names
        }
        for future in as_completed(futures):
            run_name = futures[future]
            error = future.exception()
            if error is not None:
                failed[run_name] = (
                    str(error) if isinstance(error, AnnotomoError) else f"{type(error).__name__}: {error}"
                )
                log(f"{run_name}: failed: {failed[run_name]}")
                continue
            written[run_name] = future.result()
            _log_copick_run(written[run_name], log)
    finally:
        if cluster is not None:
            client.close()
            cluster.close()
    if failed:
        raise AnnotomoError(
            f"{len(failed)} of {len(run_names)} runs failed: " + "; ".join(f"{r}: {e}" for r, e in failed.items())
        )
    return written


def copick_training_pairs(
    config, folder, voxel_spacing: float, tomo_type: str, runs="all", from_segmentation=None, from_picks=(), log=print
):
    """Write a copick project's tomograms and labels as MRC pairs in `folder`, ready for `train`.

    Labels come from a segmentation (`from_segmentation`, NAME[:USER[:SESSION]]: its objects are the
    features) or from picks (`from_picks`, object names: a sphere of the object's radius per pick, a
    background shell around it, every other voxel not annotated).

    Returns:
        (tomogram paths, label paths, feature names).
    """
    from . import copick_projects as cp

    if bool(from_segmentation) == bool(from_picks):
        raise AnnotomoError("give one of --from-segmentation NAME[:USER[:SESSION]] or --from-picks OBJECT,...")
    root = cp.open_project(config)
    selected = cp.select_runs(root, runs, config)
    tomograms = [cp.run_tomogram(run, voxel_spacing, tomo_type) for run in selected]
    pairs = []
    for run, tomogram in zip(selected, tomograms, strict=True):
        shape = tuple(tomogram.data.shape)
        if from_segmentation:
            labels, names = cp.segmentation_labels(root, run, tomogram.voxel_spacing, from_segmentation)
            if labels.shape != shape:
                raise AnnotomoError(f"run {run.name}: segmentation {from_segmentation} is {labels.shape}, not {shape}")
        else:
            labels, count = cp.picks_labels(root, run, tomogram.voxel_spacing, shape, list(from_picks))
            names = list(from_picks)
            log(f"{run.name}: {count} picks -> spheres")
        pairs.append((run, tomogram, labels, names))
    all_names = sorted(
        {n for *_, names in pairs for n in names}, key=lambda n: [o.name for o in root.pickable_objects].index(n)
    )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tomo_paths, label_paths = [], []
    for run, tomogram, labels, names in pairs:
        lut = np.arange(256, dtype=np.uint8)
        for index, feature in enumerate(names, start=1):
            lut[index] = all_names.index(feature) + 1
        size = (tomogram.voxel_spacing,) * 3
        tomo_path, label_path = folder / f"{run.name}_tomo.mrc", folder / f"{run.name}_labels.mrc"
        write_volume(tomo_path, np.asarray(tomogram.voxels(), np.float32), size)
        write_volume(label_path, lut[labels], size, class_names=all_names)
        tomo_paths.append(tomo_path)
        label_paths.append(label_path)
    return tomo_paths, label_paths, all_names
