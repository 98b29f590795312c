"""Apply the θ–ΔT model to fine LST: vegetation classes, day–night differences, per-pixel coefficients.

Everything is chunk-wise: the coefficients of the model cells and groups a call reaches are flattened once
(`apply_tables`) and shared by every chunk, while the fine arrays (a global 400 m day is 36540 × 86760
pixels) are processed chunk by chunk by the compiled kernel (`kernel.theta_plane`), so memory stays bounded
by the chunk size. `correct.downscale_and_correct` runs the same per-pixel code fused with the correction.
"""

from dataclasses import dataclass

import numpy as np
import xarray as xr

from soilcube.visir.kernel import theta_plane
from soilcube.visir.qa import QA, qa_attrs
from soilcube.visir.tiles import halo_spans, tile_map

OVERPASSES = ("AM", "PM")
# SMAP 06:00 (AM) pairs with the night LST of the same day; SMAP 18:00 (PM) with the night that follows it.
NIGHT_OFFSET_DAYS = {"AM": 0, "PM": 1}
VEGETATION_METHODS = ("ndvi", "lai_minmax")
MODEL_GROUP_DIMS = ("overpass", "month", "veg_class")


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
    # (the method, not np.clip: np.clip would load a dask-backed array whole)
    return np.trunc(fraction * n_classes).clip(0, n_classes - 1).fillna(0).astype(np.uint8)


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


@dataclass(frozen=True)
class ApplyTables:
    """What the kernels need of the model for one call: the coefficients of the model cells and groups the
    call reaches, flattened, and the offsets into them (`kernel._theta_row`).

    Over a (model row, model column, group, class) table restricted to the rows and columns that the fine
    window reaches and to the (overpass, month) groups of its steps, plus one NaN row, one NaN column and
    one NaN class (for pixels outside the model grid and classes the model lacks): the entry of a pixel is
    row_base[fine row] + group0[lead step] + col_base[fine column] + class; `coefficients` holds (a0, a1)
    of each entry interleaved, `bits` its CLASS_BORROWED bit.
    """

    coefficients: np.ndarray
    bits: np.ndarray
    n_classes: np.uint8
    row_base: np.ndarray
    col_base: np.ndarray
    group0: np.ndarray


def class_codes(veg: np.ndarray, n_classes: int) -> np.ndarray:
    """Vegetation classes as the kernels take them: uint8, anything that is not a class of the model (NaN,
    negative, ≥ n_classes) → n_classes, the tables' NaN entry (uint8 input passes as is: the kernel maps
    values ≥ n_classes there)."""
    if veg.dtype == np.uint8:
        return veg
    with np.errstate(invalid="ignore"):
        return np.where((veg >= 0) & (veg < n_classes), veg, n_classes).astype(np.uint8)


def _lead_groups(delta_t: xr.DataArray, model: xr.Dataset, lead_dims) -> np.ndarray:
    """Per lead step of `delta_t` (lead shape), its (overpass position, month) in the model: −1 for a dim
    the model lacks."""
    shape = [delta_t.sizes[d] for d in lead_dims]
    template = xr.DataArray(np.zeros(shape, np.int8), dims=lead_dims)

    def per_step(values: xr.DataArray) -> np.ndarray:
        values = values.drop_vars(list(values.coords))
        return np.asarray(xr.broadcast(values, template)[0].transpose(*lead_dims).values, dtype=np.int64)

    month = overpass = np.full(shape, -1, np.int64)
    if "month" in model.dims:
        if "time" not in delta_t.coords:
            raise ValueError("the model is fitted by month: delta_t needs a 'time' coordinate")
        month = per_step(delta_t["time"].dt.month)
    if "overpass" in model.dims:
        if "overpass" not in delta_t.coords:
            raise ValueError("the model is fitted per overpass: delta_t needs an 'overpass' coordinate")
        labels = delta_t["overpass"]
        position = model.get_index("overpass").get_indexer(np.atleast_1d(labels.values))
        if (position < 0).any():
            raise ValueError(f"overpass {labels.values} not in the model ({model['overpass'].values})")
        overpass = per_step(xr.DataArray(position.reshape(labels.shape), dims=labels.dims))
    return np.stack([overpass, month], axis=-1)


def apply_tables(
    delta_t: xr.DataArray, model: xr.Dataset, cell_index: tuple[np.ndarray, np.ndarray], lead_dims
) -> ApplyTables:
    """The `ApplyTables` of `model` for `delta_t` (lead dims `lead_dims`) on the fine rows and columns of
    `cell_index` (see `downscale`). Only the model rows, columns and (overpass, month) groups that the call
    reaches are copied; a month the model lacks has NaN coefficients."""
    model_dims = [d for d in model["a0"].dims if d not in MODEL_GROUP_DIMS]
    if len(model_dims) != 2:
        raise ValueError(f"the model needs exactly two spatial dims, got {model_dims}")
    n_classes = model.sizes["veg_class"]
    groups = _lead_groups(delta_t, model, lead_dims)
    used, position = np.unique(groups.reshape(-1, 2), axis=0, return_inverse=True)
    rows, cols = (np.asarray(t, dtype=np.int64) for t in cell_index)
    spans = []
    for table in (rows, cols):
        inside = table[table >= 0]
        spans.append((int(inside.min()), int(inside.max()) + 1) if inside.size else (0, 0))
    (r0, r1), (c0, c1) = spans
    block = model[["a0", "a1", "borrowed"]].isel({model_dims[0]: slice(r0, r1), model_dims[1]: slice(c0, c1)})
    months = model.get_index("month") if "month" in model.dims else None
    if n_classes >= 255:
        raise ValueError(f"at most 254 vegetation classes, the model has {n_classes}")
    n_rows, n_cols, n_groups, n_entries = r1 - r0, c1 - c0, len(used), n_classes + 1
    # + a NaN model row, column and class
    coefficients = np.full((n_rows + 1, n_cols + 1, n_groups, n_entries, 2), np.nan)
    bits = np.zeros((n_rows + 1, n_cols + 1, n_groups, n_entries), np.uint8)
    for u, (overpass, month) in enumerate(used):
        part = block
        if overpass >= 0:
            part = part.isel(overpass=overpass)
        if month >= 0:
            if month not in months:
                continue  # no coefficients for that month
            part = part.isel(month=months.get_loc(month))
        part = part.transpose(*model_dims, "veg_class")
        coefficients[:n_rows, :n_cols, u, :n_classes, 0] = part["a0"].values
        coefficients[:n_rows, :n_cols, u, :n_classes, 1] = part["a1"].values
        bits[:n_rows, :n_cols, u, :n_classes] = np.where(part["borrowed"].values > 0, QA.CLASS_BORROWED, 0)
    bits[np.isnan(coefficients).any(axis=-1)] |= np.uint8(QA.NO_MODEL)  # (the NaN row, column, class too)
    row_stride, col_stride = (n_cols + 1) * n_groups * n_entries, n_groups * n_entries
    return ApplyTables(
        coefficients=coefficients.reshape(-1),
        bits=bits.reshape(-1),
        n_classes=np.uint8(n_classes),
        row_base=(np.where(rows >= 0, rows - r0, n_rows) * row_stride).astype(np.uint64),
        col_base=(np.where(cols >= 0, cols - c0, n_cols) * col_stride).astype(np.uint64),
        group0=(position.reshape(groups.shape[:-1]) * n_entries).astype(np.uint64),
    )


def broadcast_fine(
    arrays: list[xr.DataArray], fine_dims
) -> tuple[list[xr.DataArray], list[str], tuple | None]:
    """`arrays` aligned (exactly), broadcast against each other and transposed to (*lead, *fine_dims):
    (arrays, lead dims, chunks). With any of them dask-backed all are, with the chunks of the first dask
    one (a dim it lacked is one chunk); chunks is None when all are numpy."""
    arrays = list(xr.align(*arrays, join="exact", copy=False))
    first_lazy = next((k for k, a in enumerate(arrays) if a.chunks is not None), None)
    if first_lazy is not None:  # numpy inputs enter the graph once, before broadcasting
        arrays = [a if a.chunks is not None else a.chunk() for a in arrays]
    arrays = list(xr.broadcast(*arrays))
    lead = [d for d in arrays[0].dims if d not in fine_dims]
    arrays = [a.transpose(*lead, *fine_dims) for a in arrays]
    if first_lazy is None:
        return arrays, lead, None
    chunks = arrays[first_lazy].chunks
    return [a.chunk(dict(zip(a.dims, chunks, strict=True))) for a in arrays], lead, chunks


def _theta_tile(fine, coarse, tables: ApplyTables, *, own, region, lead):
    dt, veg = fine[0], class_codes(fine[1], tables.n_classes)
    theta = np.empty(dt.shape, np.float64)
    qa = np.empty(dt.shape, np.uint8)
    group0 = tables.group0[lead]
    row_base, col_base = tables.row_base[region[0] : region[1]], tables.col_base[region[2] : region[3]]
    for step in np.ndindex(dt.shape[:-2]):
        theta_plane(dt[step], veg[step], group0[step], row_base, col_base, tables.n_classes,
                    tables.coefficients, tables.bits, theta[step], qa[step])
    return theta, qa


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
    CLASS_BORROWED where the class borrowed its coefficients, OUT_OF_RANGE where θ ≤ 0). A pixel without
    coefficients (its cell has no fit, or not for the month; outside the model grid; a class NaN or ≥ the
    model's classes) is NaN with NO_MODEL. The arithmetic is the compiled
    kernel `kernel.theta_plane` (the same per-pixel code as the fused `correct.downscale_and_correct`);
    the coefficients of the cells and groups the call reaches are loaded into memory and shared by every
    chunk; with dask inputs the result is lazy and keeps their chunks.
    """
    (dt, veg), lead, chunks = broadcast_fine([delta_t, veg_class], fine_dims)
    tables = apply_tables(dt, model, cell_index, lead)
    whole = (0, dt.shape[-2], 0, dt.shape[-1])
    if chunks is None:
        theta, qa = _theta_tile([dt.values, veg.values], None, tables, own=whole, region=whole,
                                lead=(slice(None),) * len(lead))
    else:
        own = (halo_spans(None, 0, chunks[-2]), halo_spans(None, 0, chunks[-1]))
        theta, qa = tile_map(_theta_tile, [dt.data, veg.data], None, tables, spans=own,
                             outputs=[(np.float64, ()), (np.uint8, ())], name="visir-downscale")
    coords = dt.coords
    return xr.Dataset(
        {
            "sm": xr.DataArray(theta, dims=dt.dims, coords=coords).assign_attrs(
                units="m3 m-3", long_name="downscaled soil moisture (uncorrected)"
            ),
            "qa": xr.DataArray(qa, dims=dt.dims, coords=coords).assign_attrs(qa_attrs()),
        }
    )
