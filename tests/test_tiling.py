"""Sliding-window geometry."""

import numpy as np
import pytest

from annotomo.tiling import blending_weights, padded_size, tile_starts


@pytest.mark.parametrize("size,tile,overlap", [(100, 100, 10), (101, 50, 10), (864, 256, 32), (3456, 1024, 96)])
def test_tiles_cover_everything_with_the_requested_overlap(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    covered = np.zeros(size, bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all()
    assert starts[0] == 0 and starts[-1] + min(tile, size) == size
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


def test_blending_weights_peak_in_the_centre_and_stay_positive():
    w = blending_weights((64, 64))
    assert w.min() > 0 and w[32, 32] == pytest.approx(w.max())
    assert w[0, 0] < 0.01 * w.max()
    # Along a row near the border the centre still outweighs the edge (the floor is per axis).
    assert w[2, 32] > 50 * w[2, 0]


def test_padded_size():
    assert padded_size(100, 64) == 128 and padded_size(128, 64) == 128
