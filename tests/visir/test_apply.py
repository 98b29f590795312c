"""apply: vegetation classes, the AM/PM day–night pairing, per-pixel coefficient lookup."""

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from soilcube.visir.apply import delta_t, downscale, ndvi_class, vegetation_class
from soilcube.visir.fit import fit_model
from soilcube.visir.qa import QA

TIME = pd.date_range("2020-01-30", periods=4, freq="D")  # crosses a month boundary


def _forbid_compute(*args, **kwargs):
    raise AssertionError("the lazy graph was computed")


def test_ndvi_vegetation_class_follows_the_public_code():
    ndvi = xr.DataArray([np.nan, -0.2, 0.0, 0.05, 0.1, 0.35, 0.99, 1.0, 1.2])
    assert vegetation_class(ndvi).values.tolist() == [0, 0, 0, 0, 1, 3, 9, 9, 9]
    assert vegetation_class(ndvi).dtype == np.uint8


def test_ndvi_class_for_the_fit_leaves_bad_ndvi_without_class():
    ndvi = xr.DataArray([np.nan, -0.2, 0.0, 0.05, 0.3, 0.6, 0.7, 1.0, 1.2])
    np.testing.assert_array_equal(ndvi_class(ndvi), [np.nan, np.nan, np.nan, 0, 3, 6, 7, 9, np.nan])


def test_lai_minmax_class_scales_each_scene():
    lai = xr.DataArray(
        [[[0.0, 1.0, 2.5], [4.99, 5.0, np.nan]], [[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]], dims=("time", "y", "x")
    )
    classes = vegetation_class(lai, "lai_minmax")
    assert classes.isel(time=0).values.tolist() == [[0, 2, 5], [9, 9, 0]]
    assert (classes.isel(time=1) == 0).all()  # a constant scene has no range to scale


def test_lai_minmax_classes_stay_lazy():
    lai = xr.DataArray(np.random.default_rng(0).uniform(0, 6, (2, 8, 8)), dims=("time", "y", "x"))
    with dask.config.set(scheduler=_forbid_compute):
        lazy = vegetation_class(lai.chunk({"time": 1}), "lai_minmax")
    assert lazy.chunks is not None
    xr.testing.assert_identical(lazy.compute(), vegetation_class(lai, "lai_minmax"))


def test_unknown_vegetation_method_is_refused():
    with pytest.raises(ValueError, match="lai_minmax"):
        vegetation_class(xr.DataArray([0.5]), "evi")


def test_delta_t_pairs_am_with_the_same_night_and_pm_with_the_next():
    day = xr.DataArray([300.0, 301.0, 302.0, 303.0], dims="time", coords={"time": TIME})
    night = xr.DataArray([280.0, 290.0, 270.0, 285.0], dims="time", coords={"time": TIME})
    am, pm = delta_t(day, night, "AM"), delta_t(day, night, "PM")
    np.testing.assert_array_equal(am, [20.0, 11.0, 32.0, 18.0])
    np.testing.assert_array_equal(pm, [10.0, 31.0, 17.0, np.nan])  # the last night is not in the series
    assert am["overpass"].item() == "AM" and pm["overpass"].item() == "PM"
    assert (pm["time"] == TIME).all()
    with pytest.raises(ValueError, match="overpass"):
        delta_t(day, night, "noon")


def test_delta_t_uses_dates_not_positions():
    gappy = TIME[[0, 2, 3]]
    day = xr.DataArray([300.0, 302.0, 303.0], dims="time", coords={"time": gappy})
    night = xr.DataArray([280.0, 270.0, 285.0], dims="time", coords={"time": gappy})
    np.testing.assert_array_equal(delta_t(day, night, "PM"), [np.nan, 17.0, np.nan])


def _model(n_rows=2, n_cols=3, with_months=False):
    """Known coefficients on a 2 × 3 model grid: a0 encodes the cell and class, a1 the class (and month)."""
    cells = np.arange(n_rows * n_cols).reshape(n_rows, n_cols)
    classes = np.arange(10)
    a0 = 0.2 + 0.01 * cells[:, :, None] + 0.001 * classes
    a1 = np.broadcast_to(-0.001 * (classes + 1), a0.shape)
    dims = ("row", "col", "veg_class")
    if with_months:
        months = np.arange(1, 13)
        a0 = np.repeat(a0[..., None], 12, axis=-1)
        a1 = a1[..., None] * months
        dims = (*dims, "month")
    borrowed = np.zeros(a0.shape, dtype=np.uint8)
    borrowed[0, 1, 4] = 1
    coords = {"veg_class": classes} | ({"month": np.arange(1, 13)} if with_months else {})
    return xr.Dataset(
        {"a0": (dims, a0), "a1": (dims, np.array(a1)), "borrowed": (dims, borrowed)}, coords=coords
    )


def _fine(shape=(6, 9)):
    rng = np.random.default_rng(5)
    dt = xr.DataArray(
        rng.uniform(1.0, 15.0, (len(TIME), *shape)), dims=("time", "y", "x"), coords={"time": TIME}
    )
    veg = xr.DataArray(rng.integers(0, 10, shape).astype(np.uint8), dims=("y", "x"))
    rows, cols = np.arange(shape[0]) // 3, np.arange(shape[1]) // 3  # each model cell holds 3 × 3 pixels
    return dt, veg, (rows, cols)


def _expected(model, dt, veg, rows, cols, month=None):
    iy, ix = np.meshgrid(rows, cols, indexing="ij")
    a0 = model["a0"].values[iy, ix, veg.values]
    a1 = model["a1"].values[iy, ix, veg.values]
    if month is not None:
        a0, a1 = a0[..., month - 1], a1[..., month - 1]
    return a0 + a1 * dt


def test_downscale_looks_up_the_coefficients_of_the_holding_cell():
    dt, veg, index = _fine()
    model = _model()
    out = downscale(dt, veg, model, index)
    expected = _expected(model, dt.values, veg, *index)
    expected[expected <= 0] = np.nan
    assert out["sm"].dims == ("time", "y", "x")
    np.testing.assert_allclose(out["sm"], expected, rtol=1e-12)
    borrowed_pixels = np.zeros(veg.shape, bool)
    borrowed_pixels[0:3, 3:6] = veg.values[0:3, 3:6] == 4
    assert ((out["qa"] & QA.CLASS_BORROWED) > 0).equals(
        xr.DataArray(borrowed_pixels, dims=("y", "x")).broadcast_like(dt)
    )


def test_downscale_on_interior_model_cells_uses_their_own_coefficients():
    # a window reaching only model rows 1–2 and columns 2–3 of a 4 × 5 model (the tables are cut to them)
    dt, veg, (rows, cols) = _fine((6, 6))
    rows, cols = rows + 1, cols + 2
    model = _model(4, 5)
    out = downscale(dt, veg, model, (rows, cols))
    np.testing.assert_allclose(out["sm"], _expected(model, dt.values, veg, rows, cols), rtol=1e-12)


def test_downscale_takes_float_classes_and_leaves_pixels_without_a_class_empty():
    dt, veg, index = _fine()
    classes = veg.astype(np.float64)
    no_class = np.zeros(veg.shape, bool)
    no_class[0, :3] = True
    classes[0, :3] = [np.nan, -1.0, 10.0]
    out = downscale(dt, classes, _model(), index)
    reference = downscale(dt, veg, _model(), index)
    assert np.isnan(out["sm"].values[:, no_class]).all()
    assert (out["qa"].values[:, no_class] & QA.CLASS_BORROWED == 0).all()
    assert (out["qa"].values[:, no_class] & QA.NO_MODEL > 0).all()
    classed = xr.DataArray(~no_class, dims=("y", "x"))
    xr.testing.assert_identical(out.where(classed), reference.where(classed))


def test_downscale_masks_nonpositive_missing_and_outside():
    dt, veg, (rows, cols) = _fine()
    assert (_expected(_model(), dt.values, veg, rows, cols) > 0).all()
    dt[0, 0, 0] = np.nan
    dt[1, 0, 0] = 1000.0  # far dry: θ < 0
    cols = cols.copy()
    cols[-1] = -1  # last fine column outside the model grid
    out = downscale(dt, veg, _model(), (rows, cols))
    assert np.isnan(out["sm"][0, 0, 0]) and out["qa"][0, 0, 0] & QA.NO_DELTA_T
    assert np.isnan(out["sm"][1, 0, 0]) and out["qa"][1, 0, 0] & QA.OUT_OF_RANGE
    assert out["sm"][..., -1].isnull().all() and (out["qa"][..., -1] & QA.NO_MODEL > 0).all()
    assert out["sm"][..., :-1].count() == out["sm"][..., :-1].size - 2
    assert not (out["qa"][..., :-1] & QA.NO_MODEL).any()


def test_downscale_picks_month_and_overpass():
    dt, veg, index = _fine()
    model = _model(with_months=True)
    pm_model = model.assign(a1=model["a1"] * 2)
    stacked = xr.concat([model, pm_model], dim=xr.Variable("overpass", ["AM", "PM"]))
    out = downscale(dt.assign_coords(overpass="PM"), veg, stacked, index)
    manual = np.stack(
        [_expected(pm_model, dt.values[t], veg, *index, month=m) for t, m in enumerate(TIME.month)]
    )
    manual[manual <= 0] = np.nan
    np.testing.assert_allclose(out["sm"], manual, rtol=1e-12)
    with pytest.raises(ValueError, match="overpass"):
        downscale(dt, veg, stacked, index)


def test_a_month_or_cells_the_model_lacks_give_nan_with_their_flag():
    dt, veg, (rows, cols) = _fine()
    model = _model(with_months=True)
    model["borrowed"][:] = 1
    january = model.sel(month=[1])  # TIME runs from 30 January into February
    out = downscale(dt, veg, january, (rows, cols))
    assert out["sm"].isel(time=slice(0, 2)).notnull().all()
    assert out["sm"].isel(time=slice(2, None)).isnull().all()
    assert ((out["qa"].isel(time=slice(2, None)) & QA.CLASS_BORROWED) == 0).all()
    february = np.broadcast_to((TIME.month == 2)[:, None, None], out["qa"].shape)
    np.testing.assert_array_equal((out["qa"].values & QA.NO_MODEL) > 0, february)
    outside = downscale(dt, veg, model, (np.full_like(rows, -1), cols))
    assert outside["sm"].isnull().all() and ((outside["qa"] & QA.CLASS_BORROWED) == 0).all()
    assert ((outside["qa"] & QA.NO_DELTA_T) > 0).equals(dt.isnull())
    assert ((outside["qa"] & QA.NO_MODEL) > 0).all()
    unfitted = model.copy(deep=True)
    unfitted["a0"][{"row": 0, "col": 0}] = np.nan  # a cell without any fit
    cell = downscale(dt, veg, unfitted, (rows, cols))
    in_cell = np.broadcast_to((rows == 0)[:, None] & (cols == 0)[None, :], cell["qa"].shape)
    np.testing.assert_array_equal((cell["qa"].values & QA.NO_MODEL) > 0, in_cell)
    assert np.isnan(cell["sm"].values[in_cell]).all()


def test_downscale_is_lazy_and_chunkwise():
    dt, veg, index = _fine((12, 18))
    eager = downscale(dt, veg, _model(4, 6), index)
    with dask.config.set(scheduler=_forbid_compute):
        lazy = downscale(
            dt.chunk({"time": 1, "y": 5, "x": 7}), veg.chunk({"y": 5, "x": 7}), _model(4, 6), index
        )
    assert lazy["sm"].chunks == ((1, 1, 1, 1), (5, 5, 2), (7, 7, 4))
    xr.testing.assert_identical(lazy.compute(), eager)


def test_fitted_model_applies_back_to_its_own_inputs():
    rng = np.random.default_rng(11)
    time = pd.date_range("2003-01-01", periods=200, freq="D")
    dt = rng.uniform(2.0, 20.0, (200, 2, 2))
    ndvi = rng.uniform(0.0, 1.0, (200, 2, 2))
    sm = 0.45 - 0.012 * dt + 0.002 * np.floor(ndvi * 10)
    coords = {"time": time}
    model = fit_model(
        xr.DataArray(sm, dims=("time", "y", "x"), coords=coords),
        xr.DataArray(dt, dims=("time", "y", "x"), coords=coords),
        xr.DataArray(ndvi, dims=("time", "y", "x"), coords=coords),
    )
    # the same cells as 2 × 2 fine pixels each
    fine_dt = xr.DataArray(np.repeat(np.repeat(dt[:5], 2, axis=1), 2, axis=2), dims=("time", "y", "x"))
    fine_veg = vegetation_class(
        xr.DataArray(np.repeat(np.repeat(ndvi[:5], 2, axis=1), 2, axis=2), dims=fine_dt.dims)
    )
    index = (np.arange(4) // 2, np.arange(4) // 2)
    out = downscale(fine_dt, fine_veg, model, index)
    np.testing.assert_allclose(out["sm"], np.repeat(np.repeat(sm[:5], 2, axis=1), 2, axis=2), rtol=1e-9)
