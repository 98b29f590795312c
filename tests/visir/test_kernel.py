"""The compiled apply + correct kernels against a plain-numpy reference of the same math (module docstrings of
visir.apply and visir.correct), on random inputs: NaNs, pixels outside the model and the 9 km window,
classes beyond the model's, both methods, M01 (9×) and M400 (22.5×, not nested) tables; and tiles with
halos reproducing the whole window exactly, whatever the chunks."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soilcube.grids import Window, parent_index
from soilcube.visir.apply import downscale
from soilcube.visir.correct import Correction, correct_to_smap, downscale_and_correct, footprint_weights
from soilcube.visir.qa import QA
from soilcube.visir.tiles import _run_tile, halo_spans

N_CLASSES = 10
TIME = pd.date_range("2021-06-30", periods=2, freq="D")  # two months
RATIO = {"M01": 9, "M400": 22.5}


# --- the reference: the documented math, written plainly ---------------------------------------------------


def reference_theta(dt, veg, a0, a1, borrowed, rows, cols):
    """θ and QA of one (time, overpass) plane; a0/a1/borrowed: (model row, model col, class)."""
    veg = np.asarray(veg, dtype=np.float64)
    inside = (rows[:, None] >= 0) & (cols[None, :] >= 0) & (veg >= 0) & (veg < a0.shape[2])
    r = np.broadcast_to(np.where(rows >= 0, rows, 0)[:, None], dt.shape)
    c = np.broadcast_to(np.where(cols >= 0, cols, 0)[None, :], dt.shape)
    k = np.where(inside, veg, 0).astype(np.int64)
    theta = np.where(inside, a0[r, c, k] + a1[r, c, k] * dt.astype(np.float64), np.nan)
    nonpositive = theta <= 0
    no_model = ~inside | np.isnan(a0[r, c, k]) | np.isnan(a1[r, c, k])
    qa = (
        np.isnan(dt) * QA.NO_DELTA_T
        | (inside & (borrowed[r, c, k] > 0)) * QA.CLASS_BORROWED
        | nonpositive * QA.OUT_OF_RANGE
        | no_model * QA.NO_MODEL
    )
    return np.where(nonpositive, np.nan, theta), qa.astype(np.uint8)


def reference_correct(theta, smap, rows, cols, c: Correction):
    """θ' and QA of one plane: per-cell sums, the footprint box with fractional edge weights (truncated at
    the window edge), σ with ddof=0, α, the ratio guard and the valid range."""
    n_rows, n_cols = smap.shape
    s1, s2, n = (np.zeros(smap.shape) for _ in range(3))
    for r in range(n_rows):
        for k in range(n_cols):
            block = theta[rows == r][:, cols == k]
            s1[r, k], s2[r, k], n[r, k] = np.nansum(block), np.nansum(block**2), np.isfinite(block).sum()
    w = footprint_weights(c.footprint_km)
    reach = w.size // 2
    box1, boxn = np.zeros(smap.shape), np.zeros(smap.shape)
    for r in range(n_rows):
        for k in range(n_cols):
            for i in range(-reach, reach + 1):
                for j in range(-reach, reach + 1):
                    if 0 <= r + i < n_rows and 0 <= k + j < n_cols:
                        box1[r, k] += w[i + reach] * w[j + reach] * s1[r + i, k + j]
                        boxn[r, k] += w[i + reach] * w[j + reach] * n[r + i, k + j]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(boxn > 0, box1 / boxn, np.nan)
        std = np.where(n > 0, np.sqrt(np.maximum(s2 / n - (s1 / n) ** 2, 0)), np.nan)
    inside = (rows[:, None] >= 0) & (cols[None, :] >= 0)
    r = np.broadcast_to(np.where(rows >= 0, rows, 0)[:, None], theta.shape)
    k = np.broadcast_to(np.where(cols >= 0, cols, 0)[None, :], theta.shape)
    big = np.where(inside, smap[r, k], np.nan)
    mean_px, std_px = np.where(inside, mean[r, k], np.nan), np.where(inside, std[r, k], np.nan)
    additive = theta + (big - mean_px)
    corrected, fallback = additive, np.zeros(theta.shape, bool)
    if c.method == "hybrid":
        with np.errstate(invalid="ignore", divide="ignore"):
            alpha = np.where(std_px + c.k > 0, std_px / (std_px + c.k), 1.0)
            ratio_ok = mean_px >= c.ratio_min_mean
            corrected = np.where(ratio_ok, alpha * additive + (1 - alpha) * theta * big / mean_px, additive)
        fallback = ~ratio_ok & np.isfinite(additive)
    low, high = c.valid_range
    out = np.isfinite(corrected) & ((corrected <= low) | (corrected > high))
    qa = ~np.isfinite(big) * QA.NO_SMAP | out * QA.OUT_OF_RANGE | fallback * QA.ADDITIVE_FALLBACK
    return np.where(out, np.nan, corrected), qa.astype(np.uint8)


# --- random cases -------------------------------------------------------------------------------------------


def _case(seed, grid, n_rows, n_cols, offset, margins):
    """Fine ΔT (time, overpass, y, x) over an M09 window with `margins` extra fine pixels (top, bottom,
    left, right: outside the 9 km window), classes with some beyond the model's, a model by month and
    overpass on a coarser grid (some cells NaN, first fine rows outside it), SMAP with gaps."""
    rng = np.random.default_rng(seed)
    coarse = Window("M09", 100 + offset[0], 200 + offset[1], n_rows, n_cols)
    top, bottom, left, right = margins
    ratio = RATIO[grid]
    row0, col0 = int(np.ceil(coarse.row0 * ratio)) - top, int(np.ceil(coarse.col0 * ratio)) - left
    fine = Window(grid, row0, col0, int(n_rows * ratio) + top + bottom, int(n_cols * ratio) + left + right)
    shape = fine.shape
    dt = rng.uniform(-10, 45, (2, 2, *shape)).astype(np.float32)
    dt[rng.random(dt.shape) < 0.25] = np.nan
    veg = rng.integers(0, N_CLASSES + 2, (2, *shape)).astype(np.uint8)
    model_shape = (3, 4, N_CLASSES, 12, 2)
    a0 = rng.uniform(0.15, 0.5, model_shape)
    a0[rng.random(model_shape) < 0.05] = np.nan
    a1 = rng.uniform(-0.015, -0.001, model_shape)
    borrowed = (rng.random(model_shape) < 0.2).astype(np.uint8)
    dims = ("lat", "lon", "veg_class", "month", "overpass")
    model = xr.Dataset(
        {"a0": (dims, a0), "a1": (dims, a1), "borrowed": (dims, borrowed)},
        coords={"veg_class": np.arange(N_CLASSES), "month": np.arange(1, 13), "overpass": ["AM", "PM"]},
    )
    model_rows = np.minimum(np.arange(shape[0]) * 3 // shape[0], 2)
    model_rows[:2] = -1
    model_cols = np.minimum(np.arange(shape[1]) * 4 // shape[1], 3)
    smap = rng.uniform(0.0, 0.55, (2, 2, n_rows, n_cols))
    smap[rng.random(smap.shape) < 0.15] = np.nan
    lead = {"time": TIME, "overpass": ["AM", "PM"]}
    return {
        "dt": xr.DataArray(dt, dims=("time", "overpass", "y", "x"), coords=lead),
        "veg": xr.DataArray(veg, dims=("time", "y", "x"), coords={"time": TIME}),
        "model": model,
        "cell_index": (model_rows, model_cols),
        "smap": xr.DataArray(smap, dims=("time", "overpass", "y", "x"), coords=lead),
        "parents": parent_index(fine, coarse),
    }


def _reference(case, corrections):
    dt, veg, model, smap = case["dt"].values, case["veg"].values, case["model"], case["smap"].values
    rows, cols = case["parents"]
    thetas, apply_qas = np.full(dt.shape, np.nan), np.zeros(dt.shape, np.uint8)
    outs = {name: np.full(dt.shape, np.nan) for name in corrections}
    qas = {name: np.zeros(dt.shape, np.uint8) for name in corrections}
    for t in range(2):
        for o in range(2):
            tables = [model[v].values[..., TIME[t].month - 1, o] for v in ("a0", "a1", "borrowed")]
            theta, qa = reference_theta(dt[t, o], veg[t], *tables, *case["cell_index"])
            thetas[t, o], apply_qas[t, o] = theta, qa
            for name, c in corrections.items():
                outs[name][t, o], qas[name][t, o] = reference_correct(theta, smap[t, o], rows, cols, c)
    return thetas, apply_qas, outs, qas


def _assert_close(got, expected):
    got = np.asarray(got)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


cases = st.tuples(
    st.integers(0, 2**31),
    st.sampled_from(["M01", "M400"]),
    st.integers(1, 6),
    st.integers(1, 6),
    st.tuples(st.integers(0, 3), st.integers(0, 3)),
    st.tuples(*(st.sampled_from([0, 0, 3]) for _ in range(4))),
)
corrections = st.builds(
    Correction,
    method=st.sampled_from(["hybrid", "additive"]),
    k=st.sampled_from([0.0, 0.02, 0.1]),
    footprint_km=st.sampled_from([9.0, 27.0, 33.0, 36.0, 50.0]),
    ratio_min_mean=st.sampled_from([0.01, 0.25]),
    valid_range=st.sampled_from([(0.0, 0.6), (0.1, 0.4), (-np.inf, np.inf)]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases, corrections, corrections)
def test_fused_kernel_matches_the_reference(case_args, first, second):
    case = _case(*case_args)
    wanted = {"a": first, "b": second}
    thetas, apply_qa, outs, qas = _reference(case, wanted)
    fused = downscale_and_correct(case["dt"], case["veg"], case["model"], case["cell_index"], case["smap"],
                                  case["parents"], wanted, dtype=np.float64)
    for name in wanted:
        _assert_close(fused[name].transpose("time", "overpass", "y", "x"), outs[name])
    np.testing.assert_array_equal(fused["qa"].transpose("time", "overpass", "y", "x"), apply_qa | qas["a"])
    theta = downscale(case["dt"], case["veg"], case["model"], case["cell_index"])
    _assert_close(theta["sm"], thetas)
    np.testing.assert_array_equal(theta["qa"], apply_qa)
    single = correct_to_smap(theta["sm"], case["smap"], case["parents"], method=second.method, k=second.k,
                             footprint_km=second.footprint_km, ratio_min_mean=second.ratio_min_mean,
                             valid_range=second.valid_range)
    _assert_close(single["sm"], outs["b"])
    np.testing.assert_array_equal(single["qa"], qas["b"])


def test_no_correction_is_refused():
    case = _case(5, "M01", 2, 2, (1, 0), (1, 1, 0, 0))
    with pytest.raises(ValueError, match="no correction asked for"):
        downscale_and_correct(case["dt"], case["veg"], case["model"], case["cell_index"], case["smap"],
                              case["parents"], {})


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases, st.integers(5, 60), st.integers(5, 60), st.booleans())
def test_tiles_reproduce_the_whole_window_exactly(case_args, tile_rows, tile_cols, split_lead):
    case = _case(*case_args)
    eager = downscale_and_correct(case["dt"], case["veg"], case["model"], case["cell_index"], case["smap"],
                                  case["parents"])
    lead = {"time": 1, "overpass": 1} if split_lead else {}
    lazy = downscale_and_correct(
        case["dt"].chunk(lead | {"y": tile_rows, "x": tile_cols}),
        case["veg"].chunk({"y": tile_rows + 3}),  # other chunks than ΔT's: rechunked to them
        case["model"], case["cell_index"], case["smap"].chunk({"time": 1}), case["parents"],
    )
    assert lazy["sm"].chunks[-2:] == case["dt"].chunk({"y": tile_rows, "x": tile_cols}).chunks[-2:]
    xr.testing.assert_identical(lazy.compute(), eager)  # bit for bit, NaNs in the same places


def test_float32_output_is_the_rounded_float64():
    case = _case(7, "M400", 4, 5, (1, 2), (3, 0, 0, 3))
    args = (case["dt"], case["veg"], case["model"], case["cell_index"], case["smap"], case["parents"])
    double = downscale_and_correct(*args, dtype=np.float64)
    single = downscale_and_correct(*args)
    assert single["sm"].dtype == np.float32 and single["qa"].dtype == np.uint8
    for name in ("sm", "sm_additive", "qa"):
        xr.testing.assert_identical(single[name], double[name].astype(single[name].dtype))


def test_tiles_read_only_their_halo():
    """A tile's task sees its own pixels plus every pixel of the 9 km cells within the footprint's reach."""
    coarse = Window("M09", 101, 203, 10, 10)
    fine = Window("M400", 2273, 4568, 225, 225)
    rows, _ = parent_index(fine, coarse)
    spans = halo_spans(rows, 2, [45] * 5)
    for (start, stop), first in zip(spans, range(0, 225, 45), strict=True):
        own = np.unique(rows[first : first + 45])
        wanted = np.flatnonzero((rows >= own.min() - 2) & (rows <= own.max() + 2))
        assert (start, stop) == (min(wanted[0], first), max(wanted[-1] + 1, first + 45))
    with pytest.raises(ValueError, match="non-decreasing"):
        halo_spans(rows[::-1], 2, [225])


def test_the_graph_holds_shared_tables_once():
    """Per-tile tasks refer to one key for the lookup tables and the model, so the graph does not grow
    with them per tile."""
    case = _case(3, "M01", 6, 6, (0, 0), (0, 0, 0, 0))
    lazy = downscale_and_correct(case["dt"].chunk({"time": 1, "overpass": 1, "y": 9, "x": 9}), case["veg"],
                                 case["model"], case["cell_index"], case["smap"], case["parents"])
    graph = dict(lazy["sm"].data.__dask_graph__())
    shared = [k for k in graph if isinstance(k, str) and "-shared-" in k]
    assert len(shared) == 1
    tiles = [v for v in graph.values() if isinstance(v, tuple) and v[0] is _run_tile]
    assert len(tiles) == 4 * 6 * 6
    assert all(not any(isinstance(a, np.ndarray) and a.size > 16 for a in t[1:]) for t in tiles)


def test_under_a_distributed_client_the_shared_tables_are_scattered_once():
    from distributed import Client, LocalCluster

    case = _case(5, "M400", 3, 4, (1, 0), (3, 3, 0, 0))
    args = (case["model"], case["cell_index"], case["smap"], case["parents"])
    eager = downscale_and_correct(case["dt"], case["veg"], *args)
    with (
        # worker processes: the scattered tables and plan travel pickled, as on a real cluster
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                     dashboard_address=":0") as cluster,
        Client(cluster),
    ):
        lazy = downscale_and_correct(case["dt"].chunk({"y": 30, "x": 40}), case["veg"], *args)
        keys = dict(lazy["sm"].data.__dask_graph__())
        assert not [k for k in keys if isinstance(k, str) and "-shared-" in k]
        xr.testing.assert_identical(lazy.compute(), eager)
