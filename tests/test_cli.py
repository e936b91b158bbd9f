"""The command line as a user runs it: outputs, and one-line errors with a non-zero exit code."""

import numpy as np
import pytest
from helpers import assert_clean_error, run_cli

from annotomo.cli import main
from annotomo.volumes import open_volume, read_labels, write_volume


def test_synth_writes_tomogram_labels_and_preview(tmp_path):
    code, out, err = run_cli(
        "synth", tmp_path / "cell", "--shape", 24, 96, 96, "--seed", 2, "--pixel-size", 20, "--preview"
    )
    assert code == 0, err
    assert "microtubule" in out and "double_membrane" in out
    with open_volume(tmp_path / "cell_tomo.mrc") as t, read_labels(tmp_path / "cell_labels.mrc") as lab:
        assert t.shape == lab.shape == (24, 96, 96) and t.data.dtype == np.float32
        assert t.voxel_size == (20.0, 20.0, 20.0) == lab.voxel_size
    assert (tmp_path / "cell_preview.png").stat().st_size > 10_000
    assert (tmp_path / "cell_ribosomes.csv").read_text().startswith("x_voxel")


@pytest.mark.slow
def test_segment_and_evaluate_through_the_cli(model_file, small_files, tmp_path, capsys):
    model = model_file
    assert main(["segment", str(model), str(small_files["test_tomo"]), "-o", str(tmp_path), "--quiet"]) == 0
    labels = tmp_path / "test_tomo_labels.mrc"
    assert labels.exists()
    assert (
        main(
            [
                "evaluate",
                str(labels),
                str(small_files["test_labels"]),
                "--classes",
                "microtubule,ribosome,membrane,double_membrane",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "ribosome" in out and "mean" in out
    # Running again skips what the manifest records as complete, and leaves the file as it was ...
    before = labels.read_bytes()
    assert main(["segment", str(model), str(small_files["test_tomo"]), "-o", str(tmp_path), "--quiet"]) == 0
    assert "already complete" in capsys.readouterr().out and labels.read_bytes() == before
    # ... but an output it did not record (someone else's file) is refused without --overwrite.
    (tmp_path / "annotomo-manifest.json").unlink()
    assert main(["segment", str(model), str(small_files["test_tomo"]), "-o", str(tmp_path), "--quiet"]) == 2
    assert labels.read_bytes() == before


@pytest.mark.slow
def test_training_options_reach_the_model_config(small_files, tmp_path, capsys):
    import json

    out = tmp_path / "m.annotomo"
    code = main(
        [
            "train",
            "--tomogram",
            str(small_files["train_tomo"]),
            "--labels",
            str(small_files["train_labels"]),
            "--classes",
            "microtubule,ribosome,membrane,double_membrane",
            "--out",
            str(out),
            "--iterations",
            "2",
            "--context-slices",
            "3",
            "--warp-fraction",
            "0.25",
            "--z-flip-fraction",
            "0.75",
            "--noise-fraction",
            "0.3",
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    config = json.loads(out.with_name(out.name + ".log.json").read_text())["config"]
    recipe = (config["context_slices"], config["warp_fraction"], config["z_flip_fraction"], config["noise_fraction"])
    assert recipe == (3, 0.25, 0.75, 0.3)


def test_missing_file(tmp_path):
    code, _, err = run_cli("evaluate", tmp_path / "nope.mrc", tmp_path / "nope2.mrc")
    assert_clean_error(code, err, "nope.mrc", "not found")


def test_not_an_mrc_file(tmp_path):
    bad = tmp_path / "notes.mrc"
    bad.write_text("hello\n" * 400)
    code, _, err = run_cli("info", bad)
    assert_clean_error(code, err, "notes.mrc")


@pytest.mark.slow
def test_labels_with_another_shape(tmp_path, small_files):
    write_volume(tmp_path / "lab.mrc", np.zeros((4, 8, 8), np.uint8), (28.0,) * 3)
    code, _, err = run_cli(
        "train",
        "--tomogram",
        small_files["train_tomo"],
        "--labels",
        tmp_path / "lab.mrc",
        "--classes",
        "a,b,c,d",
        "--out",
        tmp_path / "m.annotomo",
        "--iterations",
        1,
    )
    assert_clean_error(code, err, "lab.mrc", "shape")
    assert not (tmp_path / "m.annotomo").exists()


def test_help_lists_the_commands():
    code, out, _ = run_cli("--help", fresh_process=True)  # the installed entry point, as a user runs it
    assert code == 0
    for command in ("demo", "synth", "train", "segment", "evaluate", "info"):
        assert command in out


@pytest.mark.parametrize("argv", [["synth"], ["segment", "model"], ["train", "--tomogram", "a"]])
def test_usage_errors_exit_2(argv, capsys):
    try:  # argparse exits; checks after parsing (tomograms or --copick, labels per tomogram) return
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 2 and "Traceback" not in capsys.readouterr().err
