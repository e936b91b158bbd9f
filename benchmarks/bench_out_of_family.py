"""Zero labels on tomograms annotomo's simulator did not make: PolNet's structures (polnet/polnet_cells.py).

Each model segments every out-of-family cell under every imaging condition, as a user would with zero
labels (the tomograms are at 10 A; `segment` resamples to the model's pixel size and back). Per feature
(microtubule, ribosome, membrane; PolNet has no double membranes): Dice, and a tolerance F1 within 2 nm
(a predicted voxel counts as right within 2 nm of a true one, a true one as found within 2 nm of a
predicted one), since simulators draw label widths differently. Beside it, the in-family figure: the same
three features' Dice on annotomo's own test cells (seeds 1001, 2001, 3001, default condition). Speed:
seconds per million voxels of the out-of-family tomograms, end to end in `segment_array`.

    .venv/bin/python benchmarks/bench_out_of_family.py --cells benchmarks/output/polnet --models cellular-v1 cellular-v2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from common import RESULTS, results_header
from scipy import ndimage

import annotomo
from annotomo.api import segment_array
from annotomo.metrics import segmentation_scores
from annotomo.predict import Predictor
from annotomo.volumes import open_volume, read_labels

FEATURES = ["microtubule", "ribosome", "membrane"]
TOLERANCE_NM = 2.0


def tolerance_f1(truth: np.ndarray, predicted: np.ndarray, nm_per_voxel: float, tolerance_nm=TOLERANCE_NM) -> float:
    """F1 of predicted against true voxels, each counted right within `tolerance_nm` of the other set."""
    if not truth.any() and not predicted.any():
        return float("nan")
    if not truth.any() or not predicted.any():
        return 0.0
    to_truth = ndimage.distance_transform_edt(~truth, sampling=nm_per_voxel)
    to_predicted = ndimage.distance_transform_edt(~predicted, sampling=nm_per_voxel)
    precision = float(np.mean(to_truth[predicted] <= tolerance_nm))
    recall = float(np.mean(to_predicted[truth] <= tolerance_nm))
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def score(truth, truth_names, predicted, model_names, nm_per_voxel) -> dict:
    out = {}
    for name in FEATURES:
        t = truth == truth_names.index(name) + 1
        p = predicted == model_names.index(name) + 1
        dice = 2 * np.logical_and(t, p).sum() / max(t.sum() + p.sum(), 1)
        out[name] = dict(dice=float(dice), tolerance_f1=tolerance_f1(t, p, nm_per_voxel))
    return out


def in_family(predictor) -> dict:
    """Dice of the three features on annotomo's own test cells (default condition), zero labels."""
    dice = {n: [] for n in FEATURES}
    for seed in (1001, 2001, 3001):
        sim = annotomo.simulate(seed=seed)
        labels, _ = segment_array(predictor, sim.tomogram, (sim.pixel_size,) * 3)
        scores = segmentation_scores(sim.labels, labels, list(sim.class_names))["classes"]
        for n in FEATURES:
            dice[n].append(scores[n]["dice"])
    return {n: float(np.mean(v)) for n, v in dice.items()}


def fine_tune(model, cells: Path, seed: str, slices: int, iterations: int) -> str:
    """`model` fine-tuned on `slices` evenly spaced slices of cell `seed` (its WBP tomogram), as `train` does."""
    import tempfile

    from annotomo.volumes import write_volume

    with read_labels(cells / f"cell_{seed}_labels.mrc") as lab:
        truth, names, voxel_size = np.asarray(lab.data), lab.class_names, lab.voxel_size
    sparse = np.full(truth.shape, 255, np.uint8)
    picked = np.linspace(0, truth.shape[0], slices + 2)[1:-1].round().astype(int)
    sparse[picked] = truth[picked]
    work = Path(tempfile.mkdtemp())
    write_volume(work / "sparse.mrc", sparse, voxel_size, class_names=names)
    out = work / "tuned.annotomo"
    config = annotomo.TrainConfig(iterations=iterations, epoch_iterations=min(iterations, 100))
    tomogram = cells / f"cell_{seed}_wbp_tomo.mrc"
    annotomo.train(
        [tomogram], [work / "sparse.mrc"], names, out, config, progress=False, log=lambda *a: None, init=model
    )
    return str(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=Path, default=Path("benchmarks/output/polnet"))
    ap.add_argument("--models", nargs="*", default=["cellular-v1", "cellular-v2"])
    ap.add_argument(
        "--fine-tune-slices",
        type=int,
        default=0,
        help="also fine-tune each model on this many evenly spaced slices of the first cell (wbp) and score "
        "it on the other cells: what a few painted slices fix",
    )
    ap.add_argument("--fine-tune-iterations", type=int, default=500)
    ap.add_argument("--json", default=str(RESULTS / "out_of_family.json"))
    args = ap.parse_args()
    tomograms = sorted(args.cells.glob("cell_*_*_tomo.mrc"))
    if not tomograms:
        raise SystemExit(f"no cell_*_tomo.mrc in {args.cells}: make them with benchmarks/polnet/polnet_cells.py")
    results = {}
    runs = [(model, model, tomograms) for model in args.models]
    if args.fine_tune_slices:
        first = tomograms[0].name.split("_")[1]
        others = [t for t in tomograms if t.name.split("_")[1] != first]
        for model in args.models:
            tuned = fine_tune(model, args.cells, first, args.fine_tune_slices, args.fine_tune_iterations)
            runs.append((f"{model} + {args.fine_tune_slices} slices of cell {first}", tuned, others))
    for label, model, paths in runs:
        predictor = Predictor.from_file(model)
        rows, seconds, voxels = [], 0.0, 0
        for path in paths:
            seed = path.name.split("_")[1]
            condition = path.name[len(f"cell_{seed}_") : -len("_tomo.mrc")]
            with open_volume(path) as vol, read_labels(path.parent / f"cell_{seed}_labels.mrc") as lab:
                data, voxel_size = np.asarray(vol.data), vol.voxel_size
                start = time.perf_counter()
                predicted, _ = segment_array(predictor, data, voxel_size)
                seconds += time.perf_counter() - start
                voxels += data.size
                scores = score(
                    np.asarray(lab.data), lab.class_names, predicted, predictor.info.class_names, voxel_size[2] / 10
                )
            rows.append(dict(cell=int(seed), condition=condition, scores=scores))
            print(
                f"{label} cell {seed} {condition:12s} "
                + "  ".join(f"{n} {s['dice']:.2f}/{s['tolerance_f1']:.2f}" for n, s in scores.items()),
                flush=True,
            )
        mean = {
            n: {m: float(np.mean([r["scores"][n][m] for r in rows])) for m in ("dice", "tolerance_f1")}
            for n in FEATURES
        }
        results[label] = dict(
            rows=rows,
            features=mean,
            dice=float(np.mean([mean[n]["dice"] for n in FEATURES])),
            tolerance_f1=float(np.mean([mean[n]["tolerance_f1"] for n in FEATURES])),
            in_family=in_family(predictor),
            seconds_per_mvoxel=seconds / (voxels / 1e6),
        )
        results[label]["in_family_mean"] = float(np.mean(list(results[label]["in_family"].values())))
    print("\n| model | out of family: Dice (tolerance F1) | microtubule | ribosome | membrane | in family | s/Mvoxel |")
    print("|---|---|---|---|---|---|---|")
    for model, r in results.items():
        per = " | ".join(f"{r['features'][n]['dice']:.3f} ({r['features'][n]['tolerance_f1']:.3f})" for n in FEATURES)
        print(
            f"| {model} | {r['dice']:.3f} ({r['tolerance_f1']:.3f}) | {per} | {r['in_family_mean']:.3f} | "
            f"{r['seconds_per_mvoxel']:.3f} |"
        )
    out = dict(results_header(), cells=[p.name for p in tomograms], results=results)
    Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
