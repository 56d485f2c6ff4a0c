"""Posterior draws on disk, beside the fit they started from: ``posterior.json`` (the summary
table, diagnostics, prior, sampler settings, versions) and ``posterior.npz`` (the draws)."""

import dataclasses
import datetime
import json
import os
import pathlib

import numpy as np

from .._posterior import Posterior
from ._results import _finite_json, _versions, read_summary

FORMAT = "homodyne-posterior/1"


def save_posterior(
    posterior: Posterior, directory: str | os.PathLike, *, name: str = "posterior"
) -> tuple[pathlib.Path, pathlib.Path]:
    """Write ``name.json`` and ``name.npz`` (draws (chains, draws, G), weights, and the per-chain
    NUTS statistics). Save the fit beside it with `save_fit` (``posterior.fit``).

    Returns:
        The paths of the JSON and NPZ files.
    """
    out = pathlib.Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "format": FORMAT,
        "written": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "method": posterior.method,
        "names": list(posterior.names),
        "num_chains": posterior.num_chains,
        "num_draws": posterior.num_draws,
        "adjusted": posterior.adjusted,
        "prior": list(posterior.prior),
        "warnings": list(posterior.warnings),
        "summary": posterior.summary(),
        "diagnostics": {
            "divergences": [int(d) for d in np.asarray(posterior.divergences)],
            "leapfrog_steps_per_draw": float(posterior.leapfrog_steps),
            "step_size": [float(s) for s in np.asarray(posterior.step_size)],
            "acceptance": [float(a) for a in np.asarray(posterior.acceptance)],
            "khat": float(posterior.khat),
            "ess_importance": float(posterior.ess_importance),
            "seconds": posterior.seconds,
        },
        "mode": [float(v) for v in np.asarray(posterior.mode)],
        "adjustment": np.asarray(posterior.adjustment).tolist(),
        "versions": _versions(),
    }
    json_path = out / f"{name}.json"
    npz_path = out / f"{name}.npz"
    json_path.write_text(json.dumps(_finite_json(summary), indent=2, allow_nan=False))
    np.savez_compressed(
        npz_path,
        values=np.asarray(posterior.values),
        weights=np.asarray(posterior.weights),
        names=np.array(posterior.names),
    )
    return json_path, npz_path


@dataclasses.dataclass(frozen=True, eq=False)
class SavedPosterior:
    """A posterior read back from disk: the draws and what `save_posterior` wrote about them."""

    names: tuple[str, ...]
    values: np.ndarray  # (chains, draws, G)
    weights: np.ndarray  # (chains, draws)
    method: str
    adjusted: bool
    prior: tuple[str, ...]
    warnings: tuple[str, ...]
    summary: dict
    diagnostics: dict
    versions: dict

    def __getitem__(self, name: str) -> np.ndarray:
        """The draws of one parameter, (chains, draws)."""
        return self.values[..., self.names.index(name)]


def load_posterior(path: str | os.PathLike) -> SavedPosterior:
    """Read a posterior written by `save_posterior`; ``path`` is its JSON (the NPZ sits beside)."""
    json_path, summary = read_summary(path, FORMAT, "posterior")
    with np.load(json_path.with_suffix(".npz")) as arrays:
        values, weights = arrays["values"], arrays["weights"]
    return SavedPosterior(
        names=tuple(summary["names"]),
        values=values,
        weights=weights,
        method=summary["method"],
        adjusted=summary["adjusted"],
        prior=tuple(summary["prior"]),
        warnings=tuple(summary["warnings"]),
        summary=summary["summary"],
        diagnostics=summary["diagnostics"],
        versions=summary["versions"],
    )
