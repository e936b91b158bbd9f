"""The annotate-train-correct loop of the napari plugin, timed and scored on a simulated tomogram (CPU).

    python benchmarks/bench_loop.py              # ~12 min on 2 cores
    python benchmarks/bench_loop.py --label-actin --json benchmarks/results/loop_actin.json
    python benchmarks/bench_loop.py --start /tmp/candidate.annotomo --json /tmp/loop_candidate.json
    python benchmarks/bench_loop.py --first-iterations 2000 --json /tmp/loop_2000.json

On one simulated 64 x 256 x 256 tomogram at 28 A, with the plugin's own rules for what counts as
annotated (`annotomo.viewer.layers`) and the calls its panel makes (`train`, `segment_array`):
1. paint 5 slices (the simulator's truth on 5 evenly spaced slices; every other slice not annotated),
   train 2 minutes from the panel's default start (the built-in model that knows these features), segment;
   and the same from scratch, for comparison;
2. correct 2 slices (the two the model got most wrong, as a user would pick them), retrain 1 minute from
   the model on those plus the 5 painted ones, segment again;
3. fine-tuning check: a model trained 2 minutes on another tomogram (fully labelled) is applied as it is,
   then fine-tuned 1 minute on this tomogram's 5 painted slices.
Mean Dice over the features on the whole tomogram after each step, and each step's seconds. With
--label-actin the tomograms' actin-like filaments (ACTIN_DENSITY times the default number) are a fifth
feature, which the built-in model does not know: the loop for a user who adds a feature of their own.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS, results_header, started_from

from annotomo import TrainConfig, simulate, train
from annotomo.api import segment_array
from annotomo.metrics import segmentation_scores
from annotomo.viewer import layers as L
from annotomo.volumes import Volume

CELL, OTHER = 501, 502
ACTIN_DENSITY = 4.0
VOXEL = (28.0, 28.0, 28.0)


def dice(truth, labels, class_names):
    scores = segmentation_scores(truth, labels, class_names)
    return round(scores["mean_dice"], 4), {k: round(v["dice"], 4) for k, v in scores["classes"].items()}


def volume(data, name):
    return Volume(data=data, voxel_size=VOXEL, origin=(0.0, 0.0, 0.0), path=Path(name))


def painted(truth, slices, class_names):
    """An annotation layer's data after painting the truth on `slices` (slices mode), as training labels."""
    data = np.zeros_like(truth)
    data[slices] = truth[slices]  # (a painted slice without any feature would need the background brush)
    return L.training_labels(data, dict(kind="annotation", class_names=list(class_names), mode="slices"))


def train_and_score(step, training, labels, test, out, config, init=None, **record):  # init None: new network
    """Train on `training` as the panel does, segment the whole `test` tomogram, score it against its
    truth: (model path, prediction, row). `test` is (tomogram, truth, feature names).
    """
    tomogram, truth, class_names = test
    t = time.perf_counter()
    trained = train(
        [volume(training, out.stem)],
        [labels],
        class_names,
        out,
        config,
        init=init,
        progress=False,
        log=lambda *a: None,
        overwrite=True,
    )
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    prediction, _ = segment_array(trained.model_path, tomogram, VOXEL, progress=False)
    mean_dice, per_class = dice(truth, prediction, class_names)
    row = dict(
        step=step,
        **record,
        iterations=trained.iterations,
        train_seconds=round(train_s, 1),
        segment_seconds=round(time.perf_counter() - t, 1),
        mean_dice=mean_dice,
        dice=per_class,
    )
    print(json.dumps(row), flush=True)
    return trained.model_path, prediction, row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=2.0, help="first training (default 2)")
    ap.add_argument("--retrain-minutes", type=float, default=1.0)
    ap.add_argument("--json", default=str(RESULTS / "loop.json"))
    ap.add_argument("--label-actin", action="store_true", help="actin as a fifth feature")
    ap.add_argument(
        "--start",
        default="auto",
        help="the first training's start: auto (the panel's default), or a model file or built-in name "
        "(to measure a candidate built-in model)",
    )
    ap.add_argument(
        "--first-iterations",
        type=int,
        help="the first training (from the start, and from scratch) trains this many iterations instead of "
        "--minutes: how the painted-slices step does with a fixed fine-tuning length",
    )
    args = ap.parse_args()
    steps = []
    specimen = dict(label_actin=True, actin_density=ACTIN_DENSITY) if args.label_actin else {}
    cell = simulate(seed=CELL, **specimen)
    class_names = list(cell.class_names)
    truth, tomogram = cell.labels, cell.tomogram
    slices = np.linspace(4, len(truth) - 5, 5).round().astype(int).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        labels = painted(truth, slices, class_names)
        start_words = "the panel's default start" if args.start == "auto" else f"from {args.start}"
        length = f"{args.first_iterations} iterations" if args.first_iterations else f"{args.minutes:g} min"
        first_config = dict(minutes=args.minutes, iterations=args.first_iterations, pixel_size=28.0)
        first, prediction, row = train_and_score(
            f"paint {len(slices)} slices, train {length} ({start_words}), segment",
            tomogram,
            labels,
            (tomogram, truth, class_names),
            work / "first.annotomo",
            TrainConfig(**first_config),
            init=args.start,
            annotated_slices=slices,
        )
        row["started_from"] = started_from(first)
        steps.append(row)
        steps.append(
            train_and_score(
                f"the same {len(slices)} slices and {length} from scratch, segment",
                tomogram,
                labels,
                (tomogram, truth, class_names),
                work / "scratch.annotomo",
                TrainConfig(**first_config),
                init=None,
            )[2]
        )

        errors = (prediction != truth).reshape(len(truth), -1).sum(1)
        errors[slices] = -1
        corrected = sorted(np.argsort(errors)[-2:].tolist())
        layer = prediction.copy()
        layer[corrected] = truth[corrected]  # the user's corrections in the prediction layer
        meta = dict(kind="prediction", class_names=class_names, original=prediction)
        combined = L.combine([labels, L.training_labels(layer, meta)])
        steps.append(
            train_and_score(
                f"correct 2 slices, retrain {args.retrain_minutes:g} min from the model, segment",
                tomogram,
                combined,
                (tomogram, truth, class_names),
                work / "second.annotomo",
                TrainConfig(minutes=args.retrain_minutes),
                init=first,
                corrected_slices=corrected,
            )[2]
        )

        other = simulate(seed=OTHER, **specimen)
        start, _, row = train_and_score(
            f"a model trained {args.minutes:g} min on another tomogram, as it is",
            other.tomogram,
            other.labels,
            (tomogram, truth, class_names),
            work / "other.annotomo",
            TrainConfig(minutes=args.minutes),
        )
        steps.append(row)
        steps.append(
            train_and_score(
                f"... fine-tuned {args.retrain_minutes:g} min on this tomogram's {len(slices)} painted slices",
                tomogram,
                labels,
                (tomogram, truth, class_names),
                work / "tuned.annotomo",
                TrainConfig(minutes=args.retrain_minutes),
                init=start,
            )[2]
        )
    result = dict(
        **results_header(),
        cell_seed=CELL,
        other_seed=OTHER,
        class_names=class_names,
        actin_density=ACTIN_DENSITY if args.label_actin else None,
        shape=list(truth.shape),
        first_iterations=args.first_iterations,
        steps=steps,
        fine_tuning_beats_its_start=steps[4]["mean_dice"] > steps[3]["mean_dice"],
    )
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
