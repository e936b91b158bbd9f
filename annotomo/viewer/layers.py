"""What the napari plugin shows and what it hands back to training, as plain data (no Qt, no napari).

Layer metadata under the key "annotomo" says what a labels layer is:

- kind "annotation": made by "New annotation". Painted values 1..N are features; BACKGROUND_BRUSH
  (N + 1) marks explicit background. In "slices" mode (the default) every slice holding any paint is
  annotated (its unpainted voxels are background) and every other slice is not annotated (255); in
  "regions" mode only painted voxels count (paint background with the background brush).
- kind "prediction": labels written by segmentation. Its "original" copy is kept, so that the slices a
  user corrected can be told apart: those slices are annotated, the others are not.
- anything else (e.g. a label file opened with the reader): used as it is (0..N, 255 not annotated).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..conventions import NOT_ANNOTATED

KEY = "annotomo"
MODES = ("slices", "regions")
# Feature colours (then cycling); background transparent, "not annotated" and the background brush grey.
COLOURS = ["#e41a1c", "#377eb8", "#4daf4a", "#ff7f00", "#984ea3", "#ffff33", "#a65628", "#f781bf", "#17becf"]
BRUSH_COLOUR = "#bbbbbb"
NOT_ANNOTATED_COLOUR = "#555555"


def background_brush(class_names) -> int:
    """The label value that paints explicit background in an annotation layer (one past the features)."""
    return len(class_names) + 1


def label_colours(class_names, brush=False) -> dict:
    """{label value: colour} for a labels layer of these features (napari's `colormap` argument)."""
    colours = {None: "transparent", 0: "transparent", NOT_ANNOTATED: NOT_ANNOTATED_COLOUR}
    for k in range(1, len(class_names) + 1):
        colours[k] = COLOURS[(k - 1) % len(COLOURS)]
    if brush:
        colours[background_brush(class_names)] = BRUSH_COLOUR
    return colours


def label_features(class_names, brush=False) -> dict:
    """A features table {index, name} for a labels layer, so napari names the value under the cursor."""
    index = [0, *range(1, len(class_names) + 1)]
    names = ["background", *class_names]
    if brush:
        index.append(background_brush(class_names))
        names.append("background (painted)")
    index.append(NOT_ANNOTATED)
    names.append("not annotated")
    return {"index": index, "name": names}


def labels_layer_kwargs(
    class_names, kind=None, image=None, mode="slices", original=None, voxel_size=None, origin=None
) -> dict:
    """Keyword arguments for napari's add_labels: names, colours, metadata, scale and translate."""
    brush = kind == "annotation"
    meta = {"class_names": list(class_names)}
    if kind:
        meta["kind"] = kind
    if image:
        meta["image"] = image
    if kind == "annotation":
        meta["mode"] = mode
    if original is not None:
        meta["original"] = original
    kwargs = dict(
        colormap=label_colours(class_names, brush), features=label_features(class_names, brush), metadata={KEY: meta}
    )
    if voxel_size is not None:
        kwargs["scale"] = tuple(float(v) for v in voxel_size)
    if origin is not None:
        kwargs["translate"] = tuple(float(o) for o in origin)
    return kwargs


@dataclass
class AnnotationSummary:
    """How much of a labels layer counts as annotated, per feature."""

    annotated_slices: int
    total_slices: int
    voxels: dict  # feature name -> annotated voxels
    background_voxels: int

    def text(self) -> str:
        """One line for the panel."""
        parts = ", ".join(f"{name} {n}" for name, n in self.voxels.items())
        return (
            f"{self.annotated_slices} of {self.total_slices} slices annotated; voxels: {parts}, "
            f"background {self.background_voxels}"
        )


def training_labels(data, meta: dict | None) -> np.ndarray:
    """The uint8 labels training reads (0 background, 1..N features, 255 not annotated) from a layer's data.

    Raises:
        ValueError: an unknown annotation mode, or painted values beyond the features.
    """
    data = np.asarray(data)
    meta = meta or {}
    names = meta.get("class_names") or []
    kind = meta.get("kind")
    if kind == "annotation":
        brush = background_brush(names)
        if data.size and int(data.max()) > brush:
            raise ValueError(
                f"painted label values up to {int(data.max())}, but only {len(names)} features "
                f"(1..{len(names)}) and the background brush ({brush})"
            )
        mode = meta.get("mode", "slices")
        if mode not in MODES:
            raise ValueError(f"annotation mode must be one of {', '.join(MODES)}, got {mode!r}")
        out = np.where(data == brush, 0, data).astype(np.uint8)
        if mode == "slices":
            painted = data.reshape(len(data), -1).any(axis=1)
            out[~painted] = NOT_ANNOTATED
        else:
            out[data == 0] = NOT_ANNOTATED
        return out
    if kind == "prediction" and meta.get("original") is not None:
        original = np.asarray(meta["original"])
        touched = (data != original).reshape(len(data), -1).any(axis=1)
        out = np.full(data.shape, NOT_ANNOTATED, np.uint8)
        out[touched] = data[touched]
        return out
    return data.astype(np.uint8)


def corrected_slices(data, meta: dict | None) -> list[int]:
    """The slices of a prediction layer that differ from the prediction (the user's corrections)."""
    meta = meta or {}
    if meta.get("kind") != "prediction" or meta.get("original") is None:
        return []
    diff = (np.asarray(data) != np.asarray(meta["original"])).reshape(len(data), -1).any(axis=1)
    return np.flatnonzero(diff).tolist()


def summarise(labels: np.ndarray, class_names) -> AnnotationSummary:
    """Annotated slices and voxels per feature of training labels (as `training_labels` returns)."""
    counts = np.bincount(labels.ravel(), minlength=256)
    annotated = (labels != NOT_ANNOTATED).reshape(len(labels), -1).any(axis=1)
    return AnnotationSummary(
        int(annotated.sum()),
        len(labels),
        {name: int(counts[k]) for k, name in enumerate(class_names, start=1)},
        int(counts[0]),
    )


def combine(annotations: list[np.ndarray]) -> np.ndarray:
    """Several training-label volumes of one tomogram as one: later ones win where they are annotated."""
    out = np.full(annotations[0].shape, NOT_ANNOTATED, np.uint8)
    for labels in annotations:
        annotated = labels != NOT_ANNOTATED
        out[annotated] = labels[annotated]
    return out


def annotated_slices(layers, nz: int) -> np.ndarray:
    """Which slices (bool per z) hold an annotated voxel in any of `layers`: (data, metadata) pairs of
    annotations or corrected predictions.
    """
    annotated = np.zeros(nz, bool)
    for data, meta in layers:
        if (meta or {}).get("kind") == "prediction":
            annotated[corrected_slices(data, meta)] = True
            continue
        labels = training_labels(data, meta)
        annotated |= (labels != NOT_ANNOTATED).reshape(nz, -1).any(axis=1)
    return annotated


def strip_image(slice_scores, annotated, width: int, height: int = 16) -> np.ndarray:
    """An RGBA picture along z: each slice's score (0..max, dark to bright orange) over a thin row
    that is green where the slice is annotated; (height, width, 4) uint8.
    """
    scores = np.asarray(slice_scores, dtype=np.float64)
    nz = len(scores)
    column = np.minimum((np.arange(width) * nz) // max(width, 1), nz - 1)
    level = scores / scores.max() if nz and scores.max() > 0 else np.zeros(nz)
    picture = np.zeros((height, width, 4), np.uint8)
    picture[..., 3] = 255
    top = height - max(3, height // 4)
    value = level[column]
    picture[:top, :, 0] = (40 + 215 * value).astype(np.uint8)
    picture[:top, :, 1] = (20 + 120 * value).astype(np.uint8)
    picture[:top, :, 2] = 30
    picture[top:, :, 1] = np.where(np.asarray(annotated, bool)[column], 200, 40).astype(np.uint8)
    return picture
