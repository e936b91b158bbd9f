"""Reading and writing tomograms and label volumes (MRC), with voxel size and origin.

Arrays are (z, y, x); voxel sizes are (z, y, x) in Angstrom. Uncompressed MRC files are memory-mapped
read-only, so a tomogram larger than RAM can be streamed slice by slice; gzip/bzip2 MRC files are read
into memory. Outputs are written under a temporary name in the destination folder and renamed into
place only when complete, so an interrupted run never leaves a file that looks finished.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np

from .atomic import temporary_sibling
from .errors import AnnotomoError, InputError
from .omezarr import create_ome_zarr, finish_ome_zarr, is_zarr_path, read_ome_zarr, replace_folder

MRC_SUFFIXES = (".mrc", ".rec", ".st", ".map", ".mrcs", ".ali", ".preali")
_IMOD_STAMP = 1146047817  # b"IMOD" little-endian; marks headers whose imodFlags are meaningful
_IMOD_STAMP_OFFSET = 40  # offsets of imodStamp / imodFlags inside the header's extra2 field
_MODE_BYTES = {0: 1, 1: 2, 2: 4, 6: 2, 12: 2}  # the MRC modes annotomo reads, and bytes per voxel
MRC_HEADER_BYTES = 1024


@dataclass
class Volume:
    """A tomogram or label volume: data (possibly a read-only memory map) and its geometry."""

    data: np.ndarray
    voxel_size: tuple[float, float, float] | None  # (z, y, x) Angstrom; None when the header has none
    origin: tuple[float, float, float]  # (z, y, x) Angstrom, as stored in the header
    path: Path
    mode: int | None = None
    _handle: object = None
    class_names: list[str] | None = None  # feature names stored in a label file (label 1 first), if any

    @property
    def shape(self) -> tuple[int, int, int]:
        """(z, y, x) voxels."""
        return tuple(self.data.shape)

    @property
    def pixel_size(self) -> float | None:
        """The in-plane (x) voxel size in Angstrom, or None when unknown."""
        return None if self.voxel_size is None else self.voxel_size[2]

    def close(self):
        """Release the file (memory map or handle)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _is_compressed(path: Path) -> bool:
    with open(path, "rb") as f:
        magic = f.read(3)
    return magic[:2] == b"\x1f\x8b" or magic == b"BZh"


def _imod_unsigned_bytes(header) -> bool:
    """True when IMOD's header flags say mode-0 bytes are unsigned (IMOD's default for mode 0)."""
    extra = header.extra2.tobytes()
    stamp = int.from_bytes(extra[_IMOD_STAMP_OFFSET : _IMOD_STAMP_OFFSET + 4], "little", signed=True)
    flags = int.from_bytes(extra[_IMOD_STAMP_OFFSET + 4 : _IMOD_STAMP_OFFSET + 8], "little", signed=True)
    byteswapped = stamp == int.from_bytes(_IMOD_STAMP.to_bytes(4, "little"), "big")
    return (stamp == _IMOD_STAMP or byteswapped) and not (flags & 1)


def _voxel_size_from(mrc) -> tuple[float, float, float] | None:
    vs = mrc.voxel_size
    zyx = (float(vs.z), float(vs.y), float(vs.x))
    x = zyx[2]
    if not np.isfinite(x) or x <= 0:
        return None
    # 2D files and some writers leave z at 0 or infinity: take the in-plane size for z then.
    return tuple(v if np.isfinite(v) and v > 0 else x for v in zyx)


HDF_SUFFIXES = (".hdf", ".h5", ".hdf5")
TIFF_SUFFIXES = (".tif", ".tiff")


def _open_hdf(path: Path) -> Volume:
    """EMAN2 HDF (/MDF/images/0/image with EMAN.apix_* attributes) or an HDF5 file with one 3D dataset.

    The dataset stays on disk and is read slab by slab (h5py slicing), like a memory map.
    """
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(path, f"cannot be read as HDF5 ({exc})") from None
    if "MDF/images/0/image" in handle:
        dataset, attrs = handle["MDF/images/0/image"], handle["MDF/images/0"].attrs
        apix = [attrs.get(f"EMAN.apix_{a}") for a in "zyx"]
        voxel_size = tuple(float(np.ravel(v)[0]) for v in apix) if all(v is not None for v in apix) else None
    else:
        found = []
        handle.visititems(
            lambda name, obj: found.append(obj) if isinstance(obj, h5py.Dataset) and obj.ndim == 3 else None
        )
        if len(found) != 1:
            handle.close()
            raise InputError(path, f"expected EMAN2's /MDF/images/0/image or one 3D dataset, found {len(found)}")
        dataset, voxel_size = found[0], None
    return Volume(data=dataset, voxel_size=voxel_size, origin=(0.0, 0.0, 0.0), path=path, _handle=handle)


def _open_tiff(path: Path) -> Volume:
    """A multi-page TIFF stack, pages = z slices (read into memory). ImageJ spacing is used when its unit
    is Angstrom, nm or micron.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            data = tif.asarray()
            voxel_size = _tiff_voxel_size(tif)
    except Exception as exc:  # noqa: BLE001 - tifffile raises several kinds for damaged files
        raise InputError(path, f"cannot be read as TIFF ({exc})") from None
    return Volume(data=data, voxel_size=voxel_size, origin=(0.0, 0.0, 0.0), path=path)


def _tiff_voxel_size(tif) -> tuple[float, float, float] | None:
    """(z, y, x) Angstrom from an open TiffFile's ImageJ metadata and resolution tag (no pixels read)."""
    ij = tif.imagej_metadata or {}
    xres = tif.pages[0].tags.get("XResolution")
    scale = {"angstrom": 1.0, "a": 1.0, "nm": 10.0, "nanometer": 10.0, "micron": 1e4, "um": 1e4, "\u00b5m": 1e4}
    unit = str(ij.get("unit", "")).lower()
    if unit not in scale or xres is None:
        return None
    num, den = xres.value
    if not num:
        return None
    xy = den / num * scale[unit]
    return (float(ij.get("spacing", den / num)) * scale[unit], xy, xy)


def read_pixel_size(path) -> float | None:
    """A volume file's in-plane pixel size in Angstrom from its header alone, or None when it has none.

    Cheaper than `open_volume` where that reads the whole file (gzip/bzip2 MRC, TIFF). A file whose
    header cannot be read this way is opened with `open_volume`, which names the problem (InputError).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_file() and suffix not in HDF_SUFFIXES:  # HDF5 and OME-Zarr open lazily anyway
        try:
            if suffix in TIFF_SUFFIXES:
                import tifffile

                with tifffile.TiffFile(path) as tif:
                    size = _tiff_voxel_size(tif)
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # open_volume reports a header's problems when the data is read
                    with mrcfile.open(path, mode="r", permissive=True, header_only=True) as mrc:
                        size = _voxel_size_from(mrc)
            return None if size is None else size[2]
        except Exception:  # noqa: BLE001, S110 - open_volume below says what is wrong with the file
            pass
    with open_volume(path, min_slices=2) as vol:
        return vol.pixel_size


def open_volume(path, min_slices: int = 1, pixel_size: float | None = None) -> Volume:
    """Open a volume read-only; raise InputError naming the file if it cannot be used.

    MRC family (.mrc .rec .st .map ..., also gzip/bzip2-compressed), EMAN2 HDF (.hdf/.h5), multi-page
    TIFF (.tif/.tiff) and OME-Zarr (NAME.zarr / NAME.ome.zarr folders).
    `min_slices` rejects 2D images where a 3D tomogram is required. `pixel_size` (Angstrom)
    overrides the header's voxel size (for files whose header is missing or wrong).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if is_zarr_path(path):
        data, voxel_size, origin, names = read_ome_zarr(path)
        vol = Volume(data=data, voxel_size=voxel_size, origin=origin, path=path, class_names=names)
        return _checked(vol, min_slices, pixel_size)
    if path.is_dir():
        raise InputError(path, "is a directory, expected an MRC file")
    suffix = path.suffix.lower()
    if suffix in HDF_SUFFIXES or suffix in TIFF_SUFFIXES:
        vol = _open_hdf(path) if suffix in HDF_SUFFIXES else _open_tiff(path)
        return _checked(vol, min_slices, pixel_size)
    try:
        compressed = _is_compressed(path)
        if not compressed and path.stat().st_size < 1024:
            raise InputError(path, f"not an MRC file (only {path.stat().st_size} bytes, shorter than an MRC header)")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if compressed:
                mrc = mrcfile.open(path, mode="r", permissive=True)
            else:
                mrc = mrcfile.mmap(path, mode="r", permissive=True)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(path, f"cannot be read as MRC ({exc})") from None
    # mrcfile reports what is wrong with a file as warnings; deprecation notices from the libraries it uses
    # (NumPy 2.5 warns on every file mrcfile 1.5 opens) say nothing about the file and pass on unchanged.
    library = [
        w for w in caught if issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning))
    ]
    for w in library:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    problems = [str(w.message) for w in caught if w not in library]
    if mrc.data is None:
        problem = _why_unreadable(mrc, path, problems)
        mrc.close()
        raise InputError(path, problem)
    mode = int(mrc.header.mode)
    if mode not in _MODE_BYTES:
        mrc.close()
        raise InputError(path, f"MRC mode {mode} is not supported (use mode 0, 1, 2, 6 or 12)")
    for p in problems:
        warnings.warn(f"{path}: {p}", stacklevel=2)
    data = mrc.data
    if mode == 0 and _imod_unsigned_bytes(mrc.header):
        data = data.view(np.uint8)
    origin = mrc.header.origin
    vol = Volume(
        data=data,
        voxel_size=_voxel_size_from(mrc),
        origin=(float(origin.z), float(origin.y), float(origin.x)),
        path=path,
        mode=mode,
        _handle=mrc,
        class_names=class_names_from_labels(mrc.get_labels()),
    )
    if data.size == 0:
        shape = tuple(int(mrc.header[k]) for k in ("nz", "ny", "nx"))
        mrc.close()
        raise InputError(path, f"empty volume (the header gives {shape[0]} x {shape[1]} x {shape[2]} voxels, z, y, x)")
    return _checked(vol, min_slices, pixel_size)


def _checked(vol: Volume, min_slices: int, pixel_size) -> Volume:
    """Shape checks common to every format; a 2D image becomes a 1-slice volume."""
    data = vol.data
    if data.ndim == 2:
        data = data[np.newaxis]
    if data.ndim != 3:
        vol.close()
        raise InputError(vol.path, f"expected a 3D volume, found {data.ndim} dimensions")
    if data.shape[0] < min_slices:
        vol.close()
        raise InputError(
            vol.path,
            f"is a {data.shape[0]}-slice volume of {data.shape[1]} x {data.shape[2]} pixels; "
            f"a tomogram needs at least {min_slices} slices",
        )
    vol.data = data
    if pixel_size is not None:
        vol.voxel_size = (float(pixel_size),) * 3
    return vol


def _why_unreadable(mrc, path, problems) -> str:
    """A one-line reason why mrcfile could not map the data block."""
    h = mrc.header
    if any("Map ID string" in p for p in problems) and not _looks_like_mrc(mrc):
        return "not an MRC file (no MAP identifier and an implausible header)"
    mode = int(h.mode)
    if mode not in _MODE_BYTES:
        return f"not a readable MRC file (unknown data mode {mode})"
    dims = [int(h.nx), int(h.ny), int(h.nz)]
    expected = 1024 + int(h.nsymbt) + _MODE_BYTES[mode] * int(np.prod(dims, dtype=np.int64))
    actual = path.stat().st_size
    if actual < expected:
        return (
            f"truncated MRC file: the header describes {dims[2]} x {dims[1]} x {dims[0]} voxels (z, y, x) of "
            f"mode {mode}, {expected} bytes, but the file has {actual} bytes"
        )
    return "not a readable MRC file (" + "; ".join(problems[:2] or ["no readable data block"]) + ")"


def _looks_like_mrc(mrc) -> bool:
    h = mrc.header
    dims = (int(h.nx), int(h.ny), int(h.nz))
    return all(0 < d < 100_000 for d in dims)


def read_labels(path, expected_shape=None) -> Volume:
    """Open a label volume and return it with uint8 data (0 background, 1..N features, 255 unlabelled).

    Integer or integral-valued float labels in 0..255 are accepted; mode-0 files are read as
    unsigned bytes, so IMOD masks and files written by annotomo read the same.
    """
    vol = open_volume(path)
    data = np.asarray(vol.data)
    if data.dtype == np.int8:
        data = data.view(np.uint8)
    elif data.dtype != np.uint8:
        if not np.all(np.isfinite(data)):
            vol.close()
            raise InputError(path, "labels contain NaN or infinite values")
        lo, hi = float(data.min()), float(data.max())
        if lo < 0 or hi > 255 or not np.array_equal(data, np.round(data)):
            vol.close()
            raise InputError(path, f"labels must be integers 0..255, found values in [{lo:g}, {hi:g}]")
        data = data.astype(np.uint8)
    if expected_shape is not None and tuple(data.shape) != tuple(expected_shape):
        vol.close()
        raise InputError(
            path, f"labels have shape {tuple(data.shape)} (z, y, x) but the tomogram has {tuple(expected_shape)}"
        )
    vol.data = data
    return vol


def _set_imod_unsigned(mrc):
    """Stamp the header so IMOD reads mode-0 bytes as unsigned (0..255)."""
    extra = bytearray(mrc.header.extra2.tobytes())
    extra[_IMOD_STAMP_OFFSET : _IMOD_STAMP_OFFSET + 4] = _IMOD_STAMP.to_bytes(4, "little")
    extra[_IMOD_STAMP_OFFSET + 4 : _IMOD_STAMP_OFFSET + 8] = (0).to_bytes(4, "little")
    mrc.header.extra2 = bytes(extra)


def check_output_path(path, inputs=(), overwrite: bool = False) -> Path:
    """Refuse an output that is an input, that exists (without overwrite) or whose folder is unusable.

    Raises:
        InputError: naming the path and the problem.
    """
    path = Path(path)
    for inp in inputs:
        if path.resolve() == Path(inp).resolve():
            raise InputError(path, "output path is the same as an input; choose another output")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.exists():
        existing = next((p for p in [folder, *folder.parents] if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise InputError(existing, "is a file, not a folder: cannot write an output under it")
        raise InputError(folder, "output folder does not exist")
    if not folder.is_dir():
        raise InputError(folder, "is a file, not a folder: cannot write an output under it")
    if path.is_dir() and not is_zarr_path(path):
        raise InputError(path, "output path is an existing folder")
    if path.exists() and not overwrite:
        raise InputError(path, "output exists; use --overwrite to replace it")
    if not os.access(folder, os.W_OK):
        raise InputError(folder, "output folder is not writable")
    return path


def mrc_mode_for(dtype) -> int:
    """The MRC mode that stores `dtype` (0 uint8/int8, 1 int16, 2 float32, 6 uint16, 12 float16)."""
    dtype = np.dtype(dtype)
    if dtype in (np.uint8, np.int8):
        return 0
    if dtype == np.int16:
        return 1
    if dtype == np.float32:
        return 2
    if dtype == np.uint16:
        return 6
    if dtype == np.float16:
        return 12
    raise ValueError(f"cannot write dtype {dtype} to MRC")


_CLASSES_RECORD = "annotomo-classes "  # MRC header label records holding feature names, comma-separated
_LABELS_NOTE = "annotomo labels: 0 background, 1..N features (annotomo-classes), 255 unannotated"


def class_name_records(class_names) -> list[str]:
    """MRC header label records (80 characters at most, 9 at most) holding the feature names, label 1 first.

    Raises:
        ValueError: the names do not fit in the header's 9 free records.
    """
    records, current = [], []
    room = 80 - len(_CLASSES_RECORD)
    for name in class_names:
        if len(name) > room:
            raise ValueError(f"feature name {name!r} is longer than {room} characters")
        if current and len(",".join([*current, name])) > room:
            records.append(_CLASSES_RECORD + ",".join(current))
            current = []
        current.append(name)
    if current:
        records.append(_CLASSES_RECORD + ",".join(current))
    if len(records) > 9:
        raise ValueError(f"{len(class_names)} feature names do not fit in an MRC header's label records")
    return records


def class_names_from_labels(labels) -> list[str] | None:
    """The feature names in MRC header label records written by class_name_records (None when absent)."""
    names = []
    for record in labels:
        if record.startswith(_CLASSES_RECORD):
            names += [n for n in record[len(_CLASSES_RECORD) :].strip().split(",") if n]
    return names or None


def read_class_names(path) -> list[str] | None:
    """The feature names stored in a label file (MRC header labels or OME-Zarr attributes), or None."""
    with open_volume(path) as vol:
        return vol.class_names


def fill_header(mrc, voxel_size, origin, labels_unsigned: bool, class_names=None):
    """Voxel size, origin, IMOD's unsigned-bytes flag and the feature names, in an open MRC's header."""
    if voxel_size is not None:
        z, y, x = voxel_size
        mrc.voxel_size = (x, y, z)
    if origin is not None:
        oz, oy, ox = origin
        mrc.header.origin = (ox, oy, oz)
    if labels_unsigned:
        _set_imod_unsigned(mrc)
    if class_names:
        try:
            records = class_name_records(class_names)
        except ValueError as exc:
            warnings.warn(f"feature names not stored in the file: {exc}", stacklevel=3)
            return
        for record in [_LABELS_NOTE, *records]:
            mrc.add_label(record)


# ---- writing in stages ----
# A `PartialOutput` is created under a temporary name beside its destination (MRC with its full header,
# or an OME-Zarr group with its array), filled by any number of writers in disjoint z slabs (a memory
# map in one process; `write_slab` with positioned writes, safe on shared file systems, from workers),
# and finalised (header statistics, metadata) and renamed into place only when every slab is written.


@dataclass
class PartialOutput:
    """One output volume being written: destination, geometry, and the temporary file being filled."""

    path: Path
    shape: tuple
    dtype: str
    voxel_size: tuple | None = None
    origin: tuple | None = None
    class_names: list | None = None
    temporary: Path | None = None

    def __post_init__(self):
        self.path = Path(self.path)
        self.shape = tuple(int(n) for n in self.shape)
        self.dtype = np.dtype(self.dtype).str

    @property
    def is_zarr(self) -> bool:
        """Written as OME-Zarr (NAME.ome.zarr), else MRC."""
        return is_zarr_path(self.path)

    def create(self) -> PartialOutput:
        """Make the temporary file (MRC header + space for the data) or OME-Zarr group; returns self.

        Raises:
            AnnotomoError: the output cannot be created (the message names it).
        """
        self.temporary = temporary_sibling(self.path, directory=self.is_zarr)
        try:
            if self.is_zarr:
                create_ome_zarr(self.temporary, self.shape, self.dtype)
            else:
                mode = mrc_mode_for(self.dtype)
                with mrcfile.new_mmap(self.temporary, shape=self.shape, mrc_mode=mode, overwrite=True) as mrc:
                    fill_header(mrc, self.voxel_size, self.origin, np.dtype(self.dtype) == np.uint8, self.class_names)
        except OSError as exc:
            self.discard()
            raise AnnotomoError(f"{self.path}: cannot write output ({exc.strerror or exc})") from None
        return self

    @contextlib.contextmanager
    def writable(self):
        """The temporary volume as a writable (z, y, x) array (a memory map, or the zarr array)."""
        if self.is_zarr:
            import zarr

            yield zarr.open_array(str(self.temporary / "0"), mode="r+")
            return
        try:
            mrc = mrcfile.mmap(self.temporary, mode="r+")
        except OSError as exc:
            raise AnnotomoError(f"{self.path}: cannot write output ({exc.strerror or exc})") from None
        try:
            yield mrc.data.view(np.uint8) if np.dtype(self.dtype) == np.uint8 else mrc.data
            mrc.flush()
        except OSError as exc:
            raise AnnotomoError(f"{self.path}: cannot write output ({exc.strerror or exc})") from None
        finally:
            mrc.close()

    def write_slab(self, z0: int, data: np.ndarray):
        """Write slices z0..z0+len(data)-1 in place (positioned writes of whole slices; zarr: its chunks)."""
        data = np.ascontiguousarray(data, dtype=np.dtype(self.dtype))
        if self.is_zarr:
            with self.writable() as array:
                array[z0 : z0 + len(data)] = data
            return
        plane = int(np.prod(self.shape[1:])) * data.dtype.itemsize
        try:
            fd = os.open(self.temporary, os.O_WRONLY)
            try:
                view, offset = memoryview(data).cast("B"), MRC_HEADER_BYTES + z0 * plane
                while view:
                    written = os.pwrite(fd, view, offset)
                    view, offset = view[written:], offset + written
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise AnnotomoError(f"{self.path}: cannot write output ({exc.strerror or exc})") from None

    def finalize(self) -> Path:
        """Complete the header (statistics; OME-Zarr metadata) and rename into place; returns the path."""
        try:
            if self.is_zarr:
                finish_ome_zarr(self.temporary, self.path.name, self.voxel_size, self.origin, self.class_names)
                replace_folder(self.temporary, self.path)
            else:
                with mrcfile.mmap(self.temporary, mode="r+") as mrc:
                    data = mrc.data.view(np.uint8) if np.dtype(self.dtype) == np.uint8 else mrc.data
                    update_statistics_by_slab(mrc, data)
                os.replace(self.temporary, self.path)
        except OSError as exc:
            self.discard()
            raise AnnotomoError(f"{self.path}: cannot write output ({exc.strerror or exc})") from None
        self.temporary = None
        return self.path

    def renamed_into_place(self) -> bool:
        """Whether `finalize` renamed this output's temporary file into place: a copy of this object (as a
        cluster's task has) still names the temporary file, which no longer exists, and the output does.
        """
        return self.temporary is not None and not self.temporary.exists() and self.path.exists()

    def discard(self):
        """Remove the temporary file or folder (nothing appears under the final name)."""
        if self.temporary is not None:
            if self.temporary.is_dir():
                shutil.rmtree(self.temporary, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    self.temporary.unlink()
            self.temporary = None


@contextlib.contextmanager
def volume_writer(path, shape, dtype, voxel_size, origin=None, class_names=None):
    """Stream a volume to `path`: yields a writable (z, y, x) memory map of `dtype`.

    The file appears under its final name only after the block completes; statistics in the header
    (min, max, mean, rms) are computed at the end, slab by slab, so memory stays bounded. A path ending in
    .zarr (NAME.ome.zarr) is written as OME-Zarr instead, the same way. `class_names` (label volumes)
    are stored in the MRC header's label records (or the OME-Zarr attributes), so that readers of the
    labels need not be told the feature names.
    """
    output = PartialOutput(path, shape, dtype, voxel_size, origin, class_names).create()
    try:
        with output.writable() as data:
            yield data
        output.finalize()
    except BaseException:
        output.discard()
        raise


def release_pages(array, z0: int, z1: int, flush: bool = False):
    """Let the kernel drop the memory-mapped pages of slices z0..z1-1 of `array` from this process.

    Pages of a memory map that were read (or written) stay resident and count in the process's memory
    until unmapped, so streaming a tomogram larger than RAM through a map would look like loading it all.
    After a slab is done, its pages are flushed (for outputs) and released; reading them again simply
    faults them back in from the file. Does nothing for arrays that are not memory maps.
    """
    mm = getattr(array, "_mmap", None)
    if mm is None or z1 <= z0 or array.ndim != 3 or not array.flags.c_contiguous:
        return
    page = mmap.PAGESIZE
    base = array.offset % mmap.ALLOCATIONGRANULARITY  # where element 0 lies inside numpy's mapping
    start = base + z0 * array.strides[0]
    end = base + z1 * array.strides[0]
    start -= start % page
    end = min(-(-end // page) * page, len(mm))
    if end <= start:
        return
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if flush:
            mm.flush(start, end - start)
        mm.madvise(mmap.MADV_DONTNEED, start, end - start)


def update_statistics_by_slab(mrc, data):
    """Header min/max/mean/rms, one slice at a time (a float64 copy of one slice, never of the volume)."""
    lo, hi, total, total_sq, n = np.inf, -np.inf, 0.0, 0.0, 0
    for z in range(data.shape[0]):
        plane = np.asarray(data[z], dtype=np.float64)
        lo, hi = min(lo, plane.min()), max(hi, plane.max())
        total += plane.sum()
        total_sq += float(np.vdot(plane, plane))
        n += plane.size
        release_pages(data, z, z + 1)
    mean = total / n
    mrc.header.dmin, mrc.header.dmax, mrc.header.dmean = lo, hi, mean
    mrc.header.rms = np.sqrt(max(total_sq / n - mean * mean, 0.0))


def write_volume(path, data: np.ndarray, voxel_size, origin=None, class_names=None):
    """Write a whole array to an MRC (or OME-Zarr) file atomically (labels as unsigned bytes, images as float32).

    `class_names`: for label volumes, the feature names (label 1 first) to store in the file.
    """
    data = np.asarray(data)
    if data.dtype not in (np.uint8, np.int8, np.int16, np.uint16, np.float16, np.float32):
        data = data.astype(np.float32)
    with volume_writer(path, data.shape, data.dtype, voxel_size, origin, class_names) as out:
        out[...] = data
