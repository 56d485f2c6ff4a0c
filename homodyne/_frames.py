"""Frame-level simulation of a measured C2 (SPEC §6): speckle, photon counts, the correlator.

A measured two-time matrix is not the model plus independent noise. Every element of row i shares
frame i's speckle pattern, and frames close in time share speckles while g1 between them is high,
so the errors of C2 elements are correlated along rows, columns and near the diagonal. This module
makes C2 the way a detector and the correlator do, so that fits, their error bars and experiment
plans can be checked against data with that structure.

Per bin (angle): ``pixels`` pixels, each the sum of ``modes`` independent speckle modes (speckle
contrast 1/M). Each mode's field is a complex Gaussian process over the frames whose correlation
is the model's g1 exactly: ⟨E(t_i) E*(t_j)⟩ = g1_ij (diffusion and laminar shear, SPEC §2). SPEC §6
describes the same field as a Markov factor exp(−½q²∫D) between consecutive frames times a sum of
sub-fields across the gap whose positions have a triangular density (characteristic function
sinc²); with finitely many sub-fields that sum is not Gaussian, and its intensity correlation misses
Siegert's 1 + |g1|² by up to 1/S. Drawing the field from its covariance (a Cholesky factor of g1
over the frames) gives the Gaussian limit exactly, at a cost of one matrix product per bin.

Counts are Poisson with mean ``counts``·I (I the pixel's intensity, mean 1). The correlator
divides each pixel's counts, frame by frame, by the mean count of its static bin in that frame
(``static_bins`` equal groups of each bin's pixels), and writes C2_ij = mean over pixels of
x_p(t_i)·x_p(t_j). Off the diagonal its expectation is 1 + g1²/M (up to terms of order 1/pixels);
the diagonal carries the shot-noise excess 1/μ (μ = ``counts``).
"""

import numpy as np
from jaxtyping import Float

from ._model import HomodyneModel
from ._params import Params


def simulate_frames(
    model: HomodyneModel,
    params: Params,
    *,
    pixels: int = 1000,
    modes: int = 5,
    counts: float = 1.0,
    static_bins: int = 1,
    seed: int | None = 0,
) -> Float[np.ndarray, "n_phi N N"]:
    """C2 as the beamline correlator would write it from detector frames of ``model`` with
    dynamics ``params`` (SPEC §6): speckle, Poisson counts, per-frame normalisation by the static
    bins, the full symmetric matrix with its diagonal.

    Use it to plan an experiment: simulate with the pixels per bin, count rate, speckle contrast
    and frames you expect, fit, and see the error bars you would get (``homodyne.fit`` reports
    errors that account for the correlated noise such data carry). For example, at one count per
    pixel and frame and contrast 0.2, halving the error of alpha takes about four times the pixels
    (or the frames, where the dynamics allow).

    Args:
        model: the experiment (frame times, q, L, angles). One bin of pixels per angle.
        params: `StaticParams` or `LaminarFlowParams`: the field's correlation is the model's g1.
        pixels: pixels per bin (≥ 2).
        modes: speckle modes per pixel M (≥ 1): contrast 1/M (the fitted contrast comes out
            close to it).
        counts: mean photon count per pixel and frame, μ > 0.
        static_bins: groups of each bin's pixels whose mean count per frame normalises them
            (the correlator's static bins), each of at least 2 pixels.
        seed: for `numpy.random.default_rng`.

    Returns:
        C2, (n_phi, N, N) float64, symmetric. Off the diagonal its mean is ≈ 1 + g1²/M.

    Cost: a Cholesky factor per angle (one in static mode) and two matrix products of N × N by
    N × pixels·M: 23 angles × 1000 frames × 1000 pixels with 5 modes takes about 10 s on 2 cores.
    """
    if not isinstance(model, HomodyneModel):
        raise TypeError(f"model must be a HomodyneModel; got {type(model).__name__}.")
    _check_int("pixels", pixels, 2)
    _check_int("modes", modes, 1)
    _check_int("static_bins", static_bins, 1)
    if not (isinstance(counts, int | float | np.floating) and np.isfinite(counts) and counts > 0):
        raise ValueError(f"counts (mean photons per pixel and frame) must be > 0; got {counts!r}.")
    if pixels // static_bins < 2:
        raise ValueError(
            f"each static bin needs at least 2 pixels; {pixels} pixels in {static_bins} bins."
        )
    rng = np.random.default_rng(seed)
    g1 = np.asarray(model.g1(params), dtype=np.float64)
    n_phi, n = g1.shape[0], g1.shape[-1]
    shared = not params.is_laminar_flow  # one correlation for every angle
    out = np.empty((n_phi, n, n))
    factor = None
    for k in range(n_phi):
        if factor is None or not shared:
            factor = _cholesky(g1[k])
        out[k] = _bin_c2(factor, rng, pixels, modes, float(counts), static_bins)
    return out


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}; got {value!r}.")


def _cholesky(g1: Float[np.ndarray, "N N"]) -> Float[np.ndarray, "N N"]:
    """Lower Cholesky factor of the frames' field correlation. Neighbouring frames of slow
    dynamics are nearly identical (g1 → 1), which leaves the matrix singular to rounding: a
    diagonal jitter, as small as works (≤ 1e-6, white noise of that variance), makes it definite."""
    sym = 0.5 * (g1 + g1.T)
    for jitter in (1e-12, 1e-10, 1e-8, 1e-6):
        try:
            return np.linalg.cholesky(sym + jitter * np.eye(sym.shape[0]))
        except np.linalg.LinAlgError:
            continue
    raise ValueError(
        "the model's g1 over these frames is not a valid correlation (not positive definite): "
        "check the parameters."
    )


def _bin_c2(factor, rng, pixels: int, modes: int, counts: float, static_bins: int):
    """C2 of one bin: fields, intensities, counts, normalisation, the correlator's product."""
    n = factor.shape[0]
    # independent unit complex Gaussians; real and imaginary parts side by side: one product
    white = rng.standard_normal((n, 2 * pixels * modes))
    field = factor @ white  # (n, 2·pixels·modes), each column's covariance is g1
    intensity = np.einsum("tpm,tpm->tp", *[field.reshape(n, pixels, 2 * modes)] * 2) / (2 * modes)
    hits = rng.poisson(counts * intensity).astype(np.float64)  # (n, pixels)
    # the correlator: each pixel divided by its static bin's mean count in the same frame
    groups = np.array_split(np.arange(pixels), static_bins)
    x = np.empty_like(hits)
    for g in groups:
        mean = hits[:, g].mean(axis=1, keepdims=True)
        x[:, g] = np.divide(hits[:, g], mean, out=np.zeros_like(hits[:, g]), where=mean > 0)
    return (x @ x.T) / pixels
