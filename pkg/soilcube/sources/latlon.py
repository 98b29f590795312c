"""Products on regular lat/lon grids: GLDAS Noah 0.25° (NetCDF-4, lat ascending) and LTDR AVHRR NDVI
0.05° (NetCDF-4 CDR v5, lat descending). Coordinates come from the grid definitions (grids.py), not from
the files (LTDR's lat/lon "do not have a consistent delta")."""

from __future__ import annotations

import re

import xarray as xr

from soilcube.grids import GLDAS_GRID, LTDR_GRID, LatLonGrid, Window
from soilcube.sources.stacked import StackedReader


class LatLonReader(StackedReader):
    grid: LatLonGrid
    lat_dim: str
    lon_dim: str
    # variables whose values come from the file's own (ignored) time axis
    dropped: tuple[str, ...] = ()

    def place(self, ds: xr.Dataset, window: Window | None) -> xr.Dataset:
        ds = ds.drop_vars([v for v in self.dropped if v in ds.variables])
        rows, cols = slice(None), slice(None)
        if window is not None:
            # one cell of margin so that interpolation to the window's edge cells has neighbours
            rows, cols = self.grid.window_slices(window, margin=1)
        ds = ds.drop_vars([self.lat_dim, self.lon_dim], errors="ignore")
        ds = ds.isel({self.lat_dim: rows, self.lon_dim: cols})
        lat_attrs = {"units": "degrees_north", "standard_name": "latitude"}
        lon_attrs = {"units": "degrees_east", "standard_name": "longitude"}
        return ds.assign_coords({
            self.lat_dim: (self.lat_dim, self.grid.lat[rows], lat_attrs),
            self.lon_dim: (self.lon_dim, self.grid.lon[cols], lon_attrs),
        })


class Gldas(LatLonReader):
    """GLDAS_NOAH025_3H v2.1: (time, lat, lon) float32, fill -9999, lat ascending as in the file.

    `time_bnds` is dropped: it is expressed in the file's odd time units, and the time is the file name's.
    """

    product = "gldas"
    grid, lat_dim, lon_dim = GLDAS_GRID, "lat", "lon"
    required = {"SoilMoi0_10cm_inst": (1, 600, 1440)}
    version_pattern = re.compile(r"\.(\d{3})\.nc4$")
    dropped = ("time_bnds",)


class LtdrNdvi(LatLonReader):
    """AVHRR-Land v005 AVH13C1: NDVI int16 × 0.0001 (fill -9999) → float; QA kept as int16 flags."""

    product = "ltdr_ndvi"
    grid, lat_dim, lon_dim = LTDR_GRID, "latitude", "longitude"
    required = {"NDVI": (1, 3600, 7200)}
    version_pattern = re.compile(r"_(v\d{3})_.*_c(\d+)\.nc$")
