"""The model says where it is unsure (`--uncertainty`) and where to annotate next (`annotomo suggest`)."""

import json

import numpy as np
import pytest
from helpers import assert_clean_error, run_cli

from annotomo.api import segment_array
from annotomo.uncertainty import MEASURES, average_precision, uncertainty
from annotomo.volumes import open_volume, read_labels, write_volume


def test_the_measures_are_zero_where_one_class_is_sure_and_one_where_all_are_equal():
    sure = np.zeros((4, 2, 2), np.float32)
    sure[1] = 1.0
    even = np.full((4, 2, 2), 0.2, np.float32)  # with background 0.2: five equal classes
    for measure in MEASURES:
        assert np.allclose(uncertainty(sure, measure), 0, atol=1e-6)
        assert np.allclose(uncertainty(even, measure), 1, atol=1e-5)
    with pytest.raises(ValueError, match="unknown uncertainty measure"):
        uncertainty(sure, "variance")


def test_average_precision_ranks_errors():
    errors = np.array([1, 0, 1, 0, 0], bool)
    assert average_precision(np.array([0.9, 0.1, 0.8, 0.2, 0.3]), errors) == 1.0
    assert average_precision(np.array([0.1, 0.9, 0.2, 0.8, 0.7]), errors) == pytest.approx((1 / 4 + 2 / 5) / 2)


@pytest.mark.slow
def test_uncertainty_is_higher_on_wrong_voxels_than_on_right_ones(small_pair):
    test = small_pair[1]
    labels, _, unsure = segment_array("cellular-v2", test.tomogram, (28.0,) * 3, uncertainty=True)
    plain, _ = segment_array("cellular-v2", test.tomogram, (28.0,) * 3)
    assert np.array_equal(labels, plain)  # asking for the uncertainty changes no label
    assert unsure.dtype == np.float32 and unsure.shape == labels.shape and 0 <= unsure.min() <= unsure.max() <= 1
    wrong = labels != test.labels
    assert 0 < wrong.mean() < 0.2
    assert unsure[wrong].mean() > 5 * unsure[~wrong].mean()
    assert average_precision(unsure, wrong) > 5 * wrong.mean()


@pytest.mark.slow
def test_segment_writes_the_uncertainty_on_the_labels_grid_and_its_slice_summary(tmp_path, small_pair):
    tomo = tmp_path / "t.mrc"
    write_volume(tomo, small_pair[1].tomogram, (28.0,) * 3, origin=(0.0, 56.0, 84.0))
    code, _, err = run_cli("segment", "cellular-v2", tomo, "-o", tmp_path / "out", "--uncertainty", "--quiet")
    assert code == 0, err
    with (
        open_volume(tmp_path / "out" / "t_uncertainty.mrc") as u,
        read_labels(tmp_path / "out" / "t_labels.mrc") as lab,
    ):
        assert u.data.dtype == np.float32 and u.shape == lab.shape
        assert u.voxel_size == lab.voxel_size == (28.0,) * 3 and u.origin == lab.origin == (0.0, 56.0, 84.0)
        assert 0 <= float(np.min(u.data)) and float(np.max(u.data)) <= 1
        means = [float(np.mean(u.data[z])) for z in range(u.shape[0])]
    manifest = json.loads((tmp_path / "out" / "annotomo-manifest.json").read_text())
    (entry,) = manifest["tomograms"].values()
    assert entry["options"]["uncertainty"] is True
    assert np.allclose(entry["summary"]["slice_uncertainty"], means, atol=1e-4)


@pytest.fixture
def cell(tmp_path, small_pair):
    sim = small_pair[1]
    tomo, labels = tmp_path / "cell_tomo.mrc", tmp_path / "sparse.mrc"
    write_volume(tomo, sim.tomogram, (28.0,) * 3)
    sparse = np.full(sim.labels.shape, 255, np.uint8)
    sparse[[10, 20]] = sim.labels[[10, 20]]
    write_volume(labels, sparse, (28.0,) * 3, class_names=sim.class_names)
    return tomo, labels, sim


@pytest.mark.slow
def test_suggest_prints_json_slices_away_from_the_annotated_ones(cell):
    tomo, labels, _ = cell
    code, out, err = run_cli("suggest", "cellular-v2", tomo, "--labels", labels, "-n", 4, "--json")
    assert code == 0, err
    places = json.loads(out)
    assert isinstance(places, list) and 1 <= len(places) <= 4
    for p in places:
        assert set(p) == {"z", "score", "features"} and isinstance(p["z"], int) and 0 <= p["score"] <= 1
        assert min(abs(p["z"] - 10), abs(p["z"] - 20)) > 3  # not annotated, nor next to what is
    assert [p["score"] for p in places] == sorted((p["score"] for p in places), reverse=True)
    zs = sorted(p["z"] for p in places)
    assert all(b - a > 3 for a, b in zip(zs, zs[1:], strict=False))
    shown = set().union(*(p["features"] for p in places))
    assert {"microtubule", "membrane"} <= shown


@pytest.mark.slow
def test_suggest_regions_are_boxes_inside_the_slice_and_a_table_without_json(cell):
    tomo, _, sim = cell
    code, out, err = run_cli("suggest", "cellular-v2", tomo, "--region", 64, "-n", 3, "--json")
    assert code == 0, err
    places = json.loads(out)
    assert len(places) == 3
    for p in places:
        assert set(p) == {"z", "score", "features", "y0", "x0", "y1", "x1"}
        assert p["y1"] - p["y0"] == p["x1"] - p["x0"] == 64 and 0 <= p["y0"] and p["x1"] <= sim.labels.shape[2]
    code, out, err = run_cli("suggest", "cellular-v2", tomo, "-n", 2, "--quiet")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["rank", "z", "score"], out


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["-n", "0"], "-n 0"),
        (["--region", "999"], "--region 999"),
        (["--labels", "{other}"], "other.mrc"),
        (["--labels", "{unknown}"], "actin"),
    ],
)
def test_suggest_refuses_bad_input_in_one_line(tmp_path, cell, extra, fragment):
    tomo, _, sim = cell
    write_volume(tmp_path / "other.mrc", np.zeros((4, 8, 8), np.uint8), (28.0,) * 3)
    write_volume(tmp_path / "unknown.mrc", np.zeros(sim.labels.shape, np.uint8), (28.0,) * 3, class_names=["actin"])
    extra = [e.format(other=tmp_path / "other.mrc", unknown=tmp_path / "unknown.mrc") for e in extra]
    before = sorted(tmp_path.iterdir())
    code, out, err = run_cli("suggest", "cellular-v2", tomo, *extra, "--json")
    assert_clean_error(code, err, fragment)
    assert out == "" and sorted(tmp_path.iterdir()) == before


def test_suggest_names_an_unreadable_tomogram(tmp_path):
    bad = tmp_path / "bad.mrc"
    bad.write_bytes(b"not a tomogram")
    code, _, err = run_cli("suggest", "cellular-v2", bad)
    assert_clean_error(code, err, "bad.mrc")


def test_the_strip_shows_uncertainty_along_z_over_the_annotated_slices():
    from annotomo.viewer import layers as L

    picture = L.strip_image([0.0, 0.5, 1.0, 0.0], [False, True, False, False], width=8, height=8)
    assert picture.shape == (8, 8, 4) and picture.dtype == np.uint8
    top, bottom = picture[0, :, 0], picture[-1, :, 1]
    assert top[4] > top[2] > top[0]  # brighter where the slice is less certain (2 columns per slice)
    assert bottom[2] == bottom[3] == 200 and bottom[0] == bottom[6] == 40  # green where annotated
    annotation = np.full((4, 3, 3), 255, np.uint8)
    annotation[1] = 0
    meta = {"kind": "annotation", "mode": "regions", "class_names": ["a"]}
    assert L.annotated_slices([(annotation, None)], 4).tolist() == [False, True, False, False]
    assert L.annotated_slices([], 4).tolist() == [False] * 4
    painted = np.zeros((4, 3, 3), np.uint8)
    painted[2, 1, 1] = 1
    assert L.annotated_slices([(painted, meta)], 4).tolist() == [False, False, True, False]


@pytest.mark.slow
def test_training_previews_with_the_current_weights_at_a_bounded_cost(tmp_path, small_files, small_pair):
    from helpers import SMALL_WIDTHS

    import annotomo

    seen = []

    def preview(predictor):
        block = small_pair[1].tomogram[:9]
        labels, _ = segment_array(predictor, block, (28.0,) * 3, match_spectrum=False)
        seen.append(labels.shape)

    config = annotomo.TrainConfig(iterations=40, epoch_iterations=20, patch=64, batch_size=4, seed=0)
    config.arch_params = dict(widths=SMALL_WIDTHS)
    result = annotomo.train(
        [small_files["train_tomo"]],
        [small_files["train_labels"]],
        list(small_pair[0].class_names),
        tmp_path / "m.annotomo",
        config,
        progress=False,
        log=lambda *a: None,
        init=None,
        preview=preview,
        preview_seconds=0.0,
    )
    assert result.iterations == 40 and seen and all(s == (9, 192, 192) for s in seen)
    assert len(seen) < 40  # spaced, not one per iteration
