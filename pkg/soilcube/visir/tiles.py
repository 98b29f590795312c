"""Lazy tile graphs: one task per output chunk, fed its chunk of the fine inputs plus a halo.

`tile_map` builds the dask graph of `downscale` and of the corrections by hand, because what a tile needs
is set by lookup tables, not by a fixed number of pixels: a tile of fine pixels needs every fine pixel of
the 9 km cells its footprints reach (`halo_spans`), which on the 22.5× M400/M09 pair is not a whole number
of pixels per cell. Each task gathers the input chunks that overlap its region, cuts the region out and
runs the compiled kernel on it; the outputs keep the chunks of the inputs.

Everything the tasks share (lookup tables, model coefficients, parameters) is put in the graph ONCE, as one
key that every task refers to (or, under a distributed client, scattered to the cluster once and referred
to by its key), so the graph stays small whatever the number of tiles.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from itertools import product

import dask
import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph


def halo_spans(table: np.ndarray | None, reach: int, chunks: Sequence[int]) -> list[tuple[int, int]]:
    """Per chunk of a fine axis, the (start, stop) fine positions the chunk needs: its own pixels and every
    pixel of the coarse cells within `reach` cells of the cells holding them (no halo: `table` None).

    `table` maps each fine position to its coarse cell (−1 outside the coarse window), non-decreasing where
    valid (as `grids.parent_index` gives it), so each cell's pixels are contiguous.
    """
    bounds = np.cumsum((0, *chunks))
    table = np.full(int(bounds[-1]), -1) if table is None else np.asarray(table)
    check_monotone(table)
    valid = np.flatnonzero(table >= 0)
    if not valid.size:
        return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    n_cells = int(table[valid].max()) + 1
    first = np.full(n_cells, table.size, dtype=np.int64)
    stop = np.zeros(n_cells, dtype=np.int64)
    np.minimum.at(first, table[valid], valid)
    np.maximum.at(stop, table[valid], valid + 1)
    spans = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        own = table[a:b]
        own = own[own >= 0]
        if not own.size:
            spans.append((int(a), int(b)))
            continue
        lo, hi = max(int(own.min()) - reach, 0), min(int(own.max()) + reach, n_cells - 1)
        present = stop[lo : hi + 1] > 0
        spans.append((int(min(a, first[lo : hi + 1][present].min())),
                      int(max(b, stop[lo : hi + 1][present].max()))))
    return spans


def check_monotone(table: np.ndarray) -> None:
    valid = table[table >= 0]
    if np.any(np.diff(valid) < 0):
        raise ValueError("a fine → coarse lookup table must be non-decreasing where valid (each coarse "
                         "cell's fine pixels contiguous), as grids.parent_index gives it")


def _region(parts: list[list[np.ndarray]]) -> np.ndarray:
    return parts[0][0] if len(parts) == 1 and len(parts[0]) == 1 else np.block(parts)


def _run_tile(func, fine_parts, coarse, shared, static):
    return func([_region(parts) for parts in fine_parts], coarse, shared, **static)


def _shared(obj):
    """`obj` as the tasks will get it: scattered once to the cluster when a distributed client is the
    scheduler (the graph then carries its key only), else itself (one key of the graph)."""
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):
        return obj
    if dask.base.get_scheduler() != client.get:
        return obj
    return client.scatter(obj, hash=False)


def _is_future(obj) -> bool:
    try:
        from distributed import Future
    except ImportError:
        return False
    return isinstance(obj, Future)


def tile_map(
    func: Callable,
    fine: Sequence[da.Array],
    coarse: da.Array | None,
    shared: object,
    *,
    spans: tuple[list[tuple[int, int]], list[tuple[int, int]]],
    outputs: Sequence[tuple[np.dtype, tuple[int, ...]]],
    name: str,
) -> list[da.Array]:
    """Lazy outputs of `func` tile by tile.

    `fine`: dask arrays of identical shape (*lead, y, x) and chunks; `coarse`: None or a dask array
    (*lead, cy, cx) with the same lead chunks and one chunk along its last two axes; `shared`: any object,
    put in the graph once (scattered to the cluster instead when a distributed client computes).
    `spans`: per chunk along y and along x, the (start, stop) fine region its task needs (`halo_spans`).
    `outputs`: (dtype, extra leading shape) of each output.

    Each task calls ``func(regions, coarse_block, shared, own=(y0, y1, x0, x1), region=(ry0, ry1, rx0, rx1),
    lead=slices)``: `regions` the fine inputs cut to the region (all lead steps of the chunk), `own` the
    chunk's own pixels relative to the region, `region` the region in fine positions of the whole array,
    `lead` the chunk's slices along the lead axes; it returns one array per output, shaped
    (*extra, *lead chunk, own rows, own columns). The halo comes from the neighbouring chunks as slices
    (one small task each), so only strips of them travel to the tile's worker.
    """
    first = fine[0]
    *lead_chunks, y_chunks, x_chunks = first.chunks
    for other in fine[1:]:
        if other.chunks != first.chunks:
            raise ValueError("the fine inputs of tile_map must have identical chunks")
    bounds = [np.cumsum((0, *c)) for c in first.chunks]
    token = tokenize(func, [a.name for a in fine], None if coarse is None else coarse.name, spans, outputs,
                     tokenize(shared))
    task_name = f"{name}-{token}"
    halo_name = f"{name}-halo-{token}"
    shared = _shared(shared)
    dsk: dict = {}
    if _is_future(shared):
        shared_ref = shared  # the scheduler replaces it by its key
    else:
        shared_ref = f"{name}-shared-{token}"
        dsk[shared_ref] = shared
    y_spans, x_spans = spans

    def blocks(axis_bounds, lo, hi):
        return [b for b in range(len(axis_bounds) - 1) if axis_bounds[b] < hi and axis_bounds[b + 1] > lo]

    for index in product(*(range(len(c)) for c in first.chunks)):
        *lead, i, j = index
        ry0, ry1 = y_spans[i]
        rx0, rx1 = x_spans[j]
        ys, xs = blocks(bounds[-2], ry0, ry1), blocks(bounds[-1], rx0, rx1)
        fine_parts = []
        for k, a in enumerate(fine):
            rows = []
            for bi in ys:
                row = []
                for bj in xs:
                    (by0, by1), (bx0, bx1) = bounds[-2][bi : bi + 2], bounds[-1][bj : bj + 2]
                    part = (a.name, *lead, bi, bj)
                    if not (ry0 <= by0 and by1 <= ry1 and rx0 <= bx0 and bx1 <= rx1):  # a strip of it
                        cut = (Ellipsis, slice(max(ry0, by0) - by0, min(ry1, by1) - by0),
                               slice(max(rx0, bx0) - bx0, min(rx1, bx1) - bx0))
                        dsk[(halo_name, k, *index, bi, bj)] = (operator.getitem, part, cut)
                        part = (halo_name, k, *index, bi, bj)
                    row.append(part)
                rows.append(row)
            fine_parts.append(rows)
        static = {
            "own": (int(bounds[-2][i] - ry0), int(bounds[-2][i + 1] - ry0),
                    int(bounds[-1][j] - rx0), int(bounds[-1][j + 1] - rx0)),
            "region": (ry0, ry1, rx0, rx1),
            "lead": tuple(slice(int(bounds[a][k]), int(bounds[a][k + 1])) for a, k in enumerate(lead)),
        }
        coarse_key = None if coarse is None else (coarse.name, *lead, 0, 0)
        dsk[(task_name, *index)] = (_run_tile, func, fine_parts, coarse_key, shared_ref, static)
    dependencies = [*fine, *([] if coarse is None else [coarse])]
    graph = HighLevelGraph.from_collections(task_name, dsk, dependencies=dependencies)
    results = []
    for k, (dtype, extra) in enumerate(outputs):
        out_name = f"{name}-out{k}-{token}"
        layer = {
            (out_name, *(0,) * len(extra), *index): (operator.getitem, (task_name, *index), k)
            for index in product(*(range(len(c)) for c in first.chunks))
        }
        out_graph = HighLevelGraph.from_collections(out_name, layer, dependencies=[_Layer(graph, task_name)])
        chunks = (*((e,) for e in extra), *lead_chunks, y_chunks, x_chunks)
        results.append(da.Array(out_graph, out_name, chunks=chunks, dtype=dtype))
    return results


class _Layer:
    """The task layer as a dask collection, for HighLevelGraph.from_collections."""

    def __init__(self, graph: HighLevelGraph, name: str):
        self.graph, self.name = graph, name

    def __dask_graph__(self):
        return self.graph

    def __dask_layers__(self):
        return (self.name,)


def as_dask(array, chunks) -> da.Array:
    """`array` (numpy or dask) as a dask array with `chunks`."""
    if isinstance(array, da.Array):
        return array if array.chunks == tuple(chunks) else array.rechunk(chunks)
    return da.from_array(np.asarray(array), chunks=chunks)

