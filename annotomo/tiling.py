"""Sliding-window inference in the slice plane: where tiles start (pure geometry), how overlapping
tiles are weighted, and a small blender that accumulates tiles into one probability map.
"""

from __future__ import annotations

import numpy as np
import torch


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length `tile` covering [0, size) with at least `overlap` overlap.

    The last tile ends exactly at `size`; tiles are spread evenly, so overlaps may exceed `overlap`.
    """
    if tile >= size:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got {overlap} for tile {tile}")
    n = int(np.ceil((size - overlap) / (tile - overlap)))
    return [int(round(i * (size - tile) / (n - 1))) for i in range(n)] if n > 1 else [0]


def smallest_tile(overlap: int, stride: int = 1) -> int:
    """The smallest `max_tile` that tile_layout accepts for this overlap: on the stride grid, and longer
    than the overlap plus the one stride it spares for rounding.
    """
    return padded_size(overlap + stride + 1, stride)


def tile_layout(size: int, max_tile: int, overlap: int, stride: int = 1) -> tuple[int, list[int]]:
    """(tile length, tile starts) covering [0, size) with as few and as small tiles as possible.

    At most `max_tile` long, overlapping by at least `overlap`, tile length and starts multiples of
    `stride` (size must be one). Not fixed-size tiles: 3456 pixels with 2048-pixel tiles would compute
    4 x 2048^2 pixels per slice; two 1888-pixel tiles per axis cover it with 15% fewer.
    """
    if size % stride or max_tile < stride:
        raise ValueError(f"size {size} and max_tile {max_tile} must be multiples of stride {stride}")
    if size <= max_tile:
        return size, [0]
    # Spare one stride of overlap: rounding starts down to the stride may shift a tile by < stride.
    need = overlap + stride
    if max_tile < smallest_tile(overlap, stride):
        raise ValueError(f"overlap {overlap} too large for tiles of {max_tile}")
    n = max(2, int(np.ceil((size - need) / (max_tile - need))))
    while True:
        tile = -(-(size + (n - 1) * need) // n)
        tile = min(-(-tile // stride) * stride, size)
        if tile <= max_tile:
            break
        n += 1
    starts = [(i * (size - tile) // (n - 1)) // stride * stride for i in range(n)]
    return tile, starts


def blending_weights(shape, sigma_fraction: float = 0.125, floor: float = 1e-3) -> np.ndarray:
    """Gaussian weights for a tile (highest at the centre), so tile borders contribute little.

    The floor is applied per axis, before the product: every pixel keeps a positive weight (a pixel
    covered by one tile only still counts), while along each axis the ratio between two overlapping
    tiles stays that of their Gaussians, also in rows near the image border where both are small.
    """
    axes = []
    for n in shape:
        x = np.arange(n) - (n - 1) / 2
        g = np.exp(-0.5 * (x / (sigma_fraction * n)) ** 2)
        axes.append(np.maximum(g / g.max(), floor))
    w = axes[0]
    for a in axes[1:]:
        w = np.multiply.outer(w, a)
    return w.astype(np.float32)


def padded_size(size: int, stride: int) -> int:
    """The smallest multiple of `stride` that is >= size."""
    return -(-size // stride) * stride


class TileBlender:
    """Blends overlapping tiles of a batch of slices into one map of log-probabilities.

    Built once per (padded) slice size: the layout (`tile_layout`) and the Gaussian weights are the same
    for every slice. For each batch: `start`, then `add` each tile's class probabilities at its window
    (in any order), then `result` gives the log of the weighted mean per pixel, (batch, classes, height,
    width), channels-last in memory like the network's own output.

    Probabilities are blended, not logits: near a tile's edge logits can be large, and even a small
    weight on a large logit would show as a seam.

    Example:
        >>> blender = TileBlender(640, 640, max_tile=384, overlap=256, stride=32)
        >>> len(blender.windows())
        4
    """

    def __init__(self, height: int, width: int, max_tile: int, overlap: int, stride: int = 1, device="cpu"):
        (self.tile_height, self.ys), (self.tile_width, self.xs) = (
            tile_layout(n, max_tile, overlap, stride) for n in (height, width)
        )
        self.height, self.width = height, width
        self.weight = torch.from_numpy(blending_weights((self.tile_height, self.tile_width))).to(device)
        total = torch.zeros((height, width), device=device)
        for rows, cols in self.windows():
            total[rows, cols] += self.weight
        self.inverse_total = total.reciprocal_()
        self._sum = None

    def windows(self) -> list[tuple[slice, slice]]:
        """The (rows, columns) of every tile, row by row."""
        return [(slice(y0, y0 + self.tile_height), slice(x0, x0 + self.tile_width)) for y0 in self.ys for x0 in self.xs]

    def start(self, batch: int, classes: int, dtype=torch.float32):
        """Begin a batch of `batch` slices with `classes` channels, accumulated in `dtype`."""
        self._sum = torch.zeros(
            (batch, self.height, self.width, classes), device=self.inverse_total.device, dtype=dtype
        ).permute(0, 3, 1, 2)

    def add(self, window: tuple[slice, slice], probabilities: torch.Tensor):
        """Accumulate one tile's (batch, classes, tile_height, tile_width) probabilities (scaled in place)."""
        probabilities.mul_(self.weight)
        self._sum[:, :, window[0], window[1]] += probabilities.to(self._sum.dtype)

    def result(self) -> torch.Tensor:
        """Log of the blended probabilities; normalised band by band, so no full float32 copy is made."""
        blended, self._sum = self._sum, None
        band = max(1, (1 << 22) // self.width)
        for y0 in range(0, self.height, band):
            part = blended[:, :, y0 : y0 + band]
            part.copy_(part.float().mul_(self.inverse_total[y0 : y0 + band]).clamp_(min=1e-12).log_())
        return blended
