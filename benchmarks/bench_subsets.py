"""Feature subsets: a user who annotates only some of the built-in model's features (only membranes, say).

For each subset, one simulated 64 x 256 x 256 cell of the default condition (the condition matrix's cell
1) is labelled with only those features (the others become background), and a model trains --minutes on
it twice: fine-tuned from the built-in model `cellular-v1` (what `train` does by default for such
features) and as a new network (`--from-scratch`). Both are scored, mean Dice over the subset's features,
on the matrix's test cell 1001 under four conditions.

    python benchmarks/bench_subsets.py                 # 3 subsets x 2 starts, 2 min each (~15 min)

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
from annotomo.volumes import write_volume

SUBSETS = [["membrane"], ["microtubule"], ["ribosome", "membrane"]]
TEST_CONDITIONS = ["default", "low_snr", "sirt", "defocus5_tilt45"]


def only(labels: np.ndarray, names: list[str]) -> np.ndarray:
    """`labels` (the simulator's four features) relabelled for the features `names` (1 = names[0] ...)."""
    out = np.zeros_like(labels)
    for k, name in enumerate(names, start=1):
        out[labels == SYNTH_CLASSES.index(name) + 1] = k
    out[labels == NOT_ANNOTATED] = NOT_ANNOTATED
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--json", default=str(RESULTS / "subsets.json"))
    args = ap.parse_args()
    result = dict(
        **results_header(),
        minutes=args.minutes,
        train_seed=TRAIN_SEED,
        test_seed=TEST_SEED,
        rows=[],
    )
    print(f"{'features':<20}{'start':<14}{'iterations':>11}" + "".join(f"{c[:15]:>16}" for c in TEST_CONDITIONS))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = cell(work, "default", TRAIN_SEED)
        tests = {name: cell(work, name, TEST_SEED) for name in TEST_CONDITIONS}
        for names in SUBSETS:
            labels = work / f"labels_{'_'.join(names)}.mrc"
            write_volume(labels, only(data["truth"], names), (28.0,) * 3)
            for init in ("auto", None):
                model = work / f"model_{'_'.join(names)}_{init}.annotomo"
                trained = train(
                    [data["tomogram"]],
                    [labels],
                    names,
                    model,
                    TrainConfig(minutes=args.minutes),
                    progress=False,
                    log=lambda *a: None,
                    overwrite=True,
                    init=init,
                )
                row = dict(features=names, started_from=started_from(model), iterations=trained.iterations, scores={})
                for name, test in tests.items():
                    written = segment(model, [test["tomogram"]], work / "out", overwrite=True, progress=False,
                                      log=lambda *a: None)[0]  # fmt: skip
                    scored = score_test_cells([written["labels"]], [only(test["truth"], names)], names)
                    row["scores"][name] = round(scored["first"]["mean_dice"], 4)
                result["rows"].append(row)
                print(
                    f"{'+'.join(names):<20}{str(row['started_from'] or 'new network'):<14}{trained.iterations:>11}"
                    + "".join(f"{row['scores'][c]:>16.3f}" for c in TEST_CONDITIONS),
                    flush=True,
                )
    pairs = list(zip(result["rows"][::2], result["rows"][1::2], strict=True))
    wins = sum(ft["scores"][c] > new["scores"][c] for ft, new in pairs for c in TEST_CONDITIONS)
    result["fine_tuned_higher"] = dict(cells=wins, of=len(pairs) * len(TEST_CONDITIONS))
    print(f"fine-tuned from the built-in model higher on {wins} of {len(pairs) * len(TEST_CONDITIONS)} cells")
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
