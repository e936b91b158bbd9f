"""Particle picking from label volumes, and scoring picks against true centres."""

import numpy as np
import pytest
from helpers import run_cli

from annotomo.postprocess import pick_particles, read_centres, remove_small_components, score_picks, write_picks
from annotomo.synth import RIBOSOME
from annotomo.volumes import read_labels


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
