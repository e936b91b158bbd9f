"""Accuracy levers: train with one set of settings, score on three other simulated cells.

Each lever is a set of TrainConfig overrides. The model is trained for 5 minutes (wall clock) on one
simulated 64 x 256 x 256 cell at 28 A (seed 1 unless the lever says "train_seed") and scored on
cells 1001, 2001 and 3001, with and without merging slices along z at inference (confusion matrices
pooled over the three cells). Results are appended, one line per lever, to a JSON-lines file.
Training is time-bounded, so run nothing else on the machine meanwhile: a loaded machine trains
fewer iterations.

    python benchmarks/bench_accuracy.py                        # the default settings and 2.5D (~12 min)
    python benchmarks/bench_accuracy.py --all                  # every lever in LEVERS (~90 min)
    python benchmarks/bench_accuracy.py --only warp1 warp0.25  # some of them
    python benchmarks/bench_accuracy.py --lever mine '{"learning_rate": 0.003}'
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from common import RESULTS, cpu_name, score_confusions, source_commit

from annotomo import TrainConfig, simulate, train
from annotomo.conventions import SYNTH_CLASSES
from annotomo.metrics import confusion_matrix
from annotomo.predict import Predictor

TEST_SEEDS = (1001, 2001, 3001)
LEVERS = {  # name: TrainConfig overrides (+ "train_seed"); the first two run by default
    # Until 2026-11-25 22:40 the default was 2D: rows named "default*" before then are 2D, "2.5d*" 5 slices.
    # Every row records the context_slices and precision it trained with.
    "default": {},  # 2.5D (5 slices), warp 0.5, z flips 0.5, bf16 training where the CPU has it
    "2d": {"context_slices": 1},
    "default-seed7": {"seed": 7},
    "default-train-seed2": {"train_seed": 2},
    # Since 2026-11-26 06:22 the default reverses the context slices of half the patches (z flips); these are
    # the default without them (the rows named "zflip*" were measured with z flips off by default).
    "no-zflip": {"z_flip_fraction": 0.0},
    "no-zflip-seed7": {"z_flip_fraction": 0.0, "seed": 7},
    "no-zflip-train-seed2": {"z_flip_fraction": 0.0, "train_seed": 2},
    "2d-seed7": {"context_slices": 1, "seed": 7},
    "2d-train-seed2": {"context_slices": 1, "train_seed": 2},
    # without and with arbitrary-angle rotation / rescaling ("warp"), measured on the 2D model
    "warp0": {"context_slices": 1, "warp_fraction": 0.0},
    "warp0-seed7": {"context_slices": 1, "warp_fraction": 0.0, "seed": 7},
    "warp0-train-seed2": {"context_slices": 1, "warp_fraction": 0.0, "train_seed": 2},
    "warp0.25": {"context_slices": 1, "warp_fraction": 0.25},
    "warp0.75": {"context_slices": 1, "warp_fraction": 0.75},
    "warp1": {"context_slices": 1, "warp_fraction": 1.0},
    "warp-scale1.3": {"context_slices": 1, "warp_scale": 1.3},
    "warp0-lr1e-2": {"context_slices": 1, "warp_fraction": 0.0, "learning_rate": 0.01},
    "warp0-focus0.7": {"context_slices": 1, "warp_fraction": 0.0, "focus_fraction": 0.7},
    "warp0-patch96-batch16": {"context_slices": 1, "warp_fraction": 0.0, "patch": 96, "batch_size": 16},
}


def run_lever(name, overrides, minutes, cells, work):
    overrides = dict(overrides)
    train_seed = overrides.pop("train_seed", 1)
    tomogram, labels = cells(train_seed)
    classes = list(SYNTH_CLASSES)
    config = TrainConfig(**{"minutes": minutes, **overrides})
    path = work / f"{name}.annotomo"
    result = train(
        [tomogram], [labels], classes, path, config, progress=False, log=lambda *a: None, overwrite=True, init=None
    )
    trained = json.loads(path.with_name(path.name + ".log.json").read_text())["config"]
    row = dict(
        name=name,
        overrides=overrides,
        train_seed=train_seed,
        iterations=result.iterations,
        best_epoch=result.best["epoch"],
        context_slices=trained["context_slices"],
        precision=trained["precision"],
        z_flip_fraction=trained.get("z_flip_fraction", 0.0),
    )
    for label, options in (("no_z_merge", dict(z_smooth=0)), ("default_inference", {})):
        predictor = Predictor.from_file(path, **options)
        matrices = []
        for seed in TEST_SEEDS:
            t, truth = cells(seed)
            pred = predictor.predict_block(t, predictor.info.normalization_for(t), halo=0)
            matrices.append(confusion_matrix(truth, pred, len(classes) + 1))
        scored = score_confusions(matrices, classes)
        scores = scored["pooled"]
        # and each cell's own mean Dice (cell 1001 alone is bench_vs_tomoseg.py's single test cell)
        row[label] = dict(
            mean_dice=round(scores["mean_dice"], 4),
            **{k: round(v["dice"], 3) for k, v in scores["classes"].items()},
            mean_dice_per_cell=scored["per_cell"],
        )
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="run only these named levers")
    ap.add_argument("--all", action="store_true", help="run every lever in LEVERS")
    ap.add_argument("--lever", nargs=2, metavar=("NAME", "JSON"), help="run one lever given as TrainConfig overrides")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--out", default=str(RESULTS / "accuracy_levers.jsonl"))
    args = ap.parse_args()
    if args.lever:
        levers = {args.lever[0]: json.loads(args.lever[1])}
    else:
        names = args.only or (list(LEVERS) if args.all else list(LEVERS)[:2])
        unknown = sorted(set(names) - set(LEVERS))
        if unknown:
            ap.error(f"unknown lever(s) {unknown}; known: {', '.join(LEVERS)}")
        levers = {k: LEVERS[k] for k in names}
    work = Path(tempfile.mkdtemp(prefix="annotomo-acc-"))
    cache = {}

    def cells(seed):
        if seed not in cache:
            s = simulate(seed=seed)
            cache[seed] = (s.tomogram, s.labels)
        return cache[seed]

    machine = dict(cpu=cpu_name(), threads=torch.get_num_threads(), torch=torch.__version__)
    commit = source_commit()
    print(f"{'lever':<22}{'iters':>7}{'mean (no z-merge)':>19}{'mean':>7}  per feature (default inference)")
    for name, overrides in levers.items():
        row = run_lever(name, overrides, args.minutes, cells, work)
        row.update(date=time.strftime("%Y-%m-%d %H:%M"), minutes=args.minutes, machine=machine, commit=commit)
        per = row["default_inference"]
        print(
            f"{name:<22}{row['iterations']:>7d}{row['no_z_merge']['mean_dice']:>19.3f}{per['mean_dice']:>7.3f}  "
            + " ".join(f"{k} {v:.3f}" for k, v in per.items() if k not in ("mean_dice", "mean_dice_per_cell"))
            + f"  per cell {per['mean_dice_per_cell']}",
            flush=True,
        )
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    print(f"appended to {args.out}")


if __name__ == "__main__":
    main()
