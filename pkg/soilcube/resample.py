"""Bicubic resampling with the exact semantics of MATLAB ``imresize(A, scale, 'bicubic')`` (algorithms.md
§1.7): pure numpy/xarray, no I/O. Used to bring SMAP L4 9 km scenes to 1 km (``smap_l4_bicubic`` in the
validation) and by the STF/VIPSTF fusion, whose reference code upsamples every coarse image this way.

What MATLAB does, and so what this does, along each resized axis:

- kernel: Keys' cubic convolution with a = −0.5,
  ``k(x) = 1.5|x|³ − 2.5|x|² + 1`` for |x| ≤ 1, ``−0.5|x|³ + 2.5|x|² − 4|x| + 2`` for 1 < |x| ≤ 2, else 0;
  when shrinking (scale < 1) with antialiasing, ``scale·k(scale·x)`` over a width of 4/scale;
- alignment: output pixel x (1-based) samples the input at ``u = x/scale + 0.5·(1 − 1/scale)`` (pixel
  centres of both grids line up, half-pixel convention), from the input pixels floor(u − width/2) …;
- weights are divided by their sum (exact 1 for the Keys kernel when enlarging);
- boundary: half-sample symmetric mirror (index sequence 0 … n−1, n−1 … 0, repeated), so pixel −1 reads
  pixel 0 and pixel n reads pixel n−1;
- taps whose weight is zero for *every* output pixel are dropped; the remaining ones (4 when enlarging)
  all enter the weighted sum, so a NaN anywhere in an output pixel's 4 × 4 support gives NaN, even under a
  zero weight (0 · NaN = NaN), exactly as MATLAB's double arithmetic does;
- the axes are resized one after the other, in order of increasing scale (MATLAB's order);
- the output size is ceil(scale · n) when a scale is given, or the given size (scale = out/in).

Not the same as ``scipy.ndimage.zoom(order=3)`` or ``skimage.transform.resize(order=3)`` (prefiltered cubic
B-spline), nor OpenCV/PyTorch bicubic (a = −0.75). For EASE-Grid 2.0 M09 → M01 use the integer scale 9: M01
nests exactly 9 × 9 in M09, so output pixel centres are the M01 cell centres.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np
import xarray as xr

KEYS_A = -0.5  # MATLAB's bicubic
KERNEL_WIDTH = 4.0


def cubic(x, a: float = KEYS_A) -> np.ndarray:
    """Keys' cubic convolution kernel (a = −0.5: MATLAB's bicubic)."""
    ax = np.abs(np.asarray(x, dtype=np.float64))
    inner = (a + 2) * ax**3 - (a + 3) * ax**2 + 1
    outer = a * ax**3 - 5 * a * ax**2 + 8 * a * ax - 4 * a
    return np.where(ax <= 1, inner, np.where(ax <= 2, outer, 0.0))


def contributions(
    in_length: int, out_length: int, scale: float, *, antialiasing: bool = True, a: float = KEYS_A
) -> tuple[np.ndarray, np.ndarray]:
    """Weights and input indices of each output pixel along one axis: two (out_length, taps) arrays.

    Row i holds the taps of output pixel i (0-based); the indices are already mirrored into 0 … n−1.
    Taps that no output pixel weights are dropped (see the module docstring).
    """
    if in_length < 1 or out_length < 1 or not scale > 0:
        raise ValueError(
            f"lengths must be ≥ 1 and the scale positive; got {in_length}, {out_length}, {scale}"
        )
    if scale < 1 and antialiasing:
        width = KERNEL_WIDTH / scale

        def kernel(x):
            return scale * cubic(scale * x, a)
    else:
        width = KERNEL_WIDTH

        def kernel(x):
            return cubic(x, a)

    u = np.arange(1, out_length + 1, dtype=np.float64) / scale + 0.5 * (1 - 1 / scale)  # 1-based input
    left = np.floor(u - width / 2)  # 1-based position of the first candidate tap
    taps = math.ceil(width) + 2
    positions = left[:, None] + np.arange(taps)[None, :]  # 1-based
    weights = kernel(u[:, None] - positions)
    weights = weights / weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    indices = mirror[np.mod(positions.astype(np.int64) - 1, mirror.size)]
    used = np.any(weights != 0, axis=0)
    return weights[:, used], indices[:, used]


def imresize(
    values,
    scale: float | Sequence[float] | None = None,
    *,
    output_shape: Sequence[int] | None = None,
    axes: Sequence[int] = (-2, -1),
    antialiasing: bool = True,
) -> np.ndarray:
    """MATLAB ``imresize(values, scale, 'bicubic')`` over ``axes`` (default the last two) of an array.

    ``scale``: one factor for every axis or one per axis; or ``output_shape``: the lengths of the resized
    axes. Other axes (time, bands) are carried along. Arithmetic is float64; float32 input gives float32
    output (MATLAB keeps single precision), anything else float64. NaN propagates to every output pixel
    whose support holds it.
    """
    values = np.asarray(values)
    axes = [axis % values.ndim for axis in axes]
    if len(set(axes)) != len(axes):
        raise ValueError(f"repeated axes {axes}")
    lengths = [values.shape[axis] for axis in axes]
    if (scale is None) == (output_shape is None):
        raise ValueError("give either scale or output_shape")
    if scale is not None:
        scales = [float(s) for s in np.broadcast_to(np.asarray(scale, dtype=np.float64), (len(axes),))]
        sizes = [math.ceil(s * n) for s, n in zip(scales, lengths, strict=True)]
    else:
        sizes = [int(n) for n in output_shape]
        if len(sizes) != len(axes):
            raise ValueError(f"output_shape {tuple(sizes)} does not match axes {axes}")
        scales = [size / n for size, n in zip(sizes, lengths, strict=True)]
    out_dtype = np.float32 if values.dtype == np.float32 else np.float64
    result = values.astype(np.float64)
    for k in np.argsort(scales, kind="stable"):
        weights, indices = contributions(lengths[k], sizes[k], scales[k], antialiasing=antialiasing)
        result = _resize_axis(result, axes[k], weights, indices)
    return result.astype(out_dtype, copy=False)


def _resize_axis(values: np.ndarray, axis: int, weights: np.ndarray, indices: np.ndarray) -> np.ndarray:
    shape = [1] * values.ndim
    shape[axis] = weights.shape[0]
    total = np.zeros(values.shape[:axis] + (weights.shape[0],) + values.shape[axis + 1 :])
    for tap in range(weights.shape[1]):  # one gathered copy per tap, not one per (pixel, tap)
        total += weights[:, tap].reshape(shape) * np.take(values, indices[:, tap], axis=axis)
    return total


def bicubic(
    field: xr.DataArray,
    scale: float | Sequence[float],
    dims: Sequence[Hashable] = ("y", "x"),
    *,
    antialiasing: bool = True,
) -> xr.DataArray:
    """``imresize`` of a DataArray over ``dims``; lazy for dask-backed input (chunks over the other dims).

    A regularly spaced 1-D coordinate of a resized dim becomes the coordinate of the output pixel centres,
    ``c0 + step·((i + 0.5)/scale − 0.5)`` for output pixel i: for M09 x/y and scale 9, the M01 cell centres
    (to rounding). Other coordinates along the resized dims are dropped.
    """
    dims = list(dims)
    scales = [float(s) for s in np.broadcast_to(np.asarray(scale, dtype=np.float64), (len(dims),))]
    sizes = {dim: math.ceil(s * field.sizes[dim]) for dim, s in zip(dims, scales, strict=True)}
    renamed = {dim: f"__resized_{dim}" for dim in dims}
    out = xr.apply_ufunc(
        imresize,
        field,
        input_core_dims=[dims],
        output_core_dims=[[renamed[d] for d in dims]],
        exclude_dims=set(dims),
        kwargs={"scale": scales, "axes": tuple(range(-len(dims), 0)), "antialiasing": antialiasing},
        dask="parallelized",
        dask_gufunc_kwargs={"output_sizes": {renamed[d]: sizes[d] for d in dims}},
        output_dtypes=[np.float32 if field.dtype == np.float32 else np.float64],
        keep_attrs=True,
    )
    out = out.rename({renamed[d]: d for d in dims}).transpose(*field.dims)
    for dim, s in zip(dims, scales, strict=True):
        if dim in field.coords and field[dim].ndim == 1:
            coord = _resized_coordinate(field[dim].values, s, sizes[dim])
            if coord is not None:
                out = out.assign_coords({dim: (dim, coord, field[dim].attrs)})
    return out


def _resized_coordinate(values: np.ndarray, scale: float, size: int) -> np.ndarray | None:
    if values.size < 2 or values.dtype.kind not in "fiu":
        return None
    steps = np.diff(values.astype(np.float64))
    if not np.allclose(steps, steps[0], rtol=1e-9, atol=0):
        return None
    step = float(steps.mean())
    return values[0] + step * ((np.arange(size) + 0.5) / scale - 0.5)
