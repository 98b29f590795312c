"""Correct the downscaled fine θ to SMAP 9 km (Fang et al. 2025, Eq. 2–3; algorithms.md §2.3).

Hybrid (the paper):   θ' = α·[θ + (Θ − θ̄)] + (1 − α)·[θ·Θ/θ̄],   α = σ/(σ + k),  k = 0.02 m³/m³
Additive (public code, DSMAP):   θ' = θ + (Θ − θ̄)

Θ = SMAP 9 km soil moisture of the 9 km cell holding the fine pixel, θ̄ = mean of the fine θ over the
footprint around that cell, σ = population standard deviation (ddof=0) of the fine θ inside the 9 km cell
itself. α and the correction are therefore constant within a 9 km cell.

Fine pixel → 9 km cell is the lookup of `grids.parent_index` (the cell holding the pixel centre), so M01
(nested 9×) and M400 (22.5×, not nested) work alike. The work runs in three vectorised steps:

1. per-9 km-cell sums of θ, θ² and counts of valid θ: two 1-D grouped reductions (flox) over the fine
   columns then rows, so no 2-D label array of the fine grid is ever built and dask inputs stream;
2. footprint means as a separable box filter of those sums and counts over neighbouring 9 km cells;
3. an elementwise pass over the fine pixels, chunk by chunk, that looks up Θ, θ̄ and σ of each pixel's
   cell.

Footprint (`footprint_weights`): a footprint of F km around a 9 km cell is the square of side F centred on
the cell, i.e. F/9 cells wide. Each neighbouring cell counts with the fraction of it that the square
covers (per axis, products at the corners), and the fine θ in a partly covered cell is taken as spread
evenly over it: θ̄ = Σ w·S / Σ w·N with S, N the per-cell sum and count. The default 36 km (the paper's
SMAP footprint) is the cell plus 1.5 cells on each side: weights ½, 1, 1, 1, ½. Footprints of an odd
number of cells (9, 27, 45 km) are exact whole-cell windows; the public code's 33 km (its 1 km tables add
12 pixels on each side of the 9 km cell) gets ⅓, 1, 1, 1, ⅓. At the edge of the window the footprint is
truncated to the cells present, and means renormalise by the counts actually there.

With `footprint_km=9` θ̄ is the cell's own mean, and then the mean of θ' over each 9 km cell is exactly Θ
for both methods (α is constant within a cell); wider footprints trade that for smoothness.

Guards: where θ̄ < `ratio_min_mean` the ratio θ·Θ/θ̄ is unstable, so the pixel falls back to the additive
form (QA ADDITIVE_FALLBACK). With k = 0 and σ = 0, α = σ/(σ + k) is 0/0 and taken as 1 (the k → 0 limit).
Results ≤ valid_range[0] or > valid_range[1] become NaN with QA OUT_OF_RANGE; pixels whose cell has no
SMAP value (or that lie outside the 9 km window) are NaN with QA NO_SMAP.

σ comes from the same single pass (σ² = S2/N − (S/N)², float64, clipped at 0): for θ ~ 0.3 it is exact to
~1e-8 m³/m³, so a constant cell gets α of order 1e-7 rather than exactly 0.
"""

import numpy as np
import xarray as xr
from flox.xarray import xarray_reduce
from scipy.ndimage import correlate1d

from soilcube.visir.qa import QA, flag_where, qa_attrs

METHODS = ("hybrid", "additive")
CELL_KM = 9.0
COARSE_DIMS = ("coarse_row", "coarse_col")


def footprint_weights(footprint_km: float, cell_km: float = CELL_KM) -> np.ndarray:
    """Per-axis weights of the cells at offsets −r … r: the fraction of each covered by a `footprint_km`
    window centred on the middle cell."""
    if footprint_km < cell_km:
        raise ValueError(f"footprint ({footprint_km} km) must be at least the cell size ({cell_km} km)")
    half = footprint_km / cell_km / 2
    offsets = np.arange(-np.ceil(half - 0.5), np.ceil(half - 0.5) + 1)
    return np.clip(np.minimum(offsets + 0.5, half) - np.maximum(offsets - 0.5, -half), 0.0, 1.0)


def take_cells(table: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """table[..., rows, cols] broadcast over a fine block; NaN where a row or column is −1 (outside).

    `table` holds the coarse grid in its last two axes, after leading axes that broadcast against the fine
    block (time, overpass); `rows` and `cols` broadcast against each other to the block's last axes.
    """
    n_rows, n_cols = table.shape[-2:]
    flat = table.reshape(table.shape[:-2] + (n_rows * n_cols,))
    inside = (rows >= 0) & (cols >= 0)
    index = np.where(inside, rows * n_cols + cols, 0)
    ndim = max(flat.ndim - 1, index.ndim)
    flat = flat.reshape((1,) * (ndim + 1 - flat.ndim) + flat.shape)
    index = index.reshape((1,) * (ndim - index.ndim) + index.shape)
    values = np.take_along_axis(flat, index[..., None], axis=-1)[..., 0]
    return np.where(inside, values, np.nan)


def _cell_sums(theta: xr.DataArray, rows, cols, shape, fine_dims) -> xr.Dataset:
    """Sum of θ, of θ² and count of valid θ per 9 km cell; fine pixels with label −1 are skipped."""
    terms = xr.Dataset({"s1": theta, "s2": theta**2, "n": theta.notnull().astype(np.float64)})
    by_col = xarray_reduce(
        terms,
        xr.DataArray(cols, dims=fine_dims[1], name=COARSE_DIMS[1]),
        func="nansum",
        dim=fine_dims[1],
        expected_groups=np.arange(shape[1]),
        fill_value=0,
    )
    sums = xarray_reduce(
        by_col,
        xr.DataArray(rows, dims=fine_dims[0], name=COARSE_DIMS[0]),
        func="nansum",
        dim=fine_dims[0],
        expected_groups=np.arange(shape[0]),
        fill_value=0,
    )
    sums = sums.drop_vars(COARSE_DIMS).transpose(..., *COARSE_DIMS)
    return sums.chunk(dict.fromkeys(COARSE_DIMS, -1)) if sums.chunks else sums


def _box_sum(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    # zero outside the window: a truncated footprint
    across = correlate1d(values, weights, axis=-1, mode="constant", cval=0.0)
    return correlate1d(across, weights, axis=-2, mode="constant", cval=0.0)


def _cell_statistics(sums: xr.Dataset, weights: np.ndarray) -> tuple[xr.DataArray, xr.DataArray]:
    """(footprint mean θ̄, within-cell σ with ddof=0) on the 9 km grid."""
    box = {
        name: xr.apply_ufunc(
            _box_sum,
            sums[name],
            input_core_dims=[COARSE_DIMS],
            output_core_dims=[COARSE_DIMS],
            kwargs={"weights": weights},
            dask="parallelized",
            output_dtypes=[np.float64],
        )
        for name in ("s1", "n")
    }
    footprint_mean = box["s1"] / box["n"].where(box["n"] > 0)
    n = sums["n"].where(sums["n"] > 0)
    cell_std = np.sqrt((sums["s2"] / n - (sums["s1"] / n) ** 2).clip(min=0))
    return footprint_mean, cell_std


def _correct_block(
    theta, rows, cols, smap, footprint_mean, cell_std, *, method, k, ratio_min_mean, valid_range
):
    smap_px = take_cells(smap, rows, cols)
    mean_px = take_cells(footprint_mean, rows, cols)
    additive = theta + (smap_px - mean_px)
    fallback = np.zeros(np.shape(additive), dtype=bool)
    corrected = additive
    if method == "hybrid":
        std_px = take_cells(cell_std, rows, cols)
        alpha = np.divide(std_px, std_px + k, out=np.ones_like(std_px), where=std_px + k > 0)
        ratio_ok = mean_px >= ratio_min_mean
        ratio = theta * smap_px / np.where(ratio_ok, mean_px, np.nan)
        corrected = np.where(ratio_ok, alpha * additive + (1 - alpha) * ratio, additive)
        fallback = ~ratio_ok & np.isfinite(additive)
    low, high = valid_range
    out_of_range = np.isfinite(corrected) & ((corrected <= low) | (corrected > high))
    qa = (
        flag_where(~np.isfinite(smap_px), QA.NO_SMAP)
        | flag_where(out_of_range, QA.OUT_OF_RANGE)
        | flag_where(fallback, QA.ADDITIVE_FALLBACK)
    )
    corrected = np.where(out_of_range, np.nan, corrected)
    return corrected, np.broadcast_to(qa, corrected.shape)


def correct_to_smap(
    theta: xr.DataArray,
    smap: xr.DataArray,
    parent_cells: tuple[np.ndarray, np.ndarray],
    *,
    method: str = "hybrid",
    k: float = 0.02,
    footprint_km: float = 36.0,
    cell_km: float = CELL_KM,
    ratio_min_mean: float = 0.01,
    valid_range: tuple[float, float] = (0.0, 0.6),
    fine_dims=("y", "x"),
    coarse_dims=("y", "x"),
) -> xr.Dataset:
    """Correct the fine soil moisture `theta` (…, *fine_dims) to SMAP 9 km `smap` (…, *coarse_dims).

    `parent_cells` = (row_table, col_table) from `grids.parent_index(fine_window, smap_window)`: the 9 km
    row of each fine row and column of each fine column, −1 outside. Leading dims (time, overpass) must
    match between `theta` and `smap` (or be absent from `smap`). The public code's variant is
    ``method="additive", footprint_km=33``. See the module docstring for the footprint, σ and guards.

    Returns `sm` (corrected, m³/m³) and `qa` (NO_SMAP, OUT_OF_RANGE, ADDITIVE_FALLBACK bits).
    """
    if method not in METHODS:
        raise ValueError(f"unknown correction method {method!r}; known: {', '.join(METHODS)}")
    if k < 0:
        raise ValueError(f"k must be ≥ 0, got {k}")
    rows, cols = (np.asarray(t, dtype=np.int64) for t in parent_cells)
    smap = smap.drop_vars([c for c in smap.coords if set(smap[c].dims) & set(coarse_dims)])
    smap = smap.rename(dict(zip(coarse_dims, COARSE_DIMS, strict=True))).transpose(..., *COARSE_DIMS)
    shape = tuple(smap.sizes[d] for d in COARSE_DIMS)
    if rows.max() >= shape[0] or cols.max() >= shape[1]:
        raise ValueError(f"parent_cells reach beyond the SMAP grid of shape {shape}")
    theta = theta.transpose(..., *fine_dims).astype(np.float64)

    footprint_mean, cell_std = _cell_statistics(
        _cell_sums(theta, rows, cols, shape, fine_dims), footprint_weights(footprint_km, cell_km)
    )
    if smap.chunks:
        smap = smap.chunk(dict.fromkeys(COARSE_DIMS, -1))
    corrected, qa = xr.apply_ufunc(
        _correct_block,
        theta,
        xr.DataArray(rows, dims=fine_dims[0]),
        xr.DataArray(cols, dims=fine_dims[1]),
        smap,
        footprint_mean,
        cell_std,
        input_core_dims=[[], [], [], COARSE_DIMS, COARSE_DIMS, COARSE_DIMS],
        output_core_dims=[[], []],
        kwargs={"method": method, "k": k, "ratio_min_mean": ratio_min_mean, "valid_range": valid_range},
        dask="parallelized",
        output_dtypes=[np.float64, np.uint8],
    )
    attrs = {"units": "m3 m-3", "long_name": "soil moisture corrected to SMAP 9 km", "method": method}
    attrs.update(k=k, footprint_km=footprint_km)
    return xr.Dataset(
        {
            "sm": corrected.assign_attrs(attrs),
            "qa": qa.assign_attrs(qa_attrs()),
        }
    )
