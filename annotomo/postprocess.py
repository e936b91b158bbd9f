"""After segmentation: particle picking from a label volume, and scoring picks against true centres.

Picking: the voxels of one class are split into particles by connected components; components that
hold several touching particles are split at the peaks of their distance transform (each peak farther
than `min_distance` from the others seeds one particle, and voxels go to the nearest seed). Particles
outside the size range are dropped. Centres are written as a RELION STAR file (rlnCoordinateX/Y/Z in
voxels, plus Angstrom columns) and CSV.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .volumes import atomic_path


@dataclass
class Picks:
    centres: np.ndarray  # (n, 3) (z, y, x) voxels
    sizes: np.ndarray  # voxels per particle
    pixel_size: float | None


def pick_particles(labels, class_index: int, min_voxels: int = 20, max_voxels: int | None = None,
                   min_distance: float = 4.0, pixel_size: float | None = None) -> Picks:
    """Centres of the particles of class `class_index` in a (z, y, x) label volume."""
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


def write_picks(picks: Picks, star_path=None, csv_path=None):
    """Write centres as RELION STAR (coordinates in voxels, with Angstrom columns) and/or CSV."""
    px = picks.pixel_size or 1.0
    rows = [(x, y, z, x * px, y * px, z * px, s) for (z, y, x), s in zip(picks.centres, picks.sizes)]
    if star_path:
        lines = ["", "# annotomo particle picks: coordinates in voxels (x, y, z) and in Angstrom", "",
                 "data_particles", "", "loop_", "_rlnCoordinateX #1", "_rlnCoordinateY #2", "_rlnCoordinateZ #3",
                 "_annotomoCoordinateXAngst #4", "_annotomoCoordinateYAngst #5", "_annotomoCoordinateZAngst #6",
                 "_annotomoVoxels #7"]
        lines += [f"{x:.2f} {y:.2f} {z:.2f} {xa:.1f} {ya:.1f} {za:.1f} {s}" for x, y, z, xa, ya, za, s in rows]
        with atomic_path(star_path) as tmp:
            tmp.write_text("\n".join(lines) + "\n")
    if csv_path:
        lines = ["x_voxel,y_voxel,z_voxel,x_angstrom,y_angstrom,z_angstrom,voxels"]
        lines += [f"{x:.2f},{y:.2f},{z:.2f},{xa:.1f},{ya:.1f},{za:.1f},{s}" for x, y, z, xa, ya, za, s in rows]
        with atomic_path(csv_path) as tmp:
            tmp.write_text("\n".join(lines) + "\n")


def read_centres_csv(path) -> np.ndarray:
    """(z, y, x) voxel centres from a CSV with x_voxel, y_voxel, z_voxel columns (annotomo's or the simulator's)."""
    data = np.genfromtxt(path, delimiter=",", names=True)
    data = np.atleast_1d(data)
    return np.column_stack([data["z_voxel"], data["y_voxel"], data["x_voxel"]]).reshape(-1, 3)


def score_picks(picked: np.ndarray, truth: np.ndarray, radius: float) -> dict:
    """Precision, recall and F1 of picked centres: a pick is right if a true centre lies within `radius`
    voxels and that true centre is not already matched (closest pairs matched first)."""
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
    return dict(precision=precision, recall=recall, f1=f1, true_positives=tp, picked=int(len(picked)),
                true=int(len(truth)), radius_voxels=radius)
