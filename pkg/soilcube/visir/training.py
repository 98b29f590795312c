"""Training pairs for the VIS/IR model from GLDAS Noah 3-hourly records (Fang et al. 2025; algorithms §2.1).

For each 0.25° cell and day: the skin-temperature diurnal difference dT at the VIIRS overpasses (~01:30
and ~13:30 local) and the 0–10 cm soil moisture at the SMAP overpasses (06:00 AM, 18:00 PM local),
local time taken from the cell's 15° time-zone band and each instant mapped to the nearest 3-hourly
GLDAS step (ties to the later step). AM pairs dT(d) = T13:30(d) − T01:30(d) with θ06:00(d);
PM pairs dT(d) = T13:30(d) − T01:30(d + 1) with θ18:00(d).

Dry-day pairs only: a pair counts when the soil did not wet up since the same overpass of the previous
day (θ(d) − θ(d − 1) ≤ `wetting_threshold`), because rain decouples skin temperature from the soil water
that the thermal-inertia relation describes. GLDAS files carry no precipitation in the subset we read, so
wetting stands in for rain.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from flox.xarray import xarray_reduce

from soilcube.grids import GLDAS_GRID

LST_LOCAL_HOURS = {"night": 1.5, "day": 13.5}
SM_LOCAL_HOURS = {"AM": 6.0, "PM": 18.0}
OVERPASSES = ["AM", "PM"]
GLDAS_STEP_HOURS = 3
KG_M2_PER_M3_M3 = 100.0  # 0–10 cm layer: kg m-2 / (1000 kg m-3 · 0.1 m)


def utc_offset_hours(lon) -> np.ndarray:
    """The 15° time-zone band of each longitude, in whole hours."""
    return np.round(np.asarray(lon, dtype=np.float64) / 15.0).astype(int)


def nearest_step(local_hour: float, offset_hours: int) -> pd.Timedelta:
    """UTC offset from local midnight of the 3-hourly step nearest to `local_hour` (ties → later step)."""
    utc_hour = local_hour - offset_hours
    step = np.floor(utc_hour / GLDAS_STEP_HOURS + 0.5) * GLDAS_STEP_HOURS
    return pd.Timedelta(hours=float(step))


def _at_local_time(values: xr.DataArray, days: pd.DatetimeIndex, local_hour: float,
                   offset: int) -> xr.DataArray:
    """values at `local_hour` of each local day, NaN where that GLDAS step is missing."""
    times = days + nearest_step(local_hour, offset)
    picked = values.reindex(time=times.values)
    return picked.assign_coords(time=days.values)


def gldas_pairs(gldas: xr.Dataset, *, wetting_threshold: float = 0.002) -> tuple[xr.DataArray, xr.DataArray]:
    """(soil moisture m³/m³, dT K) per day × overpass × cell, non-dry pairs set to NaN in both.

    `gldas` holds SoilMoi0_10cm_inst (kg m-2) and AvgSurfT_inst (K) with dims (time, lat, lon); it may
    hold only the time steps the fit uses.
    """
    times = pd.DatetimeIndex(gldas["time"].values)
    days = pd.date_range(times.min().normalize() - pd.Timedelta(days=1), times.max().normalize(), freq="D")
    offsets = utc_offset_hours(gldas["lon"].values)
    soil, skin = gldas["SoilMoi0_10cm_inst"] / KG_M2_PER_M3_M3, gldas["AvgSurfT_inst"]

    soil_parts, dt_parts = [], []
    for offset in np.unique(offsets):  # a handful of bands, not a loop over cells
        band = {"lon": gldas["lon"].values[offsets == offset]}
        day_t = _at_local_time(skin.sel(band), days, LST_LOCAL_HOURS["day"], offset)
        night_t = _at_local_time(skin.sel(band), days, LST_LOCAL_HOURS["night"], offset)
        next_night = night_t.shift(time=-1)
        dt_parts.append(xr.concat([day_t - night_t, day_t - next_night], dim="overpass"))
        soil_at = [_at_local_time(soil.sel(band), days, SM_LOCAL_HOURS[o], offset) for o in OVERPASSES]
        soil_parts.append(xr.concat(soil_at, dim="overpass"))
    soil_moisture = xr.concat(soil_parts, dim="lon").sortby("lon").assign_coords(overpass=OVERPASSES)
    delta_t = xr.concat(dt_parts, dim="lon").sortby("lon").assign_coords(overpass=OVERPASSES)

    dry = (soil_moisture - soil_moisture.shift(time=1)) <= wetting_threshold
    keep = dry & soil_moisture.notnull() & delta_t.notnull()
    return soil_moisture.where(keep).rename("soil_moisture"), delta_t.where(keep).rename("delta_t")


def ndvi_on_gldas(ndvi: xr.DataArray) -> xr.DataArray:
    """LTDR 0.05° NDVI averaged onto the GLDAS 0.25° cells that hold each 0.05° cell centre; NDVI ≤ 0
    (water, snow, bad retrievals) is left out of the mean, as the public code sets it to NaN first."""
    ndvi = ndvi.where(ndvi > 0)
    lat_index = xr.DataArray(GLDAS_GRID.row_of_lat(ndvi["latitude"].values), dims="latitude",
                             name="lat_index")
    lon_index = xr.DataArray(GLDAS_GRID.col_of_lon(ndvi["longitude"].values), dims="longitude",
                             name="lon_index")
    coarse = xarray_reduce(ndvi, lat_index, lon_index, func="nanmean")
    return coarse.assign_coords(
        lat=("lat_index", GLDAS_GRID.lat[coarse["lat_index"].values]),
        lon=("lon_index", GLDAS_GRID.lon[coarse["lon_index"].values]),
    ).swap_dims(lat_index="lat", lon_index="lon").drop_vars(["lat_index", "lon_index"])
