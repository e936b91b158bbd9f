"""Particle picking from label volumes, and scoring picks against true centres."""

import numpy as np
import pytest

from annotomo.postprocess import pick_particles, read_centres_csv, score_picks, write_picks
from annotomo.synth import RIBOSOME
from test_cli import run_cli


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
    back = read_centres_csv(tmp_path / "p.csv")
    assert np.allclose(back, [[4.5, 17.5, 17.5]])


def test_pick_and_evaluate_through_the_cli(tmp_path):
    code, _, err = run_cli("synth", tmp_path / "c", "--shape", 24, 128, 128, "--seed", 3)
    assert code == 0, err
    code, out, err = run_cli("pick", tmp_path / "c_labels.mrc", "--class", "ribosome", "--classes",
                             "microtubule,ribosome,membrane,double_membrane", "-o", tmp_path / "picks")
    assert code == 0, err
    assert (tmp_path / "picks.star").exists() and (tmp_path / "picks.csv").exists()
    code, out, err = run_cli("evaluate", tmp_path / "picks.csv", tmp_path / "c_ribosomes.csv", "--radius", 4)
    assert code == 0, err
    f1 = float(out.strip().split("F1 ")[-1])
    assert f1 >= 0.9, out
