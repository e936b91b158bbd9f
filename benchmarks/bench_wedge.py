"""What a narrower tilt range hides: a model's recall per object orientation at two tilt ranges.

The condition matrix's defocus 5.5 um / +-45 deg column is its lowest (RESULTS.md#generalise). A single-axis
tilt series leaves a wedge of Fourier space about z empty; the wider it is, the more of an object's
transform falls into it when the object's membrane normal points near z, or a filament runs across the
tilt axis (y). This scores a model on the matrix's test cells (seeds 1001, 2001, 3001) imaged at +-60 deg
(defocus 3 um, the simulator's reference) and at +-45 deg (defocus 5.5 um, the matrix's condition), and
splits each feature's recall by orientation, from the structure tensor of its true labels:

- membranes by the angle between the membrane's normal and z (0: parallel to the slices);
- microtubules by the angle between their axis and y, the tilt axis (90: across it);

and gives each feature's precision, recall and Dice at both tilt ranges (the missing wedge also
elongates objects along z, which costs precision).

    python benchmarks/bench_wedge.py --model cellular-v2
    python benchmarks/bench_wedge.py --model fine_tuned.annotomo --json benchmarks/results/wedge.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_generalise import FIELD, TEST_SEEDS
from common import RESULTS, results_header
from scipy import ndimage

from annotomo import segment, simulate
from annotomo.conventions import SYNTH_CLASSES
from annotomo.metrics import confusion_matrix, scores_from_confusion
from annotomo.synth import MEMBRANE, MICROTUBULE
from annotomo.volumes import read_labels, write_volume

CONDITIONS = {
    "+-60 deg, 3 um": dict(tilt_range=60.0, defocus=3.0),
    "+-45 deg, 5.5 um": dict(tilt_range=45.0, defocus=5.5),
}
ANGLE_BINS = np.array([0, 15, 30, 45, 60, 75, 90])
# feature: (label, which structure-tensor eigenvector, which axis the angle is measured from, what it is)
FEATURES = {
    "membrane": (MEMBRANE, -1, 0, "angle between the membrane normal and z"),
    "microtubule": (MICROTUBULE, 0, 1, "angle between the microtubule axis and y (the tilt axis)"),
}


def orientation_angles(truth: np.ndarray, label: int, eigenvector: int, axis: int) -> np.ndarray:
    """Per voxel of `label`, the angle (degrees, 0-90) between `axis` and one eigenvector of the
    structure tensor of its mask: the strongest gradient direction (-1) is a sheet's normal, the weakest
    (0) a filament's axis.
    """
    inside = truth == label
    mask = inside.astype(np.float32)
    grads = [ndimage.gaussian_filter(mask, 1.0, order=o) for o in ((1, 0, 0), (0, 1, 0), (0, 0, 1))]
    tensor = np.empty((int(inside.sum()), 3, 3), np.float32)
    for i in range(3):
        for j in range(i, 3):
            tensor[:, i, j] = tensor[:, j, i] = ndimage.gaussian_filter(grads[i] * grads[j], 2.5)[inside]
    direction = np.linalg.eigh(tensor)[1][:, :, eigenvector]
    return np.degrees(np.arccos(np.clip(np.abs(direction[:, axis]), 0.0, 1.0)))


def _read(path) -> np.ndarray:
    """A label file's voxels."""
    with read_labels(path) as labels:
        return np.asarray(labels.data)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="cellular-v2", help="a model file or built-in name")
    ap.add_argument("--json", default=str(RESULTS / "wedge.json"))
    args = ap.parse_args()
    result = dict(
        **results_header(), model=str(args.model), test_seeds=list(TEST_SEEDS), angle_bins=ANGLE_BINS.tolist()
    )
    result["features"] = {name: dict(angle=what, conditions={}) for name, (*_, what) in FEATURES.items()}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for condition, options in CONDITIONS.items():
            tomograms, truths = [], []
            for seed in TEST_SEEDS:
                sim = simulate(shape=FIELD, pixel_size=28.0, seed=seed, **options)
                path = Path(tmp) / f"{options['tilt_range']:.0f}_{seed}_tomo.mrc"
                write_volume(path, sim.tomogram, (28.0,) * 3)
                tomograms.append(path)
                truths.append(sim.labels)
            written = segment(
                args.model, tomograms, Path(tmp) / "out", overwrite=True, progress=False, log=lambda *a: None
            )
            predictions = [_read(w["labels"]) for w in written]
            confusion = sum(
                confusion_matrix(truth, predicted, len(SYNTH_CLASSES) + 1)
                for predicted, truth in zip(predictions, truths, strict=True)
            )
            classes = scores_from_confusion(confusion, SYNTH_CLASSES)["classes"]
            result.setdefault("overall", {})[condition] = {
                name: {k: round(v[k], 3) for k in ("precision", "recall", "dice")} for name, v in classes.items()
            }
            for name, (label, eigenvector, axis, _) in FEATURES.items():
                voxels, found = np.zeros(len(ANGLE_BINS) - 1), np.zeros(len(ANGLE_BINS) - 1)
                for predicted, truth in zip(predictions, truths, strict=True):
                    hit = predicted[truth == label] == label
                    bins = np.clip(
                        np.digitize(orientation_angles(truth, label, eigenvector, axis), ANGLE_BINS) - 1,
                        0,
                        len(voxels) - 1,
                    )
                    voxels += np.bincount(bins, minlength=len(voxels))
                    found += np.bincount(bins, weights=hit, minlength=len(voxels))
                result["features"][name]["conditions"][condition] = dict(
                    recall=np.round(found / np.maximum(voxels, 1), 3).tolist(),
                    share_of_voxels=np.round(voxels / voxels.sum(), 3).tolist(),
                    recall_all=round(float(found.sum() / voxels.sum()), 3),
                )
    result["seconds"] = round(time.time() - t0, 1)
    bins = [f"{a}-{b}" for a, b in zip(ANGLE_BINS[:-1], ANGLE_BINS[1:], strict=True)]
    for name, feature in result["features"].items():
        print(f"{name}: recall by {feature['angle']} (degrees)")
        print(f"{'':>20}" + "".join(f"{b:>8}" for b in bins) + f"{'all':>8}")
        for condition, r in feature["conditions"].items():
            print(f"{condition:>20}" + "".join(f"{v:>8.2f}" for v in r["recall"]) + f"{r['recall_all']:>8.2f}")
        shares = next(iter(feature["conditions"].values()))["share_of_voxels"]
        print(f"{'share of voxels':>20}" + "".join(f"{v:>8.2f}" for v in shares))
    print(f"{'precision / recall / Dice':>26}" + "".join(f"{name:>22}" for name in SYNTH_CLASSES))
    for condition, scores in result["overall"].items():
        cells = ["/".join(f"{scores[n][k]:.3f}" for k in ("precision", "recall", "dice")) for n in SYNTH_CLASSES]
        print(f"{condition:>26}" + "".join(f"{c:>22}" for c in cells))
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
