"""The one walk over the two-time grid: tile schedules and a sum over tiles.

Every pass over the data is a per-tile function mapped over a schedule of tiles by
`sum_over_tiles`, which accumulates what the tiles return and splits them between the local
devices (`jax.shard_map`, partial sums added by `psum`). The fit's χ², JᵀJ and Jᵀr and the
functional API's χ² and its derivatives are such passes; a new pass is one more per-tile function.

Two layouts of the same pairs, each computed once per shape (`functools.lru_cache`):

- `pair_tiles`: the N(N−1)/2 pairs t1 < t2, grouped in squares of w × w frames (at most
  MAX_SQUARES along the frames), a whole number of squares per tile of T pairs. A fit cuts its
  data into these tiles once, so that each device holds only its own. A pass can sum per square
  with matrix products over the square's w² slots (the error covariance's blocks are unions of
  squares); the slots below the diagonal of the squares on it, and past the last frame, are
  padding (a few per cent).
- `block_tiles`: B × B blocks of frames on and above the diagonal, for passes that read a full
  (n_phi, N, N) array in place (the functional API's χ²). A block is compared with the data there and,
  transposed, with its mirror tile below the diagonal. B is chosen so that the blocks cover the N
  frames almost exactly; the last block row and column start at N − B, overlapping the one before
  by fewer than ceil(N/B) frames, so that every tile has one shape and one compiled body. `lows`
  gives the first frame a block owns: the per-tile function masks the rest (`block_masks`).

Tiles are padded to a multiple of the number of devices with tiles that count zero times (``real``
False).
"""

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Int

from ._sharding import TILE_AXIS, mesh

#: angles × pairs per tile of a fit: 0.5 MB per float64 array (its Jacobian is F times that)
FIT_TILE_ELEMENTS = 2**16
#: angles × B × B per block of the functional API's χ²: 2 MB per float64 array
BLOCK_TILE_ELEMENTS = 2**18
#: ... and at least this many blocks along the frames where that allows: a diagonal block costs a
#: whole block for half of it, so few blocks waste a large share (at 3 × 1000, 4 blocks of 250 gave
#: χ² 13.7 ms and its gradient 20.5 ms, 10 blocks of 100 gave 10.5 and 16.7 ms; measured in turn)
MIN_BLOCKS = 10


#: squares of the pair tiles along the frames, at most (`pair_tiles`): the error covariance's blocks
#: of frames are runs of whole squares (`homodyne._fit._error_blocks`), so squares this fine let a
#: block end within a few frames of where the correlation time puts it
MAX_SQUARES = 256


@dataclasses.dataclass(frozen=True, eq=False)
class PairTiles:
    """The pairs i < j in tiles of ``size`` slots, each tile ``size // side²`` whole squares of
    ``side`` × ``side`` frames, row-major over the squares (a, b), a ≤ b, of ``n_squares`` per
    side, and inside a square over its rows then columns: rows (t1) and columns (t2),
    (n_tiles, size) each, and which slots are pairs (False on the padding)."""

    size: int
    side: int
    n_squares: int
    rows: Int[np.ndarray, "n_tiles T"]
    cols: Int[np.ndarray, "n_tiles T"]
    valid: Bool[np.ndarray, "n_tiles T"]


@dataclasses.dataclass(frozen=True, eq=False)
class BlockTiles:
    """Blocks of ``size`` × ``size`` frames on and above the diagonal: each tile's first row and
    column (``starts``), the first row and column it owns (``lows``), and whether it counts
    (``real``; False on the padding), (n_tiles, 2), (n_tiles, 2) and (n_tiles,)."""

    size: int
    starts: Int[np.ndarray, "n_tiles 2"]
    lows: Int[np.ndarray, "n_tiles 2"]
    real: Bool[np.ndarray, " n_tiles"]


@functools.lru_cache(maxsize=64)
def pair_tiles(n_frames: int, n_phi: int, tile_elements: int, n_shards: int = 1) -> PairTiles:
    """The pairs i < j of ``n_frames`` frames in squares of w × w frames, w = ⌈N/MAX_SQUARES⌉
    (smaller where a square would exceed a tile), in tiles of whole squares, about
    ``tile_elements`` / ``n_phi`` slots (at least 256, at most what the pairs need); the number of
    tiles is a multiple of ``n_shards``."""
    _check_tile_elements(tile_elements)
    target = max(256, tile_elements // n_phi)
    side = max(1, min(-(-n_frames // MAX_SQUARES), math.isqrt(target)))
    n_squares = -(-n_frames // side)
    n_real = n_squares * (n_squares + 1) // 2
    per_tile = max(1, min(target // side**2, -(-n_real // n_shards)))
    n_tiles = n_shards * max(1, math.ceil(n_real / (per_tile * n_shards)))
    size = per_tile * side**2
    k = np.arange(n_tiles * size)
    rows, cols, valid = _slot_pairs(np, k, n_frames, side, n_squares)
    shape = (n_tiles, size)
    return PairTiles(
        size,
        side,
        n_squares,
        rows.astype(np.int32).reshape(shape),
        cols.astype(np.int32).reshape(shape),
        valid.reshape(shape),
    )


def pair_indices(tiles: PairTiles, n_frames: int) -> tuple[Array, Array, Array]:
    """``tiles``' rows, columns and validity, computed on the device from the slots' running
    number: inside a compiled function they are a few integer operations instead of index arrays
    that XLA would embed in the executable (4.5 MB at 1000 frames, which made a fit's compilation
    0.5 s slower). Equal to ``tiles.rows``, ``tiles.cols``, ``tiles.valid`` (tests)."""
    k = jnp.arange(tiles.rows.size, dtype=jnp.int64).reshape(tiles.rows.shape)
    rows, cols, valid = _slot_pairs(jnp, k, n_frames, tiles.side, tiles.n_squares)
    return rows.astype(jnp.int32), cols.astype(jnp.int32), valid


def _slot_pairs(xp, k, n: int, side: int, n_squares: int):
    """The frames (i, j) of slot k and whether it is a pair i < j < N (NumPy or jax.numpy).
    Slot k is position p = k mod w² of square q = k div w², the q-th square (a, b), a ≤ b, in
    row-major order; i = a·w + p div w, j = b·w + p mod w (clipped to the last frame; the
    padding squares past the last are (0, 0))."""
    q, p = k // side**2, k % side**2
    n_real = n_squares * (n_squares + 1) // 2
    real = q < n_real
    q = xp.where(real, q, 0)
    # squares a ≤ b < n are the pairs a < b + 1 ≤ n of n + 1 "frames": invert the running
    # number of pairs, (a, a + 1) having number a(2n + 1 − a)/2
    m = n_squares + 1

    def first(a):
        return a * (2 * m - a - 1) // 2

    c = 2 * m - 1
    a = xp.floor((c - xp.sqrt((c * c - 8 * q).astype(np.float64))) / 2).astype(np.int64)
    a = xp.where(first(a + 1) <= q, a + 1, a)  # the square root may be off by a rounding
    a = xp.where(first(a) > q, a - 1, a)
    b = q - first(a) + a
    i = xp.where(real, a * side + p // side, 0)
    j = xp.where(real, b * side + p % side, 0)
    valid = real & (i < j) & (j < n)
    return xp.minimum(i, n - 1), xp.minimum(j, n - 1), valid


@functools.lru_cache(maxsize=64)
def block_tiles(
    n_frames: int, n_phi: int, tile_elements: int, n_shards: int = 1, min_blocks: int = 1
) -> BlockTiles:
    """Blocks of B × B frames on and above the diagonal, n_phi·B² ≤ ``tile_elements`` (B ≥ 1)
    and at least ``min_blocks`` blocks along the frames (where B ≥ 1 allows), with B adjusted down
    so that ceil(N/B) blocks cover the frames with the least overlap; the number of tiles is a
    multiple of ``n_shards``."""
    _check_tile_elements(tile_elements)
    widest = max(
        1, min(n_frames, math.isqrt(tile_elements // n_phi), -(-n_frames // max(1, min_blocks)))
    )
    n_blocks = math.ceil(n_frames / widest)
    size = math.ceil(n_frames / n_blocks)
    lows = np.arange(n_blocks) * size
    first = np.minimum(lows, n_frames - size)  # the last block ends at the last frame
    bi, bj = np.triu_indices(n_blocks)
    n_real = bi.size
    pad = -n_real % n_shards
    starts = np.stack([first[bi], first[bj]], axis=1)
    owned = np.stack([lows[bi], lows[bj]], axis=1)
    padding = np.zeros((pad, 2), np.int64)
    return BlockTiles(
        size,
        np.concatenate([starts, padding]).astype(np.int32),
        np.concatenate([owned, padding]).astype(np.int32),
        np.concatenate([np.ones(n_real, bool), np.zeros(pad, bool)]),
    )


def _check_tile_elements(tile_elements: int) -> None:
    if not isinstance(tile_elements, int) or tile_elements < 1:
        raise ValueError(f"tile_elements must be a positive integer; got {tile_elements!r}.")


def block_masks(
    start: Int[Array, " 2"], low: Int[Array, " 2"], size: int
) -> tuple[Bool[Array, "B B"], Bool[Array, "B B"]]:
    """Which elements of a block (rows × columns) count, and which of its mirror (transposed):
    the pairs the block owns with t1 ≤ t2 (the diagonal once) and with t1 < t2. Off the diagonal
    both are all True but for the overlap of the last block row or column."""
    offsets = jnp.arange(size, dtype=start.dtype)
    i, j = start[0] + offsets, start[1] + offsets
    owned = (i >= low[0])[:, None] & (j >= low[1])[None, :]
    return owned & (i[:, None] <= j[None, :]), owned & (i[:, None] < j[None, :])


def sum_over_tiles(
    fn: Callable[..., Any],
    xs: Any,
    consts: Any,
    n_shards: int,
    *,
    init: Any = None,
    add: Callable[[Any, Any, Any], Any] | None = None,
    ahead: Callable[[Any, Any], Any] | None = None,
) -> Any:
    """Σ over the tiles of ``fn(x, consts)`` (a pytree of arrays), x the tiles' slices of ``xs``.

    Args:
        fn: the per-tile function, pure in its arguments (no traced values from outside: with
            several devices it runs inside `jax.shard_map`). With ``ahead`` it is called as
            ``fn(x, consts, prepared)``.
        xs: a pytree of arrays whose leading axis runs over the tiles (a multiple of
            ``n_shards``): the schedule, and any data already cut into tiles.
        consts: a pytree of arrays that every tile reads (replicated on every device).
        n_shards: the number of local devices the tiles are split between (1: a plain scan).
        init: the accumulator's zero (default: zeros shaped like ``fn``'s output).
        add: ``add(acc, part, x)`` adds a tile's part (default: leaf by leaf); e.g. framewise
            sums placed at the tile's frames.
        ahead: ``ahead(x, consts)`` prepares what ``fn`` needs of a tile one scan step before it
            runs (compact copies of its data), so that the read of the next tile is not inside the
            arithmetic of this one.
    """
    if add is None:
        add = _add_leaves

    if init is None:
        first = jax.tree.map(lambda a: a[0], xs)
        if ahead is None:
            shape = jax.eval_shape(fn, first, consts)
        else:
            shape = jax.eval_shape(lambda x: fn(x, consts, ahead(x, consts)), first)
        init = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shape)

    def local(xs, consts, init, varying: bool):
        if varying:  # per-device partial sums; every operand alike (see `jax.lax.pcast`)
            init = jax.tree.map(lambda z: jax.lax.pcast(z, TILE_AXIS, to="varying"), init)
            consts = jax.tree.map(lambda v: jax.lax.pcast(v, TILE_AXIS, to="varying"), consts)

        if ahead is None:

            def plain(acc, tile):
                return add(acc, fn(tile, consts), tile), None

            return jax.lax.scan(plain, init, xs)[0]
        prepare = ahead

        def step(carry, x):
            acc, prepared = carry
            tile, following = x
            part = fn(tile, consts, prepared)
            return (add(acc, part, tile), prepare(following, consts)), None

        # the next tile of each step: its schedule entry (with `ahead`, xs is only the schedule)
        following = jax.tree.map(lambda a: jnp.roll(a, -1, axis=0), xs)
        first = jax.tree.map(lambda a: a[0], xs)
        return jax.lax.scan(step, (init, prepare(first, consts)), (xs, following))[0][0]

    if n_shards == 1:
        return local(xs, consts, init, False)

    zeros = jax.tree.map(jnp.zeros_like, init)

    def sharded(xs, consts, zeros):
        partial = local(xs, consts, zeros, True)
        return jax.tree.map(lambda a: jax.lax.psum(a, TILE_AXIS), partial)

    spec = jax.sharding.PartitionSpec
    summed = jax.shard_map(
        sharded,
        mesh=mesh(n_shards),
        in_specs=(spec(TILE_AXIS), spec(), spec()),
        out_specs=spec(),
    )(xs, consts, zeros)
    return jax.tree.map(jnp.add, init, summed)


def _add_leaves(acc, part, _):
    return jax.tree.map(jnp.add, acc, part)
