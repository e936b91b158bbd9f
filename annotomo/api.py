"""File-level operations behind the CLI, for notebooks and scripts: segment, evaluate, synthesize.

Each function checks its inputs and outputs before any work, writes outputs atomically (temporary
name, renamed when complete) and never modifies its inputs.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import AnnotomoError, InputError
from .metrics import format_scores, segmentation_scores
from .postprocess import Picks, remove_small_components, write_picks
from .predict import Predictor
from .resample import needs_resampling, resample_to_pixel_size
from .volumes import check_output_path, open_volume, read_labels, volume_writer, write_volume

OUTPUT_FORMATS = {"mrc": ".mrc", "zarr": ".ome.zarr"}


def output_paths(tomogram, outdir, class_names, probabilities, output_format="mrc"):
    """The files `segment` writes for `tomogram`: labels, and one probability map per feature."""
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
    invert_contrast=False,
    **predictor_options,
) -> list[dict]:
    """Segment each tomogram with `model` (a path or a Predictor); returns the written paths per input.

    Writes OUTDIR/<stem>_labels.mrc (uint8 class index, same shape, voxel size and origin as the input)
    and with probabilities=True OUTDIR/<stem>_<class>.mrc (float32, 0..1) per feature;
    output_format="zarr" writes OUTDIR/<stem>_labels.ome.zarr etc. instead. min_size (voxels; an int for
    every feature or {class name: voxels}) sets smaller connected components in the labels to background.
    """
    predictor = model if isinstance(model, Predictor) else Predictor.from_file(model, **predictor_options)
    info = predictor.info
    min_voxels = _min_voxels_by_index(min_size, info.class_names)
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise InputError(outdir, "output path exists and is not a folder")
    outdir.mkdir(parents=True, exist_ok=True)
    tomograms = [Path(t) for t in tomograms]
    plans = []
    for t in tomograms:  # check every input and output before starting any long work
        vol = open_volume(t, min_slices=2, pixel_size=pixel_size)
        paths = output_paths(t, outdir, info.class_names, probabilities, output_format)
        for p in paths.values():
            check_output_path(p, inputs=tomograms, overwrite=overwrite)
        plans.append((vol, paths))
    names = [str(p) for _, paths in plans for p in paths.values()]
    if len(set(names)) != len(names):
        raise AnnotomoError(
            "two inputs would write the same output file (same file name stem); segment them into different folders"
        )
    results = []
    for vol, paths in plans:
        with vol:
            norm = info.normalization_for(vol.data, vol.path, invert_contrast)
            warn_if_inverted(norm, vol.path, invert_contrast)
            if needs_resampling(info.pixel_size, vol.pixel_size):
                warnings.warn(
                    f"{vol.path}: pixel size {vol.pixel_size:g} A differs from the model's "
                    f"{info.pixel_size:g} A: resampling to {info.pixel_size:g} A for inference and "
                    f"back to the input grid (use --pixel-size if the header is wrong)",
                    stacklevel=2,
                )
                _segment_resampled(predictor, vol, norm, paths, probabilities, min_voxels, log)
                log(f"{vol.path} -> {paths['labels']} (resampled)")
                results.append({k: str(v) for k, v in paths.items()})
                continue
            with ExitStack() as stack:
                labels = stack.enter_context(
                    volume_writer(paths["labels"], vol.shape, np.uint8, vol.voxel_size, vol.origin, info.class_names)
                )
                probs = (
                    [
                        stack.enter_context(volume_writer(paths[n], vol.shape, np.float32, vol.voxel_size, vol.origin))
                        for n in info.class_names
                    ]
                    if probabilities
                    else None
                )
                try:
                    predictor.segment(
                        vol.data, norm, labels, probs, progress=progress, description=f"segmenting {vol.path.name}"
                    )
                except ValueError as exc:
                    raise InputError(vol.path, str(exc)) from None
                if min_voxels:
                    _log_cleanup(remove_small_components(labels, min_voxels), info.class_names, log)
        log(
            f"{vol.path} -> {paths['labels']}"
            + (f" (+ {len(info.class_names)} probability maps)" if probabilities else "")
        )
        results.append({k: str(v) for k, v in paths.items()})
    return results


def warn_if_inverted(norm, path, invert_contrast=False):
    """Warn when the tomogram's intensities suggest the opposite contrast of what the model expects."""
    if norm.looks_inverted:
        advice = "drop --invert-contrast" if invert_contrast else "if so, use --invert-contrast"
        warnings.warn(
            f"{path}: intensities are skewed towards bright values (skewness {norm.skewness:+.2f} as the "
            f"model sees them), as where dense matter is bright; {advice}",
            stacklevel=3,
        )


def _min_voxels_by_index(min_size, class_names) -> dict[int, int]:
    """{class index: minimum voxels} from an int (every feature) or {class name: voxels}."""
    if not min_size:
        return {}
    if isinstance(min_size, dict):
        unknown = [n for n in min_size if n not in class_names]
        if unknown:
            raise AnnotomoError(
                f"min_size names {', '.join(unknown)}, not classes of the model ({', '.join(class_names)})"
            )
        return {class_names.index(n) + 1: int(v) for n, v in min_size.items() if v}
    return {k + 1: int(min_size) for k in range(len(class_names))}


def _log_cleanup(removed, class_names, log):
    parts = [f"{class_names[k - 1]} {n}" for k, n in removed.items() if n]
    log("removed small components: " + (", ".join(parts) if parts else "none"))


def _segment_resampled(predictor, vol, norm, paths, probabilities, min_voxels=None, log=print):
    """Infer at the model's pixel size, then interpolate probabilities back to the input grid.

    Holds the resampled tomogram and one probability volume per class in memory (fine for bin-4 and
    bin-2 tomograms; resample huge ones beforehand).
    """
    labels, back = _resampled_labels(predictor, vol.data, vol.voxel_size, norm)
    if min_voxels:
        _log_cleanup(remove_small_components(labels, min_voxels), predictor.info.class_names, log)
    write_volume(paths["labels"], labels, vol.voxel_size, vol.origin, predictor.info.class_names)
    if probabilities:
        for name, p in zip(predictor.info.class_names, back, strict=True):
            write_volume(paths[name], np.clip(p, 0, 1).astype(np.float32), vol.voxel_size, vol.origin)


def _resampled_labels(predictor, volume, voxel_size, norm, progress=False):
    """Labels and feature probabilities on the input grid, inferred at the model's pixel size."""
    from scipy import ndimage

    small = resample_to_pixel_size(volume, voxel_size, predictor.info.pixel_size)
    features = predictor.info.n_outputs - 1
    probs = np.empty((features,) + small.shape, np.float32)
    predictor.segment(small, norm, np.empty(small.shape, np.uint8), list(probs), progress=progress)
    zoom = [n / s for n, s in zip(volume.shape, small.shape, strict=True)]
    back = np.stack([ndimage.zoom(p, zoom, order=1, mode="nearest", grid_mode=True) for p in probs])
    background = 1.0 - back.sum(0)
    labels = np.argmax(np.concatenate([background[None], back]), axis=0).astype(np.uint8)
    return labels, back


def segment_array(
    model,
    volume,
    voxel_size=None,
    probabilities=False,
    invert_contrast=False,
    progress=False,
    name="array",
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
        progress: a progress bar (True), none (False), or a callable taking the slices just done.
        name: how messages name the volume.
        **predictor_options: for a model file or name, as for Predictor (device, precision, tile, ...).

    Returns:
        (uint8 labels, float32 probabilities (features, z, y, x) or None).

    Raises:
        InputError: NaN voxels, a constant volume, or an unusable model.
    """
    predictor = model if isinstance(model, Predictor) else Predictor.from_file(model, **predictor_options)
    info = predictor.info
    norm = info.normalization_for(volume, name, invert_contrast)
    warn_if_inverted(norm, name, invert_contrast)
    pixel_size = None if voxel_size is None else voxel_size[2]
    if needs_resampling(info.pixel_size, pixel_size):
        labels, back = _resampled_labels(predictor, volume, voxel_size, norm, progress)
        return labels, (np.clip(back, 0, 1) if probabilities else None)
    labels = np.empty(volume.shape, np.uint8)
    probs = np.empty((info.n_outputs - 1,) + tuple(volume.shape), np.float32) if probabilities else None
    try:
        predictor.segment(volume, norm, labels, None if probs is None else list(probs), progress=progress)
    except ValueError as exc:
        raise InputError(name, str(exc)) from None
    return labels, probs


def evaluate(prediction, truth, class_names=None, json_path=None) -> dict:
    """Per-class Dice, IoU, precision and recall of a predicted label volume against the truth."""
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
