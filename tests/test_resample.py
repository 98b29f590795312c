"""soilcube.resample: MATLAB imresize bicubic — hand-computed values, invariants, NaN support, mirror
boundary, and a cross-check against a loop re-implementation of fatheral/matlab_imresize's imresize.py."""

import math

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from soilcube.grids import REGIONS
from soilcube.resample import bicubic, contributions, cubic, imresize

RNG = np.random.default_rng(11)


def test_keys_kernel_a_minus_half():
    assert cubic([0.0, 1.0, -1.0, 2.0, -2.0, 2.5]).tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    # 1.5·0.125 − 2.5·0.25 + 1 and −0.5·3.375 + 2.5·2.25 − 4·1.5 + 2
    assert cubic(0.5) == 0.5625 and cubic(-1.5) == -0.0625
    t = np.linspace(0, 1, 17)
    np.testing.assert_allclose(sum(cubic(t - j) for j in range(-2, 4)), 1.0, atol=1e-15)


def test_hand_computed_values_at_scale_2():
    # Output pixel 1 (1-based) samples u = 0.75: taps at 1-based positions −1, 0, 1, 2 with weights
    # k(1.75) = −0.0234375, k(0.75) = 0.2265625, k(−0.25) = 0.8671875, k(−1.25) = −0.0703125; the mirror
    # sends positions −1 and 0 to pixels 2 and 1, so out = 1.09375·a1 − 0.09375·a2.
    a = np.array([[1.0, 2.0, 4.0, 8.0]])
    out = imresize(a, (1, 2))
    assert out.shape == (1, 8)
    expected_first = 1.09375 * 1 - 0.09375 * 2
    expected_second = 0.796875 * 1 + 0.2265625 * 2 - 0.0234375 * 4
    expected_fourth = -0.0703125 * 1 + 0.8671875 * 2 + 0.2265625 * 4 - 0.0234375 * 8  # u = 2.25, no mirror
    expected_last = 1.09375 * 8 - 0.09375 * 4
    assert out[0, 0] == pytest.approx(expected_first, abs=1e-14)
    assert out[0, 1] == pytest.approx(expected_second, abs=1e-14)
    assert out[0, 3] == pytest.approx(expected_fourth, abs=1e-14)
    assert out[0, 7] == pytest.approx(expected_last, abs=1e-14)
    hand = [expected_first, expected_second, expected_fourth, expected_last]
    np.testing.assert_allclose(hand, [0.90625, 1.15625, 2.3828125, 8.375])


def test_scale_9_hits_coarse_centres_and_keeps_4_taps():
    weights, indices = contributions(5, 45, 9.0)
    assert weights.shape == indices.shape == (45, 4)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-15)
    # Output pixel 9c + 4 (0-based) is the centre of coarse pixel c: a single weight of 1.
    values = RNG.uniform(0.05, 0.45, (5, 6))
    fine = imresize(values, 9)
    assert fine.shape == (45, 54)
    np.testing.assert_allclose(fine[4::9, 4::9], values, rtol=0, atol=1e-15)


@pytest.mark.parametrize("scale", [9, 2, 2.5, 0.5, (9, 3)])
def test_constant_field_is_preserved_everywhere(scale):
    out = imresize(np.full((6, 7), 0.3125), scale)
    np.testing.assert_allclose(out, 0.3125, rtol=0, atol=1e-15)


def test_linear_field_is_reproduced_in_the_interior_not_at_the_mirrored_edge():
    rows, cols = np.mgrid[0:10, 0:12].astype(float)
    plane = 0.1 + 0.02 * rows - 0.015 * cols
    fine = imresize(plane, 9)
    # Output pixel i sits at input coordinate (i + 0.5)/9 − 0.5 (0-based centres).
    fr, fc = np.meshgrid((np.arange(90) + 0.5) / 9 - 0.5, (np.arange(108) + 0.5) / 9 - 0.5, indexing="ij")
    expected = 0.1 + 0.02 * fr - 0.015 * fc
    # Interior: the 4-tap support (floor(u) − 1 … floor(u) + 2, 1-based) stays inside the array.
    interior = (slice(14, 90 - 14), slice(14, 108 - 14))
    np.testing.assert_allclose(fine[interior], expected[interior], rtol=0, atol=1e-14)
    # At the edge the half-sample mirror flattens the slope: not extrapolated linearly.
    assert abs(fine[0, 50] - expected[0, 50]) > 1e-3
    # Keys a = −0.5 is exact for quadratics too (third-order), in the interior.
    quadratic = 0.2 + 0.01 * cols**2
    np.testing.assert_allclose(
        imresize(quadratic, 9)[interior], (0.2 + 0.01 * fc**2)[interior], rtol=0, atol=1e-12
    )


def test_nan_spreads_to_exactly_the_4x4_support():
    values = RNG.uniform(0.1, 0.4, (12, 12))
    values[5, 7] = np.nan
    fine = imresize(values, 9)
    # floor(u) for output pixel i (0-based) is floor((i + 5)/9); coarse pixel r (0-based) is in the support
    # when floor(u) − 2 ≤ r ≤ floor(u) + 1, i.e. 9r − 14 ≤ i ≤ 9r + 21: 36 fine pixels, 4 coarse cells.
    rows = np.flatnonzero(np.isnan(fine).any(axis=1))
    cols = np.flatnonzero(np.isnan(fine).any(axis=0))
    assert rows.tolist() == list(range(9 * 5 - 14, 9 * 5 + 22))
    assert cols.tolist() == list(range(9 * 7 - 14, 9 * 7 + 22))
    assert np.isnan(fine).sum() == 36 * 36
    # Even a zero-weight tap poisons the pixel (0·NaN = NaN, as in MATLAB): output row 9·5 − 14 = 31 lies
    # on the centre of coarse row 3, where the weight of row 5 is k(2) = 0.
    assert np.isnan(fine[31, 9 * 7 + 4])
    finite = np.where(np.isnan(values), 0.25, values)
    np.testing.assert_array_equal(np.isnan(imresize(finite, 9)), False)


def test_boundary_is_the_half_sample_symmetric_mirror():
    values = RNG.uniform(0.1, 0.4, (6, 8))
    padded = np.pad(values, 2, mode="symmetric")  # numpy's "symmetric" repeats the edge pixel
    np.testing.assert_allclose(imresize(padded, 9)[18:-18, 18:-18], imresize(values, 9), rtol=0, atol=1e-14)
    # Not edge replication: a second pixel out mirrors pixel 1, not pixel 0.
    assert not np.allclose(imresize(np.pad(values, 2, mode="edge"), 9)[18:-18, 18:-18], imresize(values, 9))


def test_float32_stays_float32_and_other_axes_are_carried():
    stack = RNG.uniform(0.1, 0.4, (3, 4, 5)).astype(np.float32)
    out = imresize(stack, 9)
    assert out.dtype == np.float32 and out.shape == (3, 36, 45)
    np.testing.assert_allclose(out[1], imresize(stack[1].astype(np.float64), 9), rtol=1e-6)
    moved = imresize(np.moveaxis(stack, 0, -1), 9, axes=(0, 1))
    np.testing.assert_allclose(np.moveaxis(moved, -1, 0), out, rtol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="either scale or output_shape"):
        imresize(np.ones((2, 2)))
    with pytest.raises(ValueError, match="either scale or output_shape"):
        imresize(np.ones((2, 2)), 2, output_shape=(4, 4))
    with pytest.raises(ValueError, match="positive"):
        contributions(3, 6, 0.0)


# --- cross-check: fatheral/matlab_imresize imresize.py, re-implemented as plain loops ---------------------


def _reference_contributions(in_length, out_length, scale):
    """imresize.py `contributions` (kernel 'bicubic', width 4), written out pixel by pixel."""
    if scale < 1:
        width = 4.0 / scale

        def h(x):
            return scale * _keys(scale * x)
    else:
        width = 4.0
        h = _keys
    taps = int(math.ceil(width)) + 2
    aux = list(range(in_length)) + list(range(in_length - 1, -1, -1))
    rows_w, rows_i = [], []
    for x in range(1, out_length + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        index0 = [left + p - 1 for p in range(taps)]
        w = [h(u - i - 1) for i in index0]
        total = sum(w)
        rows_w.append([v / total for v in w])
        rows_i.append([aux[i % len(aux)] for i in index0])
    keep = [p for p in range(taps) if any(row[p] != 0 for row in rows_w)]
    return [[row[p] for p in keep] for row in rows_w], [[row[p] for p in keep] for row in rows_i]


def _keys(x):
    ax = abs(x)
    if ax <= 1:
        return 1.5 * ax**3 - 2.5 * ax**2 + 1
    if ax <= 2:
        return -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2
    return 0.0


def _reference_imresize(image, out_shape):
    """imresize.py `imresize` for a 2-D float image: both dims resized in order of increasing scale."""
    scales = [out_shape[k] / image.shape[k] for k in range(2)]
    result = [list(map(float, row)) for row in image]
    for dim in sorted(range(2), key=lambda k: scales[k]):
        weights, indices = _reference_contributions(
            len(result) if dim == 0 else len(result[0]), out_shape[dim], scales[dim]
        )
        if dim == 0:
            result = [
                [
                    sum(w * result[i][c] for w, i in zip(weights[r], indices[r], strict=True))
                    for c in range(len(result[0]))
                ]
                for r in range(out_shape[0])
            ]
        else:
            result = [
                [
                    sum(w * row[i] for w, i in zip(weights[c], indices[c], strict=True))
                    for c in range(out_shape[1])
                ]
                for row in result
            ]
    return np.array(result)


@pytest.mark.parametrize("out_shape", [(45, 63), (17, 11), (3, 4), (10, 30)])
def test_matches_the_reference_implementation(out_shape):
    image = RNG.uniform(0.05, 0.5, (5, 7))
    expected = _reference_imresize(image, out_shape)
    np.testing.assert_allclose(imresize(image, output_shape=out_shape), expected, rtol=0, atol=1e-13)
    with_nan = image.copy()
    with_nan[2, 3] = np.nan
    reference_nan = np.isnan(_reference_imresize(with_nan, out_shape))
    np.testing.assert_array_equal(np.isnan(imresize(with_nan, output_shape=out_shape)), reference_nan)


def test_reference_matches_at_the_integer_scale_9():
    image = RNG.uniform(0.05, 0.5, (4, 6))
    np.testing.assert_allclose(imresize(image, 9), _reference_imresize(image, (36, 54)), rtol=0, atol=1e-13)


# --- xarray ----------------------------------------------------------------------------------------------


def test_dataarray_m09_to_m01_centres_and_lazy():
    m09, m01 = REGIONS["oklahoma"].window("M09"), REGIONS["oklahoma"].window("M01")
    values = RNG.uniform(0.05, 0.45, (3, *m09.shape)).astype(np.float32)
    times = np.array(["2016-06-01T01:30", "2016-06-01T04:30", "2016-06-01T07:30"], dtype="datetime64[ns]")
    coarse = xr.DataArray(
        values,
        dims=("time", "y", "x"),
        coords={"time": times, "y": m09.y, "x": m09.x},
        attrs={"units": "m3 m-3"},
    )
    fine = bicubic(coarse, 9)
    assert fine.dims == ("time", "y", "x") and fine.shape == (3, *m01.shape)
    np.testing.assert_allclose(fine["x"].values, m01.x, rtol=0, atol=1e-6)
    np.testing.assert_allclose(fine["y"].values, m01.y, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(fine["time"].values, times)
    assert fine.attrs["units"] == "m3 m-3" and fine.dtype == np.float32
    np.testing.assert_array_equal(fine.values, imresize(values, 9))
    lazy = bicubic(coarse.copy(data=da.from_array(values, chunks=(1, -1, -1))), 9)
    assert isinstance(lazy.data, da.Array)
    np.testing.assert_array_equal(lazy.values, fine.values)
    # y before x or not, the same numbers.
    swapped = bicubic(coarse.transpose("x", "time", "y"), 9)
    assert swapped.dims == ("x", "time", "y")
    np.testing.assert_allclose(swapped.transpose("time", "y", "x").values, fine.values, rtol=1e-6)
