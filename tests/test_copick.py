"""copick projects: a local project built with copick's own API from simulated cells; segment, pick and train
on it through the command line, and read everything back through copick. Skipped where copick is not
installed (it is in the test environment: `make test` installs the `copick` extra)."""

import json

import numpy as np
import pytest

copick = pytest.importorskip("copick")
pytestmark = pytest.mark.slow  # importing copick alone takes ~4 s: the whole file is in the full suite only

from annotomo.cli import main  # noqa: E402
from annotomo.synth import simulate  # noqa: E402

VOXEL = 28.0
OBJECTS = [
    dict(name="microtubule", is_particle=False, label=1, radius=125.0),
    dict(name="ribosome", is_particle=True, label=2, radius=130.0),
    dict(name="membrane", is_particle=False, label=3),
]


def make_project(folder, runs=("TS-1", "TS-2"), shape=(24, 96, 96)):
    """A filesystem copick project with `runs`, each a simulated tomogram "wbp" at 28 A and its true labels
    as the segmentation truth:truth:0 (object labels = annotomo's feature indices here)."""
    config = folder / "copick.json"
    config.write_text(
        json.dumps(
            dict(
                config_type="filesystem",
                name="test project",
                description="annotomo tests",
                version="1.0.0",
                pickable_objects=OBJECTS,
                overlay_root=f"local://{folder / 'overlay'}",
                overlay_fs_args=dict(auto_mkdir=True),
            )
        )
    )
    root = copick.from_file(str(config))
    for seed, name in enumerate(runs, start=41):
        sim = simulate(shape=shape, seed=seed)
        run = root.new_run(name)
        vs = run.new_voxel_spacing(VOXEL)
        vs.new_tomogram("wbp").from_numpy(sim.tomogram.astype(np.float32))
        truth = np.where(sim.labels <= 3, sim.labels, 0).astype(np.uint8)  # no double membrane object
        run.new_segmentation(VOXEL, "truth", "0", is_multilabel=True, user_id="truth").from_numpy(truth)
    return config


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path)


def reopen(config):
    return copick.from_file(str(config))


def test_segment_writes_a_multilabel_segmentation_copick_reads_and_picks_in_angstrom(project, tmp_path, capsys):
    code = main(
        ["segment", "cellular-v1", "--copick", str(project), "--voxel-spacing", "28", "--tomo-type", "wbp"]
        + ["--pick", "ribosome", "--quiet"]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "double_membrane" in out  # said: not an object of the project, left out
    root = reopen(project)
    for run in root.runs:
        segs = run.get_segmentations(name="annotomo", user_id="annotomo", session_id="0", is_multilabel=True)
        assert len(segs) == 1
        labels = segs[0].numpy()
        tomo = run.get_voxel_spacing(VOXEL).get_tomograms("wbp")[0].numpy()
        assert labels.shape == tomo.shape
        assert set(np.unique(labels)) <= {0, 1, 2, 3}  # object labels only; double membrane left out
        truth = run.get_segmentations(name="truth")[0].numpy()
        ribosome = (labels == 2) & (truth == 2)
        assert 2 * ribosome.sum() / max((labels == 2).sum() + (truth == 2).sum(), 1) > 0.5
        picks = run.get_picks(object_name="ribosome", user_id="annotomo", session_id="0")
        assert len(picks) == 1
        points, _ = picks[0].numpy()
        assert len(points) > 0
        # Angstrom, x y z, inside the tomogram, and on ribosome voxels of the segmentation
        voxels = np.round(points[:, ::-1] / VOXEL).astype(int)
        assert np.all(voxels >= 0) and np.all(voxels < np.array(labels.shape))
        assert np.mean(labels[tuple(voxels.T)] == 2) > 0.8


def test_segment_again_skips_done_runs_and_refuses_a_foreign_segmentation(project, capsys):
    args = ["segment", "cellular-v1", "--copick", str(project), "--voxel-spacing", "28", "--tomo-type", "wbp"]
    assert main(args + ["--runs", "TS-1", "--quiet"]) == 0
    capsys.readouterr()
    assert main(args + ["--runs", "TS-1", "--quiet"]) == 0
    assert "skipped" in capsys.readouterr().out
    # someone else's segmentation under the same name, user and session: refused without --overwrite
    run = reopen(project).get_run("TS-2")
    run.new_segmentation(VOXEL, "annotomo", "0", is_multilabel=True, user_id="annotomo").from_numpy(
        np.zeros((24, 96, 96), np.uint8)
    )
    assert main(args + ["--quiet"]) == 2
    err = capsys.readouterr().err
    assert "TS-2" in err and "--overwrite" in err and "Traceback" not in err
    # nothing was written for TS-1 either by the refused call (it was done) and TS-2 still holds the zeros
    assert reopen(project).get_run("TS-2").get_segmentations(name="annotomo")[0].numpy().max() == 0
    assert main(args + ["--overwrite", "--quiet"]) == 0
    assert reopen(project).get_run("TS-2").get_segmentations(name="annotomo")[0].numpy().max() > 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--runs", "TS-9"], "no run TS-9"),
        (["--voxel-spacing", "10"], "no voxel spacing 10"),
        (["--tomo-type", "denoised"], "no tomogram of type 'denoised'"),
        (["--pick", "actin"], "--pick actin"),
        (["--pick", "membrane", "--user-id", "my_user"], "underscores"),
        (["--session-id", "a b"], "underscores"),
    ],
)
def test_bad_copick_inputs_are_one_line_errors_and_write_nothing(project, capsys, extra, message):
    args = ["segment", "cellular-v1", "--copick", str(project), "--voxel-spacing", "28", "--tomo-type", "wbp"]
    # later options win in argparse: the bad value replaces the good one
    assert main(args + extra + ["--quiet"]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    for run in reopen(project).runs:
        assert not run.get_segmentations(name="annotomo")
        assert not run.get_picks(user_id="annotomo")


def test_a_config_that_does_not_parse_names_the_file(tmp_path, capsys):
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    assert main(["segment", "cellular-v1", "--copick", str(bad), "--voxel-spacing", "28", "--tomo-type", "wbp"]) != 0
    err = capsys.readouterr().err
    assert "broken.json" in err and "copick config" in err


def test_train_from_a_segmentation_and_from_picks(project, tmp_path):
    base = ["train", "--copick", str(project), "--voxel-spacing", "28", "--tomo-type", "wbp", "--iterations", "20"]
    base += ["--from-scratch", "--patch", "64", "--batch-size", "2"]
    out = tmp_path / "from_seg.annotomo"
    assert main(base + ["--from-segmentation", "truth:truth:0", "--out", str(out), "--quiet"]) == 0
    from annotomo.modelfile import read_model_info

    assert read_model_info(out).class_names == ["microtubule", "ribosome", "membrane"]
    # picks of ribosomes, in Angstrom, as copick stores them -> spheres of the object's radius
    from scipy import ndimage

    root = reopen(project)
    for run in root.runs:
        truth = run.get_segmentations(name="truth")[0].numpy()
        comps, n = ndimage.label(truth == 2)
        centres = np.array(ndimage.center_of_mass(truth == 2, comps, range(1, n + 1))).reshape(-1, 3)
        run.new_picks("ribosome", "0", user_id="expert").from_numpy(centres[:, ::-1] * VOXEL)
    out = tmp_path / "from_picks.annotomo"
    assert main(base + ["--from-picks", "ribosome", "--out", str(out), "--quiet"]) == 0
    assert read_model_info(out).class_names == ["ribosome"]


def test_picks_become_spheres_in_background_shells(project):
    from annotomo import copick_projects as cp

    root = reopen(project)
    run = root.get_run("TS-1")
    run.new_picks("ribosome", "0", user_id="expert").from_numpy(np.array([[40 * VOXEL, 50 * VOXEL, 12 * VOXEL]]))
    labels, count = cp.picks_labels(root, run, VOXEL, (24, 96, 96), ["ribosome"])
    assert count == 1
    radius = 130.0 / VOXEL
    assert labels[12, 50, 40] == 1 and labels[12, 50, 40 + int(radius) + 1] == 0
    assert labels[12, 50, 40 + int(2 * radius) + 1] == 255 and labels[0, 0, 0] == 255
    assert (labels == 1).sum() == pytest.approx(4 / 3 * np.pi * radius**3, rel=0.25)


@pytest.mark.parametrize("shape", [(24, 96, 96), (25, 97, 95)])  # even and odd sizes: the centre convention
def test_relion5_and_dynamo_files_agree_with_copicks_own_export(tmp_path, shape):
    """annotomo's RELION 5 centred Angstrom and Dynamo voxel coordinates, against the files copick's maintained
    exporters write for the same particles on the same tomogram."""
    import starfile
    from copick.ops.export import export_picks

    from annotomo.pickfiles import write_picks_as
    from annotomo.postprocess import Picks

    config = make_project(tmp_path, runs=("TS-7",), shape=shape)
    root = reopen(config)
    run = root.get_run("TS-7")
    centres = np.array([[3.0, 10.5, 20.25], [12.0, 48.0, 48.0], [20.7, 90.0, 1.0]])  # z y x voxels
    picks = run.new_picks("ribosome", "0", user_id="expert")
    picks.from_numpy(centres[:, ::-1] * VOXEL)
    theirs = tmp_path / "copick.star"
    export_picks(picks, str(theirs), "star", voxel_spacing=VOXEL, coordinates="centered", include_optics=False)
    ours = tmp_path / "annotomo.star"
    write_picks_as(Picks(centres, None, VOXEL), ours, "relion5", shape, "TS-7")
    a, b = starfile.read(theirs), starfile.read(ours)
    assert list(b["rlnTomoName"]) == list(a["rlnTomoName"]) == ["TS-7"] * 3
    for axis in "XYZ":
        column = f"rlnCenteredCoordinate{axis}Angst"
        assert np.allclose(b[column], a[column], atol=1e-3), column
    assert ours.read_text().startswith("# annotomo: RELION 5 centred")

    theirs_tbl, ours_tbl = tmp_path / "copick.tbl", tmp_path / "annotomo.tbl"
    export_picks(picks, str(theirs_tbl), "dynamo", voxel_spacing=VOXEL)
    write_picks_as(Picks(centres, None, VOXEL), ours_tbl, "dynamo", shape, "TS-7")
    import dynamotable

    a, b = dynamotable.read(str(theirs_tbl)), dynamotable.read(str(ours_tbl))
    for axis in "xyz":
        assert np.allclose(b[axis], a[axis], atol=1e-3), axis


def test_large_tomograms_are_read_a_band_of_chunks_at_a_time():
    from annotomo.copick_projects import ChunkBands, RunTomogram

    class Chunked:
        """A chunked array that counts how often it is read."""

        def __init__(self, data, depth):
            self.data, self.chunks, self.reads = data, (depth, 8, 8), 0
            self.shape, self.dtype = data.shape, data.dtype

        def __getitem__(self, key):
            self.reads += 1
            return self.data[key]

    data = np.arange(10 * 6 * 5, dtype=np.float32).reshape(10, 6, 5)
    source = Chunked(data, depth=4)
    bands = RunTomogram(None, 10.0, "wbp", source).voxels(in_memory_bytes=100)
    assert isinstance(bands, ChunkBands) and bands.shape == data.shape
    assert np.array_equal(bands[3], data[3]) and np.array_equal(bands[2:7, 1:3], data[2:7, 1:3])
    assert np.array_equal(bands[[0, 9, 5], 2], data[[0, 9, 5], 2]) and np.array_equal(np.asarray(bands), data)
    source.reads = 0
    for z in range(10):
        bands[z]
    assert source.reads == 3  # one read per band of 4 slices
    assert isinstance(RunTomogram(None, 10.0, "wbp", Chunked(data, 4)).voxels(), np.ndarray)  # small: in memory


def test_segment_on_dask_workers_writes_what_one_process_writes(project, tmp_path):
    pytest.importorskip("distributed")
    args = ["segment", "cellular-v1", "--copick", str(project), "--voxel-spacing", "28", "--tomo-type", "wbp"]
    assert main(args + ["--quiet", "--pick", "ribosome"]) == 0
    here = {r.name: r.get_segmentations(name="annotomo")[0].numpy() for r in reopen(project).runs}
    assert main(args + ["--quiet", "--pick", "ribosome", "--workers", "2", "--session-id", "1"]) == 0
    for run in reopen(project).runs:
        on_dask = run.get_segmentations(name="annotomo", session_id="1")[0].numpy()
        assert np.array_equal(on_dask, here[run.name])
        assert len(run.get_picks(object_name="ribosome", session_id="1")[0].points) == len(
            run.get_picks(object_name="ribosome", session_id="0")[0].points
        )
    # and again: every run is done, nothing is submitted
    assert main(args + ["--quiet", "--workers", "2", "--session-id", "1", "--pick", "ribosome"]) == 0


def test_pick_format_copick_stores_the_particles_of_a_segmentation_in_a_run(project, tmp_path, capsys):
    from annotomo.volumes import write_volume

    truth = reopen(project).get_run("TS-1").get_segmentations(name="truth")[0].numpy()
    seg = tmp_path / "TS-1_labels.mrc"
    write_volume(seg, truth, (VOXEL,) * 3, class_names=["microtubule", "ribosome", "membrane"])
    args = ["pick", str(seg), "--class", "ribosome", "--format", "copick", "--copick", str(project), "--run", "TS-1"]
    assert main(args) == 0
    (picks,) = reopen(project).get_run("TS-1").get_picks(object_name="ribosome", user_id="annotomo")
    points, _ = picks.numpy()
    voxels = np.round(points[:, ::-1] / VOXEL).astype(int)
    assert len(points) > 0 and np.mean(truth[tuple(voxels.T)] == 2) > 0.8  # Angstrom, on ribosomes
    assert main(args) != 0 and "--overwrite" in capsys.readouterr().err  # exists: not replaced silently
    assert main(args + ["--object", "no_such"]) != 0 and "underscores" in capsys.readouterr().err
