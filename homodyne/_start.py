"""Automatic starting values and the noise estimate of a fit."""

import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, Bool, Float

from ._params import LaminarFlowParams, StaticParams
from ._problem import Problem, solver_residuals, subsampled
from ._solver import FitSolver

#: Fractions of each range tried by the automatic start (others start at mid-range).
_GRID_FRACTIONS = {
    "D0": np.linspace(0.04, 0.96, 12),
    "alpha": np.linspace(0.1, 0.9, 7),
    "gamma_dot_t0": np.linspace(0.05, 0.95, 10),
    "beta": np.array([0.3, 0.5, 0.7]),
    "phi0": np.array([0.25, 0.5, 0.75]),
}
_SEARCH_FRAMES = 32  # frames of the subsample on which the automatic start scores its grid
_SEARCH_STARTS = 3  # best grid points refined (plus the best for each phi0)
_SEARCH_STEPS = 64
_REFINE_FRAMES = 128  # frames of the subsample on which they are refined (from 256 frames on)
MIN_FRAMES_FOR_NOISE = 6  # second differences need pairs (i, j), (i+2, j+2) with j > i
NOISE_FRAMES = 1024  # frames whose pairs give the noise estimate's second differences, at most


def automatic_starts(problem: Problem, data, sigma_grid) -> Float[Array, "2 F"]:
    """Two starts in solver coordinates. A coarse grid (D0 × alpha, and for laminar flow
    × gamma_dot_t0 × beta × phi0; other free parameters mid-range) is scored on the data subsampled
    to 32 frames; its best points overall and the best for each phi0 are refined by short
    Levenberg–Marquardt runs on the data subsampled to 128 frames (with fewer than 256 frames, on
    the full data); the two refined points with the lowest χ² on the full data are the starts."""
    sub = subsampled(problem, data, sigma_grid, _SEARCH_FRAMES)
    names = (LaminarFlowParams if problem.laminar else StaticParams).names
    free_names = [n for n, f in zip(names, problem.free, strict=True) if f]
    axes = [_GRID_FRACTIONS.get(n, np.array([0.5])) for n in free_names]
    mesh = np.meshgrid(*axes, indexing="ij")
    fractions = np.stack([g.ravel() for g in mesh], axis=-1)
    u_candidates = jnp.asarray(np.log(fractions) - np.log1p(-fractions))

    def cost(u):
        return sub.chi2(sub.physical(u))

    costs = jax.lax.map(cost, u_candidates, batch_size=64)
    costs = jnp.where(jnp.isfinite(costs), costs, jnp.inf)
    # Starts: the best grid points overall, and the best for each flow direction phi0 (the shear
    # phase has distant local minima in phi0 that a local solver does not cross).
    order = jnp.argsort(costs)
    starts = [order[: min(_SEARCH_STARTS, costs.size)]]
    if "phi0" in free_names:
        column = fractions[:, free_names.index("phi0")]
        for value in np.unique(column):
            starts.append(jnp.argmin(jnp.where(jnp.asarray(column == value), costs, jnp.inf))[None])
    best = u_candidates[jnp.concatenate(starts)]
    solver = FitSolver(rtol=1e-4, atol=1e-4, decrement_tol=1e-3)
    # Refined on 128 frames: steps there cost ~1/60 of a full one at 1000 frames, and the fit then
    # starts close (at 23 × 1000, ~12 full steps where unpolished starts took 26). Not on the
    # 32-frame grid's data: there the landscape can lead every refinement into another basin
    # than the full data would (seen for the sign of phi0 − φ), and a solver on a third problem
    # shape would cost its own compilation (about 3 s of every first fit).
    fine = problem
    if problem.model.n_frames >= 2 * _REFINE_FRAMES:
        fine = subsampled(problem, data, sigma_grid, _REFINE_FRAMES)

    def refine(u0):
        sol = optx.least_squares(
            solver_residuals, solver, u0, args=fine, max_steps=_SEARCH_STEPS, throw=False
        )
        u = jnp.where(jnp.all(jnp.isfinite(sol.value)), sol.value, u0)
        return u, problem.chi2(problem.physical(u))  # judged on the full data

    refined, refined_costs = jax.lax.map(refine, best)
    refined_costs = jnp.where(jnp.isfinite(refined_costs), refined_costs, jnp.inf)
    # The best two (the fit runs a few steps from both and finishes the better, see _fit). A grid
    # point can be among the best overall and the best of its phi0: its twin refines to the same
    # point, and the runner-up is then the next one that differs.
    order = jnp.argsort(refined_costs)
    if best.shape[0] == 1:
        return jnp.concatenate([refined, refined])
    rest = refined_costs[order[1:]]
    second = order[1 + jnp.argmax(rest > refined_costs[order[0]])]  # order[1] if all tie
    return refined[jnp.stack([order[0], second])]


def noise_per_angle(
    data: Float[Array, "n_phi N N"], frame_mask: Bool[Array, " N"] | None = None
) -> Float[Array, " n_phi"]:
    """σ per angle from second differences along lines of equal lag,
    C(i, j) − 2·C(i+1, j+1) + C(i+2, j+2) for j > i: a slowly ageing signal cancels to second
    order, while independent noise of variance σ² gives variance 6σ². A median absolute deviation
    keeps outliers out. With a ``frame_mask`` (N,) only differences whose six frames are all used
    count (NaN when none is left); whatever excluded frames hold does not matter.

    Every i < j is used up to `NOISE_FRAMES` + 2 frames; beyond, i and j run over that many
    evenly spaced frames (half a million differences per angle: the MAD's relative precision
    is ~0.2 %), so that neither time nor memory grows with N². Computed one angle at a time, in
    float64 whatever the data's precision."""
    n = data.shape[-1]
    m = min(n - 2, NOISE_FRAMES)
    frames = np.unique(np.linspace(0, n - 3, m).round().astype(np.int64))
    rows, cols = upper_pairs(frames.size)

    def differences(angle):  # (N, N) → (m(m−1)/2,) second differences at frames[rows], frames[cols]
        i, j = jnp.asarray(frames)[rows], jnp.asarray(frames)[cols]

        def at(s):
            return angle[i + s, j + s].astype(jnp.float64)

        return at(0) - 2 * at(1) + at(2)

    diff = jax.lax.map(differences, data)
    if frame_mask is None:
        mad = jnp.median(jnp.abs(diff - jnp.median(diff, axis=1, keepdims=True)), axis=1)
    else:
        runs = frame_mask[:-2] & frame_mask[1:-1] & frame_mask[2:]  # i, i+1, i+2 all used
        runs = runs[frames]
        diff = jnp.where(runs[rows] & runs[cols], diff, jnp.nan)
        mad = jnp.nanmedian(jnp.abs(diff - jnp.nanmedian(diff, axis=1, keepdims=True)), axis=1)
    return 1.4826 * mad / np.sqrt(6.0)


def upper_pairs(m: int) -> tuple[Array, Array]:
    """The pairs (a, b), a < b < m, row by row as `np.triu_indices(m, 1)`, computed on the
    device from their flat position (no index constants of that size in the compiled code)."""
    k = jnp.arange(m * (m - 1) // 2, dtype=jnp.int64)
    # row a starts at flat position a·m − a(a+1)/2 − … ; solve the quadratic for a, then correct
    # the float rounding by one step either way
    total = m * (m - 1) // 2
    back = (total - 1 - k).astype(jnp.float64)  # pairs after k: exact in float64
    a = m - 2 - jnp.floor((jnp.sqrt(8.0 * back + 1.0) - 1.0) / 2.0).astype(jnp.int64)

    def start(r):  # flat position of row r's first pair
        return r * (2 * m - r - 1) // 2

    a = jnp.where(start(a) > k, a - 1, a)
    a = jnp.where(start(a + 1) <= k, a + 1, a)
    return a, k - start(a) + a + 1


def second_difference_count(frame_mask: np.ndarray) -> int:
    """How many second differences `noise_per_angle` can use per angle with this frame mask."""
    mask = np.asarray(frame_mask, dtype=bool)
    runs = int(np.sum(mask[:-2] & mask[1:-1] & mask[2:]))
    return runs * (runs - 1) // 2
