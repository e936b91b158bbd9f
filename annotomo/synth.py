"""Synthetic cellular tomograms with exact ground truth labels.

A cell is described in physical units (nanometres) independent of sampling: membranes, double
membranes, microtubules, ribosomes and unlabelled distractors (soluble proteins, actin filaments,
crowded cytoplasm). The same seed and field of view give the same cell at any pixel size, so a cell can
be sampled at 28 A and again at 14 A. Rendering computes, per voxel, the signed distance to each
object, turns it into projected density (anti-aliased: every profile is blurred by the voxel's own
footprint) and into labels (0 background, 1 microtubule, 2 ribosome, 3 membrane, 4 double_membrane).

Image formation follows a weak-phase single-axis tilt series reconstructed by weighted back-projection,
modelled exactly in Fourier space (central-slice theorem): each tilt contributes a slab of thickness
~1/(sample thickness) around its central slice, weighted by the WBP ramp; frequencies no slice reaches
(the missing wedge, about the y tilt axis) stay empty. The signal is multiplied by the phase-contrast
CTF (with amplitude contrast and an envelope); detector noise is added per tilt and passes through the
same weighting but not the CTF. Dense matter comes out dark, as in raw reconstructions. The specimen
continues beyond the field of view (mirrored into a margin that is cropped after imaging), so nothing
wraps around from one edge to the opposite one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import scipy.fft
from scipy import ndimage, special
from scipy.spatial import cKDTree

from .conventions import SYNTH_CLASSES

MICROTUBULE, RIBOSOME, MEMBRANE, DOUBLE_MEMBRANE = 1, 2, 3, 4
ACTIN = 5  # labelled only with Conditions.label_actin

# Physical dimensions (nm) and relative densities (protein ~0.4 above water, RNA-rich ribosomes more).
BILAYER_THICKNESS = 4.5
HEADGROUP_OFFSET = 1.9
HEADGROUP_SIGMA = 0.7
MT_OUTER_RADIUS, MT_INNER_RADIUS = 12.5, 7.5
ACTIN_RADIUS = 3.5
LSU_RADIUS, SSU_RADIUS, SSU_OFFSET = 11.0, 8.0, 10.0
DENSITY = {
    "headgroup": 1.0,
    "tails": -0.15,
    "protein": 0.45,
    "ribosome": 0.7,
    "cytoplasm": 0.08,
    "matrix": 0.18,
    "lumen": 0.0,
    "outside": -0.25,
    "vacuum": -0.6,
}


def _norm(v):
    return np.sqrt(np.einsum("...i,...i->...", v, v))


@dataclass
class Sphere:
    """A sphere (vesicle, compartment, or a large one as a sheet-like membrane), in nm."""

    centre: np.ndarray  # (z, y, x) nm
    radius: float

    def sdf(self, p):
        """Signed distance from points (..., 3) to the surface (negative inside), nm."""
        return _norm(p - self.centre) - self.radius


@dataclass
class Capsule:
    """A capsule (mitochondrion-like): the points within `radius` of segment a-b, in nm."""

    a: np.ndarray
    b: np.ndarray
    radius: float

    def sdf(self, p):
        """Signed distance from points (..., 3) to the surface (negative inside), nm."""
        ab = self.b - self.a
        t = np.clip(((p - self.a) @ ab) / (ab @ ab), 0.0, 1.0)
        return _norm(p - (self.a + t[..., None] * ab)) - self.radius


@dataclass
class Filament:
    """A smooth curve sampled every 1 nm; distance is the distance to the nearest sample."""

    points: np.ndarray  # (n, 3) nm
    radius: float
    _tree: cKDTree | None = None

    def distance(self, p):
        """Distance from points (..., 3) to the filament's axis, nm."""
        if self._tree is None:
            self._tree = cKDTree(self.points)
        d, _ = self._tree.query(p.reshape(-1, 3), workers=-1)
        return d.reshape(p.shape[:-1])

    @property
    def length(self) -> float:
        """Length along the curve, nm."""
        return float(np.linalg.norm(np.diff(self.points, axis=0), axis=1).sum())


@dataclass
class Ribosome:
    """A ribosome: a large and a small subunit (spheres) along `axis`."""

    centre: np.ndarray  # centre of mass of the two lobes, nm
    axis: np.ndarray  # unit vector from large to small subunit

    @property
    def lobes(self):
        """The two subunits as spheres (large, small)."""
        lsu = self.centre - self.axis * SSU_OFFSET * SSU_RADIUS**3 / (LSU_RADIUS**3 + SSU_RADIUS**3)
        return (Sphere(lsu, LSU_RADIUS), Sphere(lsu + self.axis * SSU_OFFSET, SSU_RADIUS))

    def sdf(self, p):
        """Signed distance to the union of the two subunits, nm."""
        a, b = self.lobes
        return np.minimum(a.sdf(p), b.sdf(p))


@dataclass
class Cell:
    """Everything in the field of view, in nm; `extent` is the (z, y, x) size of the field of view."""

    extent: np.ndarray
    slab: tuple[float, float]  # z range of the lamella, nm
    vesicles: list = field(default_factory=list)  # Sphere (single membrane, closed)
    sheets: list = field(default_factory=list)  # Sphere of large radius (plasma-membrane-like)
    double_membranes: list = field(default_factory=list)  # (shape, separation nm): outer at sdf 0
    microtubules: list = field(default_factory=list)  # Filament
    actin: list = field(default_factory=list)  # Filament
    ribosomes: list = field(default_factory=list)
    proteins: list = field(default_factory=list)  # Sphere

    def compartment_sdf(self, p):
        """Signed distance to the nearest enclosed compartment (negative inside one)."""
        d = np.full(p.shape[:-1], np.inf)
        for s in self.vesicles:
            d = np.minimum(d, s.sdf(p))
        for shape, _ in self.double_membranes:
            d = np.minimum(d, shape.sdf(p))
        for s in self.sheets:  # outside the plasma membrane is extracellular
            d = np.minimum(d, -s.sdf(p))
        return d


# --------------------------------------------------------------------------------------------------
# Building a cell (all random draws happen here, in physical units)


def _random_unit(rng, n=None):
    v = rng.normal(size=(3,) if n is None else (n, 3))
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _smooth_path(rng, start, heading, length, persistence, max_dz_slope):
    """A smooth curve: heading in the xy plane turns slowly (persistence length in nm)."""
    n = max(int(length), 2)
    angle = np.cumsum(rng.normal(0.0, 1.0 / np.sqrt(persistence), n))
    angle = ndimage.gaussian_filter1d(angle, 20.0) + heading
    slope = rng.uniform(-max_dz_slope, max_dz_slope)
    steps = np.stack([np.full(n, slope), np.sin(angle), np.cos(angle)], axis=1)
    steps /= np.linalg.norm(steps, axis=1, keepdims=True)
    return start + np.cumsum(steps, axis=0)


def _inside(points, extent, margin=0.0):
    return np.all((points >= -margin) & (points <= extent + margin), axis=-1)


def build_cell(
    extent_nm,
    rng: np.random.Generator,
    thickness_nm: float | None = None,
    crowding: float = 1.0,
    actin_density: float = 1.0,
) -> Cell:
    """Draw a random cell filling a field of view of `extent_nm` (z, y, x).

    thickness_nm: the lamella's thickness, centred in z (default 84% of the field's depth); crowding:
    multiplies the number of ribosomes and soluble proteins per volume; actin_density: the number of
    actin-like filament bundles per area.
    """
    extent = np.asarray(extent_nm, dtype=float)
    if thickness_nm is None:
        slab = (0.08 * extent[0], 0.92 * extent[0])
    else:
        half = min(float(thickness_nm), extent[0]) / 2
        slab = (extent[0] / 2 - half, extent[0] / 2 + half)
    cell = Cell(extent=extent, slab=slab)
    area = extent[1] * extent[2] / 1e6  # um^2 of field of view
    volume = area * (slab[1] - slab[0]) / 1e3  # um^3 of lamella

    def random_point(margin=0.0):
        low, high = slab[0] + margin, slab[1] - margin
        return np.array(
            [
                rng.uniform(low, high) if low < high else (slab[0] + slab[1]) / 2,  # a slab thinner than the object
                rng.uniform(0, extent[1]),
                rng.uniform(0, extent[2]),
            ]
        )

    # A plasma-membrane-like sheet: a sphere of micrometre radius crossing the field near one edge,
    # its normal mostly in the xy plane.
    radius = rng.uniform(1500, 3000)
    direction = np.array([rng.normal(0, 0.15), *_random_unit(rng)[1:]])
    direction[1:] /= np.linalg.norm(direction[1:])
    direction /= np.linalg.norm(direction)
    surface_point = extent / 2 + direction * rng.uniform(0.3, 0.42) * min(extent[1:])
    cell.sheets.append(Sphere(surface_point - direction * radius, radius))

    # Double membranes: one or two mitochondrion-like capsules, sometimes a nuclear-envelope-like sheet.
    n_mito = 1 + int(rng.random() < min(1.0, area / 0.6))
    # They lie inside the lamella: where a milling surface cuts a compartment, its cap is parallel to the
    # slices, invisible through the missing wedge, and no annotator could label it.
    slab_half = (slab[1] - slab[0]) / 2
    for _ in range(n_mito):
        r = rng.uniform(0.6, 0.9) * min(slab_half - 8.0, 110.0)
        centre = random_point()
        centre[0] = (slab[0] + slab[1]) / 2 + rng.uniform(-1, 1) * max(slab_half - r - 8.0, 0.0)
        axis = np.array([0.0, *_random_unit(rng)[1:]])
        axis /= np.linalg.norm(axis)
        half = rng.uniform(40, 180)
        cell.double_membranes.append((Capsule(centre - half * axis, centre + half * axis, r), _separation(rng)))
    if rng.random() < 0.35:
        radius = rng.uniform(1200, 2500)
        d = np.array([rng.normal(0, 0.1), *_random_unit(rng)[1:]])
        d /= np.linalg.norm(d)
        point = extent / 2 - d * rng.uniform(0.25, 0.4) * min(extent[1:])
        cell.double_membranes.append((Sphere(point - d * radius, radius), _separation(rng)))

    # Vesicles of varied radius, not intersecting other compartments.
    for _ in range(max(2, rng.poisson(14 * area))):
        for _try in range(20):
            r = rng.uniform(18, 90)
            c = random_point(margin=-0.3 * r)
            if cell.compartment_sdf(c[None])[0] > r + 8:
                cell.vesicles.append(Sphere(c, r))
                break

    # Microtubules: long, smooth, mostly in the lamella plane.
    for _ in range(max(3, rng.poisson(16 * area))):
        start = random_point(margin=MT_OUTER_RADIUS + 5)
        pts = _smooth_path(rng, start, rng.uniform(0, 2 * np.pi), rng.uniform(300, 1200), 4000.0, 0.06)
        pts = _clip_path(pts, cell, MT_OUTER_RADIUS)
        if pts is not None:
            cell.microtubules.append(Filament(pts, MT_OUTER_RADIUS))

    # Actin-like thin filaments (unlabelled distractors): straighter, thinner, in bundles of a few.
    for _ in range(rng.poisson(10 * area * actin_density)):
        start = random_point(margin=ACTIN_RADIUS + 3)
        heading = rng.uniform(0, 2 * np.pi)
        for _k in range(rng.integers(1, 4)):
            offset = np.array([rng.normal(0, 4), rng.normal(0, 12), rng.normal(0, 12)])
            pts = _smooth_path(rng, start + offset, heading, rng.uniform(150, 500), 10000.0, 0.1)
            pts = _clip_path(pts, cell, ACTIN_RADIUS)
            if pts is not None:
                cell.actin.append(Filament(pts, ACTIN_RADIUS))

    obstacles = _Obstacles(cell)
    n_ribosomes = rng.poisson(2600 * volume * crowding)
    centres = np.array([random_point(margin=LSU_RADIUS) for _ in range(4 * n_ribosomes)]).reshape(-1, 3)
    for c in obstacles.place(centres, np.full(len(centres), 15.0), 4.0, n_ribosomes):
        cell.ribosomes.append(Ribosome(c, _random_unit(rng)))
    n_proteins = rng.poisson(30000 * volume * crowding)
    radii = rng.uniform(2.0, 5.5, 3 * n_proteins)
    centres = np.array([random_point(margin=r) for r in radii]).reshape(-1, 3)
    for c, r in zip(obstacles.place(centres, radii, 1.0, n_proteins), obstacles.placed_radii, strict=True):
        cell.proteins.append(Sphere(c, r))
    return cell


def _separation(rng):
    """Centre-to-centre spacing of the two bilayers: a 7-15 nm gap plus one bilayer thickness."""
    return rng.uniform(7.0, 15.0) + BILAYER_THICKNESS


def _clip_path(pts, cell, radius):
    keep = _inside(pts, cell.extent) & (pts[:, 0] > cell.slab[0] + radius) & (pts[:, 0] < cell.slab[1] - radius)
    keep &= cell.compartment_sdf(pts) > radius + 4
    # Keep the longest contiguous run inside the cytoplasm.
    runs, best, start = [], None, None
    for i, k in enumerate(np.append(keep, False)):
        if k and start is None:
            start = i
        elif not k and start is not None:
            runs.append((start, i))
            start = None
    if runs:
        best = max(runs, key=lambda r: r[1] - r[0])
    if best is None or best[1] - best[0] < 100:
        return None
    return pts[best[0] : best[1]]


class _Obstacles:
    """Non-overlap placement of particles: clearance from every membrane, filament and earlier particle."""

    def __init__(self, cell: Cell):
        self.cell = cell
        self.filaments = cell.microtubules + cell.actin
        self.centres = np.zeros((0, 3))
        self.radii = np.zeros(0)
        self.placed_radii = np.zeros(0)

    def place(self, candidates, radii, gap, limit):
        """Accept candidates in order while they fit; return the accepted centres (at most `limit`)."""
        ok = self.cell.compartment_sdf(candidates) >= radii + BILAYER_THICKNESS / 2 + gap
        for f in self.filaments:
            ok &= f.distance(candidates) >= radii + f.radius + gap
        accepted, accepted_r = [], []
        for c, r in zip(candidates[ok], radii[ok], strict=True):
            if len(accepted) >= limit:
                break
            if len(self.centres):
                near = np.abs(self.centres - c).max(axis=1) < self.radii + r + gap
                if near.any() and np.any(np.linalg.norm(self.centres[near] - c, axis=1) < self.radii[near] + r + gap):
                    continue
            accepted.append(c)
            accepted_r.append(r)
            self.centres = np.vstack([self.centres, c])
            self.radii = np.append(self.radii, r)
        self.placed_radii = np.asarray(accepted_r)
        return np.asarray(accepted).reshape(-1, 3)


# --------------------------------------------------------------------------------------------------
# Rendering a cell on a voxel grid


def _gauss_line(d, offset, sigma):
    return np.exp(-0.5 * ((d - offset) / sigma) ** 2)


def _box(d, half_width, sigma):
    """A box of half-width h convolved with a Gaussian: anti-aliased indicator of |d| < h."""
    s = np.sqrt(2.0) * sigma
    return 0.5 * (special.erf((d + half_width) / s) - special.erf((d - half_width) / s))


def _step(d, sigma):
    """Anti-aliased indicator of d < 0."""
    return 0.5 * special.erfc(d / (np.sqrt(2.0) * sigma))


class _Grid:
    """Voxel centres in nm, with helpers to visit only the voxels near an object."""

    def __init__(self, shape, pixel_size_nm):
        self.shape = tuple(shape)
        self.px = pixel_size_nm
        self.edge = np.hypot(0.5, 0.3 * pixel_size_nm)  # edge blur: physical 0.5 nm + voxel footprint

    def box(self, lo_nm, hi_nm):
        lo = np.maximum(np.floor(np.asarray(lo_nm) / self.px - 0.5).astype(int), 0)
        hi = np.minimum(np.ceil(np.asarray(hi_nm) / self.px + 0.5).astype(int) + 1, self.shape)
        if np.any(hi <= lo):
            return None, None
        sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        axes = [((np.arange(a, b) + 0.5) * self.px).astype(np.float32) for a, b in zip(lo, hi, strict=True)]
        pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
        return sl, pts

    def full(self):
        return self.box(np.zeros(3), np.asarray(self.shape) * self.px)


MEMBRANE_PROFILES = ("two-leaflet", "broad", "asymmetric")
BROAD_SIGMA = 1.6  # nm: one line as wide as a bilayer, as membranes look at low resolution or denoised
ASYMMETRY = 1.35  # outer / mean headgroup density of an asymmetric bilayer (inner: 2 - ASYMMETRY)


def _add_bilayer(density, d, grid, weight, profile="two-leaflet", offset=HEADGROUP_OFFSET):
    """Add a bilayer whose mid-plane is at d = 0 (d > 0 outside), evaluating the profile only near it."""
    reach = offset + 4 * np.hypot(HEADGROUP_SIGMA, 0.3 * grid.px) + grid.px
    if profile == "broad":
        reach = 4 * np.hypot(BROAD_SIGMA, 0.3 * grid.px) + grid.px
    near = np.abs(d) < reach
    density[near] += (weight[near] * bilayer_density(d[near], grid.px, grid.edge, profile, offset)).astype(np.float32)


def bilayer_density(d, pixel_nm, edge_nm, profile="two-leaflet", offset=HEADGROUP_OFFSET):
    """Density across a bilayer at signed distance d (nm) from its mid-plane, blurred by the voxel.

    two-leaflet: two headgroup layers 2 x `offset` nm apart (3.8 by default) and the lipid tails' dip
    between them; asymmetric: the same with a denser outer leaflet; broad: one line of the same integrated
    density.
    """
    sigma = np.hypot(HEADGROUP_SIGMA, 0.3 * pixel_nm)
    amp = DENSITY["headgroup"] * HEADGROUP_SIGMA / sigma  # keep the integrated density per leaflet
    tails = DENSITY["tails"] * _box(d, max(offset - 0.5, 0.2), edge_nm)
    if profile == "two-leaflet":
        return amp * (_gauss_line(d, -offset, sigma) + _gauss_line(d, offset, sigma)) + tails
    if profile == "asymmetric":
        inner, outer = 2 - ASYMMETRY, ASYMMETRY
        return amp * (inner * _gauss_line(d, -offset, sigma) + outer * _gauss_line(d, offset, sigma)) + tails
    if profile == "broad":
        total = 2 * DENSITY["headgroup"] * HEADGROUP_SIGMA * np.sqrt(2 * np.pi) + DENSITY["tails"] * 2 * max(
            offset - 0.5, 0.2
        )
        broad = np.hypot(BROAD_SIGMA, 0.3 * pixel_nm)
        return total / (broad * np.sqrt(2 * np.pi)) * _gauss_line(d, 0.0, broad)
    raise ValueError(f"membrane profile must be one of {', '.join(MEMBRANE_PROFILES)}, got {profile!r}")


def render(
    cell: Cell,
    shape,
    pixel_size: float,
    membrane_profile="two-leaflet",
    membrane_label_width=BILAYER_THICKNESS,
    protofilaments=0,
    label_actin=False,
    bilayer_spacing=2 * HEADGROUP_OFFSET,
    tubulin_subunits=False,
    microtubule_radius=(MT_OUTER_RADIUS + MT_INNER_RADIUS) / 2,
    microtubule_wall=MT_OUTER_RADIUS - MT_INNER_RADIUS,
):
    """Rasterise `cell` on a (z, y, x) grid of `pixel_size` Angstrom: (density, labels).

    Density is projected potential relative to water (dense = positive); labels are uint8.
    membrane_profile: see bilayer_density; membrane_label_width: nm labelled across each bilayer (4.5, the
    bilayer itself, or wider, as annotators draw membranes); protofilaments: microtubule walls made of
    this many protofilaments with the 8 nm tubulin repeat along them (0: a smooth wall); label_actin: label
    the actin-like filaments ACTIN where no other feature is (otherwise they are unlabelled distractors);
    bilayer_spacing: nm between a bilayer's headgroup layers; tubulin_subunits: microtubule walls as rows
    of separate 4 nm tubulin monomers (13 protofilaments unless `protofilaments` says otherwise), as
    structure-based simulators and high-resolution tomograms show them; microtubule_radius,
    microtubule_wall: nm from a microtubule's axis to the middle of its wall, and the wall's thickness
    (labelled out to the wall's outer edge).
    """
    offset = bilayer_spacing / 2
    grid = _Grid(shape, pixel_size / 10.0)
    density = np.zeros(shape, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    sl, pts = grid.full()
    half = membrane_label_width / 2

    # Compartments and cytoplasm: fill densities by region, then membranes on top.
    comp = cell.compartment_sdf(pts)
    z = pts[..., 0]
    in_slab = _step(cell.slab[0] - z, grid.edge * 4) * _step(z - cell.slab[1], grid.edge * 4)
    cytoplasm = _step(-comp, grid.edge)
    matrix = np.zeros(shape, dtype=np.float32)
    for shape_, sep in cell.double_membranes:
        matrix = np.maximum(matrix, _step(shape_.sdf(pts) + sep, grid.edge))
    outside = np.zeros(shape, dtype=np.float32)
    for s in cell.sheets:
        outside = np.maximum(outside, _step(-s.sdf(pts), grid.edge))
    density += in_slab * (DENSITY["cytoplasm"] * cytoplasm + DENSITY["matrix"] * matrix + DENSITY["outside"] * outside)
    density += (1 - in_slab) * DENSITY["vacuum"]

    for s in cell.sheets + cell.vesicles:
        d = s.sdf(pts)
        _add_bilayer(density, d, grid, in_slab, membrane_profile, offset)
        labels[(np.abs(d) <= half) & (in_slab > 0.5)] = MEMBRANE
    for shape_, sep in cell.double_membranes:
        d = shape_.sdf(pts)
        _add_bilayer(density, d, grid, in_slab, membrane_profile, offset)
        _add_bilayer(density, d + sep, grid, in_slab, membrane_profile, offset)
        labels[(d <= half) & (d >= -sep - half) & (in_slab > 0.5)] = DOUBLE_MEMBRANE

    strands = protofilaments or (13 if tubulin_subunits else 0)
    wall = (microtubule_radius, microtubule_wall)
    for f in cell.microtubules:
        _render_filament(f, grid, density, labels, MICROTUBULE, True, strands, tubulin_subunits, wall)
    actin = np.zeros_like(labels)
    for f in cell.actin:
        _render_filament(f, grid, density, actin, ACTIN, hollow=False)
    if label_actin:  # where a filament crosses another feature, that feature's label stays
        labels[(actin == ACTIN) & (labels == 0)] = ACTIN
    for r in cell.ribosomes:
        lo, hi = r.centre - 25.0, r.centre + 25.0
        sl, p = grid.box(lo, hi)
        if sl is None:
            continue
        d = r.sdf(p)
        density[sl] += DENSITY["ribosome"] * _step(d, grid.edge)
        labels[sl][d <= 0] = RIBOSOME
    for s in cell.proteins:
        sl, p = grid.box(s.centre - s.radius - 3, s.centre + s.radius + 3)
        if sl is None:
            continue
        density[sl] += DENSITY["protein"] * _step(s.sdf(p), grid.edge)
    return density, labels


def _render_filament(
    f: Filament,
    grid: _Grid,
    density,
    labels,
    label,
    hollow: bool,
    protofilaments: int = 0,
    subunits: bool = False,
    wall=None,
):
    """Add filament `f` to `density` (a tube wall if `hollow`, else a solid rod) and label its voxels within
    its outer radius `label` (None: unlabelled). wall: (radius, thickness) nm of a hollow filament's wall
    (None: annotomo's reference microtubule wall, from MT_INNER_RADIUS to MT_OUTER_RADIUS).
    """
    margin = f.radius + 3 * grid.edge + grid.px
    sl, p = grid.box(f.points.min(0) - margin, f.points.max(0) + margin)
    if sl is None:
        return
    near = np.ones(p.shape[:-1], dtype=bool)
    d = np.full(p.shape[:-1], np.inf)
    # Query only voxels within the filament's tube-shaped neighbourhood (the box can be large).
    tree = cKDTree(f.points)
    flat = p.reshape(-1, 3)
    dist, nearest = tree.query(flat, distance_upper_bound=margin, workers=-1)
    d = dist.reshape(p.shape[:-1])
    near = np.isfinite(d)
    if not near.any():
        return
    dn = d[near]
    radius = f.radius
    if hollow:
        middle, thickness = wall or ((MT_OUTER_RADIUS + MT_INNER_RADIUS) / 2, MT_OUTER_RADIUS - MT_INNER_RADIUS)
        radius = min(middle + thickness / 2, f.radius)
        value = DENSITY["protein"] * _box(dn - middle, thickness / 2, grid.edge)
        if protofilaments:
            value = value * _wall_texture(
                f.points, p[near], nearest.reshape(p.shape[:-1])[near], protofilaments, subunits=subunits
            )
    else:
        value = DENSITY["protein"] * _step(dn - f.radius, grid.edge)
    block = density[sl]
    block[near] += value
    if label is not None:
        lab = labels[sl]
        inner = np.zeros_like(near)
        inner[near] = dn <= radius
        lab[inner] = label


def _wall_texture(points, voxels, nearest, protofilaments, repeat_nm=8.0, subunits=False):
    """Density factor (mean 1) of a microtubule wall of `protofilaments` strands with a `repeat_nm` repeat
    (with `subunits`: separate 4 nm monomers along each strand, the density between them near zero).

    The angle about the axis is measured in a frame that follows the curve (tangent, then the direction
    perpendicular to it and to z), so the strands run along the tube.
    """
    tangent = np.gradient(points, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    t = tangent[nearest]
    across = np.cross(t, np.array([1.0, 0.0, 0.0]))  # (z, y, x): perpendicular to the tangent and to z
    flat = np.linalg.norm(across, axis=1) < 1e-6
    across[flat] = np.cross(t[flat], np.array([0.0, 1.0, 0.0]))
    across /= np.linalg.norm(across, axis=1, keepdims=True)
    third = np.cross(t, across)
    offset = voxels - points[nearest]
    angle = np.arctan2(np.einsum("ij,ij->i", offset, third), np.einsum("ij,ij->i", offset, across))
    along = nearest.astype(float)  # points are 1 nm apart along the curve
    if subunits:  # beads: raised cosines to the 4th power have mean 35/128
        strand = ((1 + np.cos(protofilaments * angle)) / 2) ** 4
        monomer = ((1 + np.cos(2 * np.pi * along / (repeat_nm / 2))) / 2) ** 4
        return strand * monomer / (35 / 128) ** 2
    return (1 + 0.6 * np.cos(protofilaments * angle)) * (1 + 0.15 * np.cos(2 * np.pi * along / repeat_nm))


def _texture(shape, rng, sigma_px, amplitude):
    noise = rng.standard_normal(shape, dtype=np.float32)
    smooth = ndimage.gaussian_filter(noise, sigma_px, mode="wrap")
    return smooth * (amplitude / (smooth.std() + 1e-12))


# --------------------------------------------------------------------------------------------------
# Image formation


def ctf_1d(k, defocus_um, voltage_kv=300.0, cs_mm=2.7, amplitude_contrast=0.07, bfactor=400.0):
    """Phase-contrast transfer function at spatial frequency k (1/Angstrom); underfocus positive.

    Negative at low frequency, so dense matter (positive potential) images dark.
    """
    v = voltage_kv * 1e3
    wavelength = 12.2643 / np.sqrt(v * (1 + 0.978466e-6 * v))  # Angstrom
    df = defocus_um * 1e4
    cs = cs_mm * 1e7
    chi = np.pi * wavelength * df * k**2 - 0.5 * np.pi * cs * wavelength**3 * k**4
    phase = np.sqrt(1 - amplitude_contrast**2) * np.sin(chi) + amplitude_contrast * np.cos(chi)
    return -phase * np.exp(-bfactor * k**2 / 4)


TILT_SCHEMES = ("dose-symmetric", "bidirectional", "unidirectional")
RECONSTRUCTIONS = ("wbp", "sirt", "denoised")


def tilt_angles(tilt_range_deg, tilt_step_deg) -> np.ndarray:
    """The tilt angles of a symmetric series, ascending, in degrees."""
    return np.arange(-tilt_range_deg, tilt_range_deg + 1e-6, tilt_step_deg)


def acquisition_order(angles, scheme="dose-symmetric") -> np.ndarray:
    """Each tilt's place in the acquisition (0 = first), for ascending `angles` in degrees.

    dose-symmetric (Hagen et al. 2017): 0, then groups of two alternating sides, +1 +2, -1 -2, +3 +4, ...;
    bidirectional: 0 up to the highest tilt, then from the first negative tilt down; unidirectional:
    from the lowest tilt to the highest.
    """
    angles = np.asarray(angles, float)
    zero = int(np.argmin(np.abs(angles)))
    positive, negative = list(range(zero + 1, len(angles))), list(range(zero - 1, -1, -1))
    if scheme == "unidirectional":
        sequence = list(range(len(angles)))
    elif scheme == "bidirectional":
        sequence = [zero, *positive, *negative]
    elif scheme == "dose-symmetric":
        sequence = [zero]
        for start in range(0, max(len(positive), len(negative)), 2):
            sequence += positive[start : start + 2] + negative[start : start + 2]
    else:
        raise ValueError(f"tilt scheme must be one of {', '.join(TILT_SCHEMES)}, got {scheme!r}")
    order = np.empty(len(angles), int)
    order[sequence] = np.arange(len(angles))
    return order


def critical_exposure(k) -> np.ndarray:
    """Electrons per square Angstrom after which a spatial frequency k (1/Angstrom) has lost 1/e of its
    amplitude to radiation damage (Grant & Grigorieff 2015, 300 kV).
    """
    k = np.maximum(np.asarray(k, float), 1e-6)
    return 0.245 * k**-1.665 + 2.81


def tilt_transfer(
    shape,
    tilt_range_deg,
    tilt_step_deg,
    thickness_px,
    pixel_size=None,
    dose=0.0,
    scheme="dose-symmetric",
    dose_weighting=False,
    reconstruction="wbp",
    sirt_iterations=20,
):
    """Transfer of a single-axis tilt series and its reconstruction: (signal weight, noise amplitude weight).

    Each (nz, ny or 1, nx//2+1), on the rfft grid of `shape` (z, y, x). Each tilt fills a slab around its
    central slice: the sinc^2 profile of a sample of that thickness, approximated by its Gaussian main lobe
    (sigma = 0.39 / thickness). Weighted back-projection ("wbp") weights by the ramp (capped where slices
    no longer overlap), so that the sampled region's weight is ~1; a SIRT-like reconstruction ("sirt",
    and "denoised", which starts from WBP) instead converges per frequency as 1 - (1 - h)^iterations,
    where h is the back-projection's own coverage: low frequencies come through fully, high ones
    attenuated (a low-pass).

    With a total `dose` (electrons per square Angstrom, spread evenly over the tilts, in `scheme`'s
    order), each tilt's signal is attenuated by exp(-exposure / (2 critical_exposure(k))), where exposure
    is what the specimen received before the middle of that tilt; `dose_weighting` then weights each tilt
    by its own attenuation (normalised per frequency), as IMOD and Warp do, which lowers the noise of the
    later, damaged tilts at high frequency. Noise is per tilt and passes through the same weights.
    """
    nz, ny, nx = shape
    kz = scipy.fft.fftfreq(nz)[:, None, None]
    kx = scipy.fft.rfftfreq(nx)[None, None, :]
    angles = tilt_angles(tilt_range_deg, tilt_step_deg)
    tilts = np.deg2rad(angles)
    s = 0.39 / thickness_px
    kr = np.hypot(kz, kx)
    slabs = [np.exp(-0.5 * ((kz * np.cos(t) + kx * np.sin(t)) / s) ** 2) for t in tilts]  # beam (z cos t + x sin t)
    if reconstruction == "wbp":
        weight = np.minimum(kr * np.deg2rad(tilt_step_deg), s * np.sqrt(2 * np.pi)) / (s * np.sqrt(2 * np.pi))
    elif reconstruction in ("sirt", "denoised"):
        coverage = sum(slabs)
        h = np.minimum(coverage / len(tilts), 1.0)
        converged = 1 - (1 - h) ** (sirt_iterations if reconstruction == "sirt" else 1)
        weight = np.divide(converged, coverage, out=np.zeros_like(coverage), where=coverage > 1e-12)
        if reconstruction == "denoised":  # denoisers start from WBP reconstructions
            weight = np.minimum(kr * np.deg2rad(tilt_step_deg), s * np.sqrt(2 * np.pi)) / (s * np.sqrt(2 * np.pi))
    else:
        raise ValueError(f"reconstruction must be one of {', '.join(RECONSTRUCTIONS)}, got {reconstruction!r}")
    if not dose:
        signal = sum(slabs) * weight
        noise = np.sqrt(sum(g**2 for g in slabs)) * weight
        signal[0, 0, 0] = 1.0
        return signal, noise
    if pixel_size is None:
        raise ValueError("a dose needs the pixel size (radiation damage depends on the spatial frequency)")
    ky = scipy.fft.fftfreq(ny)[None, :, None]
    k = np.sqrt(kz**2 + ky**2 + kx**2) / pixel_size
    exposure = (acquisition_order(angles, scheme) + 0.5) * dose / len(tilts)
    rate = (-0.5 / critical_exposure(k)).astype(np.float32)  # float32: one 3D array per tilt follows
    slabs = [g.astype(np.float32) for g in slabs]
    attenuation = [np.exp(rate * np.float32(e)) for e in exposure]
    if dose_weighting:
        rms = np.sqrt(sum(a**2 for a in attenuation) / len(attenuation))
        weights = [a / rms for a in attenuation]
    else:
        weights = [1.0] * len(attenuation)
    signal = sum(g * a * w for g, a, w in zip(slabs, attenuation, weights, strict=True)) * weight
    noise = np.sqrt(sum((g * w) ** 2 for g, w in zip(slabs, weights, strict=True))) * weight
    noise = np.broadcast_to(noise, signal.shape)
    signal[0, 0, 0] = 1.0
    return signal, noise


def missing_wedge_mask(shape, tilt_range_deg):
    """True for rfft coefficients inside the missing wedge (about the y axis)."""
    nz, ny, nx = shape
    kz = np.abs(scipy.fft.fftfreq(nz))[:, None, None]
    kx = np.abs(scipy.fft.rfftfreq(nx))[None, None, :]
    wedge = kz > kx * np.tan(np.deg2rad(tilt_range_deg))
    return np.broadcast_to(wedge, (nz, ny, nx // 2 + 1))


def image(
    density,
    pixel_size,
    rng,
    snr,
    tilt_range,
    defocus_um,
    tilt_step=3.0,
    slab_fraction=0.84,
    thickness_px=None,
    dose=0.0,
    tilt_scheme="dose-symmetric",
    dose_weighting=False,
    reconstruction="wbp",
    sirt_iterations=20,
    invert_contrast=False,
    ctf_correction="none",
    noise_colour=0.0,
):
    """Tilt-series imaging and reconstruction of `density`, modelled in Fourier space; returns float32 volume.

    snr: signal-to-noise variance ratio of the reconstruction (before any denoising); thickness_px: the
    specimen's thickness (default slab_fraction of the depth); see tilt_transfer for the tilt series,
    dose, dose weighting and reconstruction; "denoised" then removes most of the noise and smooths by
    a voxel, as cryoCARE-like denoisers do; invert_contrast: dense matter bright; ctf_correction: see
    ctf_correction_filter; noise_colour: the noise's power spectrum is tilted by k ** noise_colour
    (negative: blotchy low-frequency noise, positive: fine grain).

    The Fourier model is periodic, but a specimen continues beyond the field of view: imaged as it is,
    matter at one edge would wrap around to the opposite edge (a first or last column up to ~0.8 sigma
    darker or brighter than the rest). So the density is mirrored into a margin in y and x (in x as far
    as the tilts smear it) and the margin is cropped from the image.
    """
    shape = density.shape
    thickness_px = slab_fraction * shape[0] if thickness_px is None else thickness_px
    transfer = dict(
        pixel_size=pixel_size,
        dose=dose,
        scheme=tilt_scheme,
        dose_weighting=dose_weighting,
        reconstruction=reconstruction,
        sirt_iterations=sirt_iterations,
    )
    reach = shape[0] / 2 * np.tan(np.deg2rad(min(tilt_range, 80.0)))  # x smearing of the highest tilt
    my, mx = 16, 16 + int(np.ceil(reach))  # 16 pixels: well beyond the CTF's few-pixel delocalisation
    padded = np.pad(density, ((0, 0), (my, my), (mx, mx)), mode="reflect")
    padded_shape = padded.shape
    fd = scipy.fft.rfftn(padded, workers=-1)
    del padded
    kz = scipy.fft.fftfreq(padded_shape[0])[:, None, None]
    ky = scipy.fft.fftfreq(padded_shape[1])[None, :, None]
    kx = scipy.fft.rfftfreq(padded_shape[2])[None, None, :]
    k = np.sqrt(kz**2 + ky**2 + kx**2) / pixel_size
    signal_w, _ = tilt_transfer(padded_shape, tilt_range, tilt_step, thickness_px, **transfer)
    ctf = ctf_1d(k, defocus_um)
    fd *= (ctf * ctf_correction_filter(ctf, ctf_correction) * signal_w).astype(np.float32)
    fd[0, 0, 0] = 0
    clean = scipy.fft.irfftn(fd, s=padded_shape, workers=-1).astype(np.float32)
    clean = np.ascontiguousarray(clean[:, my : my + shape[1], mx : mx + shape[2]])
    del fd
    # Noise is stationary: periodic noise has no edges, so it is made at the field's own size.
    _, noise_w = tilt_transfer(shape, tilt_range, tilt_step, thickness_px, **transfer)
    fn = scipy.fft.rfftn(rng.standard_normal(shape, dtype=np.float32), workers=-1)
    fn *= noise_w.astype(np.float32)
    if ctf_correction != "none" or noise_colour:
        kn = np.sqrt(
            scipy.fft.fftfreq(shape[0])[:, None, None] ** 2
            + scipy.fft.fftfreq(shape[1])[None, :, None] ** 2
            + scipy.fft.rfftfreq(shape[2])[None, None, :] ** 2
        )
        shaping = ctf_correction_filter(ctf_1d(kn / pixel_size, defocus_um), ctf_correction)
        shaping = shaping * (np.maximum(kn, 1.0 / max(shape)) / 0.25) ** (noise_colour / 2)
        fn *= shaping.astype(np.float32)
    fn[0, 0, 0] = 0
    noise = scipy.fft.irfftn(fn, s=shape, workers=-1).astype(np.float32)
    noise *= np.sqrt(clean.var() / (snr * noise.var()))
    volume = clean + noise
    if reconstruction == "denoised":
        volume = ndimage.gaussian_filter(clean + DENOISED_RESIDUAL * noise, 0.7)
    return -volume if invert_contrast else volume


DENOISED_RESIDUAL = 0.25  # noise amplitude a denoiser leaves
CTF_CORRECTIONS = ("none", "phase-flip", "deconvolved")
DECONVOLUTION_WIENER = 0.1  # the Wiener constant of "deconvolved": how far the CTF's zeros are filled


def ctf_correction_filter(ctf, correction):
    """The filter a reconstruction applies against `ctf` (which keeps dense matter dark).

    none: raw data; phase-flip: flips the signs of the CTF's negative lobes (IMOD ctfphaseflip); deconvolved:
    a Wiener filter that also restores the amplitudes between the zeros, as the CryoET Data Portal's and
    IsoNet's/Warp's deconvolved tomograms are.
    """
    if correction == "none":
        return np.ones_like(ctf)
    if correction == "phase-flip":
        return np.where(ctf <= 0, 1.0, -1.0)
    if correction == "deconvolved":
        return (
            -ctf / (ctf**2 + DECONVOLUTION_WIENER) * (abs(ctf.flat[0]) ** 2 + DECONVOLUTION_WIENER) / abs(ctf.flat[0])
        )
    raise ValueError(f"CTF correction must be one of {', '.join(CTF_CORRECTIONS)}, got {correction!r}")


@dataclass
class SyntheticTomogram:
    """A simulated tomogram with its exact labels and what made it."""

    tomogram: np.ndarray  # float32 (z, y, x), dense dark (unless conditions.invert_contrast)
    labels: np.ndarray  # uint8 (z, y, x)
    pixel_size: float  # Angstrom
    class_names: tuple = SYNTH_CLASSES
    ribosome_centres: np.ndarray = None  # (n, 3) (z, y, x) in voxels
    density: np.ndarray = None  # noise-free projected density (dense positive)
    cell: Cell = None
    conditions: Conditions = None

    def class_table(self):
        """Rows of (index, name, voxel fraction), background first."""
        counts = np.bincount(self.labels.ravel(), minlength=len(self.class_names) + 1)
        frac = counts / self.labels.size
        names = ("background",) + tuple(self.class_names)
        return [(i, names[i], float(frac[i])) for i in range(len(names))]


@dataclass(frozen=True)
class Conditions:
    """How a tomogram was imaged and how its specimen and labels look: every `simulate` option but the
    field of view and the seed. The defaults are annotomo's reference condition.
    """

    snr: float = 0.5  # signal-to-noise variance ratio of the reconstruction (before denoising)
    defocus: float = 3.0  # micrometres underfocus
    tilt_range: float = 60.0  # +- degrees
    tilt_step: float = 3.0  # degrees
    tilt_scheme: str = "dose-symmetric"  # or "bidirectional", "unidirectional" (matters with a dose)
    dose: float = 0.0  # total electrons per square Angstrom (0: no radiation damage modelled)
    dose_weighting: bool = False  # weight each tilt by its damage in the reconstruction
    thickness: float | None = None  # lamella thickness, nm (None: 84% of the field's depth)
    reconstruction: str = "wbp"  # "wbp", "sirt" (SIRT-like low-pass) or "denoised" (cryoCARE-like)
    sirt_iterations: int = 20
    membrane_profile: str = "two-leaflet"  # or "broad", "asymmetric"
    membrane_label_width: float = BILAYER_THICKNESS  # nm labelled across a bilayer (annotators draw wider)
    protofilaments: int = 0  # microtubule wall texture (13 in cells; 0: a smooth wall)
    crowding: float = 1.0  # ribosomes and soluble proteins per volume, relative to the default
    invert_contrast: bool = False  # dense matter bright
    label_actin: bool = False  # label the actin-like filaments as a fifth feature, "actin" (never randomised)
    actin_density: float = 1.0  # actin-like filament bundles per area, relative to the default (never randomised)
    # Appearance beyond annotomo's reference look (drawn by random_appearance, not random_conditions):
    ctf_correction: str = "none"  # or "phase-flip", "deconvolved"
    noise_colour: float = 0.0  # noise power tilted by k ** noise_colour
    bilayer_spacing: float = 2 * HEADGROUP_OFFSET  # nm between a bilayer's headgroup layers
    tubulin_subunits: bool = False  # microtubule walls as separate tubulin monomers
    microtubule_radius: float = (MT_OUTER_RADIUS + MT_INNER_RADIUS) / 2  # nm, axis to the middle of the wall
    microtubule_wall: float = MT_OUTER_RADIUS - MT_INNER_RADIUS  # nm, the wall's thickness

    def check(self):
        """Raise ValueError naming the first option out of its range."""
        problems = [
            (self.snr > 0, "snr must be positive"),
            (0 < self.tilt_range <= 90, "tilt range must be in (0, 90] degrees"),
            (0 < self.tilt_step <= self.tilt_range, "tilt step must be positive and at most the tilt range"),
            (self.defocus >= 0, "defocus must be >= 0 micrometres"),
            (self.tilt_scheme in TILT_SCHEMES, f"tilt scheme must be one of {', '.join(TILT_SCHEMES)}"),
            (self.dose >= 0, "dose must be >= 0"),
            (self.thickness is None or self.thickness > 0, "thickness must be positive (nm)"),
            (self.reconstruction in RECONSTRUCTIONS, f"reconstruction must be one of {', '.join(RECONSTRUCTIONS)}"),
            (self.sirt_iterations >= 1, "SIRT iterations must be >= 1"),
            (
                self.membrane_profile in MEMBRANE_PROFILES,
                f"membrane profile must be one of {', '.join(MEMBRANE_PROFILES)}",
            ),
            (self.membrane_label_width > 0, "membrane label width must be positive (nm)"),
            (self.protofilaments >= 0, "protofilaments must be >= 0"),
            (self.crowding > 0, "crowding must be positive"),
            (self.actin_density >= 0, "actin density must be >= 0"),
            (self.ctf_correction in CTF_CORRECTIONS, f"CTF correction must be one of {', '.join(CTF_CORRECTIONS)}"),
            (-3 <= self.noise_colour <= 3, "noise colour must be in [-3, 3]"),
            (1.0 <= self.bilayer_spacing <= 8.0, "bilayer spacing must be in [1, 8] nm"),
            (0.5 <= self.microtubule_wall <= 8.0, "microtubule wall must be in [0.5, 8] nm"),
            (
                self.microtubule_wall / 2 < self.microtubule_radius
                and self.microtubule_radius + self.microtubule_wall / 2 <= MT_OUTER_RADIUS + 1e-9,
                f"microtubule radius +- half its wall must lie in (0, {MT_OUTER_RADIUS:g}] nm",
            ),
        ]
        for ok, problem in problems:
            if not ok:
                raise ValueError(problem)
        return self


def random_conditions(rng: np.random.Generator, depth_nm: float) -> Conditions:
    """Conditions drawn from the ranges real cellular tomograms span (domain randomisation).

    SNR 0.1-1 (log-uniform); defocus 1.5-6 um; tilt range +-40-70 degrees in 2-4 degree steps, mostly
    dose-symmetric, 60-180 e/A^2 (dose-weighted in 70%); lamella 55-95% of the field's depth; WBP (50%),
    SIRT-like (25%, 5-30 iterations) or denoised (25%); every membrane profile; membrane labels
    4.5-9 nm wide; protofilament texture in half; crowding 0.6-1.6; dense matter bright in 15%. The label
    set (label_actin) and the actin density are not drawn (the built-in models' training cells stay as
    they were).
    """
    return Conditions(
        snr=float(np.exp(rng.uniform(np.log(0.1), np.log(1.0)))),
        defocus=float(rng.uniform(1.5, 6.0)),
        tilt_range=float(rng.uniform(40, 70)),
        tilt_step=float(rng.choice([2.0, 3.0, 3.0, 4.0])),
        tilt_scheme=str(rng.choice(TILT_SCHEMES, p=[0.6, 0.25, 0.15])),
        dose=float(rng.uniform(60, 180)),
        dose_weighting=bool(rng.random() < 0.7),
        thickness=float(rng.uniform(0.55, 0.95) * depth_nm),
        reconstruction=str(rng.choice(RECONSTRUCTIONS, p=[0.5, 0.25, 0.25])),
        sirt_iterations=int(rng.integers(5, 31)),
        membrane_profile=str(rng.choice(MEMBRANE_PROFILES)),
        membrane_label_width=float(rng.uniform(BILAYER_THICKNESS, 9.0)),
        protofilaments=13 if rng.random() < 0.5 else 0,
        crowding=float(rng.uniform(0.6, 1.6)),
        invert_contrast=bool(rng.random() < 0.15),
    )


def random_appearance(rng: np.random.Generator) -> dict:
    """Appearance options beyond random_conditions' ranges, for training data that does not teach one look.

    CTF uncorrected (40%), phase-flipped (30%) or deconvolved (30%); noise colour -1.5..1; bilayers with
    headgroups 2.4-4.4 nm apart; microtubule walls of separate tubulin monomers in 40%; microtubule walls
    1.5-5 nm thick at 8-10 nm from the axis (simulators and maps draw them thinner and narrower than
    annotomo's reference 5 nm wall at 10 nm; drawn last, so earlier draws stay). Returns `simulate`
    keyword arguments (kept apart from random_conditions so that its cells, the built-in models' training
    and test cells, stay as they were).
    """
    return dict(
        ctf_correction=str(rng.choice(CTF_CORRECTIONS, p=[0.4, 0.3, 0.3])),
        noise_colour=float(rng.uniform(-1.5, 1.0)),
        bilayer_spacing=float(rng.uniform(2.4, 4.4)),
        tubulin_subunits=bool(rng.random() < 0.4),
        microtubule_radius=float(rng.uniform(8.0, 10.0)),
        microtubule_wall=float(rng.uniform(1.5, 5.0)),
    )


def simulate(
    shape=(64, 256, 256), pixel_size: float = 28.0, seed: int = 0, randomise: bool = False, **conditions
) -> SyntheticTomogram:
    """Simulate a labelled cellular tomogram.

    Args:
        shape: (z, y, x) voxels.
        pixel_size: Angstrom per voxel.
        seed: the cell, its texture and the noise. The cell depends only on the seed and the physical
            field of view (shape x pixel size), so one seed gives the same cell at any pixel size.
        randomise: draw every condition not given from `random_conditions` (seeded by `seed`).
        **conditions: any field of `Conditions` (snr, defocus, tilt_range, tilt_step, tilt_scheme, dose,
            dose_weighting, thickness, reconstruction, sirt_iterations, membrane_profile,
            membrane_label_width, protofilaments, crowding, invert_contrast, label_actin, actin_density,
            ctf_correction, noise_colour, bilayer_spacing, tubulin_subunits, microtubule_radius,
            microtubule_wall).

    Returns:
        SyntheticTomogram: tomogram, labels (0 background, 1 microtubule, 2 ribosome, 3 membrane,
        4 double_membrane, and with label_actin 5 actin), ribosome centres and the conditions used.

    Raises:
        ValueError: a shape or condition out of range, or an unknown condition.

    Example:
        >>> sim = simulate(shape=(16, 64, 64), seed=1, snr=0.2, reconstruction="sirt")
        >>> sim.tomogram.shape, sim.conditions.reconstruction
        ((16, 64, 64), 'sirt')
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be 3 sizes >= 8 (z, y, x), got {shape}")
    if not pixel_size > 0:
        raise ValueError("pixel size must be positive")
    unknown = sorted(set(conditions) - set(Conditions.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown simulation option(s): {', '.join(unknown)}")
    extent = np.asarray(shape) * pixel_size / 10.0
    base = random_conditions(np.random.default_rng([seed, 3]), extent[0]) if randomise else Conditions()
    given = {k: v for k, v in conditions.items() if v is not None}
    cond = replace(base, **given).check()
    rng = np.random.default_rng(seed)
    cell = build_cell(extent, rng, cond.thickness, cond.crowding, cond.actin_density)
    density, labels = render(
        cell,
        shape,
        pixel_size,
        cond.membrane_profile,
        cond.membrane_label_width,
        cond.protofilaments,
        cond.label_actin,
        cond.bilayer_spacing,
        cond.tubulin_subunits,
        cond.microtubule_radius,
        cond.microtubule_wall,
    )
    # Crowded cytoplasm texture: a few-nm random field in cytoplasm and mitochondrial matrix.
    tex_rng = np.random.default_rng([seed, 1])
    density += _texture(shape, tex_rng, max(3.0 / (pixel_size / 10), 0.7), 0.05) * (density > -0.2)
    noise_rng = np.random.default_rng([seed, 2])
    thickness_px = None if cond.thickness is None else min(cond.thickness, extent[0]) / (pixel_size / 10.0)
    tomogram = image(
        density,
        pixel_size,
        noise_rng,
        cond.snr,
        cond.tilt_range,
        cond.defocus,
        cond.tilt_step,
        thickness_px=thickness_px,
        dose=cond.dose,
        tilt_scheme=cond.tilt_scheme,
        dose_weighting=cond.dose_weighting,
        reconstruction=cond.reconstruction,
        sirt_iterations=cond.sirt_iterations,
        invert_contrast=cond.invert_contrast,
        ctf_correction=cond.ctf_correction,
        noise_colour=cond.noise_colour,
    )
    centres = np.array([r.centre for r in cell.ribosomes]).reshape(-1, 3) / (pixel_size / 10.0) - 0.5
    names = SYNTH_CLASSES + (("actin",) if cond.label_actin else ())
    return SyntheticTomogram(tomogram, labels, pixel_size, names, centres, density, cell, cond)
