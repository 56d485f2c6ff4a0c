"""The least-squares problem of a fit, evaluated tile by tile over the pairs t1 < t2.

Residuals r = (data − offset_k − contrast_k · g1²) / σ over the angles k and the pairs i < j.
Contrast and offset are solved in closed form for every trial of the physical parameters (variable
projection). Nothing of the size of the data times the number of parameters is ever formed: the
quantities a Gauss–Newton step needs (χ², JᵀJ, Jᵀr) are accumulated over tiles of pairs, so a step
needs a few MB beyond the data, whatever its size (benchmarks/step.py).

Optimistix sees a *compressed* residual vector of length F + 1 (F free physical parameters) whose
Jacobian is the Cholesky factor R of the reduced Gauss–Newton matrix RᵀR = J̃ᵀJ̃ (contrast and offset
eliminated) and whose value z = R⁻ᵀJ̃ᵀr, padded by √(χ² − |z|²), has |·|² = χ². Its Gauss–Newton
model is the same as that of the full residual vector, so any optimistix least-squares solver takes
the same steps at a cost that does not grow with the data.
"""

import functools
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero
from jaxtyping import Array, Bool, Float, Int

from ._bounds import BoundedTransform
from ._model import HomodyneModel
from ._pairs import (
    Profiles,
    at_frames,
    g1_squared_and_jacobian_on_pairs,
    g1_squared_on_pairs,
    profiles,
)
from ._params import LaminarFlowParams, Params, StaticParams
from ._sharding import device_count, shard_tiles
from ._tiles import FIT_TILE_ELEMENTS, pair_indices, pair_tiles, sum_over_tiles


class Problem(eqx.Module):
    """Everything the residuals need, as arrays: new data of the same shape reuses compiled code."""

    model: HomodyneModel
    # pairs t1 < t2, tile-major, angles last (the order in which they are gathered from the
    # (n_phi, N, N) maps: no transposed copy of the data's size), in the data's own precision
    # (float32 maps as stored stay so, half the size); each tile is transposed and promoted to
    # float64 where it is used
    data: Float[Array, "n_tiles T n_phi"]
    # 1/σ of each pair divided by ``angle_weight``, 0 on the padding of the last tile (and on
    # pairs of excluded frames); with σ per angle (or one σ) just whether each pair is used,
    # (n_tiles, T, 1) bool, and ``angle_weight`` holds 1/σ per angle
    weight: Float[Array, "n_tiles T n_phi"] | Bool[Array, "n_tiles T 1"]
    angle_weight: Float[Array, " n_phi"]
    rows: Int[Array, "n_tiles T"]  # t1 index of each pair
    cols: Int[Array, "n_tiles T"]  # t2 index of each pair
    transform: BoundedTransform  # over the free physical parameters
    lin_lower: Float[Array, " 2"]  # contrast and offset bounds
    lin_upper: Float[Array, " 2"]
    fixed_values: Float[Array, " P"]  # physical values (used where not free)
    free: tuple[bool, ...] = eqx.field(static=True)  # (P,): which physical parameters are fitted
    n_shards: int = eqx.field(static=True)  # local devices the tiles are split between
    laminar: bool = eqx.field(static=True)
    shared: bool = eqx.field(static=True)
    side: int = eqx.field(static=True)  # the tiles hold whole squares of side × side frames
    n_squares: int = eqx.field(static=True)  # squares along the frames
    frame_mask: Bool[Array, " N"] | None = None  # frames used (True); None: all

    @property
    def n_residuals(self) -> int | Float[Array, ""]:
        """Angles × pairs t1 < t2 of used frames: an int, or with a frame mask a traced count as
        float64 (exact; it divides float arrays without a dtype promotion)."""
        if self.frame_mask is None:
            n = self.model.n_frames
            return self.model.n_phi * n * (n - 1) // 2
        n = jnp.sum(self.frame_mask, dtype=float)
        return self.model.n_phi * n * (n - 1) / 2

    @property
    def n_linear(self) -> int:
        """Number of contrast/offset values: 2 shared, or 2 per angle."""
        return 2 if self.shared else 2 * self.model.n_phi

    def physical(self, u: Float[Array, " F"]) -> Float[Array, " P"]:
        full = self.fixed_values
        return full.at[np.flatnonzero(self.free)].set(self.transform.to_physical(u))

    def typed(self, theta: Float[Array, " P"]) -> Params:
        return (LaminarFlowParams if self.laminar else StaticParams).from_array(theta)

    def profiles(self, theta: Float[Array, " P"]) -> Profiles:
        m = self.model
        return profiles(m.t, m.phi, m.sinc_prefactor, self.typed(theta))

    def _sum_over_tiles(self, tile, consts, init=None, add=None):
        """Σ over the tiles of ``tile((rows, cols, data, weight), consts)`` (a pytree of arrays),
        split between the devices that hold the tiles (`homodyne._tiles.sum_over_tiles`, whose
        ``init`` and ``add`` these are)."""
        xs = (self.rows, self.cols, self.data, self.weight)
        n_phi = self.model.n_phi

        def full(x, both):  # the tile in float64 with 1/σ per angle and pair, (n_phi, T) each
            rows, cols, d, w = x
            angle_weight, consts = both
            w = jnp.broadcast_to(angle_weight * w.astype(angle_weight.dtype), (w.shape[0], n_phi))
            return tile((rows, cols, d.T.astype(w.dtype), w.T), consts)

        both = (self.angle_weight, consts)
        return sum_over_tiles(full, xs, both, self.n_shards, init=init, add=add)

    def _profile_jacobian(self, theta: Float[Array, " P"]) -> Profiles:
        """(N, F) / (n_phi, F) tangents of the profiles in the free parameters (None stays
        None), by forward mode."""
        free = np.flatnonzero(self.free)

        def prof_of(theta_free):
            return self.profiles(theta.at[free].set(theta_free))

        return jax.jacfwd(prof_of)(theta[free])

    def held_linear(self, h_ll, h_pl, contrast, offset):
        """Which contrast/offset values are free (`linear_free`), and the information blocks
        with the clipped ones held at their bounds: h_ll (L, L) with an identity row and column
        for each, h_pl (F, L) with a zero column for each."""
        free = self.linear_free(contrast, offset)
        h_ll = jnp.where(free[:, None] & free[None, :], h_ll, jnp.eye(free.size))
        return free, h_ll, jnp.where(free[None, :], h_pl, 0.0)

    def _group(self, x: Float[Array, "n_phi ..."]) -> Float[Array, "G ..."]:
        """Per-angle sums → per contrast/offset group (one group when shared)."""
        return jnp.sum(x, axis=0, keepdims=True) if self.shared else x

    def _constants(self, theta) -> tuple[Float[Array, ""], Profiles]:
        return self.model.wavevector_q_squared_half_dt, self.profiles(theta)

    def scaling(self, theta: Float[Array, " P"]) -> tuple[Array, Array]:
        """Weighted least-squares contrast and offset (n_phi,) each, clipped to their bounds."""
        n_phi = self.model.n_phi
        sums = self._sum_over_tiles(functools.partial(_scaling_sums, n_phi), self._constants(theta))
        s1, sx, sd, sxx, sxd = self._group(sums).T
        x_mean, d_mean = sx / s1, sd / s1
        # centred second moments: no cancellation against the means
        vxx = jnp.maximum(sxx - s1 * x_mean * x_mean, 0.0)
        vxd = sxd - s1 * x_mean * d_mean
        c = jnp.where(vxx > 0, vxd / jnp.where(vxx > 0, vxx, 1.0), 0.0)
        c = jnp.clip(c, self.lin_lower[0], self.lin_upper[0])
        b = jnp.clip(d_mean - c * x_mean, self.lin_lower[1], self.lin_upper[1])
        return jnp.broadcast_to(c, (n_phi,)), jnp.broadcast_to(b, (n_phi,))

    def chi2_at(self, theta, contrast, offset) -> Float[Array, ""]:
        """Σ r² for given physical parameters, contrast and offset."""
        tile = functools.partial(_chi2_sum, self.model.n_phi)
        return self._sum_over_tiles(tile, (*self._constants(theta), contrast, offset))

    def chi2(self, theta: Float[Array, " P"]) -> Float[Array, ""]:
        """χ² with contrast and offset at their (clipped) optimum for ``theta``."""
        return self.chi2_at(theta, *self.scaling(theta))

    def information(self, theta, contrast, offset) -> tuple[Array, Array, Array]:
        """JᵀJ, Jᵀr and χ² over [free physical parameters, contrast, offset] (contrast and offset per
        angle, or one of each when shared), accumulated over the tiles of pairs.

        J = ∂r/∂p. The per-frame profiles are differentiated by forward mode, and g1² on each tile
        of pairs by `g1_squared_and_jacobian_on_pairs`; the contrast/offset columns are known in
        closed form, so only (n_phi, F, T) numbers per tile are ever formed.
        """
        consts = (*self._constants(theta), self._profile_jacobian(theta), contrast, offset)
        tile = functools.partial(_information_sums, self.model.n_phi)
        chi2_k, gr, a, p_x, p_1, lin, lin_r = self._sum_over_tiles(tile, consts)
        # J_θ = −c_k · w·∂x, J_contrast = −w·x, J_offset = −w on angle k's residuals
        c = contrast
        h_pp = jnp.einsum("k,kfg->fg", c * c, a)
        g_p = -jnp.einsum("k,kf->f", c, gr)
        h_pc = self._group(c[:, None] * p_x).T  # (F, G)
        h_pb = self._group(c[:, None] * p_1).T
        sxx, sx, s1 = self._group(lin).T
        g_c, g_b = -self._group(lin_r).T
        h = jnp.block(
            [
                [h_pp, h_pc, h_pb],
                [h_pc.T, jnp.diag(sxx), jnp.diag(sx)],
                [h_pb.T, jnp.diag(sx), jnp.diag(s1)],
            ]
        )
        return h, jnp.concatenate([g_p, g_c, g_b]), jnp.sum(chi2_k)

    def block_scores(
        self, theta, contrast, offset, block_of: Int[Array, " S"], n_blocks: int
    ) -> tuple[Array, Array, Array]:
        """Per block pair of frames and angle k, the sums of the score J_kᵀr, (n, n, n_phi, m),
        and of the information J_kᵀJ_k, (n, n, n_phi, m, m), over angle k's parameters
        [free θ, contrast_k, offset_k] (m = F + 2), and χ² per angle, (n_phi,): over all squares
        the information, gradient and χ² of `information`, and the squares of
        `homodyne._covariance.window_covariance`. Blocks are unions of the tiles' squares:
        ``block_of`` (``n_squares``,) is the block of each square's frames, non-decreasing (the
        pairs of square (a, b) sit in block pair (block_of[a], block_of[b])). One pass over the
        pairs, a matrix product per square."""
        m, n_phi = sum(self.free) + 2, self.model.n_phi
        consts = (*self._constants(theta), self._profile_jacobian(theta), contrast, offset)
        tile = functools.partial(_block_score_sums, n_phi, self.side, n_blocks)
        n_packed = m * (m + 1) // 2
        sums = self._sum_over_tiles(
            tile,
            (*consts, block_of),
            init=jnp.zeros((n_blocks * n_blocks, n_phi * (m + n_packed + 1))),
            add=_add_at_blocks,
        )
        sums = sums.reshape(n_blocks, n_blocks, n_phi, m + n_packed + 1)
        score, packed, chi2 = jnp.split(sums, [m, m + n_packed], axis=-1)
        upper = np.triu_indices(m)
        info = jnp.zeros((n_blocks, n_blocks, n_phi, m, m)).at[..., upper[0], upper[1]].set(packed)
        info = info + jnp.swapaxes(jnp.triu(info, 1), -1, -2)
        return score, info, jnp.sum(chi2[..., 0], axis=(0, 1))

    def decorrelation_clock(self, theta: Float[Array, " P"], level: float) -> Float[Array, " N"]:
        """A clock over the frames, ν (N,), non-decreasing from 0, that advances by ln(1/level)
        while g1² of the fitted model falls to ``level`` at the angle where it falls slowest: two
        frames share speckles (their noise is correlated, SPEC §6) while their ν differ by less.

        Diffusion: g1² = exp(−2a|ΔC^D|) exactly, so ν gets 2a·C^D. Laminar shear: g1² carries
        sinc⁴(f_k·ΔC^γ), which falls to ``level`` at |Φ| = Φ_L on its first lobe (the later lobes
        stay below 0.22⁴ ≈ 0.002), so ν also gets ln(1/level)·min_k |f_k|·C^γ/Φ_L: the angle
        the flow decorrelates least (across the flow, f_k ≈ 0) keeps its correlation longest, and
        every angle's blocks are made that wide."""
        a, (c_d, c_g, factor) = self._constants(theta)
        clock = 2 * jnp.min(a) * c_d  # q per bin: the bin that decorrelates slowest
        if c_g is not None and factor is not None:
            clock = clock + np.log(1 / level) * jnp.min(jnp.abs(factor)) * c_g / _sinc4_root(level)
        return clock

    def normal_equations(self, u: Float[Array, " F"]):
        """`reduced_normal_equations` at solver coordinates ``u``."""
        return reduced_normal_equations(self, u)

    def linear_free(self, contrast, offset) -> Float[Array, " L"]:
        """Which contrast/offset values are strictly inside their bounds (not clipped)."""
        n = self.n_linear // 2
        c, b = contrast[:n], offset[:n]
        lo, hi = self.lin_lower, self.lin_upper
        return jnp.concatenate([(c > lo[0]) & (c < hi[0]), (b > lo[1]) & (b < hi[1])])


@functools.cache
def _sinc4_root(level: float) -> float:
    """Φ in (0, π) with sinc(Φ)⁴ = ``level`` (bisection; sinc falls monotonically there)."""
    lo, hi = 1e-9, float(np.pi)
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if (np.sin(mid) / mid) ** 4 > level else (lo, mid)
    return 0.5 * (lo + hi)


def tiled_problem(
    model: HomodyneModel,
    data: Float[Array, "n_phi N N"],
    sigma: Float[Array, "_ _ _"],
    *,
    transform: BoundedTransform,
    lin_lower: Float[Array, " 2"],
    lin_upper: Float[Array, " 2"],
    fixed_values: Float[Array, " P"],
    free: tuple[bool, ...],
    laminar: bool,
    shared: bool,
    tile_elements: int = FIT_TILE_ELEMENTS,
    frame_mask: Bool[Array, " N"] | None = None,
) -> Problem:
    """The `Problem` of fitting ``model`` to ``data`` with noise ``sigma`` (anything that
    broadcasts to the data's shape): the pairs t1 < t2 cut into tiles of about ``tile_elements``
    angles × pairs (`homodyne._tiles.pair_tiles`), split between the local devices. With a
    ``frame_mask`` (N,) (True: frame used), a pair that touches an excluded frame gets weight 0
    and data 0 (so NaN there does no harm); the time axis stays whole. Non-finite data become
    0 in the tiles (the fit's status reports them). Float32 data stay float32 in the tiles. Works
    eagerly and inside jit."""
    n_shards = device_count()
    tiles = pair_tiles(model.n_frames, model.n_phi, tile_elements, n_shards)
    rows, cols, valid = pair_indices(tiles, model.n_frames)
    data_tiles, weight, angle_weight = _tiled(data, sigma, rows, cols, valid, frame_mask)
    return Problem(
        model=model,
        data=shard_tiles(data_tiles, n_shards),
        weight=shard_tiles(weight, n_shards),
        angle_weight=angle_weight,
        rows=shard_tiles(jnp.asarray(rows), n_shards),
        cols=shard_tiles(jnp.asarray(cols), n_shards),
        transform=transform,
        lin_lower=lin_lower,
        lin_upper=lin_upper,
        fixed_values=fixed_values,
        free=free,
        n_shards=n_shards,
        laminar=laminar,
        shared=shared,
        side=tiles.side,
        n_squares=tiles.n_squares,
        frame_mask=frame_mask,
    )


@jax.jit
def _tiled(data, sigma, rows, cols, valid, frame_mask=None):
    """Data at the tiled pairs, (n_tiles, T, n_phi), in the data's dtype (0 on the padding, on
    pairs that touch an excluded frame and where not finite), the pairs' weights and 1/σ per
    angle (see `Problem.weight`), in one compiled gather."""

    def to_tiles(grid):  # (n_phi, N, N) → (n_tiles, T, n_phi): the gather's own order
        return jnp.moveaxis(grid[:, rows, cols], 0, -1)

    used = valid if frame_mask is None else valid & frame_mask[rows] & frame_mask[cols]
    used = used[:, :, None]
    tiles = to_tiles(data)
    zero = jnp.zeros((), tiles.dtype)
    data_tiles = jnp.where(used & jnp.isfinite(tiles), tiles, zero)
    n_phi = data.shape[0]
    if sigma.shape[-2:] == (1, 1):  # one σ per angle, or one for all
        return data_tiles, used, 1.0 / jnp.broadcast_to(jnp.reshape(sigma, (-1,)), (n_phi,))
    weight = 1.0 / to_tiles(jnp.broadcast_to(sigma, data.shape))
    return data_tiles, jnp.where(used, weight, 0.0), jnp.ones(n_phi, weight.dtype)


def subsampled(problem: Problem, data, sigma, frames: int) -> Problem:
    """The same problem on every s-th frame (dt·s per step), about ``frames`` of them: cheap
    enough to scan many starts."""
    m = problem.model
    stride = max(1, -(-m.n_frames // frames))
    # the same model with other leaves: a new HomodyneModel would check its inputs, which inside
    # the compiled fit become callbacks (and code with callbacks is never cached on disk)
    sub_model = eqx.tree_at(lambda x: (x.dt, x.t), m, (m.dt * stride, m.t[::stride]))
    if sigma.shape[-2:] != (1, 1):  # σ per pair: subsampled with the data
        sigma = jnp.broadcast_to(sigma, data.shape)[:, ::stride, ::stride]
    mask = None if problem.frame_mask is None else problem.frame_mask[::stride]
    return retiled(problem, sub_model, data[:, ::stride, ::stride], sigma, frame_mask=mask)


def retiled(
    problem: Problem,
    model: HomodyneModel,
    data: Float[Array, "n_phi N N"],
    sigma: Float[Array, "_ _ _"],
    tile_elements: int = FIT_TILE_ELEMENTS,
    frame_mask: Bool[Array, " N"] | None = None,
) -> Problem:
    """``problem`` (what is fitted, bounds, held values) for another model and data (with their
    ``frame_mask``, if any), or in tiles of another size."""
    return tiled_problem(
        model,
        data,
        sigma,
        transform=problem.transform,
        lin_lower=problem.lin_lower,
        lin_upper=problem.lin_upper,
        fixed_values=problem.fixed_values,
        free=problem.free,
        laminar=problem.laminar,
        shared=problem.shared,
        tile_elements=tile_elements,
        frame_mask=frame_mask,
    )


# --- sums over one tile: pure functions of (tile, constants), see Problem._sum_over_tiles ------


def _basis(n_phi: int, a, prof: Profiles, rows, cols) -> Float[Array, "n_phi T"]:
    return g1_squared_on_pairs(a, n_phi, at_frames(prof, rows), at_frames(prof, cols))


def _scaling_sums(n_phi: int, xs, consts) -> Float[Array, "n_phi 5"]:
    rows, cols, d, w = xs
    a, prof = consts
    x, w2 = _basis(n_phi, a, prof, rows, cols), w * w
    return jnp.stack([w2, w2 * x, w2 * d, w2 * x * x, w2 * x * d], axis=-1).sum(axis=1)


def _chi2_sum(n_phi: int, xs, consts) -> Float[Array, ""]:
    rows, cols, d, w = xs
    a, prof, contrast, offset = consts
    r = (d - offset[:, None] - contrast[:, None] * _basis(n_phi, a, prof, rows, cols)) * w
    return jnp.sum(r * r)


def _pair_jacobian(n_phi: int, xs, consts):
    """Weighted residuals r, w·x and w·∂x/∂θ on one tile's pairs, (n_phi, T), (n_phi, T) and
    (n_phi, F, T), and the tile's 1/σ."""
    rows, cols, d, w = xs
    a, prof, prof_jac, contrast, offset = consts
    x, dx = g1_squared_and_jacobian_on_pairs(
        a, n_phi, at_frames(prof, rows), at_frames(prof, cols),
        at_frames(prof_jac, rows), at_frames(prof_jac, cols),
    )  # fmt: skip
    r = (d - offset[:, None] - contrast[:, None] * x) * w
    return r, w * x, w[:, None, :] * dx, w


def _information_sums(n_phi: int, xs, consts):
    r, wx, wdx, w = _pair_jacobian(n_phi, xs, consts)
    projections = jnp.matmul(wdx, jnp.stack([r, wx, w], axis=-1))  # (n_phi, F, 3)
    return (
        jnp.sum(r * r, axis=1),
        projections[..., 0],
        jnp.matmul(wdx, jnp.swapaxes(wdx, 1, 2)),
        projections[..., 1],
        projections[..., 2],
        jnp.stack([jnp.sum(wx * wx, 1), jnp.sum(wx * w, 1), jnp.sum(w * w, 1)], -1),
        jnp.stack([jnp.sum(wx * r, 1), jnp.sum(w * r, 1)], -1),
    )


def _block_score_sums(n_phi: int, side: int, n_blocks: int, xs, consts):
    """Each square's score J_kᵀr, information J_kᵀJ_k (upper triangle) and Σr² per angle k,
    over [free θ, contrast_k, offset_k]: (S, n_phi·(m + m(m+1)/2 + 1)) for the tile's S squares, with their
    block pairs' flat indices (S,). J_k = (−c_k·w∂x, −w·x, −w); the padding's slots have w = 0."""
    *consts, block_of = consts
    contrast = consts[-2]
    r, wx, wdx, w = _pair_jacobian(n_phi, xs, consts)
    jac = jnp.concatenate([-contrast[:, None, None] * wdx, -wx[:, None], -w[:, None]], axis=1)
    m, squares = jac.shape[1], r.shape[-1] // side**2  # jac: (n_phi, m, T)
    jac = jac.reshape(n_phi, m, squares, side**2)
    r = r.reshape(n_phi, squares, side**2)
    score = jnp.einsum("kasp,ksp->ska", jac, r)
    upper = np.triu_indices(m)  # JᵀJ is symmetric: its upper triangle is summed and kept
    info = jnp.einsum("kasp,kbsp->skab", jac, jac)[..., upper[0], upper[1]]
    chi2 = jnp.einsum("ksp,ksp->sk", r, r)[..., None]
    parts = jnp.concatenate([score, info, chi2], axis=-1).reshape(squares, -1)
    # a square's first slot is its first row and column: (a·side, b·side)
    rows, cols = xs[0][:: side**2], xs[1][:: side**2]
    return parts, block_of[rows // side] * n_blocks + block_of[cols // side]


def _add_at_blocks(acc, part, _):
    parts, index = part
    return acc.at[index].add(parts)


def reduced_normal_equations(problem: Problem, u: Float[Array, " F"]):
    """The Gauss–Newton matrix and gradient of ½χ² in solver coordinates ``u``, with contrast and
    offset eliminated (Schur complement; clipped ones stay fixed), and χ²."""
    theta = problem.physical(u)
    contrast, offset = problem.scaling(theta)
    h, g, chi2 = problem.information(theta, contrast, offset)
    n_free = u.shape[0]
    # dθ/du of the elementwise map scales the physical rows and columns
    scale = jax.jvp(problem.transform.to_physical, (u,), (jnp.ones_like(u),))[1]
    h_pp = h[:n_free, :n_free] * scale[:, None] * scale[None, :]
    h_pl = h[:n_free, n_free:] * scale[:, None]
    g_p = g[:n_free] * scale
    free, h_ll, h_pl = problem.held_linear(h[n_free:, n_free:], h_pl, contrast, offset)
    g_l = jnp.where(free, g[n_free:], 0.0)
    # h_ll is a stack of 2×2 blocks [[Σw²x², Σw²x], [Σw²x, Σw²]]: well conditioned after scaling
    d = jnp.sqrt(jnp.diagonal(h_ll))
    rhs = jnp.concatenate([h_pl.T, g_l[:, None]], axis=1) / d[:, None]
    solve = jnp.linalg.solve(h_ll / (d[:, None] * d[None, :]), rhs) / d[:, None]
    h_red = h_pp - h_pl @ solve[:, :n_free]
    g_red = g_p - h_pl @ solve[:, n_free]
    return 0.5 * (h_red + h_red.T), g_red, chi2


def _compressed(u: Float[Array, " F"], problem: "Problem | JointProblem"):
    h, g, chi2 = problem.normal_equations(u)
    # a tiny relative jitter keeps the factorisation defined for a direction without information
    diag = jnp.diagonal(h)
    r = jnp.linalg.cholesky(h + jnp.diag(1e-12 * jnp.where(diag > 0, diag, 1.0))).T  # RᵀR = h
    z = jax.scipy.linalg.solve_triangular(r.T, g, lower=True)  # Rᵀz = g
    rest = jnp.sqrt(jnp.maximum(chi2 - jnp.sum(z * z), 0.0))
    return jnp.concatenate([z, rest[None]]), r


@jax.custom_jvp
def compressed_residuals(
    u: Float[Array, " F"], problem: "Problem | JointProblem"
) -> Float[Array, " F+1"]:
    """A residual vector of length F + 1 with the Gauss–Newton model of the full one (see the module
    docstring): |·|² = χ², and its Jacobian in ``u`` is [R; 0] with RᵀR = J̃ᵀJ̃."""
    return _compressed(u, problem)[0]


def _compressed_jvp(primals, tangents):
    u, problem = primals
    t_u, t_problem = tangents
    value, r = _compressed(u, problem)
    out = jnp.zeros_like(value)
    if not isinstance(t_u, SymbolicZero):
        out = out.at[:-1].add(r @ t_u)
    # Derivatives with respect to the problem (data, σ, the model): those of the value as computed.
    # Solvers never ask for them (they differentiate in u); implicit differentiation of a fit
    # differentiates this rule's own code instead, which is exact.
    is_zero = lambda t: isinstance(t, SymbolicZero)  # noqa: E731
    live = jax.tree.map(lambda t: not is_zero(t), t_problem, is_leaf=is_zero)
    if any(jax.tree.leaves(live)):
        moving, fixed = eqx.partition(problem, live)
        t_moving = eqx.filter(t_problem, live, is_leaf=is_zero)
        out = (
            out
            + jax.jvp(lambda m: _compressed(u, eqx.combine(m, fixed))[0], (moving,), (t_moving,))[1]
        )
    return value, out


compressed_residuals.defjvp(_compressed_jvp, symbolic_zeros=True)


class JointProblem(eqx.Module):
    """Several runs (each a `Problem`: its own model, time axis, bins and data) that share the
    physical parameters, except those fitted per run.

    The solver's coordinates u (G,) hold each shared free parameter once and each per-run one once
    per run; run r's coordinates are ``u[index[r]]``, and its problem's transform is the joint
    one restricted to them. χ² is the sum over the runs, and so are their reduced Gauss–Newton
    matrices and gradients (contrast and offset, per bin of each run, are eliminated run by run:
    no run's scaling enters another's residuals). One run with ``index[0] = (0, …, F−1)`` is an
    ordinary fit.
    """

    runs: tuple[Problem, ...]
    transform: BoundedTransform  # over the G joint coordinates
    index: tuple[tuple[int, ...], ...] = eqx.field(static=True)

    def __init__(self, runs, transform: BoundedTransform, index):
        self.transform, self.index = transform, tuple(tuple(i) for i in index)
        restricted = []
        for problem, ix in zip(runs, self.index, strict=True):
            sub = BoundedTransform(
                transform.lower[np.array(ix)],
                transform.upper[np.array(ix)],
                tuple(transform.log_scale[i] for i in ix),
            )
            restricted.append(eqx.tree_at(lambda p: p.transform, problem, sub))
        self.runs = tuple(restricted)

    def run_coordinates(self, u: Float[Array, " G"], r: int) -> Float[Array, " F"]:
        return u[np.array(self.index[r])]

    def normal_equations(self, u: Float[Array, " G"]):
        """The sums over the runs of `reduced_normal_equations`, placed at their coordinates."""
        n = u.shape[0]
        h, g, chi2 = jnp.zeros((n, n)), jnp.zeros(n), jnp.zeros(())
        for r, problem in enumerate(self.runs):
            ix = np.array(self.index[r])
            h_r, g_r, chi2_r = reduced_normal_equations(problem, self.run_coordinates(u, r))
            h, g, chi2 = h.at[np.ix_(ix, ix)].add(h_r), g.at[ix].add(g_r), chi2 + chi2_r
        return h, g, chi2

    def chi2(self, u: Float[Array, " G"]) -> Float[Array, ""]:
        """Σ over the runs of χ² with contrast and offset at their optimum."""
        return sum(
            (p.chi2(p.physical(self.run_coordinates(u, r))) for r, p in enumerate(self.runs)),
            start=jnp.zeros(()),
        )


def progress(**fields) -> None:
    """Per-step progress for ``fit(verbose=True)``: optimistix passes (label, value) pairs."""
    step = fields.get("num_steps", ("", -1))[1]
    loss = fields.get("loss_last_accepted_step", fields.get("loss_this_step", ("", jnp.nan)))[1]
    # unordered: ordered effects are not supported on several devices; steps run in sequence anyway
    jax.debug.callback(print_step, step, 2 * loss)


class ProgressLine:
    """One updating line on stderr for ``fit(verbose=True)``: the steps counted over every solve
    of the fit (both starts of an automatic start and the final solve), so the last count shown
    is the summary's ``n_steps``. `homodyne.fit` starts it and ends it with a newline."""

    steps = 0  # host-side state of the line being written, not configuration
    chi2 = "…"

    @classmethod
    def start(cls) -> None:
        cls.steps, cls.chi2 = 0, "…"

    @classmethod
    def end(cls) -> None:
        if cls.steps:
            sys.stderr.write("\n")
            sys.stderr.flush()
        cls.steps = 0


def print_step(step, chi2) -> None:
    # one call per solver step (optimistix's num_steps counts them); a solve's step 0 has no
    # evaluated χ² yet, so the line keeps the last one shown
    ProgressLine.steps += 1
    if int(step) > 0:
        ProgressLine.chi2 = f"{float(chi2):.8g}"
    sys.stderr.write(f"\r  step {ProgressLine.steps:4d}   chi2 = {ProgressLine.chi2}  ")
    sys.stderr.flush()


def solver_residuals(u, problem: Problem):
    # module-level, so optimistix sees the same function object every call (no recompilation)
    return compressed_residuals(u, problem)
