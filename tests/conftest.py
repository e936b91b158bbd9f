"""Shared fixtures: small simulated tomograms, one untrained and one tiny trained model, made once per session.

Tests that train a real model, or need one, are marked `slow` (`make test-fast` skips them).
"""

from __future__ import annotations

import pytest
from helpers import SMALL_WIDTHS, save_untrained_model

from annotomo import TrainConfig, simulate, train
from annotomo.volumes import write_volume

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
    for name, s in zip(("train", "test"), small_pair, strict=True):
        paths[f"{name}_tomo"] = d / f"{name}_tomo.mrc"
        paths[f"{name}_labels"] = d / f"{name}_labels.mrc"
        write_volume(paths[f"{name}_tomo"], s.tomogram, (28.0,) * 3)
        write_volume(paths[f"{name}_labels"], s.labels, (28.0,) * 3, class_names=s.class_names)
    return paths


@pytest.fixture(scope="session")
def model_file(tmp_path_factory):
    """A 5-slice U-Net with seeded random weights (4 simulator features, 28 A): geometry and error tests."""
    return save_untrained_model(tmp_path_factory.mktemp("untrained") / "untrained.annotomo")


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory, small_files, small_pair):
    """A small 2.5D U-Net (5 slices, so z halos are exercised) trained for a fixed number of iterations."""
    out = tmp_path_factory.mktemp("model") / "tiny.annotomo"
    config = TrainConfig(
        iterations=600,
        epoch_iterations=200,
        patch=96,
        batch_size=8,
        seed=0,
        context_slices=5,
        arch_params=dict(widths=SMALL_WIDTHS),
    )
    result = train(
        [small_files["train_tomo"]],
        [small_files["train_labels"]],
        list(small_pair[0].class_names),
        out,
        config,
        progress=False,
        log=lambda *a: None,
    )
    return out, result
