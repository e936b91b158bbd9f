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

from dataclasses import dataclass, field

import numpy as np
import scipy.fft
from scipy import ndimage, special
from scipy.spatial import cKDTree

from .conventions import SYNTH_CLASSES

MICROTUBULE, RIBOSOME, MEMBRANE, DOUBLE_MEMBRANE = 1, 2, 3, 4

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


def build_cell(extent_nm, rng: np.random.Generator) -> Cell:
    """Draw a random cell filling a field of view of `extent_nm` (z, y, x)."""
    extent = np.asarray(extent_nm, dtype=float)
    thickness = extent[0]
    slab = (0.08 * thickness, 0.92 * thickness)
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
    for _ in range(rng.poisson(10 * area)):
        start = random_point(margin=ACTIN_RADIUS + 3)
        heading = rng.uniform(0, 2 * np.pi)
        for _k in range(rng.integers(1, 4)):
            offset = np.array([rng.normal(0, 4), rng.normal(0, 12), rng.normal(0, 12)])
            pts = _smooth_path(rng, start + offset, heading, rng.uniform(150, 500), 10000.0, 0.1)
            pts = _clip_path(pts, cell, ACTIN_RADIUS)
            if pts is not None:
                cell.actin.append(Filament(pts, ACTIN_RADIUS))

    obstacles = _Obstacles(cell)
    n_ribosomes = rng.poisson(2600 * volume)
    centres = np.array([random_point(margin=LSU_RADIUS) for _ in range(4 * n_ribosomes)]).reshape(-1, 3)
    for c in obstacles.place(centres, np.full(len(centres), 15.0), 4.0, n_ribosomes):
        cell.ribosomes.append(Ribosome(c, _random_unit(rng)))
    n_proteins = rng.poisson(30000 * volume)
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


def _add_bilayer(density, d, grid, weight):
    """Add a bilayer whose mid-plane is at d = 0, evaluating the profile only near the surface."""
    near = np.abs(d) < HEADGROUP_OFFSET + 4 * np.hypot(HEADGROUP_SIGMA, 0.3 * grid.px) + grid.px
    density[near] += (weight[near] * _bilayer_density(d[near], grid)).astype(np.float32)


def _bilayer_density(d, grid):
    sigma = np.hypot(HEADGROUP_SIGMA, 0.3 * grid.px)
    amp = DENSITY["headgroup"] * HEADGROUP_SIGMA / sigma  # keep the integrated density per leaflet
    heads = amp * (_gauss_line(d, -HEADGROUP_OFFSET, sigma) + _gauss_line(d, HEADGROUP_OFFSET, sigma))
    return heads + DENSITY["tails"] * _box(d, HEADGROUP_OFFSET - 0.5, grid.edge)


def _membrane_half_width(grid):
    return BILAYER_THICKNESS / 2


def render(cell: Cell, shape, pixel_size: float):
    """Rasterise `cell` on a (z, y, x) grid of `pixel_size` Angstrom: (density, labels).

    Density is projected potential relative to water (dense = positive); labels are uint8.
    """
    grid = _Grid(shape, pixel_size / 10.0)
    density = np.zeros(shape, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    sl, pts = grid.full()
    half = _membrane_half_width(grid)

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
        _add_bilayer(density, d, grid, in_slab)
        labels[(np.abs(d) <= half) & (in_slab > 0.5)] = MEMBRANE
    for shape_, sep in cell.double_membranes:
        d = shape_.sdf(pts)
        _add_bilayer(density, d, grid, in_slab)
        _add_bilayer(density, d + sep, grid, in_slab)
        labels[(d <= half) & (d >= -sep - half) & (in_slab > 0.5)] = DOUBLE_MEMBRANE

    for f in cell.microtubules:
        _render_filament(f, grid, density, labels, hollow=True)
    for f in cell.actin:
        _render_filament(f, grid, density, labels, hollow=False)
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


def _render_filament(f: Filament, grid: _Grid, density, labels, hollow: bool):
    margin = f.radius + 3 * grid.edge + grid.px
    sl, p = grid.box(f.points.min(0) - margin, f.points.max(0) + margin)
    if sl is None:
        return
    near = np.ones(p.shape[:-1], dtype=bool)
    d = np.full(p.shape[:-1], np.inf)
    # Query only voxels within the filament's tube-shaped neighbourhood (the box can be large).
    tree = cKDTree(f.points)
    flat = p.reshape(-1, 3)
    dist, _ = tree.query(flat, distance_upper_bound=margin, workers=-1)
    d = dist.reshape(p.shape[:-1])
    near = np.isfinite(d)
    if not near.any():
        return
    dn = d[near]
    if hollow:
        wall = (MT_OUTER_RADIUS - MT_INNER_RADIUS) / 2
        value = DENSITY["protein"] * _box(dn - (MT_OUTER_RADIUS - wall), wall, grid.edge)
    else:
        value = DENSITY["protein"] * _step(dn - f.radius, grid.edge)
    block = density[sl]
    block[near] += value
    if hollow:
        lab = labels[sl]
        inner = np.zeros_like(near)
        inner[near] = dn <= f.radius
        lab[inner] = MICROTUBULE


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


def tilt_transfer(shape, tilt_range_deg, tilt_step_deg, thickness_px):
    """WBP transfer in the (kz, kx) plane: (signal weight, noise amplitude weight), each (nz, nx//2+1).

    Each tilt fills a slab around its central slice: the sinc^2 profile of a sample of that thickness,
    approximated by its Gaussian main lobe (sigma = 0.39 / thickness); the ramp weighting
    of WBP (capped where slices no longer overlap) makes the sampled region's weight ~1.
    """
    nz, _, nx = shape
    kz = scipy.fft.fftfreq(nz)[:, None]
    kx = scipy.fft.rfftfreq(nx)[None, :]
    tilts = np.deg2rad(np.arange(-tilt_range_deg, tilt_range_deg + 1e-6, tilt_step_deg))
    s = 0.39 / thickness_px
    kr = np.hypot(kz, kx)
    ramp = np.minimum(kr * np.deg2rad(tilt_step_deg), s * np.sqrt(2 * np.pi)) / (s * np.sqrt(2 * np.pi))
    signal = np.zeros_like(kr)
    noise_power = np.zeros_like(kr)
    for t in tilts:
        # The beam direction at tilt t is (z cos t + x sin t); its central slice is k . beam = 0.
        g = np.exp(-0.5 * ((kz * np.cos(t) + kx * np.sin(t)) / s) ** 2)
        signal += g
        noise_power += g**2
    signal *= ramp
    noise = np.sqrt(noise_power) * ramp
    signal[0, 0] = 1.0
    return signal, noise


def missing_wedge_mask(shape, tilt_range_deg):
    """True for rfft coefficients inside the missing wedge (about the y axis)."""
    nz, ny, nx = shape
    kz = np.abs(scipy.fft.fftfreq(nz))[:, None, None]
    kx = np.abs(scipy.fft.rfftfreq(nx))[None, None, :]
    wedge = kz > kx * np.tan(np.deg2rad(tilt_range_deg))
    return np.broadcast_to(wedge, (nz, ny, nx // 2 + 1))


def image(density, pixel_size, rng, snr, tilt_range, defocus_um, tilt_step=3.0, slab_fraction=0.84):
    """Tilt-series imaging and WBP of `density`, modelled in Fourier space; returns float32 volume.

    The Fourier model is periodic, but a specimen continues beyond the field of view: imaged as it is,
    matter at one edge would wrap around to the opposite edge (a first or last column up to ~0.8 sigma
    darker or brighter than the rest). So the density is mirrored into a margin in y and x (in x as far
    as the tilts smear it) and the margin is cropped from the image.
    """
    shape = density.shape
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
    signal_w, _ = tilt_transfer(padded_shape, tilt_range, tilt_step, slab_fraction * shape[0])
    fd *= (ctf_1d(k, defocus_um) * signal_w[:, None, :]).astype(np.float32)
    fd[0, 0, 0] = 0
    clean = scipy.fft.irfftn(fd, s=padded_shape, workers=-1).astype(np.float32)
    clean = np.ascontiguousarray(clean[:, my : my + shape[1], mx : mx + shape[2]])
    del fd
    # Noise is stationary: periodic noise has no edges, so it is made at the field's own size.
    _, noise_w = tilt_transfer(shape, tilt_range, tilt_step, slab_fraction * shape[0])
    fn = scipy.fft.rfftn(rng.standard_normal(shape, dtype=np.float32), workers=-1)
    fn *= noise_w[:, None, :].astype(np.float32)
    fn[0, 0, 0] = 0
    noise = scipy.fft.irfftn(fn, s=shape, workers=-1).astype(np.float32)
    noise *= np.sqrt(clean.var() / (snr * noise.var()))
    return clean + noise


@dataclass
class SyntheticTomogram:
    """A simulated tomogram with its exact labels and what made it."""

    tomogram: np.ndarray  # float32 (z, y, x), dense dark
    labels: np.ndarray  # uint8 (z, y, x)
    pixel_size: float  # Angstrom
    class_names: tuple = SYNTH_CLASSES
    ribosome_centres: np.ndarray = None  # (n, 3) (z, y, x) in voxels
    density: np.ndarray = None  # noise-free projected density (dense positive)
    cell: Cell = None

    def class_table(self):
        """Rows of (index, name, voxel fraction), background first."""
        counts = np.bincount(self.labels.ravel(), minlength=len(self.class_names) + 1)
        frac = counts / self.labels.size
        names = ("background",) + tuple(self.class_names)
        return [(i, names[i], float(frac[i])) for i in range(len(names))]


def simulate(
    shape=(64, 256, 256),
    pixel_size: float = 28.0,
    seed: int = 0,
    snr: float = 0.5,
    tilt_range: float = 60.0,
    defocus: float = 3.0,
    tilt_step: float = 3.0,
) -> SyntheticTomogram:
    """Simulate a labelled cellular tomogram.

    shape: (z, y, x) voxels; pixel_size: Angstrom; snr: signal-to-noise variance ratio of the
    reconstruction; tilt_range: +- degrees; defocus: micrometres underfocus. The cell depends only on
    the seed and the physical field of view (shape x pixel size).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be 3 sizes >= 8 (z, y, x), got {shape}")
    if pixel_size <= 0 or snr <= 0 or not 0 < tilt_range <= 90 or defocus < 0:
        raise ValueError("pixel size and SNR must be positive, tilt range in (0, 90], defocus >= 0")
    rng = np.random.default_rng(seed)
    extent = np.asarray(shape) * pixel_size / 10.0
    cell = build_cell(extent, rng)
    density, labels = render(cell, shape, pixel_size)
    # Crowded cytoplasm texture: a few-nm random field in cytoplasm and mitochondrial matrix.
    tex_rng = np.random.default_rng([seed, 1])
    density += _texture(shape, tex_rng, max(3.0 / (pixel_size / 10), 0.7), 0.05) * (density > -0.2)
    noise_rng = np.random.default_rng([seed, 2])
    tomogram = image(density, pixel_size, noise_rng, snr, tilt_range, defocus, tilt_step)
    centres = np.array([r.centre for r in cell.ribosomes]).reshape(-1, 3) / (pixel_size / 10.0) - 0.5
    return SyntheticTomogram(tomogram, labels, pixel_size, SYNTH_CLASSES, centres, density, cell)
