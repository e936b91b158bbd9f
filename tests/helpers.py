"""Helpers shared by the tests: running the CLI, asserting one-line errors, tiny model files."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import torch

from annotomo.cli import main
from annotomo.conventions import SYNTH_CLASSES
from annotomo.modelfile import ModelInfo, save_model
from annotomo.models import build_model

CLASSES = ",".join(SYNTH_CLASSES)
QUIET = dict(progress=False, log=lambda *a: None)
SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "io"
SMALL_WIDTHS = (32, 48, 64, 96)


def run_cli(*args, fresh_process=False):
    """Run `annotomo ARGS`; return (exit code, stdout, stderr).

    In this process by default (fast: torch is imported once), with warnings shown as the CLI shows
    them; `fresh_process=True` runs `python -m annotomo` as a user would (signals, real stderr)."""
    args = [str(a) for a in args]
    if fresh_process:
        proc = subprocess.run([sys.executable, "-m", "annotomo", *args], capture_output=True, text=True, timeout=600)
        return proc.returncode, proc.stdout, proc.stderr
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(), redirect_stdout(out), redirect_stderr(err):
        warnings.simplefilter("always")
        try:
            code = main(args)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def assert_clean_error(code, err, *fragments):
    """Exit code 2, one `annotomo: error` line containing every fragment, no traceback."""
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.startswith("annotomo: error")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], err


def assert_same_labels(a, b, predictor):
    """Bit-identical on CPUs. On GPUs, cuDNN's convolutions round differently with the batch size and from run
    to run, so a voxel whose two best classes nearly tie can flip (a few per million)."""
    if predictor.device.type == "cpu":
        assert np.array_equal(a, b)
    else:
        assert a.shape == b.shape and np.mean(a != b) <= 1e-4, int(np.count_nonzero(a != b))


def chance_dice(truth: np.ndarray, k: int) -> float:
    """Dice of a random prediction with the true class frequencies (what a model without skill gets)."""
    return float(np.mean(truth == k))


def digest(path) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_untrained_model(
    path, context_slices=5, class_names=SYNTH_CLASSES, widths=SMALL_WIDTHS, seed=0, pixel_size=28.0, head_gain=30.0
) -> Path:
    """A model file with seeded random weights: for tests of geometry, halos, tiling and errors, which
    hold for any weights (no training needed)."""
    torch.manual_seed(seed)
    model, params = build_model("unet", context_slices, len(class_names) + 1, widths=widths)
    for module in model.modules():  # BatchNorm statistics of a plausible network, not the identity
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    with torch.no_grad():  # decisive outputs: a random head gives near-uniform probabilities and many near-ties
        model.head.weight.mul_(head_gain)
    info = ModelInfo(
        arch="unet",
        arch_params=params,
        class_names=list(class_names),
        context_slices=context_slices,
        pixel_size=pixel_size,
    )
    save_model(path, model.eval(), info)
    return Path(path)
