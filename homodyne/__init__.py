"""homodyne: exact, differentiable XPCS two-time correlations out of equilibrium.

Time-dependent diffusion D(t) = D0·t^α + D_offset and laminar shear γ̇(t) = γ̇0·t^β + γ̇_offset give
g2 = offset + contrast·g1² on a two-time grid (SPEC §2). Build a `HomodyneModel` once, evaluate it
for `StaticParams` or `LaminarFlowParams`, and differentiate through everything with JAX.

Importing homodyne enables float64 in JAX (see `homodyne._precision` for the mechanism and the
``HOMODYNE_DISABLE_X64`` opt-out).
"""

from importlib.metadata import PackageNotFoundError, version

from . import _precision  # noqa: F401  (first: switches JAX to float64)
from ._bounds import DEFAULT_BOUNDS, default_bounds
from ._fit import fit, fit_many
from ._frames import simulate_frames
from ._kernels import straight_through_floor
from ._model import HomodyneModel
from ._options import FitOptions
from ._params import AbstractParams, LaminarFlowParams, StaticParams, params_from_array
from ._posterior import Posterior
from ._prior import LogUniform, Normal, Uniform
from ._result import FitResult, FitStatus, JointFitResult
from ._rings import RingConsistency, ring_consistency
from ._sample import sample
from ._simulate import simulate_c2
from ._solver import FitSolver
from ._spec import FitSpec
from ._trig import sinc

try:
    __version__ = version("homodyne")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "DEFAULT_BOUNDS",
    "AbstractParams",
    "FitOptions",
    "FitResult",
    "FitSolver",
    "FitSpec",
    "FitStatus",
    "HomodyneModel",
    "JointFitResult",
    "LaminarFlowParams",
    "LogUniform",
    "Normal",
    "Posterior",
    "RingConsistency",
    "StaticParams",
    "Uniform",
    "__version__",
    "default_bounds",
    "fit",
    "fit_many",
    "params_from_array",
    "ring_consistency",
    "sample",
    "simulate_c2",
    "simulate_frames",
    "sinc",
    "straight_through_floor",
]
