"""Agreement metrics between a soil-moisture product and a reference (in situ, truth cube, other product).

Conventions (algorithms.md §3):

- pairs where either value is NaN or ±inf are dropped (pairwise deletion);
- every metric is NaN where fewer than ``min_count`` valid pairs remain (pytesmo's ``min_obs = 10``);
  ``n`` itself always holds the true count, so a NaN score can be told apart from a bad one;
- moments are population moments (ddof=0), as in pytesmo's MSE decomposition and hydroeval's KGE;
- ``bias = mean(product − reference)``, pytesmo's ``bias(product, reference)``; Fang et al. use the opposite
  sign.

Everything is an xarray reduction, so dask-backed cubes stay lazy and whole maps of per-pixel scores come
out of one call (``dim="time"``), as do spatial scores of one scene (``dim=("y", "x")``).
"""

from collections.abc import Hashable, Iterable

import numpy as np
import xarray as xr

METRICS = (
    "R",
    "R2",
    "bias",
    "RMSE",
    "ubRMSE",
    "MAE",
    "SSD",
    "SSD_ref",
    "KGE",
    "KGE2012",
    "n",
    "fang_ubrmse",
)


def score(
    product, reference, dim: Hashable | Iterable[Hashable] | None = None, min_count: int = 10
) -> xr.Dataset:
    """Score ``product`` against ``reference`` along ``dim``; one variable per name in ``METRICS``.

    ``product`` and ``reference`` are DataArrays, numpy or dask arrays, or lists (a bare array takes the dims
    of a DataArray partner of the same rank, else ``dim_0, dim_1, …``). DataArrays are aligned on their
    shared coordinates (inner join). ``dim`` is one dim name or several; ``None`` reduces over all dims.

    Metrics (p = product, o = reference, μ mean, σ population standard deviation, r Pearson correlation):

    - ``R`` = r, ``R2`` = r²;
    - ``bias`` = μp − μo; ``RMSE`` = sqrt(mean((p − o)²)); ``MAE`` = mean(|p − o|);
    - ``ubRMSE`` = sqrt(mean(((p − μp) − (o − μo))²)), i.e. sqrt(max(RMSE² − bias², 0)) without the
      cancellation error of the difference;
    - ``SSD`` = σp, ``SSD_ref`` = σo;
    - ``KGE`` (Gupta et al. 2009) = 1 − sqrt((r − 1)² + (α − 1)² + (β − 1)²), α = σp/σo, β = μp/μo;
    - ``KGE2012`` (Kling et al. 2012): α replaced by γ = (σp/μp)/(σo/μo);
    - ``n`` = number of valid pairs;
    - ``fang_ubrmse``: the "ubrmse" of Fang et al.'s validation code (``ds_validation_viirs.py``): fit the
      line ``p ≈ a + b·o`` by OLS (``linregress(insitu, product)``), then take
      sqrt(mean((o − (a + b·o))²)) — the residual of the *reference* from that line, exactly as their code
      does (algorithms.md §2.4). In closed form: sqrt((1 − b)²·σo² + bias²). It is not an unbiased RMSE;
      keep it only to compare with numbers from that group.

    Ratios with a zero denominator (constant series, zero mean) give NaN instead of ±inf.
    """
    product, reference = _as_aligned_dataarrays(product, reference)
    valid = np.isfinite(product) & np.isfinite(reference)
    if dim is None:
        dims = valid.dims  # product and reference broadcast against each other
    elif isinstance(dim, Iterable) and not isinstance(dim, str):
        dims = tuple(dim)
    else:
        dims = (dim,)

    p = product.astype("float64").where(valid)
    o = reference.astype("float64").where(valid)
    n = valid.sum(dims)
    # Dividing by a count that is NaN below min_count masks every moment, hence every metric, at once.
    count = n.where(n >= max(min_count, 1))

    def mean(values: xr.DataArray) -> xr.DataArray:
        return values.sum(dims) / count

    mean_p, mean_o = mean(p), mean(o)
    anomaly_p, anomaly_o = p - mean_p, o - mean_o
    std_p = np.sqrt(mean(anomaly_p**2))
    std_o = np.sqrt(mean(anomaly_o**2))
    cov = mean(anomaly_p * anomaly_o)
    bias = mean_p - mean_o

    r = cov / _nonzero(std_p * std_o)
    alpha = std_p / _nonzero(std_o)
    beta = mean_p / _nonzero(mean_o)
    gamma = (std_p / _nonzero(mean_p)) / _nonzero(std_o / _nonzero(mean_o))
    slope = cov / _nonzero(std_o**2)

    metrics = {
        "R": r,
        "R2": r**2,
        "bias": bias,
        "RMSE": np.sqrt(mean((p - o) ** 2)),
        "ubRMSE": np.sqrt(mean((anomaly_p - anomaly_o) ** 2)),
        "MAE": mean(abs(p - o)),
        "SSD": std_p,
        "SSD_ref": std_o,
        "KGE": 1 - np.sqrt((r - 1) ** 2 + (alpha - 1) ** 2 + (beta - 1) ** 2),
        "KGE2012": 1 - np.sqrt((r - 1) ** 2 + (gamma - 1) ** 2 + (beta - 1) ** 2),
        "n": n,
        "fang_ubrmse": np.sqrt((1 - slope) ** 2 * std_o**2 + bias**2),
    }
    return xr.Dataset({name: metrics[name] for name in METRICS})


def to_dict(scores: xr.Dataset) -> dict[str, float]:
    """``{metric: float}`` of a 0-d ``score`` result, ready for JSON (NaN stays ``float('nan')``)."""
    return {name: float(scores[name]) for name in METRICS}


def _as_aligned_dataarrays(product, reference) -> tuple[xr.DataArray, xr.DataArray]:
    product = _as_dataarray(product, like=reference)
    reference = _as_dataarray(reference, like=product)
    return xr.align(product, reference, join="inner")


def _as_dataarray(values, like) -> xr.DataArray:
    if isinstance(values, xr.DataArray):
        return values
    if not hasattr(values, "ndim"):  # lists; dask arrays are left as they are so they stay lazy
        values = np.asarray(values)
    if isinstance(like, xr.DataArray) and like.ndim == values.ndim:
        return xr.DataArray(values, dims=like.dims)
    return xr.DataArray(values)


def _nonzero(denominator: xr.DataArray) -> xr.DataArray:
    return denominator.where(denominator != 0)
