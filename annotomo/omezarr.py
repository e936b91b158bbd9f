"""OME-Zarr (OME-NGFF) volumes, the CryoET Data Portal's format: reading and streaming writes.

Storage is the `zarr` library's; this module only maps OME-NGFF's metadata (the `multiscales` block:
axes with units, per-level scale and translation) to annotomo's (z, y, x) voxel size and origin in
Angstrom. (ome-zarr-py would add dask, fsspec and aiohttp for the same few lines.)

Reading: a group with `multiscales` metadata (NGFF 0.4, zarr v2, as the portal serves it, or 0.5 under
`attrs["ome"]`, zarr v3) is read at its first, full-resolution level; a bare 3D zarr array is read
without a voxel size. Writing: NGFF 0.4 in zarr v2 format (what the portal, napari-ome-zarr, Fiji's
MoBIE and ChimeraX's OME-Zarr reader all open), one full-resolution level, origin as a translation.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from .atomic import temporary_sibling
from .errors import AnnotomoError, InputError

ZARR_SUFFIX = ".zarr"
NGFF_VERSION = "0.4"
_TO_ANGSTROM = {"angstrom": 1.0, "nanometer": 10.0, "micrometer": 1e4, "millimeter": 1e7, "meter": 1e10}


def is_zarr_path(path) -> bool:
    """True for paths annotomo treats as OME-Zarr (name ending in .zarr, e.g. NAME.ome.zarr)."""
    return Path(path).name.lower().rstrip("/").endswith(ZARR_SUFFIX)


def _zarr():
    try:
        import zarr
    except ImportError:  # pragma: no cover - zarr is a dependency; this guards a broken install
        raise AnnotomoError("OME-Zarr needs the 'zarr' package (pip install zarr)") from None
    return zarr


def read_ome_zarr(path):
    """(array, voxel_size or None, origin, class names or None) of an OME-Zarr group or a bare zarr array,
    read lazily. Class names are those annotomo stores with label volumes (attributes["annotomo"]).
    """
    zarr = _zarr()
    path = Path(path)
    try:
        node = zarr.open(store=str(path), mode="r")
    except Exception as exc:  # noqa: BLE001 - zarr raises many kinds for unreadable stores
        raise InputError(path, f"cannot be read as zarr ({exc})") from None
    if isinstance(node, zarr.Array):
        return node, None, (0.0, 0.0, 0.0), None
    attrs = dict(node.attrs)
    names = (attrs.get("annotomo") or {}).get("class_names") or None
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        arrays = [name for name, _ in node.arrays()]
        if len(arrays) != 1:
            raise InputError(
                path,
                f"zarr group without OME-NGFF 'multiscales' metadata and with {len(arrays)} "
                "arrays; expected an OME-Zarr image",
            )
        return node[arrays[0]], None, (0.0, 0.0, 0.0), names
    image = multiscales[0]
    level = image["datasets"][0]
    try:
        data = node[level["path"]]
    except KeyError:
        raise InputError(path, f"OME-Zarr level '{level['path']}' named in the metadata is missing") from None
    axes = image.get("axes") or [{"name": n} for n in "zyx"]
    names = [a["name"] if isinstance(a, dict) else a for a in axes]
    if data.ndim != len(names) or not set("zyx") <= set(names):
        raise InputError(path, f"OME-Zarr image with axes {names}; expected z, y, x (and optionally c, t of size 1)")
    scale, translation = np.ones(len(names)), np.zeros(len(names))
    # Dataset-level transformations apply first, then the image-level ones: physical = index * scale + translation.
    transforms = list(level.get("coordinateTransformations", [])) + list(image.get("coordinateTransformations", []))
    for transform in transforms:
        if transform.get("type") == "scale":
            factor = np.asarray(transform["scale"], float)
            scale, translation = scale * factor, translation * factor
        elif transform.get("type") == "translation":
            translation = translation + np.asarray(transform["translation"], float)
    # Drop singleton channel/time axes, so (c, z, y, x) images with one channel read as (z, y, x).
    extra = [i for i, n in enumerate(names) if n not in "zyx"]
    if any(data.shape[i] != 1 for i in extra):
        raise InputError(
            path, f"OME-Zarr image of shape {data.shape} over axes {names}: only one channel/time point is supported"
        )
    index = tuple(0 if i in extra else slice(None) for i in range(len(names)))
    if extra:
        data = _Squeezed(data, index)
    order = [names.index(a) for a in "zyx"]
    units = [axes[i].get("unit") if isinstance(axes[i], dict) else None for i in order]
    factor = [_TO_ANGSTROM.get(str(u).lower()) if u else None for u in units]
    if all(f is not None for f in factor):
        voxel_size = tuple(float(scale[i] * f) for i, f in zip(order, factor, strict=True))
        origin = tuple(float(translation[i] * f) for i, f in zip(order, factor, strict=True))
    else:  # no or unknown unit: sizes are not known in Angstrom
        voxel_size, origin = None, (0.0, 0.0, 0.0)
    return data, voxel_size, origin, names


class _Squeezed:
    """A (z, y, x) view of an array with extra singleton axes, reading lazily like the array itself."""

    def __init__(self, array, index):
        self._array, self._index = array, index
        self.shape = tuple(n for n, i in zip(array.shape, index, strict=True) if isinstance(i, slice))
        self.dtype = array.dtype
        self.ndim = 3

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        it = iter(key)
        return self._array[tuple(next(it) if isinstance(i, slice) else i for i in self._index)]

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[:, :, :], dtype=dtype)


def ngff_metadata(name, voxel_size, origin) -> dict:
    """OME-NGFF 0.4 `multiscales` attributes for one full-resolution (z, y, x) level in Angstrom."""
    transforms = [{"type": "scale", "scale": [float(v) for v in (voxel_size or (1.0, 1.0, 1.0))]}]
    if origin is not None and any(origin):
        transforms.append({"type": "translation", "translation": [float(o) for o in origin]})
    unit = {"unit": "angstrom"} if voxel_size is not None else {}
    return {
        "multiscales": [
            {
                "version": NGFF_VERSION,
                "name": name,
                "axes": [dict(name=a, type="space", **unit) for a in "zyx"],
                "datasets": [{"path": "0", "coordinateTransformations": transforms}],
            }
        ]
    }


def _chunks(shape, dtype):
    """About 4 MB chunks, thin in z: outputs are written a few slices at a time."""
    z, y, x = shape
    plane = min(y, 512) * min(x, 512) * np.dtype(dtype).itemsize
    return (max(1, min(z, (4 << 20) // plane)), min(y, 512), min(x, 512))


def create_ome_zarr(folder, shape, dtype):
    """An empty OME-Zarr group in `folder` (zarr v2 format) with one (z, y, x) array "0", 4 MB chunks.

    Works with the zarr library 2 (which copick needs) and 3: the same files either way.
    """
    zarr = _zarr()
    options = dict(shape=tuple(shape), chunks=_chunks(shape, dtype), dtype=np.dtype(dtype), fill_value=0)
    if int(zarr.__version__.split(".")[0]) >= 3:
        root = zarr.open_group(str(folder), mode="w", zarr_format=2)
        root.create_array("0", chunk_key_encoding={"name": "v2", "separator": "/"}, **options)
    else:
        root = zarr.open_group(str(folder), mode="w")
        root.create_dataset("0", dimension_separator="/", **options)


def finish_ome_zarr(folder, name, voxel_size, origin=None, class_names=None):
    """Write the OME-NGFF metadata (and annotomo's feature names, for label volumes) of a group in `folder`."""
    zarr = _zarr()
    attrs = ngff_metadata(name, voxel_size, origin)
    if class_names:
        attrs["annotomo"] = {"class_names": list(class_names)}
    zarr.open_group(str(folder), mode="r+").attrs.update(attrs)


def z_chunk(shape, dtype) -> int:
    """Slices per chunk along z of an array `create_ome_zarr` makes (slab writes align to it)."""
    return _chunks(shape, dtype)[0]


def replace_folder(new: Path, path: Path):
    """Move folder `new` to `path`, replacing an existing `path` (kept until the move succeeded)."""
    old = None
    if path.exists():
        old = temporary_sibling(path, ".old", directory=True)
        os.replace(path, old / "x")
    try:
        os.replace(new, path)
    except BaseException:
        if old is not None:
            os.replace(old / "x", path)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
