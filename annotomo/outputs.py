"""What a batch wrote, and what an interrupted batch left.

Outputs are written in stages (`volumes.PartialOutput`): a run that dies leaves a
`.NAME.XXXXXXXX.partial` file or folder, never a file that looks finished; `remove_stale_partials`
clears them. The `Manifest` (annotomo-manifest.json in the output folder) records per tomogram what was
written, with which model and options, how long it took, and errors; a rerun skips tomograms whose
outputs are complete and redoes the rest.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .atomic import atomic_path
from .errors import AnnotomoError

MANIFEST_NAME = "annotomo-manifest.json"


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
    summary: dict = field(default_factory=dict)  # e.g. slice_uncertainty: each slice's mean uncertainty


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
