"""Readers for APS 8-ID-I two-time result files (SPEC §5), both layouts, detected automatically.

Nothing here writes to an input file: files are opened read-only.
"""

import dataclasses
import os
import pathlib
import re
import warnings
from typing import Literal

import numpy as np

from .._model import HomodyneModel

NEW_C2_GROUP = "/xpcs/twotime/correlation_map"
NEW_BINS = "/xpcs/twotime/processed_bins"
NEW_QMAP = "/xpcs/qmap"
NEW_FRAME_TIME = "/entry/instrument/detector_1/frame_time"
NEW_CONFIG = "/xpcs/twotime/config"
OLD_C2_GROUP = "/exchange/C2T_all"
OLD_FRAME_TIME = "/measurement/instrument/detector/exposure_period"


def _h5py():
    try:
        import h5py
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading APS HDF5 files needs h5py: pip install 'homodyne[hdf5]'"
        ) from error
    return h5py


@dataclasses.dataclass(frozen=True)
class BinInfo:
    """One two-time correlation map in a file: its dynamic bin label, q [1/Å] and φ [degrees]."""

    label: int
    q: float
    phi: float
    n_frames: int
    dataset: str  # HDF5 path of its C2 map


@dataclasses.dataclass(frozen=True)
class FileInfo:
    """What `inspect_file` finds: the layout, the frame step from the file, and the bins."""

    path: str
    layout: str  # "aps-new" or "aps-legacy"
    dt: float | None  # frame time × stride × averaging [s]; None if the file lacks a factor
    bins: tuple[BinInfo, ...]
    dt_missing: tuple[str, ...] = ()  # the HDF5 paths of the missing factors of dt


class BadFramesWarning(UserWarning):
    """`load_two_time` with ``bad_frames="mask"`` found bad frames (NaN/inf or all-zero rows) and
    masked them (``TwoTimeDataset.frame_mask``)."""


@dataclasses.dataclass(frozen=True, eq=False)
class TwoTimeDataset:
    """Two-time correlations loaded from a file, ready to fit.

    Attributes:
        c2: full symmetric C2 matrices, (n_phi, N, N), float32 as the correlator stores them (half
            the memory of float64; a fit promotes each tile of pairs to float64 where it uses
            it), float64 from files that store float64; the measured diagonal (shot-noise
            excess) replaced by the mean of its off-diagonal neighbours (the nearest good frames
            on either side). The rows and columns of bad frames are NaN.
        q: wavevector [1/Å] of the selected bins: a float for one ring, (n_phi,) (one per bin,
            rings in increasing q) for several.
        phi: angles [degrees], (n_phi,).
        labels: the dynamic bin labels, one per angle.
        dt: frame step Δ [s] (from the file, or as given).
        t: frame times [s], (N,): time_origin + (k − s)·Δ for frame k of a window starting at
            frame s.
        frames: the analysed window (first, last), 1-based and inclusive.
        source: the file's path.
        layout: "aps-new" or "aps-legacy".
        frame_mask: (N,) bool, True for each good frame, False for each bad one (NaN/inf or
            all-zero rows, masked by ``load_two_time(..., bad_frames="mask")``); pass it to
            ``homodyne.fit(..., frame_mask=...)``. ``None`` (set by hand): all frames good.
    """

    c2: np.ndarray
    q: float | np.ndarray
    phi: np.ndarray
    labels: tuple[int, ...]
    dt: float
    t: np.ndarray
    frames: tuple[int, int]
    source: str
    layout: str
    frame_mask: np.ndarray | None = None

    def __repr__(self) -> str:
        """A summary (file, bins, frames, times, shape), never the arrays."""
        n = self.c2.shape[-1]
        bad = (
            0
            if self.frame_mask is None
            else int(np.size(self.frame_mask) - np.sum(self.frame_mask))
        )
        q = np.broadcast_to(np.asarray(self.q, dtype=float), np.shape(self.phi))
        rings = []
        for value in np.unique(q):
            angles = ", ".join(f"{p:.1f}" for p in np.asarray(self.phi)[q == value])
            count = int(np.sum(q == value))
            rings.append(f"  q = {value:.6g} 1/Å: {count} angle{'s' * (count != 1)}: {angles}°")
        return "\n".join(
            [
                f"TwoTimeDataset from {self.source} ({self.layout} layout), bin labels "
                f"{', '.join(map(str, self.labels))}",
                *rings,
                f"  frames {self.frames[0]}–{self.frames[1]} ({n}"
                + (f", {bad} bad: masked" if bad else "")
                + f"), dt = {self.dt:.6g} s, t = {self.t[0]:.6g} … {self.t[-1]:.6g} s",
                f"  c2: {self.c2.shape} {self.c2.dtype}",
            ]
        )

    def model(self, L: float = 2e6) -> HomodyneModel:
        """A `HomodyneModel` with this dataset's q, dt, times and angles; L: gap [Å]."""
        return HomodyneModel(q=self.q, dt=self.dt, t=self.t, phi=self.phi, L=L)


def _open(path) -> tuple:
    h5py = _h5py()
    p = pathlib.Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file: {p}")
    if p.is_dir():
        raise ValueError(f"{p} is a directory, not an HDF5 file.")
    if not h5py.is_hdf5(p):
        raise ValueError(f"{p} is not an HDF5 file (APS 8-ID-I results are HDF5).")
    try:
        return h5py, h5py.File(p, "r")
    except OSError as error:
        raise ValueError(
            f"{p} could not be read as HDF5 (corrupt or truncated?): {error}"
        ) from None


def _scalar(f, path: str) -> float | None:
    if path not in f:
        return None
    return float(np.asarray(f[path][()]).ravel()[0])


def _frame_step(factors: dict[str, float | None]) -> tuple[float | None, tuple[str, ...]]:
    """frame time × stride × averaging, or None and the names of the missing factors: a silently
    assumed stride or averaging of 1 would give a wrong dt (and D0, γ̇0 off by that factor)."""
    missing = tuple(name for name, value in factors.items() if value is None)
    if missing:
        return None, missing
    return float(np.prod([v for v in factors.values() if v is not None])), ()


def _config_value(f, name: str) -> float | None:
    if NEW_CONFIG not in f:
        return None
    group = f[NEW_CONFIG]
    if name in group.attrs:
        return float(np.asarray(group.attrs[name]).ravel()[0])
    if name in group:
        return float(np.asarray(group[name][()]).ravel()[0])
    return None


def _suffix(name: str) -> int | None:
    match = re.search(r"_(\d+)$", name)
    return int(match.group(1)) if match else None


def _new_layout(f, path) -> FileInfo:
    group = f[NEW_C2_GROUP]
    names = sorted(n for n in group if _suffix(n) is not None)
    if not names:
        raise ValueError(f"{path}: {NEW_C2_GROUP} holds no c2_NNNNN maps: no two-time data.")
    if NEW_BINS not in f:
        raise ValueError(f"{path}: {NEW_BINS} is missing, so the maps cannot be matched to (q, φ).")
    processed = np.asarray(f[NEW_BINS][()]).ravel().astype(int)
    for key in (
        "dynamic_index_mapping",
        "dynamic_num_pts",
        "dynamic_v_list_dim0",
        "dynamic_v_list_dim1",
    ):
        if f"{NEW_QMAP}/{key}" not in f:
            raise ValueError(f"{path}: {NEW_QMAP}/{key} is missing: cannot map bins to (q, φ).")
    mapping = np.asarray(f[f"{NEW_QMAP}/dynamic_index_mapping"][()]).ravel().astype(int)
    n_phi_grid = int(np.asarray(f[f"{NEW_QMAP}/dynamic_num_pts"][()]).ravel()[1])
    q_list = np.asarray(f[f"{NEW_QMAP}/dynamic_v_list_dim0"][()], float).ravel()
    phi_list = np.asarray(f[f"{NEW_QMAP}/dynamic_v_list_dim1"][()], float).ravel()
    bins = []
    for name in names:
        counter = _suffix(name)
        assert counter is not None
        if not 1 <= counter <= processed.size:
            raise ValueError(
                f"{path}: map {name} has no entry in {NEW_BINS} ({processed.size} bins listed)."
            )
        label = int(processed[counter - 1])
        if not 1 <= label <= mapping.size or mapping[label - 1] < 0:
            continue  # an empty (q, φ) cell: nothing was measured there
        iq, iphi = divmod(int(mapping[label - 1]), n_phi_grid)
        shape = group[name].shape
        bins.append(
            BinInfo(
                label, float(q_list[iq]), float(phi_list[iphi]), shape[-1], f"{NEW_C2_GROUP}/{name}"
            )
        )
    dt, missing = _frame_step(
        {
            NEW_FRAME_TIME: _scalar(f, NEW_FRAME_TIME),
            f"{NEW_CONFIG}/stride_frame": _config_value(f, "stride_frame"),
            f"{NEW_CONFIG}/avg_frame": _config_value(f, "avg_frame"),
        }
    )
    return FileInfo(str(path), "aps-new", dt, tuple(bins), missing)


def _legacy_layout(f, path) -> FileInfo:
    group = f[OLD_C2_GROUP]
    names = sorted(n for n in group if _suffix(n) is not None)
    if not names:
        raise ValueError(f"{path}: {OLD_C2_GROUP} holds no g2_NNNNN maps: no two-time data.")
    for key in ("/xpcs/dqlist", "/xpcs/dphilist"):
        if key not in f:
            raise ValueError(f"{path}: {key} is missing: cannot map bins to (q, φ).")
    q_list = np.asarray(f["/xpcs/dqlist"][()], float).ravel()
    phi_list = np.asarray(f["/xpcs/dphilist"][()], float).ravel()
    bins = []
    for name in names:
        label = _suffix(name)
        assert label is not None
        if not 1 <= label <= q_list.size:
            raise ValueError(
                f"{path}: map {name} has label {label}, beyond /xpcs/dqlist ({q_list.size})."
            )
        shape = group[name].shape
        bins.append(
            BinInfo(
                label,
                float(q_list[label - 1]),
                float(phi_list[label - 1]),
                shape[-1],
                f"{OLD_C2_GROUP}/{name}",
            )
        )
    dt, missing = _frame_step(
        {
            OLD_FRAME_TIME: _scalar(f, OLD_FRAME_TIME),
            "/xpcs/stride_frames": _scalar(f, "/xpcs/stride_frames"),
            "/xpcs/avg_frames": _scalar(f, "/xpcs/avg_frames"),
        }
    )
    return FileInfo(str(path), "aps-legacy", dt, tuple(bins), missing)


def inspect_file(path: str | os.PathLike) -> FileInfo:
    """The layout, frame step and two-time bins of an APS 8-ID-I result file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not an HDF5 file, not an XPCS result file, or no two-time data in it.
    """
    _, f = _open(path)
    with f:
        if NEW_C2_GROUP in f:
            return _new_layout(f, path)
        if OLD_C2_GROUP in f:
            return _legacy_layout(f, path)
        if "xpcs" in f or "exchange" in f:
            raise ValueError(
                f"{path}: an XPCS file without two-time data (neither {NEW_C2_GROUP} nor "
                f"{OLD_C2_GROUP}); was it processed as multi-tau only?"
            )
        raise ValueError(f"{path}: not an XPCS result file (no /xpcs or /exchange group).")


def _aligned_empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """``np.empty`` whose data start on a 64-byte boundary: JAX on the CPU then uses the maps in
    place when a fit reads them (an unaligned array, as NumPy allocates large ones, is copied:
    9 GB more for 23 maps of 10,000 frames)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def _full_matrix(stored: np.ndarray, where: str) -> np.ndarray:
    """The full symmetric matrix of a stored map: U + Uᵀ with the diagonal halved for an upper
    triangle (zeros or NaN below the diagonal, which are ignored); a map stored as a full symmetric
    matrix is taken as it is rather than doubled."""
    u = np.asarray(stored)
    if u.dtype != np.float32:  # float32 as stored (half the memory); anything else as float64
        u = u.astype(np.float64)
    while u.ndim > 2 and u.shape[0] == 1:
        u = u[0]
    if u.ndim != 2 or u.shape[0] != u.shape[1]:
        raise ValueError(f"{where} is not a square two-time map; its shape is {np.shape(stored)}.")
    below = np.tril(np.ones(u.shape, dtype=bool), -1)
    lower = u[below]
    if lower.size and np.all(np.isfinite(lower)) and np.any(lower != 0):
        if np.allclose(u, u.T, rtol=1e-6, atol=0.0, equal_nan=True):
            return u  # stored as the full matrix
        raise ValueError(
            f"{where} is neither an upper triangle (zeros below the diagonal) nor symmetric."
        )
    u = np.where(below, 0.0, u)
    full = u + u.T
    full[np.diag_indices_from(full)] /= 2.0
    return full


def _replace_diagonal(c2: np.ndarray, good: np.ndarray | None = None) -> np.ndarray:
    """Each diagonal element becomes the mean of its off-diagonal neighbours C(i, i±1), or with a
    mask of ``good`` frames of C(i, l) and C(i, r), l and r the nearest good frames before and
    after i (NaN on the diagonal of bad frames). In place (the maps may be many GB); returns
    ``c2``."""
    n = c2.shape[-1]
    out = c2
    if n < 2:
        return out
    i = np.arange(n)
    good = np.ones(n, bool) if good is None else good
    last = np.maximum.accumulate(np.where(good, i, -1))  # the last good frame ≤ i
    after = np.minimum.accumulate(np.where(good, i, n)[::-1])[::-1]  # the first good frame ≥ i
    before, after = np.concatenate([[-1], last[:-1]]), np.concatenate([after[1:], [n]])
    has_left, has_right = before >= 0, after < n
    left = np.where(has_left, c2[..., i, np.maximum(before, 0)], 0.0)
    right = np.where(has_right, c2[..., i, np.minimum(after, n - 1)], 0.0)
    count = has_left.astype(float) + has_right.astype(float)
    out[..., i, i] = np.where(good & (count > 0), (left + right) / np.maximum(count, 1.0), np.nan)
    return out


def _select_q(bins, q, path):
    qs = np.unique(np.round([b.q for b in bins], 12))
    listing = ", ".join(f"{v:.6g}" for v in qs)
    """The rings (lists of bins at one q, in increasing q) that ``q`` asks for: every ring for
    None, the nearest ring within 2 % for each value given."""
    rings = {v: [b for b in bins if np.round(b.q, 12) == v] for v in qs}
    if q is None:
        return list(rings.values())
    chosen = []
    for value in np.atleast_1d(np.asarray(q, dtype=float)):
        nearest = qs[np.argmin(np.abs(qs - value))]
        if abs(nearest - value) > 0.02 * abs(value):
            raise ValueError(
                f"no bin at q = {value:g} 1/Å in {path} (within 2 %); available: {listing} 1/Å."
            )
        if rings[nearest] not in chosen:
            chosen.append(rings[nearest])
    return sorted(chosen, key=lambda ring: ring[0].q)


def _select_phi(bins, phi, path, q):
    bins = sorted(bins, key=lambda b: b.phi)
    if phi is None:
        return bins
    wanted = np.atleast_1d(np.asarray(phi, float))
    available = np.array([b.phi for b in bins])
    chosen = []
    for value in wanted:
        distance = np.abs((available - value + 180.0) % 360.0 - 180.0)
        k = int(np.argmin(distance))
        if distance[k] > 1.0:
            listing = ", ".join(f"{v:g}" for v in available)
            raise ValueError(
                f"no bin at φ = {value:g}° (within 1°) for q = {q:.6g} in {path}; available: {listing}°."
            )
        if bins[k] not in chosen:
            chosen.append(bins[k])
    return chosen


def load_two_time(
    path: str | os.PathLike,
    *,
    q: float | list[float] | None = None,
    phi: float | list[float] | None = None,
    frames: tuple[int, int] | None = None,
    time_origin: float | None = None,
    dt: float | None = None,
    bad_frames: Literal["raise", "mask"] = "raise",
    sample_age: float | None = None,
) -> TwoTimeDataset:
    """Load the two-time correlation maps of a file's bins (every q ring, or chosen rings and
    angles) from an APS 8-ID-I file.

    Both layouts of SPEC §5 are detected automatically. Upper triangles are rebuilt to full
    symmetric matrices (U + Uᵀ, diagonal halved), and the diagonal is replaced by the mean of its
    off-diagonal neighbours.

    Bad frames (beam dumps, detector glitches) show up as rows and columns of NaN/inf or of zeros.
    With ``bad_frames="mask"`` a frame is bad when its row, off the diagonal, holds nothing but
    zeros and NaN/inf in any selected bin; NaN/inf values left between good frames then exclude,
    one at a time, the frame that carries most of them. Bad frames are set to NaN in ``c2`` and
    False in ``frame_mask``, and a `BadFramesWarning` names them (1-based frame numbers of the
    file, within the loaded window, as ranges: "12, 40–45"). Fit with
    ``homodyne.fit(model, ds.c2, frame_mask=ds.frame_mask)``.

    Args:
        path: the HDF5 result file (opened read-only).
        q: wavevector(s) [1/Å]: the ring at the nearest q in the file within 2 % for each value;
            default every ring. With several rings ``q`` of the dataset holds one value per bin,
            and its model fits the rings jointly (one D(t), contrast and offset per bin).
        phi: angle(s) [degrees] to load in each ring, each matched within 1°; default all.
        frames: analysed window (first, last), 1-based and inclusive; default all frames.
        time_origin: time [s] of the first analysed frame (the sample's age then; D(t) depends on
            absolute time). Frame k of a window starting at frame s is at time_origin + (k − s)·Δ.
            Default 0 (the usual convention, made safe by the time floor).
        dt: frame step [s]; default from the file (frame time × stride × averaging).
        bad_frames: ``"raise"`` (default): NaN/inf values or all-zero rows are an error.
            ``"mask"``: bad frames are masked (see above).
        sample_age: instead of ``time_origin``: the sample's age [s] at frame 1 of the file,
            whatever window is loaded; frame k is then at sample_age + (k − 1)·Δ (so
            ``frames=(101, 500), sample_age=1.0`` with Δ = 0.1 s starts at 11 s).

    Raises:
        FileNotFoundError, ValueError: with what was wrong: a missing or non-XPCS file, no two-time
        data, a q or φ that matches nothing (the message lists what exists), a bad frame window,
        NaN/inf values or all-zero rows with ``bad_frames="raise"`` (the message says in which
        bin and frames), fewer than 3 good frames with ``bad_frames="mask"``.

    Warns:
        BadFramesWarning: with ``bad_frames="mask"``, when bad frames were masked.
    """
    if bad_frames not in ("raise", "mask"):
        raise ValueError(f'bad_frames must be "raise" or "mask"; got {bad_frames!r}.')
    info = inspect_file(path)
    if not info.bins:
        raise ValueError(f"{path}: every two-time map belongs to an empty (q, φ) cell.")
    selected = [
        b
        for ring in _select_q(list(info.bins), q, path)
        for b in _select_phi(ring, phi, path, ring[0].q)
    ]
    sizes = {b.n_frames for b in selected}
    if len(sizes) != 1:
        raise ValueError(
            f"the selected bins have different frame counts {sorted(sizes)}; load them separately."
        )
    n = sizes.pop()
    first, last = frames if frames is not None else (1, n)
    if not (isinstance(first, int | np.integer) and isinstance(last, int | np.integer)):
        raise ValueError(f"frames must be two integers (first, last); got {frames!r}.")
    if not 1 <= first < last <= n or last - first + 1 < 3:
        raise ValueError(
            f"frames=({first}, {last}) is not a window of at least 3 frames within 1…{n} (1-based, inclusive)."
        )
    step = info.dt if dt is None else float(dt)
    if step is None:
        raise ValueError(
            f"{path} lacks {', '.join(info.dt_missing)}, so the frame step (frame time × stride × "
            "averaging) is unknown; pass dt=… (command line: --dt; seconds) from the experiment's configuration."
        )
    if not (np.isfinite(step) and step > 0):
        raise ValueError(f"the frame step must be finite and > 0; got {step}.")
    if time_origin is not None and sample_age is not None:
        raise ValueError(
            "give time_origin (the time of the first analysed frame) or sample_age (the age at "
            "frame 1 of the file), not both."
        )
    if sample_age is not None:
        if not np.isfinite(sample_age):
            raise ValueError(f"sample_age must be finite; got {sample_age}.")
        time_origin = float(sample_age) + (first - 1) * step
    time_origin = 0.0 if time_origin is None else float(time_origin)
    if not np.isfinite(time_origin):
        raise ValueError(f"time_origin must be finite; got {time_origin}.")

    h5py = _h5py()
    stack = None  # filled bin by bin: one map's temporaries at a time beside the result
    with h5py.File(path, "r") as f:
        for k, b in enumerate(selected):
            full = _full_matrix(np.asarray(f[b.dataset][()]), f"{path}:{b.dataset}")  # type: ignore[index]
            full = full[first - 1 : last, first - 1 : last]
            if bad_frames == "raise":
                _check_values(full, b, first)
            if stack is None:
                stack = _aligned_empty((len(selected), *full.shape), full.dtype)
            stack[k] = full
            del full
    assert stack is not None  # at least one bin is selected
    good = np.ones(stack.shape[-1], bool)
    if bad_frames == "mask":
        good = _good_frames(stack)
        numbers = np.flatnonzero(~good) + first  # 1-based, as in the file
        if good.sum() < 3:
            raise ValueError(
                f"{path}: only {int(good.sum())} of {good.size} frames in {first}–{last} are good "
                f"(bad: {frame_ranges(numbers)}); a fit needs at least 3."
            )
        if numbers.size:
            stack[:, ~good, :] = np.nan
            stack[:, :, ~good] = np.nan
            warnings.warn(
                BadFramesWarning(
                    f"{path}: masked {numbers.size} bad frame{'s' if numbers.size > 1 else ''} "
                    f"(NaN/inf or all-zero rows): {frame_ranges(numbers)}."
                ),
                stacklevel=2,
            )
    c2 = _replace_diagonal(stack, good)
    t = time_origin + step * np.arange(last - first + 1, dtype=np.float64)
    qs = np.array([b.q for b in selected])
    return TwoTimeDataset(
        c2=c2,
        q=float(qs[0]) if np.all(qs == qs[0]) else qs,
        phi=np.array([b.phi for b in selected]),
        labels=tuple(b.label for b in selected),
        dt=float(step),
        t=t,
        frames=(int(first), int(last)),
        source=str(path),
        layout=info.layout,
        frame_mask=good,
    )


def frame_ranges(numbers) -> str:
    """Frame numbers as sorted, comma-separated ranges: [12, 40, 41, 42] → "12, 40–42"."""
    values = sorted({int(x) for x in np.ravel(numbers)})
    parts, start = [], None
    for k, value in enumerate(values):
        if start is None:
            start = value
        if k + 1 == len(values) or values[k + 1] != value + 1:
            parts.append(str(value) if value == start else f"{start}–{value}")
            start = None
    return ", ".join(parts)


def _good_frames(c2: np.ndarray) -> np.ndarray:
    """(N,) True for each good frame of maps (n_phi, N, N). A frame is bad when its row, off the
    diagonal, holds only zeros and NaN/inf in any bin; NaN/inf left between good frames then
    exclude, one at a time, the frame with most of them (the diagonal is ignored: it is replaced
    by its neighbours)."""
    n = c2.shape[-1]
    off = ~np.eye(n, dtype=bool)
    good = np.ones(n, bool)
    nonfinite = np.zeros((n, n), bool)  # over the bins
    for m in c2:
        finite = np.isfinite(m)
        good &= np.any(finite & (m != 0) & off, axis=1)
        nonfinite |= ~finite & off
    nonfinite |= nonfinite.T
    remaining = nonfinite & good[:, None] & good[None, :]
    counts = remaining.sum(axis=1)
    while counts.size and counts.max() > 0:  # few iterations: one per isolated defect
        k = int(np.argmax(counts))
        good[k] = False
        counts -= remaining[:, k]
        counts[k] = 0
        remaining[k, :] = remaining[:, k] = False
    return good


def _frames_text(indices: np.ndarray, first: int) -> str:
    frames = (np.asarray(indices) + first).tolist()
    shown = ", ".join(map(str, frames[:8])) + (" …" if len(frames) > 8 else "")
    return f"frame{'s' if len(frames) > 1 else ''} {shown}"


def _check_values(c2: np.ndarray, b: BinInfo, first: int) -> None:
    bad = ~np.isfinite(c2)
    if bad.any():
        # a bad frame spoils its whole row (and column): name the frames that carry most of the
        # bad values, not every frame that meets one of them
        counts = bad.sum(axis=1)
        rows = np.flatnonzero(counts >= max(1, counts.max() / 2))
        raise ValueError(
            f"bin {b.label} (q = {b.q:.6g}, φ = {b.phi:g}°) has NaN or infinite values in {_frames_text(rows, first)}; "
            'exclude them with a frame window, or mask them with bad_frames="mask".'
        )
    zero = np.flatnonzero(np.all(c2 == 0.0, axis=1))
    if zero.size:
        raise ValueError(
            f"bin {b.label} (q = {b.q:.6g}, φ = {b.phi:g}°) has all-zero rows at {_frames_text(zero, first)} "
            '(dropped frames?); exclude them with a frame window, or mask them with bad_frames="mask".'
        )
