"""Particle picking from label volumes, scoring picks against true centres, small-component cleanup and
label widths."""

import numpy as np
import pytest
from helpers import assert_clean_error, run_cli

import annotomo.postprocess as postprocess
from annotomo import simulate
from annotomo.metrics import segmentation_scores
from annotomo.postprocess import (
    label_width,
    pick_particles,
    read_centres,
    redraw_label_widths,
    remove_small_components,
    score_picks,
    write_picks,
)
from annotomo.synth import MEMBRANE, RIBOSOME
from annotomo.volumes import read_labels, write_volume


@pytest.mark.slow
def test_picking_the_simulators_true_ribosome_labels_finds_the_true_centres(default_synthetic):
    s = default_synthetic
    picks = pick_particles(s.labels, RIBOSOME, min_voxels=20, min_distance=5, pixel_size=s.pixel_size)
    # Ribosomes cut by the volume's faces are small fragments; score only those fully inside.
    scores = score_picks(picks.centres, s.ribosome_centres, radius=4.0)
    assert scores["f1"] >= 0.9, scores


def test_touching_particles_are_split():
    zz, yy, xx = np.mgrid[:20, :20, :40]
    labels = np.zeros((20, 20, 40), np.uint8)
    for cx in (13, 25):  # two spheres of radius 6 whose surfaces touch
        labels[(zz - 10) ** 2 + (yy - 10) ** 2 + (xx - cx) ** 2 <= 36] = 2
    picks = pick_particles(labels, 2, min_distance=6)
    assert len(picks.centres) == 2
    assert sorted(np.round(picks.centres[:, 2])) == pytest.approx([13, 25], abs=1)


def test_size_filter_and_files(tmp_path):
    labels = np.zeros((10, 30, 30), np.uint8)
    labels[4:6, 4:6, 4:6] = 1  # 8 voxels: too small
    labels[2:8, 15:21, 15:21] = 1  # 216 voxels
    picks = pick_particles(labels, 1, min_voxels=20, pixel_size=10.0)
    assert len(picks.centres) == 1 and picks.sizes[0] == 216
    write_picks(picks, tmp_path / "p.star", tmp_path / "p.csv")
    assert "_rlnCoordinateX" in (tmp_path / "p.star").read_text()
    back = read_centres(tmp_path / "p.csv")
    assert np.allclose(back, [[4.5, 17.5, 17.5]])


def test_pick_and_evaluate_through_the_cli(tmp_path):
    code, _, err = run_cli("synth", tmp_path / "c", "--shape", 24, 128, 128, "--seed", 3)
    assert code == 0, err
    code, out, err = run_cli(
        "pick",
        tmp_path / "c_labels.mrc",
        "--class",
        "ribosome",
        "--classes",
        "microtubule,ribosome,membrane,double_membrane",
        "-o",
        tmp_path / "picks",
    )
    assert code == 0, err
    assert (tmp_path / "picks.star").exists() and (tmp_path / "picks.csv").exists()
    code, out, err = run_cli("evaluate", tmp_path / "picks.csv", tmp_path / "c_ribosomes.csv", "--radius", 4)
    assert code == 0, err
    f1 = float(out.strip().split("F1 ")[-1])
    assert f1 >= 0.9, out


def test_star_files_round_trip_and_read_relion_style_columns(tmp_path):
    picks = pick_particles(np.pad(np.ones((6, 6, 6), np.uint8), 5), 1, min_voxels=20, pixel_size=10.0)
    write_picks(picks, tmp_path / "p.star", tmp_path / "p.csv")
    assert np.allclose(read_centres(tmp_path / "p.star"), read_centres(tmp_path / "p.csv"))
    assert np.allclose(read_centres(tmp_path / "p.star"), [[7.5, 7.5, 7.5]])
    # A STAR file from another program: several blocks, coordinates in the particles block.
    (tmp_path / "relion.star").write_text(
        "data_optics\n\nloop_\n_rlnOpticsGroup #1\n_rlnImagePixelSize #2\n1 10.0\n\n"
        "data_particles\n\nloop_\n_rlnTomoName #1\n_rlnCoordinateX #2\n_rlnCoordinateY #3\n_rlnCoordinateZ #4\n"
        "TS_01 10.0 20.0 30.0\nTS_01 11.0 21.0 31.0\n"
    )
    assert np.allclose(read_centres(tmp_path / "relion.star"), [[30, 20, 10], [31, 21, 11]])


def test_star_without_coordinates_is_a_clean_error(tmp_path):
    (tmp_path / "bad.star").write_text("data_x\n\nloop_\n_rlnAngleRot #1\n10.0\n")
    (tmp_path / "ok.csv").write_text("x_voxel,y_voxel,z_voxel\n1,2,3\n")
    code, _, err = run_cli("evaluate", tmp_path / "bad.star", tmp_path / "ok.csv")
    assert code == 2 and "bad.star" in err and "rlnCoordinateX" in err and "Traceback" not in err


def test_remove_small_components_per_class():
    labels = np.zeros((10, 30, 30), np.uint8)
    labels[1:3, 1:3, 1:3] = 2  # 8 voxels of class 2
    labels[4:9, 10:20, 10:20] = 2  # 500 voxels of class 2
    labels[1:3, 25:28, 25:28] = 1  # 18 voxels of class 1
    before = labels.copy()
    removed = remove_small_components(labels, {2: 50})
    assert removed == {2: 1}
    assert np.all(labels[1:3, 1:3, 1:3] == 0) and np.all(labels[4:9, 10:20, 10:20] == 2)
    assert np.array_equal(labels == 1, before == 1)  # other classes untouched


def test_segment_min_size_leaves_no_small_component(model_file, small_files, tmp_path):
    from scipy import ndimage

    from annotomo.cli import main

    model = model_file
    assert (
        main(
            [
                "segment",
                str(model),
                str(small_files["test_tomo"]),
                "-o",
                str(tmp_path),
                "--quiet",
                "--min-size",
                "ribosome=100",
            ]
        )
        == 0
    )
    with read_labels(tmp_path / "test_tomo_labels.mrc") as vol:
        comps, n = ndimage.label(vol.data == 2, structure=np.ones((3, 3, 3)))
        assert n > 0 and np.bincount(comps.ravel())[1:].min() >= 100
    code, _, err = run_cli("segment", model, small_files["test_tomo"], "-o", tmp_path / "b", "--min-size", "ribo=5")
    assert code == 2 and "ribo" in err and "Traceback" not in err


def _shell(thickness, radius=25.0, size=80):
    """A closed spherical shell `thickness` voxels thick: a sheet with no edges."""
    zz, yy, xx = np.mgrid[:size, :size, :size] - size / 2
    return (np.abs(np.sqrt(zz**2 + yy**2 + xx**2) - radius) <= thickness / 2).astype(np.uint8)


@pytest.mark.parametrize("thickness", [1.6, 3.2, 5.0])
def test_label_width_of_a_shell_is_its_thickness(thickness):
    assert label_width(_shell(thickness), 1) == pytest.approx(thickness, rel=0.08)
    assert label_width(np.zeros((8, 8, 8), np.uint8), 1) is None
    filled = np.ones((8, 8, 8), np.uint8)  # no surface: no width, and a redraw leaves it alone
    assert label_width(filled, 1) is None and redraw_label_widths(filled, {1: 2.0}) == {1: None}
    assert filled.all()


@pytest.fixture(scope="module")
def two_conventions():
    """One simulated cell, its membranes labelled as the 4.5 nm bilayer and 9 nm wide (same tomogram)."""
    thin = simulate(shape=(40, 160, 160), seed=21)
    wide = simulate(shape=(40, 160, 160), seed=21, membrane_label_width=9.0)
    assert np.array_equal(thin.tomogram, wide.tomogram)
    return thin, wide


def _dice(a, b):
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.mark.slow
def test_label_width_tells_the_simulators_two_membrane_conventions_apart(two_conventions):
    nm_per_voxel = two_conventions[0].pixel_size / 10
    thin, wide = (label_width(s.labels, MEMBRANE) * nm_per_voxel for s in two_conventions)
    # Membranes end at the lamella's faces, and their edges count as surface: up to ~20% narrow.
    assert 3.6 <= thin <= 4.7 and 7.2 <= wide <= 9.2 and 1.7 <= wide / thin <= 2.3, (thin, wide)


@pytest.mark.parametrize("direction", ["thin to wide", "wide to thin"])
@pytest.mark.slow
def test_redrawing_one_convention_at_the_others_width_gives_the_others_labels(two_conventions, direction, monkeypatch):
    source, target = two_conventions if direction == "thin to wide" else two_conventions[::-1]
    width_nm = 9.0 if direction == "thin to wide" else 4.5
    labels = source.labels.copy()
    monkeypatch.setattr(postprocess, "_SLAB", 8)  # many slabs: their seams must not show
    measured = redraw_label_widths(labels, {MEMBRANE: width_nm / (source.pixel_size / 10)})
    before, after = measured[MEMBRANE]
    assert (after > before) == (direction == "thin to wide")
    a, b, t = labels == MEMBRANE, source.labels == MEMBRANE, target.labels == MEMBRANE
    assert _dice(b, t) < 0.75 and _dice(a, t) > 0.87, (_dice(b, t), _dice(a, t))
    whole = source.labels.copy()
    monkeypatch.setattr(postprocess, "_SLAB", 1000)
    redraw_label_widths(whole, {MEMBRANE: width_nm / (source.pixel_size / 10)})
    assert np.array_equal(labels, whole)  # slab by slab = the whole volume at once
    changed = labels != source.labels
    # Only membrane voxels and background change, and only into each other.
    assert set(np.unique(source.labels[changed])) | set(np.unique(labels[changed])) <= {0, MEMBRANE}


def test_narrowing_keeps_every_label(two_conventions):
    """Asked far narrower than a voxel, a sheet keeps its middle: no membrane disappears."""
    labels = two_conventions[1].labels.copy()
    redraw_label_widths(labels, {MEMBRANE: 0.1})
    from scipy import ndimage

    _, before = ndimage.label(two_conventions[1].labels == MEMBRANE, structure=np.ones((3, 3, 3)))
    kept = ndimage.label(labels == MEMBRANE, structure=np.ones((3, 3, 3)))[1]
    assert kept >= before and np.count_nonzero(labels == MEMBRANE) < np.count_nonzero(
        two_conventions[1].labels == MEMBRANE
    )


@pytest.mark.slow
def test_segment_label_width_draws_membranes_at_the_stated_convention(trained_model, small_files, tmp_path):
    """The model learnt 4.5 nm membranes; asked for 9 nm, its labels match a 9 nm truth better."""
    model, _ = trained_model
    wide_truth = simulate(shape=(32, 192, 192), seed=12, membrane_label_width=9.0)
    code, out, err = run_cli("segment", model, small_files["test_tomo"], "-o", tmp_path / "as_learnt", "--quiet")
    assert code == 0, err
    code, out, err = run_cli(
        "segment", model, small_files["test_tomo"], "-o", tmp_path / "wide", "--label-width", "membrane=9"
    )
    assert code == 0, err
    assert "membrane labels redrawn 9 nm wide" in out + err
    dice = {}
    for name in ("as_learnt", "wide"):
        with read_labels(tmp_path / name / "test_tomo_labels.mrc") as vol:
            scores = segmentation_scores(wide_truth.labels, vol.data, wide_truth.class_names)
        dice[name] = {c: v["dice"] for c, v in scores["classes"].items()}
    assert dice["wide"]["membrane"] > dice["as_learnt"]["membrane"] + 0.05, dice
    for other in ("microtubule", "ribosome"):  # other features as they were
        assert dice["wide"][other] == pytest.approx(dice["as_learnt"][other], abs=1e-9)
    manifest = (tmp_path / "wide" / "annotomo-manifest.json").read_text()
    assert '"label_width"' in manifest and '"membrane": 9.0' in manifest


def test_segment_label_width_errors_are_one_line(model_file, small_files, tmp_path):
    tomo = small_files["test_tomo"]
    code, _, err = run_cli("segment", model_file, tomo, "-o", tmp_path / "a", "--label-width", "membrane=-2")
    assert code == 2 and "CLASS=NM" in err and "Traceback" not in err
    code, _, err = run_cli("segment", model_file, tomo, "-o", tmp_path / "b", "--label-width", "membrain=9")
    assert_clean_error(code, err, "membrain", "not classes of the model")
    bare = tmp_path / "no_pixel_size.mrc"
    write_volume(bare, np.zeros((8, 64, 64), np.float32) + np.random.default_rng(0).normal(size=(8, 64, 64)), None)
    code, _, err = run_cli("segment", model_file, bare, "-o", tmp_path / "c", "--label-width", "membrane=9")
    assert_clean_error(code, err, str(bare), "pixel size")
    assert not any((tmp_path / "c").glob("*labels*"))
