"""What training writes: the best model (with provenance), the log and curves, and the resumable
checkpoint (model + optimiser state, data-only like model files).
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict
from pathlib import Path

import torch

from .. import __version__
from ..atomic import atomic_path
from ..errors import InputError
from ..modelfile import ModelInfo, load_model, save_model
from ..volumes import check_output_path


def checkpoint_path(model_path) -> Path:
    """Where the resumable training state of `model_path` lives."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".checkpoint")


def training_outputs(model_path) -> dict[str, Path]:
    """Every file training writes for `model_path`: the model, its checkpoint, log and curves."""
    model_path = Path(model_path)
    return dict(
        model=model_path,
        checkpoint=checkpoint_path(model_path),
        log=model_path.with_name(model_path.name + ".log.json"),
        curves=model_path.with_name(model_path.name + ".training.png"),
    )


def check_training_outputs(model_path, inputs=(), overwrite=False, resume=False):
    """Refuse unusable training outputs before any work starts (an existing model needs overwrite or resume).

    Raises:
        InputError: naming the output and the problem.
    """
    for name, path in training_outputs(model_path).items():
        check_output_path(path, inputs, overwrite=overwrite or resume or name != "model")


def provenance(config, data, val_data, state, parent=None):
    """Where a model came from: versions, date, training data, iterations, best score, settings, parent."""
    record = dict(
        annotomo_version=__version__,
        torch_version=torch.__version__,
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        training_tomograms=[dict(name=d.name, shape=list(d.image.shape), pixel_size=d.pixel_size) for d in data],
        validation_tomograms=[d.name for d in val_data],
        iterations=state["iteration"],
        best_epoch=state["best"]["epoch"] if state["best"] else None,
        best_mean_dice=state["best"]["mean_dice"] if state["best"] else None,
        dice_on="validation" if val_data else "training slices",
        config={k: v for k, v in asdict(config).items() if k != "threads"},
    )
    if parent is not None:
        record["parent"] = parent
    return record


def save_final(out, model, info, config, data, val_data, state, parent=None):
    """Write the model file with its provenance (called for each new best epoch)."""
    info.provenance = provenance(config, data, val_data, state, parent)
    save_model(out, model, info)


def write_log(out, history, config, dice_on):
    """Write the training log (history and settings) and the training curves beside the model."""
    from ..preview import save_training_curves

    paths = training_outputs(out)
    with atomic_path(paths["log"]) as tmp:
        tmp.write_text(json.dumps(dict(history=history, config=asdict(config)), indent=1))
    if history:
        with atomic_path(paths["curves"]) as tmp:
            save_training_curves(tmp, history, fmt="png", dice_on=dice_on)


def save_checkpoint(path, model, optimizer, info, state):
    """Model + optimiser state in a data-only file (safetensors), with the loop state as JSON."""
    extra = {}
    opt = optimizer.state_dict()
    for pid, s in opt["state"].items():
        for key, value in s.items():
            if torch.is_tensor(value):
                extra[f"_opt.{pid}.{key}"] = value if value.dim() else value.reshape(1)
    info_copy = ModelInfo(
        **{
            **info.__dict__,
            "provenance": dict(
                training_state=dict(
                    iteration=state["iteration"], elapsed=state["elapsed"], history=state["history"], best=state["best"]
                )
            ),
        }
    )
    save_model(path, model, info_copy, extra_tensors=extra)


def load_checkpoint(path, model, optimizer, info):
    """Restore model and optimiser state from a checkpoint; return the loop state."""
    from safetensors.torch import load_file

    if not path.exists():
        raise InputError(path, "no checkpoint to resume from (train without --resume first)")
    saved_model, saved_info = load_model(path)
    if saved_info.class_names != info.class_names or saved_info.arch != info.arch:
        raise InputError(
            path,
            f"checkpoint is for classes {saved_info.class_names} ({saved_info.arch}), "
            f"not {info.class_names} ({info.arch})",
        )
    model.load_state_dict(saved_model.state_dict())
    tensors = load_file(str(path))
    opt = optimizer.state_dict()
    for pid in range(len(opt["param_groups"][0]["params"])):
        keys = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"_opt.{pid}.")}
        if keys:
            opt["state"][pid] = {k: (v.reshape(()) if k == "step" else v) for k, v in keys.items()}
    optimizer.load_state_dict(opt)
    # The moments come back in the file's (contiguous) layout, but the fused AdamW kernel on CUDA needs them
    # in the layout of their parameters (channels-last for the convolutions): resuming on a GPU failed with
    # "params, grads, exp_avgs, and exp_avg_sqs must have same dtype, device, and layout".
    for param, param_state in optimizer.state.items():
        for key, value in param_state.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                param_state[key] = torch.empty_like(param).copy_(value)
    st = saved_info.provenance["training_state"]
    return dict(iteration=st["iteration"], elapsed=st["elapsed"], history=st["history"], best=st["best"])
