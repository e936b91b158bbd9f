"""Models by name (built-in ones), fine-tuning from a model, and contrast at segment time."""

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from helpers import QUIET, assert_clean_error, run_cli, save_untrained_model

from annotomo import TrainConfig, modelfile, read_model_info, segment, simulate, train
from annotomo.conventions import SYNTH_CLASSES
from annotomo.modelfile import load_model
from annotomo.training.config import FINE_TUNING_LEARNING_RATE, NEW_NETWORK_LEARNING_RATE
from annotomo.volumes import read_labels, write_volume


@pytest.fixture
def builtin_folder(tmp_path, monkeypatch, model_file):
    """A built-in model folder holding one model, 'tiny-v0'."""
    folder = tmp_path / "builtin"
    folder.mkdir()
    shutil.copy(model_file, folder / "tiny-v0.annotomo")
    monkeypatch.setattr(modelfile, "BUILTIN_FOLDER", folder)
    return folder


def test_models_lists_the_built_in_models_as_a_table_and_as_json(builtin_folder):
    code, out, err = run_cli("models")
    assert code == 0, err
    assert "tiny-v0: microtubule, ribosome, membrane, double_membrane; 28 A/pixel" in out
    code, out, _ = run_cli("models", "--json")
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["tiny-v0"]
    assert rows[0]["classes"] == ["microtubule", "ribosome", "membrane", "double_membrane"]
    assert rows[0]["pixel_size"] == 28.0 and rows[0]["default_start"] is True


def test_models_says_which_version_training_starts_from(builtin_folder, model_file):
    shutil.copy(model_file, builtin_folder / "tiny-v1.annotomo")
    rows = json.loads(run_cli("models", "--json")[1])
    assert [(r["name"], r["default_start"]) for r in rows] == [("tiny-v0", False), ("tiny-v1", True)]
    out = run_cli("models")[1]
    assert "tiny-v1: microtubule" in out and out.count("train starts from it") == 1


def test_training_starts_from_the_newest_version_of_a_built_in_model(builtin_folder, model_file):
    for name in ("tiny-v2", "tiny-v10", "other-v1"):
        shutil.copy(model_file, builtin_folder / f"{name}.annotomo")
    assert modelfile.builtin_models_for(["microtubule", "ribosome", "membrane", "double_membrane"])[:3] == [
        "tiny-v10", "tiny-v2", "tiny-v0"]  # fmt: skip
    assert modelfile.builtin_models_for(["a", "b"]) == []


def test_a_built_in_name_works_wherever_a_model_path_does(builtin_folder, small_files, tmp_path, model_file):
    code, _, err = run_cli("segment", "tiny-v0", small_files["test_tomo"], "-o", tmp_path / "by_name", "--quiet")
    assert code == 0, err
    code, _, err = run_cli("segment", model_file, small_files["test_tomo"], "-o", tmp_path / "by_path", "--quiet")
    assert code == 0, err
    with (
        read_labels(tmp_path / "by_name/test_tomo_labels.mrc") as a,
        read_labels(tmp_path / "by_path/test_tomo_labels.mrc") as b,
    ):
        assert np.array_equal(a.data, b.data)
    code, out, _ = run_cli("info", "tiny-v0")
    assert code == 0 and '"arch": "unet"' in out
    assert read_model_info("tiny-v0").class_names[0] == "microtubule"  # the Python API too
    code, _, err = run_cli("segment", "no-such-model", small_files["test_tomo"], "-o", tmp_path / "x")
    assert_clean_error(code, err, "no-such-model", "tiny-v0", "annotomo models")


@pytest.mark.slow
def test_the_shipped_built_in_model_loads_and_annotates_a_simulated_tomogram(default_synthetic):
    rows = json.loads(run_cli("models", "--json")[1])
    assert rows, "no built-in model ships with the package"
    from annotomo import Predictor, robust_normalization
    from annotomo.metrics import segmentation_scores

    for row in rows:
        assert row["megabytes"] < 10 and row["classes"] == ["microtubule", "ribosome", "membrane", "double_membrane"]
        predictor = Predictor.from_file(row["name"])
        assert "randomised" in read_model_info(row["name"]).provenance["training_data"]
        sim = default_synthetic
        labels = predictor.predict_block(sim.tomogram[:24], robust_normalization(sim.tomogram), halo=0)
        scores = segmentation_scores(sim.labels[:24], labels, sim.class_names)
        assert scores["mean_dice"] > 0.5, scores  # with zero labels of this tomogram


@pytest.mark.slow
def test_segmenting_with_inverted_contrast_gives_the_labels_of_the_normal_tomogram(model_file, small_files, tmp_path):
    from annotomo.volumes import open_volume

    with open_volume(small_files["test_tomo"]) as vol:
        write_volume(tmp_path / "bright.mrc", -np.asarray(vol.data), vol.voxel_size)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        normal = segment(model_file, [small_files["test_tomo"]], tmp_path / "normal", **QUIET)[0]
        flipped = segment(model_file, [tmp_path / "bright.mrc"], tmp_path / "flipped", invert_contrast=True, **QUIET)[0]
    assert not [w for w in caught if "skewed" in str(w.message)]
    with read_labels(normal["labels"]) as a, read_labels(flipped["labels"]) as b:
        assert np.array_equal(a.data, b.data)  # bit for bit: the same normalised voxels
    code, _, err = run_cli("segment", model_file, tmp_path / "bright.mrc", "-o", tmp_path / "warned", "--quiet")
    assert code == 0, err
    assert "bright.mrc: intensities are skewed towards bright values" in err and "--invert-contrast" in err
    code, _, err = run_cli(
        "segment", model_file, small_files["test_tomo"], "-o", tmp_path / "wrong", "--quiet", "--invert-contrast"
    )
    assert "drop --invert-contrast" in err
    assert not list(tmp_path.glob("bright.mrc.*"))  # the input is not rewritten


def _finetune_config(**kw):
    return TrainConfig(**{**dict(iterations=4, epoch_iterations=2, patch=64, batch_size=2), **kw})


@pytest.mark.slow
def test_fine_tuning_keeps_the_parents_architecture_normalisation_and_pixel_size(tmp_path, small_pair):
    parent = save_untrained_model(
        tmp_path / "parent.annotomo", context_slices=3, widths=(8, 12, 16, 24), pixel_size=20.0
    )
    sim = small_pair[0]
    # training data at 28 A: resampled to the parent's 20 A
    write_volume(tmp_path / "t.mrc", sim.tomogram, (28.0,) * 3)
    write_volume(tmp_path / "l.mrc", sim.labels, (28.0,) * 3)
    out = tmp_path / "child.annotomo"
    train(
        [tmp_path / "t.mrc"],
        [tmp_path / "l.mrc"],
        list(sim.class_names),
        out,
        _finetune_config(context_slices=5),
        init=parent,
        **QUIET,
    )
    info = read_model_info(out)
    assert (info.context_slices, info.pixel_size, info.arch_params["widths"]) == (3, 20.0, [8, 12, 16, 24])
    shape = info.provenance["training_tomograms"][0]["shape"]
    assert shape == [int(round(n * 28 / 20)) for n in sim.tomogram.shape]  # resampled for training
    parent_record = info.provenance["parent"]
    assert parent_record["model"] == str(parent) and len(parent_record["sha256"]) == 64
    assert parent_record["class_names"] == list(sim.class_names)


@pytest.mark.slow
def test_fine_tuning_starts_from_the_parents_weights(tmp_path, small_files, model_file):
    """One iteration at a tiny learning rate: the child is the parent up to that step."""
    out = tmp_path / "child.annotomo"
    config = _finetune_config(learning_rate=1e-9, iterations=1, epoch_iterations=1)
    train(
        [small_files["train_tomo"]],
        [small_files["train_labels"]],
        ["microtubule", "ribosome", "membrane", "double_membrane"],
        out,
        config,
        init=model_file,
        **QUIET,
    )
    child, parent = load_model(out)[0].state_dict(), load_model(model_file)[0].state_dict()
    conv = [k for k in parent if k.endswith("weight") and parent[k].dim() == 4]
    assert all(torch.allclose(child[k], parent[k], atol=1e-6) for k in conv)


@pytest.mark.slow
def test_fine_tuning_for_new_features_keeps_the_shared_outputs_and_says_so(tmp_path, small_pair, model_file):
    sim = small_pair[0]
    labels = np.where(sim.labels == 2, 1, np.where(sim.labels == 0, 0, 255)).astype(np.uint8)  # ribosomes only
    messages = []
    out = tmp_path / "child.annotomo"
    config = _finetune_config(learning_rate=1e-9, iterations=1, epoch_iterations=1)
    train([sim.tomogram], [labels], ["ribosome_new"], out, config, init=model_file, progress=False, log=messages.append)
    assert any(
        "output layer starts afresh for ribosome_new" in m and "kept from the model: background" in m for m in messages
    ), messages
    child, parent = load_model(out)[0], load_model(model_file)[0]
    per_class = 16  # fold 4: 16 output channels per class
    assert torch.allclose(child.head.weight[:per_class], parent.head.weight[:per_class], atol=1e-6)  # background
    assert child.head.weight.shape[0] == 2 * per_class


@pytest.mark.slow
def test_train_init_through_the_cli(tmp_path, small_files, model_file):
    out = tmp_path / "child.annotomo"
    code, _, err = run_cli(
        "train",
        "--tomogram",
        small_files["train_tomo"],
        "--labels",
        small_files["train_labels"],
        "--init",
        model_file,
        "--out",
        out,
        "--iterations",
        2,
        "--quiet",
    )
    assert code == 0, err
    assert read_model_info(out).provenance["parent"]["model"] == str(model_file)
    code, _, err = run_cli(
        "train",
        "--tomogram",
        small_files["train_tomo"],
        "--labels",
        small_files["train_labels"],
        "--init",
        model_file,
        "--out",
        tmp_path / "x.annotomo",
        "--context-slices",
        3,
    )
    assert_clean_error(code, err, "fine-tuning keeps", "--context-slices")


def _train_and_tell(tmp_path, tomogram, labels, names, config=None, **kw):
    """Train briefly with `train`'s defaults; (the model's parent or None, the messages)."""
    said = []
    out = tmp_path / "m.annotomo"
    train([tomogram], [labels], names, out, config or _finetune_config(), progress=False, overwrite=True,
          log=said.append, **kw)  # fmt: skip
    parent = (read_model_info(out).provenance or {}).get("parent")
    said.append(json.loads(out.with_name(out.name + ".log.json").read_text())["config"]["learning_rate"])
    return (parent or {}).get("model"), said


@pytest.mark.slow
def test_training_starts_from_the_built_in_model_that_knows_the_features(tmp_path, small_pair):
    sim = small_pair[0]
    write_volume(tmp_path / "t.mrc", sim.tomogram, (28.0,) * 3)
    write_volume(tmp_path / "l.mrc", sim.labels, (28.0,) * 3)
    names = list(sim.class_names)
    parent, said = _train_and_tell(tmp_path, tmp_path / "t.mrc", tmp_path / "l.mrc", names)
    assert parent == "cellular-v2"
    assert any("starting from the built-in model cellular-v2" in str(m) and "--from-scratch" in str(m) for m in said)
    assert said[-1] == FINE_TUNING_LEARNING_RATE  # fine-tuning's lower rate, recorded in the log
    info = read_model_info(tmp_path / "m.annotomo")
    assert info.arch_params == read_model_info("cellular-v2").arch_params and info.pixel_size == 28.0

    parent, said = _train_and_tell(tmp_path, tmp_path / "t.mrc", tmp_path / "l.mrc", names, init=None)
    assert parent is None and not any("cellular-v2" in str(m) for m in said)  # asked for a new network
    assert said[-1] == NEW_NETWORK_LEARNING_RATE
    parent, said = _train_and_tell(tmp_path, tmp_path / "t.mrc", tmp_path / "l.mrc", ["a", "b", "c", "d"])
    assert parent is None and not any("built-in" in str(m) for m in said)  # other features: nothing to start from


@pytest.mark.parametrize(
    "case, why",
    [
        ("pixel size 10", "t.mrc has 10 A pixels and it works at 28 A"),
        ("no pixel size", "the pixel size of the array is unknown"),
        ("3 context slices", "5 context slices and these settings differ"),
        ("inverted contrast", "dense matter is dark"),
    ],
)
@pytest.mark.slow
def test_the_automatic_start_trains_anew_where_the_built_in_model_does_not_fit(tmp_path, small_pair, case, why):
    sim = small_pair[0]
    tomogram, labels, config = tmp_path / "t.mrc", tmp_path / "l.mrc", _finetune_config()
    write_volume(tomogram, sim.tomogram, ((10.0,) if case == "pixel size 10" else (28.0,)) * 3)
    write_volume(labels, sim.labels, ((10.0,) if case == "pixel size 10" else (28.0,)) * 3)
    if case == "no pixel size":
        tomogram, labels = sim.tomogram, sim.labels
    config.context_slices = 3 if case == "3 context slices" else 5
    config.invert_contrast = case == "inverted contrast"
    parent, said = _train_and_tell(tmp_path, tomogram, labels, list(sim.class_names), config)
    assert parent is None
    assert [m for m in said[:-1] if "built-in model cellular-v2 knows these features, but" in m and why in m], said
    if case == "pixel size 10":  # a new network at the data's own pixel size, not resampled to 28 A
        assert read_model_info(tmp_path / "m.annotomo").pixel_size == 10.0


@pytest.mark.slow
def test_cli_from_scratch_trains_a_new_network(tmp_path, small_files):
    out = tmp_path / "new.annotomo"
    args = ["train", "--tomogram", small_files["train_tomo"], "--labels", small_files["train_labels"],
            "--out", out, "--iterations", 2, "--patch", 64, "--batch-size", 2, "--quiet"]  # fmt: skip
    code, stdout, err = run_cli(*args, "--from-scratch")
    assert code == 0, err
    assert "cellular-v2" not in stdout and (read_model_info(out).provenance or {}).get("parent") is None
    code, _, err = run_cli(*args, "--from-scratch", "--init", "cellular-v2", "--overwrite")
    assert_clean_error(code, err, "--from-scratch", "contradict")
    code, stdout, err = run_cli(*args, "--overwrite")
    assert code == 0, err
    assert "starting from the built-in model cellular-v2" in stdout
    assert read_model_info(out).provenance["parent"]["model"] == "cellular-v2"


@pytest.mark.slow
def test_the_automatic_start_fine_tunes_the_built_in_model_for_some_of_its_features(tmp_path, small_pair):
    sim = small_pair[0]
    membrane, microtubule = SYNTH_CLASSES.index("membrane") + 1, SYNTH_CLASSES.index("microtubule") + 1
    labels = np.select([sim.labels == membrane, sim.labels == microtubule], [1, 2], 0).astype(np.uint8)
    write_volume(tmp_path / "t.mrc", sim.tomogram, (28.0,) * 3)
    write_volume(tmp_path / "l.mrc", labels, (28.0,) * 3)
    config = _finetune_config(learning_rate=1e-9, iterations=1, epoch_iterations=1)
    parent, said = _train_and_tell(
        tmp_path, tmp_path / "t.mrc", tmp_path / "l.mrc", ["membrane", "microtubule"], config
    )
    assert parent == "cellular-v2"
    assert any("cellular-v2, which knows these features (its ribosome, double_membrane count as background" in str(m)
               for m in said), said  # fmt: skip
    assert any("outputs for ribosome, double_membrane are dropped" in str(m) for m in said), said
    child, builtin = load_model(tmp_path / "m.annotomo")[0], load_model("cellular-v2")[0]
    rows = 16  # fold 4: 16 output channels per class
    for new, old in ((0, 0), (1, membrane), (2, microtubule)):  # each feature keeps its own outputs
        assert torch.allclose(child.head.weight[new * rows : (new + 1) * rows],
                              builtin.head.weight[old * rows : (old + 1) * rows], atol=1e-6)  # fmt: skip
    assert child.head.weight.shape[0] == 3 * rows


@pytest.mark.slow
def test_the_automatic_start_fine_tunes_the_built_in_model_for_new_features_at_the_new_network_rate(tmp_path):
    sim = simulate(shape=(32, 192, 192), seed=11, label_actin=True, actin_density=4)
    assert sim.class_names == (*SYNTH_CLASSES, "actin") and (sim.labels == 5).any()
    tomogram, config = tmp_path / "t.mrc", _finetune_config(iterations=1, epoch_iterations=1)
    write_volume(tomogram, sim.tomogram, (28.0,) * 3)

    def labels_for(names):
        path = tmp_path / f"l_{'_'.join(names)}.mrc"
        index = [(*SYNTH_CLASSES, "actin").index(n) + 1 for n in names]
        write_volume(path, np.select([sim.labels == i for i in index], range(1, len(names) + 1), 0).astype(np.uint8),
                     (28.0,) * 3)  # fmt: skip
        return path

    everything = list(sim.class_names)  # all four of cellular-v2's features and actin
    parent, said = _train_and_tell(tmp_path, tomogram, labels_for(everything), everything, config)
    assert parent == "cellular-v2"
    known = "microtubule, ribosome, membrane, double_membrane of these features (it learns actin anew)"
    assert any(f"built-in model cellular-v2, which knows {known}" in str(m) for m in said), said
    assert said[-1] == NEW_NETWORK_LEARNING_RATE  # a feature new to the model: the new-network rate
    assert load_model(tmp_path / "m.annotomo")[0].head.weight.shape[0] == 6 * 16  # background + 5, fold 4

    some = ["actin", "membrane"]  # some of its features and a new one: fine-tuned too
    parent, said = _train_and_tell(tmp_path, tomogram, labels_for(some), some, config)
    assert parent == "cellular-v2" and said[-1] == NEW_NETWORK_LEARNING_RATE
    told = "which knows membrane of these features (its microtubule, ribosome, double_membrane count as background"
    assert any(told in str(m) and "(it learns actin anew)" in str(m) for m in said), said
    parent, said = _train_and_tell(tmp_path, tomogram, labels_for(["actin"]), ["actin"], config)
    assert parent is None and not any("built-in" in str(m) for m in said), said  # none of its features
    parent, said = _train_and_tell(tmp_path, tomogram, labels_for(["membrane"]), ["membrane"], config)
    assert parent == "cellular-v2" and said[-1] == FINE_TUNING_LEARNING_RATE  # features it knows: the lower rate
