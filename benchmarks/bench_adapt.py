"""Zero-label adaptation by self-training: does fine-tuning on a tomogram's own confident predictions pay?

For each tomogram: segment with the model (zero labels), keep the voxels whose uncertainty (the margin
measure of `segment --uncertainty`) is below --confident as pseudo-labels (the rest not annotated, 255),
fine-tune the model on them for --iterations as `train` does, and segment again. Scored out of family on
the PolNet cells (polnet/polnet_cells.py; they only validate) and in family on annotomo's test cells
1001-3001 (default condition), per feature as bench_out_of_family.py scores. The recipe (threshold,
iterations) is fixed before the run; the rule for keeping it is the issue's: it must raise the mean
out-of-family Dice and cost at most 0.01 in family.

    .venv/bin/python benchmarks/bench_adapt.py --model cellular-v2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_out_of_family import FEATURES, score
from common import RESULTS, results_header

import annotomo
from annotomo.api import segment_array
from annotomo.predict import Predictor
from annotomo.volumes import open_volume, read_labels, write_volume


def adapt(model, tomogram: np.ndarray, voxel_size, confident: float, iterations: int, work: Path):
    """`model` fine-tuned on `tomogram`'s confident zero-label predictions; (model path, pseudo-label share)."""
    labels, _, unsure = segment_array(model, tomogram, voxel_size, uncertainty=True)
    pseudo = np.where(unsure < confident, labels, 255).astype(np.uint8)
    names = Predictor.from_file(model).info.class_names
    write_volume(work / "tomo.mrc", tomogram, voxel_size)
    write_volume(work / "pseudo.mrc", pseudo, voxel_size, class_names=names)
    out = work / "adapted.annotomo"
    config = annotomo.TrainConfig(iterations=iterations, epoch_iterations=iterations)
    annotomo.train(
        [work / "tomo.mrc"],
        [work / "pseudo.mrc"],
        names,
        out,
        config,
        progress=False,
        log=lambda *a: None,
        init=model,
        overwrite=True,
    )
    return str(out), float(np.mean(pseudo != 255))


def cases(cells: Path):
    """(name, tomogram, voxel size, truth, truth names, family) for every PolNet tomogram and 3 own cells."""
    for path in sorted(cells.glob("cell_*_*_tomo.mrc")):
        seed = path.name.split("_")[1]
        with open_volume(path) as vol, read_labels(cells / f"cell_{seed}_labels.mrc") as lab:
            yield path.name, np.asarray(vol.data), vol.voxel_size, np.asarray(lab.data), lab.class_names, "out"
    for seed in (1001, 2001, 3001):
        sim = annotomo.simulate(seed=seed)
        yield f"annotomo {seed}", sim.tomogram, (sim.pixel_size,) * 3, sim.labels, list(sim.class_names), "in"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="cellular-v2")
    ap.add_argument("--cells", type=Path, default=Path("benchmarks/output/polnet"))
    ap.add_argument("--confident", type=float, default=0.25, help="pseudo-labels where uncertainty < this")
    ap.add_argument("--iterations", type=int, default=150)
    ap.add_argument("--json", default=str(RESULTS / "adapt.json"))
    args = ap.parse_args()
    names = Predictor.from_file(args.model).info.class_names
    rows = []
    for name, tomogram, voxel_size, truth, truth_names, family in cases(args.cells):
        start = time.perf_counter()
        before, _ = segment_array(args.model, tomogram, voxel_size)
        with tempfile.TemporaryDirectory() as tmp:
            adapted, share = adapt(args.model, tomogram, voxel_size, args.confident, args.iterations, Path(tmp))
            after, _ = segment_array(adapted, tomogram, voxel_size)
        seconds = time.perf_counter() - start
        nm = voxel_size[2] / 10
        row = dict(
            case=name,
            family=family,
            pseudo_label_share=share,
            seconds=seconds,
            before=score(truth, truth_names, before, names, nm),
            after=score(truth, truth_names, after, names, nm),
        )
        rows.append(row)
        print(
            f"{name:28s} pseudo {share:.2f} {seconds:5.0f} s  "
            + "  ".join(f"{n} {row['before'][n]['dice']:.2f}->{row['after'][n]['dice']:.2f}" for n in FEATURES),
            flush=True,
        )

    def mean(family, when):
        return float(np.mean([np.mean([r[when][n]["dice"] for n in FEATURES]) for r in rows if r["family"] == family]))

    summary = {f: {w: mean(f, w) for w in ("before", "after")} for f in ("out", "in")}
    print("\n| | out of family (PolNet), mean Dice | in family (cells 1001-3001) | minutes per tomogram |")
    print("|---|---|---|---|")
    minutes = np.mean([r["seconds"] for r in rows]) / 60
    for when in ("before", "after"):
        label = args.model if when == "before" else f"+ self-training ({args.iterations} its, < {args.confident})"
        print(f"| {label} | {summary['out'][when]:.3f} | {summary['in'][when]:.3f} | {minutes:.1f} |")
    out = dict(
        results_header(), model=args.model, confident=args.confident, iterations=args.iterations, rows=rows
    ) | dict(summary=summary)
    Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
