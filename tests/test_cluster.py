"""Batches on Dask (a LocalCluster of 2 processes on loopback), chunked tomograms, resumable batches, faults,
and pixel-size resampling in bounded memory."""

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import QUIET, run_cli

from annotomo import segment, simulate
from annotomo.outputs import MANIFEST_NAME
from annotomo.synth import MEMBRANE
from annotomo.volumes import open_volume, read_labels, write_volume

distributed = pytest.importorskip(
    "distributed", reason="the dask extra is not installed (pip install 'annotomo[dask]')"
)


@pytest.fixture(scope="module")
def dask_client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        env={"OMP_NUM_THREADS": "1"},
        silence_logs=50,
    )
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def batch_files(tmp_path_factory):
    """Four small tomograms (two cells, two sizes) as MRC files."""
    folder = tmp_path_factory.mktemp("batch")
    paths = []
    for k, (seed, shape) in enumerate(
        [(31, (24, 96, 96)), (32, (20, 96, 128)), (33, (24, 96, 96)), (34, (28, 64, 96))]
    ):
        path = folder / f"t{k}.mrc"
        write_volume(path, simulate(shape=shape, seed=seed).tomogram, (28.0,) * 3)
        paths.append(path)
    return paths


def volumes_of(written):
    """{file name: data} of every written output."""
    out = {}
    for outputs in written:
        for path in outputs.values():
            with open_volume(path) as vol:
                out[Path(path).name] = np.array(vol.data)
    return out


def assert_same(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def single_process(batch_files, model_file, tmp_path_factory):
    """The single-process outputs (with probabilities), the reference for the cluster's."""
    out = tmp_path_factory.mktemp("single")
    return volumes_of(segment(model_file, batch_files, out, probabilities=True, **QUIET))


@pytest.mark.slow
def test_a_local_cluster_gives_the_single_process_outputs_and_loads_the_model_once_per_worker(
    dask_client, batch_files, model_file, single_process, tmp_path
):
    written = segment(model_file, batch_files, tmp_path, probabilities=True, dask=dask_client, chunk_slices=8, **QUIET)
    assert_same(volumes_of(written), single_process)
    loads = dask_client.run(lambda: __import__("annotomo.cluster").cluster._LOADS["count"])
    assert set(loads.values()) <= {1}  # one load per worker process, whatever the number of tasks
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())["tomograms"]
    assert [e["status"] for e in manifest.values()] == ["done"] * 4
    assert {e["chunks"] for e in manifest.values()} == {3, 4}  # 20-28 slices in chunks of 8


@pytest.mark.slow
def test_a_chunked_tomogram_equals_the_whole_in_ome_zarr_too(dask_client, batch_files, model_file, tmp_path):
    whole = volumes_of(segment(model_file, batch_files[:1], tmp_path / "whole", output_format="zarr", **QUIET))
    chunked = volumes_of(
        segment(
            model_file,
            batch_files[:1],
            tmp_path / "chunked",
            output_format="zarr",
            dask=dask_client,
            chunk_slices=5,
            **QUIET,
        )
    )  # aligned up to the zarr chunks
    assert_same(chunked, whole)


@pytest.mark.slow
def test_labels_redrawn_at_a_stated_width_on_dask_equal_one_process(dask_client, trained_model, small_files, tmp_path):
    """The redraw runs once per tomogram after its chunks, on the whole labels (the job carries it)."""
    model, tomogram, width = trained_model[0], [small_files["test_tomo"]], dict(label_width={"membrane": 9.0})
    plain = volumes_of(segment(model, tomogram, tmp_path / "plain", **QUIET))
    here = volumes_of(segment(model, tomogram, tmp_path / "here", **width, **QUIET))
    there = volumes_of(segment(model, tomogram, tmp_path / "dask", dask=dask_client, chunk_slices=5, **width, **QUIET))
    assert_same(there, here)
    (name,) = here
    assert np.count_nonzero(here[name] == MEMBRANE) > 1.3 * np.count_nonzero(plain[name] == MEMBRANE)


@pytest.mark.slow
def test_a_tomogram_at_another_pixel_size_is_resampled_in_chunks_as_in_one_piece(dask_client, model_file, tmp_path):
    fine = tmp_path / "fine.mrc"
    write_volume(fine, simulate(shape=(40, 128, 128), pixel_size=14.0, seed=35).tomogram, (14.0,) * 3)
    with pytest.warns(UserWarning, match="resampling"):
        whole = volumes_of(segment(model_file, [fine], tmp_path / "whole", probabilities=True, **QUIET))
    with pytest.warns(UserWarning, match="resampling"):
        chunked = volumes_of(
            segment(
                model_file, [fine], tmp_path / "chunked", probabilities=True, dask=dask_client, chunk_slices=12, **QUIET
            )
        )
    assert_same(chunked, whole)
    assert whole["fine_labels.mrc"].shape == (40, 128, 128)


def test_streaming_resampling_nearly_equals_resampling_the_whole_volume_in_memory(model_file, tmp_path):
    """The slice-by-slice resampling against the old in-memory path (scipy's zoom of the whole volume, both
    ways): the same arithmetic up to float rounding (3e-8 here), so only near-tie voxels may differ. In fp32
    none did; bf16 rounding makes more near-ties flip (benchmarks/RESULTS.md, "Scaling")."""
    from scipy import ndimage

    from annotomo import Predictor
    from annotomo.resample import resample_to_pixel_size

    sim = simulate(shape=(40, 128, 128), pixel_size=14.0, seed=36)
    write_volume(tmp_path / "fine.mrc", sim.tomogram, (14.0,) * 3)
    with pytest.warns(UserWarning, match="resampling"):
        written = segment(model_file, [tmp_path / "fine.mrc"], tmp_path / "out", precision="fp32", **QUIET)[0]
    with read_labels(written["labels"]) as lab:
        streamed = np.array(lab.data)
    predictor = Predictor.from_file(model_file, precision="fp32")
    norm = predictor.info.normalization_for(sim.tomogram)
    small = resample_to_pixel_size(sim.tomogram, (14.0,) * 3, 28.0)
    _, probs = predictor.predict_block(small, norm, halo=0, probabilities=True)
    zoom = [n / s for n, s in zip(sim.tomogram.shape, small.shape, strict=True)]
    back = np.stack([ndimage.zoom(p, zoom, order=1, mode="nearest", grid_mode=True) for p in probs])
    in_memory = np.argmax(np.concatenate([(1 - back.sum(0))[None], back]), axis=0)
    differ = int(np.count_nonzero(streamed != in_memory))
    assert differ <= 1e-4 * streamed.size, f"{differ} of {streamed.size} voxels differ"


@pytest.mark.slow
def test_a_worker_killed_mid_run_costs_only_its_tasks(dask_client, batch_files, model_file, single_process, tmp_path):
    result, errors = {}, []

    def run():
        try:
            result["written"] = segment(
                model_file, batch_files, tmp_path, probabilities=True, dask=dask_client, chunk_slices=4, **QUIET
            )
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.time() + 120
    while not list(tmp_path.glob("*_labels.mrc")) and time.time() < deadline and thread.is_alive():
        time.sleep(0.05)  # the first tomogram is complete: the others are running or waiting
    pids = dask_client.run(os.getpid)
    victim = sorted(pids.values())[0]
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=300)
    assert not errors, errors
    assert not thread.is_alive()
    assert_same(volumes_of(result["written"]), single_process)
    assert not list(tmp_path.glob(".*partial"))
    dask_client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed worker


def test_tasks_recomputed_after_a_worker_died_while_finishing_complete_the_outputs(
    batch_files, model_file, single_process, tmp_path
):
    """A worker killed while (or after) renaming a tomogram's outputs into place makes Dask recompute the
    tasks it held: the chunks must not write (some temporary files are already renamed) and the finish
    must complete what the killed one left, giving the outputs of an uninterrupted run."""
    from annotomo import read_model_info
    from annotomo.batch import plan_job
    from annotomo.cluster import _chunk_task, _finish_task, _normalization_task
    from annotomo.outputs import file_digest

    info = read_model_info(model_file)
    names = ["labels", *info.class_names]
    outputs = {n: tmp_path / (f"t0_{n}.mrc" if n == "labels" else f"t0_{n}_prob.mrc") for n in names}
    job = plan_job(batch_files[0], outputs, info, probabilities=True, chunk_slices=12)
    job.create_outputs()
    sent = pickle.dumps(job)  # each task gets the job as the client submitted it

    def task(function, *arguments):
        return function(pickle.loads(sent), *arguments)

    args = (str(model_file), dict(), file_digest(model_file))
    norm = task(_normalization_task, *args)
    chunks = [task(_chunk_task, z0, z1, norm, *args) for z0, z1 in job.chunks]
    killed = pickle.loads(sent)  # the finish that was killed after renaming the labels only
    killed.outputs["labels"].finalize()
    assert job.finishing_started()
    again = [task(_chunk_task, z0, z1, norm, *args) for z0, z1 in job.chunks]  # as Dask recomputes them
    written = task(_finish_task, *again)["outputs"]
    assert written == {n: str(p) for n, p in outputs.items()}
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in outputs.values())  # no temporary file left
    with read_labels(outputs["labels"]) as labels:
        assert np.array_equal(labels.data, single_process["t0_labels.mrc"])
    assert task(_finish_task, *again)["outputs"] == written  # and once more, after a complete finish
    assert chunks[0]["voxels"] == again[0]["voxels"]


@pytest.mark.slow
def test_a_rerun_skips_complete_outputs_and_redoes_a_partial_one(batch_files, model_file, single_process, tmp_path):
    segment(model_file, batch_files, tmp_path, probabilities=True, **QUIET)
    # tomogram 2 as a killed run leaves it: outputs gone, a partial file in their place, manifest not done
    for path in tmp_path.glob("t2_*.mrc"):
        path.unlink()
    (tmp_path / ".t2_labels.mrc.deadbeef.partial").write_bytes(b"half a file")
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    key = next(k for k in manifest["tomograms"] if k.endswith("t2.mrc"))
    manifest["tomograms"][key]["status"] = "failed"
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("t[013]_*.mrc")}
    messages = []
    written = segment(model_file, batch_files, tmp_path, probabilities=True, progress=False, log=messages.append)
    assert any("3 tomogram(s) already complete" in m for m in messages), messages
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("t[013]_*.mrc")} == before  # not rewritten
    assert_same(volumes_of(written), single_process)
    assert not list(tmp_path.glob(".*partial"))
    entries = json.loads((tmp_path / MANIFEST_NAME).read_text())["tomograms"]
    assert all(e["status"] == "done" and e["seconds"] is not None for e in entries.values())


@pytest.mark.slow
def test_a_bad_file_in_a_batch_is_reported_and_the_others_finish(batch_files, model_file, tmp_path):
    bad = tmp_path / "broken.mrc"
    bad.write_bytes(b"x" * 2048)
    code, _, err = run_cli(
        "segment", model_file, batch_files[0], bad, batch_files[1], "-o", tmp_path / "out", "--workers", 2, "--quiet"
    )
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("annotomo: error")]
    assert len(lines) == 1 and "1 of 3 tomograms failed" in lines[0] and "broken.mrc" in lines[0], err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.mrc")) == ["t0_labels.mrc", "t1_labels.mrc"]
    entries = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())["tomograms"]
    assert sorted(e["status"] for e in entries.values()) == ["done", "done", "failed"]


@pytest.mark.slow
def test_resampling_a_large_tomogram_stays_within_bounded_memory(model_file, tmp_path):
    """64 Mvoxels at half the model's pixel size: the in-memory path held the resampled tomogram and every
    feature's probabilities at both sizes (over 2.5 GB here); streaming holds a few slices (torch and the
    network's working set are most of what remains)."""
    from annotomo.volumes import volume_writer

    path = tmp_path / "big.mrc"
    block = simulate(shape=(32, 256, 256), pixel_size=14.0, seed=37).tomogram
    with volume_writer(path, (64, 1024, 1024), np.float32, (14.0,) * 3) as out:
        for z in range(0, 64, 8):
            out[z : z + 8] = np.tile(block[z % 32 : z % 32 + 8], (1, 4, 4))
    script = (
        f"import annotomo; annotomo.segment({str(model_file)!r}, [{str(path)!r}], "
        f"{str(tmp_path / 'out')!r}, progress=False, log=lambda *a: None); "
        "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"
    )
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    peak_mb = int(proc.stdout.split()[-1]) / 1024  # this process's own high-water mark (ru_maxrss has the parent's)
    assert peak_mb < 1000, f"peak memory {peak_mb:.0f} MB"
    with read_labels(tmp_path / "out" / "big_labels.mrc") as lab:
        assert lab.shape == (64, 1024, 1024)


@pytest.mark.slow
def test_the_uncertainty_on_dask_chunks_equals_one_process(dask_client, batch_files, model_file, tmp_path):
    here = volumes_of(segment(model_file, batch_files[:1], tmp_path / "here", uncertainty=True, **QUIET))
    there = volumes_of(
        segment(
            model_file, batch_files[:1], tmp_path / "dask", uncertainty=True, dask=dask_client, chunk_slices=5, **QUIET
        )
    )
    assert any(name.endswith("_uncertainty.mrc") for name in here)
    assert here.keys() == there.keys()
    for name in here:  # labels bit for bit; the uncertainty to float rounding (merged in another order)
        assert np.allclose(there[name], here[name], atol=1e-5), name
