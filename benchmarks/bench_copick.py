"""The copick path's overhead: segmenting 4 runs of a copick project against the same 4 tomograms as files.

Both paths segment the same simulated tomograms with the same model, in this process, after one untimed
warm-up: `annotomo.segment` reads MRC files and writes MRC labels; `annotomo.segment_copick` reads each
run's OME-Zarr tomogram through copick and writes a multilabel copick segmentation. Rounds alternate the
two paths, so that the machine's drift falls on both. Needs `pip install ".[copick]"`.

    .venv/bin/python benchmarks/bench_copick.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import copick
import numpy as np
from common import RESULTS, results_header

import annotomo
from annotomo.predict import Predictor
from annotomo.volumes import write_volume

VOXEL = 28.0


def make(folder: Path, runs: int, shape):
    files = []
    config = folder / "copick.json"
    config.write_text(
        json.dumps(
            dict(
                config_type="filesystem",
                name="bench",
                description="bench_copick",
                version="1.0.0",
                pickable_objects=[
                    dict(name=n, is_particle=n == "ribosome", label=i)
                    for i, n in enumerate(["microtubule", "ribosome", "membrane", "double-membrane"], start=1)
                ],
                overlay_root=f"local://{folder / 'overlay'}",
                overlay_fs_args=dict(auto_mkdir=True),
            )
        )
    )
    root = copick.from_file(str(config))
    for i in range(runs):
        sim = annotomo.simulate(shape=shape, seed=500 + i)
        path = folder / f"TS-{i}.mrc"
        write_volume(path, sim.tomogram, (VOXEL,) * 3)
        files.append(path)
        root.new_run(f"TS-{i}").new_voxel_spacing(VOXEL).new_tomogram("wbp").from_numpy(sim.tomogram)
    return config, files


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="cellular-v2")
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--shape", type=int, nargs=3, default=[64, 512, 512])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", default=str(RESULTS / "copick.json"))
    args = ap.parse_args()
    predictor = Predictor.from_file(args.model)
    times = {"files": [], "copick": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config, files = make(folder, args.runs, tuple(args.shape))
        for round_ in range(args.rounds + 1):  # round 0: warm-up, untimed
            for path in ("files", "copick") if round_ % 2 else ("copick", "files"):
                start = time.perf_counter()
                if path == "files":
                    annotomo.segment(predictor, files, folder / f"out{round_}", progress=False, log=lambda *a: None)
                else:
                    annotomo.segment_copick(
                        predictor,
                        config,
                        VOXEL,
                        "wbp",
                        session_id=f"round{round_}",
                        progress=False,
                        log=lambda *a: None,
                    )
                if round_:
                    times[path].append(time.perf_counter() - start)
    files_s, copick_s = np.median(times["files"]), np.median(times["copick"])
    voxels = args.runs * int(np.prod(args.shape))
    row = dict(
        model=args.model,
        runs=args.runs,
        shape=args.shape,
        seconds=dict(files=times["files"], copick=times["copick"]),
        files_median_s=files_s,
        copick_median_s=copick_s,
        overhead=copick_s / files_s - 1,
        mvox_per_s=dict(files=voxels / files_s / 1e6, copick=voxels / copick_s / 1e6),
    )
    print(f"| path | seconds (median of {args.rounds}) | Mvox/s |")
    print("|---|---|---|")
    print(f"| files (MRC in, MRC out) | {files_s:.1f} | {row['mvox_per_s']['files']:.2f} |")
    print(f"| copick (OME-Zarr in, copick segmentation out) | {copick_s:.1f} | {row['mvox_per_s']['copick']:.2f} |")
    print(f"overhead of the copick path: {100 * row['overhead']:+.1f}%")
    Path(args.json).write_text(json.dumps(dict(results_header(), **row), indent=1))


if __name__ == "__main__":
    main()
