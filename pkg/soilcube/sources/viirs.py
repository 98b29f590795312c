"""VIIRS sinusoidal tile products (HDF-EOS5): VNP21A1D/N daily 1 km LST and VNP15A2H 8-day 500 m LAI.

Tiles are mosaicked straight onto an EASE2 window by nearest-pixel gathering (grids.sinusoidal_lookup):
each output cell takes the sinusoidal pixel under its centre, from whichever tile holds it. The mosaic is
chunked in space (`ViirsReader.chunk` cells a side): each chunk's task reads only the tiles its sub-window
touches, and only the block of each that it takes pixels from (`grids.sinusoidal_blocks`: from each row's
ends, no per-cell lookup on the client), and builds the sub-window's lookup itself.
"""

from __future__ import annotations

import re
from dataclasses import replace
from fnmatch import fnmatch

import dask
import dask.array as da
import numpy as np
import xarray as xr
from pyproj import Transformer

from soilcube.grids import (
    EPSG,
    SINUSOIDAL_PROJ,
    SinusoidalTile,
    Window,
    ease2_grid,
    sinusoidal_blocks,
    sinusoidal_lookup,
)
from soilcube.sources.base import (
    Granule,
    Reader,
    array_shapes,
    chunked,
    decode_variable,
    window_coords,
    without_strings,
)
from soilcube.sources.references import open_references

_SINUSOIDAL_TO_LONLAT = Transformer.from_crs(SINUSOIDAL_PROJ, 4326, always_xy=True)
_LONLAT_TO_EASE = Transformer.from_crs(4326, EPSG, always_xy=True)
TILE_NAME = re.compile(r"^h(\d{2})v(\d{2})$")


def _tile(granule: Granule, pixels: int) -> SinusoidalTile:
    h, v = TILE_NAME.match(granule.name.tile).groups()
    return SinusoidalTile(int(h), int(v), pixels)


def tiles_window(tiles: list[SinusoidalTile], grid_name: str) -> Window:
    """The smallest window of an EASE2 grid that covers the tiles (their edges sampled every 1/20 tile)."""
    grid = ease2_grid(grid_name)
    xs, ys = [], []
    for tile in tiles:
        (left, top), (right, bottom) = tile.upper_left, tile.lower_right
        sx, sy = np.meshgrid(np.linspace(left, right, 21), np.linspace(top, bottom, 21))
        lon, lat = _SINUSOIDAL_TO_LONLAT.transform(sx, sy)
        on_earth = np.isfinite(lon) & (np.abs(lon) <= 180)  # tile corners can lie outside the sinusoid
        x, y = _LONLAT_TO_EASE.transform(lon[on_earth], lat[on_earth])
        xs.append(x)
        ys.append(y)
    rows = np.clip(grid.row_of_y(np.concatenate(ys)), 0, grid.shape[0] - 1)
    cols = np.clip(grid.col_of_x(np.concatenate(xs)), 0, grid.shape[1] - 1)
    return Window.covering(grid_name, rows, cols)


def _compact_lookup(window: Window, pixels: int) -> dict[str, np.ndarray]:
    """`sinusoidal_lookup` as int16 (tile numbers < 36, pixels < 2400); anything else (cells off the
    sinusoid) → −1, which matches no tile."""
    lut = sinusoidal_lookup(window, pixels)
    return {k: np.where((v >= 0) & (v < 2**15), v, -1).astype(np.int16) for k, v in lut.items()}


def _parts(window: Window, chunk: int) -> list[list[Window]]:
    """The window cut into sub-windows of `chunk`² cells (smaller at the south and east edges), by rows."""
    return [[Window(window.grid_name, window.row0 + r, window.col0 + c, min(chunk, window.nrows - r),
                    min(chunk, window.ncols - c)) for c in range(0, window.ncols, chunk)]
            for r in range(0, window.nrows, chunk)]


def _gather(pieces: list, window: Window, pixels: int, shape: tuple[int, ...], dtype, missing) -> np.ndarray:
    """One chunk: out[t, layer][cells of tile (h, v)] = block[i − i0, j − j0] for every piece
    (t, layer, h, v, i0, j0, block) — `shape` is (times, layers…, rows, columns) of the sub-window; cells no
    tile covers keep `missing`. The lookup of the sub-window is built here, in the task, so the graph
    carries no index arrays."""
    lut = _compact_lookup(window, pixels)
    out = np.full(shape, missing, dtype=dtype)
    for t, layer, h, v, i0, j0, block in pieces:
        where = (lut["h"] == h) & (lut["v"] == v)
        out[(t, layer)[: len(shape) - 2]][where] = block[lut["i"][where] - i0, lut["j"][where] - j0]
    return out


class ViirsReader(Reader):
    pixels: int  # per tile side
    main: str  # the variable that must be there
    layers: dict[str | None, str | None]  # file-name variant → layer label (None: no layer dim)
    layer_dim = "day_night"
    version_pattern = re.compile(r"\.(\d{3})\.(\d{13})\.h5$")  # collection and production time
    # Spatial chunk side (cells of the window): the cubes' shard side (store.CubeLayout.spatial_shard), the
    # tile that runs.downscale_window processes. One task per chunk and variable, all time steps and layers.
    chunk = 720

    @property
    def required(self):
        return {f"HDFEOS/GRIDS/*/Data Fields/{self.main}": (self.pixels, self.pixels)}

    def dims_of(self, path, shape, dims):
        return ("row", "col") if "/Data Fields/" in path and len(shape) == 2 else dims

    def _data_fields(self, granule: Granule) -> str:
        pattern = next(iter(self.required))
        return next(p for p in array_shapes(granule.refs) if fnmatch(p, pattern)).rpartition("/")[0]

    def open(self, granules, storage_options, window, variables):
        window = window or tiles_window([_tile(g, self.pixels) for g in granules], self.grid_name)
        # (time, layer) → (h, v) → (url, dataset)
        slots: dict[tuple, dict[tuple[int, int], tuple[str, xr.Dataset]]] = {}
        for g in granules:
            group = self._data_fields(g)
            ds = without_strings(open_references(g.refs, storage_options, group=group, variables=variables))
            tile = _tile(g, self.pixels)
            slots.setdefault((g.time, self.layers[g.name.variant]), {})[(tile.h, tile.v)] = (g.url, ds)
        _, first = next(iter(next(iter(slots.values())).values()))
        names = [k for k, v in first.data_vars.items() if v.dims == ("row", "col")
                 and (not variables or k in variables)]
        # dtype and attributes of each decoded variable, from the first granule's metadata (not its data: a
        # damaged block outside the window must not fail the read)
        templates = {}
        for name in names:
            attrs = first[name].attrs
            pixel = xr.DataArray(np.zeros((1, 1), first[name].dtype), dims=("row", "col"), attrs=attrs)
            templates[name] = decode_variable(pixel, attrs.get("_FillValue"))
        times = sorted({time for time, _ in slots})
        labels = list(self.layers.values())
        parts = _parts(window, self.chunk)
        touched = [[sinusoidal_blocks(part, self.pixels) for part in row] for row in parts]
        dims = ("time", self.layer_dim, "y", "x") if len(labels) > 1 else ("time", "y", "x")
        out = xr.Dataset({
            name: (dims, self._mosaic(slots, times, labels, name, templates[name], parts, touched),
                   templates[name].attrs)
            for name in names
        }, coords={"time": np.array(times, dtype="datetime64[ns]")})
        if len(labels) > 1:
            out = out.assign_coords({self.layer_dim: labels})
        return out.assign_coords(window_coords(window))

    def _mosaic(self, slots, times: list, labels: list, name: str, template: xr.DataArray,
                parts: list[list[Window]], touched: list[list[dict]]) -> da.Array:
        """One variable: a dask array (time, layer…, y, x) with one chunk per sub-window of `parts`, whose
        task reads only the tiles, and the block of each, that its sub-window touches."""
        # Cells without a tile: NaN, or for flags the all-ones value VIIRS uses as fill (255 for the LAI QC).
        # Not the flag's `_FillValue` from the references: where a file declares none, kerchunk reports
        # HDF5's default 0, which in VIIRS QC means "good quality".
        missing = np.iinfo(template.dtype).max if template.dtype.kind in "iu" else np.nan
        lead = (len(times), len(labels)) if len(labels) > 1 else (len(times),)
        blocks = []
        for row_parts, row_touched in zip(parts, touched, strict=True):
            row = []
            for part, tiles in zip(row_parts, row_touched, strict=True):
                pieces = []
                for t, time in enumerate(times):
                    for k, layer in enumerate(labels):
                        for (h, v), (url, ds) in slots.get((time, layer), {}).items():
                            if (h, v) not in tiles:
                                continue
                            rows, cols = tiles[(h, v)]
                            block = chunked(ds[name].isel(row=rows, col=cols), {}, url, name, rows, cols)
                            block = decode_variable(block, ds[name].attrs.get("_FillValue"))
                            pieces.append((t, k, h, v, rows.start, cols.start, block.data))
                shape = lead + part.shape
                # a fresh Window: `part` caches its x/y coordinates, which the graph need not carry
                cells = dask.delayed(_gather)(pieces, replace(part), self.pixels, shape, template.dtype,
                                              missing)
                row.append(da.from_delayed(cells, shape, dtype=template.dtype))
            blocks.append(row)
        return da.block(blocks)


class ViirsLst(ViirsReader):
    """VNP21A1D/N: LST_1KM (uint16 × 0.02 K, fill 0) → float K; QC stays uint16. Day and night granules
    of one date share a time step along `day_night` = ["day", "night"]."""

    product = "viirs_lst"
    pixels = 1200
    main = "LST_1KM"
    layers = {"D": "day", "N": "night"}


class ViirsLai(ViirsReader):
    """VNP15A2H: Lai (uint8 × 0.1; 249–255 are non-vegetated or fill classes, outside valid_range) → float;
    FparLai_QC / FparExtra_QC stay uint8. Time = the first day of the 8-day period."""

    product = "viirs_lai"
    pixels = 2400
    main = "Lai"
    layers = {None: None}
