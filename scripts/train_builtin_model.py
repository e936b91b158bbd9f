"""Train annotomo's built-in model on the randomised simulator: the model that annotates before any annotation.

    .venv/bin/python scripts/train_builtin_model.py                      # 60 min on the CPU (cellular-v1's recipe)
    # cellular-v2: a wider network, 72 min, then 60 more from it (its provenance names that parent by sha256)
    .venv/bin/python scripts/train_builtin_model.py --widths 64,96,128,192 --minutes 72 --name cellular-v2 \
        --output wider.annotomo
    .venv/bin/python scripts/train_builtin_model.py --init wider.annotomo --widths 64,96,128,192 \
        --minutes 60 --name cellular-v2
    # cellular-v3: cellular-v1's network (its cost per voxel) continued 50 min on cells of many looks
    .venv/bin/python scripts/train_builtin_model.py --init cellular-v1 --appearance wide --cells 60 \
        --minutes 45 --name cellular-v3
    .venv/bin/python scripts/train_builtin_model.py --minutes 20 --device cuda   # on a GPU
    .venv/bin/python scripts/train_builtin_model.py --init cellular-v2 --minutes 30 \
        --output /tmp/continued.annotomo                                  # train the shipped model longer
    .venv/bin/python scripts/train_builtin_model.py --widths 64,96,128,192 --device cuda \
        --output /tmp/wider.annotomo                                      # a larger network

Simulates training and validation cells under randomised conditions (`annotomo synth --randomise`: SNR,
defocus, tilt range/step/scheme, dose and dose weighting, lamella thickness, WBP/SIRT-like/denoised
reconstruction, membrane profiles and label widths, protofilament texture, crowding), some of them at
another pixel size (resampled to the model's 28 A on loading, as segmenting resamples), all with dense
matter dark (users of inverted data pass --invert-contrast). Trains the default U-Net on all of them and
writes annotomo/builtin/NAME.annotomo with the conditions in its provenance.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

from annotomo import TrainConfig, simulate, train
from annotomo.modelfile import BUILTIN_FOLDER, load_model, save_model
from annotomo.spectrum import volume_power
from annotomo.synth import random_appearance
from annotomo.training.data import load_annotated
from annotomo.volumes import write_volume

MODEL_PIXEL_SIZE = 28.0
FIELD_AT_28 = (64, 256, 256)
TRAIN_SEEDS = range(100_000, 100_040)
VALIDATION_SEEDS = range(200_000, 200_003)
WIDE_TRAIN_SEEDS = range(600_000, 600_040)  # cellular-v3: new seeds (300_001+ are bench_builtin's held-out cells)
WIDE_VALIDATION_SEEDS = range(610_000, 610_003)


WIDE_MAX_VOXELS = 9e6  # a finer-sampled cell keeps its depth and narrows in y and x (simulating takes ~500 B/voxel)
WIDE_MIN_FIELD_AT_28 = 96  # ... but keeps at least 96 pixels at 28 A (patches reflect at the edges)


def make_cell(work: Path, seed: int, wide: bool = False) -> dict:
    """Simulate one randomised cell and write it.

    Default (cellular-v1/v2): 30% at 18-40 A, the same field of view. wide (cellular-v3): every appearance
    option of synth.random_appearance, and half the cells at 10-40 A (log-uniform), as tomograms come.
    """
    rng = np.random.default_rng([seed, 99])
    extra = {}
    if wide:
        extra = random_appearance(np.random.default_rng([seed, 98]))
        pixel_size = MODEL_PIXEL_SIZE if rng.random() < 0.5 else float(np.exp(rng.uniform(np.log(10), np.log(40))))
    else:
        pixel_size = MODEL_PIXEL_SIZE if rng.random() < 0.7 else float(rng.uniform(18.0, 40.0))
    shape = [max(16, int(round(n * MODEL_PIXEL_SIZE / pixel_size))) for n in FIELD_AT_28]
    if wide and np.prod(shape) > WIDE_MAX_VOXELS:
        side = max(int(np.sqrt(WIDE_MAX_VOXELS / shape[0])), int(WIDE_MIN_FIELD_AT_28 * MODEL_PIXEL_SIZE / pixel_size))
        shape[1:] = [min(n, side) for n in shape[1:]]
    shape = tuple(shape)
    sim = simulate(shape=shape, pixel_size=pixel_size, seed=seed, randomise=True, invert_contrast=False, **extra)
    tomo, labels = work / f"cell{seed}_tomo.mrc", work / f"cell{seed}_labels.mrc"
    write_volume(tomo, sim.tomogram, (pixel_size,) * 3)
    write_volume(labels, sim.labels, (pixel_size,) * 3, class_names=sim.class_names)
    return dict(
        seed=seed,
        pixel_size=pixel_size,
        shape=list(shape),
        tomogram=str(tomo),
        labels=str(labels),
        conditions=asdict(sim.conditions),
    )


def add_spectrum(name: str, cells: list[dict]):
    """Store in the shipped model the spectra `train` would have stored: one per training cell, loaded
    (normalised and resampled to 28 A) as training loads them.
    """
    target = BUILTIN_FOLDER / f"{name}.annotomo"
    model, info = load_model(target)
    spectra = []
    for c in cells:
        data = load_annotated(c["tomogram"], c["labels"], len(info.class_names), target_pixel_size=MODEL_PIXEL_SIZE)
        spectra.append(volume_power(data.image))
    info.training_spectra = [[float(v) for v in s] for s in spectra]
    info.provenance["training_spectra"] = (
        f"added by scripts/train_builtin_model.py --add-spectrum from the {len(cells)} training cells"
    )
    save_model(target, model, info)
    print(f"stored the training spectra of {len(cells)} cells in {target}")


def main():
    """Simulate the cells, train, and write the model into the package."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--device", default=None)
    ap.add_argument("--name", default="cellular-v1")
    ap.add_argument("--work", default="benchmarks/output/builtin", help="where the simulated cells go")
    ap.add_argument("--workers", type=int, default=2, help="processes simulating cells")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", help="continue from this model (file or built-in name) instead of a new network")
    ap.add_argument("--learning-rate", type=float, help="peak learning rate (default: train's choice)")
    ap.add_argument("--widths", help="the U-Net's channels per level (default 48,64,96,128, cellular-v1's)")
    ap.add_argument("--output", help="write the model here instead of into the package (annotomo/builtin/NAME)")
    ap.add_argument(
        "--appearance",
        choices=["reference", "wide", "mixed"],
        default="reference",
        help="wide: every look of synth.random_appearance (CTF phase-flipped or deconvolved, coloured noise, "
        "thin bilayers, tubulin-subunit walls, thin narrow microtubule walls) and pixel sizes 10-40 A, on their "
        "own seeds; mixed: half the cells reference (cellular-v1/v2's own), half wide (cellular-v3)",
    )
    ap.add_argument("--cells", type=int, help="training cells (default 40; with mixed, 40 of each)")
    ap.add_argument(
        "--add-spectrum",
        action="store_true",
        help="only store the training cells' power spectra in the shipped model (for files trained before "
        "annotomo kept it; the weights are not touched)",
    )
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    looks = {"reference": [False], "wide": [True], "mixed": [False, True]}[args.appearance]
    train_sets = [(WIDE_TRAIN_SEEDS if w else TRAIN_SEEDS, w) for w in looks]
    if args.cells:
        train_sets = [(range(seeds.start, seeds.start + args.cells), w) for seeds, w in train_sets]
    train_seeds = [(s, w) for seeds, w in train_sets for s in seeds]
    validation_seeds = [(s, w) for w in looks for s in (WIDE_VALIDATION_SEEDS if w else VALIDATION_SEEDS)]
    with ProcessPoolExecutor(args.workers) as pool:
        seeds, wide = zip(*train_seeds, strict=True)
        cells = list(pool.map(make_cell, [work] * len(seeds), seeds, wide))
        if args.add_spectrum:
            add_spectrum(args.name, cells)
            return
        seeds, wide = zip(*validation_seeds, strict=True)
        validation = list(pool.map(make_cell, [work] * len(seeds), seeds, wide))
    print(f"simulated {len(cells)} training and {len(validation)} validation cells in {time.time() - t0:.0f} s")
    out = work / f"{args.name}.annotomo"
    config = TrainConfig(
        minutes=args.minutes,
        seed=args.seed,
        device=args.device,
        pixel_size=MODEL_PIXEL_SIZE,
        learning_rate=args.learning_rate,
        arch_params=dict(widths=[int(w) for w in args.widths.split(",")]) if args.widths else {},
    )
    result = train(
        [c["tomogram"] for c in cells],
        [c["labels"] for c in cells],
        ["microtubule", "ribosome", "membrane", "double_membrane"],
        out,
        config,
        validation=[(c["tomogram"], c["labels"]) for c in validation],
        overwrite=True,
        init=args.init,  # by default a new network, not fine-tuned from the model it replaces
    )
    model, info = load_model(out)
    described = {
        True: "synth.random_appearance looks, half simulated at 10-40 A",
        False: "30% simulated at 18-40 A",
    }
    sets = "; ".join(f"seeds {seeds.start}-{seeds.stop - 1}: {described[w]}" for seeds, w in train_sets)
    info.provenance["training_data"] = (
        f"{len(cells)} simulated cells under randomised conditions (annotomo synth --randomise; {sets}; "
        f"resampled to 28 A), validated on seeds {', '.join(str(s) for s, _ in validation_seeds)}; "
        f"scripts/train_builtin_model.py --appearance {args.appearance}"
        + (f" --init {args.init}" if args.init else "")
        + f" --minutes {args.minutes:g}"
    )
    info.provenance["training_cells"] = [
        {k: c[k] for k in ("seed", "pixel_size", "shape", "conditions")} for c in cells
    ]
    info.provenance["name"] = args.name
    target = Path(args.output) if args.output else BUILTIN_FOLDER / f"{args.name}.annotomo"
    target.parent.mkdir(parents=True, exist_ok=True)
    save_model(target, model, info)
    print(
        f"{result.iterations} iterations in {result.seconds:.0f} s; best epoch {result.best['epoch']} "
        f"validation mean Dice {result.best['mean_dice']:.3f}; wrote {target} ({target.stat().st_size / 1e6:.1f} MB)"
    )
    (work / f"{args.name}.summary.json").write_text(
        json.dumps(
            dict(iterations=result.iterations, seconds=result.seconds, best=result.best, minutes=args.minutes), indent=1
        )
    )


if __name__ == "__main__":
    main()
