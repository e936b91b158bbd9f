"""Segmentation speed and memory: `annotomo segment` end to end on a bin-4-sized tomogram.

For each lever (precision, channels-last, conv+BN fusion, tile size, threads) the whole path runs in a
fresh subprocess (read MRC -> normalise -> infer -> write labels), so peak RSS is per configuration.
Prints a table and writes JSON with Mvox/s, seconds, peak RSS, achieved model GFLOP/s against this
machine's measured matmul peak, and agreement/Dice of each lever's labels with the unoptimised fp32 path.

    python benchmarks/bench_speed.py [--quick] [--large-gvox 1.0] [--model model.annotomo]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import (
    RESULTS,
    add_child_arguments,
    child,
    flops_per_voxel,
    make_tomogram,
    matmul_peak,
    profile_default,
    results_header,
    run_child,
)

from annotomo import TrainConfig, simulate, train
from annotomo.device import choose_precision, cpu_has_fast_bf16
from annotomo.metrics import segmentation_scores
from annotomo.modelfile import load_model
from annotomo.volumes import read_labels, write_volume

LEVERS = {
    # name: Predictor options. The first is the reference every lever is compared with; the "default"
    # rows use precision "auto", which is bf16 on CPUs with AMX or AVX512-BF16 and fp32 elsewhere.
    "reference fp32 (NCHW, unfused)": dict(precision="fp32", fuse=False, channels_last=False),
    "+ channels-last": dict(precision="fp32", fuse=False, channels_last=True),
    "+ conv/BN fusion": dict(precision="fp32", fuse=True, channels_last=True),
    "+ bf16 autocast": dict(precision="bf16", fuse=True, channels_last=True),
    "default, spectrum not matched": dict(precision="auto", match_spectrum=False),
    "default without z smoothing": dict(precision="auto", z_smooth=0),
    "default, tiles 512 (overlap 256)": dict(precision="auto", tile=512, overlap=256),
    "default, 1 thread": dict(precision="auto", threads=1),
}

QUICK_LEVERS = (
    "reference fp32 (NCHW, unfused)",
    "+ conv/BN fusion",
    "+ bf16 autocast",
    "default, spectrum not matched",
)


def default_lever() -> str:
    """The lever that `annotomo segment` uses on this machine: the one with the precision 'auto' picks."""
    return "+ bf16 autocast" if lever_precision({}) == "bf16" else "+ conv/BN fusion"


def lever_precision(opts) -> str:
    return choose_precision(torch.device("cpu"), opts.get("precision", "auto"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller tomogram (864 x 864 x 32), fewer levers")
    ap.add_argument("--model", help="trained model (default: train one for --train-minutes on simulated data)")
    ap.add_argument("--train-minutes", type=float, default=2.0)
    ap.add_argument("--large-gvox", type=float, default=0.0, help="also run a tomogram of this many Gvoxels")
    ap.add_argument("--large-only", action="store_true", help="only the large-tomogram runs (with --large-gvox)")
    ap.add_argument("--json", default=str(RESULTS / "speed.json"))
    add_child_arguments(ap)
    args = ap.parse_args()
    if args.child:
        return run_child(args)

    work = Path(tempfile.mkdtemp(prefix="annotomo-bench-"))
    model_path = Path(args.model) if args.model else work / "bench.annotomo"
    if not args.model:
        print(f"training a model for {args.train_minutes:g} min on a simulated tomogram ...", flush=True)
        s = simulate(seed=1)
        write_volume(work / "a_tomo.mrc", s.tomogram, (28.0,) * 3)
        write_volume(work / "a_labels.mrc", s.labels, (28.0,) * 3)
        train(
            [work / "a_tomo.mrc"],
            [work / "a_labels.mrc"],
            list(s.class_names),
            model_path,
            TrainConfig(minutes=args.train_minutes),
            init=None,
            progress=False,
            log=lambda *a: None,
            overwrite=True,
        )
    model, info = load_model(model_path)
    fpv = flops_per_voxel(model, info.context_slices)

    shape = (32 if args.quick else 94, 864, 864)
    tomo = work / "bin4.mrc"
    make_tomogram(tomo, shape)
    test = simulate(seed=2)
    write_volume(work / "test_tomo.mrc", test.tomogram, (28.0,) * 3)

    peak32 = matmul_peak(torch.float32)
    peak16 = matmul_peak(torch.bfloat16)
    default = default_lever()
    levers = {k: v for k, v in LEVERS.items() if not args.quick or k in QUICK_LEVERS}
    if not cpu_has_fast_bf16():  # without AMX / AVX512-BF16, bf16 convolutions run ~5-15x slower than fp32
        levers = {k: v for k, v in levers.items() if v.get("precision") != "bf16"}
        print("bf16 lever skipped: this CPU has no AMX or AVX512-BF16 (bench_vs_tomoseg.py times bf16 anyway)")
    if args.large_only:
        levers = {}
    rows = []
    reference_labels = None
    for name, opts in levers.items():
        out = work / name.replace(" ", "_").replace("/", "")
        r = child(model_path, tomo, out, opts)
        child(model_path, work / "test_tomo.mrc", out, opts)
        with read_labels(out / "test_tomo_labels.mrc") as lab:
            pred = np.array(lab.data)
        scores = segmentation_scores(test.labels, pred, info.class_names)
        if reference_labels is None:
            reference_labels, reference_dice = pred, scores["mean_dice"]
        voxels = np.prod(shape)
        rows.append(
            dict(
                lever=name,
                options=opts,
                precision=lever_precision(opts),
                default=name == default,
                mvox_per_s=voxels / r["seconds"] / 1e6,
                seconds=r["seconds"],
                peak_rss_mb=r["peak_rss_mb"],
                gflops=fpv * voxels / r["seconds"] / 1e9,
                mean_dice=scores["mean_dice"],
                dice_change=scores["mean_dice"] - reference_dice,
                agreement=float(np.mean(pred == reference_labels)),
            )
        )
        print(
            f"{name:<32} {rows[-1]['mvox_per_s']:6.2f} Mvox/s  {r['seconds']:6.1f} s  "
            f"{r['peak_rss_mb']:6.0f} MB  Dice {scores['mean_dice']:.3f}",
            flush=True,
        )

    scaling = []
    if args.large_gvox:
        for gvox in sorted({args.large_gvox / 4, args.large_gvox}):
            nz = max(8, int(gvox * 1e9 / (864 * 864 * 16)))
            big_shape = (nz, 864 * 4, 864 * 4)
            big = work / f"big_{nz}.mrc"
            make_tomogram(big, big_shape)
            r = child(model_path, big, work / f"big_out_{nz}", LEVERS[default])
            scaling.append(
                dict(
                    shape=big_shape,
                    gvoxels=float(np.prod(big_shape)) / 1e9,
                    **r,
                    mvox_per_s=float(np.prod(big_shape)) / r["seconds"] / 1e6,
                )
            )
            print(
                f"large {big_shape}: {scaling[-1]['gvoxels']:.2f} Gvox, {r['seconds']:.0f} s, "
                f"{scaling[-1]['mvox_per_s']:.2f} Mvox/s, peak RSS {r['peak_rss_mb']:.0f} MB",
                flush=True,
            )
            big.unlink()

    profile = profile_default(model_path, tomo)
    result = dict(
        **results_header(fast_bf16=cpu_has_fast_bf16()),
        tomogram_shape=shape,
        model=dict(arch=info.arch, params=info.arch_params, flops_per_voxel=fpv),
        matmul_peak_gflops=dict(fp32=peak32, bf16=peak16),
        levers=rows,
        default=default,
        large_tomograms=scaling,
        profile=profile,
    )
    print()
    print(
        f"machine: {result['machine']['cpu']}, {os.cpu_count()} cores; matmul peak fp32 {peak32:.0f} GFLOP/s, "
        f"bf16 {peak16:.0f} GFLOP/s; model {fpv / 1e3:.1f} kFLOP/voxel"
    )
    print(f"default on this machine: {default} (precision {lever_precision(LEVERS[default])})")
    print(f"{'lever':<44}{'Mvox/s':>8}{'s':>8}{'RSS MB':>8}{'GFLOP/s':>9}{'% peak':>8}{'Dice':>7}{'agree':>8}")
    for r in rows:
        peak = peak16 if r["precision"] == "bf16" else peak32
        label = r["lever"] + (" (default here)" if r["default"] else "")
        print(
            f"{label:<44}{r['mvox_per_s']:>8.2f}{r['seconds']:>8.1f}{r['peak_rss_mb']:>8.0f}"
            f"{r['gflops']:>9.1f}{100 * r['gflops'] / peak:>7.0f}%{r['mean_dice']:>7.3f}{r['agreement']:>8.4f}"
        )
    f = profile["fractions"]
    print(
        f"default path time: network {100 * f['network']:.0f}%, read+normalise {100 * f['read_normalise']:.0f}%, "
        f"network input {100 * f['input']:.0f}%, argmax {100 * f['argmax']:.0f}%"
    )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
