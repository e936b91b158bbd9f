"""Segmenting a batch on Dask distributed: a local cluster of worker processes, or an existing one.

Dask schedules, retries and balances (annotomo writes no scheduler of its own): every tomogram is a
normalisation task, one task per z chunk, and a finishing task that depends on them. Workers load the
model once each (a per-process cache keyed by the model file's digest) and write their chunks straight
into the tomogram's one output file (positioned writes into the MRC, or chunk-aligned OME-Zarr writes),
so outputs must be on a file system the workers share. A worker that dies costs only its running tasks:
Dask runs them again elsewhere, and since chunks write disjoint slices, a chunk written twice is the
same. An output is renamed into place (and recorded in the manifest) only after its last chunk.

GPU workers use their GPU: start one worker per GPU (dask-cuda's LocalCUDACluster, or dask-jobqueue
with one GPU per job) and each worker's Predictor takes the GPU it sees. See docs/cluster.md.
"""

from __future__ import annotations

import os
import threading
import time

from .errors import AnnotomoError

DEFAULT_CHUNK_VOXELS = 256 * 2**20  # tomograms larger than this are split along z into chunks of about this size

_PREDICTORS: dict = {}  # in each worker process: (model digest, options) -> (Predictor, lock)
_LOADS = {"count": 0}
_CACHE_LOCK = threading.Lock()


def _dask():
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise AnnotomoError('segmenting on Dask needs the dask extra: pip install "annotomo[dask]"') from None
    return Client, LocalCluster, as_completed


def open_client(workers=None, address=None, log=print):
    """A Dask client: to `address` (a scheduler address or a Client), or a local cluster of `workers`
    processes with one task thread each (the model's own threads use the cores: cores / workers each).

    Raises:
        AnnotomoError: dask is not installed, or the scheduler cannot be reached.
    """
    Client, LocalCluster, _ = _dask()
    if address is not None and not isinstance(address, str):
        return address, None
    try:
        if address:
            client = Client(address, timeout="30s")
            cluster = None
        else:
            if int(workers) < 1:
                raise AnnotomoError(f"--workers {workers}: give at least one worker")
            threads = max(1, (os.cpu_count() or 1) // int(workers))
            cluster = LocalCluster(
                n_workers=int(workers),
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                env={"OMP_NUM_THREADS": str(threads)},
                silence_logs=40,
            )
            client = Client(cluster)
    except OSError as exc:
        raise AnnotomoError(f"--dask {address}: cannot reach the Dask scheduler ({exc})") from None
    link = getattr(client, "dashboard_link", None)
    if link:
        log(f"Dask dashboard: {link}")
    return client, cluster


def worker_predictor(model, options: dict, digest: str):
    """(Predictor, lock) of this worker process for `model`: loaded once per process and model.

    A worker with several task threads shares the one Predictor; the lock lets one task at a time use it
    (its network uses the process's cores through torch's own threads).
    """
    from .predict import Predictor

    key = (digest, tuple(sorted(options.items())))
    with _CACHE_LOCK:
        if key not in _PREDICTORS:
            threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
            if threads:
                import torch

                torch.set_num_threads(threads)
            _PREDICTORS[key] = (Predictor.from_file(model, **options), threading.Lock())
            _LOADS["count"] += 1
    return _PREDICTORS[key]


def _normalization_task(job, model, options, digest):
    from .batch import normalization_of

    return normalization_of(job, worker_predictor(model, options, digest)[0].info, warn=False)  # the client warns


def _chunk_task(job, z0, z1, norm, model, options, digest):
    from .batch import segment_chunk

    if job.finishing_started():  # recomputed after its worker died, once every chunk was written
        return dict(z0=z0, z1=z1, voxels=job.voxels_in(z0, z1), seconds=0.0, pid=os.getpid())
    predictor, lock = worker_predictor(model, options, digest)
    with lock:
        result = segment_chunk(predictor, job, z0, z1, norm)
    result.update(pid=os.getpid(), model_loads=_LOADS["count"])
    return result


def _finish_task(job, *chunks):
    from .batch import finish

    messages = []
    written = finish(job, log=messages.append)  # completes what a killed run of this task left
    return dict(outputs=written, messages=messages, chunks=list(chunks))


def run_on_dask(
    model,
    jobs,
    predictor_options,
    workers=None,
    address=None,
    progress=True,
    log=print,
    record=None,
    chunk_voxels=DEFAULT_CHUNK_VOXELS,
):
    """Segment `jobs` on Dask; returns ({tomogram: outputs} done, {tomogram: error} failed).

    Jobs without chunks of their own are split when larger than `chunk_voxels`. `record(job, outputs,
    error, seconds, chunks)` is called as each tomogram completes or fails (the manifest).
    """
    from .batch import BatchBar, chunk_alignment, chunk_ranges
    from .modelfile import resolve_model
    from .normalize import Normalization, warn_if_inverted
    from .outputs import file_digest

    _, _, as_completed = _dask()
    model_file = str(resolve_model(model).resolve())
    digest = file_digest(model_file)
    client, cluster = open_client(workers, address, log)
    done, failed = {}, {}
    try:
        futures, owner, started, of_job = [], {}, {}, {}
        for job in jobs:
            if len(job.chunks) == 1 and job.voxels > chunk_voxels:
                plane = job.voxels // job.shape[0]
                job.chunks = chunk_ranges(job.shape[0], max(1, chunk_voxels // plane), chunk_alignment(job))
            try:
                job.create_outputs()
            except AnnotomoError as exc:
                failed[job.tomogram] = str(exc)
                if record:
                    record(job, error=str(exc))
                continue
            args = (model_file, predictor_options, digest)
            norm = client.submit(_normalization_task, job, *args, pure=False)
            chunks = [client.submit(_chunk_task, job, z0, z1, norm, *args, pure=False) for z0, z1 in job.chunks]
            final = client.submit(_finish_task, job, *chunks, pure=False)
            for f in chunks + [final]:
                owner[f.key] = job
            of_job[job.tomogram] = [norm, *chunks, final]
            owner[norm.key] = job
            futures += [norm, *chunks, final]
            started[job.tomogram] = time.perf_counter()
        bar = BatchBar(jobs, "segmenting on Dask") if progress and jobs else None
        for future in as_completed(futures):
            job = owner[future.key]
            if job.tomogram in failed:
                continue
            error = future.exception()
            if error is not None:
                message = str(error) if isinstance(error, AnnotomoError) else f"{type(error).__name__}: {error}"
                failed[job.tomogram] = message
                client.cancel(of_job[job.tomogram])  # the tomogram's other chunks need not run
                job.discard_outputs()
                if record:
                    record(job, error=message, seconds=time.perf_counter() - started[job.tomogram])
                continue
            result = future.result()
            if isinstance(result, Normalization):  # the tomogram's statistics: the contrast check, here
                warn_if_inverted(result, job.tomogram, job.invert_contrast)
                continue
            if "outputs" not in result:  # a chunk
                if bar:
                    bar.advance(voxels=result["voxels"])
                continue
            for message in result["messages"]:
                log(message)
            done[job.tomogram] = result["outputs"]
            if record:
                record(
                    job,
                    result["outputs"],
                    seconds=round(time.perf_counter() - started[job.tomogram], 2),
                    chunks=len(job.chunks),
                )
            if bar:
                bar.tomogram_done()
            log(f"{job.tomogram} -> {result['outputs']['labels']}")
        if bar:
            bar.close()
    finally:
        if cluster is not None:
            client.close()
            cluster.close()
    return done, failed
