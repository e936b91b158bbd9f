"""EMAN2 tomoseg's convolutional network (Chen et al., Nature Methods 14:983, 2017), for comparison.

As in e2tomoseg_convnet.py: one small network PER FEATURE, Conv 40x(15x15)+ReLU -> max-pool 2 ->
Conv 40x(15x15)+ReLU -> Conv 1x(15x15) linear, output at half resolution. To run through annotomo's
engine, all features' networks sit side by side in one module: the output is (B, n_outputs, H, W)
where channel 0 is a constant "nothing" score (the merge threshold, EMAN2's mergetomoseg uses 0.8)
and channel k is feature k's network output (negatives set to 0, upscaled x2), so argmax over
channels reproduces EMAN2's thresholded argmax merge.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class FeatureCNN(nn.Module):
    """EMAN2 tomoseg's 4-layer CNN for one feature (two 40-filter 15x15 convs, pool, one 15x15 output)."""

    def __init__(self, in_channels=1, filters=40, kernel=15):
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv2d(in_channels, filters, kernel, padding=pad)
        self.conv2 = nn.Conv2d(filters, filters, kernel, padding=pad)
        self.conv3 = nn.Conv2d(filters, 1, kernel, padding=pad)

    def forward(self, x):
        """Half-resolution linear output (B, 1, H/2, W/2) of this feature's network."""
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(x, 2)
        x = F.relu(self.conv2(x))
        return self.conv3(x)  # half resolution, linear


class TomosegCNN(nn.Module):
    """One FeatureCNN per feature; returns full-resolution scores with a constant 'nothing' channel."""

    def __init__(self, in_channels=1, n_outputs=5, filters=40, kernel=15, threshold=0.8):
        super().__init__()
        self.features = nn.ModuleList(FeatureCNN(in_channels, filters, kernel) for _ in range(n_outputs - 1))
        self.threshold = threshold
        self.stride = 2

    def half_resolution(self, x):
        """Raw per-feature outputs at half resolution (B, n_features, H/2, W/2), as trained."""
        return torch.cat([f(x) for f in self.features], dim=1)

    def forward(self, x):
        """Full-resolution scores (B, n_outputs, H, W), channel 0 the constant merge threshold."""
        y = F.relu(self.half_resolution(x))
        y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        nothing = torch.full_like(y[:, :1], self.threshold)
        return torch.cat([nothing, y], dim=1)
