"""Fit the thermal-inertia model θ = a0 + a1·ΔT per cell × vegetation class (× month) (× overpass).

Fang et al. 2025 and the public code (`fangbin08/SMAP : ds_modelbuild.py`, algorithms.md §2.1): GLDAS Noah
0–10 cm soil moisture at the SMAP overpass against the day − night skin-temperature difference, one
ordinary least-squares line per stratum, strata with too few pairs filled from the nearest vegetation
class.

The fit is closed form from six sums per stratum (n, Σx, Σy, Σxx, Σxy, Σyy) gathered in ONE grouped
reduction over `time` (flox), so it is vectorised over cells, streams over dask chunks and never loops
in Python. The sums are float64; the centred sums (Σxx − (Σx)²/n …) lose a few digits to cancellation
but, for ΔT of order 10 K and up to ~10⁴ pairs per stratum, stay accurate to ~1e-12 relative.
"""

import numpy as np
import xarray as xr
from flox.xarray import xarray_reduce

from soilcube.visir.apply import ndvi_class

# x (or y) counts as constant when its centred sum of squares is below this fraction of Σxx (Σyy): exactly
# zero in exact arithmetic, a few ulps of Σxx after cancellation in floating point.
DEGENERATE_RELATIVE = 1e-10
N_MONTHS = 12


def _stratum_sums(x, y, label, n_groups: int) -> xr.Dataset:
    """The six OLS sums per cell and group label (0 … n_groups−1) over `time`; NaN labels are skipped."""
    terms = xr.Dataset({"n": xr.ones_like(x), "sx": x, "sy": y, "sxx": x * x, "sxy": x * y, "syy": y * y})
    groups = np.arange(n_groups)
    sums = xarray_reduce(
        terms, label.rename("group"), func="sum", dim="time", expected_groups=groups, fill_value=0
    )
    return sums.chunk({"group": -1}) if sums.chunks else sums


def _ols(sums: xr.Dataset, min_pairs: int) -> xr.Dataset:
    n = sums["n"]
    n_positive = n.where(n > 0)
    sxx = sums["sxx"] - sums["sx"] ** 2 / n_positive
    sxy = sums["sxy"] - sums["sx"] * sums["sy"] / n_positive
    syy = sums["syy"] - sums["sy"] ** 2 / n_positive
    fitted = (n >= min_pairs) & (sxx > DEGENERATE_RELATIVE * sums["sxx"])
    a1 = sxy / sxx.where(fitted)
    a0 = (sums["sy"] - a1 * sums["sx"]) / n_positive
    # r² is undefined (NaN) when y is constant; clipping absorbs cancellation just outside [0, 1]
    r2 = (sxy**2 / (sxx.where(fitted) * syy.where(syy > DEGENERATE_RELATIVE * sums["syy"]))).clip(0, 1)
    return xr.Dataset({"a0": a0, "a1": a1, "n": n.astype(np.int64), "r2": r2})


def _nearest_fitted_class(has_fit: np.ndarray) -> np.ndarray:
    """For each class along the last axis, the nearest class that has a fit (itself if it has one);
    equal distances go to the lower class, as the public code; −1 where no class has a fit."""
    classes = np.arange(has_fit.shape[-1])
    target, source = classes[:, None], classes[None, :]
    # twice the distance, plus one for a source above the target: a strict order that breaks ties downwards
    cost = 2 * np.abs(target - source) + (source > target)
    cost = np.where(has_fit[..., None, :], cost, np.iinfo(np.int64).max)
    return np.where(has_fit.any(axis=-1, keepdims=True), cost.argmin(axis=-1), -1)


def _borrow_block(a0, a1):
    has_fit = np.isfinite(a0) & np.isfinite(a1)
    source = _nearest_fitted_class(has_fit)
    take = np.maximum(source, 0)
    a0 = np.where(source >= 0, np.take_along_axis(a0, take, axis=-1), np.nan)
    a1 = np.where(source >= 0, np.take_along_axis(a1, take, axis=-1), np.nan)
    borrowed = ((source >= 0) & ~has_fit).astype(np.uint8)
    return a0, a1, borrowed


def fit_model(
    soil_moisture: xr.DataArray,
    delta_t: xr.DataArray,
    ndvi: xr.DataArray,
    *,
    by_month: bool = False,
    min_pairs: int = 9,
    n_classes: int = 10,
    absolute: bool = False,
) -> xr.Dataset:
    """OLS θ = a0 + a1·ΔT per cell × vegetation class (× calendar month) (× overpass).

    Inputs share a `time` dim; every other dim (``cell``, or ``y, x``, and ``overpass``) is kept, so a
    stacked AM/PM input with an ``overpass`` dim is fitted per overpass in the same pass (NDVI may lack
    it). `soil_moisture` in m³/m³ at the SMAP overpass; `delta_t` = day − night skin temperature (K) of the
    matching pairing (AM: T13(d) − T01(d), PM: T13(d) − T01(d+1)); `absolute=True` takes |ΔT| as the
    public code does. Vegetation class = floor(NDVI·n_classes) (see `ndvi_class`). A pair with any NaN is
    dropped: the caller passes non-dry days as NaN.

    A stratum gets a fit when it has at least `min_pairs` pairs (the public code: more than 8) and ΔT is
    not constant; otherwise it borrows a0, a1 of the nearest class with a fit in the same cell (month,
    overpass), ties going to the lower class, and is marked `borrowed`. `n` and `r2` always describe the
    stratum's own pairs (r2 NaN without an own fit or with constant θ).

    Returns a Dataset with a0 (m³/m³), a1 (m³/m³/K), n, r2, borrowed (uint8), dims
    (…cell dims, veg_class[, month][, overpass]); lazy when the inputs are dask arrays.
    """
    x = abs(delta_t) if absolute else delta_t
    y = soil_moisture.astype(np.float64)
    x, y, veg = xr.broadcast(x.astype(np.float64), y, ndvi_class(ndvi, n_classes))
    label = veg.where(x.notnull() & y.notnull())
    n_groups = n_classes
    if by_month:
        # one label per (month, class), month-major, so the flat group axis reshapes to (month, veg_class)
        label = label + n_classes * (label["time"].dt.month - 1)
        n_groups *= N_MONTHS
    fits = _ols(_stratum_sums(x, y, label, n_groups), min_pairs)

    if by_month:
        fits = fits.coarsen(group=n_classes).construct(group=("month", "veg_class")).drop_vars("group")
        fits = fits.assign_coords(month=np.arange(1, N_MONTHS + 1), veg_class=np.arange(n_classes))
    else:
        fits = fits.rename(group="veg_class").assign_coords(veg_class=np.arange(n_classes))

    a0, a1, borrowed = xr.apply_ufunc(
        _borrow_block,
        fits["a0"],
        fits["a1"],
        input_core_dims=[["veg_class"], ["veg_class"]],
        output_core_dims=[["veg_class"]] * 3,
        dask="parallelized",
        output_dtypes=[np.float64, np.float64, np.uint8],
    )
    model = xr.Dataset({"a0": a0, "a1": a1, "n": fits["n"], "r2": fits["r2"], "borrowed": borrowed})
    model["a0"].attrs.update(units="m3 m-3", long_name="intercept of theta = a0 + a1 * delta_t")
    model["a1"].attrs.update(units="m3 m-3 K-1", long_name="slope of theta = a0 + a1 * delta_t")
    model["n"].attrs.update(long_name="number of pairs in the stratum")
    model["r2"].attrs.update(long_name="coefficient of determination of the stratum's own fit")
    model["borrowed"].attrs.update(long_name="1 where the coefficients come from the nearest fitted class")
    model.attrs.update(min_pairs=min_pairs, n_classes=n_classes)
    model.attrs.update(by_month=int(by_month), absolute=int(absolute))
    trailing = [d for d in ("veg_class", "month", "overpass") if d in model.dims]
    return model.transpose(..., *trailing)
