"""Compiled (numba) kernels of the VIS/IR application and correction: the one implementation of their math.

`apply.downscale`, `correct.correct_to_smap` and `correct.downscale_and_correct` are the xarray/dask faces;
the arithmetic of every pixel happens here, on one 2-D plane (fine rows × columns) at a time:

- `theta_plane`: θ = a0 + a1·ΔT with the coefficients of the pixel's model cell, class and group, and the
  application's QA bits (`_theta_row`, shared with the fused kernel).
- `correct_plane`: the fused single pass of apply + correct over a region (an output tile plus the halo of
  whole 9 km cells its footprints reach). Fine rows are visited once in 9 km-cell-row bands; each band's θ is
  computed (or read, when θ is given) into a ring buffer and summed per 9 km cell (S = Σθ, S2 = Σθ², N);
  the horizontal box sums follow per cell row, and `r` cell rows later (r = the footprint's reach in
  cells) the vertical box sums give θ̄, σ gives α, and the band's own pixels are corrected from the buffer
  while it is still in cache. Only the 9 km statistics (a few arrays of cells) and the ring buffer of
  (r + 1) cell rows of θ are held besides inputs and outputs.

The order of every floating-point sum is fixed by the cells alone (each column of a cell top to bottom, then
its columns left to right; box terms by increasing offset), so a tile computed with its halo gives bit for
bit the pixels of the whole window.
"""

import numba as nb
import numpy as np

from soilcube.visir.qa import QA

NO_SMAP = np.uint8(QA.NO_SMAP)
NO_DELTA_T = np.uint8(QA.NO_DELTA_T)
CLASS_BORROWED = np.uint8(QA.CLASS_BORROWED)
OUT_OF_RANGE = np.uint8(QA.OUT_OF_RANGE)
ADDITIVE_FALLBACK = np.uint8(QA.ADDITIVE_FALLBACK)

MODE_APPLY, MODE_THETA = 0, 1  # correct_plane: θ from (ΔT, class, model tables), or θ given
HYBRID, ADDITIVE = 0, 1  # method codes of correct_plane

_JIT = {"nogil": True, "cache": True, "error_model": "numpy"}


@nb.njit(**_JIT)
def _theta_row(dt, veg, row_base, col_base, n_classes, coefficients, bits, out_theta, out_qa):
    """θ and QA bits of one fine row of ΔT `dt` and classes `veg` (uint8).

    The coefficients of the pixel at x are (a0, a1) = coefficients[2i], coefficients[2i + 1] with
    i = row_base + col_base[x] + min(veg[x], n_classes): `row_base` the offset of the row's model row and
    (overpass, month) group, `col_base[x]` that of the pixel's model column; the tables hold a NaN entry
    for a class ≥ n_classes and a NaN row and column for pixels outside the model grid, so no pixel needs
    a test. `bits[i]` = CLASS_BORROWED where the class borrowed its coefficients.

    Row-wise (a call that passes arrays costs reference counting) and in two loops: the gathers (scalar,
    unsigned indices), then a branch-free loop that the compiler vectorises.
    """
    n = dt.shape[0]
    for x in range(n):
        i = row_base + col_base[x] + np.uint64(min(veg[x], n_classes))
        out_theta[x] = coefficients[2 * i] + coefficients[2 * i + 1] * np.float64(dt[x])
        out_qa[x] = bits[i]
    for x in range(n):
        theta = out_theta[x]
        nonpositive = theta <= 0
        out_theta[x] = np.nan if nonpositive else theta
        out_qa[x] |= (NO_DELTA_T if dt[x] != dt[x] else np.uint8(0)) | (
            OUT_OF_RANGE if nonpositive else np.uint8(0)
        )


@nb.njit(**_JIT)
def theta_plane(dt, veg, group0, row_base, col_base, n_classes, coefficients, bits, out_theta, out_qa):
    """θ and QA of a plane (`_theta_row`); `group0` the table offset of the plane's (overpass, month)."""
    for y in range(dt.shape[0]):
        _theta_row(dt[y], veg[y], row_base[y] + group0, col_base, n_classes, coefficients, bits, out_theta[y],
                   out_qa[y])


@nb.njit(**_JIT)
def _runs(index):
    """Runs of equal values of a 1-D table: (starts, stops, values)."""
    n = index.shape[0]
    starts = np.empty(n, np.int64)
    stops = np.empty(n, np.int64)
    values = np.empty(n, np.int64)
    k = 0
    x = 0
    while x < n:
        start = x
        while x < n and index[x] == index[start]:
            x += 1
        starts[k], stops[k], values[k] = start, x, index[start]
        k += 1
    return starts[:k], stops[:k], values[:k]


@nb.njit(inline="always", **_JIT)
def _box_sums(weights, sums, counts, i, c, di, dc):
    """Σ w_k·sums and Σ w_k·counts over the cells (i, c) + (k − r)·(di, dc), k = 0 … 2r, inside the grid:
    one axis of the separable footprint (di, dc = 0, 1 along a row; 1, 0 along a column). Inlined, so the
    arrays pass without a call (a call per cell costs reference counting)."""
    reach = weights.shape[0] // 2
    a, m = 0.0, 0.0
    for k in range(weights.shape[0]):
        ii, cc = i + (k - reach) * di, c + (k - reach) * dc
        w = weights[k]
        if w != 0.0 and ii >= 0 and ii < sums.shape[0] and cc >= 0 and cc < sums.shape[1]:
            a += w * sums[ii, cc]
            m += w * counts[ii, cc]
    return a, m


@nb.njit(**_JIT)
def correct_plane(
    mode, src, veg, group0, row_base, col_base, n_classes, coefficients, bits,
    prow, pcol, smap, weights, methods, ks, ratio_min_means, lows, highs,
    oy0, oy1, ox0, ox1, out_sm, out_qa,
):  # fmt: skip
    """Apply (mode MODE_APPLY: `src` = ΔT) or take θ (MODE_THETA: `src` = θ), then correct to SMAP, on a
    region of fine pixels; write the pixels of rows [oy0, oy1) × columns [ox0, ox1) of the region.

    `prow`/`pcol`: the 9 km row/column (within `smap`, the region's 9 km cells) of each region row/column,
    −1 outside; each cell's rows and columns are contiguous. `weights[j]`: footprint weights of
    correction j over offsets −r … r (zero-padded); `methods`, `ks`, `ratio_min_means`, `lows`, `highs`:
    per correction. Out: `out_sm[j]` for each correction, `out_qa` = the application's bits | those of
    correction 0. Per cell, S, S2 and N sum each column's pixels top to bottom, then the columns left to
    right (per-column sums run as one vector loop over the row).
    """
    ny, nx = src.shape
    ncy, ncx = smap.shape
    n_corr, width = weights.shape
    reach = width // 2
    # fine rows of each 9 km row; the ring buffer holds the rows of reach + 1 consecutive 9 km rows
    row_first = np.full(ncy, ny, np.int64)
    row_stop = np.zeros(ncy, np.int64)
    for y in range(ny):
        r = prow[y]
        if r >= 0:
            row_first[r] = min(row_first[r], y)
            row_stop[r] = max(row_stop[r], y + 1)
    ring = 1
    for r in range(ncy):
        if row_first[r] < row_stop[r]:
            for rr in range(r, min(r + reach + 1, ncy)):
                if row_first[rr] < row_stop[rr]:
                    ring = max(ring, row_stop[rr] - row_first[r])
    seg_start, seg_stop, seg_cell = _runs(pcol)
    n_seg = seg_start.shape[0]
    theta_buf = np.empty((ring, nx), np.float64)
    qa_buf = np.empty((ring, nx), np.uint8)
    col1 = np.empty(nx)
    col2 = np.empty(nx)
    coln = np.empty(nx)
    s1 = np.zeros((ncy, ncx))
    s2 = np.zeros((ncy, ncx))
    cnt = np.zeros((ncy, ncx))
    h1 = np.zeros((n_corr, ncy, ncx))
    hn = np.zeros((n_corr, ncy, ncx))
    # the row being corrected: per-cell values (entry ncx: outside the 9 km window) spread over the own
    # columns, so that the pixel loops run over whole rows
    width_own = ox1 - ox0
    cell_x = np.empty(width_own, np.int64)
    for s in range(n_seg):
        for x in range(max(seg_start[s], ox0), min(seg_stop[s], ox1)):
            cell_x[x - ox0] = seg_cell[s] if seg_cell[s] >= 0 else ncx
    # θ' = θ·P + Q per cell and correction: the additive form is P = 1, Q = Θ − θ̄; the hybrid's ratio
    # branch α·[θ + (Θ − θ̄)] + (1 − α)·θ·Θ/θ̄ = θ·[α + (1 − α)·Θ/θ̄] + α·(Θ − θ̄) (the same to rounding)
    gain_c = np.full((n_corr, ncx + 1), np.nan)
    offset_c = np.full((n_corr, ncx + 1), np.nan)
    fallback_c = np.zeros((n_corr, ncx + 1), np.uint8)
    cell_qa_c = np.full(ncx + 1, NO_SMAP)
    sd_c = np.empty(ncx)
    gain_x = np.empty((n_corr, width_own))
    offset_x = np.empty((n_corr, width_own))
    fallback_x = np.empty(width_own, np.uint8)
    cell_qa_x = np.empty(width_own, np.uint8)

    for band in range(ncy + reach):
        if band < ncy:
            # pass 1: θ of the band's rows into the ring buffer, sums per column, then per cell
            col1[:] = 0.0
            col2[:] = 0.0
            coln[:] = 0.0
            for y in range(row_first[band], row_stop[band]):
                slot = y % ring
                theta = theta_buf[slot]
                if mode == MODE_APPLY:
                    _theta_row(src[y], veg[y], row_base[y] + group0, col_base, n_classes, coefficients, bits,
                               theta, qa_buf[slot])
                else:
                    for x in range(nx):
                        theta[x] = src[y, x]
                        qa_buf[slot, x] = 0
                for x in range(nx):
                    t = theta[x]
                    ok = t == t
                    col1[x] += t if ok else 0.0
                    col2[x] += t * t if ok else 0.0
                    coln[x] += 1.0 if ok else 0.0
            for s in range(n_seg):
                c = seg_cell[s]
                if c < 0:
                    continue
                a, b, m = 0.0, 0.0, 0.0
                for x in range(seg_start[s], seg_stop[s]):
                    a += col1[x]
                    b += col2[x]
                    m += coln[x]
                s1[band, c], s2[band, c], cnt[band, c] = a, b, m
            # horizontal box sums of the band's cells
            for j in range(n_corr):
                weights_j = weights[j]
                for c in range(ncx):
                    h1[j, band, c], hn[j, band, c] = _box_sums(weights_j, s1, cnt, band, c, 0, 1)
        row = band - reach
        if row < 0 or row_first[row] >= row_stop[row]:
            continue
        first, stop = max(row_first[row], oy0), min(row_stop[row], oy1)
        if first >= stop:
            continue
        # σ within the cell; vertical box sums → footprint means θ̄; → α, P, Q per cell
        for c in range(ncx):
            cell_qa_c[c] = NO_SMAP if not np.isfinite(smap[row, c]) else np.uint8(0)
            n = cnt[row, c]
            sd_c[c] = np.nan
            if n > 0:
                mu = s1[row, c] / n
                sd_c[c] = np.sqrt(max(s2[row, c] / n - mu * mu, 0.0))
        for j in range(n_corr):
            weights_j, h1_j, hn_j = weights[j], h1[j], hn[j]
            for c in range(ncx):
                big, sd = smap[row, c], sd_c[c]
                a, m = _box_sums(weights_j, h1_j, hn_j, row, c, 1, 0)
                mean = a / m if m > 0 else np.nan
                delta = big - mean
                hybrid = methods[j] == HYBRID
                if hybrid and mean >= ratio_min_means[j]:
                    alpha = sd / (sd + ks[j]) if sd + ks[j] > 0 else 1.0
                    gain_c[j, c] = alpha + (1 - alpha) * (big / mean)
                    offset_c[j, c] = alpha * delta
                    fallback_c[j, c] = 0
                else:
                    gain_c[j, c] = 1.0
                    offset_c[j, c] = delta
                    # the additive fallback, where θ + (Θ − θ̄) is finite
                    fallback_c[j, c] = ADDITIVE_FALLBACK if hybrid and np.isfinite(delta) else np.uint8(0)
        for x in range(width_own):
            c = cell_x[x]
            cell_qa_x[x] = cell_qa_c[c]
            fallback_x[x] = fallback_c[0, c]
        for j in range(n_corr):
            for x in range(width_own):
                gain_x[j, x] = gain_c[j, cell_x[x]]
                offset_x[j, x] = offset_c[j, cell_x[x]]
        # pass 2: correct the band's own rows from the ring buffer
        for y in range(first, stop):
            theta = theta_buf[y % ring][ox0:ox1]  # (an offset inside the loop would stop vectorisation)
            qa_row = qa_buf[y % ring][ox0:ox1]
            qa_out = out_qa[y - oy0]
            for j in range(n_corr):
                low, high = lows[j], highs[j]
                sm = out_sm[j, y - oy0]
                gain, offset = gain_x[j], offset_x[j]
                for x in range(width_own):
                    t = theta[x]
                    value = t * gain[x] + offset[x]
                    out = (np.abs(value) < np.inf) & ((value <= low) | (value > high))
                    sm[x] = np.nan if out else value
                    if j == 0:
                        qa_out[x] = (
                            qa_row[x]
                            | cell_qa_x[x]
                            | (fallback_x[x] if np.abs(t) < np.inf else np.uint8(0))
                            | (OUT_OF_RANGE if out else np.uint8(0))
                        )
    # own rows outside the 9 km window: the application's bits and NO_SMAP
    for y in range(oy0, oy1):
        if prow[y] >= 0:
            continue
        qa_buf[0, :] = 0
        if mode == MODE_APPLY:
            _theta_row(src[y], veg[y], row_base[y] + group0, col_base, n_classes, coefficients, bits,
                       theta_buf[0], qa_buf[0])
        for x in range(ox0, ox1):
            for j in range(n_corr):
                out_sm[j, y - oy0, x - ox0] = np.nan
            out_qa[y - oy0, x - ox0] = qa_buf[0, x] | NO_SMAP
