"""PNG figures for checking results by eye: slices of a tomogram with a label overlay, training curves."""

from __future__ import annotations

import functools
import threading

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

# matplotlib is not thread-safe (two threads laying out tick labels at once fail in its mathtext parser),
# and annotomo draws from worker threads: the napari panel's live curve while training writes its curves.
# Figures without pyplot: no global backend switched in a host process (napari, Jupyter) that has its own.
DRAWING_LOCK = threading.Lock()

# Label colours: background transparent, then one colour per feature (up to 10, then cycling).
_COLOURS = [
    "#e41a1c",
    "#377eb8",
    "#4daf4a",
    "#ff7f00",
    "#984ea3",
    "#ffff33",
    "#a65628",
    "#f781bf",
    "#17becf",
    "#999999",
]


def _label_cmap(n_classes):
    colours = [(0, 0, 0, 0)] + [_COLOURS[i % len(_COLOURS)] for i in range(n_classes)]
    return ListedColormap(colours)


def _robust_limits(image):
    lo, hi = np.percentile(image, [1, 99])
    return float(lo), float(hi)


def _one_at_a_time(draw):
    """Hold `DRAWING_LOCK` while `draw` makes and saves its figure."""

    @functools.wraps(draw)
    def locked(*args, **kwargs):
        with DRAWING_LOCK:
            return draw(*args, **kwargs)

    return locked


@_one_at_a_time
def save_overlay(path, tomogram, labels_list, class_names, titles=None, z=None, y=None, pixel_size=None, fmt=None):
    """Save xy and xz slices of `tomogram`, plain and with each label volume of `labels_list` overlaid.

    One row per view (xy at slice z, xz at row y); one column for the raw slice plus one per label
    volume (e.g. truth and prediction).
    """
    tomogram = np.asarray(tomogram)
    nz, ny, nx = tomogram.shape
    z = nz // 2 if z is None else z
    y = ny // 2 if y is None else y
    titles = titles or [f"labels {i}" for i in range(len(labels_list))]
    cmap = _label_cmap(len(class_names))
    ncol = 1 + len(labels_list)
    aspect_xz = nz / nx
    fig = Figure(figsize=(4 * ncol, 4 * (1 + aspect_xz) + 1.0), layout="constrained")
    axes = fig.subplots(
        2,
        ncol,
        gridspec_kw={"height_ratios": [1, max(aspect_xz, 0.15)]},
        squeeze=False,
    )
    views = [
        (tomogram[z], [np.asarray(lab[z]) for lab in labels_list], f"xy, z={z}"),
        (tomogram[:, y], [np.asarray(lab[:, y]) for lab in labels_list], f"xz, y={y}"),
    ]
    for row, (img, labs, name) in enumerate(views):
        lo, hi = _robust_limits(img)
        for col in range(ncol):
            ax = axes[row, col]
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            if col > 0:
                lab = labs[col - 1].astype(np.int32)
                lab = np.where(lab > len(class_names), 0, lab)
                ax.imshow(
                    np.ma.masked_equal(lab, 0),
                    cmap=cmap,
                    vmin=0,
                    vmax=len(class_names),
                    alpha=0.55,
                    interpolation="nearest",
                )
                ax.set_title(f"{titles[col - 1]} ({name})", fontsize=9)
            else:
                ax.set_title(f"tomogram ({name})", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [Rectangle((0, 0), 1, 1, color=_COLOURS[i % len(_COLOURS)]) for i in range(len(class_names))]
    fig.legend(handles, class_names, loc="outside lower center", ncol=len(class_names), fontsize=9, frameon=False)
    if pixel_size:
        fig.suptitle(f"{nz} x {ny} x {nx} voxels (z, y, x) at {pixel_size:g} A/pixel", fontsize=10)
    fig.savefig(path, dpi=110, format=fmt)


@_one_at_a_time
def save_training_curves(path, history, fmt=None, dice_on="validation"):
    """Plot training loss and validation Dice per class against epochs (history: list of dicts)."""
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, 3.8))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs, [h["train_loss"] for h in history], label="training loss")
    if any("val_loss" in h for h in history):
        ax1.plot(epochs, [h.get("val_loss", np.nan) for h in history], label="validation loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss (training: weighted CE + Dice term;\nvalidation: weighted CE)", fontsize=8)
    ax1.set_yscale("log")
    ax1.legend()
    names = [k[len("dice_") :] for k in history[0] if k.startswith("dice_")] if history else []
    for name in names:
        ax2.plot(epochs, [h[f"dice_{name}"] for h in history], label=name)
    if names:
        ax2.plot(epochs, [h["mean_dice"] for h in history], "k--", label="mean")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel(f"Dice on {dice_on}")
    ax2.set_ylim(0, 1)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format=fmt)
