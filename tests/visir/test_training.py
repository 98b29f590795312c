"""training: the GLDAS steps each local time picks (per 15° time-zone band), the AM/PM pairing, dry days."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from soilcube.visir.training import gldas_pairs, ndvi_on_gldas, nearest_step, utc_offset_hours

TIMES = pd.date_range("2016-06-01T00:00", "2016-06-05T21:00", freq="3h")
# two cells a time-zone band apart: −97.375° is in the −6 h band, −74.875° in the −5 h band
LONS = np.array([-97.375, -74.875])
# the UTC hours each local time falls on, by hand: local + band offset, to the nearest 3-hourly step,
# a tie (07:30, 06:30, 19:30 …) to the later step; 18:00 local is 00:00 UTC of the next day in both bands
STEPS = {
    -6: {"night": 9, "day": 21, "AM": 12, "PM": 24},
    -5: {"night": 6, "day": 18, "AM": 12, "PM": 24},
}


def _gldas(wet_step=None):
    """3-hourly skin temperature and soil water that tell each step apart; the soil dries slowly, except
    for a wetting at `wet_step` (a UTC time)."""
    hours = (TIMES - TIMES[0]) / pd.Timedelta(hours=1)
    skin = 280 + 0.01 * hours.values[:, None] ** 1.5 + 10 * np.arange(len(LONS))
    soil = 30 - 0.01 * hours.values[:, None] + np.zeros(len(LONS))
    if wet_step is not None:
        soil[TIMES >= wet_step] += 2.0  # +0.02 m³/m³
    dims = ("time", "lat", "lon")
    return xr.Dataset(
        {"AvgSurfT_inst": (dims, skin[:, None, :]), "SoilMoi0_10cm_inst": (dims, soil[:, None, :])},
        coords={"time": TIMES, "lat": [35.125], "lon": LONS},
    )


def _at(field: xr.DataArray, lon: float, day: pd.Timestamp, hour: int) -> float:
    return float(field.sel(lon=lon, time=day + pd.Timedelta(hours=hour)).squeeze())


def test_time_zone_bands_and_nearest_steps():
    assert utc_offset_hours(LONS).tolist() == [-6, -5]
    assert utc_offset_hours([7.4, 7.6, -172.6]).tolist() == [0, 1, -12]
    for offset, steps in STEPS.items():
        assert nearest_step(1.5, offset) == pd.Timedelta(hours=steps["night"])
        assert nearest_step(13.5, offset) == pd.Timedelta(hours=steps["day"])
        assert nearest_step(6.0, offset) == pd.Timedelta(hours=steps["AM"])
        assert nearest_step(18.0, offset) == pd.Timedelta(hours=steps["PM"])


def test_pairs_take_each_band_s_steps_and_pm_takes_the_next_night():
    gldas = _gldas()
    soil_moisture, delta_t = gldas_pairs(gldas)
    skin, soil = gldas["AvgSurfT_inst"], gldas["SoilMoi0_10cm_inst"]
    for lon, offset in zip(LONS, (-6, -5), strict=True):
        steps = STEPS[offset]
        for day in pd.date_range("2016-06-02", "2016-06-04"):
            night, next_night = _at(skin, lon, day, steps["night"]), _at(skin, lon, day, 24 + steps["night"])
            am = delta_t.sel(lon=lon, time=day, overpass="AM")
            pm = delta_t.sel(lon=lon, time=day, overpass="PM")
            assert float(am.squeeze()) == pytest.approx(_at(skin, lon, day, steps["day"]) - night)
            assert float(pm.squeeze()) == pytest.approx(_at(skin, lon, day, steps["day"]) - next_night)
            for overpass in ("AM", "PM"):
                theta = soil_moisture.sel(lon=lon, time=day, overpass=overpass)
                assert float(theta.squeeze()) == pytest.approx(_at(soil, lon, day, steps[overpass]) / 100)


def test_a_wetting_drops_that_pair_only():
    wet_at = pd.Timestamp("2016-06-03T12:00")  # the AM step of June 3 in both bands
    soil_moisture, delta_t = gldas_pairs(_gldas(wet_step=wet_at))
    dropped = soil_moisture.isnull() & delta_t.isnull()
    kept = soil_moisture.notnull() & delta_t.notnull()
    assert bool((dropped | kept).all())  # a pair is kept or dropped whole
    june_3 = pd.Timestamp("2016-06-03")
    # June 3 AM (12 UTC) and PM (00 UTC of June 4) each compare with the day before, across the wetting;
    # June 2 is before it and June 4 after it: the soil only dries between their steps
    assert bool(dropped.sel(time=june_3).all())
    assert bool(kept.sel(time=[pd.Timestamp("2016-06-02"), pd.Timestamp("2016-06-04")]).all())


def test_positive_ndvi_is_averaged_onto_the_gldas_cells_holding_the_ltdr_centres():
    # 10 × 10 LTDR cells of 0.05° (north to south, as the files) = 2 × 2 GLDAS cells of 0.25°
    latitude = 35.475 - 0.05 * np.arange(10)
    longitude = -97.475 + 0.05 * np.arange(10)
    values = np.random.default_rng(1).uniform(0.1, 0.9, (1, 10, 10))
    values[0, 0, 0] = np.nan  # a cloudy LTDR cell: the mean skips it
    values[0, 9, 8:] = [0.0, -0.05]  # water: NDVI ≤ 0 is skipped too (the public code's NaN)
    ndvi = xr.DataArray(values, dims=("time", "latitude", "longitude"),
                        coords={"time": TIMES[:1], "latitude": latitude, "longitude": longitude})
    coarse = ndvi_on_gldas(ndvi)
    assert coarse["lat"].values.tolist() == pytest.approx([35.125, 35.375])  # the GLDAS grid's order
    assert coarse["lon"].values.tolist() == pytest.approx([-97.375, -97.125])
    blocks = np.where(values > 0, values, np.nan)[0, ::-1].reshape(2, 5, 2, 5)
    np.testing.assert_allclose(coarse.sel(time=TIMES[0]).transpose("lat", "lon"),
                               np.nanmean(blocks, axis=(1, 3)), rtol=1e-12)
