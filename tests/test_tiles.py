"""The tile schedules cover every pair exactly once, and the sum over tiles adds what they return."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from homodyne._tiles import block_masks, block_tiles, pair_indices, pair_tiles, sum_over_tiles


@pytest.mark.parametrize("n_frames", [1, 7, 40, 101])
@pytest.mark.parametrize("tile_elements", [1, 50, 3 * 7 * 7, 2**18])
@pytest.mark.parametrize("n_shards", [1, 3])
def test_blocks_and_their_mirrors_cover_the_grid_once(n_frames, tile_elements, n_shards):
    """Counted with NumPy from the schedule and the masks: every (t1, t2) of the full grid, the
    diagonal included, once; padding tiles count for nothing."""
    n_phi = 3
    tiles = block_tiles(n_frames, n_phi, tile_elements, n_shards)
    b = tiles.size
    assert n_phi * b * b <= max(tile_elements, n_phi)  # a block holds what was asked for
    assert tiles.starts.shape[0] % n_shards == 0
    counts = np.zeros((n_frames, n_frames), int)
    masks = jax.jit(jax.vmap(block_masks, in_axes=(0, 0, None)), static_argnums=2)
    ups, downs = (np.asarray(m) for m in masks(tiles.starts, tiles.lows, b))
    assert tiles.starts.min() >= 0 and tiles.starts.max() + b <= n_frames  # blocks inside the grid
    for start, up, down, real in zip(tiles.starts, ups, downs, tiles.real, strict=True):
        if not real:
            continue
        rows, cols = start[0] + np.arange(b), start[1] + np.arange(b)
        np.add.at(counts, (rows[:, None], cols[None, :]), up)
        np.add.at(counts, (cols[None, :], rows[:, None]), down)  # the mirror, transposed
    assert np.array_equal(counts, np.ones_like(counts))


def test_blocks_overlap_by_less_than_one_per_block():
    """B is chosen so that ceil(N/B) blocks cover N frames with the least overlap, at least
    ``min_blocks`` of them where B ≥ 1 allows."""
    for n in (7, 997, 1000, 1001, 2000, 10_000):
        for min_blocks in (1, 10):
            tiles = block_tiles(n, 23, 2**18, 1, min_blocks)
            n_blocks = -(-n // tiles.size)
            assert n_blocks * tiles.size - n < n_blocks
            assert 23 * tiles.size**2 <= 2**18
            assert n_blocks >= min(n, min_blocks)


@pytest.mark.parametrize("n_frames", [2, 3, 30, 77])
@pytest.mark.parametrize("n_shards", [1, 2, 4])
def test_pair_tiles_hold_each_pair_above_the_diagonal_once(n_frames, n_shards):
    tiles = pair_tiles(n_frames, 2, 600, n_shards)
    assert tiles.rows.shape[0] % n_shards == 0
    rows, cols = tiles.rows[tiles.valid], tiles.cols[tiles.valid]
    assert np.all(rows < cols)
    pairs = set(zip(rows.tolist(), cols.tolist(), strict=True))
    assert len(pairs) == rows.size == n_frames * (n_frames - 1) // 2


@pytest.mark.parametrize("n_frames", [2, 3, 30, 77, 1000, 4097])
def test_pair_indices_on_the_device_are_the_schedule(n_frames):
    tiles = pair_tiles(n_frames, 2, 600, 3)
    rows, cols, valid = jax.jit(pair_indices, static_argnums=(0, 1))(tiles, n_frames)
    np.testing.assert_array_equal(rows, tiles.rows)
    np.testing.assert_array_equal(cols, tiles.cols)
    np.testing.assert_array_equal(valid, tiles.valid)


def test_schedules_are_computed_once_per_shape():
    assert block_tiles(50, 2, 200, 1) is block_tiles(50, 2, 200, 1)
    assert pair_tiles(50, 2, 600, 1) is pair_tiles(50, 2, 600, 1)
    with pytest.raises(ValueError, match="tile_elements"):
        block_tiles(50, 2, 0, 1)


def test_sum_over_tiles_with_framewise_sums_and_a_step_ahead():
    """Row and column sums of a matrix, walked in blocks with each tile's block prepared one step
    ahead, against NumPy."""
    n = 23
    x = np.random.default_rng(0).normal(size=(n, n))
    tiles = block_tiles(n, 1, 25, 1)  # blocks of 5: overlapping last row and column
    size = tiles.size
    xs = (jnp.asarray(tiles.starts), jnp.asarray(tiles.lows), jnp.asarray(tiles.real))

    def prepare(tile, consts):
        start, low, _ = tile
        block = jax.lax.dynamic_slice(consts, (start[0], start[1]), (size, size))
        up, _ = block_masks(start, low, size)
        return jnp.where(up, block, 0.0)  # the pairs t1 ≤ t2 the tile owns

    def fn(tile, consts, block):
        return {"total": jnp.sum(block), "rows": jnp.sum(block, axis=1)}

    def add(acc, part, tile):
        r0 = tile[0][0]
        rows = jax.lax.dynamic_update_slice(
            acc["rows"], jax.lax.dynamic_slice(acc["rows"], (r0,), (size,)) + part["rows"], (r0,)
        )
        return {"total": acc["total"] + part["total"], "rows": rows}

    init = {"total": jnp.zeros(()), "rows": jnp.zeros(n)}
    out = jax.jit(lambda x: sum_over_tiles(fn, xs, x, 1, init=init, add=add, ahead=prepare))(
        jnp.asarray(x)
    )
    upper = np.triu(x)
    np.testing.assert_allclose(out["total"], upper.sum(), rtol=1e-13)
    np.testing.assert_allclose(out["rows"], upper.sum(axis=1), rtol=1e-13, atol=1e-13)
