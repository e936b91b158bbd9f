"""Where to annotate next: the slices (or boxes) where the model is least sure, not annotated yet.

`suggest` segments the tomogram with its uncertainty (`annotomo.uncertainty`), scores each slice (or
each PX x PX box of a grid over each slice) by its mean uncertainty, and picks the best N so that
they are not annotated in LABELS, not within `gap` slices of each other or of an annotated slice (boxes:
of another chosen box that overlaps them), and, while features remain that no pick shows, each next
pick shows one of them (the features a slice shows are those the model labels there).
"""

from __future__ import annotations

import numpy as np

from .conventions import NOT_ANNOTATED
from .errors import AnnotomoError, InputError

MIN_FEATURE_VOXELS = 20  # a feature counts as shown in a slice (box) from this many labelled voxels


def suggest(
    model,
    tomogram,
    labels=None,
    n=5,
    region=None,
    gap=3,
    pixel_size=None,
    invert_contrast=False,
    match_spectrum=True,
    progress=False,
    **predictor_options,
) -> list[dict]:
    """The `n` places where annotating would help the model most, best first.

    Args:
        model: a model file or built-in name (or a Predictor).
        tomogram: the tomogram file.
        labels: a label file of the same shape (255 = not annotated): its annotated slices (any voxel
            not 255) are never suggested, nor slices within `gap` of them.
        n: how many places.
        region: None for whole slices, or PX for PX x PX boxes.
        gap: slices between suggestions (and from annotated slices).
        pixel_size: Angstrom, overriding the tomogram's header.
        invert_contrast: the tomogram's dense matter is bright.
        match_spectrum: filter the tomogram into the model's training spectra (as `segment` does).
        progress: a progress bar (True), none, or a callable taking the slices just done.
        **predictor_options: as for Predictor (device, precision, tile, ...).

    Returns:
        [{"z", "score", "features"}] (with region also "y0", "x0", "y1", "x1": the box, end exclusive),
        best first; score is the mean uncertainty (0..1), features the names the model labels there.

    Raises:
        InputError: the tomogram or labels cannot be read, or the labels do not fit.
        AnnotomoError: n < 1, or a region larger than a slice.
    """
    from .api import segment_array
    from .predict import Predictor
    from .volumes import open_volume

    if int(n) < 1:
        raise AnnotomoError(f"-n {n}: ask for at least one suggestion")
    predictor = model if isinstance(model, Predictor) else Predictor.from_file(model, **predictor_options)
    names = list(predictor.info.class_names)
    with open_volume(tomogram, min_slices=2, pixel_size=pixel_size) as vol:
        shape = vol.shape
        if region is not None and not 1 <= int(region) <= min(shape[1:]):
            raise AnnotomoError(f"--region {region}: boxes must fit in a {shape[1]} x {shape[2]} slice")
        annotated = _annotated_slices(labels, shape, names)
        predicted, _, unsure = segment_array(
            predictor,
            vol.data,
            vol.voxel_size,
            invert_contrast=invert_contrast,
            match_spectrum=match_spectrum,
            progress=progress,
            name=str(tomogram),
            uncertainty=True,
        )
    return suggest_places(predicted, unsure, names, annotated, n, region, gap)


def suggest_places(predicted, unsure, names, annotated=None, n=5, region=None, gap=3) -> list[dict]:
    """`suggest`'s choice from a segmentation already made (the napari panel holds one).

    Args:
        predicted: (z, y, x) labels.
        unsure: their (z, y, x) uncertainty.
        names: the feature names, label 1 first.
        annotated: bool per slice, True where the annotation so far has any voxel (default: none).
        n: how many places.
        region: None for whole slices, or PX for PX x PX boxes.
        gap: slices between suggestions (and from annotated slices).
    """
    if int(n) < 1:
        raise AnnotomoError(f"-n {n}: ask for at least one suggestion")
    nz = predicted.shape[0]
    annotated = np.zeros(nz, bool) if annotated is None else np.asarray(annotated, bool)
    candidates = _candidates(predicted, unsure, names, region)
    return _choose(candidates, annotated, int(n), int(gap), nz)


def _annotated_slices(labels, shape, names) -> np.ndarray:
    """Which slices LABELS annotates (bool per z); none without labels."""
    annotated = np.zeros(shape[0], bool)
    if labels is None:
        return annotated
    from .volumes import read_labels

    with read_labels(labels, expected_shape=shape) as lab:
        stored = lab.class_names
        if stored and any(s not in names for s in stored):
            unknown = [s for s in stored if s not in names]
            raise InputError(labels, f"names features the model does not know: {', '.join(unknown)}")
        for z in range(shape[0]):
            plane = np.asarray(lab.data[z])
            known = plane[plane != NOT_ANNOTATED]
            if known.size and int(known.max()) > len(names):
                raise InputError(labels, f"label {int(known.max())} in slice {z}: the model has {len(names)} features")
            annotated[z] = known.size > 0
    return annotated


def _boxes(height, width, region):
    """(y0, x0, y1, x1) of a grid of region x region boxes covering the slice (the last ones end at the edge)."""
    ys = sorted({min(y, height - region) for y in range(0, height, region)})
    xs = sorted({min(x, width - region) for x in range(0, width, region)})
    return [(y, x, y + region, x + region) for y in ys for x in xs]


def _candidates(predicted, unsure, names, region) -> list[dict]:
    """Every slice (or box) with its score and the features the model labels there."""
    nz, height, width = predicted.shape
    boxes = [(0, 0, height, width)] if region is None else _boxes(height, width, int(region))
    found = []
    for z in range(nz):
        for y0, x0, y1, x1 in boxes:
            counts = np.bincount(predicted[z, y0:y1, x0:x1].ravel(), minlength=len(names) + 1)
            entry = dict(z=z, score=round(float(unsure[z, y0:y1, x0:x1].mean()), 4))
            if region is not None:
                entry.update(y0=y0, x0=x0, y1=y1, x1=x1)
            entry["features"] = [names[k - 1] for k in range(1, len(names) + 1) if counts[k] >= MIN_FEATURE_VOXELS]
            found.append(entry)
    return found


def _overlaps(a, b) -> bool:
    if "y0" not in a:
        return True
    return a["y0"] < b["y1"] and b["y0"] < a["y1"] and a["x0"] < b["x1"] and b["x0"] < a["x1"]


def _choose(candidates, annotated, n, gap, nz) -> list[dict]:
    """The best `n` candidates under the rules of the module docstring."""
    near_annotated = np.zeros(nz, bool)
    for z in np.flatnonzero(annotated):
        near_annotated[max(0, z - gap) : z + gap + 1] = True
    ranked = sorted((c for c in candidates if not near_annotated[c["z"]]), key=lambda c: -c["score"])
    uncovered = set().union(*(c["features"] for c in candidates)) if candidates else set()
    chosen = []
    while len(chosen) < n:
        free = [c for c in ranked if all(abs(c["z"] - p["z"]) > gap or not _overlaps(c, p) for p in chosen)]
        if not free:
            break
        pick = next((c for c in free if uncovered & set(c["features"])), free[0]) if uncovered else free[0]
        chosen.append(pick)
        uncovered -= set(pick["features"])
        ranked.remove(pick)
    return sorted(chosen, key=lambda c: -c["score"])
