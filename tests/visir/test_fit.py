"""fit_model: closed-form OLS per cell × class (× month, × overpass), the min-pairs rule, class borrowing."""

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy.stats import linregress

from soilcube.visir.fit import fit_model

TIME = pd.date_range("2001-01-01", periods=400, freq="D")


def _forbid_compute(*args, **kwargs):
    raise AssertionError("the lazy graph was computed")


def _series(values, **dims):
    """DataArray with a daily time axis first, then the named dims."""
    return xr.DataArray(values, dims=("time", *dims), coords={"time": TIME[: np.shape(values)[0]]})


def _single_cell(ndvi, dt, sm):
    return tuple(_series(np.asarray(v, dtype=float)[:, None], cell=1) for v in (sm, dt, ndvi))


@pytest.fixture
def noise_free():
    rng = np.random.default_rng(42)
    shape = (400, 4, 5)
    dt = rng.uniform(2.0, 25.0, shape)
    ndvi = rng.uniform(0.0, 1.0, shape)
    veg = np.floor(ndvi * 10).astype(int)
    a0 = rng.uniform(0.2, 0.5, (4, 5, 10))
    a1 = rng.uniform(-0.02, -0.002, (4, 5, 10))
    iy, ix = np.indices(shape[1:])
    sm = a0[iy, ix, veg] + a1[iy, ix, veg] * dt
    return _series(sm, y=4, x=5), _series(dt, y=4, x=5), _series(ndvi, y=4, x=5), a0, a1


def test_recovers_known_coefficients_exactly(noise_free):
    sm, dt, ndvi, a0, a1 = noise_free
    model = fit_model(sm, dt, ndvi)
    assert model["a0"].dims == ("y", "x", "veg_class")
    assert (model["n"] >= 9).all() and not model["borrowed"].any()
    np.testing.assert_allclose(model["a0"], a0, rtol=1e-10)
    np.testing.assert_allclose(model["a1"], a1, rtol=1e-10)
    np.testing.assert_allclose(model["r2"], 1.0, rtol=1e-10)
    assert int(model["n"].sum()) == sm.size


def test_agrees_with_polyfit_and_linregress():
    rng = np.random.default_rng(7)
    shape = (400, 3, 3)
    dt = rng.uniform(0.0, 20.0, shape)
    ndvi = rng.uniform(0.01, 0.999, shape)
    sm = 0.35 - 0.008 * dt + rng.normal(0.0, 0.03, shape)
    sm[rng.random(shape) < 0.2] = np.nan  # non-dry days
    model = fit_model(_series(sm, y=3, x=3), _series(dt, y=3, x=3), _series(ndvi, y=3, x=3))
    veg = np.floor(ndvi * 10)
    for iy, ix, c in [(0, 0, 0), (1, 2, 4), (2, 1, 9), (2, 2, 6)]:
        pick = (veg[:, iy, ix] == c) & np.isfinite(sm[:, iy, ix])
        x, y = dt[pick, iy, ix], sm[pick, iy, ix]
        fitted = model.sel(veg_class=c).isel(y=iy, x=ix)
        slope, intercept = np.polyfit(x, y, 1)
        reference = linregress(x, y)
        assert int(fitted["n"]) == pick.sum()
        np.testing.assert_allclose([fitted["a1"], fitted["a0"]], [slope, intercept], rtol=1e-9)
        np.testing.assert_allclose(
            [fitted["a1"], fitted["a0"], fitted["r2"]],
            [reference.slope, reference.intercept, reference.rvalue**2],
            rtol=1e-9,
        )


def test_min_pairs_rule():
    # class 3 gets 8 pairs, class 5 gets 9: the public code fits only with more than 8 pairs
    ndvi = [0.35] * 8 + [0.55] * 9
    dt = np.arange(17.0) + 1
    sm = 0.3 - 0.01 * dt
    model = fit_model(*_single_cell(ndvi, dt, sm)).isel(cell=0)
    assert model["n"].sel(veg_class=[3, 5]).values.tolist() == [8, 9]
    assert np.isnan(model["r2"].sel(veg_class=3)) and model["borrowed"].sel(veg_class=3) == 1
    assert model["borrowed"].sel(veg_class=5) == 0
    relaxed = fit_model(*_single_cell(ndvi, dt, sm), min_pairs=8).isel(cell=0)
    assert relaxed["borrowed"].sel(veg_class=3) == 0
    np.testing.assert_allclose(relaxed["a1"].sel(veg_class=3), -0.01)


def test_constant_delta_t_gives_no_fit():
    ndvi = [0.25] * 12 + [0.75] * 12
    dt = [7.3] * 12 + list(np.linspace(1, 20, 12))
    sm = np.linspace(0.1, 0.3, 24)
    model = fit_model(*_single_cell(ndvi, dt, sm)).isel(cell=0)
    assert model["n"].sel(veg_class=2) == 12
    assert model["borrowed"].sel(veg_class=2) == 1
    assert model["a1"].sel(veg_class=2) == model["a1"].sel(veg_class=7)


@pytest.mark.parametrize("theta", [0.2, 0.3, 0.37, 0.41])
def test_constant_theta_fits_a_flat_line_with_undefined_r2(theta):
    # Σyy − (Σy)²/n of a constant θ is a rounding residue, positive for some values: r² must still be NaN
    dt = np.linspace(1.0, 20.0, 12)
    model = fit_model(*_single_cell([0.45] * 12, dt, np.full(12, theta))).isel(cell=0).sel(veg_class=4)
    assert model["n"] == 12 and model["borrowed"] == 0
    assert np.isnan(model["r2"])
    assert abs(float(model["a1"])) < 1e-12
    np.testing.assert_allclose(model["a0"], theta, rtol=1e-12)


def test_borrowing_takes_the_nearest_class_ties_to_the_lower():
    # only classes 2 and 6 have pairs, with different lines
    ndvi = [0.25] * 10 + [0.65] * 10
    dt = np.tile(np.arange(1.0, 11.0), 2)
    sm = np.concatenate([0.30 - 0.010 * dt[:10], 0.40 - 0.005 * dt[10:]])
    model = fit_model(*_single_cell(ndvi, dt, sm)).isel(cell=0)
    source = {0: 2, 1: 2, 2: 2, 3: 2, 4: 2, 5: 6, 6: 6, 7: 6, 8: 6, 9: 6}  # 4 is 2 from both: lower wins
    for target, origin in source.items():
        np.testing.assert_allclose(model["a0"].sel(veg_class=target), model["a0"].sel(veg_class=origin))
        np.testing.assert_allclose(model["a1"].sel(veg_class=target), model["a1"].sel(veg_class=origin))
    assert model["borrowed"].values.tolist() == [1, 1, 0, 1, 1, 1, 0, 1, 1, 1]
    np.testing.assert_allclose(model["a1"].sel(veg_class=[2, 6]), [-0.010, -0.005])


def test_cell_without_any_fit_stays_empty():
    model = fit_model(*_single_cell([0.5] * 5, np.arange(5.0), np.full(5, 0.2))).isel(cell=0)
    assert model["a0"].isnull().all() and not model["borrowed"].any()


def test_pairs_with_nan_or_bad_ndvi_are_dropped_and_ndvi_one_is_top_class():
    ndvi = [1.0] * 9 + [np.nan, 0.0, -0.1, 1.5, 0.5, 0.5]
    dt = np.arange(15.0) + 1
    sm = 0.3 - 0.01 * dt
    sm[13] = np.nan
    model = fit_model(*_single_cell(ndvi, dt, sm)).isel(cell=0)
    assert model["n"].values.tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0, 9]
    np.testing.assert_allclose(model["a1"].sel(veg_class=9), -0.01)


def test_absolute_takes_the_magnitude_of_delta_t():
    dt = -(np.arange(12.0) + 1)
    sm = 0.3 - 0.01 * np.abs(dt)
    cell = _single_cell([0.45] * 12, dt, sm)
    np.testing.assert_allclose(fit_model(*cell).isel(cell=0)["a1"].sel(veg_class=4), 0.01)
    np.testing.assert_allclose(fit_model(*cell, absolute=True).isel(cell=0)["a1"].sel(veg_class=4), -0.01)


def _by_month_overpass_inputs():
    rng = np.random.default_rng(3)
    shape = (400, 2, 6)  # time, overpass, cell
    dt = rng.uniform(1.0, 20.0, shape)
    ndvi = rng.uniform(0.0, 1.0, (400, 6))  # one NDVI for both overpasses
    month = TIME.month.to_numpy()[:, None, None]
    slope = -0.001 * month - np.array([0.0, 0.004])[None, :, None]  # differs by month and overpass
    sm = 0.4 + slope * dt
    coords = {"time": TIME, "overpass": ["AM", "PM"]}
    return (
        xr.DataArray(sm, dims=("time", "overpass", "cell"), coords=coords),
        xr.DataArray(dt, dims=("time", "overpass", "cell"), coords=coords),
        xr.DataArray(ndvi, dims=("time", "cell"), coords={"time": TIME}),
    )


def test_by_month_and_overpass_fit_each_stratum():
    sm, dt, ndvi = _by_month_overpass_inputs()
    model = fit_model(sm, dt, ndvi, by_month=True, min_pairs=3)
    assert model["a1"].dims == ("cell", "veg_class", "month", "overpass")
    expected = -0.001 * model["month"] - xr.DataArray([0.0, 0.004], dims="overpass")
    np.testing.assert_allclose(
        model["a1"].transpose(..., "month", "overpass"), np.broadcast_to(expected, (6, 10, 12, 2))
    )
    assert int(model["n"].sum()) == sm.size


def test_dask_input_stays_lazy_and_gives_the_same_result():
    sm, dt, ndvi = _by_month_overpass_inputs()
    eager = fit_model(sm, dt, ndvi, by_month=True)
    chunked = [v.chunk({"time": 64, "cell": 3}) for v in (sm, dt, ndvi)]
    with dask.config.set(scheduler=_forbid_compute):
        lazy = fit_model(*chunked, by_month=True)
    assert all(lazy[name].chunks is not None for name in lazy.data_vars)
    xr.testing.assert_allclose(lazy.compute(), eager)
