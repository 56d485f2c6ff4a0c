"""χ² over the full (n_phi, N, N) grid without forming the model array, and its exact derivatives.

The grid is cut into square tiles of B × B frames. g2 is symmetric in (t1, t2), so only tiles on or
above the diagonal are evaluated: a tile above it is compared with the data there and, transposed,
with the data in its mirror tile below (data and σ need not be symmetric).

Three things make a tile cheap:
- **Angle addition.** The shear phase is Φ = κ_k·M^γ with M^γ = |ΔC| + e and
  e = 1e-12/(M^γ + |ΔC|) (SPEC §2.3). sin(κ_k ΔC) and cos(κ_k ΔC) follow from per-frame tables of
  sin(κ_k C_i) and cos(κ_k C_i) by angle addition (four multiplications per element instead of a
  polynomial), and e enters to second order. The tables are exact to an ulp: κ_k C_i is split into
  an exactly representable head and a tail first. sin Φ is then right to a few 1e-16 absolute,
  i.e. eps/Φ relative to sinc, so below |Φ| = `SERIES_BELOW` Taylor series are used instead. The
  neglected (κe)³/6 stays below 2e-16 when |κ| ≤ `KAPPA_ANGLE_ADDITION` or when every pair of the
  tile is `GAP`·√|κ| apart in C^γ; other tiles, and phases beyond `homodyne._trig`'s range, use
  `sinc_and_derivative` on Φ itself.
- **Sums as matrix–vector products.** XLA runs these vectorised on the CPU. A fused reduction of the
  tile runs the model's arithmetic one element at a time (XLA's emitter) or one operation at a
  time over the whole tile (YNNPACK, which takes plain reductions in recent jaxlibs): both slower.
- **The gradient in one pass.** χ² depends on the parameters only through the per-frame integrals
  C^D, C^γ, through κ_k = s·cos(φ0 − φ_k) and through a = ½q²Δ. Its derivative with respect to C_i
  is a row sum minus a column sum of per-pair factors, which are sums over the angles; so a single
  pass, whose per-element work ends in one multi-output sum over the angles (the model is
  computed once), gives the derivatives with respect to a, C^D, C^γ, s and φ0 (`jax.custom_jvp`;
  autodiff carries them on to the parameters). Derivatives with respect to contrast, offset and
  the angles need per-angle sums and take a second pass, data and σ a third; each runs only when
  that derivative is asked for. The straight-through floor and the exponent clip are
  differentiated as in `homodyne._kernels`. The derivative passes need the data only as
  Σ data/σ² and Σ 1/σ² over a tile and its mirror; each scan step forms these for the next tile,
  so that the sum over the angles, innermost, reads a compact block instead of striding through
  the whole data array (a far tile 0.53 instead of 1.0 ms). χ² itself comes from the value pass,
  which `jax.grad` drops.

With several local devices the tiles are split between them (`jax.shard_map`, the data replicated,
partial sums added by `psum`), as fits split theirs.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero
from jaxtyping import Array, Float

from . import _kernels as k
from ._pairs import PairTerms, Shear, g1_squared_on_pairs, pair_terms, profiles
from ._params import LaminarFlowParams, Params
from ._sharding import device_count
from ._tiles import BLOCK_TILE_ELEMENTS, MIN_BLOCKS, block_masks, block_tiles, sum_over_tiles
from ._trig import FAST_TRIG_LIMIT, _horner, sin_cos, sinc_and_derivative

SERIES_BELOW = 0.1  # |Φ| below which sinc and sinc' use their Taylor series
KAPPA_ANGLE_ADDITION = 1000.0  # (κe)³/6 < 2e-16 for every Φ ≥ SERIES_BELOW when |κ| ≤ this
GAP = 1.4e-5  # … and for any κ on tiles whose pairs are all ≥ GAP·√|κ| apart in C^γ

# Taylor coefficients in Φ² of sinc Φ and of sinc'(Φ)/Φ: truncation below 3e-17 for |Φ| < 0.1
_SINC = tuple((-1) ** n / math.factorial(2 * n + 1) for n in range(5))
_DSINC = tuple((-1) ** (n + 1) * 2 * (n + 1) / math.factorial(2 * n + 3) for n in range(5))


def _split(x: Float[Array, "*s"]) -> tuple[Float[Array, "*s"], Float[Array, "*s"]]:
    """x = head + tail exactly, head with 26 significant bits (a product of two heads is exact)."""
    bits = jax.lax.bitcast_convert_type(jax.lax.stop_gradient(x), jnp.uint64)
    head = jax.lax.bitcast_convert_type(bits & np.uint64(0xFFFFFFFFF8000000), x.dtype)
    return head, x - head


def phase_tables(
    kappa: Float[Array, " n_phi"], c_g: Float[Array, " N"]
) -> tuple[Float[Array, "n_phi N"], Float[Array, "n_phi N"]]:
    """sin(κ_k C_i) and cos(κ_k C_i) of the exact product κ_k·C_i (not of its rounding)."""
    k_head, k_tail = _split(kappa)
    c_head, c_tail = _split(c_g)
    big = k_head[:, None] * c_head[None, :]  # exact
    small = k_head[:, None] * c_tail[None, :] + k_tail[:, None] * c_g[None, :]
    theta = big + small
    rest = (big - theta) + small  # Fast2Sum: theta + rest = big + small exactly
    sin, cos = sin_cos(theta)
    return sin + rest * cos, cos - rest * sin


def _sum_last(x: Array) -> Array:
    """Sum over the last axis as a matrix–vector product."""
    return x @ jnp.ones(x.shape[-1], x.dtype)


def _sum_first(x: Array) -> Array:
    return jnp.ones(x.shape[0], x.dtype) @ x


def _total(x: Array) -> Array:
    return jnp.sum(_sum_last(x.reshape(-1, x.shape[-1])))


def _multi_sum(arrays: tuple[Array, ...], axes: tuple[int, ...]) -> tuple[Array, ...]:
    """Sums of several arrays of one shape over ``axes`` in a single reduction, so that what they
    share is computed once (separate sums each recompute it)."""
    zeros = tuple(jnp.zeros((), x.dtype) for x in arrays)
    return tuple(
        jax.lax.reduce(
            arrays, zeros, lambda p, q: tuple(u + v for u, v in zip(p, q, strict=True)), axes
        )
    )


# --- the shear factor on a tile, three ways ---------------------------------------------------


def _sinc_far(kappa, tables, pair, m_g):
    """(sinc Φ, sinc' Φ) by angle addition, for |Φ| ≥ SERIES_BELOW."""
    sin_r, cos_r, sin_c, cos_c = tables
    sd = sin_c[:, None, :] * cos_r[:, :, None] - cos_c[:, None, :] * sin_r[:, :, None]
    cd = cos_c[:, None, :] * cos_r[:, :, None] + sin_c[:, None, :] * sin_r[:, :, None]
    p1, p2, p3, p4, inv_m = pair
    k_inv = jnp.where(kappa == 0, 0.0, 1 / jnp.where(kappa == 0, 1.0, kappa))[:, None, None]
    kap = kappa[:, None, None]
    # with A = κΔC and h = |κ|e: sin(|A| + h) ≈ sin|A|(1 − h²/2) + cos|A|·h, over |κ|M
    s = sd * p1 * (k_inv - kap * p3) + cd * p2
    cos = cd * (1.0 - kap * kap * p3) - kap * sd * p4
    return s, (cos - s) * (k_inv * inv_m)


def _sinc_near(kappa, tables, pair, m_g):
    """As `_sinc_far`, with the Taylor series where |Φ| < SERIES_BELOW."""
    s, ds = _sinc_far(kappa, tables, pair, m_g)
    phase = kappa[:, None, None] * m_g
    x2 = phase * phase
    small = jnp.abs(phase) < SERIES_BELOW
    return jnp.where(small, _horner(_SINC, x2), s), jnp.where(
        small, phase * _horner(_DSINC, x2), ds
    )


def _sinc_exact(kappa, tables, pair, m_g):
    return sinc_and_derivative(kappa[:, None, None] * m_g)


def _branch(kappa_info, cg_r, cg_c) -> Array:
    """Which way to compute sinc on a tile: 0 angle addition, 1 the same with Taylor series near
    Φ = 0, 2 from Φ itself (see the module docstring)."""
    _, kappa_min, kappa_max = kappa_info
    # C^γ never decreases along the frames, so the tile's closest pair is at a corner
    gap = jnp.maximum(cg_c[0] - cg_r[-1], 0.0)
    closest = jnp.sqrt(gap * gap + k.PAIR_EPSILON)
    safe = (kappa_max <= KAPPA_ANGLE_ADDITION) | (gap >= GAP * jnp.sqrt(kappa_max))
    safe &= kappa_max * jnp.maximum(jnp.abs(cg_r[-1]), jnp.abs(cg_c[-1])) < FAST_TRIG_LIMIT
    return jnp.where(safe, jnp.where(kappa_min * closest < SERIES_BELOW, 1, 0), 2)


def _shear_on_tile(kappa, rows, cols, method) -> Shear:
    """sinc Φ and sinc' Φ on a tile by ``method``, with ΔC^γ = C_row − C_col and M^γ."""
    _, cg_r, sin_r, cos_r = rows
    _, cg_c, sin_c, cos_c = cols
    delta_g = cg_c[None, :] - cg_r[:, None]
    m_g = jnp.sqrt(delta_g * delta_g + k.PAIR_EPSILON)
    inv_m = 1 / m_g
    e = k.PAIR_EPSILON / (m_g + jnp.abs(delta_g))  # M − |ΔC| without cancellation
    sign = jnp.sign(delta_g)
    pair = (sign * inv_m, e * inv_m, 0.5 * e * e, sign * e, inv_m)
    sinc, dsinc = method(kappa, (sin_r, cos_r, sin_c, cos_c), pair, m_g)
    return sinc, dsinc, -delta_g, m_g


METHODS = (_sinc_far, _sinc_near, _sinc_exact)


# --- one tile ---------------------------------------------------------------------------------


def _tile_by(method, a, shear, rows, cols, contrast, offset, blocks, mode, coefficients=None):
    """One tile of pairs (rows × cols) and its mirror below the diagonal.

    ``rows``/``cols``: (C^D, C^γ, sin table, cos table) there (the last three None in static
    mode); ``shear``: (κ, min |κ|, max |κ|, cos(φ0 − φ), ∂κ/∂φ0, s) or None. ``mode`` and
    ``blocks``:
    - "value": χ²; ``blocks`` = ((data, 1/σ) of the tile, the same of its mirror tile transposed),
      1/σ zero where the tile does not own the pair (`homodyne._tiles.block_masks`);
    - "sums": per angle [Σw², Σw²x, Σw²x², Σw·r, Σwx·r, Σr²], x = g1², w = 1/σ,
      r = w·(data − offset − contrast·x), over the tile's pairs t1 < t2 only: ``blocks`` =
      ((data, w), None) (see `homodyne._likelihood`);
    - "pairs": the derivatives of Σ_pairs F(x) with respect to a, C^D and C^γ (at rows and at
      cols), s, φ0, for any F whose derivative is ∂F/∂x = A_k·Σ data/σ² + (B_k + C_k·x)·Σ 1/σ²
      on angle k's pair (``coefficients`` = (A, B, C), (n_phi,) each): χ² has A = −2c,
      B = 2c·b, C = 2c²;
    - "angles": the derivatives of χ² with respect to contrast, offset and κ;
      for these two, ``blocks`` = (Σ data/σ², Σ 1/σ²) over the tile and its mirror (`_combined`).
    """
    n_phi = contrast.shape[0]
    if shear is None:
        at_i, at_j, tile_shear = (
            (rows[0][:, None], None, None),
            (cols[0][None, :], None, None),
            None,
        )
    else:
        at_i = (rows[0][:, None], rows[1][:, None], shear[0])
        at_j = (cols[0][None, :], cols[1][None, :], shear[0])
        tile_shear = _shear_on_tile(shear[0], rows, cols, method)
    t = pair_terms(a, n_phi, at_i, at_j, shear=tile_shear)
    g1 = t.g1  # (the floor's rule matters for second derivatives)
    x = g1 * g1
    model = offset[:, None, None] + contrast[:, None, None] * x
    if mode == "value":
        up, down = blocks
        res = (up[0] - model) * up[1]
        res_down = (down[0] - model) * down[1]
        return {"value": _total(res * res + res_down * res_down)}
    if mode == "sums":
        d, w = blocks[0]
        w = jnp.broadcast_to(w, x.shape)
        wx = w * x
        r = (d - model) * w
        parts = (w * w, w * wx, wx * wx, w * r, wx * r, r * r)
        return {"sums": jnp.stack(_multi_sum(parts, (1, 2)), -1)}

    data_sum, weight = blocks
    if mode == "angles":  # ∂χ²/∂model = −2r, r = Σ (data − model)/σ² over the tile and its mirror
        r = data_sum - model * weight
    else:  # ∂F/∂x, then ∂F/∂g1_u (the floor passes the derivative of g1_u straight through)
        assert coefficients is not None
        c_a, c_b, c_c = (v[:, None, None] for v in coefficients)
        q = 2 * (c_a * data_sum + (c_b + c_c * x) * weight) * g1
    per_bin = jnp.ndim(a) > 0  # q per bin: g1_d has the angle axis, summed after the bin's a
    if shear is None or t.sinc is None or t.dsinc is None or t.m_g is None or t.delta_g is None:
        if mode == "angles":
            sums = _multi_sum((r, r * x), (1, 2))
            return {"offset": -2 * sums[0], "contrast": -2 * sums[1]}
        return _diffusion_sums(a, q if per_bin else jnp.sum(q, axis=0), t)

    sinc, m_g = t.sinc, t.m_g
    assert t.g1_d is not None
    g1_d = t.g1_d if per_bin else t.g1_d[None]
    if mode == "angles":
        r_x = (-4 * contrast)[:, None, None] * r * g1  # ∂χ²/∂g1_u
        v = r_x * g1_d * 2 * sinc * t.dsinc  # ∂χ²/∂Φ
        sums = _multi_sum((r, r * x, v * m_g[None]), (1, 2))
        return {"offset": -2 * sums[0], "contrast": -2 * sums[1], "kappa": sums[2]}
    v = q * g1_d * 2 * sinc * t.dsinc  # ∂F/∂Φ
    cos_k, lam_k = shear[3][:, None, None], shear[4][:, None, None]
    if per_bin:  # s is per bin too: its sums are per angle below, not over the angles here
        along_s = None
        along_phi0 = _multi_sum((v * lam_k,), (0,))[0]
        along_d = q * sinc * sinc
    else:
        along_d, along_s, along_phi0 = _multi_sum((q * sinc * sinc, v * cos_k, v * lam_k), (0,))
    out = _diffusion_sums(a, along_d, t)
    # ∂Φ_k = κ_k ∂M + M ∂κ_k and κ_k = s·cos(φ0 − φ_k): Σ_k κ_k ∂χ²/∂Φ_k = s·along_s
    if along_s is None:  # s per bin (q per bin): Σ_k κ_k ∂F/∂Φ_k, ∂F/∂s_k per bin
        along_kappa = _multi_sum((v * shear[0][:, None, None],), (0,))[0]
        kg = along_kappa * (t.delta_g / m_g)
        out["s"] = _multi_sum((v * cos_k * m_g[None],), (1, 2))[0]
    else:
        kg = shear[5] * along_s * (t.delta_g / m_g)  # ∂χ²/∂ΔC^γ
        out["s"] = _total(along_s * m_g)
    out["c_g"] = (_sum_last(kg), -_sum_first(kg))
    out["phi0"] = _total(along_phi0 * m_g)
    return out


def _diffusion_sums(a, along_d, t: PairTerms) -> dict:
    """The derivatives of χ² (or F) with respect to a and C^D (ΔC^D = C_row − C_col) from the
    per-pair sum over the angles of ∂χ²/∂g1_diff; with ``a`` per bin (n_phi,), from its
    per-angle values (n_phi, B, B), and the derivative with respect to each bin's a."""
    assert t.g1_d_live is not None and t.delta_d is not None and t.m_d is not None
    live = along_d * t.g1_d_live  # the clip passes nothing
    if jnp.ndim(a) > 0:
        kd = jnp.sum((-a)[:, None, None] * live, axis=0) * (t.delta_d / t.m_d)
        return {"a": -jnp.sum(live * t.m_d, axis=(1, 2)), "c_d": (_sum_last(kd), -_sum_first(kd))}
    kd = (-a) * live * (t.delta_d / t.m_d)  # ∂χ²/∂ΔC^D
    return {"a": -_total(live * t.m_d), "c_d": (_sum_last(kd), -_sum_first(kd))}


def _block(x: Array, r, c, n_r: int, n_c: int) -> Array:
    """The (·, n_r, n_c) block of a (·, N or 1, N or 1) array at rows r and columns c; axes of
    length 1 stay."""
    shape = (x.shape[0], n_r if x.shape[1] > 1 else 1, n_c if x.shape[2] > 1 else 1)
    zero = jnp.zeros((), jnp.int32)
    start = (zero, r if x.shape[1] > 1 else zero, c if x.shape[2] > 1 else zero)
    return jax.lax.dynamic_slice(x, start, shape)


def _pair_blocks(x: Array, r, c, size: int) -> tuple[Array, Array]:
    """The block of ``x`` at (r, c) and the transposed block at (c, r)."""
    return _block(x, r, c, size, size), _block(x, c, r, size, size).swapaxes(1, 2)


def _weights(sigma: Array, tile, size: int, power: int) -> tuple[Array, Array]:
    """1/σ^power of a tile and of its transposed mirror, 0 on pairs the tile does not own."""
    start, low, _ = tile
    s_up, s_down = _pair_blocks(sigma, start[0], start[1], size)
    up, down = block_masks(start, low, size)
    w_up, w_down = 1 / s_up, 1 / s_down
    if power == 2:
        w_up, w_down = w_up * w_up, w_down * w_down
    return jnp.where(up, w_up, 0.0), jnp.where(down, w_down, 0.0)


def _combined(data: Array, sigma: Array, tile, size: int, upper=None) -> tuple[Array, Array]:
    """(Σ data/σ², Σ 1/σ²) over the pairs a tile owns and their mirrors: all the derivative passes
    need of the data, since Σ (data − model)/σ² = Σ data/σ² − model·Σ 1/σ². With ``upper``
    (`_upper_block`'s frames used), over its pairs t1 < t2 only."""
    if upper is not None:
        d, w = _upper_block(data, sigma, tile, size, upper)
        return d * w * w, w * w
    start = tile[0]
    d_up, d_down = _pair_blocks(data, start[0], start[1], size)
    w_up, w_down = _weights(sigma, tile, size, 2)
    return d_up * w_up + d_down * w_down, w_up + w_down


def _upper_block(data: Array, sigma: Array, tile, size: int, frames_used) -> tuple[Array, Array]:
    """Data (float64) and 1/σ of the pairs t1 < t2 a tile owns (a fit's residuals: each pair once,
    no diagonal), 1/σ and data 0 elsewhere and on pairs that touch an unused frame
    (``frames_used`` (N,) bool), so that NaN there does no harm."""
    start, low, _ = tile
    used_r = jax.lax.dynamic_slice_in_dim(frames_used, start[0], size)
    used_c = jax.lax.dynamic_slice_in_dim(frames_used, start[1], size)
    owned = block_masks(start, low, size)[1] & used_r[:, None] & used_c[None, :]  # t1 < t2
    d = _block(data, start[0], start[1], size, size).astype(jnp.float64)
    w = 1 / _block(sigma, start[0], start[1], size, size)
    return jnp.where(owned, d, 0.0), jnp.where(owned, w, 0.0)


# --- the walk over the tiles ------------------------------------------------------------------


def _walk(
    a,
    c_d,
    shear_in,
    contrast,
    offset,
    data,
    sigma,
    mode,
    tile_elements,
    tangent=None,
    upper=None,
    coefficients=None,
):
    """Sums over the blocks on and above the diagonal, each with its mirror
    (`homodyne._tiles.block_tiles`), split between the local devices. Returns a dict of totals
    (framewise derivatives as (N,) vectors). With ``tangent`` = (data tangent, σ tangent), returns
    instead the derivative of χ² along it. With ``upper`` (the frames used, (N,) bool), over a
    fit's pairs only (t1 < t2 of used frames, each once; `_upper_block`); the
    "pairs" mode takes its ``coefficients`` (see `_tile_by`)."""
    n, n_phi = c_d.shape[0], contrast.shape[0]
    n_devices = device_count()
    if tile_elements is None:  # the default: cache-sized blocks, and not too few of them
        tiles = block_tiles(n, n_phi, BLOCK_TILE_ELEMENTS, n_devices, MIN_BLOCKS)
    else:
        tiles = block_tiles(n, n_phi, tile_elements, n_devices)
    size = tiles.size
    if shear_in is None:
        frames, shear = (c_d,), None
    else:
        c_g, s, phi0, phi = shear_in
        angle = jnp.deg2rad(phi0 - phi)
        cos_k = jnp.cos(angle)
        kappa = s * cos_k
        frames = (c_d, c_g, *phase_tables(kappa, c_g))
        kabs = jnp.abs(kappa)
        lam = -s * jnp.sin(angle) * (jnp.pi / 180)  # ∂κ/∂φ0
        shear = (kappa, jnp.min(kabs), jnp.max(kabs), cos_k, lam, s)

    consts = (a, frames, shear, contrast, offset, data, sigma, tangent, upper, coefficients)
    xs = (jnp.asarray(tiles.starts), jnp.asarray(tiles.lows), jnp.asarray(tiles.real))
    first = jax.tree.map(lambda v: v[0], xs)
    template = jax.eval_shape(lambda: _one(consts, first, size, mode))
    total = {
        key: jnp.zeros((n,), c_d.dtype) if isinstance(v, tuple) else jnp.zeros(v.shape, v.dtype)
        for key, v in template.items()
    }

    def add(total, part, tile):
        start, _, real = tile
        part = jax.tree.map(lambda v: jnp.where(real, v, 0.0), part)  # padding counts zero times
        return _add(total, part, start[0], start[1])

    # the derivative passes reduce over the angles innermost; reading the data strided through
    # the whole (n_phi, N, N) array there stalls them, so each scan step combines the next tile's
    # data into a compact block (`_combined`) that the following step reads
    if mode != "value" and tangent is None:
        return sum_over_tiles(
            lambda tile, consts, combined: _one(consts, tile, size, mode, combined),
            xs,
            consts,
            n_devices,
            init=total,
            add=add,
            ahead=lambda tile, consts: _combined(consts[5], consts[6], tile, size, consts[8]),
        )
    return sum_over_tiles(
        lambda tile, consts: _one(consts, tile, size, mode),
        xs,
        consts,
        n_devices,
        init=total,
        add=add,
    )


def _add(total: dict, part: dict, r0, c0) -> dict:
    """``total`` plus a tile's sums; framewise ones, (at rows, at cols), go in at r0 and c0."""
    new = dict(total)
    for key, v in part.items():
        if isinstance(v, tuple):
            for piece, start in zip(v, (r0, c0), strict=True):
                old = jax.lax.dynamic_slice_in_dim(new[key], start, piece.shape[0])
                new[key] = jax.lax.dynamic_update_slice_in_dim(new[key], old + piece, start, 0)
        else:
            new[key] = new[key] + v
    return new


def _one(consts, tile, size: int, mode: str, combined=None) -> dict:
    """The sums of one tile (``tile`` = (start, low, real) of `homodyne._tiles.BlockTiles`) and of
    its mirror; a pure function of ``consts`` (see `_walk`). The derivative passes take the tile's
    `_combined` data if given (else they combine it here)."""
    a, frames, shear, contrast, offset, data, sigma, tangent, upper, coefficients = consts
    start = tile[0]
    r0, c0 = start[0], start[1]

    def at(first):
        """The profiles of frames first … first + size − 1."""
        sliced = [jax.lax.dynamic_slice_in_dim(f, first, size, axis=-1) for f in frames]
        return tuple(sliced) + (None,) * (4 - len(sliced))

    rows, cols = at(r0), at(c0)

    def blocks():
        """(data, 1/σ) of the tile and of its mirror tile (transposed), 1/σ 0 where not owned."""
        d_up, d_down = _pair_blocks(data, r0, c0, size)
        w_up, w_down = _weights(sigma, tile, size, 1)
        return (d_up, w_up), (d_down, w_down)

    def by(method):
        if mode == "sums":
            blocks_ = (_upper_block(data, sigma, tile, size, upper), None)
        elif mode == "value":
            blocks_ = blocks()
        elif combined is None:
            blocks_ = _combined(data, sigma, tile, size, upper)
        else:
            blocks_ = combined
        return _tile_by(method, a, shear, rows, cols, contrast, offset, blocks_, mode, coefficients)

    if tangent is None:
        if shear is None or mode == "angles":  # one method suffices
            return by(_sinc_exact)
        # the cheapest method that is exact on this tile; the blocks are read inside the switch
        # (cut outside, they would be copied into its operands)
        index = _branch(shear[:3], rows[1], cols[1])
        return jax.lax.switch(index, [lambda m=m: by(m) for m in METHODS])
    up, down = blocks()
    dd, ds = tangent
    dd_up, dd_down = _pair_blocks(dd, r0, c0, size)
    ds_up, ds_down = _pair_blocks(ds, r0, c0, size)
    model = _tile_model(a, shear, rows, cols, contrast, offset)

    # d(((d − m)/σ)²) = 2 res (dd − res·dσ)/σ with res = (d − m)/σ
    def term(blocks, d_block, s_block):
        res = (blocks[0] - model) * blocks[1]
        return 2 * res * (d_block - res * s_block) * blocks[1]

    return {"value": _total(term(up, dd_up, ds_up) + term(down, dd_down, ds_down))}


def _tile_model(a, shear, rows, cols, contrast, offset):
    """g2 on a tile by the plain kernels (for derivatives with respect to the data only)."""
    kappa = None if shear is None else shear[0]
    at_i = (rows[0][:, None], None if rows[1] is None else rows[1][:, None], kappa)
    at_j = (cols[0][None, :], None if cols[1] is None else cols[1][None, :], kappa)
    x = g1_squared_on_pairs(a, contrast.shape[0], at_i, at_j)
    return offset[:, None, None] + contrast[:, None, None] * x


# --- χ² with its derivative rule --------------------------------------------------------------


@functools.partial(jax.custom_jvp, nondiff_argnums=(7,))
def chi2_from_profiles(a, c_d, shear, contrast, offset, data, sigma, tile_elements):
    """χ² from ½q²Δ, the cumulative integrals and the shear inputs (C^γ, s, φ0, φ) or None;
    data and σ 3-D and broadcastable to (n_phi, N, N); blocks of about ``tile_elements`` angles ×
    pairs."""
    return _walk(a, c_d, shear, contrast, offset, data, sigma, "value", tile_elements)["value"]


def _is_zero(t) -> bool:
    return t is None or isinstance(t, SymbolicZero)


def _chi2_jvp(tile_elements, primals, tangents):
    a, c_d, shear, contrast, offset, data, sigma = primals
    da, dc_d, dshear, dcontrast, doffset, ddata, dsigma = tangents
    walk = functools.partial(
        _walk, a, c_d, shear, contrast, offset, data, sigma, tile_elements=tile_elements
    )
    # the derivative passes do not compute χ² itself (under jax.grad this walk is dropped)
    value = walk("value")["value"]
    # ∂χ²/∂x = −2c·(Σd/σ² − (b + c·x)·Σ1/σ²)
    sums = walk("pairs", coefficients=(-2 * contrast, 2 * contrast * offset, 2 * contrast**2))
    terms = [(sums["a"], da), (sums["c_d"], dc_d)]
    if shear is not None:
        dc_g, ds, dphi0, dphi = dshear
        terms += [(sums["c_g"], dc_g), (sums["s"], ds), (sums["phi0"], dphi0)]
    else:
        dphi = None
    if not (_is_zero(dcontrast) and _is_zero(doffset) and _is_zero(dphi)):
        per_angle = walk("angles")
        terms += [(per_angle["contrast"], dcontrast), (per_angle["offset"], doffset)]
        if shear is not None:
            _, s, phi0, phi = shear
            # ∂κ_k/∂φ_k = s·sin(φ0 − φ_k)·π/180
            dkappa_dphi = s * jnp.sin(jnp.deg2rad(phi0 - phi)) * (jnp.pi / 180)
            terms.append((per_angle["kappa"] * dkappa_dphi, dphi))
    out = sum((jnp.sum(g * t) for g, t in terms if not _is_zero(t)), jnp.zeros_like(value))
    if not (_is_zero(ddata) and _is_zero(dsigma)):
        dd = jnp.zeros_like(data[:, :1, :1]) if _is_zero(ddata) else ddata
        dsg = jnp.zeros_like(sigma[:, :1, :1]) if _is_zero(dsigma) else dsigma
        out = out + walk("value", tangent=(dd, dsg))["value"]
    return value, out


chi2_from_profiles.defjvp(_chi2_jvp, symbolic_zeros=True)


def chi2_in_tiles(
    wavevector_q_squared_half_dt: Float[Array, ""],
    sinc_prefactor: Float[Array, ""],
    t: Float[Array, " N"],
    phi: Float[Array, " n_phi"],
    p: Params,
    contrast: Float[Array, " n_phi"],
    offset: Float[Array, " n_phi"],
    data: Float[Array, "n_phi N N"],
    sigma: Float[Array, "..."],
    tile_elements: int | None = None,
) -> Float[Array, ""]:
    """Σ ((data − g2)/σ)² over every angle and every (t1, t2), diagonal included; ``data`` and
    ``sigma`` are anything that broadcasts to (n_phi, N, N) (σ is never broadcast in memory).
    ``tile_elements``: angles × frames² per block of the walk (`homodyne._tiles.block_tiles`);
    default: `BLOCK_TILE_ELEMENTS`, with at least `MIN_BLOCKS` blocks along the frames."""
    c_d, c_g, _ = profiles(t, phi, sinc_prefactor, p)
    shear = None
    if isinstance(p, LaminarFlowParams) and c_g is not None:
        shear = (c_g, sinc_prefactor, p.phi0, phi)
    sigma, data = jnp.asarray(sigma), jnp.asarray(data)
    sigma = jnp.reshape(sigma, (1,) * (3 - sigma.ndim) + sigma.shape)
    data = jnp.reshape(data, (1,) * (3 - data.ndim) + data.shape)
    return chi2_from_profiles(
        wavevector_q_squared_half_dt, c_d, shear, contrast, offset, data, sigma, tile_elements
    )
