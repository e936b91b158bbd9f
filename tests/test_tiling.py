"""Sliding-window geometry."""

from itertools import pairwise

import numpy as np
import pytest

from annotomo.tiling import blending_weights, padded_size, tile_layout, tile_starts


@pytest.mark.parametrize("size,tile,overlap", [(100, 100, 10), (101, 50, 10), (864, 256, 32), (3456, 1024, 96)])
def test_tiles_cover_everything_with_the_requested_overlap(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    covered = np.zeros(size, bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all()
    assert starts[0] == 0 and starts[-1] + min(tile, size) == size
    assert all(b - a <= tile - overlap for a, b in pairwise(starts))


def test_blending_weights_peak_in_the_centre_and_stay_positive():
    w = blending_weights((64, 64))
    assert w.min() > 0 and w[32, 32] == pytest.approx(w.max())
    assert w[0, 0] < 0.01 * w.max()
    # Along a row near the border the centre still outweighs the edge (the floor is per axis).
    assert w[2, 32] > 50 * w[2, 0]


def test_padded_size():
    assert padded_size(100, 64) == 128 and padded_size(128, 64) == 128


@pytest.mark.parametrize(
    "size,max_tile,overlap,stride",
    [(3456, 2048, 256, 32), (4096, 2048, 256, 32), (448, 384, 256, 32), (1000, 512, 100, 8), (864, 2048, 256, 32)],
)
def test_tile_layout_covers_with_overlap_on_the_stride_grid(size, max_tile, overlap, stride):
    tile, starts = tile_layout(size, max_tile, overlap, stride)
    assert tile <= max_tile and tile % stride == 0 and all(s % stride == 0 for s in starts)
    assert starts[0] == 0 and starts[-1] + tile == size
    assert all(tile - (b - a) >= overlap for a, b in pairwise(starts))
    # Never more computed pixels than fixed-size tiles of max_tile would need.
    fixed = len(tile_starts(size, min(max_tile, size), overlap)) * min(max_tile, size)
    assert len(starts) * tile <= fixed


def test_tile_layout_shrinks_tiles_for_unbinned_slices():
    tile, starts = tile_layout(3456, 2048, 256, 32)
    assert len(starts) == 2 and tile < 1900


def test_a_max_tile_between_the_overlap_and_the_next_stride_is_refused_not_looped_on():
    from annotomo.tiling import smallest_tile

    assert smallest_tile(256, 32) == 320
    with pytest.raises(ValueError, match="too large"):  # 300 > 256 + 32, but no 32-multiple tile fits in it
        tile_layout(1024, 300, 256, 32)
    assert tile_layout(1024, 320, 256, 32)[0] == 320
