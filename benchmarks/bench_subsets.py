"""Feature sets other than the built-in model's: some of its features, or a feature it does not know.

`--sets subsets`: one simulated 64 x 256 x 256 cell of the default condition (the condition matrix's cell
1) is labelled with only some of the built-in model's features (the others become background), and a
model trains --minutes on it twice: as `train` does by default for such features (fine-tuning the
newest built-in model that knows them; `--start cellular-v1` for the recorded runs) and as a new network
(`--from-scratch`).

`--sets beyond`: the same cells simulated with their actin-like filaments labelled as a fifth feature,
`actin` (ACTIN_DENSITY times the default number of bundles), which `cellular-v1` does not know; each set
with actin trains fine-tuned from `cellular-v1` (`--init cellular-v1`: a new output row for actin, the
rest of the network and the known features' outputs kept; at the new-network rate, as `train` fine-tunes
for a feature new to the model) and as a new network. Each row records what `train`'s automatic start
picks for its features. `--sets partial`: three more sets with actin that share only some of
`cellular-v1`'s features, trained the same two ways.

Every model is scored, mean Dice over the set's features (and each feature's Dice in the JSON), on the
matrix's test cell 1001 under four conditions.

    python benchmarks/bench_subsets.py                   # all, 9 sets x 2 starts, 2 min each (~55 min)
    python benchmarks/bench_subsets.py --sets beyond     # the sets with actin (~18 min)
    python benchmarks/bench_subsets.py --sets partial    # more sets sharing some features (~18 min)
    python benchmarks/bench_subsets.py --sets beyond --recipe '{"learning_rate": 6e-3}' --fine-tuned-only
    python benchmarks/bench_subsets.py --sets beyond --start /tmp/candidate.annotomo   # a candidate model

Training is time-bounded: run nothing else on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from bench_generalise import TEST_SEED, TRAIN_SEED, cell
from common import RESULTS, results_header, score_test_cells, started_from

from annotomo import TrainConfig, segment, train
from annotomo.conventions import NOT_ANNOTATED, SYNTH_CLASSES
from annotomo.training import choose_start
from annotomo.volumes import write_volume

BUILTIN = "cellular-v1"
ACTIN_DENSITY = 4.0
SETS = {  # group: (feature sets, the fine-tuned row's start, simulate options of its cells)
    "subsets": ([["membrane"], ["microtubule"], ["ribosome", "membrane"]], "auto", {}),
    "beyond": (
        [["actin"], ["membrane", "actin"], [*SYNTH_CLASSES, "actin"]],
        BUILTIN,
        dict(label_actin=True, actin_density=ACTIN_DENSITY),
    ),
    "partial": (  # more sets that share only some of its features, as "beyond"
        [["microtubule", "actin"], ["ribosome", "actin"], ["membrane", "double_membrane", "actin"]],
        BUILTIN,
        dict(label_actin=True, actin_density=ACTIN_DENSITY),
    ),
}
ALL_CLASSES = (*SYNTH_CLASSES, "actin")  # the simulator's labels with label_actin
JSON_NAMES = dict(subsets="subsets.json", beyond="beyond.json", partial="partial.json", all="feature_sets.json")
TEST_CONDITIONS = ["default", "low_snr", "sirt", "defocus5_tilt45"]


def only(labels: np.ndarray, names: list[str]) -> np.ndarray:
    """`labels` (the simulator's features) relabelled for the features `names` (1 = names[0] ...)."""
    out = np.zeros_like(labels)
    for k, name in enumerate(names, start=1):
        out[labels == ALL_CLASSES.index(name) + 1] = k
    out[labels == NOT_ANNOTATED] = NOT_ANNOTATED
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--sets", choices=[*SETS, "all"], default="all")
    ap.add_argument("--recipe", type=json.loads, default={}, help="TrainConfig fields as JSON, for every model")
    ap.add_argument("--fine-tuned-only", action="store_true", help="skip the new networks")
    ap.add_argument(
        "--start",
        help=f"the fine-tuned rows' start, a model file or built-in name (default: auto for subsets, {BUILTIN} else)",
    )
    ap.add_argument("--json", help=f"default: benchmarks/results/ + {JSON_NAMES}")
    args = ap.parse_args()
    groups = list(SETS) if args.sets == "all" else [args.sets]
    json_path = Path(args.json or RESULTS / JSON_NAMES[args.sets])
    result = dict(
        **results_header(),
        minutes=args.minutes,
        train_seed=TRAIN_SEED,
        test_seed=TEST_SEED,
        actin_density=ACTIN_DENSITY,
        recipe=args.recipe,
        start=args.start,
        rows=[],
    )
    print(f"{'features':<42}{'start':<14}{'iterations':>11}" + "".join(f"{c[:15]:>16}" for c in TEST_CONDITIONS))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cells = {}  # tag: (training cell, test cells), simulated once for the groups that share them
        for group in groups:
            feature_sets, start, specimen = SETS[group]
            start = args.start or start
            tag = "_actin" if specimen else ""
            if tag not in cells:
                tests = {name: cell(work, name, TEST_SEED, tag, **specimen) for name in TEST_CONDITIONS}
                cells[tag] = cell(work, "default", TRAIN_SEED, tag, **specimen), tests
            data, tests = cells[tag]
            for names in feature_sets:
                labels = work / f"labels_{'_'.join(names)}.mrc"
                write_volume(labels, only(data["truth"], names), (28.0,) * 3)
                for init in (start,) if args.fine_tuned_only else (start, None):
                    config = TrainConfig(minutes=args.minutes, **args.recipe)
                    result["rows"].append(train_and_score(work, data, labels, names, init, tests, config))
                    row = result["rows"][-1]
                    print(
                        f"{'+'.join(names):<42}{str(row['started_from'] or 'new network'):<14}"
                        f"{row['iterations']:>11}" + "".join(f"{row['scores'][c]:>16.3f}" for c in TEST_CONDITIONS),
                        flush=True,
                    )
    if not args.fine_tuned_only:
        pairs = list(zip(result["rows"][::2], result["rows"][1::2], strict=True))
        wins = sum(ft["scores"][c] > new["scores"][c] for ft, new in pairs for c in TEST_CONDITIONS)
        result["fine_tuned_higher"] = dict(cells=wins, of=len(pairs) * len(TEST_CONDITIONS))
        print(f"fine-tuned from the built-in model higher on {wins} of {len(pairs) * len(TEST_CONDITIONS)} cells")
    json_path.write_text(json.dumps(result, indent=1))
    print(f"wrote {json_path}")


def train_and_score(work: Path, data: dict, labels: Path, names: list[str], init, tests: dict, config: TrainConfig):
    """Train on `data`'s tomogram with `labels` from `init` (None: a new network); score on `tests`."""
    model = work / f"model_{'_'.join(names)}_{init}.annotomo"
    trained = train(
        [data["tomogram"]],
        [labels],
        names,
        model,
        config,
        progress=False,
        log=lambda *a: None,
        overwrite=True,
        init=init,
    )
    row = dict(
        features=names,
        started_from=started_from(model),
        automatic_start=choose_start([data["tomogram"]], names, TrainConfig(), log=lambda *a: None),
        learning_rate=json.loads(model.with_name(model.name + ".log.json").read_text())["config"]["learning_rate"],
        iterations=trained.iterations,
        scores={},
        per_feature={},
    )
    for name, test in tests.items():
        written = segment(model, [test["tomogram"]], work / "out", overwrite=True, progress=False,
                          log=lambda *a: None)[0]  # fmt: skip
        scored = score_test_cells([written["labels"]], [only(test["truth"], names)], names)["first"]
        row["scores"][name] = round(scored["mean_dice"], 4)
        row["per_feature"][name] = {k: round(v["dice"], 4) for k, v in scored["classes"].items()}
    return row


if __name__ == "__main__":
    main()
