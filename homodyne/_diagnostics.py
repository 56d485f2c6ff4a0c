"""Convergence and importance-sampling diagnostics of posterior draws, in NumPy.

- `rhat`: rank-normalised split R̂ (the larger of the bulk and the folded-tail values), and
  `ess_bulk` / `ess_tail`: effective sample sizes of the rank-normalised draws and of the 5 % and
  95 % quantile indicators, as defined by Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021),
  "Rank-normalization, folding, and localization: an improved R̂", Bayesian Analysis 16, 667.
  The autocorrelations are combined over chains and summed with Geyer's initial monotone
  sequence.
- `psis`: Pareto-smoothed importance sampling (Vehtari, Simpson, Gelman, Yao & Gabry (2024),
  "Pareto smoothed importance sampling", JMLR 25, 1): the largest weights are replaced by the
  expected order statistics of a generalised Pareto fit (Zhang & Stephens 2009), whose shape k̂
  tells whether the importance weights (and so the approximation they correct) can be trusted:
  k̂ ≤ 0.7 for S ≳ 2000 draws.
"""

import math

import numpy as np
from jaxtyping import Float

RHAT_LIMIT = 1.01
ESS_LIMIT = 400
KHAT_LIMIT = 0.7


def _normal_quantile(p: np.ndarray) -> np.ndarray:
    """Φ⁻¹(p) for p in (0, 1), by Acklam's rational approximation refined by two Newton steps
    on erfc (|error| ~ 1e-15): NumPy has no inverse normal CDF and SciPy is not a dependency."""
    p = np.asarray(p, float)
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02,
         1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00)  # fmt: skip
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02,
         6.680131188771972e01, -1.328068155288572e01)  # fmt: skip
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00,
         -2.549732539343734e00, 4.374664141464968e00, 2.938163982698783e00)  # fmt: skip
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00,
         3.754408661907416e00)  # fmt: skip
    q = np.minimum(p, 1 - p)
    z = np.empty_like(p)
    low = q < 0.02425
    t = np.sqrt(-2 * np.log(np.where(low, q, 0.5)))
    tail = (((((c[0] * t + c[1]) * t + c[2]) * t + c[3]) * t + c[4]) * t + c[5]) / (
        (((d[0] * t + d[1]) * t + d[2]) * t + d[3]) * t + 1
    )
    r = (q - 0.5) ** 2
    mid = (
        (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5])
        * (q - 0.5)
        / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    )
    z = np.where(low, tail, mid)  # the quantile of q ≤ ½ (≤ 0)
    erfc = np.vectorize(math.erfc)
    for _ in range(2):  # Newton on Φ(z) = q, Φ(z) = ½ erfc(−z/√2)
        err = 0.5 * erfc(-z / math.sqrt(2)) - q
        z = z - err * math.sqrt(2 * math.pi) * np.exp(0.5 * z * z)
    return np.where(p <= 0.5, z, -z)


def _rank_normalised(x: Float[np.ndarray, "M N"]) -> np.ndarray:
    """z-scores of the pooled ranks (average ranks for ties), (rank − 3/8)/(S + 1/4)."""
    flat = x.ravel()
    order = np.argsort(flat, kind="mergesort")
    ranks = np.empty(flat.size)
    ranks[order] = np.arange(1, flat.size + 1)
    # ties share their average rank
    _, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    if np.any(counts > 1):
        sums = np.bincount(inverse, weights=ranks)
        ranks = (sums / counts)[inverse]
    return _normal_quantile((ranks - 0.375) / (flat.size + 0.25)).reshape(x.shape)


def _split(x: Float[np.ndarray, "M N"]) -> np.ndarray:
    """Each chain cut into its two halves (the middle draw of an odd length dropped)."""
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, x.shape[1] - half :]], axis=0)


def _rhat_of(x: Float[np.ndarray, "M N"]) -> float:
    n = x.shape[1]
    within = np.mean(np.var(x, axis=1, ddof=1))
    between = n * np.var(np.mean(x, axis=1), ddof=1)
    if within == 0:
        return float("nan")
    return float(np.sqrt(((n - 1) / n * within + between / n) / within))


def rhat(x: Float[np.ndarray, "M N"]) -> float:
    """Rank-normalised split R̂ of one parameter's draws (chains, draws): the larger of the
    bulk value and the value of the draws folded about their median. NaN with fewer than 4
    draws per chain or constant draws."""
    x = np.asarray(x, float)
    if x.shape[1] < 4 or np.ptp(x) == 0:
        return float("nan")
    s = _split(x)
    folded = np.abs(s - np.median(s))
    return max(_rhat_of(_rank_normalised(s)), _rhat_of(_rank_normalised(folded)))


def _autocovariance(x: Float[np.ndarray, "M N"]) -> np.ndarray:
    """Autocovariance of each chain at every lag (biased, by FFT), (M, N)."""
    n = x.shape[1]
    centred = x - x.mean(axis=1, keepdims=True)
    size = 1 << (2 * n - 1).bit_length()
    f = np.fft.rfft(centred, size, axis=1)
    return np.fft.irfft(f * np.conj(f), size, axis=1)[:, :n] / n


def _ess_of(x: Float[np.ndarray, "M N"]) -> float:
    m, n = x.shape
    if n < 4 or np.ptp(x) == 0:
        return float("nan")
    acov = _autocovariance(x)
    chain_var = acov[:, 0] * n / (n - 1)
    mean_var = np.mean(chain_var)
    var_plus = mean_var * (n - 1) / n
    if m > 1:
        var_plus += np.var(np.mean(x, axis=1), ddof=1)
    rho = 1 - (mean_var - np.mean(acov, axis=0)) / var_plus
    rho[0] = 1.0
    # Geyer: sums of adjacent pairs while positive, made non-increasing
    pairs = rho[: 2 * (n // 2)].reshape(-1, 2).sum(axis=1)
    positive = np.flatnonzero(pairs <= 0)
    pairs = pairs[: positive[0]] if positive.size else pairs
    pairs = np.minimum.accumulate(pairs)
    tau = -1 + 2 * np.sum(pairs)
    tau = max(tau, 1 / np.log10(m * n))  # ESS at most S·log10(S) (antithetic chains)
    return float(m * n / tau)


def ess_bulk(x: Float[np.ndarray, "M N"]) -> float:
    """Bulk effective sample size of one parameter's draws (chains, draws)."""
    x = np.asarray(x, float)
    if x.shape[1] < 4 or np.ptp(x) == 0:
        return float("nan")
    return _ess_of(_rank_normalised(_split(x)))


def ess_tail(x: Float[np.ndarray, "M N"]) -> float:
    """Tail effective sample size: the smaller of those of the indicators x ≤ q5 % and x ≤ q95 %."""
    x = np.asarray(x, float)
    if x.shape[1] < 4 or np.ptp(x) == 0:
        return float("nan")
    s = _split(x)
    lo, hi = np.quantile(s, [0.05, 0.95])
    return min(_ess_of((s <= lo).astype(float)), _ess_of((s <= hi).astype(float)))


def _gpd_fit(x: Float[np.ndarray, " M"]) -> tuple[float, float]:
    """Shape k and scale σ of a generalised Pareto distribution fitted to the sorted exceedances
    ``x`` > 0: Zhang & Stephens' (2009) posterior-mean estimator, and k shrunk towards 0.5 by a
    weakly informative prior worth 10 draws (Vehtari et al. 2024)."""
    n = x.size
    m = 30 + int(math.sqrt(n))
    # candidate b = −ξ/σ (< 0 for heavy tails), and the profile shape ξ(b) = mean log(1 − b·x)
    b = 1 - np.sqrt(m / (np.arange(1, m + 1) - 0.5))
    b = b / (3 * x[int(n / 4 + 0.5) - 1]) + 1 / x[-1]
    xi = np.mean(np.log1p(-b[:, None] * x[None, :]), axis=1)
    log_lik = n * (np.log(-b / xi) - xi - 1)  # the profile log-likelihood of b
    weights = 1 / np.sum(np.exp(log_lik[None, :] - log_lik[:, None]), axis=1)
    b_hat = np.sum(b * weights) / np.sum(weights)
    k_hat = float(np.mean(np.log1p(-b_hat * x)))
    sigma = -k_hat / b_hat
    return (n * k_hat + 10 * 0.5) / (n + 10), sigma


def psis(log_weights: Float[np.ndarray, " S"]) -> tuple[np.ndarray, float, float]:
    """Pareto-smoothed importance weights.

    Args:
        log_weights: log p(x_s) − log q(x_s) of S draws from the proposal q (any constant).

    Returns:
        (normalised smoothed weights (S,), k̂, importance-sampling ESS 1/Σw²). k̂ is NaN with
        fewer than 5 draws in the tail (S < 25).
    """
    lw = np.asarray(log_weights, float).copy()
    s = lw.size
    lw -= np.max(lw)
    m = math.ceil(min(0.2 * s, 3 * math.sqrt(s)))
    k_hat = float("nan")
    if m >= 5 and s > m:
        order = np.argsort(lw)
        tail = order[-m:]
        cutoff = lw[order[-m - 1]]
        exceed = np.exp(lw[tail]) - np.exp(cutoff)
        if not np.any(exceed > 0):  # equal weights in the tail: nothing heavy to smooth
            k_hat = 0.0
        else:
            k_hat, sigma = _gpd_fit(np.maximum(exceed, np.max(exceed) * 1e-300))
            p = (np.arange(1, m + 1) - 0.5) / m
            if abs(k_hat) < 1e-12:
                quantiles = -sigma * np.log1p(-p)
            else:
                quantiles = sigma / k_hat * (np.power(1 - p, -k_hat) - 1)
            lw[tail] = np.minimum(np.log(np.exp(cutoff) + quantiles), 0.0)
    w = np.exp(lw - np.max(lw))
    w /= np.sum(w)
    return w, float(k_hat), float(1 / np.sum(w * w))
