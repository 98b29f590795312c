"""SMAP readers on the global 9 km EASE-Grid 2.0 (M09): SPL2SMP_E half-orbit swaths, SPL3SMP_E daily
AM/PM grids and SPL4SMGP 3-hourly model scenes (input-formats.md §1–3).

Coordinates are the M09 cell centres of grids.py (x, y in metres, EPSG:6933), never the files'
latitude/longitude arrays, which hold -9999 where there was no retrieval. Every SMAP float variable uses
-9999 as fill, even where the attribute is missing (the L3 AM latitude/longitude); uint16 flags keep their
65534 fill and stay integers.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import dask
import dask.array as da
import numpy as np
import xarray as xr

from soilcube.grids import Window, ease2_grid
from soilcube.sources.base import (
    Granule,
    GranuleError,
    Reader,
    array_shapes,
    chunked,
    decode_variable,
    window_coords,
    without_strings,
)
from soilcube.sources.references import open_references
from soilcube.sources.stacked import StackedReader

M09 = ease2_grid("M09")
GLOBAL_M09 = Window("M09", 0, 0, *M09.shape)
SMAP_FLOAT_FILL = -9999.0
SMAP_VERSION = re.compile(r"_(R\d{5}_\d{3})\.h5$")
L2_GROUP = "Soil_Moisture_Retrieval_Data"


def decode(var: xr.DataArray) -> xr.DataArray:
    fill = SMAP_FLOAT_FILL if var.dtype.kind == "f" else var.attrs.get("_FillValue")
    return decode_variable(var, fill)


def _m09_window(window: Window | None) -> Window:
    window = window or GLOBAL_M09
    if window.grid_name != "M09":
        raise ValueError(f"SMAP granules are on the M09 grid; got a window on {window.grid_name}")
    return window


def _on_window(ds: xr.Dataset, window: Window) -> xr.Dataset:
    """Cut a global M09 dataset to the window."""
    rows, cols = window.slices
    return ds.isel(y=rows, x=cols).assign_coords(window_coords(window))


def _grid_dims(shape: tuple[int, ...], dims: tuple[str, ...]) -> tuple[str, ...]:
    """(y, x) for arrays on the global M09 grid; a third axis is the top-3 land-cover rank."""
    if shape[:2] == M09.shape:
        return ("y", "x", "lc_type")[: len(shape)]
    return dims


class SmapL4(StackedReader):
    """SPL4SMGP: 45 float32 (1624, 3856) variables in /Geophysical_Data, one chunk each; stacked along
    time (the root `time` variable is 64 s off, so the file name's time replaces it)."""

    product = "smap_l4"
    grid_name = "M09"
    group = "Geophysical_Data"
    required = {"Geophysical_Data/sm_surface": M09.shape, "Geophysical_Data/sm_rootzone": M09.shape}
    version_pattern = re.compile(r"_(Vv\d{4}_\d{3})\.h5$")

    def dims_of(self, path, shape, dims):
        return _grid_dims(shape, dims)

    def varies_in_time(self, path, dims):
        return path.startswith(f"{self.group}/")

    def decode(self, var):
        return decode(var)

    def place(self, ds: xr.Dataset, window: Window | None) -> xr.Dataset:
        return _on_window(ds, _m09_window(window))


class SmapL3E(Reader):
    """SPL3SMP_E: one granule a day with AM and PM groups of (1624, 3856) grids.

    Output dims (time, overpass, y, x) with overpass = ["AM", "PM"]: the PM group's `<name>_pm` variables
    become `<name>` at overpass "PM", so both overpasses share the AM names. Variables present in only one
    group are dropped; so are the character variables (tb_time_utc).
    """

    product = "smap_l3e"
    grid_name = "M09"
    groups = {"AM": ("Soil_Moisture_Retrieval_Data_AM", ""), "PM": ("Soil_Moisture_Retrieval_Data_PM", "_pm")}
    required = {"Soil_Moisture_Retrieval_Data_AM/soil_moisture": M09.shape,
                "Soil_Moisture_Retrieval_Data_PM/soil_moisture_pm": M09.shape}
    version_pattern = SMAP_VERSION

    def dims_of(self, path, shape, dims):
        return _grid_dims(shape, dims)

    def _overpass(self, granule: Granule, overpass: str, storage_options, variables) -> xr.Dataset:
        group, suffix = self.groups[overpass]
        names = [f"{name}{suffix}" for name in variables] if variables else None
        ds = without_strings(open_references(granule.refs, storage_options, group=group, variables=names))
        if suffix:
            ds = ds.rename({k: k.removesuffix(suffix) for k in ds.data_vars if k.endswith(suffix)})
        return ds.drop_vars([k for k, v in ds.data_vars.items() if v.dims[:2] != ("y", "x")])

    def open(self, granules, storage_options, window, variables):
        window = _m09_window(window)
        days = []
        for granule in sorted(granules, key=lambda g: g.time):
            am, pm = (self._overpass(granule, o, storage_options, variables) for o in self.groups)
            common = [k for k in am.data_vars if k in pm.data_vars and (not variables or k in variables)]
            both = [chunked(_on_window(ds[common], window), {}, granule.url, overpass, window)
                    for overpass, ds in zip(self.groups, (am, pm), strict=True)]
            both = [ds.map(decode, keep_attrs=True) for ds in both]
            day = xr.concat(both, dim=xr.DataArray(list(self.groups), dims="overpass", name="overpass"))
            day = day.expand_dims(time=[granule.time])
            days.append(day.assign_coords(granule=("time", [granule.name.name])))
        return xr.concat(days, dim="time")


def _scatter(values: np.ndarray, inside: np.ndarray, rows: np.ndarray, cols: np.ndarray,
             shape: tuple[int, int], fill) -> np.ndarray:
    """grid[row[i], col[i]] = value[i] for the swath cells inside the window."""
    grid = np.full(shape, fill, dtype=values.dtype)
    grid[rows, cols] = values[inside]
    return grid


class _Swath(NamedTuple):
    granule: Granule
    ds: xr.Dataset  # the swath group, lazily indexed
    rows: np.ndarray  # EASE_row_index, EASE_column_index of every cell
    cols: np.ndarray
    located: np.ndarray  # cells whose indices are not the fill


class SmapL2E(Reader):
    """SPL2SMP_E: 1-D swath arrays located by EASE_row_index/EASE_column_index, gridded onto M09.

    Output dims (time, y, x): one time per half orbit (the file name's start time), with coordinates
    `half_orbit` ("A" ascending/PM, "D" descending/AM) and `granule`. Without a window, the output covers
    the bounding window of all retrieved cells. Cells a half orbit did not see are NaN (flags: 65534).
    The row/column indices are read when opening (they decide where cells go); the values stay lazy.
    The polar group (EASE2 N09, another grid) is not read.
    """

    product = "smap_l2e"
    grid_name = "M09"
    group = L2_GROUP
    index_names = ("EASE_row_index", "EASE_column_index")
    required = {f"{L2_GROUP}/{name}": (None,) for name in ("soil_moisture", *index_names)}
    version_pattern = SMAP_VERSION

    def dims_of(self, path, shape, dims):
        return ("cell",) if len(shape) == 1 and path.startswith(f"{self.group}/") else dims

    def check(self, url, refs):
        super().check(url, refs)
        lengths = {shape for path, shape in array_shapes(refs).items() if path.startswith(f"{self.group}/")}
        if len(lengths) > 1:
            raise GranuleError(url, f"wrong layout: 1-D arrays of {self.group} differ in length: {lengths}")

    def open(self, granules, storage_options, window, variables):
        swaths = []
        for granule in sorted(granules, key=lambda g: g.time):
            names = [*variables, *self.index_names] if variables else None
            ds = open_references(granule.refs, storage_options, group=self.group, variables=names)
            rows, cols = (ds[name].values.astype(np.int64) for name in self.index_names)
            located = (rows < M09.shape[0]) & (cols < M09.shape[1])  # the 65534 fill is beyond the grid
            swaths.append(_Swath(granule, without_strings(ds), rows, cols, located))
        if window is None:
            rows = np.concatenate([s.rows[s.located] for s in swaths])
            cols = np.concatenate([s.cols[s.located] for s in swaths])
            if rows.size == 0:
                raise ValueError("the SMAP L2 granules hold no located cell; give a window")
            window = Window.covering("M09", rows, cols)
        window = _m09_window(window)
        gridded = [self._grid(swath, window, variables) for swath in swaths]
        return xr.concat(gridded, dim="time").assign_coords(
            **window_coords(window),
            time=np.array([s.granule.time for s in swaths], dtype="datetime64[ns]"),
            half_orbit=("time", [s.granule.name.variant for s in swaths]),
            granule=("time", [s.granule.name.name for s in swaths]),
        )

    def _grid(self, swath: _Swath, window: Window, variables) -> xr.Dataset:
        inside = swath.located & window.contains(swath.rows, swath.cols)
        r, c = swath.rows[inside] - window.row0, swath.cols[inside] - window.col0
        ds = swath.ds
        names = [k for k in ds.data_vars if k not in self.index_names and (not variables or k in variables)]
        out = {}
        for name in names:
            var = decode(chunked(ds[name], {}, swath.granule.url))
            # cells the swath did not see: NaN, or (decoded integers are flags) the flag's fill
            if var.dtype.kind == "f":
                fill = np.nan
            else:
                fill = var.encoding.get("_FillValue", np.iinfo(var.dtype).max)
            cells = dask.delayed(_scatter)(var.data, inside, r, c, window.shape, fill)
            out[name] = xr.DataArray(da.from_delayed(cells, window.shape, dtype=var.dtype), dims=("y", "x"),
                                     attrs=var.attrs)
            out[name].encoding.update(var.encoding)
        return xr.Dataset(out, attrs=ds.attrs).expand_dims("time")
