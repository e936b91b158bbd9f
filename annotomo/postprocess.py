"""After segmentation: particle picking from a label volume, and scoring picks against true centres.

Picking: the voxels of one class are split into particles by connected components; components that
hold several touching particles are split at the peaks of their distance transform (each peak farther
than `min_distance` from the others seeds one particle, and voxels go to the nearest seed). Particles
outside the size range are dropped. Centres are written as a RELION STAR file (rlnCoordinateX/Y/Z in
voxels, plus Angstrom columns; written and read with the `starfile` library) and CSV.
Cleanup: small connected components of chosen classes set to background.
Label width: how wide a class's labels are drawn is a convention (a membrane labelled as its 4-5 nm
bilayer, or a few voxels wide as many annotators draw it), not a property of the tomogram, so a model
learns its training labels' width. `label_width` measures it (volume over half the surface, the surface
from the Steiner formula: the volume gained dilating by 1 and by 3 voxels); `redraw_label_widths` moves
each label's boundary by half the difference to a stated width, with distance transforms, in z slabs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import InputError


@dataclass
class Picks:
    """Particle centres (z, y, x voxels), their sizes, and the pixel size they were picked at."""

    centres: np.ndarray  # (n, 3) (z, y, x) voxels
    sizes: np.ndarray | None  # voxels per particle (None for true centres from the simulator)
    pixel_size: float | None


def pick_particles(
    labels,
    class_index: int,
    min_voxels: int = 20,
    max_voxels: int | None = None,
    min_distance: float = 4.0,
    pixel_size: float | None = None,
) -> Picks:
    """Centres of the particles of class `class_index` in a (z, y, x) label volume."""
    from scipy import ndimage
    from scipy.spatial import cKDTree

    mask = np.asarray(labels) == class_index
    components, n = ndimage.label(mask)
    centres, sizes = [], []
    if n == 0:
        return Picks(np.zeros((0, 3)), np.zeros(0, int), pixel_size)
    distance = ndimage.distance_transform_edt(mask)
    peaks = (distance == ndimage.maximum_filter(distance, size=3)) & (distance >= max(1.0, min_distance / 2))
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        comp = components[box] == index
        seeds = _separated(np.argwhere(peaks[box] & comp), distance[box], min_distance)
        if len(seeds) <= 1:
            parts = [comp]
        else:  # several touching particles: each voxel to its nearest seed
            voxels = np.argwhere(comp)
            owner = cKDTree(seeds).query(voxels)[1]
            parts = []
            for k in range(len(seeds)):
                part = np.zeros_like(comp)
                part[tuple(voxels[owner == k].T)] = True
                parts.append(part)
        offset = np.array([s.start for s in box])
        for part in parts:
            size = int(part.sum())
            if size < min_voxels or (max_voxels and size > max_voxels):
                continue
            centres.append(np.argwhere(part).mean(axis=0) + offset)
            sizes.append(size)
    return Picks(np.array(centres).reshape(-1, 3), np.array(sizes, dtype=int), pixel_size)


def _separated(candidates, distance, min_distance):
    """Greedy non-maximum suppression: keep the deepest peaks at least `min_distance` apart."""
    if len(candidates) == 0:
        return candidates
    order = np.argsort(-distance[tuple(candidates.T)])
    kept = []
    for c in candidates[order]:
        if all(np.linalg.norm(c - k) >= min_distance for k in kept):
            kept.append(c)
    return np.array(kept)


def picks_table(picks: Picks):
    """The picks as a table: RELION's rlnCoordinateX/Y/Z (voxels) plus Angstrom and size columns."""
    import pandas as pd

    px = picks.pixel_size or 1.0
    z, y, x = (picks.centres[:, i] for i in range(3))
    table = pd.DataFrame(
        {
            "rlnCoordinateX": x,
            "rlnCoordinateY": y,
            "rlnCoordinateZ": z,
            "annotomoCoordinateXAngst": x * px,
            "annotomoCoordinateYAngst": y * px,
            "annotomoCoordinateZAngst": z * px,
        }
    )
    if picks.sizes is not None:
        table["annotomoVoxels"] = np.asarray(picks.sizes, dtype=int)
    return table


_CSV_NAMES = {
    "rlnCoordinateX": "x_voxel",
    "rlnCoordinateY": "y_voxel",
    "rlnCoordinateZ": "z_voxel",
    "annotomoCoordinateXAngst": "x_angstrom",
    "annotomoCoordinateYAngst": "y_angstrom",
    "annotomoCoordinateZAngst": "z_angstrom",
    "annotomoVoxels": "voxels",
}


def write_picks(picks: Picks, star_path=None, csv_path=None):
    """Write centres as a RELION STAR file (starfile; block `particles`) and/or CSV, atomically."""
    import starfile

    table = picks_table(picks)
    if star_path:
        with atomic_path(star_path) as tmp:
            starfile.write({"particles": table}, tmp, float_format="%.2f")
    if csv_path:
        with atomic_path(csv_path) as tmp:
            table.rename(columns=_CSV_NAMES).to_csv(tmp, index=False, float_format="%.2f")


def read_centres(path) -> np.ndarray:
    """(z, y, x) voxel centres from a STAR file (rlnCoordinateX/Y/Z, RELION 4 / Warp / annotomo) or a CSV
    with x_voxel, y_voxel, z_voxel columns (annotomo's or the simulator's). Raises InputError otherwise.
    """
    import pandas as pd

    path = Path(path)
    try:
        if path.suffix.lower() == ".star":
            import starfile

            blocks = starfile.read(path, always_dict=True)
            tables = [b for b in blocks.values() if isinstance(b, pd.DataFrame)]
            columns = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
        else:
            tables = [pd.read_csv(path)]
            columns = ("x_voxel", "y_voxel", "z_voxel")
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except Exception as exc:  # noqa: BLE001 - pandas/starfile raise many kinds for malformed text
        kind = "STAR" if path.suffix.lower() == ".star" else "CSV"
        raise InputError(path, f"cannot be read as {kind} ({exc})") from None
    for table in tables:
        if all(c in table.columns for c in columns):
            xyz = table[list(columns)].to_numpy(dtype=float)
            return xyz[:, ::-1].reshape(-1, 3).copy()
    found = sorted({str(c) for t in tables for c in t.columns})
    raise InputError(path, f"no {', '.join(columns)} columns (found: {', '.join(found[:8]) or 'none'})")


def remove_small_components(labels, min_voxels: dict[int, int]) -> dict[int, int]:
    """Set connected components (26-connected) of each class smaller than its minimum to background, in place.

    `labels` is any writable (z, y, x) array (a memory map or zarr array too); min_voxels maps class
    index -> minimum voxels. Returns the number of components removed per class. Holds the volume and one
    int32 component map in memory (5 bytes per voxel).
    """
    from scipy import ndimage

    data = np.asarray(labels[:])
    removed = {}
    structure = np.ones((3, 3, 3), bool)
    for cls, minimum in min_voxels.items():
        components, n = ndimage.label(data == cls, structure=structure)
        if n == 0:
            removed[cls] = 0
            continue
        sizes = np.bincount(components.ravel())
        small = np.flatnonzero(sizes < minimum)
        small = small[small > 0]
        removed[cls] = int(len(small))
        if len(small):
            data[np.isin(components, small)] = 0
        del components
    labels[:] = data
    return removed


_STEINER_RADII = (1.0, 3.0)  # voxels: far enough apart for a surface estimate, near enough for curvature
_SLAB = 32  # slices per slab of the width passes (memory: a few slabs' float64 distances)


def log_cleanup(removed: dict[int, int], class_names, log=print):
    """Say how many small components `remove_small_components` removed, per feature."""
    parts = [f"{class_names[k - 1]} {n}" for k, n in removed.items() if n]
    log("removed small components: " + (", ".join(parts) if parts else "none"))


def _slabs(nz: int, halo: int):
    """(z0, z1, lo, hi): cores of `_SLAB` slices (at least 2 halos) and their ranges with the halo."""
    size = max(_SLAB, 2 * halo)
    for z0 in range(0, nz, size):
        z1 = min(nz, z0 + size)
        yield z0, z1, max(0, z0 - halo), min(nz, z1 + halo)


def label_width(labels, class_index: int) -> float | None:
    """Mean width (voxels) of class `class_index`'s labels across their surface; None where it has none,
    or where they fill their surroundings (dilating them adds nothing: no surface to measure).

    For a sheet of width w and area A the labels hold w * A voxels, and dilating them by r adds 2 * A * r;
    so w = 2 * volume * (r2 - r1) / (volume within r2 - volume within r1). Sheet edges count as surface,
    so sheets that end often (at a lamella's faces) measure narrower: 5% for closed shells, 10-20% in the
    simulator's cells.
    """
    from scipy import ndimage

    r1, r2 = _STEINER_RADII
    halo = int(np.ceil(r2)) + 1
    volume = within_1 = within_2 = 0
    for z0, z1, lo, hi in _slabs(labels.shape[0], halo):
        mask = np.asarray(labels[lo:hi]) == class_index
        if not mask.any():
            continue
        distance = ndimage.distance_transform_edt(~mask)[z0 - lo : z1 - lo]
        volume += int(np.count_nonzero(mask[z0 - lo : z1 - lo]))
        within_1 += int(np.count_nonzero(distance <= r1))
        within_2 += int(np.count_nonzero(distance <= r2))
    if volume == 0 or within_2 <= within_1:
        return None
    return 2.0 * volume * (r2 - r1) / (within_2 - within_1)


def redraw_label_widths(labels, widths: dict[int, float]) -> dict[int, tuple[float, float] | None]:
    """Redraw each class of `widths` (class index -> width in voxels) at that width, in place.

    The boundary of a class's labels moves by half the difference between the stated width and the
    measured one (`label_width`), rounded to whole voxels: wider labels grow into background only (by
    that many voxels), narrower ones lose the voxels that near the background but keep the ridge of
    their distance transform, so no label disappears. `labels`: a writable (z, y, x) array (memory map,
    zarr). Returns per class (measured width before, after), or None for a class left as it is (no
    labels, or no width to measure). Memory: a few 32-slice slabs.
    """
    result = {}
    for cls, target in widths.items():
        before = label_width(labels, cls)
        if before is None:
            result[cls] = None
            continue
        shift = (float(target) - before) / 2  # voxels per side; > 0 grows
        voxels = int(np.floor(abs(shift) + 0.5))
        if voxels:
            _move_boundary(labels, cls, voxels if shift > 0 else -voxels)
        result[cls] = (before, label_width(labels, cls) if voxels else before)  # unmoved: measured already
    return result


def _move_boundary(labels, cls: int, voxels: int):
    """Grow (voxels > 0) or shrink class `cls`'s labels by that many voxels, slab by slab.

    Growing adds the background voxels within `voxels` of a label voxel (a Euclidean ball); shrinking
    removes the label voxels within `voxels` of the background, except ridge voxels. Each slab is
    redrawn from the original labels: the part of its halo that the previous slab has already rewritten
    is put back from a copy.
    """
    from scipy import ndimage

    reach = abs(voxels)
    halo = reach + 3  # the ridge test reads distances 2 voxels past the reach
    previous = None  # (z0, original slices of the previous core)
    for z0, z1, lo, hi in _slabs(labels.shape[0], halo):
        block = np.array(labels[lo:hi])
        if previous is not None:
            start, original = previous
            block[: z0 - lo] = original[lo - start :]
        mask = block == cls
        previous = (z0, block[z0 - lo : z1 - lo].copy())
        if not mask.any():
            continue
        if voxels > 0:
            grown = (ndimage.distance_transform_edt(~mask) <= reach) & (block == 0)
            block[grown] = cls
        else:
            inside = ndimage.distance_transform_edt(mask)
            ridge = inside >= ndimage.maximum_filter(inside, size=3)
            block[mask & (inside <= reach) & ~ridge] = 0
        labels[z0:z1] = block[z0 - lo : z1 - lo]


def score_picks(picked: np.ndarray, truth: np.ndarray, radius: float) -> dict:
    """Precision, recall and F1 of picked centres: a pick is right if a true centre lies within `radius`
    voxels and that true centre is not already matched (closest pairs matched first).
    """
    from scipy.spatial import cKDTree

    matched_truth, matched_pick = set(), set()
    if len(picked) and len(truth):
        pairs = cKDTree(picked).sparse_distance_matrix(cKDTree(truth), radius, output_type="ndarray")
        for i, j, _ in sorted(pairs.tolist(), key=lambda p: p[2]):
            if int(i) not in matched_pick and int(j) not in matched_truth:
                matched_pick.add(int(i))
                matched_truth.add(int(j))
    tp = len(matched_pick)
    precision = tp / len(picked) if len(picked) else 0.0
    recall = tp / len(truth) if len(truth) else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return dict(
        precision=precision,
        recall=recall,
        f1=f1,
        true_positives=tp,
        picked=int(len(picked)),
        true=int(len(truth)),
        radius_voxels=radius,
    )
