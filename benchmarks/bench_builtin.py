"""The built-in model on held-out simulated conditions: zero labels, 5 slices + 1 minute of fine-tuning,
and training from scratch at equal time and with full labels for 5 minutes.

    python benchmarks/bench_builtin.py                     # ~20 min on 2 cores
    python benchmarks/bench_builtin.py --model cellular-v1 --cells 2   # the first built-in model
    python benchmarks/bench_builtin.py --fit-cells 6        # zero labels on its own training cells (~3 min)

Held-out cells: seeds the built-in model never saw (its training used 100000-100039, validation
200000-200002), under randomised conditions (`simulate(randomise=True)`, dense matter dark, 28 A) and
two of the matrix's named conditions. Per cell:
- zero labels: the model as it ships;
- 5 slices + 1 min: fine-tuned for 1 minute on 5 annotated slices of the cell (others not annotated);
- scratch, 5 slices + 1 min: the same labels and time, from a fresh network (the equal-time comparison);
- scratch, full labels + 5 min (on the first --full-cells cells): the usual recipe with every voxel annotated.
Mean Dice over the 4 features on the whole cell.

--fit-cells N asks instead whether the model is held back by its data or by its fit: zero-label Dice on
the first N of its own training cells (re-simulated from the seeds in its provenance) against its
validation cells and N randomised held-out cells. Equal scores mean it does not over-fit its 40 cells, so
more cells alone would not help; a larger or longer-trained network might.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
from common import RESULTS, results_header

from annotomo import TrainConfig, read_model_info, segment, simulate, train
from annotomo.api import segment_array
from annotomo.conventions import NOT_ANNOTATED, SYNTH_CLASSES
from annotomo.metrics import segmentation_scores
from annotomo.volumes import Volume, read_labels

HELD_OUT = [(300001, {}), (300002, {}), (300003, {}), (300004, {"snr": 0.15}), (300005, {"reconstruction": "sirt"})]
VOXEL = (28.0,) * 3


def mean_dice(truth, labels):
    scores = segmentation_scores(truth, labels, SYNTH_CLASSES)
    return round(scores["mean_dice"], 4), {k: round(v["dice"], 4) for k, v in scores["classes"].items()}


def fit_check(model, n_cells: int, json_path):
    """Zero-label Dice on the model's own training cells, its validation cells and held-out cells."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from train_builtin_model import VALIDATION_SEEDS, make_cell

    info = read_model_info(model)
    training = [c["seed"] for c in info.provenance["training_cells"][:n_cells]]
    groups = dict(
        training=training, validation=list(VALIDATION_SEEDS), held_out=list(range(300_010, 300_010 + n_cells))
    )
    rows, means = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for group, seeds in groups.items():
            for seed in seeds:
                cell = make_cell(work, seed)
                written = segment(model, [cell["tomogram"]], work / f"seg{seed}", progress=False, log=lambda *a: None)
                with read_labels(cell["labels"]) as truth, read_labels(written[0]["labels"]) as predicted:
                    mean, per_class = mean_dice(np.asarray(truth.data), np.asarray(predicted.data))
                row = dict(group=group, seed=seed, pixel_size=round(cell["pixel_size"], 2), mean_dice=mean, **per_class)
                rows.append(row)
                print(json.dumps(row), flush=True)
            means[group] = round(float(np.mean([r["mean_dice"] for r in rows if r["group"] == group])), 4)
    print(json.dumps(means))
    Path(json_path).write_text(json.dumps(dict(**results_header(), model=model, rows=rows, means=means), indent=1))
    print(f"wrote {json_path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="cellular-v2")
    ap.add_argument("--cells", type=int, default=len(HELD_OUT))
    ap.add_argument("--full-cells", type=int, default=2, help="cells also trained from scratch on full labels")
    ap.add_argument("--minutes", type=float, default=1.0, help="fine-tuning (and equal-time scratch) minutes")
    ap.add_argument("--full-minutes", type=float, default=5.0)
    ap.add_argument("--fit-cells", type=int, help="only score zero labels on N own training cells (see above)")
    ap.add_argument("--zero-labels-only", action="store_true", help="only the zero-label column (seconds)")
    ap.add_argument("--json", default=None, help="default: results/builtin.json (builtin_fit.json with --fit-cells)")
    args = ap.parse_args()
    if args.fit_cells:
        return fit_check(args.model, args.fit_cells, args.json or RESULTS / "builtin_fit.json")
    args.json = args.json or str(RESULTS / "builtin.json")
    info = read_model_info(args.model)
    rows = []
    quiet = dict(progress=False, log=lambda *a: None, overwrite=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for k, (seed, fixed) in enumerate(HELD_OUT[: args.cells]):
            sim = simulate(seed=seed, randomise=not fixed, invert_contrast=False, **fixed)
            cell = Volume(data=sim.tomogram, voxel_size=VOXEL, origin=(0.0,) * 3, path=Path(f"cell{seed}"))
            slices = np.linspace(4, len(sim.labels) - 5, 5).round().astype(int)
            sparse = np.full(sim.labels.shape, NOT_ANNOTATED, np.uint8)
            sparse[slices] = sim.labels[slices]
            row = dict(seed=seed, conditions=asdict(sim.conditions), annotated_slices=slices.tolist())
            zero, _ = segment_array(args.model, sim.tomogram, VOXEL, progress=False)
            row["zero_labels"] = mean_dice(sim.labels, zero)[0]
            runs = [
                ("fine_tuned", args.minutes, sparse, args.model),
                ("scratch_same_labels_and_time", args.minutes, sparse, None),
            ]
            if args.zero_labels_only:
                runs = []
            elif k < args.full_cells:
                runs.append(("scratch_full_labels", args.full_minutes, sim.labels, None))
            for name, minutes, labels, init in runs:
                result = train(
                    [cell],
                    [labels],
                    SYNTH_CLASSES,
                    work / f"{name}.annotomo",
                    TrainConfig(minutes=minutes, pixel_size=28.0),
                    init=init,
                    **quiet,
                )
                predicted, _ = segment_array(result.model_path, sim.tomogram, VOXEL, progress=False)
                row[name] = mean_dice(sim.labels, predicted)[0]
                row[f"{name}_iterations"] = result.iterations
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "conditions"}), flush=True)
    means = {
        name: round(float(np.mean([r[name] for r in rows if name in r])), 4)
        for name in ("zero_labels", "fine_tuned", "scratch_same_labels_and_time", "scratch_full_labels")
        if any(name in r for r in rows)
    }
    result = dict(
        **results_header(),
        model=args.model,
        model_provenance=dict(
            training_data=info.provenance.get("training_data"), iterations=info.provenance.get("iterations")
        ),
        rows=rows,
        means=means,
        fine_tuning_beats_scratch_at_equal_time=None
        if args.zero_labels_only
        else all(r["fine_tuned"] > r["scratch_same_labels_and_time"] for r in rows),
    )
    print(json.dumps(means))
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
