"""Scaling: batches on Dask against the single-process path, chunked tomograms, recovery from a killed
worker, and memory of pixel-size resampling on large tomograms. All rows of one run, one machine.

    python benchmarks/bench_scale.py                  # everything (~15 min on 2 cores)
    python benchmarks/bench_scale.py --quick          # 8 tomograms, smaller large ones (~5 min)

Rows:
- batch: N simulated tomograms segmented (labels only) single-process, and on a LocalCluster of 1 and 2
  worker processes (cluster start-up timed apart); throughput in Mvoxels/s; per-task overhead = wall time
  per task on Dask minus the tasks' own compute time, per task.
- large: one large tomogram single-process and chunked over 2 workers; identical labels checked.
- recovery: the 8-tomogram batch on 2 workers, one worker SIGKILLed when the first tomogram is done.
- resampling: a tomogram at half the model's pixel size, its peak memory (VmHWM, fresh process) and time;
  on a smaller one, how many voxels differ from resampling the whole volume in memory (the old path).
The model is the default U-Net architecture (4 features, 5 slices) with seeded weights: speed and memory
do not depend on training.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, results_header

from annotomo import segment, simulate
from annotomo.conventions import SYNTH_CLASSES
from annotomo.modelfile import ModelInfo, save_model
from annotomo.models import build_model
from annotomo.volumes import open_volume, volume_writer, write_volume

QUIET = dict(progress=False, log=lambda *a: None)


def default_model(path):
    torch.manual_seed(0)
    model, params = build_model("unet", 5, len(SYNTH_CLASSES) + 1)
    save_model(path, model.eval(), ModelInfo("unet", params, list(SYNTH_CLASSES), 5, 28.0))
    return path


def make_batch(folder, n, shape):
    paths = []
    block = simulate(shape=shape, seed=5).tomogram
    for k in range(n):
        path = folder / f"b{n}_{k}.mrc"
        write_volume(path, np.roll(block, k * 7, axis=2), (28.0,) * 3)
        paths.append(path)
    return paths


def tiled_tomogram(path, shape, pixel_size, seed=7):
    """A large tomogram tiled from simulated blocks (realistic content everywhere), written slab by slab."""
    block = simulate(shape=(32, 256, 256), pixel_size=pixel_size, seed=seed).tomogram
    reps = [int(np.ceil(s / b)) for s, b in zip(shape[1:], block.shape[1:], strict=True)]
    with volume_writer(path, shape, np.float32, (pixel_size,) * 3) as out:
        for z in range(0, shape[0], 8):
            zz = np.arange(z, min(z + 8, shape[0])) % 32
            out[z : z + len(zz)] = np.tile(block[zz], (1, *reps))[:, : shape[1], : shape[2]]
    return path


def labels_of(outdir):
    out = {}
    for p in sorted(Path(outdir).glob("*_labels.mrc")):
        with open_volume(p) as vol:
            out[p.name] = np.array(vol.data)
    return out


def timed(fn):
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def local_cluster(workers):
    """A LocalCluster of `workers` processes, one task thread each, the cores shared by the model's threads."""
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=50,
        env={"OMP_NUM_THREADS": str(max(1, os.cpu_count() // workers))},
    )


def batch_rows(model, paths, work, label):
    from distributed import Client

    voxels = sum(int(np.prod(open_volume(p).shape)) for p in paths)
    rows = []
    seconds, _ = timed(lambda: segment(model, paths, work / f"{label}_single", **QUIET))
    reference = labels_of(work / f"{label}_single")
    rows.append(
        dict(
            batch=label,
            path="single process",
            tomograms=len(paths),
            seconds=round(seconds, 2),
            mvox_per_s=round(voxels / seconds / 1e6, 2),
        )
    )
    for workers in (1, 2):
        t = time.perf_counter()
        cluster = local_cluster(workers)
        client = Client(cluster)
        client.run(lambda: None)
        start_s = time.perf_counter() - t
        t = time.perf_counter()
        segment(model, paths, work / f"{label}_dask{workers}", dask=client, **QUIET)
        seconds = time.perf_counter() - t
        same = all(
            np.array_equal(a, b)
            for a, b in zip(labels_of(work / f"{label}_dask{workers}").values(), reference.values(), strict=True)
        )
        row = dict(
            batch=label,
            path=f"Dask, {workers} worker(s)",
            tomograms=len(paths),
            seconds=round(seconds, 2),
            mvox_per_s=round(voxels / seconds / 1e6, 2),
            cluster_start_s=round(start_s, 2),
            identical_labels=bool(same),
            vs_single=round(rows[0]["seconds"] / seconds, 2),
        )
        if workers == 1:  # the same work in sequence: what Dask adds, per task (model load included)
            row["overhead_per_task_s"] = round((seconds - rows[0]["seconds"]) / len(paths), 3)
        rows.append(row)
        client.close()
        cluster.close()
    return rows


def large_rows(model, path, work):
    from distributed import Client

    shape = open_volume(path).shape
    seconds, _ = timed(lambda: segment(model, [path], work / "large_single", **QUIET))
    rows = [
        dict(
            batch="large",
            path="single process",
            shape=list(shape),
            seconds=round(seconds, 2),
            mvox_per_s=round(np.prod(shape) / seconds / 1e6, 2),
        )
    ]
    cluster = local_cluster(2)
    client = Client(cluster)
    chunk = max(8, shape[0] // 8)
    chunked_s, _ = timed(lambda: segment(model, [path], work / "large_dask", dask=client, chunk_slices=chunk, **QUIET))
    same = all(
        np.array_equal(a, b)
        for a, b in zip(labels_of(work / "large_single").values(), labels_of(work / "large_dask").values(), strict=True)
    )
    rows.append(
        dict(
            batch="large",
            path=f"Dask, 2 workers, chunks of {chunk} slices",
            shape=list(shape),
            seconds=round(chunked_s, 2),
            mvox_per_s=round(np.prod(shape) / chunked_s / 1e6, 2),
            identical_labels=bool(same),
            vs_single=round(seconds / chunked_s, 2),
        )
    )
    client.close()
    cluster.close()
    return rows


def recovery_row(model, paths, work):
    from distributed import Client

    cluster = local_cluster(2)
    client = Client(cluster)
    clean_s, _ = timed(lambda: segment(model, paths, work / "recovery_clean", dask=client, **QUIET))
    out = work / "recovery_killed"
    result = {}

    def run():
        result["seconds"], _ = timed(lambda: segment(model, paths, out, dask=client, **QUIET))

    thread = threading.Thread(target=run)
    thread.start()
    while not list(out.glob("*_labels.mrc")) and thread.is_alive():
        time.sleep(0.02)
    before = set(client.scheduler_info()["workers"])
    killed_at = time.perf_counter()
    os.kill(sorted(client.run(os.getpid).values())[0], signal.SIGKILL)
    while True:  # until the nanny's new worker has joined the scheduler in the killed one's place
        workers = set(client.scheduler_info()["workers"])
        if len(workers) == 2 and workers != before:
            break
        time.sleep(0.01)
    back_s = time.perf_counter() - killed_at
    thread.join()
    same = all(
        np.array_equal(a, b)
        for a, b in zip(labels_of(work / "recovery_clean").values(), labels_of(out).values(), strict=True)
    )
    client.close()
    cluster.close()
    return dict(
        batch="recovery",
        path="Dask, 2 workers, one SIGKILLed",
        tomograms=len(paths),
        seconds_without_kill=round(clean_s, 2),
        seconds_with_kill=round(result["seconds"], 2),
        extra_seconds=round(result["seconds"] - clean_s, 2),
        worker_back_after_s=round(back_s, 2),
        identical_labels=bool(same),
    )


def resampling_rows(model, work, large_shape):
    rows = []
    path = tiled_tomogram(work / "fine.mrc", large_shape, 14.0)
    script = (
        f"import time, annotomo; t = time.perf_counter(); annotomo.segment({str(model)!r}, [{str(path)!r}], "
        f"{str(work / 'fine_out')!r}, progress=False, log=lambda *a: None); print(time.perf_counter() - t); "
        "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"
    )
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True, check=True)
    seconds, peak_kb = proc.stdout.split()[-2:]
    voxels = int(np.prod(large_shape))
    rows.append(
        dict(
            batch="resampling",
            path="14 A tomogram, 28 A model, slab by slab",
            shape=list(large_shape),
            gvoxels=round(voxels / 1e9, 3),
            seconds=round(float(seconds), 1),
            peak_rss_mb=round(int(peak_kb) / 1024),
            mvox_per_s=round(voxels / float(seconds) / 1e6, 2),
        )
    )
    path.unlink()
    # against the in-memory path (which needs ~40 bytes per voxel) on a tomogram it can hold
    from scipy import ndimage

    from annotomo import Predictor
    from annotomo.resample import resample_to_pixel_size

    small_shape = (64, 1024, 1024)
    path = tiled_tomogram(work / "fine_small.mrc", small_shape, 14.0)
    for precision in ("fp32", "bf16"):
        written = segment(model, [path], work / f"fine_small_{precision}", precision=precision, **QUIET)[0]
        with open_volume(written["labels"]) as lab:
            streamed = np.array(lab.data)
        with open_volume(path) as vol:
            data = np.array(vol.data)
        predictor = Predictor.from_file(model, precision=precision)
        norm = predictor.info.normalization_for(data)
        small = resample_to_pixel_size(data, (14.0,) * 3, 28.0)
        _, probs = predictor.predict_block(small, norm, halo=0, probabilities=True)
        zoom = [n / s for n, s in zip(data.shape, small.shape, strict=True)]
        back = np.stack([ndimage.zoom(p, zoom, order=1, mode="nearest", grid_mode=True) for p in probs])
        in_memory = np.argmax(np.concatenate([(1 - back.sum(0))[None], back]), axis=0)
        differ = int(np.count_nonzero(streamed != in_memory))
        rows.append(
            dict(
                batch="resampling",
                path=f"slab by slab vs in memory, {precision}",
                shape=list(small_shape),
                voxels_differing=differ,
                fraction_differing=differ / streamed.size,
            )
        )
        del back, in_memory, data, small, probs
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=str(RESULTS / "scale.json"))
    args = ap.parse_args()
    result = dict(
        **results_header(),
        quick=args.quick,
        rows=[],
    )
    with tempfile.TemporaryDirectory(dir="benchmarks/output" if Path("benchmarks/output").exists() else None) as tmp:
        work = Path(tmp)
        model = default_model(work / "default.annotomo")
        batches = [(8, (64, 256, 256))] + ([] if args.quick else [(32, (32, 128, 128))])
        for n, shape in batches:
            for row in batch_rows(model, make_batch(work, n, shape), work, f"{n} x {'x'.join(map(str, shape))}"):
                result["rows"].append(row)
                print(json.dumps(row), flush=True)
        large = tiled_tomogram(work / "large.mrc", (64, 864, 864) if args.quick else (256, 864, 864), 28.0)
        for row in large_rows(model, large, work):
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
        row = recovery_row(model, make_batch(work, 8, (64, 256, 256)), work)
        result["rows"].append(row)
        print(json.dumps(row), flush=True)
        for row in resampling_rows(model, work, (64, 2048, 2048) if args.quick else (128, 2048, 2048)):
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
