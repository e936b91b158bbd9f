"""Model registry: architectures by name, so a model file can name its architecture as data."""

from __future__ import annotations

from .tomoseg_cnn import TomosegCNN
from .unet import UNet

#: name -> (class, default keyword arguments). A model file stores the name and the kwargs.
ARCHITECTURES = {
    "unet": (UNet, dict(widths=(48, 64, 96, 128), fold=4, convs_per_level=2, merge="add")),
    # The U-Net of the original paper's size: 64 -> 1024 channels, 4 poolings (~31 M parameters).
    "unet-original": (UNet, dict(widths=(64, 128, 256, 512, 1024), fold=1, convs_per_level=2, merge="concat")),
    "tomoseg-cnn": (TomosegCNN, dict(filters=40, kernel=15, threshold=0.8)),
}


def build_model(arch: str, in_channels: int, n_outputs: int, **kwargs):
    """Instantiate architecture `arch` for `in_channels` slices and `n_outputs` classes (incl. background)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    cls, defaults = ARCHITECTURES[arch]
    params = {**defaults, **kwargs}
    return cls(in_channels=in_channels, n_outputs=n_outputs, **params), params
