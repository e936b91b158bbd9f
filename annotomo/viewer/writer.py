"""napari writer: a labels layer as the MRC file `annotomo train` reads.

uint8, 255 where not annotated (by the layer's annotation rules, see layers.training_labels), the
layer's scale and translate as voxel size and origin (Angstrom), the feature names in the header.
"""

from __future__ import annotations

from pathlib import Path

from ..volumes import write_volume
from .layers import KEY, training_labels


def write_labels(path: str, data, attributes: dict) -> list[str]:
    """npe2 single-layer writer for labels layers; returns the written path."""
    meta = (attributes.get("metadata") or {}).get(KEY) or {}
    labels = training_labels(data, meta)
    scale = attributes.get("scale")
    translate = attributes.get("translate")
    voxel_size = tuple(float(s) for s in scale) if scale is not None and any(s != 1 for s in scale) else None
    path = Path(path)
    if path.suffix.lower() not in (".mrc", ".rec", ".map"):
        path = path.with_suffix(".mrc")
    write_volume(
        path,
        labels,
        voxel_size,
        tuple(translate) if translate is not None else None,
        class_names=meta.get("class_names"),
    )
    return [str(path)]
