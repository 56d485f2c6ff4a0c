"""Writing two-time data in the newer APS 8-ID-I layout (SPEC §5), e.g. for simulated data."""

import os
import pathlib

import numpy as np
from jaxtyping import ArrayLike

from ._aps import NEW_BINS, NEW_C2_GROUP, NEW_CONFIG, NEW_FRAME_TIME, NEW_QMAP, _h5py


def write_aps_file(
    path: str | os.PathLike,
    c2: ArrayLike,
    *,
    q: ArrayLike,
    phi: ArrayLike,
    frame_time: float,
    stride: int = 1,
    avg: int = 1,
    overwrite: bool = False,
) -> pathlib.Path:
    """Write C2 maps as an APS 8-ID-I result file in the newer layout.

    Each map is stored as its upper triangle with the diagonal (zeros below), float32, LZF
    compressed, under ``/xpcs/twotime/correlation_map/c2_00001…``; the q/φ grid of the bins is
    recorded in ``/xpcs/qmap`` and the frame time in ``/entry/instrument/detector_1/frame_time``
    with ``stride_frame`` and ``avg_frame`` in ``/xpcs/twotime/config``.

    Args:
        c2: (n_bins, N, N) full symmetric matrices (any float dtype; a ``np.memmap`` is read
            one map at a time).
        q, phi: per map, (n_bins,): wavevector [1/Å] and angle [degrees].
        frame_time: detector frame time [s]; the frame step is frame_time × stride × avg.
        overwrite: replace an existing file (default: refuse).
    """
    h5py = _h5py()
    c2 = np.asarray(c2)  # each map is converted on its own: (a memory map of) many GB is fine
    if c2.ndim == 2:
        c2 = c2[None]
    q, phi = np.atleast_1d(np.asarray(q, float)), np.atleast_1d(np.asarray(phi, float))
    if (
        c2.ndim != 3
        or c2.shape[1] != c2.shape[2]
        or q.shape != (c2.shape[0],)
        or phi.shape != q.shape
    ):
        raise ValueError(
            f"c2 must be (n_bins, N, N) with one q and φ per map; got {c2.shape}, {q.shape}, {phi.shape}."
        )
    target = pathlib.Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(
            f"{target} exists; pass overwrite=True (or --overwrite) to replace it."
        )
    q_grid, phi_grid = np.unique(q), np.unique(phi)
    labels = np.array(
        [
            np.searchsorted(q_grid, a) * phi_grid.size + np.searchsorted(phi_grid, b) + 1
            for a, b in zip(q, phi, strict=True)
        ]
    )
    if np.unique(labels).size != labels.size:
        raise ValueError("two maps share the same (q, φ).")
    target.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(target, "w") as f:
        qmap = f.require_group(NEW_QMAP)
        qmap["dynamic_v_list_dim0"] = q_grid
        qmap["dynamic_v_list_dim1"] = phi_grid
        qmap["dynamic_num_pts"] = np.array([q_grid.size, phi_grid.size])
        qmap["dynamic_index_mapping"] = np.arange(q_grid.size * phi_grid.size)
        f[NEW_BINS] = labels
        config = f.require_group(NEW_CONFIG)
        config["stride_frame"] = stride
        config["avg_frame"] = avg
        f[NEW_FRAME_TIME] = float(frame_time)
        group = f.require_group(NEW_C2_GROUP)
        for k, matrix in enumerate(c2):
            group.create_dataset(
                f"c2_{k + 1:05d}", data=np.triu(matrix).astype(np.float32), compression="lzf"
            )
    return target
