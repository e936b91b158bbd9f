"""File-level operations behind the CLI, for notebooks and scripts: segment, evaluate, synthesize.

Each function checks its inputs and outputs before any work, writes outputs atomically (temporary
name, renamed when complete) and never modifies its inputs.
"""

from __future__ import annotations

import json
import warnings
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from .errors import AnnotomoError, InputError
from .metrics import format_scores, segmentation_scores
from .predict import Predictor
from .volumes import atomic_path, check_output_path, open_volume, read_labels, volume_writer, write_volume


def output_paths(tomogram, outdir, class_names, probabilities):
    """The files `segment` writes for `tomogram`: labels, and one probability map per feature."""
    stem = Path(tomogram).name
    for suffix in (".gz", ".bz2"):
        stem = stem.removesuffix(suffix)
    stem = Path(stem).stem
    outdir = Path(outdir)
    paths = {"labels": outdir / f"{stem}_labels.mrc"}
    if probabilities:
        for name in class_names:
            paths[name] = outdir / f"{stem}_{name}.mrc"
    return paths


def segment(model, tomograms, outdir, probabilities=False, overwrite=False, progress=True,
            pixel_size=None, log=print, **predictor_options) -> list[dict]:
    """Segment each tomogram with `model` (a path or a Predictor); returns the written paths per input.

    Writes OUTDIR/<stem>_labels.mrc (uint8 class index, same shape, voxel size and origin as the input)
    and with probabilities=True OUTDIR/<stem>_<class>.mrc (float32, 0..1) per feature.
    """
    predictor = model if isinstance(model, Predictor) else Predictor.from_file(model, **predictor_options)
    info = predictor.info
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise InputError(outdir, "output path exists and is not a folder")
    outdir.mkdir(parents=True, exist_ok=True)
    tomograms = [Path(t) for t in tomograms]
    plans = []
    for t in tomograms:  # check every input and output before starting any long work
        vol = open_volume(t, min_slices=2, pixel_size=pixel_size)
        paths = output_paths(t, outdir, info.class_names, probabilities)
        for p in paths.values():
            check_output_path(p, inputs=tomograms, overwrite=overwrite)
        plans.append((vol, paths))
    names = [str(p) for _, paths in plans for p in paths.values()]
    if len(set(names)) != len(names):
        raise AnnotomoError("two inputs would write the same output file (same file name stem); "
                            "segment them into different folders")
    results = []
    for vol, paths in plans:
        with vol:
            if info.pixel_size and vol.pixel_size and abs(vol.pixel_size / info.pixel_size - 1) > 0.05:
                warnings.warn(f"{vol.path}: pixel size {vol.pixel_size:g} A differs from the model's "
                              f"{info.pixel_size:g} A; results may be poor (resample the tomogram, or set "
                              f"--pixel-size if the header is wrong)", stacklevel=2)
            norm = info.normalization_for(vol.data, vol.path)
            with ExitStack() as stack:
                labels = stack.enter_context(volume_writer(paths["labels"], vol.shape, np.uint8, vol.voxel_size, vol.origin))
                probs = [stack.enter_context(volume_writer(paths[n], vol.shape, np.float32, vol.voxel_size, vol.origin))
                         for n in info.class_names] if probabilities else None
                try:
                    predictor.segment(vol.data, norm, labels, probs, progress=progress,
                                      description=f"segmenting {vol.path.name}")
                except ValueError as exc:
                    raise InputError(vol.path, str(exc)) from None
        log(f"{vol.path} -> {paths['labels']}" + (f" (+ {len(info.class_names)} probability maps)" if probabilities else ""))
        results.append({k: str(v) for k, v in paths.items()})
    return results


def evaluate(prediction, truth, class_names=None, json_path=None) -> dict:
    """Per-class Dice, IoU, precision and recall of a predicted label volume against the truth."""
    pred = read_labels(prediction)
    true = read_labels(truth, expected_shape=pred.shape)
    with pred, true:
        n = int(max(np.max(np.asarray(pred.data)), np.max(np.where(true.data == 255, 0, true.data))))
        names = list(class_names) if class_names else [f"class_{k}" for k in range(1, max(n, 1) + 1)]
        scores = segmentation_scores(true.data, pred.data, names)
    if json_path:
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(scores, indent=1))
    return scores


def synthesize(prefix, preview=False, overwrite=False, log=print, **simulate_options):
    """Simulate a tomogram and write PREFIX_tomo.mrc, PREFIX_labels.mrc, PREFIX_ribosomes.csv (+ PNG)."""
    from . import synth

    prefix = str(prefix)
    paths = dict(tomogram=Path(prefix + "_tomo.mrc"), labels=Path(prefix + "_labels.mrc"),
                 ribosomes=Path(prefix + "_ribosomes.csv"))
    if preview:
        paths["preview"] = Path(prefix + "_preview.png")
    for p in paths.values():
        check_output_path(p, overwrite=overwrite)
    result = synth.simulate(**simulate_options)
    vs = (result.pixel_size,) * 3
    write_volume(paths["tomogram"], result.tomogram, vs)
    write_volume(paths["labels"], result.labels, vs)
    with atomic_path(paths["ribosomes"]) as tmp:
        c = result.ribosome_centres
        rows = ["x_voxel,y_voxel,z_voxel,x_angstrom,y_angstrom,z_angstrom"]
        rows += [f"{x:.2f},{y:.2f},{z:.2f},{x * result.pixel_size:.1f},{y * result.pixel_size:.1f},"
                 f"{z * result.pixel_size:.1f}" for z, y, x in c]
        tmp.write_text("\n".join(rows) + "\n")
    if preview:
        from .preview import save_overlay

        with atomic_path(paths["preview"]) as tmp:
            save_overlay(tmp, result.tomogram, [result.labels], result.class_names, titles=["ground truth"],
                         pixel_size=result.pixel_size, fmt="png")
    return result, {k: str(v) for k, v in paths.items()}


__all__ = ["segment", "evaluate", "synthesize", "output_paths", "format_scores"]
