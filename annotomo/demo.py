"""`annotomo demo`: the whole pipeline on simulated data, in a few minutes on a laptop CPU.

Simulates a training and a separate test tomogram (different seeds: different cells), trains on the
first as `annotomo train` does by default (starting from the built-in model, which knows the simulator's
four features), segments the second through the same code as `annotomo segment`, prints the
per-class scores against the simulator's truth and writes a PNG overlay (truth vs prediction).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .api import evaluate, segment, synthesize
from .conventions import SYNTH_CLASSES
from .metrics import format_scores
from .training import TrainConfig, train
from .volumes import open_volume, read_labels


def run_demo(outdir: Path, minutes: float = 3.0, seed: int = 1, log=print) -> dict:
    """Simulate, train for `minutes`, segment a separate test tomogram and score it; returns the scores."""
    outdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log(f"1/4 simulating a training and a test tomogram (64 x 256 x 256 at 28 A) in {outdir}/")
    _, train_paths = synthesize(outdir / "train", overwrite=True, seed=seed, log=log)
    _, test_paths = synthesize(outdir / "test", overwrite=True, seed=seed + 1000, log=log)
    model_path = outdir / "model.annotomo"
    log(f"2/4 training for {minutes:g} min on {train_paths['tomogram']}")
    result = train(
        [train_paths["tomogram"]],
        [train_paths["labels"]],
        list(SYNTH_CLASSES),
        model_path,
        TrainConfig(minutes=minutes),
        log=log,
        overwrite=True,
    )
    log(f"    {result.iterations} iterations; wrote {model_path} and its training curves")
    log(f"3/4 segmenting {test_paths['tomogram']}")
    written = segment(model_path, [test_paths["tomogram"]], outdir / "segmented", overwrite=True, log=log)[0]
    log("4/4 scoring against the simulator's ground truth")
    scores = evaluate(written["labels"], test_paths["labels"], SYNTH_CLASSES, outdir / "scores.json")
    log(format_scores(scores))
    from .preview import save_overlay

    overlay = outdir / "demo_overlay.png"
    with (
        open_volume(test_paths["tomogram"]) as tomo,
        read_labels(test_paths["labels"]) as truth,
        read_labels(written["labels"]) as pred,
    ):
        save_overlay(
            overlay,
            tomo.data,
            [truth.data, pred.data],
            SYNTH_CLASSES,
            titles=["ground truth", "annotomo"],
            pixel_size=tomo.pixel_size,
        )
    log(f"wrote {overlay}; total {time.perf_counter() - t0:.0f} s")
    (outdir / "demo_summary.json").write_text(
        json.dumps(dict(mean_dice=scores["mean_dice"], iterations=result.iterations), indent=1)
    )
    return scores
