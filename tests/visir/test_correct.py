"""correct_to_smap: hybrid / additive correction of fine θ to SMAP 9 km over M01 (9×) and M400 (22.5×)."""

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from soilcube.grids import Window, parent_index
from soilcube.visir.correct import correct_to_smap, footprint_weights
from soilcube.visir.qa import QA

NO_RANGE = (-np.inf, np.inf)
TIME = pd.date_range("2021-06-01", periods=2, freq="D")


def _forbid_compute(*args, **kwargs):
    raise AssertionError("the lazy graph was computed")


def _setup(fine_grid, n_rows=3, n_cols=4, seed=0, n_time=2):
    """θ on a fine window exactly covering an M09 window, SMAP on that window, the parent tables."""
    coarse = Window("M09", 100, 200, n_rows, n_cols)
    ratio = {"M01": 9, "M400": 22.5}[fine_grid]
    fine = Window(fine_grid, int(100 * ratio), int(200 * ratio), int(n_rows * ratio), int(n_cols * ratio))
    rng = np.random.default_rng(seed)
    theta = xr.DataArray(
        rng.uniform(0.1, 0.4, (n_time, *fine.shape)),
        dims=("time", "y", "x"),
        coords={"time": TIME[:n_time], "y": fine.y, "x": fine.x},
    )
    smap = xr.DataArray(
        rng.uniform(0.1, 0.4, (n_time, *coarse.shape)),
        dims=("time", "y", "x"),
        coords={"time": TIME[:n_time], "y": coarse.y, "x": coarse.x},
    )
    return theta, smap, parent_index(fine, coarse)


def _cell_masks(rows, cols, shape):
    return {
        (r, c): (rows[:, None] == r) & (cols[None, :] == c) for r in range(shape[0]) for c in range(shape[1])
    }


def _footprint_mean(corrected, theta, smap, rows, cols):
    """θ̄ recovered from an additive result: θ' = θ + Θ − θ̄."""
    smap_px = smap.values[:, rows][:, :, cols]
    return theta.values + smap_px - corrected.values


def test_footprint_weights():
    np.testing.assert_allclose(footprint_weights(9), [1.0])
    np.testing.assert_allclose(footprint_weights(27), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(footprint_weights(33), [1 / 3, 1.0, 1.0, 1.0, 1 / 3])
    np.testing.assert_allclose(footprint_weights(36), [0.5, 1.0, 1.0, 1.0, 0.5])
    # 50 km: half-width 25/9 cells = 2.5 + 5/18, so the edge cells at ±3 count for 5/18
    np.testing.assert_allclose(footprint_weights(50), [5 / 18, 1.0, 1.0, 1.0, 1.0, 1.0, 5 / 18])
    with pytest.raises(ValueError, match="footprint"):
        footprint_weights(5)


def test_36_km_footprint_is_the_cell_plus_one_and_a_half_cells_each_side():
    theta, smap, (rows, cols) = _setup("M01", 5, 5, n_time=1)
    values = np.arange(25.0).reshape(5, 5) / 100 + 0.1  # constant within each 9 km cell
    theta[:] = values[rows][:, cols]
    out = correct_to_smap(theta, smap, (rows, cols), method="additive", valid_range=NO_RANGE)
    mean = _footprint_mean(out["sm"], theta, smap, rows, cols)[0]
    weights = np.outer([0.5, 1, 1, 1, 0.5], [0.5, 1, 1, 1, 0.5])
    np.testing.assert_allclose(mean[rows == 2][:, cols == 2], (weights * values).sum() / 16)
    corner = weights[2:, 2:]  # truncated at the window edge
    np.testing.assert_allclose(mean[rows == 0][:, cols == 0], (corner * values[:3, :3]).sum() / corner.sum())


def test_27_km_footprint_is_the_exact_fine_pixel_block():
    theta, smap, (rows, cols) = _setup("M01")
    theta[0, 4, 5] = np.nan
    out = correct_to_smap(theta, smap, (rows, cols), method="additive", footprint_km=27, valid_range=NO_RANGE)
    mean = _footprint_mean(out["sm"], theta, smap, rows, cols)
    for (r, c), inside in _cell_masks(rows, cols, (3, 4)).items():
        block = theta[:, max(9 * r - 9, 0) : 9 * r + 18, max(9 * c - 9, 0) : 9 * c + 18]
        expected = block.mean(("y", "x"), skipna=True).values
        pixel_means = mean[:, inside]
        for t in range(2):
            finite = np.isfinite(pixel_means[t])
            # only the NaN pixel itself is lost: the footprint means skip it
            assert finite.sum() == inside.sum() - (t == 0 and (r, c) == (0, 0))
            np.testing.assert_allclose(pixel_means[t][finite], expected[t], rtol=1e-12)
    assert np.isnan(out["sm"][0, 4, 5])


@pytest.mark.parametrize("footprint_km", [9, 33, 36])
def test_k_to_zero_gives_the_additive_form(footprint_km):
    theta, smap, index = _setup("M01")
    hybrid = correct_to_smap(theta, smap, index, k=0.0, footprint_km=footprint_km, valid_range=NO_RANGE)
    additive = correct_to_smap(
        theta, smap, index, method="additive", footprint_km=footprint_km, valid_range=NO_RANGE
    )
    assert hybrid["sm"].notnull().all()
    np.testing.assert_allclose(hybrid["sm"], additive["sm"], rtol=1e-13)


def test_constant_cells_give_the_ratio_form():
    theta, smap, (rows, cols) = _setup("M01")
    values = np.random.default_rng(3).uniform(0.1, 0.4, (2, 3, 4))
    theta[:] = values[:, rows][:, :, cols]
    hybrid = correct_to_smap(theta, smap, (rows, cols), footprint_km=27, valid_range=NO_RANGE)
    additive = correct_to_smap(
        theta, smap, (rows, cols), method="additive", footprint_km=27, valid_range=NO_RANGE
    )
    mean = _footprint_mean(additive["sm"], theta, smap, rows, cols)
    ratio = theta.values * smap.values[:, rows][:, :, cols] / mean
    assert hybrid["sm"].notnull().all() and additive["sm"].notnull().all()
    np.testing.assert_allclose(hybrid["sm"], ratio, atol=1e-6)  # σ is ~1e-9, not exactly 0
    assert not np.allclose(hybrid["sm"], additive["sm"], atol=1e-3)


@pytest.mark.parametrize("fine_grid", ["M01", "M400"])
@pytest.mark.parametrize("method", ["hybrid", "additive"])
def test_9_km_footprint_reproduces_smap_in_each_cell(fine_grid, method):
    theta, smap, (rows, cols) = _setup(fine_grid, seed=1)
    out = correct_to_smap(theta, smap, (rows, cols), method=method, footprint_km=9, valid_range=NO_RANGE)
    masks = _cell_masks(rows, cols, (3, 4))
    if fine_grid == "M400":  # 22.5 fine pixels per 9 km cell: the cells alternate 22 and 23 rows/columns
        assert set(np.bincount(rows)) | set(np.bincount(cols)) == {22, 23}
    for (r, c), inside in masks.items():
        np.testing.assert_allclose(out["sm"].values[:, inside].mean(axis=1), smap.values[:, r, c], rtol=1e-12)


def test_m400_is_chunkwise_and_lazy():
    theta, smap, index = _setup("M400", seed=2)
    eager = correct_to_smap(theta, smap, index)
    with dask.config.set(scheduler=_forbid_compute):
        lazy = correct_to_smap(theta.chunk({"time": 1, "y": 20, "x": 25}), smap.chunk({"time": 1}), index)
    assert lazy["sm"].chunks == ((1, 1), (20, 20, 20, 7), (25, 25, 25, 15))
    xr.testing.assert_allclose(lazy.compute(), eager, rtol=1e-12)


def test_small_footprint_mean_falls_back_to_additive():
    theta, smap, (rows, cols) = _setup("M01")
    dry = (rows[:, None] == 1) & (cols[None, :] == 2)
    theta = theta.where(~dry, 0.002)
    hybrid = correct_to_smap(theta, smap, (rows, cols), footprint_km=9, valid_range=NO_RANGE)
    additive = correct_to_smap(
        theta, smap, (rows, cols), method="additive", footprint_km=9, valid_range=NO_RANGE
    )
    np.testing.assert_allclose(hybrid["sm"].values[:, dry], additive["sm"].values[:, dry])
    flagged = (hybrid["qa"] & QA.ADDITIVE_FALLBACK) > 0
    assert flagged.values[:, dry].all() and flagged.sum() == 2 * dry.sum()
    assert not (additive["qa"] & QA.ADDITIVE_FALLBACK).any()


def test_out_of_range_and_missing_smap_are_nan_with_qa():
    theta, smap, (rows, cols) = _setup("M01")
    smap[0, 0, 0] = np.nan
    smap[0, 2, 3] = 0.59  # a wet cell: its wetter pixels exceed 0.6
    smap[1, 1, 1] = 0.005  # a dry cell: its drier pixels fall to ≤ 0
    out = correct_to_smap(theta, smap, (rows, cols), method="additive", footprint_km=9)
    raw = correct_to_smap(theta, smap, (rows, cols), method="additive", footprint_km=9, valid_range=NO_RANGE)
    cells = _cell_masks(rows, cols, (3, 4))
    assert out["sm"].values[0, cells[0, 0]].size and np.isnan(out["sm"].values[0, cells[0, 0]]).all()
    assert (out["qa"].values[0, cells[0, 0]] == QA.NO_SMAP).all()
    bad = (raw["sm"] > 0.6) | (raw["sm"] <= 0)
    assert bad[0].values[cells[2, 3]].any() and bad[1].values[cells[1, 1]].any()
    assert out["sm"].where(bad).isnull().all()
    assert (((out["qa"] & QA.OUT_OF_RANGE) > 0) == bad).all()
    xr.testing.assert_equal(out["sm"].where(~bad), raw["sm"].where(~bad & raw["sm"].notnull()))


def test_pixels_outside_the_smap_window_have_no_smap():
    theta, smap, (rows, cols) = _setup("M01")
    cols = cols.copy()
    cols[-3:] = -1
    out = correct_to_smap(theta, smap, (rows, cols), valid_range=NO_RANGE)
    assert out["sm"][..., -3:].isnull().all() and (out["qa"][..., -3:] == QA.NO_SMAP).all()
    assert out["sm"][..., :-3].notnull().all()


def test_smap_without_a_lead_dim_of_theta_serves_every_step_of_it():
    theta, smap, index = _setup("M01")
    theta = xr.concat([theta, theta + 0.01], dim=xr.DataArray(["AM", "PM"], dims="overpass"))
    out = correct_to_smap(theta, smap, index)  # SMAP has time only
    broadcast = correct_to_smap(theta, smap.expand_dims(overpass=["AM", "PM"]), index)
    assert out["sm"].dims == ("overpass", "time", "y", "x") and out["sm"].notnull().any()
    xr.testing.assert_identical(out, broadcast)


def test_lazy_smap_with_eager_theta_gives_the_eager_result():
    theta, smap, index = _setup("M01")
    lazy = correct_to_smap(theta, smap.chunk({"time": 1}), index)
    assert lazy["sm"].chunks is not None
    xr.testing.assert_identical(lazy.compute(), correct_to_smap(theta, smap, index))


def test_mismatched_smap_is_refused_with_a_reason():
    theta, smap, (rows, cols) = _setup("M01")
    with pytest.raises(ValueError, match="exact"):  # other days than θ's
        correct_to_smap(theta, smap.assign_coords(time=smap.time + np.timedelta64(1, "D")), (rows, cols))
    with pytest.raises(ValueError, match=r"SMAP has dims \['overpass'\]"):
        correct_to_smap(theta, smap.expand_dims(overpass=["AM"]), (rows, cols))
    with pytest.raises(ValueError, match="beyond the SMAP grid"):
        correct_to_smap(theta, smap.isel(x=slice(0, 3)), (rows, cols))
    with pytest.raises(ValueError, match="k must be ≥ 0, got -0.01"):
        correct_to_smap(theta, smap, (rows, cols), k=-0.01)


def test_unknown_method_is_refused():
    theta, smap, index = _setup("M01")
    with pytest.raises(ValueError, match="hybrid"):
        correct_to_smap(theta, smap, index, method="ratio")


# property tests on a bare 2 × 3 grid of 9 km cells, 9 × 9 fine pixels each
ROWS, COLS = np.arange(18) // 9, np.arange(27) // 9
fine_fields = arrays(np.float64, (18, 27), elements=st.floats(0.02, 0.5))
coarse_fields = arrays(np.float64, (2, 3), elements=st.floats(0.02, 0.5))


@settings(max_examples=30, deadline=None)
@given(fine_fields, coarse_fields, st.sampled_from([9, 27, 33, 36]))
def test_additive_correction_keeps_within_cell_anomalies(fine, coarse, footprint_km):
    theta = xr.DataArray(fine, dims=("y", "x"))
    out = correct_to_smap(
        theta,
        xr.DataArray(coarse, dims=("y", "x")),
        (ROWS, COLS),
        method="additive",
        footprint_km=footprint_km,
        valid_range=NO_RANGE,
    )
    shift = (out["sm"] - theta).values
    for inside in _cell_masks(ROWS, COLS, (2, 3)).values():
        np.testing.assert_allclose(shift[inside], shift[inside][0], rtol=0, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(fine_fields, coarse_fields, st.floats(0.0, 0.1))
def test_hybrid_correction_with_cell_footprint_keeps_the_smap_mean(fine, coarse, k):
    out = correct_to_smap(
        xr.DataArray(fine, dims=("y", "x")),
        xr.DataArray(coarse, dims=("y", "x")),
        (ROWS, COLS),
        k=k,
        footprint_km=9,
        valid_range=NO_RANGE,
    )
    for (r, c), inside in _cell_masks(ROWS, COLS, (2, 3)).items():
        np.testing.assert_allclose(out["sm"].values[inside].mean(), coarse[r, c], rtol=1e-11)
