"""Annotation effort: how many painted slices each way of choosing them needs for the same Dice.

A simulated annotator on simulated test cells under three imaging conditions (the default and two
outside the built-in model's randomised training ranges): each round it paints K whole slices (the
simulator's truth) chosen by a strategy, fine-tunes the current model on everything painted so far
for a fixed number of iterations, segments the cell and scores it (mean Dice over the 4 features,
whole cell). Strategies: evenly spaced, random (several seeds), `suggest` (annotomo.suggest_places on
the current model's own segmentation and uncertainty) and the oracle "the slices the current model gets
most wrong, by the truth" (an upper bound no user has). With --region PX, also "regions": each round
paints as many voxels as K slices hold, in PX x PX boxes that `suggest --region PX` chooses (the painted
boxes count as certain, so they are not chosen again); only the painted voxels are annotated, as in the
panel's region mode. Curves record painted slices and voxels. From scratch there is no model to ask in
the first round: `suggest` then paints evenly spaced slices, as a user would, and asks from round 2.

    .venv/bin/python benchmarks/bench_effort.py                       # from cellular-v2
    .venv/bin/python benchmarks/bench_effort.py --start scratch --json benchmarks/results/effort_scratch.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS, results_header

import annotomo
from annotomo.api import segment_array
from annotomo.conventions import NOT_ANNOTATED
from annotomo.metrics import segmentation_scores
from annotomo.suggestions import suggest_places

CONDITIONS = {  # the default, and two outside the built-in model's training ranges (SNR 0.1-1, +-40-70 deg)
    "default": {},
    "snr_0.06": {"snr": 0.06},
    "tilt35_defocus7": {"tilt_range": 35.0, "defocus": 7.0},
}
GAP = 3  # slices between chosen slices, as `suggest`'s default


def spaced(order, annotated, k, gap=GAP):
    """The first k slices of `order` that are not annotated and not within `gap` of a chosen one."""
    chosen = []
    for z in order:
        if not annotated[z] and all(abs(z - c) > gap for c in chosen):
            chosen.append(int(z))
        if len(chosen) == k:
            break
    return chosen


def choose(strategy, k, annotated, round_index, prediction, unsure, truth, names, rng):
    nz = len(annotated)
    if strategy == "even":  # the round's share of evenly spaced slices over the whole stack
        targets = np.linspace(0, nz, k * (round_index + 1) + 2)[1:-1].round().astype(int)
        free = [z for z in targets if not annotated[z]]
        order = sorted(range(nz), key=lambda z: min(abs(z - t) for t in free) if free else 0)
        return spaced(order, annotated, k, gap=0)
    if strategy.startswith("random"):
        return spaced(rng.permutation(nz), annotated, k, gap=0)
    if strategy == "suggest":
        if prediction is None:  # from scratch there is no model to ask yet: paint evenly spaced slices first
            return choose("even", k, annotated, round_index, prediction, unsure, truth, names, rng)
        return [p["z"] for p in suggest_places(prediction, unsure, names, annotated, k, None, GAP)]
    if strategy == "oracle":
        wrong = ((prediction != truth) & (truth != NOT_ANNOTATED)).reshape(nz, -1).sum(axis=1)
        return spaced(np.argsort(-wrong, kind="stable"), annotated, k)
    raise ValueError(strategy)


def run_cell(sim, strategies, args, work):
    names = list(sim.class_names)
    truth = sim.labels
    start_model = None if args.start == "scratch" else args.start
    curves = {}
    if start_model is not None:
        first, _, first_unsure = segment_array(start_model, sim.tomogram, (28.0,) * 3, uncertainty=True)
        curves["zero labels"] = [dict(slices=0, voxels=0, dice=segmentation_scores(truth, first, names)["mean_dice"])]
        print(f"    zero labels: {curves['zero labels'][0]['dice']:.3f}", flush=True)
    for strategy in strategies:
        rng = np.random.default_rng(int(strategy[-1]) if strategy.startswith("random") else 0)
        annotated = np.zeros(truth.shape[0], bool)
        painted = np.zeros(truth.shape, bool)
        model = start_model
        prediction, unsure = (first, first_unsure) if start_model is not None else (None, None)
        curve = []
        for r in range(args.rounds):
            if prediction is None and strategy in ("oracle", "regions"):  # from scratch: a blank prediction
                prediction, unsure = np.zeros_like(truth), np.ones(truth.shape, np.float32)
            if strategy == "regions":
                boxes = args.k * truth[0].size // args.region**2
                still = np.where(painted, 0.0, unsure).astype(np.float32)
                for p in suggest_places(prediction, still, names, None, boxes, args.region, 0):
                    painted[p["z"], p["y0"] : p["y1"], p["x0"] : p["x1"]] = True
                annotated = painted.reshape(len(painted), -1).any(1)
            else:
                for z in choose(strategy, args.k, annotated, r, prediction, unsure, truth, names, rng):
                    annotated[z] = True
                painted[annotated] = True
            sparse = np.where(painted, truth, NOT_ANNOTATED).astype(np.uint8)
            out = Path(work) / f"{strategy}_{r}.annotomo"
            config = annotomo.TrainConfig(
                iterations=args.iterations, epoch_iterations=args.iterations, seed=0, pixel_size=28.0
            )
            annotomo.train(
                [sim.tomogram],
                [sparse],
                names,
                out,
                config,
                progress=False,
                log=lambda *a: None,
                overwrite=True,
                init=model,
            )
            model = str(out)
            prediction, _, unsure = segment_array(model, sim.tomogram, (28.0,) * 3, uncertainty=True)
            dice = segmentation_scores(truth, prediction, names)["mean_dice"]
            curve.append(dict(slices=int(annotated.sum()), voxels=int(painted.sum()), dice=dice))
        curves[strategy] = curve
        print(f"    {strategy:8s} " + "  ".join(f"{c['slices']} slices {c['dice']:.3f}" for c in curve), flush=True)
    return curves


def needed(points, target):
    """The fewest slices at which a (slices, Dice) curve reaches `target`, else None."""
    return next((s for s, d in points if d >= target), None)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--start", default="cellular-v2", help="a model to fine-tune, or 'scratch'")
    ap.add_argument("--conditions", nargs="*", default=list(CONDITIONS))
    ap.add_argument("--seeds", nargs="*", type=int, default=[4001, 4002])
    ap.add_argument("--shape", nargs=3, type=int, default=[48, 192, 192])
    ap.add_argument("-k", type=int, default=2, help="slices painted per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=200, help="fine-tuning iterations per round")
    ap.add_argument("--random-seeds", type=int, default=3)
    ap.add_argument("--region", type=int, help="also the 'regions' strategy: PX x PX boxes chosen by suggest")
    ap.add_argument("--strategies", nargs="*", help="only these (default: all)")
    ap.add_argument("--json", default=str(RESULTS / "effort.json"))
    args = ap.parse_args()
    strategies = ["even", *(f"random{i}" for i in range(args.random_seeds)), "suggest", "oracle"]
    strategies += ["regions"] if args.region else []
    strategies = [
        s
        for s in strategies
        if not args.strategies or s in args.strategies or s.rstrip("0123456789") in args.strategies
    ]
    cells, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        for condition in args.conditions:
            for seed in args.seeds:
                print(f"{condition} cell {seed}", flush=True)
                sim = annotomo.simulate(shape=tuple(args.shape), seed=seed, **CONDITIONS[condition])
                cells.append(dict(condition=condition, seed=seed, curves=run_cell(sim, strategies, args, work)))
    randoms = [s for s in strategies if s.startswith("random")]
    groups = {"random": randoms} if randoms else {}
    groups.update({s: [s] for s in strategies if not s.startswith("random")})
    summary = {}
    if args.start != "scratch":
        summary["zero labels"] = dict(dice=float(np.mean([c["curves"]["zero labels"][0]["dice"] for c in cells])))
    for group, members in groups.items():
        rounds = []
        for r in range(args.rounds):
            dice = [c["curves"][m][r]["dice"] for c in cells for m in members]
            slices = [c["curves"][m][r]["slices"] for c in cells for m in members]
            voxels = [c["curves"][m][r]["voxels"] for c in cells for m in members]
            rounds.append(dict(slices=float(np.mean(slices)), voxels=float(np.mean(voxels)), dice=float(np.mean(dice))))
        points = [(x["slices"], x["dice"]) for x in rounds]
        summary[group] = dict(rounds=rounds, slices_for_0_85=needed(points, 0.85), slices_for_0_90=needed(points, 0.90))
    print(
        "\n| strategy | "
        + " | ".join(f"Dice after {r + 1} round(s)" for r in range(args.rounds))
        + " | slices for 0.85 | for 0.90 |"
    )
    print("|---|" + "---|" * (args.rounds + 2))
    for group, s in summary.items():
        if "rounds" not in s:
            print(f"| {group} | {s['dice']:.3f} (0 slices) |" + " |" * (args.rounds + 1))
            continue
        cols = " | ".join(
            f"{x['dice']:.3f} ({x['slices']:.0f} slices, {x['voxels'] / 1e3:.0f} kvox)" for x in s["rounds"]
        )
        print(f"| {group} | {cols} | {s['slices_for_0_85'] or '-'} | {s['slices_for_0_90'] or '-'} |")
    out = dict(results_header(), args=vars(args), cells=cells, summary=summary, seconds=time.perf_counter() - started)
    Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
