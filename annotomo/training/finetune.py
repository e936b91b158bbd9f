"""Starting training from an existing model (fine-tuning), as the annotate-train-correct loop does.

The new model keeps the parent's architecture, context slices, normalisation (contrast, preprocessing)
and pixel size, so it applies to the same data the same way. With the same feature names every weight
is taken over; with other names the output layer is made anew for the features the parent did not
have (the background's and shared features' outputs are kept), and a message says so.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import torch

from ..errors import AnnotomoError
from ..modelfile import ModelInfo, load_model, model_label, resolve_model
from .config import TrainConfig


def parent_record(spec, info: ModelInfo) -> dict:
    """What a fine-tuned model's provenance says of its parent (a file or built-in name): name (a built-in
    model by its name, not by where this installation keeps it), file digest, classes, origin.
    """
    digest = hashlib.sha256(resolve_model(spec).read_bytes()).hexdigest()
    prov = info.provenance or {}
    return dict(
        model=model_label(spec),
        sha256=digest,
        class_names=list(info.class_names),
        created=prov.get("created"),
        iterations=prov.get("iterations"),
        parent=prov.get("parent"),
    )


def start_from(init, class_names: list[str], config: TrainConfig, log=print):
    """(network, config, parent info, parent record) for fine-tuning from model file or built-in name `init`.

    The config takes the parent's architecture, context slices and contrast; the network has the parent's
    weights, with the output rows of new features initialised afresh.

    Raises:
        InputError: `init` is not a usable model.
        AnnotomoError: the parent is EMAN2's tomoseg CNN (one network per feature; not fine-tunable here).
    """
    parent, info = load_model(init)
    if info.arch == "tomoseg-cnn":
        raise AnnotomoError(f"{init}: fine-tuning the tomoseg CNN is not supported; start from a U-Net model")
    config = replace(
        config,
        arch=info.arch,
        arch_params=dict(info.arch_params),
        context_slices=info.context_slices,
        invert_contrast=info.invert_contrast,
    )
    record = parent_record(init, info)
    if list(class_names) == list(info.class_names):
        return parent, config, info, record
    from ..models import build_model

    model, _ = build_model(info.arch, info.context_slices, len(class_names) + 1, **info.arch_params)
    own = model.state_dict()
    inherited = {k: v for k, v in parent.state_dict().items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(inherited, strict=False)
    kept = [n for n in class_names if n in info.class_names]
    _copy_output_rows(parent, model, info.class_names, class_names)
    new = [n for n in class_names if n not in info.class_names]
    kept_text = "background" + (f", {', '.join(kept)}" if kept else "")
    if new:
        log(
            f"fine-tuning {model_label(init)} for other features: the output layer starts afresh for "
            f"{', '.join(new)}; kept from the model: {kept_text}"
        )
    else:
        dropped = [n for n in info.class_names if n not in class_names]
        what = f"its outputs for {', '.join(dropped)} are dropped" if dropped else "its outputs in this order"
        log(f"fine-tuning {model_label(init)} for {kept_text} ({what})")
    return model, config, info, record


def _copy_output_rows(parent, model, parent_classes, classes):
    """Copy the head's output weights of the background and of features both models name."""
    old_head, new_head = _head(parent), _head(model)
    fold = getattr(parent, "fold", 1)
    per_class = fold * fold  # pixel-shuffle: each class owns fold^2 consecutive output channels
    pairs = [(0, 0)] + [(parent_classes.index(n) + 1, k + 1) for k, n in enumerate(classes) if n in parent_classes]
    with torch.no_grad():
        for old, new in pairs:
            rows_old, rows_new = (
                slice(old * per_class, (old + 1) * per_class),
                slice(new * per_class, (new + 1) * per_class),
            )
            new_head.weight[rows_new] = old_head.weight[rows_old]
            if new_head.bias is not None:
                new_head.bias[rows_new] = old_head.bias[rows_old]


def _head(model) -> torch.nn.Conv2d:
    head = getattr(model, "head", None)
    if not isinstance(head, torch.nn.Conv2d):
        raise AnnotomoError(f"cannot fine-tune a {type(model).__name__} for other features (no output layer)")
    return head
