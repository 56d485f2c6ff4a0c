"""The log-likelihood of the physical parameters with contrast and offset integrated out (SPEC §7).

The residuals are the fit's, r = w·(d − b_k − c_k·x), x = g1², w = 1/σ, over the pairs t1 < t2 of
the used frames of every angle k, each once. Contrast and offset enter linearly, so with flat
priors on them over ℝ² they integrate out exactly, group by group (an angle, or all angles when
they share one contrast and offset):

    ∫∫ exp(−½ Σ r²) dc db = 2π · exp(−½ χ²_min(θ)) / √det A(θ),   A = Σ w²·[[x², x], [x, 1]],

so log L(θ) = Σ_groups [−½ χ²_min(θ) − ½ log det A(θ)] + const. (The fit clips contrast and offset
to their bounds; the integral runs over all of ℝ². The two agree whenever the fitted values are
many standard errors inside the bounds, as on any usable data.)

Numerics. χ²_min comes from sums of the residuals about a fixed reference (c₀, b₀), the fit's:
Σr² is then ~ dof and the correction for the best (c, b) is small, so nothing cancels even
where Σw²d² is 10⁹ times larger. The derivative follows from the envelope theorem: at the best
(ĉ, b̂), ∂(−½χ²_min)/∂x on a pair is ĉ·w²(d − b̂ − ĉx), and −½ log det A adds
w²(x̄ − x)/v_xx, so ∂ log L/∂x = A_k·w²d + (B_k + C_k·x)·w² with per-group coefficients
A = ĉ, B = −ĉb̂ + x̄/v_xx, C = −ĉ² − 1/v_xx. The derivative pass of the functional API's χ²
(`homodyne._chi2`, which takes any such coefficients) turns them into derivatives with respect to
the per-frame integrals, from which autodiff carries them to the parameters. Value and gradient
are two passes over the pairs (`jax.custom_jvp`), with no reverse-mode tape over the tiles.
"""

import functools

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero
from jaxtyping import Array, Bool, Float

from ._chi2 import _walk
from ._model import HomodyneModel
from ._pairs import profiles
from ._params import LaminarFlowParams, Params


def group_log_likelihood(s: Float[Array, "G 6"]) -> Float[Array, " G"]:
    """−½ χ²_min − ½ log det A per group (up to a constant) from the sums
    [Σw², Σw²x, Σw²x², Σw·r, Σwx·r, Σr²] about a reference (see the module docstring)."""
    s1, sx, sxx, s_r1, s_rx, s_rr = (s[:, i] for i in range(6))
    # the basis [w, wx] orthogonalised: wx − (Σw²x/Σw²)·w has norm² v_xx; no inverse of A
    v_xx = sxx - sx * sx / s1
    along_x = s_rx - sx * s_r1 / s1
    chi2_min = s_rr - s_r1 * s_r1 / s1 - along_x * along_x / v_xx
    return -0.5 * chi2_min - 0.5 * (jnp.log(s1) + jnp.log(v_xx))


def _grouped(x: Float[Array, "n_phi ..."], shared: bool) -> Float[Array, "G ..."]:
    return jnp.sum(x, axis=0, keepdims=True) if shared else x


@functools.partial(jax.custom_jvp, nondiff_argnums=(8, 9))
def log_likelihood_from_profiles(
    a, c_d, shear, contrast, offset, data, sigma, frames_used, shared: bool, tile_elements
) -> Float[Array, ""]:
    """log L from ½q²Δ (scalar or per bin), the cumulative integrals and the shear inputs
    (C^γ, s, φ0, φ) or None; data (n_phi, N, N) and σ three axes that broadcast to it;
    ``frames_used`` (N,) bool; ``contrast``, ``offset`` (n_phi,) the reference of the sums
    (log L does not depend on it). Differentiable in a, the integrals, s and φ0."""
    sums = _walk(
        a, c_d, shear, contrast, offset, data, sigma, "sums", tile_elements, upper=frames_used
    )["sums"]
    return jnp.sum(group_log_likelihood(_grouped(sums, shared)))


def best_scaling(s, contrast, offset, shared: bool):
    """The least-squares contrast and offset (ĉ, b̂) of each group, (G,) each, from its sums
    about the reference ``contrast``, ``offset`` (n_phi,)."""
    s1, sx, sxx, s_r1, s_rx, _ = (s[:, i] for i in range(6))
    v_xx = sxx - sx * sx / s1
    delta_c = (s_rx - sx * s_r1 / s1) / v_xx
    c = contrast[:1] if shared else contrast
    b = offset[:1] if shared else offset
    return c + delta_c, b + (s_r1 - delta_c * sx) / s1


def _coefficients(s, contrast, offset, n_phi: int, shared: bool):
    """(A, B, C) of ∂ log L/∂x per angle (n_phi,) each, from the group sums about the reference."""
    s1, sx, sxx = s[:, 0], s[:, 1], s[:, 2]
    v_xx = sxx - sx * sx / s1
    c_hat, b_hat = best_scaling(s, contrast, offset, shared)
    x_bar = sx / s1
    coefficients = (c_hat, -c_hat * b_hat + x_bar / v_xx, -c_hat * c_hat - 1 / v_xx)
    return tuple(jnp.broadcast_to(v, (n_phi,)) for v in coefficients)


def _is_zero(t) -> bool:
    leaves = jax.tree.leaves(t, is_leaf=lambda x: x is None or isinstance(x, SymbolicZero))
    return all(x is None or isinstance(x, SymbolicZero) for x in leaves)


def _log_likelihood_jvp(shared, tile_elements, primals, tangents):
    a, c_d, shear, contrast, offset, data, sigma, frames_used = primals
    da, dc_d, dshear, _, _, ddata, dsigma, _ = tangents
    dphi = None if shear is None else dshear[3]
    if not (_is_zero(ddata) and _is_zero(dsigma) and _is_zero(dphi)):
        raise NotImplementedError(
            "the integrated log-likelihood is differentiable in the physical parameters and q, "
            "not in the data, σ or the angles."
        )
    walk = functools.partial(
        _walk, a, c_d, shear, contrast, offset, data, sigma, tile_elements=tile_elements,
        upper=frames_used,
    )  # fmt: skip
    s = _grouped(walk("sums")["sums"], shared)
    value = jnp.sum(group_log_likelihood(s))
    coefficients = _coefficients(s, contrast, offset, contrast.shape[0], shared)
    sums = walk("pairs", coefficients=coefficients)
    terms = [(sums["a"], da), (sums["c_d"], dc_d)]
    if shear is not None:
        dc_g, ds, dphi0, _ = dshear
        terms += [(sums["c_g"], dc_g), (sums["s"], ds), (sums["phi0"], dphi0)]
    # the reference (contrast, offset) moves nothing: log L does not depend on it
    out = sum((jnp.sum(g * t) for g, t in terms if not _is_zero(t)), jnp.zeros_like(value))
    return value, out


log_likelihood_from_profiles.defjvp(_log_likelihood_jvp, symbolic_zeros=True)


def _profiles_and_shear(model: HomodyneModel, params: Params):
    c_d, c_g, _ = profiles(model.t, model.phi, model.sinc_prefactor, params)
    shear = None
    if isinstance(params, LaminarFlowParams) and c_g is not None:
        shear = (c_g, model.sinc_prefactor, params.phi0, model.phi)
    return c_d, shear


def conditional_scaling(
    model: HomodyneModel, params: Params, data, sigma, contrast, offset, frames_used, shared: bool
) -> tuple[Float[Array, " n_phi"], Float[Array, " n_phi"]]:
    """The least-squares contrast and offset per bin, (n_phi,) each, for ``params`` (unclipped;
    equal entries when ``shared``): one pass over the pairs t1 < t2 of the frames used
    (arguments as `log_likelihood`'s)."""
    c_d, shear = _profiles_and_shear(model, params)
    sums = _walk(
        model.wavevector_q_squared_half_dt, c_d, shear, contrast, offset, data, sigma, "sums",
        None, upper=frames_used,
    )["sums"]  # fmt: skip
    c_hat, b_hat = best_scaling(_grouped(sums, shared), contrast, offset, shared)
    n_phi = model.n_phi
    return jnp.broadcast_to(c_hat, (n_phi,)), jnp.broadcast_to(b_hat, (n_phi,))


def log_likelihood(
    model: HomodyneModel,
    params: Params,
    data: Float[Array, "n_phi N N"],
    sigma: Float[Array, "_ _ _"],
    contrast: Float[Array, " n_phi"],
    offset: Float[Array, " n_phi"],
    *,
    frames_used: Bool[Array, " N"] | None = None,
    shared: bool = False,
    tile_elements: int | None = None,
) -> Float[Array, ""]:
    """log L(params) of ``model`` on ``data`` (up to a constant), contrast and offset integrated
    out per bin (or once for all bins with ``shared``), over the pairs t1 < t2 of the frames used.

    Args:
        data: C2, (n_phi, N, N), read in place (float32 stays float32 in memory).
        sigma: noise, three axes that broadcast to the data ((n_phi, 1, 1) for one per angle).
        contrast, offset: (n_phi,) reference values (a fit's): the result does not depend on
            them, its rounding does (near the best values, nothing cancels).
        frames_used: (N,) bool; pairs that touch a False frame are left out. None: all.

    Differentiable in ``params`` (and q) by `jax.grad`: two passes over the pairs.
    """
    c_d, shear = _profiles_and_shear(model, params)
    used = jnp.ones(model.n_frames, bool) if frames_used is None else frames_used
    return log_likelihood_from_profiles(
        model.wavevector_q_squared_half_dt, c_d, shear, contrast, offset, data, sigma, used,
        shared, tile_elements,
    )  # fmt: skip
