"""EASE-Grid 2.0 global grids, 36 km-aligned regional windows and the lookup tables between grids.

Exact parameters from NSIDC's gpd files (input-formats.md §4): EPSG:6933, outer upper-left corner
(x0, y0) = (-W·s/2, H·s/2) of the 36 km grid, every other grid nested by an integer division of the
36 km cell. Cell (r, c) has its centre at (x0 + (c + 0.5)·s, y0 − (r + 0.5)·s).

EASE-Grid 2.0 is cylindrical: a row depends on latitude only and a column on longitude only, so every
lookup table to or from a lat/lon grid is a pair of 1-D tables (rows, columns), never a 2-D search.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from pyproj import Transformer

EPSG = 6933
CRS_WKT_NAME = "WGS 84 / NSIDC EASE-Grid 2.0 Global"
M36_CELL_SIZE = 36032.220840584
M36_SHAPE = (406, 964)
# Subdivisions of the 36 km cell: M09 = 36/4, M03 = 36/12, M01 = 36/36, M400 = 36/90, M200 = 36/180.
# M200 is not a product grid: it is the common refinement of M400 (2×2) and M01 (5×5) that the
# synthetic nature run uses so that both truths are exact block means of one field.
SUBDIVISIONS = {"M36": 1, "M09": 4, "M03": 12, "M01": 36, "M400": 90, "M200": 180}

_TO_LONLAT = Transformer.from_crs(EPSG, 4326, always_xy=True)
_FROM_LONLAT = Transformer.from_crs(4326, EPSG, always_xy=True)


@dataclass(frozen=True)
class EASE2Grid:
    """One global EASE-Grid 2.0 ("M") grid."""

    name: str
    subdivision: int

    @property
    def cell_size(self) -> float:
        return M36_CELL_SIZE / self.subdivision

    @property
    def shape(self) -> tuple[int, int]:
        return (M36_SHAPE[0] * self.subdivision, M36_SHAPE[1] * self.subdivision)

    @property
    def x0(self) -> float:
        return -M36_SHAPE[1] * M36_CELL_SIZE / 2

    @property
    def y0(self) -> float:
        return M36_SHAPE[0] * M36_CELL_SIZE / 2

    def x(self, col):
        """Cell-centre x (m) of column(s) `col`."""
        return self.x0 + (np.asarray(col, dtype=np.float64) + 0.5) * self.cell_size

    def y(self, row):
        """Cell-centre y (m) of row(s) `row`."""
        return self.y0 - (np.asarray(row, dtype=np.float64) + 0.5) * self.cell_size

    def xy(self, row, col):
        """Cell-centre (x, y) in metres, EPSG:6933."""
        return self.x(col), self.y(row)

    def lonlat(self, row, col):
        """Cell-centre (longitude, latitude) in degrees."""
        x, y = np.broadcast_arrays(*self.xy(row, col))
        return _TO_LONLAT.transform(x, y)

    def col_of_x(self, x):
        return np.floor((np.asarray(x, dtype=np.float64) - self.x0) / self.cell_size).astype(np.int64)

    def row_of_y(self, y):
        return np.floor((self.y0 - np.asarray(y, dtype=np.float64)) / self.cell_size).astype(np.int64)

    def rowcol(self, lon, lat):
        """(row, col) of the cell holding (lon, lat); raises for points outside the grid."""
        x, y = _FROM_LONLAT.transform(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64))
        row, col = self.row_of_y(y), self.col_of_x(x)
        outside = (row < 0) | (row >= self.shape[0]) | (col < 0) | (col >= self.shape[1]) | ~np.isfinite(y)
        if np.any(outside):
            raise ValueError(f"{np.count_nonzero(outside)} point(s) fall outside the {self.name} grid")
        return row, col


GRIDS = {name: EASE2Grid(name, n) for name, n in SUBDIVISIONS.items()}


def ease2_grid(name: str) -> EASE2Grid:
    """The global EASE-Grid 2.0 called `name` (M36, M09, M03, M01, M400; M200 for the nature run)."""
    try:
        return GRIDS[name]
    except KeyError:
        raise ValueError(f"unknown EASE-Grid 2.0 grid {name!r}; known: {', '.join(GRIDS)}") from None


@dataclass(frozen=True)
class Region:
    """A rectangle of whole 36 km cells, so that every nested grid shares its edges."""

    name: str
    row0: int
    col0: int
    nrows: int
    ncols: int

    def window(self, grid_name: str) -> Window:
        n = ease2_grid(grid_name).subdivision
        return Window(grid_name, self.row0 * n, self.col0 * n, self.nrows * n, self.ncols * n)

    @property
    def bounds_lonlat(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) of the outer cell edges, degrees."""
        return self.window("M36").bounds_lonlat


@dataclass(frozen=True)
class Window:
    """A rectangle of cells of one grid: rows row0…row0+nrows−1, columns col0…col0+ncols−1."""

    grid_name: str
    row0: int
    col0: int
    nrows: int
    ncols: int

    @property
    def grid(self) -> EASE2Grid:
        return ease2_grid(self.grid_name)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.nrows, self.ncols)

    @property
    def rows(self) -> np.ndarray:
        return np.arange(self.row0, self.row0 + self.nrows)

    @property
    def cols(self) -> np.ndarray:
        return np.arange(self.col0, self.col0 + self.ncols)

    @cached_property
    def x(self) -> np.ndarray:
        """Cell-centre x (m) of each column: the cube's 1-D `x` coordinate."""
        return self.grid.x(self.cols)

    @cached_property
    def y(self) -> np.ndarray:
        """Cell-centre y (m) of each row, north to south: the cube's 1-D `y` coordinate."""
        return self.grid.y(self.rows)

    @cached_property
    def lon(self) -> np.ndarray:
        """Cell-centre longitude of each column (EASE2 columns are meridians)."""
        return self.grid.lonlat(self.row0, self.cols)[0]

    @cached_property
    def lat(self) -> np.ndarray:
        """Cell-centre latitude of each row (EASE2 rows are parallels)."""
        return self.grid.lonlat(self.rows, self.col0)[1]

    @property
    def slices(self) -> tuple[slice, slice]:
        """Index of this window in a global array of its grid."""
        return slice(self.row0, self.row0 + self.nrows), slice(self.col0, self.col0 + self.ncols)

    @property
    def bounds_xy(self) -> tuple[float, float, float, float]:
        s, g = self.grid.cell_size, self.grid
        left, top = g.x0 + self.col0 * s, g.y0 - self.row0 * s
        return left, top - self.nrows * s, left + self.ncols * s, top

    @property
    def bounds_lonlat(self) -> tuple[float, float, float, float]:
        left, bottom, right, top = self.bounds_xy
        (west, east), (south, north) = _TO_LONLAT.transform([left, right], [bottom, top])
        return float(west), float(south), float(east), float(north)

    @classmethod
    def covering(cls, grid_name: str, rows, cols) -> Window:
        """The smallest window of `grid_name` holding every (row, col) given."""
        rows, cols = np.asarray(rows), np.asarray(cols)
        return cls(grid_name, int(rows.min()), int(cols.min()), int(rows.max() - rows.min() + 1),
                   int(cols.max() - cols.min() + 1))

    def contains(self, rows, cols) -> np.ndarray:
        rows, cols = np.asarray(rows), np.asarray(cols)
        return (
            (rows >= self.row0)
            & (rows < self.row0 + self.nrows)
            & (cols >= self.col0)
            & (cols < self.col0 + self.ncols)
        )


def region_from_bbox(west: float, south: float, east: float, north: float, name: str = "bbox") -> Region:
    """The smallest rectangle of whole 36 km cells that covers the lon/lat box."""
    if not (west < east and south < north):
        raise ValueError(
            f"bounding box must have west < east and south < north, got {(west, south, east, north)}"
        )
    m36 = ease2_grid("M36")
    rows, cols = m36.rowcol([west, east], [north, south])
    return Region(name, int(rows[0]), int(cols[0]), int(rows[1] - rows[0] + 1), int(cols[1] - cols[0] + 1))


REGIONS = {
    # A 40×40-cell (9 km) test window over central Oklahoma (the SMAP validation-rich Little Washita /
    # Fort Cobb area lies inside it).
    "oklahoma": Region("oklahoma", 80, 216, 10, 10),
    "conus": region_from_bbox(-125.0, 24.0, -66.5, 49.5, name="conus"),
}


def region(name_or_bbox: str) -> Region:
    """A named region, or one from a 'W,S,E,N' bounding box string."""
    if name_or_bbox in REGIONS:
        return REGIONS[name_or_bbox]
    parts = name_or_bbox.split(",")
    if len(parts) > 1:
        try:
            west, south, east, north = (float(p) for p in parts)
        except ValueError:
            raise ValueError(f"bounding box {name_or_bbox!r} is not four numbers W,S,E,N (degrees)") from None
        return region_from_bbox(west, south, east, north)
    raise ValueError(f"unknown region {name_or_bbox!r}; give one of {', '.join(REGIONS)} or 'W,S,E,N'")


def local_solar_dates(times, lon: float) -> np.ndarray:
    """The local solar date (as datetime64[ns] midnights) at longitude `lon` of UTC instants `times`:
    UTC + lon/15 hours."""
    offset = np.timedelta64(round(lon / 15 * 3600e9), "ns")
    return (np.asarray(times, "datetime64[ns]") + offset).astype("datetime64[D]").astype("datetime64[ns]")


def parent_index(fine: Window, coarse: Window) -> tuple[np.ndarray, np.ndarray]:
    """For each fine row and column, the index (within `coarse`) of the coarse cell holding its centre.

    Works for any pair of EASE2 grids, nested by a whole factor (M01 in M09: 9×) or not (M400 in M09:
    22.5×). Fine cells whose centre lies outside `coarse` get −1. At 22.5× every other 9 km edge runs
    through the centres of a column/row of 400 m cells; those go to the cell the floor of their
    coordinate picks, so each 400 m cell belongs to exactly one 9 km cell.
    """
    rows = coarse.grid.row_of_y(fine.y) - coarse.row0
    cols = coarse.grid.col_of_x(fine.x) - coarse.col0
    rows[(rows < 0) | (rows >= coarse.nrows)] = -1
    cols[(cols < 0) | (cols >= coarse.ncols)] = -1
    return rows, cols


def block_mean(values: np.ndarray, factor: int) -> np.ndarray:
    """Mean over factor×factor blocks of the last two axes (exactly nested grids only), NaN-aware."""
    *lead, ny, nx = values.shape
    if ny % factor or nx % factor:
        raise ValueError(f"shape {(ny, nx)} is not a multiple of the block factor {factor}")
    blocks = values.reshape(*lead, ny // factor, factor, nx // factor, factor)
    with np.errstate(invalid="ignore"):
        return np.nanmean(blocks, axis=(-3, -1)) if np.isnan(values).any() else blocks.mean(axis=(-3, -1))


# --- regular lat/lon grids (GLDAS 0.25°, LTDR 0.05°) --------------------------------------------------


@dataclass(frozen=True)
class LatLonGrid:
    """A regular lat/lon grid given by its first cell centres and step (lat ascending or descending)."""

    name: str
    lat_first: float
    lon_first: float
    step: float
    shape: tuple[int, int]

    @property
    def lat(self) -> np.ndarray:
        return self.lat_first + self.lat_step_sign * self.step * np.arange(self.shape[0])

    @property
    def lon(self) -> np.ndarray:
        return self.lon_first + self.step * np.arange(self.shape[1])

    @property
    def lat_step_sign(self) -> int:
        return 1 if self.lat_first < 0 else -1

    def row_of_lat(self, lat) -> np.ndarray:
        offset = (np.asarray(lat, dtype=np.float64) - self.lat_first) * self.lat_step_sign
        return np.floor(offset / self.step + 0.5).astype(np.int64)

    def col_of_lon(self, lon) -> np.ndarray:
        return np.floor((np.asarray(lon, dtype=np.float64) - self.lon_first) / self.step + 0.5).astype(
            np.int64
        )

    def index(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Row table (one per window row) and column table (one per window column) of the lat/lon cell
        that holds each EASE2 cell centre."""
        rows, cols = self.row_of_lat(window.lat), self.col_of_lon(window.lon)
        if rows.min() < 0 or rows.max() >= self.shape[0] or cols.min() < 0 or cols.max() >= self.shape[1]:
            raise ValueError(f"window {window} reaches outside the {self.name} grid")
        return rows, cols

    def window_slices(self, window: Window, margin: int = 0) -> tuple[slice, slice]:
        """The block of this grid that covers `window` (plus `margin` cells on each side)."""
        rows, cols = self.index(window)
        return (
            slice(max(rows.min() - margin, 0), min(rows.max() + margin + 1, self.shape[0])),
            slice(max(cols.min() - margin, 0), min(cols.max() + margin + 1, self.shape[1])),
        )


GLDAS_GRID = LatLonGrid("GLDAS 0.25°", lat_first=-59.875, lon_first=-179.875, step=0.25, shape=(600, 1440))
LTDR_GRID = LatLonGrid("LTDR 0.05°", lat_first=89.975, lon_first=-179.975, step=0.05, shape=(3600, 7200))


# --- VIIRS / MODIS sinusoidal tiles --------------------------------------------------------------------

SINUSOIDAL_RADIUS = 6371007.181
SINUSOIDAL_TILE_SIZE = 2 * 20015109.354 / 36  # the MODIS/VIIRS grid uses the rounded half-circumference
SINUSOIDAL_X0, SINUSOIDAL_Y0 = -20015109.354, 10007554.677
SINUSOIDAL_PROJ = f"+proj=sinu +lon_0=0 +x_0=0 +y_0=0 +R={SINUSOIDAL_RADIUS} +units=m +no_defs"
_EASE_TO_SINU = Transformer.from_crs(EPSG, SINUSOIDAL_PROJ, always_xy=True)


@dataclass(frozen=True)
class SinusoidalTile:
    """Tile (h, v) of the MODIS/VIIRS sinusoidal grid, `pixels` × `pixels` cells."""

    h: int
    v: int
    pixels: int

    @property
    def pixel_size(self) -> float:
        return SINUSOIDAL_TILE_SIZE / self.pixels

    @property
    def upper_left(self) -> tuple[float, float]:
        return SINUSOIDAL_X0 + self.h * SINUSOIDAL_TILE_SIZE, SINUSOIDAL_Y0 - self.v * SINUSOIDAL_TILE_SIZE

    @property
    def lower_right(self) -> tuple[float, float]:
        left, top = self.upper_left
        return left + SINUSOIDAL_TILE_SIZE, top - SINUSOIDAL_TILE_SIZE

    @property
    def name(self) -> str:
        return f"h{self.h:02d}v{self.v:02d}"


def _sinusoidal_pixels(grid: EASE2Grid, rows, cols, pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Global row and column (from the sinusoidal grid's upper left, `pixels` per tile side) of the
    sinusoidal pixel under the centre of each EASE2 cell (rows, cols)."""
    sx, sy = _EASE_TO_SINU.transform(*np.broadcast_arrays(grid.x(cols), grid.y(rows)))
    pixel = SINUSOIDAL_TILE_SIZE / pixels
    return (np.floor((SINUSOIDAL_Y0 - sy) / pixel).astype(np.int64),
            np.floor((sx - SINUSOIDAL_X0) / pixel).astype(np.int64))


def sinusoidal_lookup(window: Window, pixels: int) -> dict[str, np.ndarray]:
    """Nearest sinusoidal pixel of every cell of an EASE2 window.

    Returns 2-D arrays `h`, `v` (tile numbers) and `i`, `j` (row, column within the tile) with the
    window's shape: the table that mosaics tiles onto EASE2 by gathering (not a reshape).
    """
    grow, gcol = _sinusoidal_pixels(window.grid, window.rows[:, None], window.cols[None, :], pixels)
    return {"h": gcol // pixels, "v": grow // pixels, "i": grow % pixels, "j": gcol % pixels}


def lookup_blocks(lut: dict[str, np.ndarray]) -> dict[tuple[int, int], tuple[slice, slice]]:
    """(h, v) → the min–max rows and columns of tile (h, v) that a `sinusoidal_lookup` takes pixels from,
    cell by cell: the reference that `sinusoidal_blocks` reproduces without the lookup."""
    keys = lut["h"] * 64 + lut["v"]  # v < 18
    blocks = {}
    for key in np.unique(keys).tolist():
        where = keys == key
        i, j = lut["i"][where], lut["j"][where]
        blocks[(key // 64, key % 64)] = (slice(int(i.min()), int(i.max()) + 1),
                                         slice(int(j.min()), int(j.max()) + 1))
    return blocks


def _first_reaching(grid: EASE2Grid, rows: np.ndarray, lo: int, hi: int, bound: int, pixels: int):
    """Rows whose sinusoidal column is < `bound` at EASE2 column `lo` and ≥ `bound` at `hi`: the
    sinusoidal columns of the last cell before `bound` and of the first at or past it (bisection, all
    rows at once)."""
    lo, hi = np.full(rows.shape, lo), np.full(rows.shape, hi)
    while np.any(hi - lo > 1):
        mid = (lo + hi) // 2
        reached = _sinusoidal_pixels(grid, rows, mid, pixels)[1] >= bound
        lo, hi = np.where(reached, lo, mid), np.where(reached, mid, hi)
    return _sinusoidal_pixels(grid, rows, lo, pixels)[1], _sinusoidal_pixels(grid, rows, hi, pixels)[1]


def sinusoidal_blocks(window: Window, pixels: int) -> dict[tuple[int, int], tuple[slice, slice]]:
    """(h, v) → the rows and columns of tile (h, v) that `sinusoidal_lookup(window, pixels)` takes pixels
    from (min to max), without the lookup.

    An EASE2 row is a parallel: its cells share one sinusoidal row, and their sinusoidal column grows
    with the EASE2 column. So each row's first and last cells bound its span, and where a span crosses a
    tile border, bisection finds the cells either side: O(rows · log columns) transforms instead of one
    per cell (a global 400 m window has 3.2 G cells).
    """
    grid, rows = window.grid, window.rows
    first, last = window.col0, window.col0 + window.ncols - 1
    grow, g_first = _sinusoidal_pixels(grid, rows, first, pixels)
    g_last = _sinusoidal_pixels(grid, rows, last, pixels)[1]
    v_of_row, i_of_row = np.divmod(grow, pixels)
    blocks = {}
    for h in range(int(g_first.min()) // pixels, int(g_last.max()) // pixels + 1):
        left, right = h * pixels, (h + 1) * pixels  # the tile's sinusoidal columns [left, right)
        spans = np.flatnonzero((g_first < right) & (g_last >= left))
        if spans.size == 0:
            continue
        start, stop = g_first[spans], g_last[spans]
        enters = start < left  # rows entering the tile across its left border
        if enters.any():
            start[enters] = _first_reaching(grid, rows[spans[enters]], first, last, left, pixels)[1]
        leaves = stop >= right
        if leaves.any():
            stop[leaves] = _first_reaching(grid, rows[spans[leaves]], first, last, right, pixels)[0]
        for v in np.unique(v_of_row[spans]).tolist():
            in_v = v_of_row[spans] == v
            i = i_of_row[spans[in_v]]
            blocks[(h, v)] = (slice(int(i.min()), int(i.max()) + 1),
                              slice(int(start[in_v].min()) - left, int(stop[in_v].max()) - left + 1))
    return blocks


def sinusoidal_tiles(window: Window, pixels: int) -> list[SinusoidalTile]:
    """The tiles that an EASE2 window touches."""
    return [SinusoidalTile(h, v, pixels) for h, v in sorted(sinusoidal_blocks(window, pixels))]
