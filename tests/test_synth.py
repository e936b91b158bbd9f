"""The simulator's physics: missing wedge, object sizes, contrast, classes, determinism, scaling."""

import numpy as np
import pytest
import scipy.fft

from annotomo import synth
from annotomo.conventions import SYNTH_CLASSES
from annotomo.synth import Capsule, Cell, Filament, Sphere, render, simulate


@pytest.mark.slow
def test_every_class_is_present_in_the_default_volume(default_synthetic):
    s = default_synthetic
    assert s.tomogram.shape == (64, 256, 256) and s.tomogram.dtype == np.float32
    assert s.labels.dtype == np.uint8
    fractions = {name: frac for _, name, frac in s.class_table()}
    for name in SYNTH_CLASSES:
        assert fractions[name] > 0.001, f"{name} covers only {fractions[name]:.5f} of the volume"
    assert 0.6 < fractions["background"] < 0.98


@pytest.mark.slow
def test_power_inside_the_missing_wedge_is_a_small_fraction(default_synthetic):
    vol = default_synthetic.tomogram
    power = np.abs(scipy.fft.rfftn(vol - vol.mean())) ** 2
    wedge = synth.missing_wedge_mask(vol.shape, 60.0)
    kz = scipy.fft.fftfreq(vol.shape[0])[:, None, None]
    ky = scipy.fft.fftfreq(vol.shape[1])[None, :, None]
    kx = scipy.fft.rfftfreq(vol.shape[2])[None, None, :]
    radius = np.sqrt(kz**2 + ky**2 + kx**2)
    band = (radius > 0.08) & (radius < 0.5)  # away from the origin, where slab thickness blurs the wedge
    inside = power[wedge & band].mean()
    outside = power[~wedge & band].mean()
    assert inside < 0.05 * outside, f"wedge/outside power ratio {inside / outside:.3f}"


def test_a_wider_tilt_range_leaves_a_narrower_wedge():
    shape = (48, 96, 96)
    s60 = simulate(shape=shape, seed=5, tilt_range=60)
    power = np.abs(scipy.fft.rfftn(s60.tomogram)) ** 2
    kz = scipy.fft.fftfreq(shape[0])[:, None, None]
    kx = scipy.fft.rfftfreq(shape[2])[None, None, :]
    far = np.broadcast_to(np.hypot(kz, kx) > 0.1, power.shape)
    beyond_60 = synth.missing_wedge_mask(shape, 60.0) & far
    between = synth.missing_wedge_mask(shape, 45.0) & ~synth.missing_wedge_mask(shape, 55.0) & far
    # Between 45 and 55 degrees the +-60 series has data; beyond 60 it has (almost) none.
    assert power[between].mean() > 10 * power[beyond_60].mean()


@pytest.mark.slow
def test_dense_matter_is_dark(default_synthetic):
    s = default_synthetic
    mean, sd = s.tomogram.mean(), s.tomogram.std()
    for label in (synth.RIBOSOME, synth.MEMBRANE, synth.MICROTUBULE):
        inside = s.tomogram[s.labels == label].mean()
        assert inside < mean - 0.1 * sd, f"class {label} mean {inside:.4f} not darker than {mean:.4f}"


def test_same_seed_gives_identical_volumes_and_different_seed_does_not():
    a = simulate(shape=(24, 64, 64), seed=7)
    b = simulate(shape=(24, 64, 64), seed=7)
    c = simulate(shape=(24, 64, 64), seed=8)
    assert np.array_equal(a.tomogram, b.tomogram) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.tomogram, c.tomogram)


def _single_objects(extent):
    cell = Cell(extent=np.asarray(extent, float), slab=(0.0, extent[0]))
    cell.vesicles.append(Sphere(np.array(extent) / 2, 40.0))
    x = np.arange(10.0, extent[2] - 10.0, 1.0)
    straight = np.column_stack([np.full_like(x, extent[0] / 2), np.full_like(x, 0.25 * extent[1]), x])
    cell.microtubules.append(Filament(straight, synth.MT_OUTER_RADIUS))
    return cell, straight


@pytest.mark.parametrize("pixel_size", [28.0, 10.0])
def test_bilayer_and_microtubule_sizes_follow_the_pixel_size(pixel_size):
    extent = (120.0, 200.0, 200.0)  # nm
    cell, mt_axis = _single_objects(extent)
    shape = tuple(int(round(e * 10 / pixel_size)) for e in extent)
    _, labels = render(cell, shape, pixel_size)
    voxel_nm3 = (pixel_size / 10) ** 3
    # Membrane label volume / vesicle area = bilayer thickness (4.5 nm), whatever the sampling.
    thickness = np.count_nonzero(labels == synth.MEMBRANE) * voxel_nm3 / (4 * np.pi * 40.0**2)
    assert thickness == pytest.approx(synth.BILAYER_THICKNESS, rel=0.15)
    # Microtubule label volume / length = cross-section of a 25 nm diameter tube.
    length = np.linalg.norm(mt_axis[-1] - mt_axis[0])
    area = np.count_nonzero(labels == synth.MICROTUBULE) * voxel_nm3 / length
    diameter = 2 * np.sqrt(area / np.pi)
    assert diameter == pytest.approx(25.0, rel=0.1)
    # In voxels: the same 25 nm tube spans 25 nm / pixel size voxels.
    profile = labels[:, int(0.25 * shape[1]), shape[2] // 2] == synth.MICROTUBULE
    assert profile.sum() == pytest.approx(250 / pixel_size, abs=1.01)


def test_double_membrane_label_spans_both_bilayers_and_the_gap():
    extent = (150.0, 300.0, 300.0)
    cell = Cell(extent=np.asarray(extent), slab=(0.0, 150.0))
    sep = 16.0
    cell.double_membranes.append((Capsule(np.array([75, 150, 100.0]), np.array([75, 150, 200.0]), 60.0), sep))
    _, labels = render(cell, (75, 150, 150), 20.0)
    col = labels[37, :, 75] == synth.DOUBLE_MEMBRANE  # across the capsule's axis, at its middle
    edges = np.flatnonzero(np.diff(np.concatenate([[0], col.astype(int), [0]])))
    widths_nm = (edges[1::2] - edges[::2]) * 2.0
    assert len(widths_nm) == 2  # two walls, each both bilayers plus the gap
    assert widths_nm == pytest.approx([sep + synth.BILAYER_THICKNESS] * 2, abs=2.5)


def test_the_same_cell_at_another_pixel_size():
    coarse = simulate(shape=(16, 64, 64), pixel_size=28.0, seed=4)
    fine = simulate(shape=(32, 128, 128), pixel_size=14.0, seed=4)
    assert len(coarse.cell.ribosomes) == len(fine.cell.ribosomes) > 0
    a = np.array([r.centre for r in coarse.cell.ribosomes])
    b = np.array([r.centre for r in fine.cell.ribosomes])
    assert np.allclose(a, b)
    # Labels agree when the fine one is sampled at the coarse voxel centres (up to edge voxels).
    agree = np.mean(fine.labels[::2, ::2, ::2] == coarse.labels)
    assert agree > 0.9


@pytest.mark.slow
def test_ribosome_centres_are_inside_ribosome_labels(default_synthetic):
    s = default_synthetic
    idx = np.round(s.ribosome_centres).astype(int)
    assert len(idx) > 50
    hits = s.labels[idx[:, 0], idx[:, 1], idx[:, 2]] == synth.RIBOSOME
    assert hits.mean() > 0.9


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError):
        simulate(shape=(4, 64, 64))
    with pytest.raises(ValueError):
        simulate(shape=(16, 64, 64), tilt_range=120)


@pytest.mark.parametrize("seed", [1001, 2001])
def test_the_field_of_view_has_no_wrap_around_seam_at_its_edges(seed):
    """The specimen continues beyond the field of view: the first and last rows and columns look like
    their neighbours. (Imaged periodically, matter at one edge wrapped around to the other and left
    a first/last column up to 0.8 sigma darker or brighter on average, which networks learnt as a feature.)"""
    vol = simulate(shape=(32, 128, 128), seed=seed).tomogram
    vol = (vol - vol.mean()) / vol.std()
    for axis in (1, 2):
        profile = vol.mean(axis=tuple(a for a in range(3) if a != axis))
        for edge, inner in ((profile[0], profile[1:5]), (profile[-1], profile[-5:-1])):
            assert abs(edge - inner.mean()) < 0.15, f"axis {axis}: edge {edge:+.2f} vs next {inner.mean():+.2f}"


@pytest.mark.parametrize("shape", [(8, 8, 8), (16, 16, 16), (8, 64, 64)])
def test_the_smallest_fields_simulate_too(shape):
    """Any shape >= 8 is accepted, so a field thinner or smaller than a microtubule or a ribosome must
    still simulate (it failed with 'high - low < 0' or 'need at least one array to stack')."""
    s = simulate(shape=shape, seed=3)
    assert s.tomogram.shape == shape and s.labels.shape == shape
    assert np.isfinite(s.tomogram).all() and s.tomogram.std() > 0
