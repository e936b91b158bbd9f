"""Helpers shared by the benchmark scripts: machine peak, FLOP counting, big test tomograms, and
running one segmentation in a fresh subprocess (so peak RSS belongs to that configuration alone)."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from annotomo import read_model_info, simulate
from annotomo.volumes import open_volume, volume_writer
from annotomo.zmerge import decide

RESULTS = Path(__file__).resolve().parent / "results"  # the JSON every benchmark writes


def source_commit() -> str:
    """The git commit the benchmark ran from ("unknown" outside a git checkout): results files keep rows
    from several versions of the code and the simulator, and this says which produced each."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=here, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=here,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (out.stdout.strip() + ("+changes" if dirty else "")) if out.returncode == 0 else "unknown"


def started_from(model_path) -> str | None:
    """The model a trained model was fine-tuned from (a built-in name or a path), from its provenance; None
    for a new network.
    """
    return ((read_model_info(model_path).provenance or {}).get("parent") or {}).get("model")


def results_header(**machine) -> dict:
    """What every results file starts with: the machine (CPU, cores, torch threads, torch version, and
    `machine`'s entries), the UTC date and time, and the git commit the benchmark ran from.
    """
    return dict(
        machine=dict(
            cpu=cpu_name(), cores=os.cpu_count(), threads=torch.get_num_threads(), torch=torch.__version__, **machine
        ),
        date=time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        commit=source_commit(),
    )


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def matmul_peak(dtype=torch.float32, n=1024, seconds=2.0):
    """GFLOP/s of an n x n matrix product in `dtype`, repeated for about `seconds` (this machine's peak).

    bf16 without hardware support can be 100x slower than fp32, so the repeat count comes from a first
    timed product rather than being fixed.
    """
    a = torch.randn(n, n, dtype=dtype)
    t = time.perf_counter()
    a @ a
    once = time.perf_counter() - t
    repeat = max(1, min(50, int(seconds / max(once, 1e-6))))
    t = time.perf_counter()
    for _ in range(repeat):
        a @ a
    return 2 * n**3 * repeat / (time.perf_counter() - t) / 1e9


def flops_per_voxel(model, context):
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, context, 256, 256)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model.eval()(x)
    return counter.get_total_flops() / (256 * 256)


def make_tomogram(path, shape, seed=7):
    """A large tomogram made of simulated 64 x 256 x 256 blocks (realistic content everywhere)."""
    block = simulate(seed=seed).tomogram
    reps = [int(np.ceil(s / b)) for s, b in zip(shape, block.shape, strict=True)]
    with volume_writer(path, shape, np.float32, (28.0,) * 3) as out:
        for z in range(0, shape[0], 16):
            zz = np.arange(z, min(z + 16, shape[0])) % (2 * block.shape[0])
            zz = np.where(zz >= block.shape[0], 2 * block.shape[0] - 1 - zz, zz)  # mirror in z
            slab = np.tile(block[zz], (1, reps[1], reps[2]))[:, : shape[1], : shape[2]]
            out[z : z + len(zz)] = slab


def synchronize(device):
    """Wait for the device's queued work (a GPU's kernels run asynchronously), so timers see it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def score_test_cells(label_paths, truths, class_names) -> dict:
    """score_confusions of segmented test cells' label files against their truths."""
    from annotomo.metrics import confusion_matrix
    from annotomo.volumes import read_labels

    matrices = []
    for path, truth in zip(label_paths, truths, strict=True):
        with read_labels(path) as lab:
            matrices.append(confusion_matrix(truth, lab.data, len(class_names) + 1))
    return score_confusions(matrices, class_names)


def score_confusions(matrices, class_names) -> dict:
    """Scores of test cells from their confusion matrices: the first cell's (per class), all cells'
    pooled matrices', and each cell's mean Dice alone."""
    from annotomo.metrics import scores_from_confusion

    cells = [scores_from_confusion(cm, class_names) for cm in matrices]
    return dict(
        first=cells[0],
        pooled=scores_from_confusion(sum(matrices), class_names),
        per_cell=[round(c["mean_dice"], 4) for c in cells],
    )


def profile_default(model_path, tomogram, device="cpu"):
    """Where the time goes in the default path: reading+normalising; making the network's input (a view
    on CPUs; on GPUs a copy of the batch's slices into pinned memory and over to the device, where the
    context stacks are views); the network; the argmax (with the copy of the labels back). Slices must
    fit in one tile; no z smoothing. On GPUs, each batch shape is run once untimed first."""
    from annotomo.predict import Predictor

    p = Predictor.from_file(model_path, device=device)
    cuda = p.device.type == "cuda"

    def synchronized():
        synchronize(p.device)
        return time.perf_counter()

    with open_volume(tomogram) as vol:
        h, w = vol.shape[1:]
        if max(h, w) > p.tile or h % p.stride or w % p.stride:
            raise ValueError(f"profile_default needs slices of at most {p.tile} pixels, multiples of {p.stride}")
        norm = p.info.normalization_for(vol.data)
        t0 = time.perf_counter()
        normalized = norm.apply(vol.data)
        t_read = time.perf_counter() - t0
        step = p._batch_slices(vol.shape)
        if cuda:  # the first call of each batch shape picks cuDNN's algorithms and allocates pinned memory
            last = (vol.shape[0] - 1) // step * step
            for z in sorted({0, last}):
                p.logits(p._stacks(normalized, z, min(step, vol.shape[0] - z)))
        t_input = t_net = t_post = 0.0
        labels = np.empty(vol.shape, np.uint8)
        for z in range(0, vol.shape[0], step):
            n = min(step, vol.shape[0] - z)
            stacks = p._stacks(normalized, z, n)
            t0 = synchronized()
            x = p._network_input(stacks)
            t1 = synchronized()
            with torch.inference_mode():
                logits = p._network(x)
            t2 = synchronized()
            labels[z : z + n] = decide(logits, False)[0]
            t3 = time.perf_counter()
            t_input, t_net, t_post = t_input + t1 - t0, t_net + t2 - t1, t_post + t3 - t2
    total = t_read + t_input + t_net + t_post
    return dict(
        device=str(p.device),
        precision=p.precision,
        read_normalise_s=t_read,
        input_s=t_input,
        network_s=t_net,
        argmax_s=t_post,
        fractions=dict(
            read_normalise=t_read / total, input=t_input / total, network=t_net / total, argmax=t_post / total
        ),
    )


def add_child_arguments(parser):
    """The hidden arguments with which a benchmark script re-runs itself as a measured child process."""
    import argparse

    for name in ("--tomogram", "--outdir", "--options"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    if not any("--model" in a.option_strings for a in parser._actions):
        parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)


def run_child(args):
    """Child process: segment one tomogram with one lever; print JSON timings."""
    opts = json.loads(args.options)
    threads = opts.pop("threads", None)
    match_spectrum = opts.pop("match_spectrum", True)
    if threads:
        torch.set_num_threads(threads)
    from annotomo.api import segment
    from annotomo.predict import Predictor

    predictor = Predictor.from_file(args.model, **opts)
    t = time.perf_counter()
    segment(
        predictor,
        [args.tomogram],
        args.outdir,
        overwrite=True,
        progress=False,
        log=lambda *a: None,
        match_spectrum=match_spectrum,
    )
    seconds = time.perf_counter() - t
    print(json.dumps(dict(seconds=seconds, peak_rss_mb=peak_rss_mb())))


def peak_rss_mb() -> float:
    """This process's own peak resident memory (VmHWM), in MB.

    Not getrusage's ru_maxrss: on Linux that keeps the parent's resident size at fork across exec, so
    a child started by a benchmark that has just built a 4 GB tomogram would report >= 4 GB.
    """
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(model, tomogram, outdir, options):
    cmd = [
        sys.executable,
        sys.argv[0],
        "--child",
        "--model",
        str(model),
        "--tomogram",
        str(tomogram),
        "--outdir",
        str(outdir),
        "--options",
        json.dumps(options),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
