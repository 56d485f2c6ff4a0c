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

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero
from jaxtyping import Array, Float

from . import _kernels as k
from ._pairs import g1_squared_on_pairs, profiles
from ._params import LaminarFlowParams, Params
from ._sharding import TILE_AXIS, device_count, mesh
from ._trig import FAST_TRIG_LIMIT, _horner, sin_cos, sinc_and_derivative

TILE_ELEMENTS = 2**18  # angles × B × B per tile: 2 MB per float64 array
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


def _shear_on_tile(kappa, rows, cols, method):
    """sinc Φ and sinc' Φ on a tile by ``method``, with the per-pair M^γ, ΔC^γ = C_col − C_row
    and 1/M^γ."""
    _, cg_r, sin_r, cos_r = rows
    _, cg_c, sin_c, cos_c = cols
    delta_g = cg_c[None, :] - cg_r[:, None]
    m_g = jnp.sqrt(delta_g * delta_g + k.PAIR_EPSILON)
    inv_m = 1 / m_g
    e = k.PAIR_EPSILON / (m_g + jnp.abs(delta_g))  # M − |ΔC| without cancellation
    sign = jnp.sign(delta_g)
    pair = (sign * inv_m, e * inv_m, 0.5 * e * e, sign * e, inv_m)
    sinc, dsinc = method(kappa, (sin_r, cos_r, sin_c, cos_c), pair, m_g)
    return sinc, dsinc, m_g, delta_g, inv_m


METHODS = (_sinc_far, _sinc_near, _sinc_exact)


# --- one tile ---------------------------------------------------------------------------------


def _tile_by(method, a, shear, rows, cols, contrast, offset, blocks, mode):
    """One tile of pairs (rows × cols).

    ``rows``/``cols``: (C^D, C^γ, sin table, cos table) there (the last three None in static
    mode); ``shear``: (κ, min |κ|, max |κ|, cos(φ0 − φ), ∂κ/∂φ0, s) or None. ``mode`` and
    ``blocks``:
    - "value": χ²; ``blocks`` = ((data, 1/σ) of the tile, the same of its mirror tile transposed
      or None);
    - "pairs": the derivatives of χ² with respect to a, C^D and C^γ (at rows and at cols), s, φ0;
    - "angles": its derivatives with respect to contrast, offset and κ;
      for these two, ``blocks`` = (Σ data/σ², Σ 1/σ²) over the tile and its mirror (`_combined`).
    """
    n_phi = contrast.shape[0]
    cd_r, cd_c = rows[0], cols[0]
    delta_d = cd_r[:, None] - cd_c[None, :]  # ΔC^D = C_row − C_col
    m_d = jnp.sqrt(delta_d * delta_d + k.PAIR_EPSILON)
    exponent = -a * m_d
    g1_d = jnp.exp(jnp.clip(exponent, k.EXPONENT_CLIP, 0.0))
    tile_shear = None  # (sinc, sinc', M^γ, ΔC^γ, 1/M^γ) in laminar flow
    if shear is None:
        g1_u = jnp.broadcast_to(g1_d, (n_phi, *g1_d.shape))
    else:
        tile_shear = _shear_on_tile(shear[0], rows, cols, method)
        g1_u = g1_d[None] * tile_shear[0] ** 2
    g1 = k.straight_through_floor(g1_u, k.G1_FLOOR)  # (its rule matters for second derivatives)
    x = g1 * g1
    model = offset[:, None, None] + contrast[:, None, None] * x
    if mode == "value":
        up, down = blocks
        res = (up[0] - model) * up[1]
        chi2 = res * res
        if down is not None:
            res_down = (down[0] - model) * down[1]
            chi2 = chi2 + res_down * res_down
        return {"value": _total(chi2)}

    # ∂χ²/∂model = −2r, r = Σ (data − model)/σ² over the tile and its mirror
    data_sum, weight = blocks
    r = data_sum - model * weight
    # the floor passes the derivative of g1_u straight through
    q = (-4 * contrast)[:, None, None] * r * g1  # ∂χ²/∂g1_u
    if shear is None or tile_shear is None:
        if mode == "angles":
            sums = _multi_sum((r, r * x), (1, 2))
            return {"offset": -2 * sums[0], "contrast": -2 * sums[1]}
        return _diffusion_sums(a, jnp.sum(q, axis=0), g1_d, exponent, delta_d, m_d)

    sinc, dsinc, m_g, delta_g, inv_m = tile_shear
    v = q * g1_d[None] * 2 * sinc * dsinc  # ∂χ²/∂Φ
    if mode == "angles":
        sums = _multi_sum((r, r * x, v * m_g[None]), (1, 2))
        return {"offset": -2 * sums[0], "contrast": -2 * sums[1], "kappa": sums[2]}
    cos_k, lam_k = shear[3][:, None, None], shear[4][:, None, None]
    along_d, along_s, along_phi0 = _multi_sum((q * sinc * sinc, v * cos_k, v * lam_k), (0,))
    out = _diffusion_sums(a, along_d, g1_d, exponent, delta_d, m_d)
    # ∂Φ_k = κ_k ∂M + M ∂κ_k and κ_k = s·cos(φ0 − φ_k): Σ_k κ_k ∂χ²/∂Φ_k = s·along_s
    kg = shear[5] * along_s * (delta_g * inv_m)  # ∂χ²/∂ΔC^γ, ΔC^γ = C_col − C_row
    out["c_g"] = (-_sum_last(kg), _sum_first(kg))
    out["s"] = _total(along_s * m_g)
    out["phi0"] = _total(along_phi0 * m_g)
    return out


def _diffusion_sums(a, along_d, g1_d, exponent, delta_d, m_d) -> dict:
    """The derivatives of χ² with respect to a and C^D from the per-pair sum over the angles of
    ∂χ²/∂g1_diff."""
    live = jnp.where(exponent > k.EXPONENT_CLIP, along_d * g1_d, 0.0)  # the clip passes nothing
    kd = (-a) * live * (delta_d / m_d)  # ∂χ²/∂ΔC^D, ΔC^D = C_row − C_col
    return {"a": -_total(live * m_d), "c_d": (_sum_last(kd), -_sum_first(kd))}


def _block(x: Array, r, c, n_r: int, n_c: int) -> Array:
    """The (·, n_r, n_c) block of a (·, N or 1, N or 1) array at rows r and columns c; axes of
    length 1 stay."""
    shape = (x.shape[0], n_r if x.shape[1] > 1 else 1, n_c if x.shape[2] > 1 else 1)
    zero = jnp.zeros((), jnp.int32)
    start = (zero, r if x.shape[1] > 1 else zero, c if x.shape[2] > 1 else zero)
    return jax.lax.dynamic_slice(x, start, shape)


def _pair_blocks(x: Array, r, c, n_r: int, n_c: int, mirror: bool):
    """The block of ``x`` at (r, c) and, if ``mirror``, the transposed block at (c, r)."""
    up = _block(x, r, c, n_r, n_c)
    return up, _block(x, c, r, n_c, n_r).swapaxes(1, 2) if mirror else None


def _combined(data: Array, sigma: Array, r, c, n_r: int, n_c: int, mirror: bool):
    """(Σ data/σ², Σ 1/σ²) over the tile at (r, c) and, if ``mirror``, its transposed mirror: all
    the derivative passes need of the data, since Σ (data − model)/σ² = Σ data/σ² − model·Σ 1/σ²."""
    d_up, d_down = _pair_blocks(data, r, c, n_r, n_c, mirror)
    s_up, s_down = _pair_blocks(sigma, r, c, n_r, n_c, mirror)
    w_up = 1 / (s_up * s_up)
    if d_down is None or s_down is None:
        return d_up * w_up, w_up
    w_down = 1 / (s_down * s_down)
    return d_up * w_up + d_down * w_down, w_up + w_down


# --- the walk over the tiles ------------------------------------------------------------------


def _walk(a, c_d, shear_in, contrast, offset, data, sigma, mode, tangent=None):
    """Sums of every tile: tiles on the diagonal alone, tiles above it with their mirrors, and the
    columns and corner left over when B does not divide N. Returns a dict of totals (framewise
    derivatives as (N,) vectors). With ``tangent`` = (data tangent, σ tangent), returns instead
    the derivative of χ² along it."""
    n, n_phi = c_d.shape[0], contrast.shape[0]
    size = max(1, min(n, math.isqrt(TILE_ELEMENTS // n_phi)))
    n_blocks = n // size
    n_main = n_blocks * size
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

    consts = (a, frames, shear, contrast, offset, data, sigma, tangent)
    template = jax.eval_shape(lambda: _one(consts, 0, 0, min(size, n), min(size, n), False, mode))
    total = {
        key: jnp.zeros((n,), c_d.dtype) if isinstance(v, tuple) else jnp.zeros(v.shape, v.dtype)
        for key, v in template.items()
    }

    # the derivative passes reduce over the angles innermost; reading the data strided through
    # the whole (n_phi, N, N) array there stalls them, so each scan step combines the next tile's
    # data into a compact block (`_combined`) that the following step reads
    ahead = mode != "value" and tangent is None

    def tiles(consts, starts, weights, init, shape, mirror):
        """``init`` plus the sums of the tiles of ``shape`` at ``starts``, times ``weights`` if
        given."""
        data, sigma = consts[5], consts[6]
        n_r, n_c = shape

        def combine(start):
            return _combined(data, sigma, start[0], start[1], n_r, n_c, mirror) if ahead else None

        def step(carry, x):
            acc, tile = carry
            start, following, weight = x
            part = _one(consts, start[0], start[1], n_r, n_c, mirror, mode, tile)
            if weight is not None:
                part = jax.tree.map(lambda v: v * weight, part)
            return (_add(acc, part, start[0], start[1]), combine(following)), None

        xs = (starts, jnp.roll(starts, -1, axis=0), weights)
        return jax.lax.scan(step, (init, combine(starts[0])), xs)[0][0]

    def scan(total, starts, shape, mirror):
        """Add the tiles of ``shape`` at ``starts``; with several local devices they are split
        between them (`jax.shard_map`, data replicated, partial sums added by `psum`)."""
        n_devices = device_count()
        if starts.shape[0] == 0:
            return total
        if n_devices == 1:
            return tiles(consts, jnp.asarray(starts, jnp.int32), None, total, shape, mirror)
        # pad to a multiple of the devices with tiles at (0, 0) that count zero times
        pad = -starts.shape[0] % n_devices
        weights = np.concatenate([np.ones(starts.shape[0]), np.zeros(pad)])
        starts = np.concatenate([starts, np.zeros((pad, 2), starts.dtype)])

        def local(starts, weights, consts):
            # everything varying along the device axis, so that a switch turned into a select
            # (under vmap) finds its operands alike
            consts = jax.tree.map(lambda v: jax.lax.pcast(v, TILE_AXIS, to="varying"), consts)
            zeros = jax.tree.map(
                lambda z: jax.lax.pcast(jnp.zeros(z.shape, z.dtype), TILE_AXIS, to="varying"), total
            )
            partial = tiles(consts, starts, weights, zeros, shape, mirror)
            return jax.tree.map(lambda v: jax.lax.psum(v, TILE_AXIS), partial)

        spec = jax.sharding.PartitionSpec
        summed = jax.shard_map(
            local,
            mesh=mesh(n_devices),
            in_specs=(spec(TILE_AXIS), spec(TILE_AXIS), spec()),
            out_specs=spec(),
        )(jnp.asarray(starts, jnp.int32), jnp.asarray(weights, c_d.dtype), consts)
        return jax.tree.map(jnp.add, total, summed)

    diagonal = np.repeat(np.arange(n_blocks)[:, None], 2, axis=1) * size
    bi, bj = np.triu_indices(n_blocks, 1)
    total = scan(total, diagonal, (size, size), False)
    total = scan(total, np.stack([bi, bj], axis=1) * size, (size, size), True)
    if n_main < n:  # the last n − n_main columns: B × r tiles above the corner, and the corner
        r = n - n_main
        strip = np.stack([np.arange(n_blocks) * size, np.full(n_blocks, n_main)], axis=1)
        total = scan(total, strip, (size, r), True)
        total = _add(total, _one(consts, n_main, n_main, r, r, False, mode), n_main, n_main)
    return total


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


def _one(consts, r0, c0, n_r: int, n_c: int, mirror: bool, mode: str, combined=None) -> dict:
    """The sums of the tile of rows r0 … r0 + n_r − 1 and columns c0 … c0 + n_c − 1 (and of its
    mirror tile if ``mirror``); a pure function of ``consts`` (see `_walk`). The derivative
    passes take the tile's `_combined` data if given (else they combine it here)."""
    a, frames, shear, contrast, offset, data, sigma, tangent = consts
    r0, c0 = jnp.asarray(r0, jnp.int32), jnp.asarray(c0, jnp.int32)

    def at(start, length):
        """The profiles of frames start … start + length − 1."""
        sliced = [jax.lax.dynamic_slice_in_dim(f, start, length, axis=-1) for f in frames]
        return tuple(sliced) + (None,) * (4 - len(sliced))

    rows, cols = at(r0, n_r), at(c0, n_c)

    def blocks():
        """(data, 1/σ) of the tile and of its mirror tile (transposed), or None."""
        d_up, d_down = _pair_blocks(data, r0, c0, n_r, n_c, mirror)
        s_up, s_down = _pair_blocks(sigma, r0, c0, n_r, n_c, mirror)
        down = None if d_down is None or s_down is None else (d_down, 1 / s_down)
        return (d_up, 1 / s_up), down

    def by(method):
        if mode == "value":
            tile = blocks()
        elif combined is None:
            tile = _combined(data, sigma, r0, c0, n_r, n_c, mirror)
        else:
            tile = combined
        return _tile_by(method, a, shear, rows, cols, contrast, offset, tile, mode)

    if tangent is None:
        if shear is None or mode == "angles":  # one method suffices
            return by(_sinc_exact)
        # the cheapest method that is exact on this tile; the blocks are read inside the switch
        # (cut outside, they would be copied into its operands)
        index = _branch(shear[:3], rows[1], cols[1])
        return jax.lax.switch(index, [lambda m=m: by(m) for m in METHODS])
    up, down = blocks()
    dd, ds = tangent
    dd_up, dd_down = _pair_blocks(dd, r0, c0, n_r, n_c, mirror)
    ds_up, ds_down = _pair_blocks(ds, r0, c0, n_r, n_c, mirror)
    model = _tile_model(a, shear, rows, cols, contrast, offset)

    # d(((d − m)/σ)²) = 2 res (dd − res·dσ)/σ with res = (d − m)/σ
    def term(blocks, d_block, s_block):
        res = (blocks[0] - model) * blocks[1]
        return 2 * res * (d_block - res * s_block) * blocks[1]

    out = term(up, dd_up, ds_up)
    if down is not None and dd_down is not None and ds_down is not None:
        out = out + term(down, dd_down, ds_down)
    return {"value": _total(out)}


def _tile_model(a, shear, rows, cols, contrast, offset):
    """g2 on a tile by the plain kernels (for derivatives with respect to the data only)."""
    kappa = None if shear is None else shear[0]
    at_i = (rows[0][:, None], None if rows[1] is None else rows[1][:, None], kappa)
    at_j = (cols[0][None, :], None if cols[1] is None else cols[1][None, :], kappa)
    x = g1_squared_on_pairs(a, contrast.shape[0], at_i, at_j)
    return offset[:, None, None] + contrast[:, None, None] * x


# --- χ² with its derivative rule --------------------------------------------------------------


@jax.custom_jvp
def chi2_from_profiles(a, c_d, shear, contrast, offset, data, sigma):
    """χ² from ½q²Δ, the cumulative integrals and the shear inputs (C^γ, s, φ0, φ) or None;
    data and σ 3-D and broadcastable to (n_phi, N, N)."""
    return _walk(a, c_d, shear, contrast, offset, data, sigma, "value")["value"]


def _is_zero(t) -> bool:
    return t is None or isinstance(t, SymbolicZero)


def _chi2_jvp(primals, tangents):
    a, c_d, shear, contrast, offset, data, sigma = primals
    da, dc_d, dshear, dcontrast, doffset, ddata, dsigma = tangents
    # the derivative passes do not compute χ² itself (under jax.grad this walk is dropped)
    value = _walk(a, c_d, shear, contrast, offset, data, sigma, "value")["value"]
    sums = _walk(a, c_d, shear, contrast, offset, data, sigma, "pairs")
    terms = [(sums["a"], da), (sums["c_d"], dc_d)]
    if shear is not None:
        dc_g, ds, dphi0, dphi = dshear
        terms += [(sums["c_g"], dc_g), (sums["s"], ds), (sums["phi0"], dphi0)]
    else:
        dphi = None
    if not (_is_zero(dcontrast) and _is_zero(doffset) and _is_zero(dphi)):
        per_angle = _walk(a, c_d, shear, contrast, offset, data, sigma, "angles")
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
        out = out + _walk(a, c_d, shear, contrast, offset, data, sigma, "value", (dd, dsg))["value"]
    return value, out


chi2_from_profiles.defjvp(_chi2_jvp, symbolic_zeros=True)


def chi2_in_tiles(
    q_squared_half_dt: Float[Array, ""],
    sinc_prefactor: Float[Array, ""],
    t: Float[Array, " N"],
    phi: Float[Array, " n_phi"],
    p: Params,
    contrast: Float[Array, " n_phi"],
    offset: Float[Array, " n_phi"],
    data: Float[Array, "n_phi N N"],
    sigma: Float[Array, "..."],
) -> Float[Array, ""]:
    """Σ ((data − g2)/σ)² over every angle and every (t1, t2), diagonal included; ``data`` and
    ``sigma`` are anything that broadcasts to (n_phi, N, N) (σ is never broadcast in memory)."""
    c_d, c_g, _ = profiles(t, phi, sinc_prefactor, p)
    shear = None
    if isinstance(p, LaminarFlowParams) and c_g is not None:
        shear = (c_g, sinc_prefactor, p.phi0, phi)
    sigma, data = jnp.asarray(sigma), jnp.asarray(data)
    sigma = jnp.reshape(sigma, (1,) * (3 - sigma.ndim) + sigma.shape)
    data = jnp.reshape(data, (1,) * (3 - data.ndim) + data.shape)
    return chi2_from_profiles(q_squared_half_dt, c_d, shear, contrast, offset, data, sigma)
