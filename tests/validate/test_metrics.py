"""soilcube.validate.metrics against the peer test vectors of algorithms.md §3 and metric identities."""

import json

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from soilcube.validate.metrics import METRICS, score, to_dict

# HydroErr/tests/tests.py vectors (algorithms.md §3.2); n = 6 is below the default min_count.
HYDROERR_SIM = np.array([5, 7, 9, 2, 4.5, 6.7])
HYDROERR_OBS = np.array([4.7, 6, 10, 2.5, 4, 6.8])


def scores(product, reference, **kwargs) -> dict[str, float]:
    return to_dict(score(product, reference, **kwargs))


# pytesmo tests/test_metrics.py; pytesmo's bias(x, y) = mean(x) − mean(y) is our bias(product=x, reference=y).


def test_pytesmo_constant_offset():
    x = np.arange(10.0)
    result = scores(x + 2, x)
    assert result["bias"] == pytest.approx(2)
    assert result["MAE"] == pytest.approx(2)
    assert result["RMSE"] == pytest.approx(2)
    assert result["ubRMSE"] == pytest.approx(0, abs=1e-12)
    assert scores(x, x + 2)["bias"] == pytest.approx(-2)


def test_pytesmo_outlier_100():
    x = np.arange(10.0)
    y = x + 2
    y[-1] = 100
    result = scores(y, x)
    assert result["RMSE"] == pytest.approx(np.sqrt(831.7), rel=1e-12)
    assert result["RMSE"] == pytest.approx(28.8392094, abs=1e-7)
    assert result["ubRMSE"] == pytest.approx(26.7, rel=1e-12)


def test_pytesmo_outlier_51_mse_decomposition():
    x = np.arange(10.0)
    y = x + 2
    y[-1] = 51
    result = scores(y, x)
    assert result["RMSE"] ** 2 == pytest.approx(180)
    assert result["bias"] ** 2 == pytest.approx(36)


def test_pytesmo_calculator_daily_offset():
    # metric_calculators test: 366 daily obs, product = reference − 0.2 → BIAS −0.2, RMSD 0.2, urmsd 0.
    time = pd.date_range("2000-01-01", periods=366, freq="D")
    reference = xr.DataArray(0.3 + 0.1 * np.sin(np.arange(366) / 20), coords={"time": time}, dims="time")
    result = scores(reference - 0.2, reference, dim="time")
    assert result["n"] == 366
    assert result["bias"] == pytest.approx(-0.2)
    assert result["RMSE"] == pytest.approx(0.2)
    assert result["ubRMSE"] == pytest.approx(0, abs=1e-12)
    assert result["R"] == pytest.approx(1)


def test_hydroerr_vectors():
    result = scores(HYDROERR_SIM, HYDROERR_OBS, min_count=6)
    assert result["n"] == 6
    assert result["MAE"] == pytest.approx(0.5666666666666665, rel=1e-12)
    assert result["R"] == pytest.approx(0.9615951377405804, rel=1e-12)
    assert result["bias"] == pytest.approx(0.0333333333333333, rel=1e-9)
    assert result["KGE"] == pytest.approx(0.9181073779138655, rel=1e-12)
    assert result["KGE2012"] == pytest.approx(0.9132923608280753, rel=1e-12)
    # α = σs/σo of HydroErr (ddof=1) is the same ratio with our ddof=0.
    assert result["SSD"] / result["SSD_ref"] == pytest.approx(0.927910707932087, rel=1e-12)


def test_bad_rows_are_dropped_pairwise():
    # HydroErr's "bad data" idea: NaN/±inf in either series (or both) removes the row and nothing else.
    # (HydroErr can also drop zeros and negatives on request; soil moisture keeps those.)
    sim = np.insert(HYDROERR_SIM, [0, 2, 4, 6, 6], [np.nan, 3.0, np.inf, -np.inf, np.nan])
    obs = np.insert(HYDROERR_OBS, [0, 2, 4, 6, 6], [1.0, np.nan, 2.0, 3.0, np.inf])
    clean = scores(HYDROERR_SIM, HYDROERR_OBS, min_count=6)
    dirty = scores(sim, obs, min_count=6)
    assert dirty == pytest.approx(clean, rel=1e-14)


def test_fang_ubrmse_reproduces_their_code():
    # algorithms.md §2.4: standard ubRMSD 0.6574 vs Fang-style 0.2583 with x = obs (in situ), y = sim.
    # 0.2583 comes from linregress(x=reference, y=product) and then sqrt(mean((reference − fit)²)),
    # i.e. score(product=sim, reference=obs). The residual of the product, sqrt(mean((product − fit)²)),
    # would give 0.6055; the swapped call gives 0.0867: neither is what their code reports.
    result = scores(HYDROERR_SIM, HYDROERR_OBS, min_count=6)
    assert result["ubRMSE"] == pytest.approx(0.6574, abs=5e-5)
    assert result["fang_ubrmse"] == pytest.approx(0.2583, abs=5e-5)
    slope, intercept = np.polyfit(HYDROERR_OBS, HYDROERR_SIM, 1)
    fitted = intercept + slope * HYDROERR_OBS
    assert result["fang_ubrmse"] == pytest.approx(np.sqrt(np.mean((HYDROERR_OBS - fitted) ** 2)), rel=1e-12)
    assert scores(HYDROERR_OBS, HYDROERR_SIM, min_count=6)["fang_ubrmse"] == pytest.approx(0.0867, abs=5e-5)


def test_below_min_count_everything_is_nan_but_n():
    x = np.arange(12.0)
    x[[1, 5, 7]] = np.nan
    result = scores(x + 1, np.arange(12.0))
    assert result["n"] == 9
    assert all(np.isnan(result[name]) for name in METRICS if name != "n")
    assert scores(x + 1, np.arange(12.0), min_count=9)["RMSE"] == pytest.approx(1)


def test_to_dict_is_json_friendly():
    result = scores(np.arange(5.0), np.arange(5.0))
    assert list(result) == list(METRICS)
    assert all(type(value) is float for value in result.values())
    assert np.isnan(result["R"])
    json.dumps(result)


# Identities that hold for any data (population moments).


def soil_moisture(size: int):
    return arrays(np.float64, size, elements=st.floats(0.0, 0.6))


def paired():
    """(product, reference) series of one common length, in the soil-moisture range."""
    return st.integers(10, 60).flatmap(lambda size: st.tuples(soil_moisture(size), soil_moisture(size)))


def varied(values) -> bool:
    return values.std() > 1e-2


@settings(max_examples=40, deadline=None)
@given(paired())
def test_rmse_decomposes_into_ubrmse_and_bias(pair):
    product, reference = pair
    result = scores(product, reference)
    assert result["ubRMSE"] ** 2 + result["bias"] ** 2 == pytest.approx(
        result["RMSE"] ** 2, rel=1e-9, abs=1e-12
    )


@settings(max_examples=40, deadline=None)
@given(paired())
def test_swapping_arguments_flips_bias(pair):
    product, reference = pair
    forward, backward = scores(product, reference), scores(reference, product)
    assert backward["bias"] == -forward["bias"]
    assert backward["RMSE"] == pytest.approx(forward["RMSE"])


@settings(max_examples=40, deadline=None)
@given(paired(), st.floats(-0.5, 0.5))
def test_offset_moves_only_bias(pair, offset):
    product, reference = pair
    assume(varied(product) and varied(reference))
    before, after = scores(product, reference), scores(product + offset, reference)
    assert after["bias"] == pytest.approx(before["bias"] + offset, abs=1e-12)
    for name in ("R", "ubRMSE", "SSD"):
        assert after[name] == pytest.approx(before[name], rel=1e-9, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(paired(), st.floats(0.1, 10.0))
def test_common_scale_scales_rmse_not_r(pair, factor):
    product, reference = pair
    assume(varied(product) and varied(reference))
    before, after = scores(product, reference), scores(factor * product, factor * reference)
    assert after["RMSE"] == pytest.approx(factor * before["RMSE"], rel=1e-9)
    assert after["R"] == pytest.approx(before["R"], rel=1e-9)


# Vectorised and lazy use on cubes.


@pytest.fixture
def cubes() -> tuple[xr.DataArray, xr.DataArray]:
    rng = np.random.default_rng(42)
    shape = (40, 4, 5)
    coords = {
        "time": pd.date_range("2020-01-01", periods=40, freq="D"),
        "y": np.arange(4.0),
        "x": np.arange(5.0),
    }
    truth = xr.DataArray(rng.uniform(0.05, 0.45, shape), coords=coords, dims=("time", "y", "x"))
    product = 0.8 * truth + 0.05 + rng.normal(0, 0.03, shape)
    product = product.where(rng.random(shape) > 0.2)  # gaps, different in every pixel
    product[:, 0, 0] = np.nan  # an empty pixel
    return product, truth


def test_per_pixel_maps_match_a_loop(cubes):
    product, truth = cubes
    maps = score(product, truth, dim="time")
    assert maps["R"].dims == ("y", "x")
    for y, x in [(0, 0), (1, 2), (3, 4), (2, 0)]:
        expected = scores(product[:, y, x].values, truth[:, y, x].values)
        got = to_dict(maps.isel(y=y, x=x))
        np.testing.assert_allclose(list(got.values()), list(expected.values()), rtol=1e-12, equal_nan=True)
    assert maps["n"].isel(y=0, x=0) == 0
    assert np.isnan(maps["RMSE"].isel(y=0, x=0))


def test_spatial_scores_per_scene(cubes):
    product, truth = cubes
    per_scene = score(product, truth, dim=("y", "x"))
    assert per_scene["RMSE"].dims == ("time",)
    expected = scores(product.isel(time=3).values.ravel(), truth.isel(time=3).values.ravel())
    np.testing.assert_allclose(
        list(to_dict(per_scene.isel(time=3)).values()), list(expected.values()), rtol=1e-12
    )
    # default: all dims at once
    overall = scores(product, truth)
    assert overall == pytest.approx(scores(product.values.ravel(), truth.values.ravel()), rel=1e-10)


def never_compute(*args, **kwargs):
    raise AssertionError("score() computed a dask graph")


def test_dask_inputs_stay_lazy(cubes):
    product, truth = cubes
    lazy_product, lazy_truth = product.chunk({"time": 20, "y": 2}), truth.chunk({"time": 20, "y": 2})
    with dask.config.set(scheduler=never_compute):
        lazy = score(lazy_product, lazy_truth, dim="time")
    assert all(lazy[name].chunks is not None for name in METRICS)
    eager = score(product, truth, dim="time")
    xr.testing.assert_allclose(lazy.compute(), eager, rtol=1e-12)
