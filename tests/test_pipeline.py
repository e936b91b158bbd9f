"""Training learns, inference is seamless and consistent, outputs have the right geometry."""

import json

import numpy as np
import pytest
import torch
from helpers import assert_same_labels, chance_dice

from annotomo import Predictor, evaluate, load_model, read_model_info, robust_normalization, segment
from annotomo.metrics import segmentation_scores
from annotomo.predict import context_windows, distinct_slices
from annotomo.volumes import open_volume, read_labels, write_volume


@pytest.mark.slow
def test_trained_model_is_far_better_than_chance(trained_model, small_pair):
    path, result = trained_model
    test = small_pair[1]
    predictor = Predictor.from_file(path)
    out = np.zeros(test.labels.shape, np.uint8)
    predictor.segment(test.tomogram, robust_normalization(test.tomogram), out, progress=False)
    scores = segmentation_scores(test.labels, out, test.class_names)
    for k, name in enumerate(test.class_names, start=1):
        dice = scores["classes"][name]["dice"]
        assert dice > 5 * chance_dice(test.labels, k), f"{name}: Dice {dice:.3f}"
    assert scores["mean_dice"] > 0.5, scores
    assert result.history and result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_tiled_prediction_equals_whole_slice_prediction(model_file, small_pair):
    """No seams: tiles overlap by more than the network's reach. (In fp32: a random network's many near-ties
    flip with bf16 rounding, which differs between tile and slice shapes.)"""
    path = model_file
    vol = np.pad(small_pair[1].tomogram[10:14], ((0, 0), (0, 448), (0, 448)), mode="symmetric")  # 640 x 640
    norm = robust_normalization(vol)
    whole = Predictor.from_file(path, tile=4096, precision="fp32")
    tiled = Predictor.from_file(path, tile=384, overlap=256, precision="fp32")  # 2 x 2 tiles
    stacks = whole._stacks(norm.apply(vol), 2, 1)
    a = torch.softmax(whole.logits(stacks), 1)
    b = torch.softmax(tiled.logits(stacks), 1)
    assert a.shape == b.shape == (1, 5, 640, 640)
    diff = (a - b).abs()
    assert float(diff.max()) < 0.1, "a seam: tiled probabilities differ from the whole-slice ones"
    assert float(diff.mean()) < 0.001
    assert float((a.argmax(1) == b.argmax(1)).float().mean()) > 0.999


def test_tiles_blended_in_half_precision_agree_with_the_whole_slice(model_file, small_pair, monkeypatch):
    """Unbinned slices blend their tiles in float16 (to stay within the memory bound); force that path."""
    from annotomo.zmerge import SliceMerger

    path = model_file
    vol = np.pad(small_pair[1].tomogram[10:14], ((0, 0), (0, 448), (0, 448)), mode="symmetric")
    stacks = Predictor.from_file(path)._stacks(robust_normalization(vol).apply(vol), 2, 1)
    a = torch.softmax(Predictor.from_file(path, tile=4096, precision="fp32").logits(stacks), 1)
    monkeypatch.setattr(SliceMerger, "HALF_PRECISION_BYTES", 0)
    b = torch.softmax(Predictor.from_file(path, tile=384, overlap=256, precision="fp32").logits(stacks).float(), 1)
    diff = (a - b).abs()
    assert float(diff.max()) < 0.1 and float(diff.mean()) < 0.002
    assert float((a.argmax(1) == b.argmax(1)).float().mean()) > 0.999


def test_a_sub_volume_with_its_halo_gives_the_same_labels_as_the_whole(model_file, small_pair):
    path = model_file
    vol = small_pair[1].tomogram
    predictor = Predictor.from_file(path)
    norm = robust_normalization(vol)
    whole = np.zeros(vol.shape, np.uint8)
    predictor.segment(vol, norm, whole, progress=False)
    h = predictor.halo[0]
    assert h == 3  # 2 context slices (a 5-slice model) + 1 slice merged on each side
    block = predictor.predict_block(vol[10 - h : 20 + h], norm)
    assert_same_labels(block, whole[10:20], predictor)
    first = predictor.predict_block(vol[0 : 8 + h], norm, halo=0)[:8]
    assert_same_labels(first, whole[0:8], predictor)


def test_segmenting_in_small_batches_gives_the_labels_of_the_whole_block(model_file, small_pair):
    """Slab by slab (2 slices per network call, so slabs meet the faces with edge slices repeated) equals
    one block with the context clamped at its faces."""
    path = model_file
    vol = small_pair[1].tomogram[:11]
    norm = robust_normalization(vol)
    batched = Predictor.from_file(path, batch_pixels=2 * vol.shape[1] * vol.shape[2])
    assert batched._batch_slices(vol.shape) == 2
    out = np.zeros(vol.shape, np.uint8)
    batched.segment(vol, norm, out, progress=False)
    assert_same_labels(out, Predictor.from_file(path).predict_block(vol, norm, halo=0), batched)


def test_a_batch_that_does_not_fit_in_gpu_memory_is_split_and_later_batches_start_smaller(model_file, small_pair):
    """Out of GPU memory at 11 slices per network call: halves are tried (down to 1), the size that fits is
    kept for later calls, and the labels are those of the unsplit run (CPU here, with a simulated limit)."""
    path = model_file
    vol = small_pair[1].tomogram[:11]
    norm = robust_normalization(vol)
    expected = Predictor.from_file(path, device="cpu").predict_block(vol, norm, halo=0)
    limited = Predictor.from_file(path, device="cpu")
    network, calls = limited._network, []

    def at_most_three_slices(x):
        calls.append(len(x))
        if len(x) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return network(x)

    limited._network = at_most_three_slices
    assert np.array_equal(limited.predict_block(vol, norm, halo=0), expected)
    assert limited.max_network_batch == 2 and max(n for n in calls if n <= 3) == 2
    calls.clear()
    assert np.array_equal(limited.predict_block(vol, norm, halo=0), expected)
    assert calls and max(calls) == 2  # no more failed attempts

    def nothing_fits(x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    limited._network = nothing_fits
    with pytest.raises(torch.cuda.OutOfMemoryError):  # one slice that does not fit is an error for the caller
        limited.predict_block(vol[:3], norm, halo=0)


def test_running_out_of_gpu_memory_outside_the_network_splits_the_batch_too(model_file, small_pair, tmp_path):
    """On an H200 capped at 400 MB, splitting only the network's calls was not enough: what holds a batch's
    input and logits ran out too. Any out-of-memory error while a batch's logits are made splits it."""
    path = model_file
    vol = small_pair[1].tomogram[:9]
    norm = robust_normalization(vol)
    whole = Predictor.from_file(path, device="cpu")
    limited = Predictor.from_file(path, device="cpu")
    logits = limited._logits

    def holds_at_most_four_slices(stacks):
        if len(stacks) > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 172.00 MiB")
        return logits(stacks)

    limited._logits = holds_at_most_four_slices
    assert np.array_equal(limited.predict_block(vol, norm, halo=0), whole.predict_block(vol, norm, halo=0))
    assert limited.max_network_batch == 4
    write_volume(tmp_path / "t.mrc", vol, (28.0,) * 3)  # segment() too, with its slab-by-slab reading
    labels = []
    for name, predictor in (("whole", whole), ("limited", limited)):
        written = segment(predictor, [tmp_path / "t.mrc"], tmp_path / name, progress=False, log=lambda *a: None)
        with read_labels(written[0]["labels"]) as out:
            labels.append(np.array(out.data))
    assert np.array_equal(*labels)


def test_context_windows_are_views_of_the_slab():
    slab = np.random.default_rng(0).normal(size=(9, 6, 7)).astype(np.float32)
    windows = context_windows(slab, 5)
    assert windows.shape == (5, 5, 6, 7) and np.shares_memory(windows, slab)
    assert np.array_equal(windows, slab[np.arange(5)[:, None] + np.arange(5)[None, :]])
    assert np.array_equal(torch.from_numpy(windows).numpy(), windows)


def test_stacks_go_to_a_gpu_as_their_distinct_slices_and_are_rebuilt_there_unchanged():
    # On CUDA, _network_input sends the B + C - 1 distinct slices and rebuilds the stacks with unfold; the
    # same steps on the CPU must give the stacks exactly, for windows, rotated/flipped windows (TTA) too.

    slab = np.random.default_rng(0).normal(size=(9, 6, 7)).astype(np.float32)
    windows = context_windows(slab, 5)
    for stacks in (windows, np.rot90(windows, 1, axes=(2, 3)), np.rot90(windows, 3, axes=(2, 3))[..., ::-1]):
        slices = distinct_slices(stacks)
        assert slices.shape == (9,) + stacks.shape[2:] and np.shares_memory(slices, slab)
        rebuilt = torch.from_numpy(np.array(slices)).unfold(0, 5, 1).permute(0, 3, 1, 2)
        assert np.array_equal(rebuilt.numpy(), stacks)
    clamped = slab[np.clip(np.arange(-2, 3)[:, None] + np.arange(5)[None, :], 0, 8)]  # stacks copied whole
    assert distinct_slices(clamped) is None and distinct_slices(slab[:4, None]) is None


def test_context_stacks_at_the_faces_repeat_the_edge_slice_and_are_windows_too(model_file):
    predictor = Predictor.from_file(model_file)
    slab = np.random.default_rng(0).normal(size=(9, 6, 7)).astype(np.float32)
    for first, count in ((0, 3), (7, 2), (0, 9), (3, 2)):
        stacks = predictor._stacks(slab, first, count)
        wanted = np.clip(first - 2 + np.arange(count)[:, None] + np.arange(5)[None, :], 0, 8)
        assert np.array_equal(stacks, slab[wanted])
        assert len(distinct_slices(stacks)) == count + 4  # so a GPU gets each slice once here too
        assert np.shares_memory(stacks, slab) == (first >= 2 and first + count + 2 <= 9)


def test_a_sub_volume_without_z_smoothing_needs_only_the_context_halo(model_file, small_pair):
    path = model_file
    vol = small_pair[1].tomogram
    predictor = Predictor.from_file(path, z_smooth=0)
    norm = robust_normalization(vol)
    whole = np.zeros(vol.shape, np.uint8)
    predictor.segment(vol, norm, whole, progress=False)
    assert predictor.halo[0] == 2
    assert_same_labels(predictor.predict_block(vol[8:22], norm), whole[10:20], predictor)
    # Each slice is then the plain argmax of its own network output.
    logits = predictor.logits(predictor._stacks(norm.apply(vol), 15, 1))
    assert_same_labels(logits.argmax(1)[0].cpu().numpy(), whole[15], predictor)


def test_z_smoothing_overrules_a_one_slice_flicker(model_file, monkeypatch):
    from annotomo.zmerge import SliceMerger

    predictor = Predictor.from_file(model_file, z_smooth=1)
    logits = torch.zeros(7, 5, 4, 4)
    logits[:, 1] = 4.0  # class 1 everywhere ...
    logits[3, 2] = 4.5  # ... but slice 3 alone prefers class 2 by a little
    logits[4:, 3, 0, 0] = 8.0  # from slice 4 on, class 3 wins clearly at one pixel
    merger = SliceMerger(predictor.z_weights, 0, 7, probabilities=True)
    done = merger.add(0, logits[:4]) + merger.add(4, logits[4:])
    assert [z for z, _, _ in done] == list(range(7))
    labels = np.stack([lab for _, lab, _ in done])
    assert np.all(labels[:, 1:, 1:] == 1) and np.all(labels[3, 1:] == 1)
    assert list(labels[:, 0, 0]) == [1, 1, 1, 1, 3, 3, 3]  # a real boundary stays where it is
    probs = np.stack([p for _, _, p in done], axis=1)
    assert probs.shape == (4, 7, 4, 4) and probs.sum(0).max() <= 1.0 + 1e-5
    # Unsmoothed, slice 3 keeps its flicker.
    raw = Predictor.from_file(model_file, z_smooth=0)
    flicker = np.stack([lab for _, lab, _ in SliceMerger(raw.z_weights, 0, 7, False).add(0, logits)])
    assert np.all(flicker[3, 1:, 1:] == 2)
    # Large slices wait in float16: same decisions.
    monkeypatch.setattr(SliceMerger, "HALF_PRECISION_BYTES", 0)
    half = np.stack([lab for _, lab, _ in SliceMerger(predictor.z_weights, 0, 7, False).add(0, logits)])
    assert np.array_equal(half, labels)


@pytest.mark.slow
def test_test_time_augmentation_makes_labels_follow_rotations_and_flips(trained_model, small_pair):
    vol = small_pair[1].tomogram[8:20, :, :160]  # not square: rotations change the slice shape
    norm = robust_normalization(vol)
    tta = Predictor.from_file(trained_model[0], tta=True)
    plain = Predictor.from_file(trained_model[0])
    labels = tta.predict_block(vol, norm, halo=0)
    turned = tta.predict_block(np.ascontiguousarray(np.rot90(vol, 1, axes=(1, 2))[:, ::-1]), norm, halo=0)
    back = np.rot90(turned[:, ::-1], -1, axes=(1, 2))
    assert np.mean(back == labels) > 0.999  # equal up to float rounding at near-ties
    without = plain.predict_block(vol, norm, halo=0)
    assert 0.9 < np.mean(without == labels) < 1.0  # a different, nearby answer


def test_segment_writes_labels_and_probabilities_with_the_input_geometry(model_file, small_files, tmp_path):
    path = model_file
    written = segment(
        path, [small_files["test_tomo"]], tmp_path / "out", probabilities=True, progress=False, log=lambda *a: None
    )[0]
    names = read_model_info(path).class_names
    assert set(written) == {"labels", *names}
    with open_volume(small_files["test_tomo"]) as tomo, read_labels(written["labels"]) as lab:
        assert lab.shape == tomo.shape and lab.voxel_size == tomo.voxel_size and lab.data.dtype == np.uint8
        probs = []
        for name in names:
            with open_volume(written[name]) as p:
                assert p.data.dtype == np.float32 and p.shape == tomo.shape and p.voxel_size == tomo.voxel_size
                probs.append(np.array(p.data))
        probs = np.stack(probs)
        assert probs.min() >= 0 and probs.sum(0).max() <= 1.0001
        # Where a feature wins, its probability beats the others' and the background's.
        background = 1 - probs.sum(0)
        argmax = np.argmax(np.concatenate([background[None], probs]), axis=0)
        assert np.mean(argmax == lab.data) > 0.999
    assert not list((tmp_path / "out").glob(".*partial"))


@pytest.mark.parametrize("pixel_size", [28.0, 19.0], ids=["model grid", "resampled"])
def test_the_batch_progress_bar_ends_at_exactly_the_voxels_of_the_batch(
    model_file, small_pair, tmp_path, pixel_size, monkeypatch
):
    """The bar counts input voxels, also while a resampled copy is segmented, and never runs past its total."""
    import warnings

    from tqdm import TqdmWarning

    import annotomo.batch

    vols = []
    for k, shape in enumerate([(12, 48, 40), (9, 40, 56)]):
        vols.append(tmp_path / f"t{k}.mrc")
        write_volume(vols[-1], small_pair[1].tomogram[: shape[0], : shape[1], : shape[2]], (pixel_size,) * 3)
    seen = []
    original_close = annotomo.batch.BatchBar.close

    def close(self):
        seen.append((self.bar.n, self.bar.total))
        original_close(self)

    monkeypatch.setattr(annotomo.batch.BatchBar, "close", close)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        segment(model_file, vols, tmp_path / "out", progress=True, log=lambda *a: None)
    assert seen == [(12 * 48 * 40 + 9 * 40 * 56,) * 2]
    assert not [w for w in caught if issubclass(w.category, TqdmWarning)]
    resampled = [w for w in caught if "resampling to 28 A" in str(w.message)]
    assert len(resampled) == (2 if pixel_size != 28.0 else 0)


@pytest.mark.slow
def test_model_file_is_self_describing_and_data_only(trained_model, small_pair):
    path, result = trained_model
    info = read_model_info(path)
    assert info.class_names == list(small_pair[0].class_names)
    assert info.pixel_size == 28.0 and info.context_slices == 5 and info.arch == "unet"
    prov = info.provenance
    assert prov["iterations"] == result.best["iteration"] and prov["training_tomograms"][0]["shape"] == [32, 192, 192]
    model, _ = load_model(path)
    assert sum(p.numel() for p in model.parameters()) > 10_000
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8 : 8 + header_len])
    assert "annotomo" in header["__metadata__"]


def test_evaluate_scores_a_perfect_and_an_empty_prediction(small_files, tmp_path):
    from annotomo.volumes import write_volume

    perfect = evaluate(small_files["test_labels"], small_files["test_labels"])
    assert perfect["mean_dice"] == pytest.approx(1.0)
    with read_labels(small_files["test_labels"]) as truth:
        write_volume(tmp_path / "empty.mrc", np.zeros(truth.shape, np.uint8), truth.voxel_size)
    empty = evaluate(tmp_path / "empty.mrc", small_files["test_labels"], json_path=tmp_path / "s.json")
    assert empty["mean_dice"] == 0.0
    assert json.loads((tmp_path / "s.json").read_text())["mean_dice"] == 0.0


def test_unannotated_voxels_are_ignored_by_the_scores():
    truth = np.array([[[1, 1, 255, 255]]], np.uint8)
    pred = np.array([[[1, 1, 0, 2]]], np.uint8)
    scores = segmentation_scores(truth, pred, ["a", "b"])
    assert scores["classes"]["a"]["dice"] == 1.0 and scores["voxels_scored"] == 2


@pytest.mark.slow
def test_a_tomogram_at_half_the_pixel_size_is_resampled_and_segmented_nearly_as_well(trained_model, tmp_path):
    from annotomo import simulate
    from annotomo.volumes import write_volume

    path, _ = trained_model
    coarse = simulate(shape=(32, 192, 192), pixel_size=28.0, seed=21)
    fine = simulate(shape=(64, 384, 384), pixel_size=14.0, seed=21)  # the same cell, sampled twice as finely
    dice = {}
    for name, sim in (("coarse", coarse), ("fine", fine)):
        write_volume(tmp_path / f"{name}.mrc", sim.tomogram, (sim.pixel_size,) * 3)
        with pytest.warns(UserWarning, match="resampling") if name == "fine" else _no_warning():
            written = segment(path, [tmp_path / f"{name}.mrc"], tmp_path / "out", progress=False, log=lambda *a: None)[
                0
            ]
        with read_labels(written["labels"]) as lab:
            assert lab.shape == sim.labels.shape and lab.voxel_size == (sim.pixel_size,) * 3
            dice[name] = segmentation_scores(sim.labels, lab.data, sim.class_names)["mean_dice"]
    assert dice["fine"] > dice["coarse"] - 0.1, dice


def _no_warning():
    import contextlib
    import warnings

    @contextlib.contextmanager
    def ctx():
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            yield

    return ctx()
