"""Outputs written in stages, so that several processes (or machines) can fill one file.

A `PartialOutput` is created under a temporary name beside its destination (MRC with its full header,
or an OME-Zarr group with its array), filled by any number of writers in disjoint z slabs (a memory map
in one process; `write_slab` with positioned writes, safe on shared file systems, from workers), and
finalised (header statistics, metadata) and renamed into place only when every slab is written. A run
that dies leaves a `.NAME.XXXXXXXX.partial` file or folder, never a file that looks finished.

The `Manifest` (annotomo-manifest.json in the output folder) records per tomogram what was written, with
which model and options, how long it took, and errors; a rerun skips tomograms whose outputs are
complete and redoes the rest.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mrcfile
import numpy as np

from .atomic import atomic_path, temporary_sibling
from .errors import AnnotomoError
from .omezarr import create_ome_zarr, finish_ome_zarr, is_zarr_path, replace_folder

MRC_HEADER_BYTES = 1024
MANIFEST_NAME = "annotomo-manifest.json"


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
                from .volumes import fill_header, mrc_mode_for

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
                from .volumes import update_statistics_by_slab

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


def remove_stale_partials(path):
    """Delete what an interrupted run left for `path` (`.NAME.XXXXXXXX.partial` files or folders)."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.partial"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                stale.unlink()


def file_digest(path) -> str:
    """SHA-256 of a file (a model file: a few MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_identity(path) -> dict:
    """What says that an input is the same file as before: size and modification time."""
    path = Path(path)
    if path.is_dir():  # OME-Zarr: the newest entry of its top level
        stats = [p.stat() for p in path.iterdir()] or [path.stat()]
        return dict(size=sum(s.st_size for s in stats), mtime_ns=max(s.st_mtime_ns for s in stats))
    stat = path.stat()
    return dict(size=stat.st_size, mtime_ns=stat.st_mtime_ns)


@dataclass
class ManifestEntry:
    """One tomogram of a batch: what was asked, what was written, and how it went."""

    status: str  # "done" or "failed"
    outputs: dict = field(default_factory=dict)
    seconds: float | None = None
    error: str | None = None
    input: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    chunks: int = 1
    finished: str = ""


class Manifest:
    """annotomo-manifest.json in an output folder: one entry per input tomogram, saved after each."""

    def __init__(self, outdir):
        self.path = Path(outdir) / MANIFEST_NAME
        self.entries: dict[str, ManifestEntry] = {}
        if self.path.exists():
            try:
                raw = json.loads(self.path.read_text())
                self.entries = {k: ManifestEntry(**v) for k, v in raw.get("tomograms", {}).items()}
            except (ValueError, TypeError) as exc:
                raise AnnotomoError(f"{self.path}: damaged manifest ({exc}); move it away to start afresh") from None

    @staticmethod
    def key(tomogram) -> str:
        """Entries are keyed by the input's absolute path."""
        return str(Path(tomogram).resolve())

    def complete(self, tomogram, model: dict, options: dict) -> ManifestEntry | None:
        """The entry of `tomogram` when its outputs are complete for this model, options and input; else None."""
        entry = self.entries.get(self.key(tomogram))
        if entry is None or entry.status != "done" or entry.model.get("sha256") != model.get("sha256"):
            return None
        if entry.options != options or entry.input != input_identity(tomogram):
            return None
        if not all(Path(p).exists() for p in entry.outputs.values()):
            return None
        return entry

    def record(self, tomogram, entry: ManifestEntry):
        """Store an entry and save the manifest (atomically)."""
        entry.finished = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        self.entries[self.key(tomogram)] = entry
        with atomic_path(self.path) as tmp:
            tmp.write_text(
                json.dumps(dict(format=1, tomograms={k: asdict(v) for k, v in self.entries.items()}), indent=1)
            )
