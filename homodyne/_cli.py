"""The ``homodyne`` command: inspect APS files, fit them, simulate data, run a demo.

    homodyne info FILE
    homodyne fit FILE --mode static|laminar [--q Q ...] [--phi ...] [--frames FIRST:LAST]
                 [--exclude-frames 12,40-45] [--bounds NAME=LO:HI ...] [--init NAME=V ...]
                 [--fixed NAME=V ...] [--scaling per_angle|shared] [--max-steps N] [--gap L]
                 [--time-origin T | --sample-age T] [--dt DT] [--out DIR [--overwrite]]
                 [--progress]
    homodyne fit FILE FILE ... --mode static|laminar [--per-run NAME ...]
                 [--sample-age T T ... | --time-origin T T ...] [the options above]
    homodyne --version
    homodyne simulate OUT.h5 [--n-frames N] [--dt DT] [--q Q] [--phi ...] [--mode ...] ...
    homodyne demo [--out DIR]

Bad input ends with a one-line message on stderr and exit code 2 (set HOMODYNE_DEBUG=1 for the
traceback).

Bad frames: ``fit`` masks the frames whose rows are NaN/inf or all zero in the file (one line on
stderr names them), and ``--exclude-frames`` excludes more (1-based frame numbers of the file,
inclusive ranges). Every pair of frames that touches an excluded frame is left out of the fit;
the time axis is unchanged.

Several files (runs: windows or sample ages of one sample) are fitted jointly: one D(t) (and
γ̇(t)) for all, except the ``--per-run`` parameters; each file gets its own frames, ages, q, bins,
contrast and offset, and its results and plots (``fit_run0.json``, ``fit_run0_c2_….png``, …) beside
``fit_joint.json``.

Compiled code is kept in JAX's persistent compilation cache, in ``$HOMODYNE_COMPILE_CACHE_DIR`` or
else ``$XDG_CACHE_HOME/homodyne/jax`` (``~/.cache/homodyne/jax``), so a second fit of the same shape
reads it from disk instead of compiling it again. ``--no-compile-cache`` or
``HOMODYNE_NO_COMPILE_CACHE=1`` turns it off; deleting the directory is always safe.
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time
from typing import Any

import numpy as np

EXIT_USAGE = 2
CACHE_DIR_ENV = "HOMODYNE_COMPILE_CACHE_DIR"
NO_CACHE_ENV = "HOMODYNE_NO_COMPILE_CACHE"


class _Fail(Exception):
    """A user-facing error: printed as one line."""


def _say(message: str) -> None:
    print(message, flush=True)


def _frames(text: str) -> tuple[int, int]:
    try:
        first, last = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--frames takes FIRST:LAST (1-based, inclusive), e.g. 1:500; got {text!r}"
        ) from None
    return first, last


def _frame_list(text: str) -> tuple[int, ...]:
    """``12,40-45`` → (12, 40, 41, …, 45): 1-based frame numbers, inclusive ranges (`_Fail` for
    anything else: a one-line error, like every bad input of the command)."""
    frames: set[int] = set()
    for part in text.split(","):
        bounds = part.strip().replace("–", "-").split("-")
        try:
            if len(bounds) > 2:
                raise ValueError
            first, last = int(bounds[0]), int(bounds[-1])
        except ValueError:
            raise _Fail(
                f"--exclude-frames takes 1-based frame numbers and inclusive ranges separated by "
                f"commas, e.g. 12,40-45; got {part.strip()!r} in {text!r}"
            ) from None
        if first < 1:
            raise _Fail(f"--exclude-frames: frame numbers start at 1; got {first} in {text!r}")
        if last < first:
            raise _Fail(
                f"--exclude-frames: the range {part.strip()} runs backwards; write {last}-{first}"
            )
        frames.update(range(first, last + 1))
    return tuple(sorted(frames))


def _assignments(items: list[str] | None, option: str, form: str) -> dict[str, str]:
    """``["D0=1e4", "alpha=-0.5"]`` → {"D0": "1e4", "alpha": "-0.5"} (`_Fail` for anything else)."""
    out: dict[str, str] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise _Fail(f"{option} takes {form}; got {item!r}")
        if name.strip() in out:
            raise _Fail(f"{option}: {name.strip()} is given twice")
        out[name.strip()] = value.strip()
    return out


def _number(text: str, option: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _Fail(f"{option}: the value of {name} must be a number; got {text!r}") from None
    if not np.isfinite(value):
        raise _Fail(f"{option}: the value of {name} must be finite; got {text!r}")
    return value


def _bounds_option(items: list[str] | None) -> dict[str, tuple[float, float]]:
    """``--bounds D0=1e3:1e7 alpha=-1:1`` → {"D0": (1e3, 1e7), "alpha": (-1.0, 1.0)}."""
    out = {}
    for name, text in _assignments(items, "--bounds", "NAME=LO:HI, e.g. D0=1e3:1e7").items():
        lo, sep, hi = text.partition(":")
        if not sep:
            raise _Fail(f"--bounds takes NAME=LO:HI, e.g. D0=1e3:1e7; got {name}={text}")
        out[name] = (_number(lo, "--bounds", name), _number(hi, "--bounds", name))
    return out


def _values_option(items: list[str] | None, option: str) -> dict[str, float]:
    pairs = _assignments(items, option, "NAME=VALUE, e.g. D_offset=0")
    return {name: _number(text, option, name) for name, text in pairs.items()}


def _init_option(values: dict[str, float], mode: str):
    """A complete parameter set of the mode from ``--init`` (None when not given)."""
    from ._params import LaminarFlowParams, StaticParams

    if not values:
        return None
    cls = LaminarFlowParams if mode == "laminar" else StaticParams
    unknown = [n for n in values if n not in cls.names]
    if unknown:
        raise _Fail(
            f"--init: {mode} fits have the parameters {', '.join(cls.names)}; not {unknown}"
        )
    missing = [n for n in cls.names if n not in values]
    if missing:
        raise _Fail(
            f"--init needs every parameter of a {mode} fit (a start is one point); missing: "
            f"{', '.join(missing)}. Leave --init out for the automatic start"
        )
    return cls(*(values[n] for n in cls.names))


#: what `homodyne fit` writes into --out (removed first with --overwrite, so no stale plot stays)
OUTPUT_PATTERNS = ("fit.json", "fit.npz", "fit_*.json", "fit_*.npz", "fit_*.png")


def _prepare_out(out: pathlib.Path, overwrite: bool, remove: bool) -> None:
    """Refuse an --out that is a file, or that holds an earlier result without ``overwrite``;
    with ``remove``, delete that earlier result (its plots included: none is left stale)."""
    if out.exists() and not out.is_dir():
        raise _Fail(f"--out must be a directory; {out} is a file.")
    earlier = (
        sorted(p for pattern in OUTPUT_PATTERNS for p in out.glob(pattern)) if out.is_dir() else []
    )
    if earlier and not overwrite:
        raise _Fail(
            f"{out} holds an earlier result ({earlier[0].name}, …): choose another --out, or "
            "pass --overwrite to replace it"
        )
    if remove:
        for path in earlier:
            path.unlink()


def compile_cache_dir() -> pathlib.Path:
    """Where the command keeps compiled code: ``$HOMODYNE_COMPILE_CACHE_DIR`` if set, else
    ``$XDG_CACHE_HOME/homodyne/jax``, else ``~/.cache/homodyne/jax``."""
    if os.environ.get(CACHE_DIR_ENV):
        return pathlib.Path(os.environ[CACHE_DIR_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "homodyne" / "jax"


def _use_compile_cache(enabled: bool) -> pathlib.Path | None:
    """Turn JAX's persistent compilation cache on (in `compile_cache_dir`) or off, before anything
    compiles. Every compiled function is stored, however small or fast to compile: a fit compiles
    dozens of them, and together the small ones cost about 2 s per process (measured, 3 × 500)."""
    import jax

    if not enabled or os.environ.get(NO_CACHE_ENV, "") not in ("", "0"):
        jax.config.update("jax_enable_compilation_cache", False)  # also a JAX_COMPILATION_CACHE_DIR
        return None
    path = compile_cache_dir()
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return path


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="homodyne", description="Fit XPCS two-time correlations out of equilibrium."
    )
    parser.add_argument("--version", action="version", version=f"homodyne {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    compiles = argparse.ArgumentParser(add_help=False)  # the options of commands that compile
    compiles.add_argument(
        "--no-compile-cache",
        action="store_true",
        help=f"do not read or write compiled code in {compile_cache_dir()} "
        f"(also {NO_CACHE_ENV}=1; {CACHE_DIR_ENV} moves it)",
    )

    info = sub.add_parser("info", help="list the two-time bins of an APS 8-ID-I file")
    info.add_argument("file")

    # the options of `fit`, which `sample` shares (it fits first, and samples from there)
    fitting = argparse.ArgumentParser(add_help=False)
    fitting.add_argument(
        "file",
        nargs="+",
        help="the file; several files (runs: other windows, sample ages) are fitted jointly, "
        "sharing the physical parameters except --per-run ones",
    )
    fitting.add_argument(
        "--per-run",
        nargs="+",
        default=[],
        metavar="NAME",
        help="with several files: parameters fitted separately for each, e.g. D_offset",
    )
    fitting.add_argument(
        "--q",
        type=float,
        nargs="+",
        help="wavevector(s) [1/Å] of the rings to fit (nearest within 2 %%; default: every ring "
        "of the file, fitted jointly: one D(t), contrast and offset per bin)",
    )
    fitting.add_argument(
        "--phi", type=float, nargs="+", help="angles [deg] in each ring (default: all)"
    )
    fitting.add_argument(
        "--frames",
        type=_frames,
        metavar="FIRST:LAST",
        help="analysed window, 1-based, inclusive (default: all frames)",
    )
    fitting.add_argument(
        "--exclude-frames",
        metavar="LIST",
        default="",
        help="frames to leave out of the fit (beam dumps, glitches): 1-based frame numbers of the "
        "file and inclusive ranges, e.g. 12,40-45; every pair touching one is dropped, the time "
        "axis is unchanged. Frames outside --frames are ignored (with a note). Frames whose rows "
        "are NaN/inf or all zero in the file are excluded automatically",
    )
    fitting.add_argument(
        "--mode",
        choices=["static", "laminar"],
        help="static (D(t) only) or laminar flow (D(t), γ̇(t), φ0); required with several bins "
        "(never guessed); one bin: static",
    )
    fitting.add_argument(
        "--bounds",
        nargs="+",
        metavar="NAME=LO:HI",
        help="bounds in physical units, e.g. D0=1e3:1e7 alpha=-1:1 (default: SPEC §4's scaled to "
        "the experiment's q, frame step and window)",
    )
    fitting.add_argument(
        "--init",
        nargs="+",
        metavar="NAME=V",
        help="start from these values (every parameter of the mode; default: automatic start)",
    )
    fitting.add_argument(
        "--fixed", nargs="+", metavar="NAME=V", help="hold parameters at values, e.g. D_offset=0"
    )
    fitting.add_argument(
        "--scaling",
        choices=["per_angle", "shared"],
        default="per_angle",
        help="contrast and offset per bin (default) or one of each for all",
    )
    fitting.add_argument(
        "--max-steps", type=int, default=256, metavar="N", help="solver step limit (default 256)"
    )
    fitting.add_argument(
        "--gap", type=float, default=2e6, metavar="L", help="stator–rotor gap L [Å] (default 2e6)"
    )
    ages = fitting.add_mutually_exclusive_group()
    ages.add_argument(
        "--time-origin",
        type=float,
        nargs="+",
        metavar="T",
        help="the sample's age [s] at the first analysed frame (default 0); one per file, or "
        "one for all",
    )
    ages.add_argument(
        "--sample-age",
        type=float,
        nargs="+",
        metavar="T",
        help="the sample's age [s] at frame 1 of the file, whatever --frames analyses (frame k "
        "is at T + (k − 1)·dt); one per file, or one for all",
    )
    fitting.add_argument("--dt", type=float, help="frame step [s] (default: from the file)")
    fitting.add_argument(
        "--sigma", type=float, help="noise σ of C2 (default: estimated from the data)"
    )
    fitting.add_argument(
        "--out", default="homodyne-results", help="output directory (default ./homodyne-results)"
    )
    fitting.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier result in --out (its plots included)",
    )
    fitting.add_argument("--no-plots", action="store_true", help="skip the PNG pictures")
    fitting.add_argument(
        "--progress",
        action="store_true",
        help="show the solver's steps and χ² on one updating line of stderr (JAX cannot cache "
        "code that prints: the fit then compiles again in every process)",
    )
    # per-step progress was the default once; --quiet still parses, and means the default
    fitting.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)

    sub.add_parser(
        "fit",
        parents=[compiles, fitting],
        help="fit the C2 maps of a file: every q ring jointly, or chosen rings and angles",
    )
    sample = sub.add_parser(
        "sample",
        parents=[compiles, fitting],
        help="the posterior of the physical parameters: fit, then draw (NUTS, or the checked "
        "Laplace approximation); draws, summary and plots beside the fit's results",
    )
    sample.add_argument(
        "--method",
        choices=["nuts", "laplace"],
        default="nuts",
        help="nuts (default; needs blackjax: pip install 'homodyne[sample]') or laplace (the "
        "Gaussian at the posterior mode, checked by Pareto-smoothed importance sampling)",
    )
    sample.add_argument("--chains", type=int, default=4, help="chains (default 4)")
    sample.add_argument("--draws", type=int, default=1000, help="draws per chain (default 1000)")
    sample.add_argument(
        "--warmup", type=int, default=200, help="NUTS warm-up steps per chain (default 200)"
    )
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument(
        "--independent",
        action="store_true",
        help="take every C2 element's error as independent (default: the likelihood is adjusted "
        "to the fit's error covariance, as measured C2 elements share frames)",
    )

    sim = sub.add_parser(
        "simulate", parents=[compiles], help="write a synthetic file in the newer APS layout"
    )
    sim.add_argument("out", help="HDF5 file to write")
    sim.add_argument(
        "--n-frames", type=int, default=200, metavar="N", help="number of frames (default 200)"
    )
    # --frames is a window FIRST:LAST in `fit`; here it was once the count: still read, with a warning
    sim.add_argument("--frames", type=int, dest="old_frames", help=argparse.SUPPRESS)
    sim.add_argument("--dt", type=float, default=0.1, help="frame step [s] (default 0.1)")
    sim.add_argument(
        "--q",
        type=float,
        nargs="+",
        default=[0.0054],
        help="wavevector(s) [1/Å], one ring each (default 0.0054)",
    )
    sim.add_argument("--phi", type=float, nargs="+", default=[0.0, 45.0, 90.0], help="angles [deg]")
    sim.add_argument("--mode", choices=["static", "laminar"], default="laminar")
    sim.add_argument(
        "--params", type=float, nargs="+",
        help="3 (static) or 7 (laminar) values: D0 alpha D_offset [gamma_dot_t0 beta gamma_dot_t_offset phi0]",
    )  # fmt: skip
    sim.add_argument("--contrast", type=float, default=0.3)
    sim.add_argument("--offset", type=float, default=1.0)
    sim.add_argument(
        "--noise", type=float, default=3e-3, help="Gaussian noise σ on C2 (default 3e-3)"
    )
    sim.add_argument("--gap", type=float, default=2e6, metavar="L", help="stator–rotor gap L [Å]")
    sim.add_argument(
        "--time-origin", type=float, default=0.0, metavar="T", help="time of the first frame [s]"
    )
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--overwrite", action="store_true")

    demo = sub.add_parser(
        "demo",
        parents=[compiles],
        help="simulate → write HDF5 → load → fit → plots, on an embedded example",
    )
    demo.add_argument("--out", help="output directory (default: a new temporary directory)")
    return parser


DEMO_PARAMS = {
    "laminar": [1.2e4, -0.5, 50.0, 1.5e-3, 0.4, 2e-4, 4.0],
    "static": [1.2e4, -0.5, 50.0],
}


def _info(args) -> None:
    from .io import inspect_file

    info = inspect_file(args.file)
    dt = (
        f"{info.dt:.6g} s"
        if info.dt is not None
        else f"unknown: {', '.join(info.dt_missing)} missing (pass --dt)"
    )
    _say(f"{info.path}: {info.layout} layout, frame step dt = {dt}, {len(info.bins)} two-time bins")
    _say(f"{'label':>6} {'q [1/Å]':>12} {'φ [deg]':>9} {'N':>6}")
    for b in info.bins:
        _say(f"{b.label:>6} {b.q:>12.6g} {b.phi:>9.4g} {b.n_frames:>6}")


def _simulate(args) -> pathlib.Path:
    import homodyne

    from .io import write_aps_file

    if args.old_frames is not None:
        print("homodyne: warning: simulate --frames N is now --n-frames N", file=sys.stderr)
        args.n_frames = args.old_frames
    if args.n_frames < 6:
        raise _Fail(
            f"--n-frames must be at least 6 (a fit needs them to estimate the noise); got {args.n_frames}."
        )
    values = args.params if args.params is not None else DEMO_PARAMS[args.mode]
    if len(values) != (7 if args.mode == "laminar" else 3):
        raise _Fail(
            f"--params needs {7 if args.mode == 'laminar' else 3} values for --mode {args.mode}; got {len(values)}."
        )
    params = homodyne.params_from_array(np.array(values, float))
    rings = np.asarray(args.q, dtype=float)  # every ring gets every angle
    model = homodyne.HomodyneModel(
        q=float(rings[0]) if rings.size == 1 else np.repeat(rings, len(args.phi)),
        dt=args.dt,
        n_frames=args.n_frames,
        phi=np.tile(np.asarray(args.phi, dtype=float), rings.size),
        L=args.gap,
        time_origin=args.time_origin,
    )
    c2 = homodyne.simulate_c2(
        model, params, args.contrast, args.offset, noise=args.noise, seed=args.seed
    )
    path = write_aps_file(
        args.out,
        c2,
        q=np.asarray(model.q_per_bin),
        phi=np.asarray(model.phi),
        frame_time=args.dt,
        overwrite=args.overwrite,
    )
    _say(
        f"wrote {path}: {model.n_phi} bins × {args.n_frames} frames, q = "
        f"{', '.join(f'{v:g}' for v in rings)} 1/Å, φ = {', '.join(f'{p:g}' for p in args.phi)}°, "
        f"dt = {args.dt:g} s"
    )
    return path


def _per_file(values, files: list[str], option: str) -> list:
    """One value of an option per file: none given (None each), one for all, or one each."""
    if values is None:
        return [None] * len(files)
    if len(values) == 1:
        return list(values) * len(files)
    if len(values) != len(files):
        raise _Fail(f"{option} takes one value, or one per file ({len(files)}); got {len(values)}")
    return list(values)


def _load_run(args, path: str, time_origin, sample_age, requested):
    """Load one file as the options say (bad frames masked and reported), print what was
    loaded; the dataset, its frame mask and the excluded frame numbers."""
    import warnings

    from .io import BadFramesWarning, load_two_time
    from .io._aps import frame_ranges

    _say(f"loading {path} …")
    with warnings.catch_warnings():  # reported below, in the command's words
        warnings.simplefilter("ignore", BadFramesWarning)
        dataset = load_two_time(
            path,
            q=args.q,
            phi=args.phi,
            frames=args.frames,
            time_origin=time_origin,
            sample_age=sample_age,
            dt=args.dt,
            bad_frames="mask",
        )
    n = dataset.c2.shape[-1]
    q_bins = np.broadcast_to(np.asarray(dataset.q, dtype=float), dataset.phi.shape)
    for value in np.unique(q_bins):
        angles = ", ".join(f"{p:g}" for p in dataset.phi[q_bins == value])
        _say(f"  q = {value:.6g} 1/Å, φ = {angles}°")
    _say(
        f"  frames {dataset.frames[0]}–{dataset.frames[1]} ({n}), dt = {dataset.dt:.6g} s, "
        f"t from {dataset.t[0]:g} s"
    )
    mask = _excluded(dataset, requested)
    excluded = np.flatnonzero(~mask) + dataset.frames[0]
    if excluded.size:
        _say(f"  excluded frames: {frame_ranges(excluded)} ({excluded.size} of {n})")
    return dataset, mask, excluded


def _fit_runs(args, files, origins, ages, bounds, init_values, fixed) -> None:
    """`homodyne fit A B …`: one joint fit of the files (runs), saved and plotted per run."""
    import homodyne

    from ._result import full_grid_too_large
    from .io import save_joint_fit

    start = time.perf_counter()
    runs = [_load_run(args, f, o, a, ()) for f, o, a in zip(files, origins, ages, strict=True)]
    if args.mode is None:
        raise _Fail(
            f"{len(files)} files: say which model to fit, --mode static (D(t) only) or "
            "--mode laminar (D(t), γ̇(t), φ0)"
        )
    try:
        spec = homodyne.FitSpec(
            mode=args.mode,
            bounds=bounds,
            fixed=fixed,
            scaling=args.scaling,
            per_run=tuple(args.per_run),
        )
    except ValueError as error:
        raise _Fail(str(error)) from None
    init = _init_option(init_values, args.mode)
    _say(f"fitting {len(files)} runs jointly ({args.mode}; the first fit compiles) …")
    masks = [mask if excluded.size else None for _, mask, excluded in runs]
    pairs = [(dataset.model(L=args.gap), dataset.c2) for dataset, _, _ in runs]
    fit_inputs: dict[str, Any] = dict(
        sigma=None if args.sigma is None else [args.sigma] * len(files),
        init=init,
        spec=spec,
        options=homodyne.FitOptions(
            max_steps=args.max_steps, verbose=args.progress and not args.quiet
        ),
        frame_mask=masks if any(m is not None for m in masks) else None,
    )
    joint = homodyne.fit(pairs, **fit_inputs)
    _say(f"done in {time.perf_counter() - start:.1f} s\n")
    _say(str(joint))
    posterior = None
    if args.command == "sample":
        posterior = _sample_from(args, pairs, None, joint, **fit_inputs)
    out = pathlib.Path(args.out)
    _prepare_out(out, args.overwrite, remove=True)
    too_large = [full_grid_too_large(run) for run in joint.runs]
    for r, why in enumerate(too_large):
        if why:
            _say(f"run {r}: the saved results and plots leave out the full C2 grids: {why}")
    paths = save_joint_fit(
        joint,
        out,
        data=[None if why else d.c2 for (d, _, _), why in zip(runs, too_large, strict=True)],
        inputs=[
            {
                "source": os.path.abspath(d.source),
                "labels": list(d.labels),
                "frames": list(d.frames),
                "excluded_frames": (excluded).tolist(),
                "layout": d.layout,
            }
            for d, _, excluded in runs
        ],
    )
    _say(f"\nresults: {paths[0]}" + "".join(f"\n         {p}" for p in paths[1:]))
    if not args.no_plots:
        for r, ((dataset, _, _), run) in enumerate(zip(runs, joint.runs, strict=True)):
            _plot_fit(run, dataset.c2, out, f"fit_run{r}", bool(too_large[r]))
    if posterior is not None:
        _save_posterior(posterior, out, not args.no_plots, runs[0][0].c2)
    _end_warnings(joint.converged, [(f" (run {r})", run) for r, run in enumerate(joint.runs)])


def _plot_fit(result, c2, out: pathlib.Path, name: str, too_large: bool) -> None:
    """The fit's plots, each path printed; only the rates where the full C2 grids are too large
    (the command has said why)."""
    from ._plot import plot_fit, plot_rates

    paths = [plot_rates(result, out / f"{name}_rates")] if too_large else None
    for path in paths or plot_fit(result, c2, out, name=name):
        _say(f"plot:    {path}")


def _end_warnings(converged, results) -> None:
    """stderr warnings at the end of a fit: not converged, and per (label, `FitResult`) the
    parameters the bounds may have stopped."""
    from ._result import bounded_parameters

    if not bool(converged):
        print(
            "homodyne: warning: the fit did not converge; see the status line above.",
            file=sys.stderr,
        )
    for label, result in results:
        named = bounded_parameters(result)
        if named:
            print(
                f"homodyne: warning{label}: {', '.join(named)}: the bound may have stopped the "
                "fit; widen it with --bounds NAME=LO:HI and fit again",
                file=sys.stderr,
            )


def _sample_from(args, model, data, result, **inputs):
    """`homodyne sample`: draws from the posterior, starting at the fit ``result`` (a progress
    bar on stderr while NUTS runs); its failed diagnostics are listed at the end, not as Python
    warnings."""
    import warnings

    import homodyne

    _say(
        f"\nsampling the posterior ({args.method}, {args.chains} chains × {args.draws} draws; "
        "the first run of a shape compiles) …"
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # posterior.warnings has them
        posterior = homodyne.sample(
            model, data, fit=result, method=args.method, num_chains=args.chains,
            num_draws=args.draws, num_warmup=args.warmup, seed=args.seed,
            adjust=not args.independent, progress=True, **inputs,
        )  # fmt: skip
    _say(f"done in {time.perf_counter() - start:.1f} s\n")
    _say(str(posterior))
    return posterior


def _save_posterior(posterior, out: pathlib.Path, plots: bool, data) -> None:
    """The draws beside the fit's results, their plots (the predictive cuts on ``data``, the
    first run's C2), and a warning line per failed diagnostic."""
    from .io import (
        plot_corner,
        plot_posterior_rates,
        plot_predictive_cuts,
        plot_traces,
        save_posterior,
    )

    json_path, npz_path = save_posterior(posterior, out)
    _say(f"         {json_path}\n         {npz_path}")
    if plots:
        for plot, name in ((plot_corner, "posterior_corner"), (plot_traces, "posterior_traces"),
                           (plot_posterior_rates, "posterior_rates")):  # fmt: skip
            _say(f"plot:    {plot(posterior, out / name)}")
        _say(f"plot:    {plot_predictive_cuts(posterior, data, out / 'posterior_g2_cuts')}")
    for w in posterior.warnings:
        print(f"homodyne: warning: posterior: {w}", file=sys.stderr)


def _excluded(dataset, requested: tuple[int, ...]) -> np.ndarray:
    """The frame mask of a fit: the file's bad frames (reported on stderr in one line, as is any
    requested frame outside the window) and the ``--exclude-frames`` ones, in the window."""
    from .io._aps import frame_ranges

    first, last = dataset.frames
    mask = np.array(dataset.frame_mask, bool)
    if not mask.all():
        bad = np.flatnonzero(~mask) + first
        print(
            f"homodyne: warning: {bad.size} bad frame{'s' if bad.size > 1 else ''} in the file "
            f"(NaN/inf or all-zero rows) excluded: {frame_ranges(bad)}",
            file=sys.stderr,
        )
    requested_ = np.array(requested, int)
    outside = requested_[(requested_ < first) | (requested_ > last)]
    if outside.size:
        print(
            f"homodyne: note: --exclude-frames {frame_ranges(outside)} outside the analysed "
            f"frames {first}–{last}: ignored",
            file=sys.stderr,
        )
    inside = requested_[(requested_ >= first) & (requested_ <= last)]
    mask[inside - first] = False
    return mask


def _fit(args) -> None:
    import homodyne

    from ._result import full_grid_too_large
    from .io import save_fit

    out = pathlib.Path(args.out)
    _prepare_out(out, args.overwrite, remove=False)  # refused before anything runs
    requested = _frame_list(args.exclude_frames) if args.exclude_frames else ()
    bounds = _bounds_option(args.bounds)
    init_values = _values_option(args.init, "--init")
    fixed = _values_option(args.fixed, "--fixed")
    if args.max_steps < 1:
        raise _Fail(f"--max-steps must be at least 1; got {args.max_steps}")
    if args.command == "sample":  # refused before anything is loaded or fitted
        from ._sample import _checked_sampling

        try:
            _checked_sampling(args.method, args.chains, args.draws, args.warmup, args.seed)
        except ValueError as error:
            raise _Fail(
                str(error)
                .replace("num_chains", "--chains")
                .replace("num_draws", "--draws")
                .replace("num_warmup", "--warmup")
            ) from None
    files = list(args.file)
    origins = _per_file(args.time_origin, files, "--time-origin")
    ages = _per_file(args.sample_age, files, "--sample-age")
    if len(files) > 1:
        if args.exclude_frames:
            raise _Fail(
                "--exclude-frames names one file's frames: with several files, fit them one by "
                "one, or exclude frames per run with homodyne.fit(frame_mask=[...])"
            )
        return _fit_runs(args, files, origins, ages, bounds, init_values, fixed)
    if args.per_run:
        raise _Fail("--per-run applies to several files fitted jointly; this is one file")
    start = time.perf_counter()
    dataset, mask, excluded = _load_run(args, files[0], origins[0], ages[0], requested)
    n_phi, n = dataset.c2.shape[0], dataset.c2.shape[-1]
    model = dataset.model(L=args.gap)
    mode = args.mode
    if mode is None:
        if n_phi > 1:
            raise _Fail(
                f"{n_phi} bins: say which model to fit, --mode static (D(t) only) or "
                "--mode laminar (D(t), γ̇(t), φ0); a laminar fit of static data finds "
                "meaningless shear rates"
            )
        mode = "static"
    spec = homodyne.FitSpec(mode=mode, bounds=bounds, fixed=fixed, scaling=args.scaling)
    init = _init_option(init_values, mode)
    used = n - excluded.size
    _say(
        f"fitting {n_phi} × {used * (used - 1) // 2} pairs "
        f"({mode}; the first fit of a shape compiles, a few seconds) …"
    )
    fit_inputs: dict[str, Any] = dict(
        sigma=args.sigma,
        init=init,
        spec=spec,
        options=homodyne.FitOptions(
            max_steps=args.max_steps, verbose=args.progress and not args.quiet
        ),
        frame_mask=mask if excluded.size else None,  # None: the usual compiled fit
    )
    result = homodyne.fit(model, dataset.c2, **fit_inputs)
    _say(f"done in {time.perf_counter() - start:.1f} s\n")
    _say(str(result))
    posterior = None
    if args.command == "sample":
        posterior = _sample_from(args, model, dataset.c2, result, **fit_inputs)
    inputs = {
        "source": os.path.abspath(dataset.source),
        "labels": list(dataset.labels),
        "frames": list(dataset.frames),
        "excluded_frames": excluded.tolist(),
        "layout": dataset.layout,
    }
    _prepare_out(out, args.overwrite, remove=True)  # the earlier result goes once this one exists
    too_large = full_grid_too_large(result)  # the data, fit and residual grids would not fit
    if too_large:
        _say(
            f"the saved results and plots leave out the full C2 grids: {too_large} (--frames, --q)"
        )
    json_path, npz_path = save_fit(
        result, out, data=None if too_large else dataset.c2, inputs=inputs
    )
    report = None
    if np.unique(np.asarray(model.q_per_bin)).size > 1:  # several rings: do they agree?
        _say("\nfitting each q ring alone for the consistency report …")
        report = homodyne.ring_consistency(
            result,
            dataset.c2,
            sigma=args.sigma,
            options=homodyne.FitOptions(max_steps=args.max_steps),
        )
        _say(str(report))
        rings_path = out / "fit_rings.json"
        rings_path.write_text(json.dumps(_rings_summary(report), indent=2, allow_nan=False))
    _say(f"\nresults: {json_path}\n         {npz_path}")
    if report is not None:
        _say(f"         {rings_path}")
    if not args.no_plots:
        from ._plot import plot_rings

        _plot_fit(result, dataset.c2, out, "fit", bool(too_large))
        if report is not None:
            _say(f"plot:    {plot_rings(report, out / 'fit_rings')}")
    if posterior is not None:
        _save_posterior(posterior, out, not args.no_plots, dataset.c2)
    _end_warnings(result.converged, [("", result)])


def _rings_summary(report):
    """The consistency report as strict JSON: per ring (q, D and Γ at the mid-window age alone
    and joint), the power law of Γ against q and the χ² against the joint q² line. NaN and inf
    are written as fit.json writes them ("nan", "inf")."""
    from .io._results import _finite_json

    return _finite_json(
        {
            "age": float(report.age),
            "rings": [
                {
                    "q": float(report.q[r]),
                    "D": float(report.d_ring[r]),
                    "D_error": float(report.d_ring_error[r]),
                    "rate": float(report.rate[r]),
                    "rate_error": float(report.rate_error[r]),
                    "joint_rate": float(report.joint_rate[r]),
                    "converged": bool(report.ring_fits[r].converged),
                }
                for r in range(report.q.size)
            ],
            "D_joint": float(report.d_joint),
            "D_joint_error": float(report.d_joint_error),
            "slope": float(report.slope),
            "slope_error": float(report.slope_error),
            "chi2": float(report.chi2),
        }
    )


def _demo(args) -> None:
    out = (
        pathlib.Path(args.out)
        if args.out
        else pathlib.Path(tempfile.mkdtemp(prefix="homodyne-demo-"))
    )
    out.mkdir(parents=True, exist_ok=True)
    _say(f"homodyne demo: outputs in {out}\n")
    data_file = out / "demo_twotime.h5"
    sim = _parser().parse_args(["simulate", str(data_file), "--n-frames", "120", "--overwrite"])
    _simulate(sim)
    _say("")
    _info(argparse.Namespace(file=str(data_file)))
    _say("")
    fit = _parser().parse_args(
        ["fit", str(data_file), "--q", "0.0054", "--mode", "laminar", "--out", str(out)]
        + ["--overwrite"] * bool(args.out)  # a demo run again into the same directory
    )
    _fit(fit)
    from ._params import LaminarFlowParams

    truth = zip(LaminarFlowParams.names, DEMO_PARAMS["laminar"], strict=True)
    _say("\nthe simulated truth: " + ", ".join(f"{n} = {v:g}" for n, v in truth))
    _say(f"all outputs are in {out}")


def main(argv: list[str] | None = None) -> int:
    handlers = {"info": _info, "fit": _fit, "sample": _fit, "simulate": _simulate, "demo": _demo}
    try:
        args = _parser().parse_args(argv)  # --help and --version print here
        if args.command != "info":
            _use_compile_cache(not args.no_compile_cache)
        handlers[args.command](args)
    except KeyboardInterrupt:
        print("homodyne: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`homodyne demo | head -1`): end quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's final flush of stdout must not fail
        return 141  # as a process killed by SIGPIPE
    except Exception as error:  # one line for the user; the traceback on request
        if os.environ.get("HOMODYNE_DEBUG"):
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"homodyne: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
