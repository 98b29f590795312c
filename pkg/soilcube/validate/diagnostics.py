"""Spatial and dynamic diagnostics of a gridded product against a gridded reference (truth or airborne-like
field): spatial scores per scene, dynamic range, bias by soil-moisture range and the 9 km grid-artifact
index. Pure xarray on (time, y, x) or (y, x) fields; dask-backed inputs stay lazy except where a quantile
needs the whole field.
"""

import numpy as np
import xarray as xr
from flox.xarray import xarray_reduce

from soilcube.validate.metrics import score

SPATIAL_DIMS = ("y", "x")
SM_RANGE_EDGES = tuple(np.round(np.arange(0.0, 0.51, 0.05), 2))


def spatial_scores(product: xr.DataArray, reference: xr.DataArray, *, min_count: int = 10) -> xr.Dataset:
    """``metrics.score`` over y and x: spatial R, RMSE (RMSD), bias … of every scene (one per time)."""
    return score(product, reference, dim=SPATIAL_DIMS, min_count=min_count)


def dynamic_range(product: xr.DataArray, reference: xr.DataArray, dim=None) -> xr.Dataset:
    """Spread of ``product`` and ``reference`` over their common valid pixels, reduced over ``dim`` (default
    all dims).

    Variables along ``source`` = (product, reference): min, p05, p95, max, range (max − min) and
    range_p05_p95 (p95 − p05); and ``range_ratio``, ``range_p05_p95_ratio`` = product / reference, below 1
    where the product compresses the reference's dynamics.
    """
    product, reference = xr.align(product, reference, join="inner")
    valid = np.isfinite(product) & np.isfinite(reference)
    both = xr.concat([product.where(valid), reference.where(valid)], dim="source").assign_coords(
        source=["product", "reference"]
    )
    reduce_dims = [d for d in both.dims if d != "source"] if dim is None else dim
    quantiles = both.quantile([0.05, 0.95], dim=reduce_dims, skipna=True)
    stats = xr.Dataset(
        {
            "min": both.min(reduce_dims),
            "p05": quantiles.sel(quantile=0.05, drop=True),
            "p95": quantiles.sel(quantile=0.95, drop=True),
            "max": both.max(reduce_dims),
        }
    )
    stats["range"] = stats["max"] - stats["min"]
    stats["range_p05_p95"] = stats["p95"] - stats["p05"]
    for name in ("range", "range_p05_p95"):
        reference_range = stats[name].sel(source="reference", drop=True)
        stats[f"{name}_ratio"] = stats[name].sel(source="product", drop=True) / reference_range.where(
            reference_range != 0
        )
    return stats


def bias_by_range(
    product: xr.DataArray, reference: xr.DataArray, edges=SM_RANGE_EDGES, dim=None
) -> xr.Dataset:
    """Bias (mean product − reference) and pair count per reference soil-moisture range.

    Ranges are [edges[i], edges[i+1]) with the last one closed, so 0.50 falls in 0.45–0.50 and values
    outside the edges are left out. Reduced over ``dim`` (default all dims). Returns ``bias`` and ``n``
    along ``sm_range`` (labels like "0.05–0.10") with ``lower`` and ``upper`` coordinates.
    """
    edges = np.asarray(edges, dtype=np.float64)
    product, reference = xr.align(product, reference, join="inner")
    valid = np.isfinite(product) & np.isfinite(reference)
    difference = (product - reference).where(valid).rename("bias")
    bin_index = xr.apply_ufunc(
        _range_index,
        reference.where(valid),
        kwargs={"edges": edges},
        dask="parallelized",
        output_dtypes=[np.int64],
    ).rename("sm_range")
    reduce_dims = difference.dims if dim is None else dim
    expected = np.arange(len(edges) - 1)
    kwargs = {"dim": reduce_dims, "expected_groups": expected, "fill_value": np.nan}
    result = xr.Dataset(
        {
            "bias": xarray_reduce(difference, bin_index, func="nanmean", **kwargs),
            "n": xarray_reduce(difference.notnull(), bin_index, func="sum", **{**kwargs, "fill_value": 0}),
        }
    )
    labels = [f"{low:.2f}–{high:.2f}" for low, high in zip(edges[:-1], edges[1:], strict=True)]
    return result.assign_coords(
        sm_range=labels, lower=("sm_range", edges[:-1]), upper=("sm_range", edges[1:])
    )


def _range_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Index of the range holding each value; −1 (no group) outside the edges or for NaN."""
    index = np.searchsorted(edges, values, side="right") - 1
    index = np.where(values == edges[-1], len(edges) - 2, index)
    return np.where((index >= 0) & (index < len(edges) - 1) & np.isfinite(values), index, -1)


def artifact_index(
    field: xr.DataArray, parent_cells: tuple[np.ndarray, np.ndarray], dim=None, fine_dims=SPATIAL_DIMS
) -> xr.DataArray:
    """9 km grid-artifact index: mean |jump| between neighbouring fine pixels on different sides of a 9 km
    cell edge divided by the mean |jump| between neighbours inside one 9 km cell.

    ``parent_cells`` = (row table, column table) from ``grids.parent_index(fine_window, coarse_window)``: the
    9 km row of each fine row and column of each fine column (−1 outside, such pairs are skipped). Jumps are
    taken along both fine dims and pooled; NaN pixels drop their pairs. The means run over ``dim`` (default
    all dims, one number per field; e.g. ``dim=("y", "x")`` gives one per scene). A field without 9 km
    structure scores ≈ 1; blocky corrections leave steps at cell edges and score well above 1. NaN where
    either mean has no pairs or the within-cell mean is 0.
    """
    parent_rows, parent_cols = (np.asarray(table) for table in parent_cells)
    sums = {"edge": 0.0, "inside": 0.0}
    counts = {"edge": 0.0, "inside": 0.0}
    for fine_dim, parents in zip(fine_dims, (parent_rows, parent_cols), strict=True):
        jump = abs(field.diff(fine_dim, label="lower")).drop_vars(fine_dim, errors="ignore")
        lower, upper = parents[:-1], parents[1:]
        crosses = xr.DataArray((lower != upper) & (lower >= 0) & (upper >= 0), dims=fine_dim)
        within = xr.DataArray((lower == upper) & (lower >= 0), dims=fine_dim)
        reduce_dims = jump.dims if dim is None else dim
        for kind, mask in (("edge", crosses), ("inside", within)):
            selected = jump.where(mask)
            sums[kind] = sums[kind] + selected.sum(reduce_dims)
            counts[kind] = counts[kind] + selected.count(reduce_dims)
    edge_mean = sums["edge"] / counts["edge"].where(counts["edge"] > 0)
    inside_mean = sums["inside"] / counts["inside"].where(counts["inside"] > 0)
    return (edge_mean / inside_mean.where(inside_mean > 0)).rename("artifact_index")


def subcell_scores(
    product: xr.DataArray,
    reference: xr.DataArray,
    parent_cells: tuple[np.ndarray, np.ndarray],
    fine_dims=SPATIAL_DIMS,
) -> dict[str, float]:
    """How much of the reference's structure *inside* the 9 km cells a product reproduces.

    Each scene's anomalies from its 9 km cell means (cells from ``parent_cells`` as in `artifact_index`)
    split into a static part (each pixel's mean anomaly over the scenes, i.e. over every dim but
    ``fine_dims``) and a dynamic part (the rest). For each part: the product's and the reference's standard
    deviation and their Pearson R pooled over all pixels (and scenes). Temporal per-pixel scores such as
    ubRMSE only see the dynamic part; a 9 km field copied to the fine grid has no sub-cell structure
    (std 0, R NaN). Pass fields masked to common valid samples.
    """
    rows, cols = (np.asarray(t) for t in parent_cells)
    label = np.where((rows[:, None] >= 0) & (cols[None, :] >= 0), rows[:, None] * (cols.max() + 1) + cols, -1)
    cell = xr.DataArray(label, dims=fine_dims, name="cell")
    scene_dims = [d for d in product.dims if d not in fine_dims]
    anomalies = {}
    for name, field in (("product", product), ("reference", reference)):
        field = field.where(cell >= 0)
        means = xarray_reduce(field, cell, func="nanmean", dim=fine_dims)
        anomalies[name] = field - means.sel(cell=cell).drop_vars("cell")
    both = anomalies["product"].notnull() & anomalies["reference"].notnull()
    result = {}
    static = {name: a.where(both).mean(scene_dims) for name, a in anomalies.items()}
    dynamic = {name: a.where(both) - static[name] for name, a in anomalies.items()}
    for part, values in (("static", static), ("dynamic", dynamic)):
        p, r = (np.asarray(values[name]).ravel() for name in ("product", "reference"))
        keep = np.isfinite(p) & np.isfinite(r)
        p, r = p[keep], r[keep]
        result[f"subcell_std_{part}"] = float(p.std()) if p.size else np.nan
        result[f"subcell_std_{part}_ref"] = float(r.std()) if r.size else np.nan
        varies = p.size > 1 and p.std() > 1e-6 and r.std() > 1e-6  # m³/m³: float32 round-off below
        result[f"subcell_R_{part}"] = float(np.corrcoef(p, r)[0, 1]) if varies else np.nan
    return result
