"""Synthetic C2 data: the model plus Gaussian noise, for examples, tests and `homodyne simulate`."""

import numpy as np
from jaxtyping import ArrayLike

from ._model import HomodyneModel
from ._params import Params


def simulate_c2(
    model: HomodyneModel,
    params: Params,
    contrast: ArrayLike = 0.3,
    offset: ArrayLike = 1.0,
    *,
    noise: float = 0.0,
    seed: int | None = 0,
) -> np.ndarray:
    """g2 of ``model`` for ``params`` plus independent Gaussian noise of standard deviation ``noise``
    on every pair t1 ≤ t2, mirrored so that the result is symmetric like a measured C2.

    Returns:
        (n_phi, N, N) float64 NumPy array.
    """
    if not (np.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be finite and ≥ 0; got {noise}.")
    clean = np.asarray(model.g2(params, contrast, offset))
    if noise == 0:
        return clean
    draw = np.triu(np.random.default_rng(seed).normal(scale=noise, size=clean.shape))
    return clean + draw + np.swapaxes(np.triu(draw, 1), -1, -2)
