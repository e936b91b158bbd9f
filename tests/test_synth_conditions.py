"""The simulator's imaging and specimen conditions (domain randomisation): each option's physics."""

import json

import numpy as np
import pytest
import scipy.fft
from helpers import run_cli

from annotomo import synth
from annotomo.synth import Capsule, Cell, Conditions, Filament, Sphere, render, simulate

SMALL = (24, 96, 96)


def _xy_power(volume):
    """Power per radial frequency (cycles/pixel, 0..0.5) of the xy slices, averaged over z."""
    f = np.abs(scipy.fft.fft2(volume - volume.mean(), axes=(1, 2))) ** 2
    ky = scipy.fft.fftfreq(volume.shape[1])[:, None]
    kx = scipy.fft.fftfreq(volume.shape[2])[None, :]
    radius = np.hypot(ky, kx)
    bins = np.linspace(0, 0.5, 26)
    index = np.digitize(radius, bins)
    power = f.mean(0)
    return bins[1:], np.array([power[index == i].mean() for i in range(1, len(bins))])


def test_snr_is_the_variance_ratio_of_signal_and_noise():
    """Same seed, two SNRs: the noise is the same field scaled, so the signal can be recovered exactly."""
    a, b = 1.0, 0.25
    t_a = simulate(shape=SMALL, seed=5, snr=a).tomogram.astype(np.float64)
    t_b = simulate(shape=SMALL, seed=5, snr=b).tomogram.astype(np.float64)
    noise_a = (t_b - t_a) / (np.sqrt(a / b) - 1)  # t = clean + noise / sqrt(snr) up to one factor
    clean = t_a - noise_a
    assert clean.var() / noise_a.var() == pytest.approx(a, rel=1e-3)
    assert clean.var() / (t_b - clean).var() == pytest.approx(b, rel=1e-3)


def test_the_ctf_zero_moves_with_defocus_as_one_over_its_square_root():
    k = np.linspace(1e-4, 0.1, 20000)
    zeros = {}
    for defocus in (2.0, 8.0):
        ctf = synth.ctf_1d(k, defocus, amplitude_contrast=0.0, cs_mm=0.0, bfactor=0.0)
        zeros[defocus] = k[np.flatnonzero(np.diff(np.sign(ctf)))[0]]
    assert zeros[2.0] / zeros[8.0] == pytest.approx(2.0, rel=0.01)


def test_a_simulated_tomogram_loses_power_at_its_ctf_zero():
    """At 10 A the first zero of a 4 um underfocus (1/28 A^-1) lies inside the band: power dips there."""
    pixel = 10.0
    sim = simulate(shape=(24, 128, 128), pixel_size=pixel, seed=2, snr=100.0, defocus=4.0)
    freq, power = _xy_power(sim.tomogram)
    k = np.linspace(1e-4, 0.05, 5000)
    ctf = synth.ctf_1d(k, 4.0)
    first_zero = k[np.flatnonzero(np.diff(np.sign(ctf)))[0]] * pixel  # cycles/pixel

    def at(f):
        return power[np.argmin(np.abs(freq - f))]

    # The CTF peaks at sqrt(0.5) and sqrt(1.5) times the first zero's frequency: compare with both.
    peaks = np.sqrt(at(np.sqrt(0.5) * first_zero) * at(np.sqrt(1.5) * first_zero))
    assert 0.3 < first_zero < 0.4 and at(first_zero) < 0.3 * peaks


def test_acquisition_orders():
    angles = synth.tilt_angles(9, 3)  # -9 -6 -3 0 3 6 9
    order = dict(zip(angles.tolist(), synth.acquisition_order(angles, "dose-symmetric").tolist(), strict=True))
    assert [a for a, _ in sorted(order.items(), key=lambda x: x[1])] == [0, 3, 6, -3, -6, 9, -9]
    uni = synth.acquisition_order(angles, "unidirectional")
    assert list(uni) == list(range(7))
    bi = synth.acquisition_order(angles, "bidirectional")
    assert [angles[i] for i in np.argsort(bi)] == [0, 3, 6, 9, -3, -6, -9]
    with pytest.raises(ValueError, match="tilt scheme"):
        synth.acquisition_order(angles, "spiral")


def _wedge_side_signal(signal, shape, degrees, band=(0.3, 0.5)):
    """Mean signal weight near the central slice of the tilt at `degrees`, at high frequency."""
    nz, _, nx = shape
    kz = scipy.fft.fftfreq(nz)[:, None, None]
    kx = scipy.fft.rfftfreq(nx)[None, None, :]
    t = np.deg2rad(degrees)
    on_slice = np.abs(kz * np.cos(t) + kx * np.sin(t)) < 0.01
    radius = np.sqrt(kz**2 + kx**2)
    mask = np.broadcast_to(on_slice & (radius > band[0]) & (radius < band[1]), signal.shape)
    return float(signal[mask].mean())


def test_radiation_damage_fades_the_tilts_acquired_last():
    shape = (64, 8, 64)
    kw = dict(pixel_size=5.0, dose=150.0)
    uni, _ = synth.tilt_transfer(shape, 60, 3, 50, scheme="unidirectional", **kw)
    sym, _ = synth.tilt_transfer(shape, 60, 3, 50, scheme="dose-symmetric", **kw)
    # Unidirectional from -60: the +54 degree tilt comes 36 tilts after the -54 one and has lost most.
    assert _wedge_side_signal(uni, shape, 54) < 0.2 * _wedge_side_signal(uni, shape, -54)
    # Dose-symmetric: the two sides two tilts apart, so nearly alike; the zero tilt (first) keeps most.
    assert 0.7 < _wedge_side_signal(sym, shape, 54) / _wedge_side_signal(sym, shape, -54) < 1.4
    assert _wedge_side_signal(sym, shape, 0) > _wedge_side_signal(sym, shape, 54)
    undamaged, _ = synth.tilt_transfer(shape, 60, 3, 50)
    assert _wedge_side_signal(undamaged, shape, 54) > _wedge_side_signal(sym, shape, 54)


def test_dose_weighting_raises_the_signal_to_noise_of_damaged_frequencies():
    shape = (64, 8, 64)
    kw = dict(pixel_size=5.0, dose=150.0, scheme="dose-symmetric")
    s0, n0 = synth.tilt_transfer(shape, 60, 3, 50, dose_weighting=False, **kw)
    s1, n1 = synth.tilt_transfer(shape, 60, 3, 50, dose_weighting=True, **kw)
    sampled = n0 > 1e-3
    gain = (s1 / np.maximum(n1, 1e-12))[sampled] / (s0 / np.maximum(n0, 1e-12))[sampled]
    # Weighting each tilt by its attenuation is the matched filter for equal noise per tilt; where the
    # tilts' slabs overlap unevenly it is not exactly optimal, but nowhere much worse.
    assert gain.min() > 0.9 and np.median(gain) >= 1.0
    assert np.percentile(gain, 90) > 1.05  # better where tilts differ in damage


def test_lamella_thickness_sets_the_specimens_extent_in_z():
    sim = simulate(shape=(40, 64, 64), pixel_size=28.0, seed=3, thickness=56.0)  # 20 of 40 slices
    per_slice = sim.density.mean(axis=(1, 2))
    inside = per_slice > synth.DENSITY["vacuum"] / 2
    assert inside.sum() == pytest.approx(20, abs=2)
    assert inside[20] and not inside[3] and not inside[-4]  # centred
    assert not sim.labels[:8].any() and not sim.labels[-8:].any()


def test_sirt_like_reconstruction_is_a_low_pass_and_keeps_low_frequencies():
    shape = (48, 8, 96)
    wbp, _ = synth.tilt_transfer(shape, 60, 3, 40)
    sirt, _ = synth.tilt_transfer(shape, 60, 3, 40, reconstruction="sirt", sirt_iterations=10)
    kx = scipy.fft.rfftfreq(shape[2])
    along_x = lambda w: w[0, 0, :]  # noqa: E731 - the kz = 0 line, always sampled
    low, high = (kx > 0.01) & (kx < 0.05), kx > 0.4
    assert along_x(sirt)[low].mean() > along_x(wbp)[low].mean()  # WBP's ramp suppresses low frequencies
    assert along_x(sirt)[high].mean() < 0.5 * along_x(wbp)[high].mean()
    more, _ = synth.tilt_transfer(shape, 60, 3, 40, reconstruction="sirt", sirt_iterations=40)
    assert along_x(more)[high].mean() > along_x(sirt)[high].mean()  # more iterations, more resolution
    wbp_vol = simulate(shape=SMALL, seed=4).tomogram
    sirt_vol = simulate(shape=SMALL, seed=4, reconstruction="sirt").tomogram
    f, p_wbp = _xy_power(wbp_vol)
    _, p_sirt = _xy_power(sirt_vol)
    high_share = lambda p: p[f > 0.3].sum() / p.sum()  # noqa: E731
    assert high_share(p_sirt) < 0.7 * high_share(p_wbp)


def test_denoised_tomograms_keep_the_signal_and_lose_most_noise():
    noisy = simulate(shape=SMALL, seed=4, snr=0.3)
    denoised = simulate(shape=SMALL, seed=4, snr=0.3, reconstruction="denoised")
    inside = noisy.labels == synth.RIBOSOME
    contrast = lambda t: (t[~inside].mean() - t[inside].mean()) / t.std()  # noqa: E731
    assert contrast(denoised.tomogram) > 2 * contrast(noisy.tomogram)


def test_membrane_profiles():
    d = np.linspace(-8, 8, 1601)
    profiles = {p: synth.bilayer_density(d, 0.5, 0.5, p) for p in synth.MEMBRANE_PROFILES}
    step = d[1] - d[0]
    totals = {p: v.sum() * step for p, v in profiles.items()}
    assert totals["broad"] == pytest.approx(totals["two-leaflet"], rel=0.02)  # same material, other shape
    assert totals["asymmetric"] == pytest.approx(totals["two-leaflet"], rel=0.02)

    def peaks(v):
        return np.flatnonzero((v[1:-1] > v[:-2]) & (v[1:-1] > v[2:]) & (v[1:-1] > 0.1 * v.max())) + 1

    two, asym, broad = (peaks(profiles[p]) for p in ("two-leaflet", "asymmetric", "broad"))
    assert len(two) == 2 and np.ptp(d[two]) == pytest.approx(2 * synth.HEADGROUP_OFFSET, abs=0.1)
    assert len(broad) == 1 and abs(d[broad[0]]) < 0.05
    inner, outer = profiles["asymmetric"][asym]
    assert len(asym) == 2 and outer > 1.5 * inner  # outer leaflet (d > 0) denser
    with pytest.raises(ValueError, match="membrane profile"):
        synth.bilayer_density(d, 0.5, 0.5, "triple")


def test_membrane_label_width_follows_the_annotation_convention():
    extent = (120.0, 200.0, 200.0)
    cell = Cell(extent=np.asarray(extent), slab=(0.0, extent[0]))
    cell.vesicles.append(Sphere(np.array(extent) / 2, 45.0))
    area = 4 * np.pi * 45.0**2
    for width in (4.5, 9.0):
        _, labels = render(cell, (60, 100, 100), 20.0, membrane_label_width=width)
        thickness = np.count_nonzero(labels == synth.MEMBRANE) * 2.0**3 / area
        assert thickness == pytest.approx(width, rel=0.15)


def _cell_and_straight_filament(radius):
    """A 60 x 60 x 100 nm field filled with specimen, and a filament of `radius` nm along x through its
    centre (to be added to the cell's microtubules or actin).
    """
    extent = (60.0, 60.0, 100.0)
    cell = Cell(extent=np.asarray(extent), slab=(0.0, extent[0]))
    x = np.arange(5.0, 95.0, 1.0)
    return cell, Filament(np.column_stack([np.full_like(x, 30.0), np.full_like(x, 30.0), x]), radius)


def test_microtubule_walls_show_thirteen_protofilaments():
    cell, microtubule = _cell_and_straight_filament(synth.MT_OUTER_RADIUS)
    cell.microtubules.append(microtubule)
    pixel = 5.0  # Angstrom: 0.5 nm voxels
    smooth, _ = render(cell, (120, 120, 200), pixel)
    textured, _ = render(cell, (120, 120, 200), pixel, protofilaments=13)
    angles = np.linspace(0, 2 * np.pi, 360, endpoint=False)
    radius = (synth.MT_OUTER_RADIUS + synth.MT_INNER_RADIUS) / 2  # mid-wall, nm
    z = np.round((30.0 + radius * np.sin(angles)) / 0.5 - 0.5).astype(int)
    y = np.round((30.0 + radius * np.cos(angles)) / 0.5 - 0.5).astype(int)
    ring = textured[z, y, 100]  # density around the wall, in one cross-section
    spectrum = np.abs(np.fft.rfft(ring - ring.mean()))
    assert np.argmax(spectrum[1:40]) + 1 == 13
    assert np.std(smooth[z, y, 100]) < 0.1 * np.std(ring)  # a smooth wall is the same all round


def test_crowding_scales_the_number_of_particles():
    extent = np.array([150.0, 600.0, 600.0])
    counts = {c: len(synth.build_cell(extent, np.random.default_rng(0), crowding=c).ribosomes) for c in (0.5, 1.0)}
    assert counts[0.5] / counts[1.0] == pytest.approx(0.5, abs=0.12)


def test_actin_can_be_labelled_as_a_fifth_feature_seven_nanometres_wide():
    cell, actin = _cell_and_straight_filament(synth.ACTIN_RADIUS)
    cell.actin.append(actin)
    pixel = 5.0  # Angstrom: 0.5 nm voxels
    density, unlabelled = render(cell, (120, 120, 200), pixel)
    same, labels = render(cell, (120, 120, 200), pixel, label_actin=True)
    assert not unlabelled.any()  # by default actin is an unlabelled distractor
    assert np.array_equal(density, same)  # labelling does not change the specimen
    rod = labels == synth.ACTIN
    cross_section = np.count_nonzero(rod[:, :, 100]) * 0.5**2  # nm^2
    assert cross_section == pytest.approx(np.pi * synth.ACTIN_RADIUS**2, rel=0.1)
    assert density[rod].mean() > 0.8 * synth.DENSITY["protein"]  # a solid protein rod
    assert rod[:, :, 20:180].any(axis=(0, 1)).all()  # labelled along its length


def test_labelled_actin_is_the_same_cell_with_a_fifth_class_and_a_density_option():
    plain = simulate(shape=SMALL, seed=1, actin_density=6)
    labelled = simulate(shape=SMALL, seed=1, actin_density=6, label_actin=True)
    assert labelled.class_names == synth.SYNTH_CLASSES + ("actin",) and plain.class_names == synth.SYNTH_CLASSES
    assert np.array_equal(plain.tomogram, labelled.tomogram)
    actin = labelled.labels == synth.ACTIN
    assert actin.any() and np.array_equal(np.where(actin, 0, labelled.labels), plain.labels)
    extent = np.array([150.0, 600.0, 600.0])
    counts = {
        d: len(synth.build_cell(extent, np.random.default_rng(0), actin_density=d).actin) for d in (0.0, 1.0, 4.0)
    }
    assert counts[0.0] == 0 and counts[4.0] / counts[1.0] == pytest.approx(4, rel=0.35)


def test_inverted_contrast_shows_dense_matter_bright():
    normal = simulate(shape=SMALL, seed=6)
    inverted = simulate(shape=SMALL, seed=6, invert_contrast=True)
    assert np.array_equal(inverted.tomogram, -normal.tomogram)
    inside = normal.labels == synth.RIBOSOME
    assert inverted.tomogram[inside].mean() > inverted.tomogram.mean()


def test_randomised_conditions_are_drawn_per_seed_within_realistic_ranges():
    drawn = [simulate(shape=(16, 48, 48), seed=s, randomise=True).conditions for s in range(12)]
    assert len({c.snr for c in drawn}) == 12  # a new draw per tomogram
    assert simulate(shape=(16, 48, 48), seed=3, randomise=True).conditions == drawn[3]  # reproducible
    for c in drawn:
        assert 0.1 <= c.snr <= 1.0 and 1.5 <= c.defocus <= 6.0 and 40 <= c.tilt_range <= 70
        assert c.reconstruction in synth.RECONSTRUCTIONS and c.membrane_profile in synth.MEMBRANE_PROFILES
        assert 4.5 <= c.membrane_label_width <= 9.0 and c.dose >= 60
    assert {c.reconstruction for c in drawn} >= {"wbp", "sirt"}
    given = simulate(shape=(16, 48, 48), seed=3, randomise=True, snr=0.7).conditions
    assert given.snr == 0.7 and given.defocus == drawn[3].defocus  # what is given wins
    assert simulate(shape=(16, 48, 48), seed=3).conditions == Conditions()  # without randomise: the default


def test_conditions_out_of_range_are_refused():
    for bad in (
        dict(reconstruction="fbp"),
        dict(dose=-1),
        dict(tilt_step=0),
        dict(membrane_profile="x"),
        dict(crowding=0),
        dict(actin_density=-1),
        dict(ctf_correction="flipped"),
        dict(noise_colour=5),
        dict(bilayer_spacing=0.5),
    ):
        with pytest.raises(ValueError):
            simulate(shape=(16, 48, 48), **bad)
    with pytest.raises(ValueError, match="unknown simulation option"):
        simulate(shape=(16, 48, 48), snrr=0.5)


def test_synth_cli_takes_every_condition_and_records_it(tmp_path):
    code, out, err = run_cli(
        "synth",
        tmp_path / "c",
        "--shape",
        16,
        64,
        64,
        "--seed",
        2,
        "--snr",
        0.3,
        "--reconstruction",
        "sirt",
        "--sirt-iterations",
        8,
        "--dose",
        100,
        "--dose-weighting",
        "--tilt-scheme",
        "bidirectional",
        "--tilt-step",
        4,
        "--thickness",
        30,
        "--membrane-profile",
        "asymmetric",
        "--membrane-label-width",
        7,
        "--protofilaments",
        13,
        "--crowding",
        1.2,
        "--invert-contrast",
        "--label-actin",
        "--actin-density",
        2,
        "--ctf-correction",
        "phase-flip",
        "--noise-colour",
        -1,
        "--bilayer-spacing",
        3,
        "--tubulin-subunits",
        "--microtubule-radius",
        9,
        "--microtubule-wall",
        2,
    )
    assert code == 0, err
    recorded = json.loads((tmp_path / "c_conditions.json").read_text())["conditions"]
    assert recorded == dict(
        snr=0.3,
        defocus=3.0,
        tilt_range=60.0,
        tilt_step=4.0,
        tilt_scheme="bidirectional",
        dose=100.0,
        dose_weighting=True,
        thickness=30.0,
        reconstruction="sirt",
        sirt_iterations=8,
        membrane_profile="asymmetric",
        membrane_label_width=7.0,
        protofilaments=13,
        crowding=1.2,
        invert_contrast=True,
        label_actin=True,
        actin_density=2.0,
        ctf_correction="phase-flip",
        noise_colour=-1.0,
        bilayer_spacing=3.0,
        tubulin_subunits=True,
        microtubule_radius=9.0,
        microtubule_wall=2.0,
    )
    assert "reconstruction sirt" in out and "5  actin" in out
    code, _, err = run_cli("synth", tmp_path / "r", "--shape", 16, 64, 64, "--randomise", "--snr", 0.4)
    assert code == 0, err
    assert json.loads((tmp_path / "r_conditions.json").read_text())["conditions"]["snr"] == 0.4
    code, _, err = run_cli("synth", tmp_path / "bad", "--shape", 16, 64, 64, "--tilt-step", 80)
    assert code == 2 and "tilt step" in err


def test_a_double_membrane_label_widens_with_the_convention():
    extent = (150.0, 300.0, 300.0)
    cell = Cell(extent=np.asarray(extent), slab=(0.0, 150.0))
    sep = 16.0
    cell.double_membranes.append((Capsule(np.array([75, 150, 100.0]), np.array([75, 150, 200.0]), 60.0), sep))
    widths = {}
    for width in (4.5, 9.0):
        _, labels = render(cell, (75, 150, 150), 20.0, membrane_label_width=width)
        col = labels[37, :, 75] == synth.DOUBLE_MEMBRANE
        widths[width] = col.sum() * 2.0 / 2  # nm per wall
    assert widths[9.0] - widths[4.5] == pytest.approx(4.5, abs=2.5)


def test_ctf_corrections_undo_the_contrast_reversals_that_raw_data_keep():
    """Phase flipping and deconvolution make every frequency's transfer keep dense matter dark, so a
    noise-free tomogram at a large defocus correlates better with the (negated) density than a raw one."""
    k = np.linspace(0, 0.05, 2000)
    ctf = synth.ctf_1d(k, 6.0)
    assert np.any(ctf > 0)  # raw: lobes of reversed contrast
    for correction in ("phase-flip", "deconvolved"):
        assert np.all(ctf * synth.ctf_correction_filter(ctf, correction) <= 1e-12)
    looks = {
        c: simulate(shape=SMALL, pixel_size=10.0, seed=6, snr=1e4, defocus=6.0, ctf_correction=c)
        for c in synth.CTF_CORRECTIONS
    }
    density = looks["none"].density

    def agreement(t):
        return np.corrcoef(-t.ravel(), density.ravel())[0, 1]

    raw = agreement(looks["none"].tomogram)
    assert agreement(looks["phase-flip"].tomogram) > raw + 0.05
    assert agreement(looks["deconvolved"].tomogram) > raw + 0.05


def test_noise_colour_tilts_the_noise_spectrum():
    """Nearly pure noise (SNR 0.01): negative colours put more of its power at low frequencies."""
    ratio = {}
    for colour in (-1.5, 0.0, 1.0):
        freq, power = _xy_power(simulate(shape=SMALL, seed=7, snr=0.01, noise_colour=colour).tomogram)
        ratio[colour] = power[(freq > 0.05) & (freq < 0.15)].mean() / power[(freq > 0.3) & (freq < 0.45)].mean()
    assert ratio[-1.5] > 2 * ratio[0.0] and ratio[0.0] > 1.5 * ratio[1.0]


def test_bilayer_spacing_moves_the_headgroup_layers():
    d = np.linspace(-8, 8, 1601)
    for spacing in (2.6, 4.4):
        v = synth.bilayer_density(d, 0.5, 0.5, "two-leaflet", offset=spacing / 2)
        peaks = np.flatnonzero((v[1:-1] > v[:-2]) & (v[1:-1] > v[2:]) & (v[1:-1] > 0.1 * v.max())) + 1
        assert len(peaks) == 2 and np.ptp(d[peaks]) == pytest.approx(spacing, abs=0.1)


def test_tubulin_subunits_make_a_wall_of_separate_monomers_four_nanometres_apart():
    cell, microtubule = _cell_and_straight_filament(synth.MT_OUTER_RADIUS)
    cell.microtubules.append(microtubule)
    pixel = 5.0
    textured, _ = render(cell, (120, 120, 200), pixel, protofilaments=13)
    beads, labels = render(cell, (120, 120, 200), pixel, tubulin_subunits=True)
    radius = (synth.MT_OUTER_RADIUS + synth.MT_INNER_RADIUS) / 2
    # along one protofilament (the top of the wall), x from 20 to 80 nm
    z, y = int(round((30.0 + radius) / 0.5 - 0.5)), 59
    line = beads[z, y, 40:160]
    spectrum = np.abs(np.fft.rfft(line - line.mean()))
    period_nm = len(line) * 0.5 / (np.argmax(spectrum[1:]) + 1)
    assert period_nm == pytest.approx(4.0, rel=0.1)
    base = beads[z, 10, 100]  # the cytoplasm beside the microtubule
    assert line.min() - base < 0.2 * (line.max() - base)  # separate monomers, not a modulated tube
    wall = labels == synth.MICROTUBULE
    assert beads[wall].sum() == pytest.approx(textured[wall].sum(), rel=0.2)  # the same tubulin, redistributed


def test_microtubule_wall_radius_and_thickness_shape_the_tube_and_its_label():
    """A thin, narrow wall (as structure-based simulators draw it): density only within the wall, the label
    out to the wall's outer edge, and less tubulin than the reference 5 nm wall."""
    cell, microtubule = _cell_and_straight_filament(synth.MT_OUTER_RADIUS)
    cell.microtubules.append(microtubule)
    pixel = 5.0
    reference, reference_labels = render(cell, (120, 120, 200), pixel)
    thin, labels = render(cell, (120, 120, 200), pixel, microtubule_radius=8.0, microtubule_wall=2.0)
    axis_z = 30.0 / 0.5 - 0.5  # the filament's axis, in voxels of 0.5 nm
    column = thin[:, 59, 100]
    r_nm = (np.arange(len(column)) - axis_z) * 0.5
    base = thin[5, 59, 100]
    dense = np.abs(r_nm[column - base > 0.5 * (column.max() - base)])
    assert dense.min() >= 6.5 and dense.max() <= 9.5  # the wall: 7-9 nm from the axis
    labelled = np.abs(r_nm[labels[:, 59, 100] == synth.MICROTUBULE])
    assert labelled.max() == pytest.approx(9.0, abs=0.6)
    assert (labels == synth.MICROTUBULE).sum() < 0.6 * (reference_labels == synth.MICROTUBULE).sum()
    empty, _ = render(_cell_and_straight_filament(synth.MT_OUTER_RADIUS)[0], (120, 120, 200), pixel)
    assert (thin - empty).sum() < 0.5 * (reference - empty).sum()  # less tubulin
    with pytest.raises(ValueError, match="microtubule radius"):
        simulate(shape=SMALL, seed=1, microtubule_radius=11.0, microtubule_wall=5.0)
