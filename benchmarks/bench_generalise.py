"""Generalisation across imaging conditions: train on a tomogram of condition A, test on conditions B.

Each training condition's model trains for --minutes (wall clock) on one simulated 64 x 256 x 256 cell
(20 A conditions: the same field of view) and is scored on other cells imaged under every test
condition (the matrix's diagonal: new cells of the training condition). Rows = training condition,
columns = test condition, cells = mean Dice over the 4 features, pooled over the test cells (--test-seeds;
one 64 x 256 x 256 cell holds 3-8 microtubules, too few to score a feature on), with the test tomograms' spectra
matched to the model's training data (the default) and as they are (`--no-match-spectrum`), from the
same models, and with each test condition's membrane label width stated (`--label-width membrane=W`:
how wide membranes are labelled is the annotators' convention, which a user states and a model cannot
see in the tomogram). Models given with --models (files or built-in names) get a row each, with zero labels of
the test conditions (no training here).

    python benchmarks/bench_generalise.py                      # 7 x 7, 5 min per model (~60 min)
    python benchmarks/bench_generalise.py --test-seeds 1001    # scored on one test cell per condition
    python benchmarks/bench_generalise.py --quick              # 2 x 7 at 1 min (~6 min)
    python benchmarks/bench_generalise.py --train default --minutes 2 --recipe '{"blur_fraction": 0.3}'
    python benchmarks/bench_generalise.py --train --models cellular-v1     # the built-in model only
    python benchmarks/bench_generalise.py --from-scratch --label "from scratch"   # new networks
    python benchmarks/bench_generalise.py --models cellular-v1 --tta   # also scored with --tta (~+5 min)

Training is time-bounded: run nothing else on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import RESULTS, results_header, score_test_cells, started_from

from annotomo import TrainConfig, segment, simulate, train
from annotomo.conventions import SYNTH_CLASSES
from annotomo.modelfile import read_model_info
from annotomo.spectrum import fine_to_middle_power
from annotomo.synth import BILAYER_THICKNESS
from annotomo.volumes import write_volume

# name: (simulate options, pixel size). Each differs from the default in one respect (two for
# defocus/tilt, which real data changes together).
CONDITIONS = {
    "default": ({}, 28.0),
    "low_snr": ({"snr": 0.15}, 28.0),
    "wide_membrane_labels": ({"membrane_label_width": 9.0}, 28.0),
    "sirt": ({"reconstruction": "sirt", "sirt_iterations": 15}, 28.0),
    "defocus5_tilt45": ({"defocus": 5.5, "tilt_range": 45.0}, 28.0),
    "pixel20": ({}, 20.0),
    "dose_denoised": (
        {"dose": 120.0, "dose_weighting": True, "reconstruction": "denoised", "protofilaments": 13},
        28.0,
    ),
}
FIELD = (64, 256, 256)  # voxels at 28 A
TRAIN_SEED = 1
TEST_SEEDS = (1001, 2001, 3001)  # as bench_accuracy.py's; the built-in models never saw them
TEST_SEED = TEST_SEEDS[0]


def cell(work: Path, name: str, seed: int, tag: str = "", **specimen) -> dict:
    """Simulate cell `seed` under condition `name` (with `specimen`'s extra simulate options, files named
    with `tag`); write it; return paths and truth.
    """
    options, pixel_size = CONDITIONS[name]
    shape = tuple(int(round(n * 28.0 / pixel_size)) for n in FIELD)
    sim = simulate(shape=shape, pixel_size=pixel_size, seed=seed, **options, **specimen)
    tomo, labels = work / f"{name}_{seed}{tag}_tomo.mrc", work / f"{name}_{seed}{tag}_labels.mrc"
    write_volume(tomo, sim.tomogram, (pixel_size,) * 3)
    write_volume(labels, sim.labels, (pixel_size,) * 3, class_names=sim.class_names)
    return dict(tomogram=tomo, labels=labels, truth=sim.labels)


def membrane_label_width(name: str) -> float:
    """nm across which condition `name` labels a membrane (the simulator's convention unless it sets one)."""
    return float(CONDITIONS[name][0].get("membrane_label_width", BILAYER_THICKNESS))


def score(model, tests: dict, work: Path, match_spectrum=True, tta=False, state_width=False) -> dict:
    """Mean Dice (and per feature) of `model` on each test condition's cells, pooled over the cells (and
    each cell's mean Dice alone, `cells`); state_width: segment with the test condition's membrane label
    width stated, as a user states their convention.
    """
    row = {}
    for name, cells in tests.items():
        out = work / f"seg_{abs(hash((str(model), name, match_spectrum, tta, state_width)))}"
        written = segment(
            model,
            [c["tomogram"] for c in cells],
            out,
            overwrite=True,
            progress=False,
            log=lambda *a: None,
            match_spectrum=match_spectrum,
            tta=tta,
            label_width={"membrane": membrane_label_width(name)} if state_width else None,
        )
        scored = score_test_cells([w["labels"] for w in written], [c["truth"] for c in cells], SYNTH_CLASSES)
        pooled = scored["pooled"]
        row[name] = dict(
            mean_dice=round(pooled["mean_dice"], 4),
            **{k: round(v["dice"], 4) for k, v in pooled["classes"].items()},
            cells=scored["per_cell"],
        )
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--quick", action="store_true", help="train on default and low_snr only, 1 minute each")
    ap.add_argument("--train", nargs="*", default=None, help="training conditions (default: all; none: --models only)")
    ap.add_argument("--test", nargs="*", default=list(CONDITIONS), help="test conditions (default: all)")
    ap.add_argument(
        "--test-seeds",
        nargs="+",
        type=int,
        default=list(TEST_SEEDS),
        help=f"the test cells of every condition, scored pooled (default: {' '.join(map(str, TEST_SEEDS))})",
    )
    ap.add_argument("--models", nargs="*", default=[], help="model files or built-in names scored as they are")
    ap.add_argument("--recipe", default="{}", help="TrainConfig overrides as JSON (the recipe under test)")
    ap.add_argument(
        "--init",
        default="auto",
        help="start every training from this model file or built-in name (default: what `train` starts from)",
    )
    ap.add_argument("--from-scratch", action="store_true", help="train every model as a new network")
    ap.add_argument("--label", default="default recipe", help="what the recipe is called in the JSON")
    ap.add_argument("--json", default=str(RESULTS / "generalise.json"))
    ap.add_argument("--tta", action="store_true", help="also score every row with test-time augmentation (--tta)")
    ap.add_argument("--keep-models", metavar="DIR", help="keep the trained models in DIR (default: discard them)")
    args = ap.parse_args()
    if args.from_scratch:
        args.init = None
    train_on = args.train if args.train is not None else list(CONDITIONS)
    minutes = 1.0 if args.quick else args.minutes
    if args.quick:
        train_on = ["default", "low_snr"]
    recipe = json.loads(args.recipe)
    result = dict(
        **results_header(cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None),
        minutes=minutes,
        recipe=recipe,
        recipe_label=args.label,
        init=args.init,
        conditions={k: dict(options=v[0], pixel_size=v[1]) for k, v in CONDITIONS.items()},
        train_seed=TRAIN_SEED,
        test_seeds=args.test_seeds,
        rows=[],
    )
    if args.keep_models:
        Path(args.keep_models).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tests = {name: [cell(work, name, seed) for seed in args.test_seeds] for name in args.test}
        for model in args.models:
            t0 = time.time()
            result["rows"].append(
                dict(
                    model=model,
                    trained_on=None,
                    scores=score(model, tests, work),
                    score_seconds=round(time.time() - t0, 1),
                    scores_without_matching=score(model, tests, work, match_spectrum=False),
                    scores_width_stated=score(model, tests, work, state_width=True),
                    **_scored_with_tta(args.tta, model, tests, work),
                )
            )
            _print_row(result["rows"][-1], args.test)
        for name in train_on:
            data = cell(work, name, TRAIN_SEED)
            path = (Path(args.keep_models) if args.keep_models else work) / f"model_{name}.annotomo"
            config = TrainConfig(minutes=minutes, **recipe)
            t0 = time.time()
            trained = train(
                [data["tomogram"]],
                [data["labels"]],
                list(SYNTH_CLASSES),
                path,
                config,
                progress=False,
                log=lambda *a: None,
                overwrite=True,
                init=args.init,
            )
            train_seconds = round(time.time() - t0, 1)
            t0 = time.time()
            scores = score(path, tests, work)
            info = read_model_info(path)
            result["rows"].append(
                dict(
                    model=f"trained on {name}",
                    trained_on=name,
                    started_from=started_from(path),
                    iterations=trained.iterations,
                    # what decides the default's extra noise (TrainConfig.noise_fraction), and what it chose
                    fine_to_middle_power=round(fine_to_middle_power(info.training_spectra[0]), 4),
                    noise_fraction=info.provenance["config"]["noise_fraction"],
                    train_seconds=train_seconds,
                    scores=scores,
                    score_seconds=round(time.time() - t0, 1),
                    scores_without_matching=score(path, tests, work, match_spectrum=False),
                    scores_width_stated=score(path, tests, work, state_width=True),
                    **_scored_with_tta(args.tta, path, tests, work),
                )
            )
            _print_row(result["rows"][-1], args.test)
    for key, summary, what in (
        ("scores", "off_diagonal", "spectrum matched (the default)"),
        ("scores_without_matching", "off_diagonal_without_matching", "as they are (--no-match-spectrum)"),
        ("scores_width_stated", "off_diagonal_width_stated", "spectrum matched, membrane label width stated"),
        ("scores_tta", "off_diagonal_tta", "spectrum matched, with --tta"),
    ):
        off_cells = [
            r[key][c] for r in result["rows"] if r["trained_on"] and key in r for c in r[key] if c != r["trained_on"]
        ]
        off = [entry["mean_dice"] for entry in off_cells]
        # the worst single test cell of each matrix cell: how far one tomogram strays from the pool
        worst = [min(entry["cells"]) for entry in off_cells]
        if off:
            result[summary] = dict(
                min=min(off),
                mean=float(np.mean(off)),
                cells=len(off),
                at_least_0_85=int(sum(v >= 0.85 for v in off)),
                single_test_cells_min=min(worst),
            )
            print(
                f"off-diagonal mean Dice, tomograms {what}: min {min(off):.3f}, mean {np.mean(off):.3f}, "
                f"{result[summary]['at_least_0_85']}/{len(off)} cells >= 0.85 "
                f"(one test cell alone: min {min(worst):.3f})"
            )
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")


def _scored_with_tta(tta: bool, model, tests, work) -> dict:
    """The row's scores with test-time augmentation, and how long they took (nothing without --tta)."""
    if not tta:
        return {}
    t0 = time.time()
    scores = score(model, tests, work, tta=True)
    return dict(scores_tta=scores, tta_score_seconds=round(time.time() - t0, 1))


def _print_row(row, tests):
    if not hasattr(_print_row, "header"):
        _print_row.header = True
        print(f"{'model (matched/as is/width [/tta])':<34}" + "".join(f"{t[:20]:>21}" for t in tests))
    keys = ("scores", "scores_without_matching", "scores_width_stated", "scores_tta")
    cells = ["/".join(f"{row[k][t]['mean_dice']:.3f}" for k in keys if k in row) for t in tests]
    print(f"{row['model'][:34]:<34}" + "".join(f"{c:>21}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
