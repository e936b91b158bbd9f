"""Start-up and the default path end to end: how soon a user sees something, and how fast it finishes.

Per model, in fresh processes (the machine's file cache warm, as on a second run): `annotomo --help`;
the time from the command's start to the first labelled slices (a child process that imports annotomo,
opens the tomogram and segments it with `segment_array` as `segment` does, reporting its first
progress); and `annotomo segment MODEL TOMOGRAM` end to end (read, spectrum matching, infer, write),
wall clock, on a 94 x 864 x 864 tomogram at 28 A. Rounds alternate the models, so that the machine's
drift falls on all; the median of the rounds is reported.

    .venv/bin/python benchmarks/bench_startup.py --models cellular-v1 cellular-v2 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS, make_tomogram, results_header

ANNOTOMO = [sys.executable, "-m", "annotomo"]
FIRST_SLICES = """
import sys, time
t0 = float(sys.argv[1])
from annotomo.api import segment_array
from annotomo.volumes import open_volume
def first(_):
    print(f"first {time.time() - t0:.3f}", flush=True)
    raise SystemExit(0)
with open_volume(sys.argv[3]) as vol:
    segment_array(sys.argv[2], vol.data, vol.voxel_size, progress=first)
"""


def timed(command) -> float:
    t0 = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - t0


def first_slices(model, tomogram) -> float:
    out = subprocess.run(
        [sys.executable, "-c", FIRST_SLICES, repr(time.time()), model, str(tomogram)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(out.split("first")[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["cellular-v1", "cellular-v2"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shape", type=int, nargs=3, default=[94, 864, 864])
    ap.add_argument("--json", default=str(RESULTS / "startup.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tomogram = Path(tmp) / "tomo.mrc"
        make_tomogram(tomogram, tuple(args.shape))
        voxels = float(np.prod(args.shape))
        timed(ANNOTOMO + ["--help"])  # warm the file cache
        times = {m: dict(help=[], first=[], segment=[]) for m in args.models}
        for r in range(args.rounds):
            for i, m in enumerate(args.models):
                times[m]["help"].append(timed(ANNOTOMO + ["--help"]))
                times[m]["first"].append(first_slices(m, tomogram))
                out = Path(tmp) / f"out_{r}_{i}"  # a folder of its own: nothing there to skip as complete
                times[m]["segment"].append(
                    timed(ANNOTOMO + ["segment", m, str(tomogram), "-o", str(out), "--overwrite"])
                )
                print(m, {k: round(v[-1], 2) for k, v in times[m].items()}, flush=True)
    rows = []
    for m, t in times.items():
        seconds = float(np.median(t["segment"]))
        rows.append(
            dict(
                model=m,
                help_s=float(np.median(t["help"])),
                first_slices_s=float(np.median(t["first"])),
                segment_s=seconds,
                mvox_per_s=voxels / seconds / 1e6,
                rounds=t,
            )
        )
    print(f"\n{'model':<40} {'--help s':>9} {'first slices s':>15} {'segment s':>10} {'Mvox/s':>7}")
    for r in rows:
        print(
            f"{r['model']:<40} {r['help_s']:>9.2f} {r['first_slices_s']:>15.2f} {r['segment_s']:>10.1f} "
            f"{r['mvox_per_s']:>7.2f}"
        )
    Path(args.json).write_text(json.dumps(dict(results_header(), shape=args.shape, rows=rows), indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
