"""Which uncertainty measure finds the model's mistakes, and what it costs.

For each test cell under each imaging condition (the condition matrix's cells, bench_generalise.py), a
model segments the cell with zero labels; each measure of `annotomo.uncertainty` is scored by the average
precision (AP) with which it ranks the wrong voxels above the right ones (the share of wrong voxels is
the AP of a random ranking). Time: segmenting with the uncertainty against without (best of two each).

    .venv/bin/python benchmarks/bench_uncertainty.py                  # cellular-v2, 5 conditions, 2 cells
    .venv/bin/python benchmarks/bench_uncertainty.py --model mine.annotomo --json out.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_generalise import CONDITIONS, cell
from common import RESULTS, results_header

from annotomo.api import segment_array
from annotomo.predict import Predictor
from annotomo.uncertainty import MEASURES, average_precision, uncertainty


def timed(run, repeats=2):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="cellular-v2")
    ap.add_argument(
        "--conditions", nargs="*", default=["default", "low_snr", "sirt", "defocus5_tilt45", "dose_denoised"]
    )
    ap.add_argument("--seeds", nargs="*", type=int, default=[1001, 2001])
    ap.add_argument("--json", default=str(RESULTS / "uncertainty.json"))
    args = ap.parse_args()
    predictor = Predictor.from_file(args.model)
    rows, seconds = [], {"plain": 0.0, "uncertainty": 0.0}
    with tempfile.TemporaryDirectory() as work:
        for name in args.conditions:
            pixel = CONDITIONS[name][1]
            for seed in args.seeds:
                c = cell(Path(work), name, seed)
                tomo = np.asarray(__import__("mrcfile").read(c["tomogram"]), dtype=np.float32)
                plain, _ = timed(lambda t=tomo, p=pixel: segment_array(predictor, t, (p,) * 3))
                took, (labels, probs) = timed(
                    lambda t=tomo, p=pixel: segment_array(predictor, t, (p,) * 3, probabilities=True)
                )
                with_u, _ = timed(lambda t=tomo, p=pixel: segment_array(predictor, t, (p,) * 3, uncertainty=True))
                seconds["plain"] += plain
                seconds["uncertainty"] += with_u
                scored = c["truth"] != 255
                wrong = (labels != c["truth"])[scored]
                row = dict(condition=name, seed=seed, wrong=float(wrong.mean()))
                for measure in MEASURES:
                    row[measure] = average_precision(uncertainty(probs, measure)[scored], wrong)
                rows.append(row)
                print(
                    f"{name:16s} {seed}: wrong {row['wrong']:.3f}  "
                    + "  ".join(f"AP {m} {row[m]:.3f}" for m in MEASURES)
                    + f"  {plain:.2f} s / {with_u:.2f} s"
                )
    summary = {m: float(np.mean([r[m] for r in rows])) for m in (*MEASURES, "wrong")}
    summary["time_ratio"] = seconds["uncertainty"] / seconds["plain"]
    print("\n| measure | mean AP of error detection |\n|---|---|")
    for m in MEASURES:
        print(f"| {m} | {summary[m]:.3f} |")
    print(f"| (random ranking: the share of wrong voxels) | {summary['wrong']:.3f} |")
    print(f"\nsegmenting with the uncertainty: {summary['time_ratio']:.2f}x the time without")
    out = dict(results_header(), model=args.model, rows=rows, summary=summary, seconds=seconds)
    Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
