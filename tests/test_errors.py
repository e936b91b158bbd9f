"""Bad input, faults and interruptions, as a user meets them through the CLI: one clear line on stderr
naming the file and the problem, a non-zero exit code, no traceback, inputs untouched, no half files."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import CLASSES, assert_clean_error, digest, run_cli

from annotomo import AnnotomoError, segment
from annotomo.modelfile import read_model_info, save_model
from annotomo.volumes import write_volume


def train_args(tomo, labels, out, *extra):
    return (
        "train",
        "--tomogram",
        tomo,
        "--labels",
        labels,
        "--classes",
        CLASSES,
        "--out",
        out,
        "--iterations",
        1,
        "--quiet",
        *extra,
    )


def outputs_in(folder):
    """Every file in an output folder but the manifest (which records failures too)."""
    return sorted(p.name for p in folder.iterdir() if p.name != "annotomo-manifest.json")


def failure_recorded(folder, name):
    """The error the manifest records for input `name`."""
    entries = json.loads((folder / "annotomo-manifest.json").read_text())["tomograms"]
    (entry,) = [e for key, e in entries.items() if key.endswith(name)]
    assert entry["status"] == "failed"
    return entry["error"]


@pytest.fixture
def mrc_good(tmp_path):
    path = tmp_path / "good.mrc"
    write_volume(path, np.random.default_rng(0).normal(size=(6, 64, 64)).astype(np.float32), (28.0,) * 3)
    return path


def test_truncated_mrc(tmp_path, mrc_good, model_file):
    bad = tmp_path / "cut.mrc"
    bad.write_bytes(mrc_good.read_bytes()[:5000])
    code, _, err = run_cli("segment", model_file, bad, "-o", tmp_path / "out")
    assert_clean_error(code, err, "cut.mrc", "truncated")
    assert not (tmp_path / "out" / "cut_labels.mrc").exists()


def test_corrupt_header_mode(tmp_path, mrc_good):
    data = bytearray(mrc_good.read_bytes())
    data[12:16] = (99).to_bytes(4, "little")
    (tmp_path / "mode99.mrc").write_bytes(bytes(data))
    code, _, err = run_cli("info", tmp_path / "mode99.mrc")
    assert_clean_error(code, err, "mode99.mrc", "mode 99")


def test_one_slice_volume_as_tomogram(tmp_path, model_file):
    write_volume(tmp_path / "slice.mrc", np.zeros((1, 64, 64), np.float32), (28.0,) * 3)
    code, _, err = run_cli("segment", model_file, tmp_path / "slice.mrc", "-o", tmp_path / "o")
    assert_clean_error(code, err, "slice.mrc", "1-slice")


def test_nan_voxels(tmp_path, model_file):
    vol = np.random.default_rng(1).normal(size=(6, 64, 64)).astype(np.float32)
    vol[3, 10, 10] = np.nan
    write_volume(tmp_path / "nan.mrc", vol, (28.0,) * 3)
    code, _, err = run_cli("segment", model_file, tmp_path / "nan.mrc", "-o", tmp_path / "o")
    assert_clean_error(code, err, "nan.mrc", "NaN")
    assert outputs_in(tmp_path / "o") == []  # no output, not even a partial one
    assert "NaN" in failure_recorded(tmp_path / "o", "nan.mrc")


def test_constant_volume(tmp_path, model_file):
    write_volume(tmp_path / "flat.mrc", np.full((6, 64, 64), 3.0, np.float32), (28.0,) * 3)
    code, _, err = run_cli("segment", model_file, tmp_path / "flat.mrc", "-o", tmp_path / "o")
    assert_clean_error(code, err, "flat.mrc", "constant")


def test_label_values_beyond_the_classes(tmp_path, small_files):
    labels = np.zeros((32, 192, 192), np.uint8)
    labels[0, 0, 0] = 7
    write_volume(tmp_path / "lab.mrc", labels, (28.0,) * 3)
    code, _, err = run_cli(*train_args(small_files["train_tomo"], tmp_path / "lab.mrc", tmp_path / "m.annotomo"))
    assert_clean_error(code, err, "lab.mrc", "up to 7", "4 classes")


def test_labels_without_any_annotated_voxel(tmp_path, small_files):
    write_volume(tmp_path / "none.mrc", np.full((32, 192, 192), 255, np.uint8), (28.0,) * 3)
    code, _, err = run_cli(*train_args(small_files["train_tomo"], tmp_path / "none.mrc", tmp_path / "m.annotomo"))
    assert_clean_error(code, err, "none.mrc", "no annotated voxel")


@pytest.mark.slow
def test_a_class_that_never_occurs_is_a_warning(tmp_path, small_files):
    code, out, err = run_cli(
        "train",
        "--tomogram",
        small_files["train_tomo"],
        "--labels",
        small_files["train_labels"],
        "--classes",
        CLASSES + ",actin",
        "--out",
        tmp_path / "m.annotomo",
        "--iterations",
        3,
        "--quiet",
        "--patch",
        64,
        "--batch-size",
        2,
    )
    assert code == 0, err
    assert "class 5 (actin) has no annotated voxel" in err
    assert (tmp_path / "m.annotomo").exists()


def test_classes_that_disagree_with_the_model(tmp_path, model_file, small_files):
    code, _, err = run_cli(
        "segment", model_file, small_files["test_tomo"], "-o", tmp_path, "--classes", "membrane,ribosome"
    )
    assert_clean_error(code, err, "model classes are microtubule,ribosome,membrane,double_membrane")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is present")
@pytest.mark.parametrize("command", ["train", "segment"])
def test_asking_for_a_gpu_that_is_not_there(tmp_path, model_file, small_files, command):
    if command == "train":
        args = train_args(small_files["train_tomo"], small_files["train_labels"], tmp_path / "m.annotomo")
    else:
        args = ("segment", model_file, small_files["test_tomo"], "-o", tmp_path)
    code, _, err = run_cli(*args, "--device", "cuda")
    assert_clean_error(code, err, "--device cuda", "no CUDA GPU")
    assert list(tmp_path.iterdir()) == []
    code, _, err = run_cli(*args, "--device", "gpu0")
    assert_clean_error(code, err, "--device gpu0", "not a device name")


def test_a_tile_smaller_than_its_overlap_allows_is_refused_before_anything_is_written(
    tmp_path, model_file, small_files
):
    code, _, err = run_cli("segment", model_file, small_files["test_tomo"], "-o", tmp_path / "out", "--tile", 256)
    assert_clean_error(code, err, "--tile 256", "at least 320")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_output_equal_to_an_input_is_refused(tmp_path, small_files):
    before = digest(small_files["train_tomo"])
    code, _, err = run_cli(
        *train_args(small_files["train_tomo"], small_files["train_labels"], small_files["train_tomo"], "--overwrite")
    )
    assert_clean_error(code, err, "same as an input")
    assert digest(small_files["train_tomo"]) == before


def test_output_folder_that_cannot_be_made(tmp_path, model_file, small_files):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli("segment", model_file, small_files["test_tomo"], "-o", blocker / "sub")
    assert code == 2 and "Traceback" not in err and "file" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_output_folder_not_writable(tmp_path, model_file, small_files):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, _, err = run_cli("segment", model_file, small_files["test_tomo"], "-o", locked)
    assert_clean_error(code, err, "not writable")


def test_full_disk_while_writing_leaves_no_output(tmp_path, model_file, small_files, monkeypatch):
    from annotomo.predict import Predictor

    def fill_then_fail(self, volume, normalization, out_labels, out_probabilities=None, **kw):
        out_labels[0] = 1
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Predictor, "segment", fill_then_fail)
    with pytest.raises(AnnotomoError, match="No space left on device"):
        segment(model_file, [small_files["test_tomo"]], tmp_path / "out", progress=False, log=lambda *a: None)
    assert outputs_in(tmp_path / "out") == []
    assert "No space left" in failure_recorded(tmp_path / "out", "test_tomo.mrc")


def test_a_gpu_out_of_memory_is_one_line_with_advice_and_leaves_no_output(
    tmp_path, model_file, small_files, monkeypatch, capsys
):
    from annotomo import cli
    from annotomo.predict import Predictor

    def no_memory(self, x):
        raise __import__("torch").cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(Predictor, "_network", no_memory)
    code = cli.main(["segment", str(model_file), str(small_files["test_tomo"]), "-o", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("annotomo: error")]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert "GPU ran out of memory" in lines[0] and "--tile, e.g. 512" in lines[0] and "--device cpu" in lines[0]
    assert outputs_in(tmp_path / "out") == []


@pytest.mark.parametrize("damage", ["garbage", "truncated", "newer", "pickle"])
def test_damaged_or_hostile_model_files(tmp_path, model_file, small_files, damage):
    model = model_file
    bad = tmp_path / f"{damage}.annotomo"
    marker = tmp_path / "PWNED"
    if damage == "garbage":
        bad.write_bytes(os.urandom(4096))
    elif damage == "truncated":
        bad.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    elif damage == "newer":
        from annotomo.modelfile import load_model

        net, info = load_model(model)
        info.format_version = 99
        save_model(bad, net, info)
    else:  # a pickle that runs a command when unpickled (what torch.save files can do)
        payload = (
            f"import pickle, os\nclass P:\n    def __reduce__(self):\n"
            f"        return (os.system, ('touch {marker}',))\n"
            f"pickle.dump(P(), open('{bad}', 'wb'))\n"
        )
        subprocess.run([sys.executable, "-c", payload], check=True)
    code, _, err = run_cli("segment", bad, small_files["test_tomo"], "-o", tmp_path / "o")
    expected = {
        "garbage": "not an annotomo model",
        "truncated": "damaged",
        "newer": "newer",
        "pickle": "not an annotomo model",
    }[damage]
    assert_clean_error(code, err, bad.name, expected)
    assert not marker.exists()


@pytest.mark.slow
def test_interrupted_training_keeps_its_checkpoint_and_resumes(tmp_path, small_files):
    out = tmp_path / "m.annotomo"
    checkpoint = tmp_path / "m.annotomo.checkpoint"
    args = [
        sys.executable,
        "-m",
        "annotomo",
        "train",
        "--tomogram",
        str(small_files["train_tomo"]),
        "--labels",
        str(small_files["train_labels"]),
        "--classes",
        CLASSES,
        "--out",
        str(out),
        "--patch",
        "32",
        "--batch-size",
        "4",
        "--quiet",
    ]
    proc = subprocess.Popen(args + ["--iterations", "100000"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert checkpoint.exists(), "no checkpoint after the first epoch"
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    assert out.exists() and checkpoint.exists()
    done = read_model_info(checkpoint).provenance["training_state"]["iteration"]
    assert done >= 100
    target = done + 150
    resumed = subprocess.run(
        args + ["--iterations", str(target), "--resume"], capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"at iteration {done}" in resumed.stdout
    log = json.loads((tmp_path / "m.annotomo.log.json").read_text())
    assert log["history"][-1]["iteration"] == target
    assert [h["epoch"] for h in log["history"]] == list(range(1, len(log["history"]) + 1))
    assert not checkpoint.exists()  # a finished run removes its resumable state
