"""A 2D U-Net (Ronneberger et al. 2015) shaped for fast CPU inference.

Why this shape: a 3x3 convolution over 1-4 channels at full resolution runs at a few GFLOP/s on a CPU,
while convolutions over >= 32 channels reach most of the machine's peak. So the input (the slice and
its neighbouring slices as channels, "2.5D") is folded into channels by pixel-unshuffle (space-to-depth,
lossless) before the first convolution, and the output is unfolded by pixel-shuffle (sub-pixel
convolution). Between them is a classic U-Net: two 3x3 conv + BN + ReLU per level, max-pool down,
upsample and merge the skip connection on the way up. Decoder merges add the skip after a 1x1
projection (instead of concatenating), which halves the decoder's cost at equal width.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def space_to_depth(x: torch.Tensor, fold: int) -> torch.Tensor:
    """F.pixel_unshuffle(x, fold), made in one copy straight into channels-last memory (the layout the
    convolutions run in on CPUs; pixel_unshuffle of a channels-last tensor takes a slow path there).
    """
    b, c, h, w = x.shape
    y = x.reshape(b, c, h // fold, fold, w // fold, fold).permute(0, 2, 4, 1, 3, 5)
    return y.reshape(b, h // fold, w // fold, c * fold * fold).permute(0, 3, 1, 2)


def depth_to_space(x: torch.Tensor, fold: int) -> torch.Tensor:
    """F.pixel_shuffle(x, fold) in one copy from a channels-last `x` into ordinary (NCHW) memory."""
    b, c, h, w = x.shape
    y = x.permute(0, 2, 3, 1).reshape(b, h, w, c // (fold * fold), fold, fold).permute(0, 3, 1, 4, 2, 5)
    return y.reshape(b, c // (fold * fold), h * fold, w * fold)


def _conv_bn_relu(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """Multi-class 2D/2.5D U-Net returning per-pixel logits (B, n_classes + 1, H, W).

    in_channels: number of slices fed (1 = 2D, 3 or 5 = 2.5D context); fold: space-to-depth factor;
    widths: channels per level (coarser levels to the right); merge: "add" or "concat" skip merges.
    H and W must be multiples of `stride`.
    """

    def __init__(self, in_channels=5, n_outputs=5, widths=(48, 64, 96, 128), fold=4, convs_per_level=2, merge="add"):
        super().__init__()
        self.fold = fold
        self.merge = merge
        self.stride = fold * 2 ** (len(widths) - 1)
        self.encoders = nn.ModuleList()
        cin = in_channels * fold * fold
        for w in widths:
            layers = [_conv_bn_relu(cin, w)] + [_conv_bn_relu(w, w) for _ in range(convs_per_level - 1)]
            self.encoders.append(nn.Sequential(*layers))
            cin = w
        self.laterals = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for w_skip, w_deep in zip(widths[-2::-1], widths[:0:-1], strict=True):
            if merge == "add":
                self.laterals.append(nn.Conv2d(w_deep, w_skip, 1, bias=False))
                self.decoders.append(_conv_bn_relu(w_skip, w_skip))
            else:
                self.laterals.append(nn.Identity())
                self.decoders.append(
                    nn.Sequential(
                        _conv_bn_relu(w_skip + w_deep, w_skip),
                        *[_conv_bn_relu(w_skip, w_skip) for _ in range(convs_per_level - 1)],
                    )
                )
        self.head = nn.Conv2d(widths[0], n_outputs * fold * fold, 1)

    def forward(self, x):
        """Logits (B, n_outputs, H, W) of a (B, in_channels, H, W) batch; H and W multiples of `stride`."""
        if self.fold > 1:  # on CPUs straight into channels-last memory; GPUs keep their own layout
            x = space_to_depth(x, self.fold) if x.device.type == "cpu" else F.pixel_unshuffle(x, self.fold)
        skips = []
        for i, enc in enumerate(self.encoders):
            if i:
                x = F.max_pool2d(x, 2)
            x = enc(x)
            skips.append(x)
        for lateral, dec, skip in zip(self.laterals, self.decoders, skips[-2::-1], strict=True):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = lateral(x) + skip if self.merge == "add" else torch.cat([x, skip], dim=1)
            x = dec(x)
        x = self.head(x)
        if self.fold > 1:
            channels_last = x.is_contiguous(memory_format=torch.channels_last)
            x = depth_to_space(x, self.fold) if channels_last else F.pixel_shuffle(x, self.fold)
        return x
