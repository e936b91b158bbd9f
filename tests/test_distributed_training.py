"""Training in 2 processes with DistributedDataParallel (gloo, on the CPU): a loadable model, the same files
as single-process training, processes that agree on when to stop, and resuming."""

import json

import numpy as np
import pytest
import torch
from helpers import CLASSES, run_cli

from annotomo import TrainConfig, read_model_info, train
from annotomo.modelfile import load_model
from annotomo.training import checkpoint_path, distributed

pytestmark = pytest.mark.slow  # starts processes that import torch, and trains


def _small(**kw):
    return TrainConfig(
        **{
            **dict(
                iterations=40,
                epoch_iterations=20,
                patch=64,
                batch_size=4,
                context_slices=3,
                device="cpu",
                precision="fp32",
                arch_params=dict(widths=(8, 12, 16, 24)),
            ),
            **kw,
        }
    )


def _train_and_report(tomogram, labels, out, config, stop_after_epochs=None):
    """One process's part (module level: torch.multiprocessing starts it by name). Process 0 writes, and can
    stop after some epochs; the others must follow."""
    import os

    epochs = []
    stop = (lambda: len(epochs) >= stop_after_epochs) if stop_after_epochs else None
    result = train(
        [tomogram],
        [labels],
        CLASSES.split(","),
        out,
        config,
        progress=False,
        log=lambda *a: None,
        overwrite=True,
        stop=stop,
        on_epoch=epochs.append,
        resume=config.seed == 99,
    )
    with open(f"{out}.rank{os.environ['RANK']}", "w") as f:
        json.dump(dict(iterations=result.iterations, interrupted=result.interrupted), f)


def test_two_gloo_processes_train_a_loadable_model_with_the_usual_files(tmp_path, small_files):
    out = tmp_path / "ddp.annotomo"
    distributed.launch(
        2, _train_and_report, small_files["train_tomo"], small_files["train_labels"], str(out), _small(), use_gpus=False
    )
    model, info = load_model(out)
    assert info.class_names == CLASSES.split(",") and info.context_slices == 3
    log = json.loads(out.with_name(out.name + ".log.json").read_text())
    assert [h["iteration"] for h in log["history"]] == [20, 40]
    assert out.with_name(out.name + ".training.png").exists() and not checkpoint_path(out).exists()
    ranks = [json.loads((tmp_path / f"ddp.annotomo.rank{r}").read_text()) for r in (0, 1)]
    assert [r["iterations"] for r in ranks] == [40, 40]  # both did every step
    assert sum(p.numel() for p in model.parameters()) > 1000


def test_processes_stop_together_and_resume_from_the_checkpoint(tmp_path, small_files):
    out = tmp_path / "ddp.annotomo"
    distributed.launch(
        2,
        _train_and_report,
        small_files["train_tomo"],
        small_files["train_labels"],
        str(out),
        _small(iterations=100),
        1,
        use_gpus=False,
    )
    ranks = [json.loads((tmp_path / f"ddp.annotomo.rank{r}").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1] and ranks[0]["interrupted"] and ranks[0]["iterations"] == 20  # rank 1 followed
    assert checkpoint_path(out).exists()
    distributed.launch(
        2,
        _train_and_report,
        small_files["train_tomo"],
        small_files["train_labels"],
        str(out),
        _small(iterations=60, seed=99),
        use_gpus=False,
    )  # (seed 99 asks the helper to resume)
    log = json.loads(out.with_name(out.name + ".log.json").read_text())
    assert [h["iteration"] for h in log["history"]] == [20, 40, 60]
    assert not checkpoint_path(out).exists()


def test_train_processes_through_the_cli(tmp_path, small_files):
    out = tmp_path / "cli.annotomo"
    code, stdout, err = run_cli(
        "train",
        "--tomogram",
        small_files["train_tomo"],
        "--labels",
        small_files["train_labels"],
        "--out",
        out,
        "--iterations",
        20,
        "--patch",
        64,
        "--batch-size",
        2,
        "--processes",
        2,
        "--device",
        "cpu",
        "--quiet",
        fresh_process=True,
    )
    assert code == 0, err
    assert "in 2 processes" in stdout and read_model_info(out).provenance["iterations"] == 20
    code, _, err = run_cli(
        "train",
        "--tomogram",
        small_files["train_tomo"],
        "--labels",
        small_files["train_labels"],
        "--out",
        tmp_path / "g.annotomo",
        "--gpus",
        2,
        "--quiet",
    )
    if not torch.cuda.is_available():
        assert code == 2 and "--gpus 2: no CUDA GPU" in err


def test_single_process_training_is_unchanged_by_the_distributed_code(tmp_path, small_pair):
    """No process group: the same weights as ever for the same seed (one process, as the reference run)."""
    sim = small_pair[0]
    a, b = (
        train(
            [sim.tomogram],
            [sim.labels],
            list(sim.class_names),
            tmp_path / f"{name}.annotomo",
            _small(iterations=20),
            progress=False,
            log=lambda *x: None,
        )
        for name in "ab"
    )
    wa, wb = load_model(a.model_path)[0].state_dict(), load_model(b.model_path)[0].state_dict()
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)
