"""annotomo's U-Net against EMAN2 tomoseg's CNN (one per feature), trained and applied in one run.

Every model is trained on the same simulated tomogram with the same wall-clock budget on this machine,
scored on a separate simulated test tomogram (another cell; also pooled with two more cells, since one
cell's score moves with its particular features) and, in full mode, on a test tomogram of the typical
bin-4 size, 94 x 864 x 864 (simulating it takes ~7 minutes and ~9 GB), trained and timed through the same
engine (training
at the machine's automatic precision: bf16 where the CPU has AMX/AVX512-BF16), timed through the same inference
engine (annotomo's Predictor, in a fresh subprocess) at fp32 and at bf16 on 864 x 864 slices. Seconds
for a whole 864 x 864 x 94 tomogram are extrapolated from the timed slices (time is linear in slices).

    python benchmarks/bench_vs_tomoseg.py [--quick] [--minutes 5]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from common import (
    RESULTS,
    add_child_arguments,
    child,
    flops_per_voxel,
    make_tomogram,
    matmul_peak,
    results_header,
    run_child,
    score_test_cells,
)

from annotomo import TrainConfig, simulate, train
from annotomo.api import segment
from annotomo.modelfile import load_model
from annotomo.training import tomoseg_config
from annotomo.volumes import write_volume

BIN4 = (94, 864, 864)

MODELS = {
    # name: TrainConfig overrides
    "unet 2.5D 5 slices (default)": dict(arch="unet", context_slices=5),
    "unet 2.5D 3 slices": dict(arch="unet", context_slices=3),
    "unet 2D": dict(arch="unet", context_slices=1),
    "unet-original (31M, 2D)": dict(arch="unet-original", context_slices=1, batch_size=4),
    "tomoseg-cnn (4 networks)": dict(arch="tomoseg-cnn"),
}


def config_for(overrides, minutes, seed):
    config = TrainConfig(minutes=minutes, seed=seed)
    if overrides.get("arch") == "tomoseg-cnn":
        config = tomoseg_config(config)
    for k, v in overrides.items():
        setattr(config, k, v)
    return config


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 minute of training per model, fewer timed slices")
    ap.add_argument("--minutes", type=float, default=None, help="training budget per model (default 5; quick 1)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", nargs="*", help="run only models whose name starts with one of these")
    ap.add_argument(
        "--no-full-size-test",
        action="store_true",
        help="in full mode, skip the 94 x 864 x 864 test tomogram (quick mode always does)",
    )
    ap.add_argument("--json", default=None)
    add_child_arguments(ap)
    args = ap.parse_args()
    if args.child:
        return run_child(args)
    minutes = args.minutes or (1.0 if args.quick else 5.0)
    json_path = Path(args.json or RESULTS / ("vs_tomoseg_quick.json" if args.quick else "vs_tomoseg.json"))
    work = Path(tempfile.mkdtemp(prefix="annotomo-vs-"))
    # The test tomogram is cell seed + 1000; cells seed + 2000 and + 3000 give a second, pooled score
    # (one cell's microtubules can be unusually faint, see README).
    train_sim = simulate(seed=args.seed)
    test_sims = {f"test{k}": simulate(seed=args.seed + 1000 * k) for k in (1, 2, 3)}
    for name, s in (("train", train_sim), *test_sims.items()):
        write_volume(work / f"{name}_tomo.mrc", s.tomogram, (28.0,) * 3)
        write_volume(work / f"{name}_labels.mrc", s.labels, (28.0,) * 3)
    # The full-size test tomogram: the size users segment (a cell of 64 x 256 x 256 holds ~3 microtubules,
    # so its score moves with each one; see README). Cell seed + 1000 at that field of view.
    full_test = None
    if not args.quick and not args.no_full_size_test:
        t = time.perf_counter()
        s = simulate(shape=BIN4, seed=args.seed + 1000)
        write_volume(work / "full_test_tomo.mrc", s.tomogram, (28.0,) * 3)
        full_test = dict(labels=s.labels, simulate_seconds=time.perf_counter() - t)
        del s
        print(
            f"simulated the {'x'.join(map(str, BIN4))} test tomogram in {full_test['simulate_seconds']:.0f} s",
            flush=True,
        )
    # fp32 is timed on several 864 x 864 slices; bf16 on two (without AMX/AVX512-BF16 it is slow).
    timed = dict(fp32=2 if args.quick else 4, bf16=2)
    timing_tomo = {}
    for precision, n in timed.items():
        timing_tomo[precision] = work / f"bin4_{n}_slices.mrc"
        if not timing_tomo[precision].exists():
            make_tomogram(timing_tomo[precision], (n, BIN4[1], BIN4[2]))
    peaks = dict(fp32=matmul_peak(torch.float32), bf16=matmul_peak(torch.bfloat16))
    classes = list(train_sim.class_names)

    rows = []
    for name, overrides in MODELS.items():
        if args.only and not any(name.startswith(o) for o in args.only):
            continue
        print(f"== {name}: training {minutes:g} min", flush=True)
        path = work / (name.split()[0] + f"_{len(rows)}.annotomo")
        config = config_for(overrides, minutes, args.seed)
        t = time.perf_counter()
        result = train(
            [work / "train_tomo.mrc"],
            [work / "train_labels.mrc"],
            classes,
            path,
            config,
            init=None,  # both networks from scratch
            progress=False,
            log=lambda *a: None,
            overwrite=True,
        )
        train_s = time.perf_counter() - t
        written = segment(
            path,
            [work / f"{k}_tomo.mrc" for k in test_sims],
            work / f"seg_{len(rows)}",
            overwrite=True,
            progress=False,
            log=lambda *a: None,
        )
        scored = score_test_cells(
            [out["labels"] for out in written], [s.labels for s in test_sims.values()], classes
        )  # "first": the test cell, seed + 1000
        scores, scores3 = scored["first"], scored["pooled"]
        per_cell = dict(zip(test_sims, scored["per_cell"], strict=True))
        trained = json.loads(path.with_name(path.name + ".log.json").read_text())["config"]
        model, info = load_model(path)
        row = dict(
            model=name,
            arch=info.arch,
            context_slices=info.context_slices,
            params=sum(p.numel() for p in model.parameters()),
            flops_per_voxel=flops_per_voxel(model, info.context_slices),
            iterations=result.iterations,
            train_seconds=train_s,
            train_precision=trained["precision"],
            mean_dice=scores["mean_dice"],
            dice={k: v["dice"] for k, v in scores["classes"].items()},
            mean_dice_3_cells=scores3["mean_dice"],
            mean_dice_per_cell=per_cell,
            dice_3_cells={k: v["dice"] for k, v in scores3["classes"].items()},
        )
        if full_test is not None:
            written = segment(
                path,
                [work / "full_test_tomo.mrc"],
                work / f"seg_full_{len(rows)}",
                overwrite=True,
                progress=False,
                log=lambda *a: None,
            )
            full = score_test_cells([written[0]["labels"]], [full_test["labels"]], classes)["first"]
            row["full_size_test"] = dict(
                mean_dice=full["mean_dice"], dice={k: v["dice"] for k, v in full["classes"].items()}
            )
        for precision, n in timed.items():
            r = child(path, timing_tomo[precision], work / f"time_{len(rows)}_{precision}", dict(precision=precision))
            voxels = n * BIN4[1] * BIN4[2]
            row[precision] = dict(
                mvox_per_s=voxels / r["seconds"] / 1e6,
                timed_slices=n,
                bin4_seconds=r["seconds"] * BIN4[0] / n,
                peak_rss_mb=r["peak_rss_mb"],
                gflops=row["flops_per_voxel"] * voxels / r["seconds"] / 1e9,
            )
        rows.append(row)
        print(
            f"   {result.iterations} iterations, mean Dice {scores['mean_dice']:.3f} "
            f"(3 cells pooled {scores3['mean_dice']:.3f}"
            + (f"; full-size test {row['full_size_test']['mean_dice']:.3f}" if full_test else "")
            + "), "
            f"fp32 {row['fp32']['mvox_per_s']:.2f} Mvox/s, bf16 {row['bf16']['mvox_per_s']:.2f} Mvox/s",
            flush=True,
        )

    base = next((r for r in rows if r["arch"] == "tomoseg-cnn"), None)
    for r in rows:
        for precision in ("fp32", "bf16"):
            r[precision]["speedup_vs_tomoseg"] = (
                r[precision]["mvox_per_s"] / base[precision]["mvox_per_s"] if base else None
            )
    result = dict(
        **results_header(),
        train_minutes=minutes,
        quick=args.quick,
        data=dict(
            train_seed=args.seed,
            test_seed=args.seed + 1000,
            pooled_test_seeds=[args.seed + 1000 * k for k in (1, 2, 3)],
            shape=list(train_sim.tomogram.shape),
            full_size_test=dict(
                shape=list(BIN4), seed=args.seed + 1000, simulate_seconds=round(full_test["simulate_seconds"], 1)
            )
            if full_test
            else None,
            pixel_size=28.0,
        ),
        matmul_peak_gflops=peaks,
        timed_slice_shape=list(BIN4[1:]),
        timed_slices=timed,
        models=rows,
    )
    print()
    print(
        f"machine: {result['machine']['cpu']}; matmul peak fp32 {peaks['fp32']:.0f} / bf16 {peaks['bf16']:.0f} "
        f"GFLOP/s; training budget {minutes:g} min per model"
    )
    names = list(rows[0]["dice"]) if rows else []
    head = f"{'model':<31}{'params':>8}{'kFLOP/vox':>10}{'iters':>7}" + "".join(f"{n[:8]:>9}" for n in names)
    head += f"{'mean':>7}{'3 cells':>8}{'full':>7}{'fp32 Mv/s':>10}{'864x94 s':>9}{'x CNN':>7}"
    head += f"{'bf16 Mv/s':>10}{'x CNN':>7}{'RSS MB':>8}"
    print(head)
    for r in rows:
        line = f"{r['model']:<31}{r['params'] / 1e6:>7.2f}M{r['flops_per_voxel'] / 1e3:>10.1f}{r['iterations']:>7d}"
        line += "".join(f"{r['dice'][n]:>9.3f}" for n in names)
        f32, b16 = r["fp32"], r["bf16"]
        full = r.get("full_size_test", {}).get("mean_dice", float("nan"))
        line += (
            f"{r['mean_dice']:>7.3f}{r['mean_dice_3_cells']:>8.3f}{full:>7.3f}{f32['mvox_per_s']:>10.2f}{f32['bin4_seconds']:>9.1f}"
            f"{(f32['speedup_vs_tomoseg'] or float('nan')):>7.1f}{b16['mvox_per_s']:>10.2f}"
            f"{(b16['speedup_vs_tomoseg'] or float('nan')):>7.1f}{f32['peak_rss_mb']:>8.0f}"
        )
        print(line)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1))
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
