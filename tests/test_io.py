"""homodyne.io: APS 8-ID-I files in both layouts, written here by the tests, and fit results."""

import hashlib

import h5py
import jax
import numpy as np
import pytest

import homodyne
from homodyne import io as hio

N = 24


def _c2(seed, n=N, scale=1.0):
    """A distinctive symmetric matrix: 1 + a smooth decay + a per-file signature."""
    i = np.arange(n)
    base = 1.0 + 0.3 * np.exp(-np.abs(i[:, None] - i[None, :]) / 4.0)
    sig = np.random.default_rng(seed).uniform(0, 1e-3, size=(n, n))
    return scale * (base + sig + sig.T)


def write_new_layout(
    path, maps, labels, q_grid, phi_grid, mapping, frame_time=0.01, stride=2, avg=3
):
    """A newer-layout file written field by field (independently of homodyne.io.write_aps_file)."""
    with h5py.File(path, "w") as f:
        f["/xpcs/qmap/dynamic_v_list_dim0"] = np.asarray(q_grid)
        f["/xpcs/qmap/dynamic_v_list_dim1"] = np.asarray(phi_grid)
        f["/xpcs/qmap/dynamic_num_pts"] = np.array([len(q_grid), len(phi_grid)])
        f["/xpcs/qmap/dynamic_index_mapping"] = np.asarray(mapping)
        f["/xpcs/twotime/processed_bins"] = np.asarray(labels)
        f["/xpcs/twotime/config/stride_frame"] = stride
        f["/xpcs/twotime/config/avg_frame"] = avg
        f["/entry/instrument/detector_1/frame_time"] = frame_time
        for k, m in enumerate(maps):
            f.create_dataset(
                f"/xpcs/twotime/correlation_map/c2_{k + 1:05d}",
                data=np.triu(m).astype(np.float32), compression="lzf",
            )  # fmt: skip


def write_legacy_layout(path, maps_by_label, dq, dphi, exposure=0.005, avg=2, stride=1):
    with h5py.File(path, "w") as f:
        f["/xpcs/dqlist"] = np.asarray(dq)[None, :]
        f["/xpcs/dphilist"] = np.asarray(dphi)[None, :]
        f["/xpcs/avg_frames"] = avg
        f["/xpcs/stride_frames"] = stride
        f["/measurement/instrument/detector/exposure_period"] = exposure
        for label, m in maps_by_label.items():
            f.create_dataset(
                f"/exchange/C2T_all/g2_{label:05d}",
                data=np.triu(m).astype(np.float32),
                compression="lzf",
            )


@pytest.fixture
def new_file(tmp_path):
    # 2 q × 3 φ grid; labels map to flat indices through a permutation; label 3's cell is empty
    # (mapping −1) and label 5 was never processed, so at q = 0.006 only φ = 30° was measured.
    q_grid, phi_grid = [0.003, 0.006], [-10.0, 30.0, 70.0]
    mapping = np.array([4, 0, -1, 2, 5, 1])  # label L → flat index mapping[L − 1]
    labels = [1, 2, 3, 4, 6]
    maps = [_c2(s) for s in range(5)]
    path = tmp_path / "new.h5"
    write_new_layout(path, maps, labels, q_grid, phi_grid, mapping)
    return path, maps


def test_new_layout_bin_mapping(new_file):
    path, maps = new_file
    info = hio.inspect_file(path)
    assert info.layout == "aps-new" and info.dt == pytest.approx(0.01 * 2 * 3)
    got = {b.label: (b.q, b.phi) for b in info.bins}
    # flat = mapping[L − 1]; iq, iphi = divmod(flat, 3)
    assert got == {1: (0.006, 30.0), 2: (0.003, -10.0), 4: (0.003, 70.0), 6: (0.003, 30.0)}
    ds = hio.load_two_time(path, q=0.003)  # sorted by angle
    assert ds.labels == (2, 6, 4) and np.array_equal(ds.phi, [-10.0, 30.0, 70.0])
    # label 2 is map c2_00002, label 4 is c2_00004 (running counter over processed_bins)
    expected = np.triu(maps[1]).astype(np.float32).astype(np.float64)
    full = expected + expected.T - np.diag(np.diag(expected))
    off = ~np.eye(N, dtype=bool)
    np.testing.assert_array_equal(ds.c2[0][off], full[off])


def test_every_ring_of_a_file_by_default(new_file):
    path, _ = new_file
    ds = hio.load_two_time(path)  # both rings: q per bin, rings in increasing q
    assert ds.labels == (2, 6, 4, 1)
    np.testing.assert_array_equal(ds.q, [0.003, 0.003, 0.003, 0.006])
    np.testing.assert_array_equal(ds.phi, [-10.0, 30.0, 70.0, 30.0])
    one = hio.load_two_time(path, q=0.006)
    np.testing.assert_array_equal(ds.c2[3], one.c2[0])
    assert isinstance(one.q, float) and one.q == 0.006  # one ring: a scalar q, as before
    model = ds.model()
    np.testing.assert_array_equal(model.q, ds.q)
    chosen = hio.load_two_time(path, q=[0.006, 0.003], phi=30.0)  # 30° on both rings
    assert chosen.labels == (6, 1)
    text = repr(ds)
    assert "q = 0.003 1/Å: 3 angles: -10.0, 30.0, 70.0°" in text
    assert "q = 0.006 1/Å: 1 angle: 30.0°" in text


def test_triangle_rebuild_and_diagonal_replacement(new_file):
    path, maps = new_file
    ds = hio.load_two_time(path, q=0.006, phi=30.0)
    u = np.triu(maps[0]).astype(np.float32).astype(np.float64)
    c = ds.c2[0]
    assert np.array_equal(c, c.T)
    i = np.arange(1, N - 1)
    # float32 as stored (half the memory); the diagonal is the neighbours' mean, rounded to it
    assert c.dtype == np.float32
    # 64-byte aligned, so that JAX on the CPU reads the maps in place (no copy of their size)
    assert ds.c2.ctypes.data % 64 == 0
    if jax.default_backend() == "cpu":
        assert jax.device_put(ds.c2).unsafe_buffer_pointer() == ds.c2.ctypes.data
    np.testing.assert_array_equal(c[i, i], ((u[i - 1, i] + u[i, i + 1]) / 2).astype(np.float32))
    assert c[0, 0] == u[0, 1] and c[-1, -1] == u[-2, -1]
    assert ds.c2.dtype == np.float32


def test_frames_time_origin_and_dt(new_file):
    path, _ = new_file
    full = hio.load_two_time(path, q=0.003, phi=[70.0])
    window = hio.load_two_time(path, q=0.003, phi=[70.0], frames=(5, 20), time_origin=100.0)
    assert window.c2.shape == (1, 16, 16) and window.frames == (5, 20)
    off = ~np.eye(16, dtype=bool)
    np.testing.assert_array_equal(window.c2[0][off], full.c2[0, 4:20, 4:20][off])
    np.testing.assert_allclose(window.t, 100.0 + 0.06 * np.arange(16), rtol=1e-15)
    assert hio.load_two_time(path, q=0.003, dt=0.5).dt == 0.5
    model = window.model(L=1.5e6)
    assert (
        float(model.q) == 0.003
        and float(model.L) == 1.5e6
        and float(model.dt) == pytest.approx(0.06)
    )
    np.testing.assert_array_equal(model.t, window.t)
    # the sample's age at frame 1 of the file, whatever the window: frame 5 is 4 steps older
    aged = hio.load_two_time(path, q=0.003, phi=[70.0], frames=(5, 20), sample_age=2.0)
    np.testing.assert_allclose(aged.t, 2.0 + 0.06 * (4 + np.arange(16)), rtol=1e-15)
    with pytest.raises(ValueError, match="not both"):
        hio.load_two_time(path, q=0.003, time_origin=1.0, sample_age=2.0)
    # printed: a summary of the dataset, not its arrays
    text = repr(window)
    assert text.splitlines()[0].startswith(f"TwoTimeDataset from {path} (aps-new layout)")
    assert (
        "q = 0.003 1/Å: 1 angle: 70.0°" in text
        and "frames 5–20 (16)" in text
        and "t = 100 … 100.9 s" in text
    )
    assert "c2: (1, 16, 16) float32" in text and "[[" not in text


def test_legacy_layout_subset_of_bins(tmp_path):
    path = tmp_path / "old.hdf"
    maps = {2: _c2(10), 5: _c2(11), 6: _c2(12)}
    dq = [0.002, 0.004, 0.004, 0.004, 0.008, 0.008]
    dphi = [0.0, -20.0, 25.0, 70.0, 0.0, 90.0]
    write_legacy_layout(path, maps, dq, dphi)
    info = hio.inspect_file(path)
    assert info.layout == "aps-legacy" and info.dt == pytest.approx(0.01)
    assert [(b.label, b.q, b.phi) for b in info.bins] == [
        (2, 0.004, -20.0),
        (5, 0.008, 0.0),
        (6, 0.008, 90.0),
    ]
    ds = hio.load_two_time(path, q=0.008)
    assert ds.labels == (5, 6) and ds.layout == "aps-legacy"
    u = np.triu(maps[6]).astype(np.float32).astype(np.float64)
    assert ds.c2[1, 3, 7] == u[3, 7] and ds.c2[1, 7, 3] == u[3, 7]


def test_selection_errors_list_what_exists(new_file):
    path, _ = new_file
    with pytest.raises(ValueError, match=r"no bin at φ = 70° \(within 1°\) for q = 0\.006"):
        hio.load_two_time(path, phi=70.0)  # every ring must have the angles asked for
    with pytest.raises(ValueError, match=r"no bin at q = 0\.01.*available: 0\.003, 0\.006"):
        hio.load_two_time(path, q=0.01)
    with pytest.raises(ValueError, match=r"no bin at φ = 70°.*available: 30°"):
        hio.load_two_time(path, q=0.006, phi=70.0)  # a cell that was never processed
    with pytest.raises(ValueError, match="window of at least 3 frames"):
        hio.load_two_time(path, q=0.003, frames=(10, 30))
    with pytest.raises(ValueError, match="must be finite and > 0"):
        hio.load_two_time(path, q=0.003, dt=-1.0)


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        hio.load_two_time(tmp_path / "missing.h5")
    text = tmp_path / "notes.txt"
    text.write_text("not hdf5")
    with pytest.raises(ValueError, match="not an HDF5 file"):
        hio.inspect_file(text)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["/something/else"] = 1
    with pytest.raises(ValueError, match="not an XPCS result file"):
        hio.inspect_file(other)
    multitau = tmp_path / "multitau.h5"
    with h5py.File(multitau, "w") as f:
        f["/xpcs/multitau/g2"] = np.ones((3, 4))
    with pytest.raises(ValueError, match="without two-time data"):
        hio.inspect_file(multitau)
    no_dt = tmp_path / "nodt.hdf"
    write_legacy_layout(no_dt, {1: _c2(1)}, [0.004], [0.0])
    with h5py.File(no_dt, "a") as f:
        del f["/measurement/instrument/detector/exposure_period"]
    with pytest.raises(ValueError, match="pass dt="):
        hio.load_two_time(no_dt)


def test_missing_stride_or_averaging_is_not_assumed_one(tmp_path, new_file):
    path, _ = new_file
    partial = tmp_path / "nostride.h5"
    partial.write_bytes(path.read_bytes())
    with h5py.File(partial, "a") as f:
        del f["/xpcs/twotime/config/stride_frame"]
    info = hio.inspect_file(partial)
    assert info.dt is None and info.dt_missing == ("/xpcs/twotime/config/stride_frame",)
    with pytest.raises(ValueError, match=r"lacks /xpcs/twotime/config/stride_frame.*pass dt="):
        hio.load_two_time(partial, q=0.003)
    assert hio.load_two_time(partial, q=0.003, dt=0.08).dt == 0.08


def test_full_matrices_leading_axes_and_nan_below_the_diagonal(tmp_path):
    m = _c2(20, n=10)
    lower_nan = np.triu(m) + np.tril(np.full_like(m, np.nan), -1)
    maps = [m, lower_nan, m[None]]  # stored full; triangle with NaN below; with a leading axis
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as f:
        f["/xpcs/qmap/dynamic_v_list_dim0"] = [0.005]
        f["/xpcs/qmap/dynamic_v_list_dim1"] = [0.0, 30.0, 60.0]
        f["/xpcs/qmap/dynamic_num_pts"] = [1, 3]
        f["/xpcs/qmap/dynamic_index_mapping"] = [0, 1, 2]
        f["/xpcs/twotime/processed_bins"] = [1, 2, 3]
        f["/entry/instrument/detector_1/frame_time"] = 0.1
        f["/xpcs/twotime/config/stride_frame"] = 1
        f["/xpcs/twotime/config/avg_frame"] = 1
        for k, stored in enumerate(maps):
            f[f"/xpcs/twotime/correlation_map/c2_{k + 1:05d}"] = stored
    ds = hio.load_two_time(path)
    off = ~np.eye(10, dtype=bool)
    for k in range(3):  # all three give the same matrix, none doubled
        np.testing.assert_allclose(ds.c2[k][off], m[off], rtol=1e-15)


def test_small_q_values_and_a_whole_bad_frame(tmp_path):
    m = _c2(30, n=12)
    m[5, :] = np.nan  # frame 6 is bad
    m[:, 5] = np.nan
    path = tmp_path / "smallq.h5"
    write_new_layout(path, [_c2(31, n=12), m], [1, 2], [3.123456784e-4], [0.0, 60.0], [0, 1])
    assert hio.load_two_time(path, q=0.0003123, phi=0.0).c2.shape == (1, 12, 12)
    with pytest.raises(ValueError, match=r"NaN or infinite values in frame 6;"):
        hio.load_two_time(path, q=0.0003123)


def test_corrupt_file(tmp_path, new_file):
    path, _ = new_file
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        hio.inspect_file(corrupt)


@pytest.mark.parametrize("defect", ["nan", "zero_row"])
def test_bad_values_say_where(tmp_path, defect):
    m = _c2(3)
    if defect == "nan":
        m[6, 9] = np.nan
    else:
        m[11, :] = 0.0
        m[:, 11] = 0.0
    path = tmp_path / "bad.h5"
    write_new_layout(path, [m], [1], [0.005], [0.0], [0])
    match = (
        "NaN or infinite values in frames 7, 10" if defect == "nan" else "all-zero rows at frame 12"
    )
    with pytest.raises(ValueError, match=match):
        hio.load_two_time(path)
    # the defect can be excluded with a frame window
    window = (12, N) if defect == "nan" else (1, 11)
    assert hio.load_two_time(path, frames=window).c2.shape[0] == 1


def test_bad_frames_are_masked_on_request(tmp_path):
    # bin 1: frame 6 all NaN, one inf at frames (18, 20); bin 2: frames 12–14 all zero
    m1, m2 = _c2(40), _c2(41)
    m1[5, :] = m1[:, 5] = np.nan
    m1[17, 19] = m1[19, 17] = np.inf
    m2[11:14, :] = m2[:, 11:14] = 0.0
    m2[12, 12] = 1.3  # a diagonal value alone does not make a frame good
    path = tmp_path / "glitches.h5"
    write_new_layout(path, [m1, m2], [1, 2], [0.005], [0.0, 45.0], [0, 1])
    with pytest.raises(ValueError, match='bad_frames="mask"'):
        hio.load_two_time(path)
    with pytest.warns(hio.BadFramesWarning, match=r"masked 5 bad frames .*: 6, 12–14, 18\.$"):
        ds = hio.load_two_time(path, bad_frames="mask")
    bad = [5, 11, 12, 13, 17]  # 0-based; of frames 18 and 20 (one inf) the first goes
    expected = np.ones(N, bool)
    expected[bad] = False
    np.testing.assert_array_equal(ds.frame_mask, expected)
    assert np.all(np.isnan(ds.c2[:, bad, :])) and np.all(np.isnan(ds.c2[:, :, bad]))
    good = np.flatnonzero(expected)
    for k, m in enumerate((m1, m2)):
        u = np.triu(m).astype(np.float32).astype(np.float64)
        full = u + u.T  # the diagonal is not compared
        sub, off = ds.c2[k][np.ix_(good, good)], ~np.eye(good.size, dtype=bool)
        np.testing.assert_array_equal(sub[off], full[np.ix_(good, good)][off])
        # the diagonal: the mean of the nearest good neighbours (0-based: 4 → 3, 6; 10 → 9, 14)
        # (stored as float32, as the maps are)
        assert ds.c2[k, 4, 4] == np.float32((full[4, 3] + full[4, 6]) / 2)
        assert ds.c2[k, 10, 10] == np.float32((full[10, 9] + full[10, 14]) / 2)
        assert ds.c2[k, 0, 0] == full[0, 1] and ds.c2[k, -1, -1] == full[-1, -2]
    # within a window: only its bad frames, numbered as in the file; a clean window does not warn
    with pytest.warns(hio.BadFramesWarning, match=r"masked 1 bad frame .*: 6\.$"):
        window = hio.load_two_time(path, frames=(3, 11), bad_frames="mask")
    np.testing.assert_array_equal(np.flatnonzero(~window.frame_mask), [3])
    clean = hio.load_two_time(path, frames=(21, N), bad_frames="mask")
    assert clean.frame_mask.all() and np.all(np.isfinite(clean.c2))
    with pytest.raises(ValueError, match=r"only 2 of 3 frames in 5–7 are good \(bad: 6\)"):
        hio.load_two_time(path, frames=(5, 7), bad_frames="mask")
    with pytest.raises(ValueError, match='bad_frames must be "raise" or "mask"'):
        hio.load_two_time(path, bad_frames="drop")  # type: ignore[arg-type]


def test_frame_ranges():
    from homodyne.io._aps import frame_ranges

    assert frame_ranges([45, 12, 40, 41, 42, 43, 44]) == "12, 40–45"
    assert frame_ranges([3]) == "3" and frame_ranges([]) == ""
    assert frame_ranges(np.array([1, 2, 4, 5, 6, 9])) == "1–2, 4–6, 9"


def test_loading_never_writes_the_input(new_file):
    path, _ = new_file
    before = hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns
    hio.load_two_time(path, q=0.006, frames=(2, 20))
    hio.inspect_file(path)
    assert (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns) == before


def test_write_aps_file_round_trip(tmp_path):
    model = homodyne.HomodyneModel(q=0.0054, dt=0.1, n_frames=20, phi=[0.0, 45.0])
    c2 = homodyne.simulate_c2(
        model, homodyne.StaticParams(1e4, -0.3, 0.0), 0.3, 1.0, noise=1e-3, seed=1
    )
    path = hio.write_aps_file(
        tmp_path / "sim.h5", c2, q=[0.0054] * 2, phi=[0.0, 45.0], frame_time=0.05, stride=2
    )
    with pytest.raises(FileExistsError):
        hio.write_aps_file(path, c2, q=[0.0054] * 2, phi=[0.0, 45.0], frame_time=0.05)
    with h5py.File(path, "r") as f:  # LZF-compressed upper triangles with the diagonal
        stored = f["/xpcs/twotime/correlation_map/c2_00001"]
        assert stored.compression == "lzf" and stored.dtype == np.float32
        assert np.all(np.tril(stored[()], -1) == 0)
    ds = hio.load_two_time(path)
    off = ~np.eye(20, dtype=bool)
    np.testing.assert_allclose(ds.c2[:, off], c2[:, off], rtol=1e-7)  # float32 storage
    assert ds.dt == pytest.approx(0.1)


def test_fit_results_round_trip(tmp_path):
    # the shape and kind of fit of test_plot's and test_fit's: compiled once per test run
    model = homodyne.HomodyneModel(q=0.0054, dt=0.1, n_frames=24, phi=[0.0, 45.0])
    truth = homodyne.LaminarFlowParams(1.2e4, -0.5, 50.0, 1.5e-3, 0.4, 2e-4, 4.0)
    c2 = homodyne.simulate_c2(model, truth, 0.3, 1.0, noise=2e-3, seed=2)
    result = homodyne.fit(model, c2, sigma=2e-3, init=truth)
    json_path, _npz_path = hio.save_fit(
        result, tmp_path / "out", data=c2, inputs={"source": "synthetic"}
    )
    saved = hio.load_fit(json_path)
    np.testing.assert_array_equal(saved.params.to_array(), result.params.to_array())
    np.testing.assert_array_equal(saved.errors.to_array(), result.errors.to_array())
    np.testing.assert_array_equal(saved.covariance, result.covariance)
    np.testing.assert_array_equal(saved.contrast, result.contrast)
    assert saved.names == result.names and saved.statistics["chi2"] == float(result.chi2)
    assert saved.statistics["converged"] == bool(result.converged)
    assert saved.inputs["source"] == "synthetic" and saved.inputs["q"] == 0.0054
    assert (
        saved.versions["homodyne"] == homodyne.__version__ or saved.versions["homodyne"] is not None
    )
    np.testing.assert_array_equal(saved.arrays["data"], c2)
    np.testing.assert_allclose(saved.arrays["fit"], result.fitted_g2(), rtol=1e-15)
    np.testing.assert_allclose(
        saved.arrays["residuals"], (c2 - saved.arrays["fit"]) / 2e-3, rtol=1e-12, atol=1e-12
    )
    with pytest.raises(FileNotFoundError):
        hio.load_fit(tmp_path / "nothing.json")


def test_degenerate_fit_is_saved_as_strict_json(tmp_path):
    import json

    model = homodyne.HomodyneModel(q=0.0054, dt=0.1, n_frames=40, phi=0.0)  # as in test_fit
    spec = homodyne.FitSpec(mode="static")
    result = homodyne.fit(model, np.ones((1, 40, 40)), sigma=1e-3, spec=spec)  # no signal
    json_path, _ = hio.save_fit(result, tmp_path)

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    json.loads(json_path.read_text(), parse_constant=refuse)  # strict JSON
    saved = hio.load_fit(json_path)
    np.testing.assert_array_equal(saved.errors.to_array(), result.errors.to_array())
