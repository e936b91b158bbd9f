"""Spectrum matching: the spectra measured, the filter that matches them, and segmenting with it."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from helpers import QUIET, assert_same_labels, run_cli, save_untrained_model
from scipy import ndimage

from annotomo import TrainConfig, segment, simulate, train
from annotomo.batch import normalization_of, plan_job
from annotomo.modelfile import load_model, read_model_info, save_model
from annotomo.normalize import robust_normalization
from annotomo.predict import Predictor
from annotomo.resample import ResampledVolume
from annotomo.spectrum import (
    BINS,
    CONTENT_BINS,
    QUIET_FINE_SCALES,
    filter_slices,
    fine_to_middle_power,
    matching_gain,
    volume_power,
)
from annotomo.volumes import read_labels, write_volume

FIRST_IMAGING_BIN = CONTENT_BINS


def white_noise(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def smooth(volume, sigma=1.5):
    """Each xy slice low-passed (a denoised or SIRT-like look), scaled back to unit variance."""
    out = ndimage.gaussian_filter(volume, (0, sigma, sigma))
    return (out / out.std()).astype(np.float32)


def test_white_noise_has_a_flat_spectrum_and_a_low_pass_removes_its_high_frequencies():
    noise = white_noise((8, 256, 256))
    power = volume_power(noise)
    assert power.max() / power.min() < 1.25  # flat up to the estimate's scatter
    low = volume_power(ndimage.gaussian_filter(noise, (0, 2, 2)))
    assert low[BINS // 2] < 1e-3 * low[FIRST_IMAGING_BIN]  # a Gaussian of 2 pixels leaves nothing at Nyquist / 2
    assert np.all(np.diff(low[FIRST_IMAGING_BIN : BINS // 2]) < 0)


def test_the_spectrum_does_not_depend_on_the_slice_size():
    small, large = volume_power(white_noise((8, 128, 128))), volume_power(white_noise((2, 512, 384), seed=1))
    assert abs(small[4:].mean() / large[4:].mean() - 1) < 0.05  # the lowest bins of a small slice hold few pixels
    assert np.allclose(small[4:], large[4:], rtol=0.3)


def test_a_spectrum_inside_the_training_range_is_kept_and_one_outside_is_brought_to_its_edge():
    source = np.linspace(4.0, 1.0, BINS)
    assert matching_gain(source, [source * 0.5, source * 2.0]) == (1.0,) * BINS
    raised = np.array(matching_gain(source, [source * 4.0, source * 9.0]))
    assert np.allclose(raised, 2.0)  # amplitude gain: the square root of the power ratio to the nearest edge
    lowered = np.array(matching_gain(source, [source / 16]))
    assert np.allclose(lowered, 0.25)


def test_the_lowest_frequencies_follow_the_first_imaging_bin():
    """Below CONTENT_FREQUENCY two cells of one condition differ in content, not imaging: no own gain."""
    target = np.ones(BINS)
    target[:FIRST_IMAGING_BIN] = 100.0
    gain = matching_gain(np.ones(BINS), [target])
    assert gain == (1.0,) * BINS


def test_matching_gives_a_noisy_tomogram_the_spectrum_of_a_smooth_one():
    """A denoised-looking training tomogram, and a new one with the same structure plus noise."""
    target = volume_power(smooth(white_noise((6, 256, 256), seed=1)))
    noisy = smooth(white_noise((6, 256, 256), seed=2)) + np.float32(0.7) * white_noise((6, 256, 256), seed=3)
    gain = matching_gain(volume_power(noisy), [target])
    assert max(gain) < 1.1 and gain[-1] < 0.05  # the noise is taken away, the structure kept
    measured = volume_power(filter_slices(noisy.copy(), gain))
    band = slice(FIRST_IMAGING_BIN, BINS // 2)  # where the target holds power (a Gaussian falls to ~0 beyond)
    assert np.allclose(measured[band], target[band], rtol=0.1)


def test_filtering_keeps_the_mean_and_never_rings_at_the_slice_edges():
    block = smooth(white_noise((2, 96, 130), seed=3)) + np.float32(0.7)
    out = filter_slices(block.copy(), tuple(np.linspace(1.0, 3.0, BINS)))
    assert out.shape == block.shape and out.dtype == np.float32
    assert abs(out.mean() - block.mean()) < 1e-3
    edge, inner = np.abs(out[:, :4] - block[:, :4]).mean(), np.abs(out[:, 40:50] - block[:, 40:50]).mean()
    assert edge < 2 * inner


@pytest.fixture(scope="module")
def quick_model(tmp_path_factory, small_files, small_pair):
    """A model trained for a few iterations on the small training cell: what training stores."""
    out = tmp_path_factory.mktemp("spectra") / "quick.annotomo"
    config = TrainConfig(
        iterations=2, epoch_iterations=2, patch=64, batch_size=2, arch_params=dict(widths=(8, 8, 8, 8))
    )
    train(
        [small_files["train_tomo"]],
        [small_files["train_labels"]],
        list(small_pair[0].class_names),
        out,
        config,
        **QUIET,
    )
    return out


def test_training_stores_each_tomograms_spectrum_and_leaves_its_own_data_as_it_is(quick_model, small_pair):
    code, out, _ = run_cli("info", quick_model)
    assert code == 0 and json.loads(out)["training_spectra"] == "1 training tomogram (see annotomo.spectrum)"
    info = read_model_info(quick_model)
    assert info.can_match_spectrum
    assert len(info.training_spectra) == 1 and len(info.training_spectra[0]) == BINS
    norm = info.normalization_for(small_pair[0].tomogram, match_spectrum=True)
    assert norm.spectrum_gain is None  # the training tomogram is its own range: nothing to filter
    other = info.normalization_for(smooth(small_pair[1].tomogram, 1.0), match_spectrum=True)
    assert max(other.spectrum_gain) > 1.5  # a smoother tomogram gets its high frequencies back


def normalised_power(volume):
    return volume_power(robust_normalization(volume).apply(volume))


@pytest.mark.slow
def test_denoised_tomograms_hold_little_power_at_fine_scales_and_raw_ones_keep_their_noise():
    def ratio(**conditions):
        return fine_to_middle_power(normalised_power(simulate(shape=(32, 192, 192), seed=11, **conditions).tomogram))

    raw = {
        "WBP": ratio(),
        "WBP, SNR 0.1": ratio(snr=0.1),
        "SIRT-like, 5 iterations, SNR 1, 6 um": ratio(reconstruction="sirt", sirt_iterations=5, snr=1.0, defocus=6.0),
    }
    denoised = {"SNR 0.1": ratio(reconstruction="denoised", snr=0.1), "SNR 1": ratio(reconstruction="denoised", snr=1)}
    assert min(raw.values()) > 2 * QUIET_FINE_SCALES and max(denoised.values()) < QUIET_FINE_SCALES / 2, (raw, denoised)


@pytest.mark.slow
def test_training_on_denoised_tomograms_adds_noise_unless_told_not_to(tmp_path, small_pair, quick_model):
    denoised = simulate(shape=(32, 192, 192), seed=11, reconstruction="denoised")
    names = list(denoised.class_names)
    tiny = dict(iterations=2, epoch_iterations=2, patch=64, batch_size=2, arch_params=dict(widths=(8, 8, 8, 8)))
    recipes = {}
    for name, config in [("auto", TrainConfig(**tiny)), ("none", TrainConfig(**tiny, noise_fraction=0.0))]:
        said = []
        train(
            [denoised.tomogram],
            [denoised.labels],
            names,
            tmp_path / f"{name}.annotomo",
            config,
            progress=False,
            log=said.append,
            init=None,
        )
        recipes[name] = read_model_info(tmp_path / f"{name}.annotomo").provenance["config"]["noise_fraction"], said
    assert recipes["auto"][0] == 0.3 and any("extra noise on 30% of patches" in m for m in recipes["auto"][1])
    assert recipes["none"][0] == 0.0 and not any("extra noise" in m for m in recipes["none"][1])
    # a raw (WBP) tomogram keeps the default recipe
    assert read_model_info(quick_model).provenance["config"]["noise_fraction"] == 0.0


@pytest.fixture(scope="module")
def smooth_trained_model(tmp_path_factory, small_pair):
    """Random weights, but training spectra of a smooth (denoised-looking) tomogram: matching does work."""
    path = save_untrained_model(tmp_path_factory.mktemp("smooth") / "smooth.annotomo")
    model, info = load_model(path)
    info.training_spectra = [list(normalised_power(smooth(small_pair[0].tomogram)))]
    save_model(path, model, info)
    return path


def test_a_sub_volume_with_its_halo_gives_the_whole_tomograms_labels_with_matching(smooth_trained_model, small_pair):
    vol = small_pair[1].tomogram
    predictor = Predictor.from_file(smooth_trained_model)
    norm = predictor.info.normalization_for(vol, match_spectrum=True)
    assert min(norm.spectrum_gain) < 0.5  # noisier than the training data: its high frequencies are damped
    whole = np.zeros(vol.shape, np.uint8)
    predictor.segment(vol, norm, whole, progress=False)
    h = predictor.halo[0]
    assert_same_labels(predictor.predict_block(vol[10 - h : 20 + h], norm), whole[10:20], predictor)
    plain = np.zeros(vol.shape, np.uint8)
    predictor.segment(vol, replace(norm, spectrum_gain=None), plain, progress=False)
    assert np.mean(plain != whole) > 0.01  # the filter reaches the network


@pytest.mark.slow
def test_segment_matches_by_default_records_it_and_reruns_when_it_changes(smooth_trained_model, small_files, tmp_path):
    matched = segment(smooth_trained_model, [small_files["test_tomo"]], tmp_path / "a", **QUIET)[0]
    plain = segment(smooth_trained_model, [small_files["test_tomo"]], tmp_path / "b", match_spectrum=False, **QUIET)[0]
    with read_labels(matched["labels"]) as a, read_labels(plain["labels"]) as b:
        assert np.mean(a.data != b.data) > 0.01
    manifest = json.loads((tmp_path / "a" / "annotomo-manifest.json").read_text())
    (entry,) = manifest["tomograms"].values()
    assert entry["options"]["match_spectrum"] is True
    code, _, err = run_cli(
        "segment",
        smooth_trained_model,
        small_files["test_tomo"],
        "-o",
        tmp_path / "a",
        "--no-match-spectrum",
        "--overwrite",
        "--quiet",
    )
    assert code == 0, err
    with read_labels(matched["labels"]) as a, read_labels(plain["labels"]) as b:
        assert np.array_equal(a.data, b.data)  # redone as asked, not skipped as complete


def test_a_model_file_without_spectra_segments_as_before(model_file, small_files, tmp_path):
    assert not read_model_info(model_file).can_match_spectrum
    a = segment(model_file, [small_files["test_tomo"]], tmp_path / "a", **QUIET)[0]
    b = segment(model_file, [small_files["test_tomo"]], tmp_path / "b", match_spectrum=False, **QUIET)[0]
    with read_labels(a["labels"]) as x, read_labels(b["labels"]) as y:
        assert np.array_equal(x.data, y.data)


@pytest.mark.parametrize("name", ["cellular-v1", "cellular-v2"])
@pytest.mark.slow
def test_the_builtin_model_leaves_tomograms_like_its_training_conditions_as_they_are(tmp_path, name):
    info = read_model_info(name)
    assert info.can_match_spectrum and len(info.training_spectra) == 40
    for options in ({}, {"reconstruction": "sirt"}, {"snr": 0.15}):
        sim = simulate(shape=(24, 128, 128), seed=5, **options)
        gain = info.normalization_for(sim.tomogram, match_spectrum=True).spectrum_gain
        assert gain is None or np.all(np.abs(np.array(gain) - 1) < 0.1), (options, gain)


def test_matching_measures_the_spectrum_at_the_models_pixel_size(smooth_trained_model, small_pair, tmp_path):
    """A tomogram at 14 A is resampled to the model's 28 A before the network: its spectrum is measured there."""
    tomo = tmp_path / "fine.mrc"
    fine = ndimage.zoom(small_pair[1].tomogram[:16], (1, 2, 2), order=1)
    write_volume(tomo, fine, (28.0, 14.0, 14.0))
    info = read_model_info(smooth_trained_model)
    job = plan_job(tomo, {}, info)
    assert job.resampled and job.match_spectrum
    norm = normalization_of(job, info)
    seen = ResampledVolume(fine, (28.0, 14.0, 14.0), 28.0)
    plain = robust_normalization(fine)
    assert norm.spectrum_gain == matching_gain(volume_power(seen, plain), info.training_spectra)
    assert norm.spectrum_gain != info.normalization_for(fine, match_spectrum=True).spectrum_gain  # 14 A grid
