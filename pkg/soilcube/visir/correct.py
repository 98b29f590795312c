"""Correct the downscaled fine θ to SMAP 9 km (Fang et al. 2025, Eq. 2–3; algorithms.md §2.3).

Hybrid (the paper):   θ' = α·[θ + (Θ − θ̄)] + (1 − α)·[θ·Θ/θ̄],   α = σ/(σ + k),  k = 0.02 m³/m³
Additive (public code, DSMAP):   θ' = θ + (Θ − θ̄)

Θ = SMAP 9 km soil moisture of the 9 km cell holding the fine pixel, θ̄ = mean of the fine θ over the
footprint around that cell, σ = population standard deviation (ddof=0) of the fine θ inside the 9 km cell
itself. α and the correction are therefore constant within a 9 km cell.

Fine pixel → 9 km cell is the lookup of `grids.parent_index` (the cell holding the pixel centre), so M01
(nested 9×) and M400 (22.5×, not nested) work alike. The work is one compiled pass (`kernel.correct_plane`)
over the fine pixels, band of 9 km cell rows by band:

1. per-9 km-cell sums of θ, θ² and counts of valid θ (θ computed from ΔT on the fly in
   `downscale_and_correct`, the fused apply + correct; read in `correct_to_smap`);
2. footprint means as a separable box filter of those sums and counts over neighbouring 9 km cells;
3. the elementwise correction of the band's pixels with Θ, θ̄ and σ of each pixel's cell, while the band
   is still in cache, as θ' = θ·P + Q with P and Q per cell (additive: P = 1, Q = Θ − θ̄; hybrid:
   P = α + (1 − α)·Θ/θ̄, Q = α·(Θ − θ̄), the formula above rearranged: equal to float64 rounding).

With dask inputs each output chunk is one task over the chunk plus a halo: every fine pixel of the 9 km
cells within the footprint's reach of the chunk's own cells (`tiles.halo_spans`); sums run in an order
fixed by the cells, so the tiles reproduce the whole-window result exactly and memory is bounded by the
chunk size. SMAP enters whole per time step (9 km: small). Computation is float64 throughout; outputs are
float64 (`correct_to_smap`) or the `dtype` asked for (`downscale_and_correct`: float32 by default).

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
SMAP value (or that lie outside the 9 km window) are NaN with QA NO_SMAP. The default range (0, 0.6] is the
physical one (no soil holds more water than its porosity, ≤ ~0.6 m³/m³), for both methods; the public
code clips less (1 km: θ' ≤ 0; 400 m: θ' < 0 or > 1 → NaN), which `valid_range=(0, 1)` comes close to.

σ comes from the same single pass (σ² = S2/N − (S/N)², float64, clipped at 0): for θ ~ 0.3 it is exact to
~1e-8 m³/m³, so a constant cell gets α of order 1e-7 rather than exactly 0.
"""

from dataclasses import dataclass

import numpy as np
import xarray as xr

from soilcube.visir.apply import ApplyTables, apply_tables, broadcast_fine, class_codes
from soilcube.visir.kernel import ADDITIVE, HYBRID, MODE_APPLY, MODE_THETA, correct_plane
from soilcube.visir.qa import qa_attrs
from soilcube.visir.tiles import as_dask, check_monotone, halo_spans, tile_map

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


@dataclass(frozen=True)
class Correction:
    """One correction to SMAP 9 km (module docstring): the hybrid of the paper or the public code's
    additive form (``Correction("additive", footprint_km=33)``)."""

    method: str = "hybrid"
    k: float = 0.02
    footprint_km: float = 36.0
    ratio_min_mean: float = 0.01
    valid_range: tuple[float, float] = (0.0, 0.6)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown correction method {self.method!r}; known: {', '.join(METHODS)}")
        if self.k < 0:
            raise ValueError(f"k must be ≥ 0, got {self.k}")

    def attrs(self) -> dict:
        return {"units": "m3 m-3", "long_name": "soil moisture corrected to SMAP 9 km", "method": self.method,
                "k": self.k, "footprint_km": self.footprint_km}


# The cubes' corrections (`runs.downscale_window`) and `downscale_and_correct`'s default: `sm` the paper's
# hybrid, `sm_additive` the public code's additive form over 33 km.
CORRECTIONS = {"sm": Correction(), "sm_additive": Correction("additive", footprint_km=33.0)}


@dataclass(frozen=True)
class _Plan:
    """Everything the tiles share (one key in a dask graph)."""

    mode: int
    tables: ApplyTables | None
    rows: np.ndarray
    cols: np.ndarray
    weights: np.ndarray
    methods: np.ndarray
    ks: np.ndarray
    ratio_min_means: np.ndarray
    lows: np.ndarray
    highs: np.ndarray
    dtype: np.dtype


def _plan(mode, tables, parent_cells, corrections: list[Correction], cell_km: float, dtype) -> _Plan:
    rows, cols = (np.asarray(t, dtype=np.int64) for t in parent_cells)
    for table in (rows, cols):
        check_monotone(table)
    weights = [footprint_weights(c.footprint_km, cell_km) for c in corrections]
    reach = max(w.size // 2 for w in weights)
    padded = np.zeros((len(weights), 2 * reach + 1))
    for j, w in enumerate(weights):
        padded[j, reach - w.size // 2 : reach + w.size // 2 + 1] = w
    return _Plan(
        mode=mode,
        tables=tables,
        rows=rows,
        cols=cols,
        weights=padded,
        methods=np.array([HYBRID if c.method == "hybrid" else ADDITIVE for c in corrections], np.int64),
        ks=np.array([c.k for c in corrections], np.float64),
        ratio_min_means=np.array([c.ratio_min_mean for c in corrections], np.float64),
        lows=np.array([c.valid_range[0] for c in corrections], np.float64),
        highs=np.array([c.valid_range[1] for c in corrections], np.float64),
        dtype=np.dtype(dtype),
    )


def _cells(table: np.ndarray) -> tuple[np.ndarray, int]:
    """A region's fine → coarse table relative to the first coarse cell it reaches, and that cell."""
    inside = table[table >= 0]
    first = int(inside.min()) if inside.size else 0
    return np.where(table >= 0, table - first, -1), first


def _correct_tile(fine, smap, plan: _Plan, *, own, region, lead):
    """Apply (or take θ) and correct the pixels `own` of a region of fine pixels (see `tiles.tile_map`)."""
    src = fine[0]
    ry0, ry1, rx0, rx1 = region
    rows, row0 = _cells(plan.rows[ry0:ry1])
    cols, col0 = _cells(plan.cols[rx0:rx1])
    n_rows, n_cols = (int(t.max()) + 1 if t.size else 0 for t in (rows, cols))
    smap = np.asarray(smap[..., row0 : row0 + n_rows, col0 : col0 + n_cols], dtype=np.float64)
    if plan.mode == MODE_APPLY:
        t = plan.tables
        veg = class_codes(fine[1], t.n_classes)
        group0, row_base, col_base = t.group0[lead], t.row_base[ry0:ry1], t.col_base[rx0:rx1]
        n_classes, coefficients, bits = t.n_classes, t.coefficients, t.bits
    else:  # θ given: the model arguments are placeholders of the right types
        veg = np.zeros((1, 1), np.uint8)
        group0 = np.zeros(src.shape[:-2], np.uint64)
        row_base, col_base = np.zeros(ry1 - ry0, np.uint64), np.zeros(rx1 - rx0, np.uint64)
        n_classes, coefficients, bits = np.uint8(0), np.full(2, np.nan), np.zeros(1, np.uint8)
    oy0, oy1, ox0, ox1 = own
    lead_shape = src.shape[:-2]
    out_sm = np.empty((plan.weights.shape[0], *lead_shape, oy1 - oy0, ox1 - ox0), plan.dtype)
    out_qa = np.empty((*lead_shape, oy1 - oy0, ox1 - ox0), np.uint8)
    for step in np.ndindex(lead_shape):
        correct_plane(
            plan.mode, src[step], veg if plan.mode == MODE_THETA else veg[step], group0[step], row_base,
            col_base, n_classes, coefficients, bits,
            rows, cols, smap[step], plan.weights, plan.methods, plan.ks, plan.ratio_min_means, plan.lows,
            plan.highs, oy0, oy1, ox0, ox1, out_sm[(slice(None), *step)], out_qa[step],
        )  # fmt: skip
    return out_sm, out_qa


def _smap_like(smap: xr.DataArray, fine: xr.DataArray, lead, coarse_dims, chunks) -> xr.DataArray:
    """SMAP on (*lead, *COARSE_DIMS), aligned with the fine lead steps; one chunk per lead chunk of the fine
    inputs when they are lazy."""
    smap = smap.drop_vars([c for c in smap.coords if set(smap[c].dims) & set(coarse_dims)])
    smap = smap.rename(dict(zip(coarse_dims, COARSE_DIMS, strict=True)))
    extra = [d for d in smap.dims if d not in (*lead, *COARSE_DIMS)]
    if extra:
        raise ValueError(f"SMAP has dims {extra} that the fine field lacks")
    fine_lead = fine.isel({d: 0 for d in fine.dims if d not in lead}, drop=True)
    smap, _ = xr.align(smap, fine_lead, join="exact", copy=False)
    smap = smap.expand_dims({d: fine.sizes[d] for d in lead if d not in smap.dims})
    smap = smap.transpose(*lead, *COARSE_DIMS)
    if chunks is None and smap.chunks is None:
        return smap
    lead_chunks = chunks[: len(lead)] if chunks is not None else tuple((fine.sizes[d],) for d in lead)
    return smap.copy(data=as_dask(smap.data, (*lead_chunks, (smap.shape[-2],), (smap.shape[-1],))))


def _run(mode, fine: list[xr.DataArray], lead, chunks, smap, parent_cells, tables, corrections, cell_km,
         dtype, coarse_dims) -> tuple[list, object, xr.DataArray]:
    """The corrected fields (one per correction) and QA of the fine inputs (θ, or ΔT and class)."""
    smap = _smap_like(smap, fine[0], lead, coarse_dims, chunks)
    shape = smap.shape[-2:]
    rows, cols = (np.asarray(t) for t in parent_cells)
    if rows.max() >= shape[0] or cols.max() >= shape[1]:
        raise ValueError(f"parent_cells reach beyond the SMAP grid of shape {shape}")
    plan = _plan(mode, tables, parent_cells, corrections, cell_km, dtype)
    if chunks is None and smap.chunks is not None:  # lazy SMAP only: the fine inputs as one chunk
        chunks = tuple((n,) for n in fine[0].shape)
        fine = [f.chunk(dict(zip(f.dims, chunks, strict=True))) for f in fine]
    if chunks is None:
        whole = (0, fine[0].shape[-2], 0, fine[0].shape[-1])
        sm, qa = _correct_tile([f.values for f in fine], smap.values, plan, own=whole, region=whole,
                               lead=(slice(None),) * len(lead))
    else:
        reach = plan.weights.shape[1] // 2
        spans = (halo_spans(plan.rows, reach, chunks[-2]), halo_spans(plan.cols, reach, chunks[-1]))
        sm, qa = tile_map(_correct_tile, [f.data for f in fine], smap.data, plan, spans=spans,
                          outputs=[(plan.dtype, (len(corrections),)), (np.uint8, ())], name="visir-correct")
    return [sm[j] for j in range(len(corrections))], qa, fine[0]


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

    Returns `sm` (corrected, m³/m³, float64) and `qa` (NO_SMAP, OUT_OF_RANGE, ADDITIVE_FALLBACK bits).
    With dask inputs the result is lazy and keeps the chunks of `theta`.
    """
    correction = Correction(method, k, footprint_km, ratio_min_mean, tuple(valid_range))
    (theta,), lead, chunks = broadcast_fine([theta], fine_dims)
    (sm,), qa, like = _run(MODE_THETA, [theta], lead, chunks, smap, parent_cells, None, [correction],
                           cell_km, np.float64, coarse_dims)
    return xr.Dataset(
        {
            "sm": xr.DataArray(sm, dims=like.dims, coords=like.coords).assign_attrs(correction.attrs()),
            "qa": xr.DataArray(qa, dims=like.dims, coords=like.coords).assign_attrs(qa_attrs()),
        }
    )


def downscale_and_correct(
    delta_t: xr.DataArray,
    veg_class: xr.DataArray,
    model: xr.Dataset,
    cell_index: tuple[np.ndarray, np.ndarray],
    smap: xr.DataArray,
    parent_cells: tuple[np.ndarray, np.ndarray],
    corrections: dict[str, Correction] | None = None,
    *,
    cell_km: float = CELL_KM,
    dtype=np.float32,
    fine_dims=("y", "x"),
    coarse_dims=("y", "x"),
) -> xr.Dataset:
    """`apply.downscale` fused with `correct_to_smap` for each of `corrections` in one pass over the pixels.

    Arguments as in those two functions; `corrections` maps output names to `Correction`s (default:
    `CORRECTIONS`). Returns those fields (`dtype`)
    and `qa`: the application's bits | those of the FIRST correction. θ itself is never stored: the kernel
    holds it for a few 9 km cell rows only. With dask inputs the result is lazy, one task per chunk of
    `delta_t` plus the halo its footprints need (module docstring).
    """
    if corrections is None:
        corrections = CORRECTIONS
    if not corrections:
        raise ValueError("no correction asked for")
    fine, lead, chunks = broadcast_fine([delta_t, veg_class], fine_dims)
    tables = apply_tables(fine[0], model, cell_index, lead)
    fields, qa, like = _run(MODE_APPLY, fine, lead, chunks, smap, parent_cells, tables,
                            list(corrections.values()), cell_km, dtype, coarse_dims)
    out = {
        name: xr.DataArray(field, dims=like.dims, coords=like.coords).assign_attrs(c.attrs())
        for (name, c), field in zip(corrections.items(), fields, strict=True)
    }
    out["qa"] = xr.DataArray(qa, dims=like.dims, coords=like.coords).assign_attrs(qa_attrs())
    return xr.Dataset(out)
