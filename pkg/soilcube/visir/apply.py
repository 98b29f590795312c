"""Apply the θ–ΔT model to fine LST: vegetation classes, day–night differences, per-pixel coefficients.

Everything is chunk-wise: the model tables are small and travel whole to every chunk, while the fine
arrays (a global 400 m day is 36540 × 86760 pixels) are processed block by block with `apply_ufunc`
(dask="parallelized"), so memory stays bounded by the chunk size.
"""

import numpy as np
import xarray as xr

from soilcube.visir.qa import QA, flag_where, qa_attrs

OVERPASSES = ("AM", "PM")
# SMAP 06:00 (AM) pairs with the night LST of the same day; SMAP 18:00 (PM) with the night that follows it.
NIGHT_OFFSET_DAYS = {"AM": 0, "PM": 1}
VEGETATION_METHODS = ("ndvi", "lai_minmax")
MODEL_GROUP_DIMS = ("overpass", "month", "veg_class")
TABLE_DIMS = ("model_row", "model_col", "model_group")


def ndvi_class(ndvi: xr.DataArray, n_classes: int = 10) -> xr.DataArray:
    """Class floor(NDVI·n) over the half-open bins [0, 1/n) … [(n−1)/n, 1) (float, for the model fit).

    NDVI = 1.0 exactly joins the top class (the public code's bins leave it out). NaN where NDVI is
    missing, ≤ 0 or > 1: such a pixel has no class and gives no pair.
    """
    valid = (ndvi > 0) & (ndvi <= 1)
    return np.minimum(np.floor(ndvi * n_classes), n_classes - 1).where(valid)


def _fraction_class(fraction: xr.DataArray, n_classes: int) -> xr.DataArray:
    # The public application code: fix(fraction·n), the single pixel at fraction 1 → top class, and a pixel
    # without vegetation data → class 0.
    return np.clip(np.trunc(fraction * n_classes), 0, n_classes - 1).fillna(0).astype(np.uint8)


def vegetation_class(
    x: xr.DataArray, method: str = "ndvi", *, n_classes: int = 10, scene_dims=("y", "x")
) -> xr.DataArray:
    """Vegetation class (uint8, 0 … n_classes−1) of every fine pixel, as the public application code does.

    - ``"ndvi"`` (MODIS 1 km code): fix(NDVI·n), NDVI ≥ 1 → top class, NaN or NDVI ≤ 0 → class 0.
    - ``"lai_minmax"`` (VIIRS 400 m code): LAI min–max scaled over the scene, (LAI − min)/(max − min) with
      min and max taken over `scene_dims` (the public code uses one tile on one day; here it is the array
      passed in, per time step), then fix(·n), n → n−1, NaN → 0. A scene of constant LAI is all class 0.
    """
    if method == "ndvi":
        return _fraction_class(x, n_classes)
    if method == "lai_minmax":
        low, high = x.min(scene_dims), x.max(scene_dims)
        return _fraction_class((x - low) / (high - low).where(high > low), n_classes)
    raise ValueError(f"unknown vegetation class method {method!r}; known: {', '.join(VEGETATION_METHODS)}")


def delta_t(lst_day: xr.DataArray, lst_night: xr.DataArray, overpass: str) -> xr.DataArray:
    """Day − night land-surface temperature (K) for the SMAP `overpass` of each day.

    AM: LST_day(d) − LST_night(d); PM: LST_day(d) − LST_night(d + 1). Both series carry the same daily
    `time` labels (dates); a missing next night gives NaN. The result keeps the day series' `time` and a
    scalar `overpass` coordinate, so AM and PM results concatenate along `overpass`.
    """
    if overpass not in NIGHT_OFFSET_DAYS:
        raise ValueError(f"unknown overpass {overpass!r}; known: {', '.join(OVERPASSES)}")
    night_times = lst_day["time"].values + np.timedelta64(NIGHT_OFFSET_DAYS[overpass], "D")
    night = lst_night.reindex(time=night_times).assign_coords(time=lst_day["time"])
    difference = (lst_day - night).assign_coords(overpass=overpass)
    attrs = {"units": "K", "long_name": f"day - night LST, {overpass} pairing"}
    return difference.rename("delta_t").assign_attrs(attrs)


def _group_index(delta_t: xr.DataArray, veg_class: xr.DataArray, model: xr.Dataset) -> xr.DataArray:
    """Position of each pixel's (overpass, month, class) in the model's flattened group axis; NaN = none."""
    n_classes = model.sizes["veg_class"]
    group = veg_class.where((veg_class >= 0) & (veg_class < n_classes)).astype(np.float64)
    stride = n_classes
    if "month" in model.dims:
        group = group + stride * (delta_t["time"].dt.month - 1)
        stride *= 12
    if "overpass" in model.dims:
        if "overpass" not in delta_t.coords:
            raise ValueError("the model is fitted per overpass: delta_t needs an 'overpass' coordinate")
        overpass = delta_t["overpass"]
        position = model.get_index("overpass").get_indexer(np.atleast_1d(overpass.values))
        if (position < 0).any():
            raise ValueError(f"overpass {overpass.values} not in the model ({model['overpass'].values})")
        group = group + stride * xr.DataArray(position.reshape(overpass.shape), dims=overpass.dims)
    return group


def _downscale_block(dt, group, rows, cols, a0, a1, borrowed):
    n_model_cols, n_groups = a0.shape[1], a0.shape[2]
    inside = (rows >= 0) & (cols >= 0) & np.isfinite(group)
    cell = rows * n_model_cols + cols
    index = np.where(inside, cell * n_groups + np.nan_to_num(group).astype(np.int64), 0)
    theta = np.where(inside, a0.reshape(-1)[index] + a1.reshape(-1)[index] * dt, np.nan)
    nonpositive = theta <= 0
    qa = (
        flag_where(np.isnan(dt), QA.NO_DELTA_T)
        | flag_where(inside & (borrowed.reshape(-1)[index] > 0), QA.CLASS_BORROWED)
        | flag_where(nonpositive, QA.OUT_OF_RANGE)
    )
    return np.where(nonpositive, np.nan, theta), qa


def downscale(
    delta_t: xr.DataArray,
    veg_class: xr.DataArray,
    model: xr.Dataset,
    cell_index: tuple[np.ndarray, np.ndarray],
    *,
    fine_dims=("y", "x"),
) -> xr.Dataset:
    """θ = a0 + a1·ΔT per fine pixel, with the coefficients of the model cell that holds it.

    - `model`: the output of `fit_model` on a 2-D model grid: a0, a1, borrowed with two spatial dims (any
      names, in (row, column) order) plus veg_class and optionally month and overpass. With `month` the
      month of each `time` step of `delta_t` picks the coefficients; with `overpass` the `overpass`
      coordinate of `delta_t` (scalar or dim) does.
    - `cell_index` = (row_table, col_table): for each fine row / column along `fine_dims`, the model row /
      column holding it (−1 = outside), as `grids.parent_index` or `LatLonGrid.index` return them.

    Returns `sm` (m³/m³; θ ≤ 0 → NaN, as the public code) and `qa` (NO_DELTA_T where ΔT is missing,
    CLASS_BORROWED where the class borrowed its coefficients, OUT_OF_RANGE where θ ≤ 0). A pixel outside
    the model grid, or whose class is NaN or ≥ the model's classes, is NaN. The model is loaded into
    memory (a few tables of model cells × groups) and shared by every chunk; with dask inputs the
    result is lazy and keeps their chunks.
    """
    model_dims = [d for d in model["a0"].dims if d not in MODEL_GROUP_DIMS]
    if len(model_dims) != 2:
        raise ValueError(f"the model needs exactly two spatial dims, got {model_dims}")
    group_dims = [d for d in MODEL_GROUP_DIMS if d in model.dims]
    coefficients = model[["a0", "a1", "borrowed"]].transpose(*model_dims, *group_dims)
    if "month" in coefficients.dims:
        coefficients = coefficients.reindex(month=np.arange(1, 13))
    n_rows, n_cols = (coefficients.sizes[d] for d in model_dims)
    # (model row, model column, group) tables whose group axis runs overpass-major, veg_class fastest,
    # as `_group_index` counts
    tables = [
        xr.DataArray(np.asarray(coefficients[name].values).reshape(n_rows, n_cols, -1), dims=TABLE_DIMS)
        for name in ("a0", "a1", "borrowed")
    ]
    rows, cols = (xr.DataArray(np.asarray(t), dims=d) for t, d in zip(cell_index, fine_dims, strict=True))
    theta, qa = xr.apply_ufunc(
        _downscale_block,
        delta_t,
        _group_index(delta_t, veg_class, coefficients),
        rows,
        cols,
        *tables,
        input_core_dims=[[], [], [], [], TABLE_DIMS, TABLE_DIMS, TABLE_DIMS],
        output_core_dims=[[], []],
        dask="parallelized",
        output_dtypes=[np.float64, np.uint8],
    )
    return xr.Dataset(
        {
            "sm": theta.assign_attrs(units="m3 m-3", long_name="downscaled soil moisture (uncorrected)"),
            "qa": qa.assign_attrs(qa_attrs()),
        }
    )
