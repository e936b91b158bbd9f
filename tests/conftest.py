"""Shared fixtures: small simulated tomograms and one tiny trained model, made once per test session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from annotomo import TrainConfig, simulate, train
from annotomo.volumes import write_volume

SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "io"
SMALL = (32, 128, 128)


@pytest.fixture(scope="session")
def default_synthetic():
    """The simulator's default volume (64 x 256 x 256 at 28 A)."""
    return simulate(seed=3)


@pytest.fixture(scope="session")
def small_pair():
    """Two different small simulated cells (train, test) at 28 A."""
    return simulate(shape=(32, 192, 192), seed=11), simulate(shape=(32, 192, 192), seed=12)


@pytest.fixture(scope="session")
def small_files(tmp_path_factory, small_pair):
    """The small pair written as MRC files: dict with train/test tomogram and labels paths."""
    d = tmp_path_factory.mktemp("data")
    paths = {}
    for name, s in zip(("train", "test"), small_pair):
        paths[f"{name}_tomo"] = d / f"{name}_tomo.mrc"
        paths[f"{name}_labels"] = d / f"{name}_labels.mrc"
        write_volume(paths[f"{name}_tomo"], s.tomogram, (28.0,) * 3)
        write_volume(paths[f"{name}_labels"], s.labels, (28.0,) * 3)
    return paths


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory, small_files, small_pair):
    """A small 2.5D U-Net (5 slices, so z halos are exercised) trained for a fixed number of iterations."""
    out = tmp_path_factory.mktemp("model") / "tiny.annotomo"
    config = TrainConfig(iterations=600, epoch_iterations=200, patch=96, batch_size=8, seed=0, context_slices=5,
                         arch_params=dict(widths=(32, 48, 64, 96)))
    result = train([small_files["train_tomo"]], [small_files["train_labels"]], list(small_pair[0].class_names),
                   out, config, progress=False, log=lambda *a: None)
    return out, result


def chance_dice(truth: np.ndarray, k: int) -> float:
    """Dice of a random prediction with the true class frequencies (what a model without skill gets)."""
    return float(np.mean(truth == k))
