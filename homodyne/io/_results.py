"""Fit results on disk: a JSON summary (readable, diffable) plus an NPZ of the arrays."""

import dataclasses
import datetime
import json
import os
import pathlib
import platform
import warnings

import numpy as np
import optimistix as optx

from .._params import LaminarFlowParams, Params, StaticParams
from .._result import FitResult, JointFitResult, full_grid_too_large

FORMAT = "homodyne-fit/1"
JOINT_FORMAT = "homodyne-joint-fit/1"


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("homodyne", "jax", "jaxlib", "equinox", "optimistix", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def save_fit(
    result: FitResult,
    directory: str | os.PathLike,
    *,
    data=None,
    name: str = "fit",
    inputs: dict | None = None,
) -> tuple[pathlib.Path, pathlib.Path]:
    """Write ``name.json`` (parameters, errors, covariance, fit statistics, inputs, versions) and
    ``name.npz`` (times, angles, the frame mask and, when ``data`` is given, data, fit and
    normalised residuals, NaN at excluded frames; not above `homodyne._result.FULL_GRID_LIMIT`
    values, e.g. 23 bins × 10,000 frames: a warning, and the JSON says so under "grids").

    Args:
        result: a single (not batched) `FitResult`.
        data: the fitted C2, (n_phi, N, N), to store beside the fit.
        inputs: extra facts to record (source file, bin labels, frame window, …).

    Returns:
        The paths of the JSON and NPZ files.
    """
    if np.ndim(result.chi2) != 0:
        raise ValueError("save_fit takes one fit; index a batched result first.")
    out = pathlib.Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    p = result.params
    model = result.model
    summary = {
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": "laminar" if p.is_laminar_flow else "static",
        "parameters": {
            n: {
                "value": float(getattr(p, n)),
                "error": float(getattr(result.errors, n)),
                "error_independent": float(getattr(result.errors_independent, n)),
                "unit": u,
            }
            for n, u in zip(p.names, p.units, strict=True)
        },
        "contrast": np.asarray(result.contrast).tolist(),
        "contrast_error": np.asarray(result.contrast_error).tolist(),
        "offset": np.asarray(result.offset).tolist(),
        "offset_error": np.asarray(result.offset_error).tolist(),
        "covariance": {
            "names": list(result.names),
            "matrix": np.asarray(result.covariance).tolist(),
            "kind": "correlated C2 errors: scores over windows of squares of the two-time grid",
            "error_blocks": int(result.error_blocks),
            "n_clusters": int(result.n_clusters),
        },
        "covariance_independent": {
            "names": list(result.names),
            "matrix": np.asarray(result.covariance_independent).tolist(),
            "kind": "independent C2 elements: (J^T J)^-1",
        },
        "statistics": {
            "chi2": float(result.chi2),
            "dof": int(result.dof),
            "reduced_chi2": float(result.reduced_chi2),
            "n_steps": int(result.n_steps),
            "converged": bool(result.converged),
            "decrement": float(result.decrement),
            "solver_message": optx.RESULTS[result.result] or "successful",
            "at_bound": [n for n, b in zip(p.names, np.asarray(result.at_bound), strict=True) if b],
            "near_bound": [
                n for n, b in zip(p.names, np.asarray(result.near_bound), strict=True) if b
            ],
            "bounds": {
                n: [float(lo), float(hi)]
                for n, lo, hi in zip(
                    p.names,
                    np.asarray(result.bounds_lower),
                    np.asarray(result.bounds_upper),
                    strict=True,
                )
                if np.isfinite(lo)
            },
            "sigma_estimated": result.sigma_estimated,
            "frames_excluded": int(np.size(result.frame_mask) - np.sum(result.frame_mask)),
            "sigma": np.asarray(result.sigma).tolist()
            if np.size(result.sigma) <= 64
            else "array (see npz)",
        },
        "inputs": {
            "q": float(model.q) if np.ndim(model.q) == 0 else np.asarray(model.q).tolist(),
            "L": float(model.L),
            "dt": float(model.dt),
            "phi": np.asarray(model.phi).tolist(),
            "n_frames": model.n_frames,
            "time_origin": float(model.t[0]),  # the time of the first frame
            "t_last": float(model.t[-1]),
            **(inputs or {}),
        },
        "versions": _versions(),
    }
    too_large = full_grid_too_large(result) if data is not None else ""
    if too_large:
        summary["grids"] = f"not stored: {too_large}"
    json_path, npz_path = out / f"{name}.json", out / f"{name}.npz"
    json_path.write_text(json.dumps(_finite_json(summary), indent=2, allow_nan=False))
    arrays = {
        "t": np.asarray(model.t),
        "phi": np.asarray(model.phi),
        "sigma": np.asarray(result.sigma),
        "frame_mask": np.asarray(result.frame_mask),
    }
    if too_large:
        warnings.warn(f"save_fit stores no data, fit or residual grids: {too_large}.", stacklevel=2)
    elif data is not None:
        arrays["data"] = np.asarray(data, dtype=np.float64)
        arrays["fit"] = np.asarray(result.fitted_g2())
        arrays["residuals"] = np.asarray(result.residuals(data))
    np.savez_compressed(npz_path, **arrays)  # pyright: ignore[reportArgumentType]
    return json_path, npz_path


def save_joint_fit(
    joint: JointFitResult,
    directory: str | os.PathLike,
    *,
    data=None,
    name: str = "fit",
    inputs=None,
) -> list[pathlib.Path]:
    """Write a joint fit of several runs: each run as `save_fit` writes one fit
    (``<name>_run<r>.json`` and ``.npz``, readable with `load_fit`), and ``<name>_joint.json``:
    the joint parameters' names, both covariances over all of them (the runs' own files hold
    only their blocks), χ², dof and convergence of the whole fit, and the runs' files.

    Args:
        joint: a `homodyne.JointFitResult`.
        data: ``None``, or one C2 array per run (stored beside each run's fit).
        inputs: ``None``, or one dict of extra facts per run (source file, frames, …).

    Returns:
        The paths written, the joint JSON first.
    """
    n = len(joint.runs)
    data = [None] * n if data is None else list(data)
    inputs = [None] * n if inputs is None else list(inputs)
    if len(data) != n or len(inputs) != n:
        raise ValueError(
            f"data and inputs need one entry per run ({n}); got {len(data)}, {len(inputs)}."
        )
    out = pathlib.Path(directory)
    paths: list[pathlib.Path] = []
    for r, (run, d, facts) in enumerate(zip(joint.runs, data, inputs, strict=True)):
        paths.extend(save_fit(run, out, data=d, name=f"{name}_run{r}", inputs=facts))
    summary = {
        "format": JOINT_FORMAT,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "runs": [p.name for p in paths if p.suffix == ".json"],
        "per_run": list(joint.per_run),
        "covariance": {
            "names": list(joint.names),
            "matrix": np.asarray(joint.covariance).tolist(),
            "kind": "correlated C2 errors: scores over windows of squares of each run's two-time grid",
        },
        "covariance_independent": {
            "names": list(joint.names),
            "matrix": np.asarray(joint.covariance_independent).tolist(),
            "kind": "independent C2 elements: (J^T J)^-1",
        },
        "statistics": {
            "chi2": float(joint.chi2),
            "dof": int(joint.dof),
            "reduced_chi2": float(joint.reduced_chi2),
            "n_steps": int(joint.n_steps),
            "converged": bool(joint.converged),
            "decrement": float(joint.decrement),
            "solver_message": optx.RESULTS[joint.result] or "successful",
        },
        "sigma_estimated": joint.sigma_estimated,
        "versions": _versions(),
    }
    joint_path = out / f"{name}_joint.json"
    joint_path.write_text(json.dumps(_finite_json(summary), indent=2, allow_nan=False))
    return [joint_path, *paths]


def _finite_json(value):
    """Strict JSON has no NaN or infinity (a degenerate fit can have both): store them as the
    strings "nan", "inf", "-inf", which float() and NumPy read back."""
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_json(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


@dataclasses.dataclass(frozen=True, eq=False)
class SavedFit:
    """A fit read back from disk: the same numbers `save_fit` wrote."""

    params: Params
    errors: Params
    errors_independent: Params
    contrast: np.ndarray
    contrast_error: np.ndarray
    offset: np.ndarray
    offset_error: np.ndarray
    names: tuple[str, ...]
    covariance: np.ndarray
    covariance_independent: np.ndarray
    statistics: dict
    inputs: dict
    versions: dict
    arrays: dict


def read_summary(path: str | os.PathLike, form: str, what: str) -> tuple[pathlib.Path, dict]:
    """The JSON file at ``path`` (".json" added if missing) and its content, which must be of
    format ``form`` (FileNotFoundError, or ValueError naming ``what`` it is not)."""
    json_path = pathlib.Path(path)
    if json_path.suffix != ".json":
        json_path = json_path.with_suffix(".json")
    if not json_path.exists():
        raise FileNotFoundError(f"no such file: {json_path}")
    summary = json.loads(json_path.read_text())
    if summary.get("format") != form:
        raise ValueError(
            f"{json_path} is not a homodyne {what} file (format {summary.get('format')!r})."
        )
    return json_path, summary


def load_fit(path: str | os.PathLike) -> SavedFit:
    """Read a fit written by `save_fit`; ``path`` is the JSON file (its NPZ sits beside it)."""
    json_path, summary = read_summary(path, FORMAT, "fit")
    cls = LaminarFlowParams if summary["mode"] == "laminar" else StaticParams
    table = summary["parameters"]
    npz_path = json_path.with_suffix(".npz")
    arrays = dict(np.load(npz_path)) if npz_path.exists() else {}
    return SavedFit(
        params=cls.from_array(np.array([table[n]["value"] for n in cls.names], dtype=float)),
        errors=cls.from_array(np.array([table[n]["error"] for n in cls.names], dtype=float)),
        errors_independent=cls.from_array(
            np.array([table[n]["error_independent"] for n in cls.names], dtype=float)
        ),
        contrast=np.array(summary["contrast"], dtype=float),
        contrast_error=np.array(summary["contrast_error"], dtype=float),
        offset=np.array(summary["offset"], dtype=float),
        offset_error=np.array(summary["offset_error"], dtype=float),
        names=tuple(summary["covariance"]["names"]),
        covariance=np.array(summary["covariance"]["matrix"], dtype=float),
        covariance_independent=np.array(summary["covariance_independent"]["matrix"], dtype=float),
        statistics=summary["statistics"],
        inputs=summary["inputs"],
        versions=summary["versions"],
        arrays=arrays,
    )
