"""napari reader: tomograms and label volumes in every format annotomo reads, at their voxel size.

Images get `scale` = voxel size and `translate` = origin, both in Angstrom (z, y, x); label volumes (8-bit
files with feature names stored, or with a few distinct values) become labels layers with the names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import AnnotomoError
from ..omezarr import is_zarr_path
from ..volumes import HDF_SUFFIXES, MRC_SUFFIXES, TIFF_SUFFIXES, open_volume
from .layers import labels_layer_kwargs

IN_MEMORY_BYTES = 2 << 30  # volumes up to this size are read into memory; larger ones stay memory-mapped
SUFFIXES = MRC_SUFFIXES + HDF_SUFFIXES + TIFF_SUFFIXES


def readable(path) -> bool:
    """True for paths annotomo reads (by name: MRC family, possibly compressed; HDF; TIFF; OME-Zarr)."""
    path = Path(str(path))
    name = path.name.lower().removesuffix(".gz").removesuffix(".bz2")
    return is_zarr_path(path) or name.endswith(SUFFIXES)


def get_reader(path):
    """npe2 reader hook: a function reading `path`, or None when annotomo does not read it."""
    if isinstance(path, list):
        return read_paths if all(readable(p) for p in path) else None
    return read_paths if readable(path) else None


def read_paths(paths) -> list[tuple]:
    """Layer data tuples (data, kwargs, layer type) for one path or a list of them."""
    return [read_layer(p) for p in ([paths] if isinstance(paths, str | Path) else paths)]


def read_layer(path) -> tuple:
    """(data, kwargs, "image" or "labels") for one volume file.

    Raises:
        AnnotomoError (InputError): the file cannot be read; napari shows the one-line message.
    """
    vol = open_volume(path)
    data = vol.data
    nbytes = int(np.prod(vol.shape)) * np.dtype(data.dtype).itemsize
    if nbytes <= IN_MEMORY_BYTES:
        data = np.array(data)
        vol.close()
    name = Path(str(path).rstrip("/")).name
    for suffix in (".gz", ".bz2", ".zarr", ".ome", *SUFFIXES):
        name = name.removesuffix(suffix)
    common = dict(name=name)
    if vol.voxel_size is not None:
        common.update(scale=tuple(vol.voxel_size), translate=tuple(vol.origin), units=("angstrom",) * 3)
    if is_label_volume(data, vol.class_names):
        if data.dtype != np.uint8:
            data = np.asarray(data).view(np.uint8) if data.dtype == np.int8 else np.asarray(data, dtype=np.uint8)
        names = vol.class_names or [f"class_{k}" for k in range(1, _max_feature(data) + 1)]
        kwargs = labels_layer_kwargs(names)
        kwargs["metadata"]["annotomo"]["source"] = str(path)
        return data, {**common, **kwargs}, "labels"
    if vol._handle is not None:
        common["metadata"] = {"annotomo": {"source": str(path), "volume": vol}}  # keeps the memory map open
    else:
        common["metadata"] = {"annotomo": {"source": str(path)}}
    return data, common, "image"


def is_label_volume(data, class_names) -> bool:
    """Labels: feature names stored in the file, or 8-bit data with at most 32 distinct values (sampled)."""
    if class_names:
        return True
    if np.dtype(data.dtype).itemsize != 1:
        return False
    sample = np.asarray(data[:: max(1, data.shape[0] // 16)])
    return len(np.unique(sample)) <= 32


def _max_feature(data) -> int:
    values = np.unique(np.asarray(data))
    values = values[values != 255]
    return int(values.max()) if len(values) else 0


__all__ = ["AnnotomoError", "get_reader", "read_layer", "read_paths", "readable"]
