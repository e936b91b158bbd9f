"""annotomo on a CUDA GPU: training, segmentation speed and memory, and CPU/GPU agreement, in one run.

What a lab with a GPU gets: the default U-Net and the tomoseg CNN trained for a wall-clock budget on the
GPU (iterations done, and how much of each training step is the CPU making patches), Dice on the same
simulated test cells as bench_vs_tomoseg.py, end-to-end `segment` of a 864 x 864 x 94 tomogram (read MRC ->
normalise -> infer -> write labels) at fp32 and bf16 after an untimed warm-up run, with peak GPU memory,
whether a model trained on the GPU gives the same labels on a CPU (models are shipped to CPU workers), and
where the time of the default path goes (reading, the network's input, the network, the argmax).

    python benchmarks/bench_gpu.py [--minutes 2] [--cnn-minutes 0.5] [--json benchmarks/results/gpu.json]

Exits with a message where torch sees no CUDA GPU. `--device cpu --minutes 0.1 --cnn-minutes 0.1
--timed-slices 2` checks the script itself on a machine without one (its figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from common import (
    RESULTS,
    make_tomogram,
    profile_default,
    results_header,
    score_test_cells,
    synchronize,
)

from annotomo import TrainConfig, simulate, train
from annotomo.api import segment
from annotomo.predict import Predictor
from annotomo.training import tomoseg_config
from annotomo.volumes import read_labels, write_volume

BIN4 = (94, 864, 864)
TEST_OFFSETS = (1000, 2000, 3000)  # as bench_vs_tomoseg.py: test cell seed + 1000, pooled with + 2000, + 3000


def write_cell(work: Path, name: str, seed: int) -> tuple[str, list[str]]:
    s = simulate(seed=seed)
    write_volume(work / f"{name}_tomo.mrc", s.tomogram, (28.0,) * 3)
    write_volume(work / f"{name}_labels.mrc", s.labels, (28.0,) * 3)
    return name, list(s.class_names)


def sampling_seconds_per_batch(tomogram, labels, n_classes, config: TrainConfig, batches=40) -> float:
    """CPU time to make one training batch (crop, rotate/rescale, flip, jitter): the part of a training
    step that a GPU does not speed up."""
    from annotomo.training.augment import make_training_batch
    from annotomo.training.data import PatchSampler, load_annotated

    rng = np.random.default_rng(0)
    sampler = PatchSampler.for_config([load_annotated(tomogram, labels, n_classes)], n_classes + 1, config, rng)
    t = time.perf_counter()
    for _ in range(batches):
        make_training_batch(sampler, config, rng)
    return (time.perf_counter() - t) / batches


def timed_segment(predictor: Predictor, tomogram, outdir, voxels) -> dict:
    """Seconds and peak GPU memory of one end-to-end segment, after an untimed one of the same tomogram.

    The first call with each batch shape picks cuDNN's convolution algorithms and allocates, which a user
    pays once per process. The warm-up must see every shape of the timed run: on 2026-11-26 it was an
    8-slice tomogram, so the timed run still paid for its 44- and 6-slice batches (gpu.json says so).
    """
    quiet = dict(overwrite=True, progress=False, log=lambda *a: None)
    device = predictor.device
    segment(predictor, [tomogram], outdir / "warmup", **quiet)
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    segment(predictor, [tomogram], outdir, **quiet)
    synchronize(device)
    seconds = time.perf_counter() - t
    return dict(
        seconds=seconds,
        mvox_per_s=voxels / seconds / 1e6,
        peak_gpu_mb=torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=2.0, help="training budget of the default U-Net")
    ap.add_argument("--cnn-minutes", type=float, default=0.5, help="training budget of the tomoseg CNN")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--prefetch-minutes",
        type=float,
        default=0.5,
        help="training budget of each run comparing batches made inline and in the background (0: skip)",
    )
    ap.add_argument("--timed-slices", type=int, default=BIN4[0], help="slices of the 864 x 864 timed tomogram")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json", default=str(RESULTS / "gpu.json"))
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"bench_gpu: torch {torch.__version__} sees no CUDA GPU")
    timed_shape = (args.timed_slices,) + BIN4[1:]
    timed_voxels = int(np.prod(timed_shape))
    json_path = Path(args.json)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="annotomo-gpu-"))
    t_setup = time.perf_counter()
    cells = {"train": args.seed, **{f"test{k // 1000}": args.seed + k for k in TEST_OFFSETS}}
    test_cells = [cell for cell in cells if cell != "train"]
    # Simulate in worker processes before CUDA is initialised here (each cell takes seconds of FFTs).
    with ProcessPoolExecutor(min(len(cells) + 2, os.cpu_count() or 1)) as pool:
        jobs = [pool.submit(write_cell, work, name, seed) for name, seed in cells.items()]
        big = pool.submit(make_tomogram, work / "bin4.mrc", timed_shape)
        classes = [j.result()[1] for j in jobs][0]
        big.result()
    props = torch.cuda.get_device_properties(device) if device.type == "cuda" else None
    result = dict(
        **results_header(
            gpu=props.name if props else "none (--device cpu)",
            gpu_memory_gb=round(props.total_memory / 1e9, 1) if props else 0,
            cuda=torch.version.cuda,
        ),
        setup_seconds=time.perf_counter() - t_setup,
        data=dict(
            train_seed=args.seed, test_seeds=[args.seed + k for k in TEST_OFFSETS], timed_shape=list(timed_shape)
        ),
        models=[],
    )

    def save():
        json_path.write_text(json.dumps(result, indent=1))

    tomo, labels = work / "train_tomo.mrc", work / "train_labels.mrc"
    truths = []
    for cell in test_cells:
        with read_labels(work / f"{cell}_labels.mrc") as truth:
            truths.append(np.array(truth.data))
    specs = [
        ("unet 2.5D 5 slices (default)", TrainConfig(minutes=args.minutes, seed=args.seed)),
        (
            "tomoseg-cnn (4 networks)",
            tomoseg_config(TrainConfig(arch="tomoseg-cnn", minutes=args.cnn_minutes, seed=args.seed)),
        ),
    ]
    for _, config in specs:
        config.device = args.device
    for name, config in specs:
        print(f"== {name}: training {config.minutes:g} min on {device}", flush=True)
        path = work / (name.split()[0] + ".annotomo")
        res = train(
            [tomo], [labels], classes, path, config, progress=False, log=lambda *a: None, overwrite=True, init=None
        )
        trained = json.loads(path.with_name(path.name + ".log.json").read_text())["config"]  # what ran
        row = dict(
            model=name,
            train_minutes=config.minutes,
            iterations=res.iterations,
            iterations_per_s=res.iterations / res.seconds,
            train_precision=trained["precision"],
            prefetch_batches=trained["prefetch_batches"],
        )
        if config.arch != "tomoseg-cnn":
            row["sampling_s_per_batch"] = sampling_seconds_per_batch(tomo, labels, len(classes), config)
            row["sampling_share_of_step"] = row["sampling_s_per_batch"] * row["iterations_per_s"]
        predictor = Predictor.from_file(path, device=device)  # the default: bf16 on GPUs that have it
        row["segment_precision"] = predictor.precision
        written = segment(
            predictor,
            [work / f"{cell}_tomo.mrc" for cell in test_cells],
            work / "seg",
            overwrite=True,
            progress=False,
            log=lambda *a: None,
        )
        scored = score_test_cells([out["labels"] for out in written], truths, classes)
        scores = scored["first"]
        row.update(
            mean_dice=scores["mean_dice"],
            dice={k: v["dice"] for k, v in scores["classes"].items()},
            mean_dice_3_cells=scored["pooled"]["mean_dice"],
            mean_dice_per_cell=scored["per_cell"],
        )
        for precision in ("fp32", "bf16"):
            row[precision] = timed_segment(
                Predictor.from_file(path, device=device, precision=precision),
                work / "bin4.mrc",
                work / f"time_{precision}",
                timed_voxels,
            )
        # The same model on the CPU (fp32) against the GPU (fp32), on the first test cell.
        labels_by_device = {}
        for where in (device, torch.device("cpu")):
            p = Predictor.from_file(path, device=where, precision="fp32")
            out = segment(
                p,
                [work / "test1_tomo.mrc"],
                work / f"agree_{where.type}",
                overwrite=True,
                progress=False,
                log=lambda *a: None,
            )[0]
            with read_labels(out["labels"]) as lab:
                labels_by_device[where.type] = np.asarray(lab.data).copy()
        row["cpu_gpu_label_agreement"] = float(np.mean(labels_by_device[device.type] == labels_by_device["cpu"]))
        row["profile"] = profile_default(path, work / "bin4.mrc", device)  # where the default path's time goes
        result["models"].append(row)
        save()
        print(
            f"   {res.iterations} iterations ({row['iterations_per_s']:.1f}/s), mean Dice {row['mean_dice']:.3f} "
            f"(3 cells {row['mean_dice_3_cells']:.3f}); 864x864x94: fp32 {row['fp32']['seconds']:.2f} s, "
            f"bf16 {row['bf16']['seconds']:.2f} s ({args.timed_slices} slices); CPU/GPU labels agree on "
            f"{100 * row['cpu_gpu_label_agreement']:.3f}% of voxels",
            flush=True,
        )

    rows = result["models"]
    base = rows[-1]
    for r in rows:
        for precision in ("fp32", "bf16"):
            r[precision]["speedup_vs_tomoseg"] = r[precision]["mvox_per_s"] / base[precision]["mvox_per_s"]
    save()
    m = result["machine"]
    print(f"\n{m['gpu']} ({m['gpu_memory_gb']} GB), torch {m['torch']} CUDA {m['cuda']}, {m['cores']} CPUs")
    print(
        f"{'model':<31}{'min':>5}{'iters':>7}{'it/s':>7}{'mean':>7}{'3 cells':>8}"
        f"{'fp32 s':>8}{'x CNN':>7}{'bf16 s':>8}{'x CNN':>7}{'GPU MB':>8}{'CPU=GPU':>9}"
    )
    for r in rows:
        f32, b16 = r["fp32"], r["bf16"]
        print(
            f"{r['model']:<31}{r['train_minutes']:>5g}{r['iterations']:>7d}{r['iterations_per_s']:>7.1f}"
            f"{r['mean_dice']:>7.3f}{r['mean_dice_3_cells']:>8.3f}"
            f"{f32['seconds']:>8.2f}{f32['speedup_vs_tomoseg']:>7.1f}"
            f"{b16['seconds']:>8.2f}{b16['speedup_vs_tomoseg']:>7.1f}{b16['peak_gpu_mb'] or 0:>8.0f}"
            f"{100 * r['cpu_gpu_label_agreement']:>8.2f}%"
        )
    for r in rows:
        f, prof = r["profile"]["fractions"], r["profile"]
        print(
            f"{r['model']}, {prof['precision']}: read+normalise {prof['read_normalise_s']:.2f} s "
            f"({100 * f['read_normalise']:.0f}%), network input {prof['input_s']:.2f} s ({100 * f['input']:.0f}%), "
            f"network {prof['network_s']:.2f} s ({100 * f['network']:.0f}%), "
            f"argmax {prof['argmax_s']:.2f} s ({100 * f['argmax']:.0f}%)"
        )
    if args.prefetch_minutes:
        result["prefetch"] = {}
        for depth in (0, 2):
            config = TrainConfig(
                minutes=args.prefetch_minutes, seed=args.seed, device=args.device, prefetch_batches=depth
            )
            res = train(
                [tomo],
                [labels],
                classes,
                work / f"prefetch{depth}.annotomo",
                config,
                init=None,
                progress=False,
                log=lambda *a: None,
                overwrite=True,
            )
            result["prefetch"][f"{depth} batches ahead"] = dict(
                iterations=res.iterations, iterations_per_s=res.iterations / res.seconds
            )
        save()
        print(
            "default U-Net training, "
            + ", ".join(f"{k}: {v['iterations_per_s']:.1f} it/s" for k, v in result["prefetch"].items())
        )
    if "sampling_share_of_step" in rows[0]:
        print(
            f"making a training batch on the CPU: {1000 * rows[0]['sampling_s_per_batch']:.0f} ms, "
            f"{100 * rows[0]['sampling_share_of_step']:.0f}% of a default training step"
        )
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
