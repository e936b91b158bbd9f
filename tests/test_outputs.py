"""Outputs as a lab's shared file system needs them: normal permissions, every path checked up front."""

import json
import os
import stat

import numpy as np
import pytest
from helpers import CLASSES, assert_clean_error, run_cli

from annotomo.volumes import read_class_names, read_labels, write_volume


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _modes(folder):
    return {p.relative_to(folder).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in sorted(folder.rglob("*"))}


@pytest.mark.slow
def test_every_output_gets_the_permissions_of_a_new_file(tmp_path, model_file, small_files, umask_022):
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = run_cli("synth", out / "cell", "--shape", 16, 64, 64, "--preview")
    assert code == 0, err
    code, _, err = run_cli(
        "segment", model_file, small_files["test_tomo"], "-o", out / "seg", "--probabilities", "--quiet"
    )
    assert code == 0, err
    code, _, err = run_cli(
        "segment", model_file, small_files["test_tomo"], "-o", out / "zarr", "--format", "zarr", "--quiet"
    )
    assert code == 0, err
    code, _, err = run_cli(
        "train",
        "--tomogram",
        small_files["train_tomo"],
        "--labels",
        small_files["train_labels"],
        "--out",
        out / "m.annotomo",
        "--iterations",
        2,
        "--quiet",
    )
    assert code == 0, err
    labels = out / "seg" / "test_tomo_labels.mrc"
    code, _, err = run_cli("pick", labels, "--class", "ribosome", "-o", out / "picks")
    assert code == 0, err
    code, _, err = run_cli("evaluate", labels, small_files["test_labels"], "--json", out / "scores.json")
    assert code == 0, err
    modes = _modes(out)
    expected = {
        "cell_tomo.mrc",
        "cell_labels.mrc",
        "cell_preview.png",
        "cell_ribosomes.star",
        "cell_conditions.json",
        "seg/test_tomo_labels.mrc",
        "seg/test_tomo_ribosome.mrc",
        "m.annotomo",
        "m.annotomo.log.json",
        "m.annotomo.training.png",
        "picks.star",
        "picks.csv",
        "scores.json",
        "zarr/test_tomo_labels.ome.zarr",
    }
    assert expected <= set(modes), sorted(set(expected) - set(modes))
    for name, mode in modes.items():
        folder = (out / name).is_dir()
        assert mode == (0o755 if folder else 0o644), f"{name}: {oct(mode)}"
    left = [n for n in modes if n.split("/")[-1].startswith(".") and ".zarr/" not in n]  # (zarr's own .zattrs)
    assert not left and not [n for n in modes if n.endswith(".partial")]  # no temporary names left


def test_training_output_under_a_file_is_refused_before_any_work(tmp_path, small_files):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("not a folder")
    code, _, err = run_cli(
        "train",
        "--tomogram",
        small_files["train_tomo"],
        "--labels",
        small_files["train_labels"],
        "--out",
        blocker / "model.annotomo",
        "--iterations",
        100000,
        "--quiet",
    )
    assert_clean_error(code, err, "notes.txt", "not a folder")
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("clash", ["log", "curves", "checkpoint"])
def test_a_folder_where_a_training_output_goes_is_refused_up_front(tmp_path, small_files, clash):
    out = tmp_path / "m.annotomo"
    suffix = {"log": ".log.json", "curves": ".training.png", "checkpoint": ".checkpoint"}[clash]
    (tmp_path / f"m.annotomo{suffix}").mkdir()
    code, _, err = run_cli(
        "train",
        "--tomogram",
        small_files["train_tomo"],
        "--labels",
        small_files["train_labels"],
        "--out",
        out,
        "--iterations",
        2,
        "--quiet",
    )
    assert_clean_error(code, err, suffix, "existing folder")
    assert not out.exists()


def test_label_files_carry_their_feature_names(tmp_path, model_file, small_files):
    names = ["microtubule", "ribosome", "membrane", "double_membrane"]
    assert read_class_names(small_files["train_labels"]) == names
    code, _, err = run_cli("segment", model_file, small_files["test_tomo"], "-o", tmp_path, "--quiet")
    assert code == 0, err
    written = tmp_path / "test_tomo_labels.mrc"
    assert read_class_names(written) == names
    # evaluate and pick need no --classes now
    code, out, err = run_cli("evaluate", written, small_files["test_labels"], "--json", tmp_path / "s.json")
    assert code == 0, err
    assert "double_membrane" in out and set(json.loads((tmp_path / "s.json").read_text())["classes"]) == set(names)
    code, out, err = run_cli("pick", written, "--class", "ribosome", "-o", tmp_path / "p")
    assert code == 0, err
    # Many or long names spread over the header's records; a file without names reads None.
    many = [f"feature_{k:02d}_with_a_long_name" for k in range(14)]
    write_volume(tmp_path / "many.mrc", np.zeros((2, 4, 4), np.uint8), (10.0,) * 3, class_names=many)
    assert read_class_names(tmp_path / "many.mrc") == many
    write_volume(tmp_path / "plain.mrc", np.zeros((2, 4, 4), np.uint8), (10.0,) * 3)
    assert read_class_names(tmp_path / "plain.mrc") is None
    with read_labels(tmp_path / "many.mrc") as vol:
        assert vol.data.dtype == np.uint8  # still plain labels for every other reader


@pytest.mark.slow
def test_training_takes_the_feature_names_from_the_labels_file(tmp_path, small_files):
    out = tmp_path / "m.annotomo"
    code, _, err = run_cli(
        "train",
        "--tomogram",
        small_files["train_tomo"],
        "--labels",
        small_files["train_labels"],
        "--out",
        out,
        "--iterations",
        2,
        "--quiet",
    )
    assert code == 0, err
    from annotomo import read_model_info

    assert read_model_info(out).class_names == CLASSES.split(",")
    plain = tmp_path / "plain_labels.mrc"
    with read_labels(small_files["train_labels"]) as lab:
        write_volume(plain, lab.data, lab.voxel_size)
    code, _, err = run_cli(
        "train",
        "--tomogram",
        small_files["train_tomo"],
        "--labels",
        plain,
        "--out",
        tmp_path / "n.annotomo",
        "--iterations",
        2,
        "--quiet",
    )
    assert_clean_error(code, err, "plain_labels.mrc", "--classes")


@pytest.mark.slow
def test_pictures_can_be_drawn_from_several_threads_at_once(tmp_path):
    """The napari panel draws its live curve while training, in another thread, writes its curves; matplotlib
    alone fails when two threads lay out log-scale tick labels at once."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from annotomo.preview import save_overlay, save_training_curves

    history = [
        dict(epoch=e, train_loss=1 / e, val_loss=1.2 / e, mean_dice=0.1 * e, dice_membrane=0.1 * e) for e in (1, 2, 3)
    ]
    volume = np.random.default_rng(0).normal(size=(8, 32, 32)).astype(np.float32)
    labels = (volume > 1).astype(np.uint8)

    def draw(i):
        if i % 2:
            save_overlay(tmp_path / f"{i}.png", volume, [labels], ["membrane"])
        else:
            save_training_curves(tmp_path / f"{i}.png", history)
        return Image.open(tmp_path / f"{i}.png").size

    with ThreadPoolExecutor(4) as pool:
        sizes = list(pool.map(draw, range(12)))
    assert sizes[0] == (1000, 380) and len(set(sizes[0::2])) == 1 and len(set(sizes[1::2])) == 1


def test_drawing_pictures_leaves_the_host_processs_matplotlib_backend_alone():
    """Importing annotomo in napari or Jupyter must not switch their plotting backend to a file-only one."""
    import subprocess
    import sys

    code = (
        "import matplotlib; matplotlib.use('svg'); import matplotlib.pyplot as plt; "
        "import annotomo.preview, annotomo.viewer; print(matplotlib.get_backend())"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "svg"
