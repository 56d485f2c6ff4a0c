"""`HomodyneModel`: the experiment (q, L, dt, frame times, angles) and the g1/g2 it predicts."""

import math
import warnings
from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from . import _kernels as k
from ._params import AbstractParams, LaminarFlowParams, Params, StaticParams, params_from_array
from ._precision import as_float64
from ._sharding import spread
from ._validate import (
    angles,
    frame_step,
    is_traced,
    per_angle,
    positive_scalar,
    time_vector,
    wavevectors,
)

# --- evaluation from prefactors (shared with homodyne.core.jax_backend) -------------------------


def g1_diffusion(
    wavevector_q_squared_half_dt: Float[Array, "*bins"], t: Float[Array, " n_t"], p: Params
) -> Float[Array, "*bins n_t n_t"]:
    """exp(−½q²Δ·∫D): (N, N) for one q, (n_phi, N, N) for a prefactor per bin; only D0, alpha,
    D_offset of ``p`` are used."""
    m = k.rate_integral(t, p.D0, p.alpha, p.D_offset)
    return k.g1_diffusion_from_integral(k.per_bin(wavevector_q_squared_half_dt, 2), m)


def g1_shear(
    sinc_prefactor: Float[Array, "*bins"],
    t: Float[Array, " n_t"],
    phi: Float[Array, " n_phi"],
    p: Params,
) -> Float[Array, "n_phi n_t n_t"]:
    """sinc²(Φ) per angle, (n_phi, N, N); exactly 1 for `StaticParams`."""
    n = t.shape[0]
    if isinstance(p, StaticParams):
        return jnp.ones((phi.shape[0], n, n), t.dtype)
    m = k.rate_integral(t, p.gamma_dot_t0, p.beta, p.gamma_dot_t_offset)
    return k.g1_shear_from_integral(sinc_prefactor, p.phi0, phi, m)


def g1_total(
    wavevector_q_squared_half_dt: Float[Array, "*bins"],
    sinc_prefactor: Float[Array, "*bins"],
    t: Float[Array, " n_t"],
    phi: Float[Array, " n_phi"],
    p: Params,
) -> Float[Array, "n_phi n_t n_t"]:
    """g1 = g1_diffusion · g1_shear, floored at 1e-10 (straight-through), (n_phi, N, N)."""
    diffusion = g1_diffusion(wavevector_q_squared_half_dt, t, p)
    return k.combine_g1(diffusion, g1_shear(sinc_prefactor, t, phi, p))


def g2_scaled(
    wavevector_q_squared_half_dt: Float[Array, "*bins"],
    sinc_prefactor: Float[Array, "*bins"],
    t: Float[Array, " n_t"],
    phi: Float[Array, " n_phi"],
    p: Params,
    contrast: Float[Array, " n_phi"],
    offset: Float[Array, " n_phi"],
) -> Float[Array, "n_phi n_t n_t"]:
    """g2 = offset + contrast · g1², (n_phi, N, N)."""
    g1 = g1_total(wavevector_q_squared_half_dt, sinc_prefactor, t, phi, p)
    return k.g2_from_g1(g1, contrast, offset)


# --- the model ---------------------------------------------------------------------------------


class HomodyneModel(eqx.Module):
    """An XPCS experiment and the two-time correlations it predicts (SPEC §2).

    Build it once from the experiment, then evaluate it for any parameters::

        model = HomodyneModel(q=0.0054, dt=0.1, n_frames=1000, phi=[0.0, 45.0, 90.0])
        g2 = model.g2(LaminarFlowParams(1e4, -0.5, 0.0, 1e-3, 0.0, 0.0, 0.0), 0.3, 1.0)

    Every field is an array leaf, so a model with a new q, L, dt, time origin or angle values (same
    shapes) reuses compiled code, and ``eqx.filter_grad`` gives derivatives with respect to q, L, dt,
    the times and the angles as well as the parameters. Change a field with ``eqx.tree_at``.
    Compile functions of the model (``jax.jit(lambda p: model.g2(p, c, b))``) or bound methods with
    ``eqx.filter_jit(model.g2)``: plain ``jax.jit(model.g2)`` would have to hash the model's arrays.

    A model describes bins, each a (q, φ) pair on one time axis (SPEC §3.1): a scalar q with n
    angles is one q ring; q given per bin (one value per angle) covers several rings of a detector
    file, with the same physics, so that one fit shares D(t), γ̇(t) and φ0 across the rings while
    contrast and offset stay per bin. A new q of the same shape reuses compiled code.

    The prefactors ½q²Δ and qLΔ/2π (`wavevector_q_squared_half_dt`, `sinc_prefactor`) are derived
    from the q, L, dt leaves on access: two multiplications that XLA fuses into the kernels. Storing
    them as separate leaves would let ``eqx.tree_at(lambda m: m.q, ...)`` leave them stale, and would
    hide the dependence on q from ``eqx.filter_grad``.

    Attributes:
        q: scattering wavevector [1/Å]: a scalar (one ring), or one per bin, (n_phi,).
        L: stator–rotor gap [Å], scalar.
        dt: frame step Δ [s] from configuration, scalar.
        t: frame times τ_i [s], (N,): where D(t), γ̇(t) are evaluated (the sample's age).
        phi: detector angles [degrees], (n_phi,).
    """

    q: Float[Array, "*bins"]
    L: Float[Array, ""]
    dt: Float[Array, ""]
    t: Float[Array, " n_t"]
    phi: Float[Array, " n_phi"]

    def __init__(
        self,
        q: ArrayLike,
        dt: ArrayLike,
        t: ArrayLike | Sequence[float] | None = None,
        *,
        phi: ArrayLike | Sequence[float] = 0.0,
        L: ArrayLike = 2e6,
        n_frames: int | None = None,
        time_origin: ArrayLike | None = None,
        t0: ArrayLike | None = None,
    ):
        """
        Args:
            q: wavevector [1/Å], > 0: a scalar (every bin on one ring), or one per bin (per
                angle of ``phi``: several rings, e.g. ``q=[0.001, 0.001, 0.002, 0.002]`` with
                ``phi=[0, 90, 0, 90]``).
            dt: frame step [s], > 0, from the experiment's configuration (never from the grid).
            t: frame times [s], 1-D. Give either ``t`` or ``n_frames``.
            phi: detector angle(s) [degrees]; scalar or any shape (flattened).
            L: stator–rotor gap [Å], > 0 (only enters laminar flow). Default 2e6 Å.
            n_frames: number of frames; the times are then ``time_origin + dt·k``,
                k = 0 … n_frames − 1.
            time_origin: time of the first frame [s] when ``n_frames`` is given (the sample's age
                at the first analysed frame; default 0, the usual convention, made safe by the time
                floor). The same name as in `homodyne.io.load_two_time` and ``--time-origin``.
            t0: deprecated name of ``time_origin`` (a DeprecationWarning).

        Raises:
            ValueError: for a q, L or dt that is not a finite scalar > 0, for both or neither of
                ``t`` and ``n_frames``, or for an empty or non-finite time vector or angle list.
        """
        self.L = positive_scalar(L, "L", "Give the stator-rotor gap in Å (default 2e6).")
        self.dt = frame_step(dt)
        if t0 is not None:
            if time_origin is not None:
                raise ValueError("Give time_origin only (t0 is its deprecated name).")
            warnings.warn(
                "HomodyneModel(t0=...) is deprecated: use time_origin=...",
                DeprecationWarning,
                stacklevel=4,  # the caller, past equinox's two Module.__call__ layers
            )
            time_origin = t0
        if (t is None) == (n_frames is None):
            raise ValueError("Give exactly one of t (frame times) or n_frames (with time_origin).")
        if t is not None and time_origin is not None:
            raise ValueError("time_origin goes with n_frames; with t, the times are given.")
        if t is None:
            if (
                isinstance(n_frames, bool)
                or not isinstance(n_frames, int | np.integer)
                or n_frames < 1
            ):
                raise ValueError(f"n_frames must be a positive integer; got {n_frames!r}.")
            n_frames = int(n_frames)
            origin = as_float64(0.0 if time_origin is None else time_origin)
            if is_traced(origin, self.dt):
                t = origin + self.dt * jnp.arange(n_frames, dtype=jnp.float64)
            else:  # in NumPy (the same float64 products and sums): eager jnp operations would
                # compile for every new number of frames (0.2–0.3 s per new model shape)
                t = np.float64(origin) + np.float64(self.dt) * np.arange(n_frames, dtype=np.float64)
        self.t = time_vector(t)
        self.phi = angles(phi)
        self.q = wavevectors(q, self.phi.shape[0])

    @property
    def wavevector_q_squared_half_dt(self) -> Float[Array, "*bins"]:
        """½·q²·Δ [1/Å² · s]: multiplies ∫D (in grid steps) in the diffusion exponent (one per
        bin when q is)."""
        return 0.5 * self.q**2 * self.dt

    @property
    def sinc_prefactor(self) -> Float[Array, "*bins"]:
        """q·L·Δ / 2π [s]: multiplies cos(φ0 − φ)·∫γ̇ (in grid steps) in the shear phase (one per
        bin when q is)."""
        return self.q * self.L * self.dt / (2 * math.pi)

    @property
    def q_per_bin(self) -> Float[Array, " n_phi"]:
        """q of every bin, (n_phi,), whether q was given as a scalar or per bin."""
        return jnp.broadcast_to(self.q, self.phi.shape)

    @property
    def n_frames(self) -> int:
        return self.t.shape[0]

    @property
    def n_phi(self) -> int:
        return self.phi.shape[0]

    def rates(
        self, params: Params | ArrayLike
    ) -> tuple[Float[Array, " n_t"], Float[Array, " n_t"] | None]:
        """D(t) [Å²/s] and γ̇(t) [1/s] on the floored frame times (N,); γ̇ is None for static."""
        return _rates(self, _typed(params))

    def g1_diffusion(self, params: Params | ArrayLike) -> Float[Array, "*bins n_t n_t"]:
        """Diffusion factor exp(−½q²Δ·M^D): (N, N), shared by all angles, for one q;
        (n_phi, N, N) when q is given per bin."""
        return _g1_diffusion(self, _typed(params))

    def g1_shear(self, params: Params | ArrayLike) -> Float[Array, "n_phi n_t n_t"]:
        """Shear factor sinc²(Φ), shape (n_phi, N, N); ones for `StaticParams`."""
        return _g1_shear(self, _typed(params))

    def g1(self, params: Params | ArrayLike) -> Float[Array, "n_phi n_t n_t"]:
        """g1 = g1_diffusion · g1_shear floored at 1e-10, shape (n_phi, N, N)."""
        return _g1(self, _typed(params))

    def g2(
        self, params: Params | ArrayLike, contrast: ArrayLike = 1.0, offset: ArrayLike = 1.0
    ) -> Float[Array, "n_phi n_t n_t"]:
        """g2 = offset + contrast · g1², shape (n_phi, N, N).

        Args:
            params: `StaticParams`, `LaminarFlowParams`, or the flat array of 3 or 7 values.
            contrast: scalar or one per angle, (n_phi,). Often called β in the literature.
            offset: scalar or one per angle, (n_phi,) (the baseline, ≈ 1).

        Raises:
            ValueError: for a contrast or offset that is neither scalar nor one per angle, or a flat
                parameter array of another length than 3 or 7.
        """
        c = per_angle(contrast, self.n_phi, "contrast")
        b = per_angle(offset, self.n_phi, "offset")
        return _g2(self, _typed(params), c, b)

    def __call__(
        self, params: Params | ArrayLike, contrast: ArrayLike = 1.0, offset: ArrayLike = 1.0
    ) -> Float[Array, "n_phi n_t n_t"]:
        """Same as `g2`."""
        return self.g2(params, contrast, offset)


def _typed(params: Params | ArrayLike) -> Params:
    p = params if isinstance(params, AbstractParams) else params_from_array(params)
    shapes = {jnp.shape(getattr(p, n)) for n in p.names}
    if shapes != {()}:
        raise ValueError(
            f"params hold a batch (field shapes {sorted(shapes)}); the model evaluates one parameter "
            "set: map over the batch with jax.vmap(lambda p: model.g2(p, ...))(params)."
        )
    return p  # type: ignore[return-value]


# Module-level jitted functions: the model and parameters are traced pytrees (all array leaves), so
# new values of any field reuse the compiled code; Python scalars never reach these (they are
# converted to arrays first), since filter_jit would treat them as static. `spread` splits the
# result over several local devices when there are (see _sharding.py).


@eqx.filter_jit
def _rates(model: HomodyneModel, p: Params):
    t = k.floored_times(model.t)
    d = k.power_law_rate(t, p.D0, p.alpha, p.D_offset)
    if isinstance(p, LaminarFlowParams):
        return d, k.power_law_rate(t, p.gamma_dot_t0, p.beta, p.gamma_dot_t_offset)
    return d, None


@eqx.filter_jit
def _g1_diffusion(model: HomodyneModel, p: Params):
    return spread(g1_diffusion(model.wavevector_q_squared_half_dt, model.t, p))


@eqx.filter_jit
def _g1_shear(model: HomodyneModel, p: Params):
    return spread(g1_shear(model.sinc_prefactor, model.t, model.phi, p))


@eqx.filter_jit
def _g1(model: HomodyneModel, p: Params):
    m = model
    return spread(g1_total(m.wavevector_q_squared_half_dt, m.sinc_prefactor, m.t, m.phi, p))


@eqx.filter_jit
def _g2(model: HomodyneModel, p: Params, contrast, offset):
    g1 = g1_total(model.wavevector_q_squared_half_dt, model.sinc_prefactor, model.t, model.phi, p)
    return spread(k.g2_from_g1(g1, contrast, offset))
