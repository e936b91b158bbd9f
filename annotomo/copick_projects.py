"""copick projects (the CryoET Data Portal's layout): tomograms in; segmentations, picks and training pairs.

A copick project is a JSON config over a filesystem (or S3) overlay: runs, each with voxel spacings, each
with tomograms of a type (`wbp`, `denoised`, ...), segmentations and picks by user and session. Every read
and write here goes through the copick library (`pip install ".[copick]"`); annotomo never parses its
folders. Positions are Angstrom, copick's convention: voxel index i (its centre) at i x voxel size.

annotomo's features map to the project's pickable objects by name: a multilabel segmentation stores each
voxel as its object's `label`, picks are stored under the object's name. copick forbids underscores (and
spaces, slashes, ...) in object names, user ids and session ids; annotomo refuses such names instead of
letting copick rename them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import AnnotomoError, InputError

DEFAULT_USER = "annotomo"
DEFAULT_SESSION = "0"  # copick's convention for "made by a tool"
DEFAULT_NAME = "annotomo"
_FORBIDDEN = re.compile(r'[<>:"/\\|?*\x00-\x1F\x7F\s_]')
NOT_ANNOTATED = 255
IN_MEMORY_BYTES = 4 << 30  # tomograms up to this size are read into memory whole for segmenting
COMPLETE_ATTR = "annotomo"  # zarr attribute annotomo sets on a segmentation it finished writing


def check_name(what: str, name: str) -> str:
    """`name` if copick accepts it unchanged as an object name, user id or session id; else AnnotomoError."""
    if not name or _FORBIDDEN.search(name):
        raise AnnotomoError(
            f'{what} {name!r}: copick does not allow underscores, spaces or any of <>:"/\\|?* in names; '
            f"use dashes (e.g. {_FORBIDDEN.sub('-', name).strip('-') or 'annotomo'!r})"
        )
    return name


def _copick():
    try:
        import copick
    except ImportError:
        raise AnnotomoError('copick projects need the copick library: pip install ".[copick]"') from None
    return copick


def open_project(config):
    """The copick root of the project whose config is the JSON file `config` (InputError if unusable)."""
    copick = _copick()
    path = Path(config)
    if not path.is_file():
        raise InputError(path, "copick config not found")
    try:
        return copick.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - copick raises JSON, pydantic and fsspec errors alike
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(path, f"not a usable copick config ({first})") from None


def select_runs(root, runs, config="") -> list:
    """The runs named in `runs` ("all", None, a comma-separated string or a list), in the project's order."""
    available = {r.name: r for r in root.runs}
    if runs in (None, "all", ["all"]):
        if not available:
            raise AnnotomoError(f"{config}: the copick project has no runs")
        return list(available.values())
    names = [n.strip() for n in runs.split(",")] if isinstance(runs, str) else list(runs)
    missing = [n for n in names if n not in available]
    if missing:
        raise AnnotomoError(
            f"{config}: no run {', '.join(missing)} in the copick project "
            f"(runs: {', '.join(sorted(available)) or 'none'})"
        )
    return [available[n] for n in names]


def _voxel_spacing(run, voxel_spacing: float):
    found = [vs for vs in run.voxel_spacings if abs(vs.voxel_size - voxel_spacing) <= 1e-3 * voxel_spacing]
    if not found:
        have = ", ".join(f"{vs.voxel_size:g}" for vs in run.voxel_spacings) or "none"
        raise AnnotomoError(f"run {run.name}: no voxel spacing {voxel_spacing:g} A (it has: {have})")
    return found[0]


@dataclass
class RunTomogram:
    """One run's tomogram of a type at a voxel spacing, read lazily through copick's store."""

    run: object
    voxel_spacing: float
    tomo_type: str
    data: object  # a zarr array (z, y, x), full resolution

    @property
    def name(self) -> str:
        """RUN/SPACING/TYPE, how messages name it."""
        return f"{self.run.name}/{self.voxel_spacing:g}/{self.tomo_type}"

    def voxels(self, in_memory_bytes=IN_MEMORY_BYTES):
        """The voxels for segmenting: in memory up to `in_memory_bytes`, else read a band of z-chunks at a time.

        copick's stores are compressed in large chunks (e.g. 256^3): reading them voxel sample by voxel
        sample, as normalising does, would decompress each chunk many times.
        """
        nbytes = int(np.prod(self.data.shape)) * np.dtype(self.data.dtype).itemsize
        if nbytes <= in_memory_bytes:
            return np.asarray(self.data[:])
        return ChunkBands(self.data)


class ChunkBands:
    """A read-only (z, y, x) view of a chunked array that decompresses one band of z-chunks at a time."""

    def __init__(self, array):
        self._array = array
        self.shape, self.dtype, self.ndim = tuple(array.shape), array.dtype, 3
        self._depth = int(array.chunks[0])
        self._band, self._start = None, -1

    def _slice(self, z: int) -> np.ndarray:
        start = z // self._depth * self._depth
        if start != self._start:
            self._band, self._start = np.asarray(self._array[start : start + self._depth]), start
        return self._band[z - start]

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        zs, rest = key[0], key[1:]
        if isinstance(zs, int | np.integer):
            return self._slice(int(zs))[rest]
        indices = range(self.shape[0])[zs] if isinstance(zs, slice) else list(np.asarray(zs).ravel())
        return np.stack([self._slice(int(z))[rest] for z in indices]) if len(indices) else np.empty((0,))

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[:], dtype=dtype)


def run_tomogram(run, voxel_spacing: float, tomo_type: str) -> RunTomogram:
    """The run's tomogram of `tomo_type` at `voxel_spacing` Angstrom (AnnotomoError naming what is missing)."""
    import zarr

    vs = _voxel_spacing(run, voxel_spacing)
    tomograms = vs.get_tomograms(tomo_type)
    if not tomograms:
        have = ", ".join(sorted({t.tomo_type for t in vs.tomograms})) or "none"
        raise AnnotomoError(f"run {run.name}: no tomogram of type {tomo_type!r} at {voxel_spacing:g} A (types: {have})")
    group = zarr.open(tomograms[0].zarr(), mode="r")
    return RunTomogram(run, vs.voxel_size, tomo_type, group["0"])


def feature_objects(root, class_names) -> dict[str, object]:
    """{feature name: the project's pickable object of that name} for the features the project has."""
    objects = {o.name: o for o in root.pickable_objects}
    return {name: objects[name] for name in class_names if name in objects}


def find_segmentation(run, voxel_spacing, name, user_id, session_id):
    """The run's multilabel segmentation of this name, user and session, or None."""
    found = run.get_segmentations(
        name=name, user_id=user_id, session_id=session_id, voxel_size=voxel_spacing, is_multilabel=True
    )
    return found[0] if found else None


def completed_by_annotomo(segmentation) -> dict | None:
    """What annotomo recorded on a segmentation it finished writing (model, features), or None."""
    import zarr

    try:
        return dict(zarr.open(segmentation.zarr(), mode="r").attrs).get(COMPLETE_ATTR)
    except Exception:  # noqa: BLE001 - an unfinished store may not even be a group
        return None


def write_segmentation(run, voxel_spacing, labels, class_names, objects, name, user_id, session_id, record=None):
    """Write `labels` (annotomo's 0, 1..N, 255) as the run's multilabel segmentation, each feature as its
    object's label (features without an object become 0) and 255 (not annotated) kept.

    The segmentation is deleted again if writing fails, so the project never holds half of one; `record`
    (a dict: what made it) is stored on it once it is complete.
    """
    import zarr

    lut = np.zeros(256, np.uint8)
    lut[NOT_ANNOTATED] = NOT_ANNOTATED
    for index, feature in enumerate(class_names, start=1):
        if feature in objects:
            lut[index] = objects[feature].label
    seg = run.new_segmentation(
        voxel_size=voxel_spacing, name=name, session_id=session_id, is_multilabel=True, user_id=user_id
    )
    try:
        seg.from_numpy(lut[np.asarray(labels, np.uint8)])
        if record is not None:
            zarr.open(seg.zarr(), mode="r+").attrs[COMPLETE_ATTR] = record
    except BaseException:
        seg.delete()
        raise
    return seg


def write_picks(run, object_name, centres_zyx, voxel_spacing, user_id, session_id, overwrite=False):
    """Store particle centres (voxels, z y x) as the run's picks of `object_name`, in Angstrom (x y z)."""
    existing = run.get_picks(object_name=object_name, user_id=user_id, session_id=session_id)
    if existing and not overwrite:
        raise AnnotomoError(
            f"run {run.name}: picks of {object_name} by {user_id}/{session_id} exist; --overwrite replaces them"
        )
    for p in existing:
        p.delete()
    picks = run.new_picks(object_name=object_name, session_id=session_id, user_id=user_id)
    positions = np.asarray(centres_zyx, float).reshape(-1, 3)[:, ::-1] * voxel_spacing
    try:
        picks.from_numpy(positions)
    except BaseException:
        picks.delete()
        raise
    return picks


def parse_source(text: str) -> tuple[str, str | None, str | None]:
    """NAME[:USER[:SESSION]] -> (name, user or None, session or None)."""
    parts = text.split(":")
    if len(parts) > 3 or not parts[0]:
        raise AnnotomoError(f"--from-segmentation {text!r}: expected NAME[:USER[:SESSION]]")
    parts += [None] * (3 - len(parts))
    return parts[0], parts[1] or None, parts[2] or None


def segmentation_labels(root, run, voxel_spacing, source: str):
    """(labels 1..N, feature names) of a run's segmentation NAME[:USER[:SESSION]] at `voxel_spacing`.

    Its voxel values are the project objects' labels (255: not annotated, as annotations saved by annotomo
    keep it); the features are the objects found in it, in the order of their labels.
    """
    name, user, session = parse_source(source)
    found = run.get_segmentations(name=name, user_id=user, session_id=session, voxel_size=voxel_spacing)
    if not found:
        raise AnnotomoError(f"run {run.name}: no segmentation {source} at {voxel_spacing:g} A")
    values = np.asarray(found[0].numpy())
    by_label = {o.label: o.name for o in root.pickable_objects}
    present = [int(v) for v in np.unique(values) if v not in (0, NOT_ANNOTATED)]
    unknown = [v for v in present if v not in by_label]
    if unknown:
        raise AnnotomoError(
            f"run {run.name}: segmentation {source} holds label(s) {unknown} no object of the project has"
        )
    lut = np.zeros(max(int(values.max(initial=0)), NOT_ANNOTATED) + 1, np.uint8)
    lut[NOT_ANNOTATED] = NOT_ANNOTATED
    for index, value in enumerate(present, start=1):
        lut[value] = index
    return lut[values], [by_label[v] for v in present]


def _ball(centre, radius, shape):
    """(box, mask) of the voxels within `radius` of `centre` (z y x voxels), clipped to `shape`; None outside."""
    reach = int(np.ceil(radius)) + 1
    lo = np.maximum(np.floor(centre).astype(int) - reach, 0)
    hi = np.minimum(np.floor(centre).astype(int) + reach + 1, shape)
    if np.any(hi <= lo):
        return None
    axes = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
    distance = np.sqrt(sum((a - c) ** 2 for a, c in zip(axes, centre, strict=True)))
    return tuple(slice(a, b) for a, b in zip(lo, hi, strict=True)), distance <= radius


def picks_labels(root, run, voxel_spacing, shape, object_names, user=None, session=None):
    """(labels, picks used): sparse training labels from picks. Each pick is a sphere of its object's radius
    (feature 1.. in the order of `object_names`) in a shell out to twice the radius of background (0); every
    other voxel is not annotated (255).
    """
    objects = {o.name: o for o in root.pickable_objects}
    spheres = []
    for index, name in enumerate(object_names, start=1):
        obj = objects.get(name)
        if obj is None:
            raise AnnotomoError(f"--from-picks {name}: not an object of the project ({', '.join(objects)})")
        if not obj.radius:
            raise AnnotomoError(f"--from-picks {name}: the object has no radius in the project's config")
        for picks in run.get_picks(object_name=name, user_id=user, session_id=session):
            points, _ = picks.numpy()
            for x, y, z in np.asarray(points, float).reshape(-1, 3) / voxel_spacing:
                spheres.append((index, np.array([z, y, x]), obj.radius / voxel_spacing))
    labels = np.full(shape, 255, np.uint8)
    for scale, paint in ((2.0, False), (1.0, True)):  # shells first, then the spheres over them
        for index, centre, radius in spheres:
            ball = _ball(centre, scale * radius, shape)
            if ball is not None:
                box, mask = ball
                labels[box][mask] = index if paint else 0
    return labels, len(spheres)


@dataclass
class RunContents:
    """What a viewer shows of a run: its tomogram, segmentations and picks at one voxel spacing."""

    tomogram: np.ndarray  # float32 (z, y, x)
    voxel_spacing: float
    segmentations: list  # (layer name, labels 1..N with 255 kept, feature names)
    picks: list  # (layer name, (n, 3) z y x voxel centres)


def read_run(config, run_name: str, voxel_spacing: float, tomo_type: str) -> RunContents:
    """A run's tomogram of `tomo_type` with every segmentation and every pick set at `voxel_spacing`."""
    root = open_project(config)
    (run,) = select_runs(root, [run_name], config)
    tomogram = run_tomogram(run, voxel_spacing, tomo_type)
    segmentations = []
    for seg in run.get_segmentations(voxel_size=tomogram.voxel_spacing, is_multilabel=True):
        source = f"{seg.name}:{seg.user_id}:{seg.session_id}"
        try:
            labels, names = segmentation_labels(root, run, tomogram.voxel_spacing, source)
        except AnnotomoError:
            continue  # labels the project's objects do not name: not an annotation of this project
        segmentations.append((f"{run.name} {source}", labels, names))
    picks = []
    for p in run.picks:
        points, _ = p.numpy()
        centres = np.asarray(points, float).reshape(-1, 3)[:, ::-1] / tomogram.voxel_spacing
        picks.append((f"{run.name} {p.pickable_object_name} {p.user_id}:{p.session_id}", centres))
    return RunContents(np.asarray(tomogram.voxels(), np.float32), tomogram.voxel_spacing, segmentations, picks)


def save_annotation(
    config, run_name, voxel_spacing, labels, class_names, name, user_id, session_id, overwrite=False
) -> str:
    """Store training labels (0, 1..N = `class_names`, 255 not annotated) as the run's multilabel segmentation,
    each feature as its object's label and 255 kept; returns NAME:USER:SESSION.
    """
    for what, value in (("segmentation name", name), ("user id", user_id), ("session id", session_id)):
        check_name(what, value)
    root = open_project(config)
    (run,) = select_runs(root, [run_name], config)
    objects = feature_objects(root, class_names)
    missing = [f for f in class_names if f not in objects]
    if missing:
        raise AnnotomoError(f"{config}: the project has no object {', '.join(missing)}; add it to the config to save")
    spacing = _voxel_spacing(run, voxel_spacing).voxel_size
    existing = find_segmentation(run, spacing, name, user_id, session_id)
    if existing is not None and not overwrite:
        raise AnnotomoError(
            f"run {run.name}: segmentation {name}:{user_id}:{session_id} exists; overwrite to replace it"
        )
    if existing is not None:
        existing.delete()
    write_segmentation(run, spacing, labels, class_names, objects, name, user_id, session_id)
    return f"{name}:{user_id}:{session_id}"
