"""EASE-Grid 2.0 definitions, regional windows and lookup tables between grids."""

import h5py
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soilcube.grids import (
    GLDAS_GRID,
    GRIDS,
    LTDR_GRID,
    REGIONS,
    SinusoidalTile,
    Window,
    block_mean,
    ease2_grid,
    local_solar_dates,
    lookup_blocks,
    parent_index,
    region,
    sinusoidal_blocks,
    sinusoidal_lookup,
    sinusoidal_tiles,
)

PRODUCT_GRIDS = ["M36", "M09", "M03", "M01", "M400"]


@pytest.mark.parametrize(
    ("name", "cell_size", "shape"),
    [
        ("M36", 36032.220840584, (406, 964)),
        ("M09", 9008.055210146, (1624, 3856)),
        ("M03", 3002.6850700487, (4872, 11568)),
        ("M01", 1000.89502334956, (14616, 34704)),
        ("M400", 400.358009339822, (36540, 86760)),
    ],
)
def test_grid_parameters_match_the_nsidc_gpd_files(name, cell_size, shape):
    grid = ease2_grid(name)
    assert grid.shape == shape
    assert grid.cell_size == pytest.approx(cell_size, abs=1e-9)
    assert grid.x0 == pytest.approx(-17367530.4451615, abs=1e-6)
    assert grid.y0 == pytest.approx(7314540.8306386, abs=1e-6)
    # Outer edges at ±180° and ±85.0445664°.
    lon, lat = grid.lonlat(0, 0)
    assert lon - grid.cell_size / 2 / 111320 / np.cos(np.radians(30)) == pytest.approx(-180, abs=1e-3)
    edge_lon, edge_lat = ease2_grid(name).lonlat(-0.5, -0.5)
    assert edge_lat == pytest.approx(85.0445664, abs=1e-6)
    assert edge_lon == pytest.approx(-180, abs=1e-9)


def test_unknown_grid_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown EASE-Grid 2.0 grid 'M05'"):
        ease2_grid("M05")


@pytest.mark.parametrize(
    "group, suffix", [("Soil_Moisture_Retrieval_Data_AM", ""), ("Soil_Moisture_Retrieval_Data_PM", "_pm")]
)
def test_m36_cell_centres_match_the_real_spl3smp_file(real_data, group, suffix):
    with h5py.File(real_data / "smap" / "SC_SPL3SMP_009_prefetch.nc4") as f:
        lat = f[f"{group}/latitude{suffix}"][...]
        lon = f[f"{group}/longitude{suffix}"][...]
    rows, cols = np.nonzero((lat != -9999) & (lon != -9999))
    assert rows.size > 150_000
    grid_lon, grid_lat = ease2_grid("M36").lonlat(rows, cols)
    assert np.max(np.abs(grid_lat - lat[rows, cols])) < 1e-4
    assert np.max(np.abs(grid_lon - lon[rows, cols])) < 1e-4


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(PRODUCT_GRIDS), st.floats(0, 1, exclude_max=True), st.floats(0, 1, exclude_max=True))
def test_rowcol_inverts_lonlat_on_every_grid(name, row_fraction, col_fraction):
    grid = ease2_grid(name)
    row, col = int(row_fraction * grid.shape[0]), int(col_fraction * grid.shape[1])
    lon, lat = grid.lonlat(row, col)
    assert tuple(map(int, grid.rowcol(lon, lat))) == (row, col)


def test_rowcol_is_vectorised_and_rejects_points_off_the_grid():
    grid = ease2_grid("M09")
    rows, cols = np.array([0, 10, 1623]), np.array([0, 3000, 3855])
    np.testing.assert_array_equal(np.stack(grid.rowcol(*grid.lonlat(rows, cols))), [rows, cols])
    with pytest.raises(ValueError, match="outside the M09 grid"):
        grid.rowcol([0.0], [89.0])


@pytest.mark.parametrize("name", list(REGIONS))
def test_regions_are_36km_aligned_so_nested_windows_share_edges(name):
    reg = REGIONS[name]
    bounds = {g: np.array(reg.window(g).bounds_xy) for g in GRIDS}
    for g in GRIDS:
        np.testing.assert_allclose(bounds[g], bounds["M36"], atol=1e-6)


def test_oklahoma_is_a_40_by_40_window_at_9km():
    assert REGIONS["oklahoma"].window("M09").shape == (40, 40)
    west, south, east, north = REGIONS["oklahoma"].bounds_lonlat
    assert -100 < west < east < -95 and 33 < south < north < 38


def test_region_from_a_bounding_box_string_covers_it():
    reg = region("-98,35,-97,36")
    west, south, east, north = reg.bounds_lonlat
    assert west <= -98 and south <= 35 and east >= -97 and north >= 36
    with pytest.raises(ValueError, match="unknown region"):
        region("atlantis")


def test_m01_nests_exactly_nine_times_in_m09():
    reg = REGIONS["oklahoma"]
    rows, cols = parent_index(reg.window("M01"), reg.window("M09"))
    np.testing.assert_array_equal(rows, np.arange(360) // 9)
    np.testing.assert_array_equal(cols, np.arange(360) // 9)


def test_m400_in_m09_is_22_and_a_half_times_through_lookup_tables():
    reg = REGIONS["oklahoma"]
    fine, coarse = reg.window("M400"), reg.window("M09")
    rows, cols = parent_index(fine, coarse)
    counts = np.bincount(rows)
    assert set(counts) == {22, 23} and counts.sum() == 900
    # Each fine centre lies inside its parent cell (every other 9 km edge runs through 400 m centres).
    x_parent = coarse.x[cols]
    assert np.all(np.abs(fine.x - x_parent) <= coarse.grid.cell_size / 2 + 1e-6)


def test_block_mean_between_exactly_nested_grids():
    values = np.arange(36.0).reshape(6, 6)
    np.testing.assert_allclose(block_mean(values, 3), [[7, 10], [25, 28]])
    values[0, 0] = np.nan
    assert block_mean(values, 3)[0, 0] == pytest.approx(np.mean([1, 2, 6, 7, 8, 12, 13, 14]))
    with pytest.raises(ValueError, match="multiple"):
        block_mean(values, 4)


def test_gldas_lookup_tables_hold_each_ease2_centre():
    window = REGIONS["oklahoma"].window("M01")
    rows, cols = GLDAS_GRID.index(window)
    assert rows.shape == (360,) and cols.shape == (360,)
    assert np.all(np.abs(GLDAS_GRID.lat[rows] - window.lat) <= 0.125)
    assert np.all(np.abs(GLDAS_GRID.lon[cols] - window.lon) <= 0.125)
    assert np.all(np.diff(GLDAS_GRID.lat) > 0)  # GLDAS runs south to north
    lat_block, lon_block = GLDAS_GRID.window_slices(window)
    assert lat_block.start <= rows.min() and rows.max() < lat_block.stop


def test_ltdr_grid_runs_north_to_south():
    assert LTDR_GRID.lat[0] == pytest.approx(89.975) and LTDR_GRID.lat[-1] == pytest.approx(-89.975)
    # row 1099 spans 35.05 … 35.00° N, row 1100 35.00 … 34.95° N
    assert LTDR_GRID.row_of_lat(35.01) == 1099 and LTDR_GRID.row_of_lat(34.99) == 1100


def test_sinusoidal_tile_corners_match_the_published_h11v05():
    left, top = SinusoidalTile(11, 5, 1200).upper_left
    assert left == pytest.approx(-7783653.637667, abs=1e-3)
    assert top == pytest.approx(4447802.078667, abs=1e-3)
    assert SinusoidalTile(11, 5, 2400).pixel_size == pytest.approx(463.3127165279, abs=1e-6)
    assert SinusoidalTile(11, 5, 1200).pixel_size == pytest.approx(926.6254330558, abs=1e-6)


def test_sinusoidal_lookup_places_tiles_on_an_ease2_window():
    window = REGIONS["oklahoma"].window("M01")
    tiles = sinusoidal_tiles(window, 1200)
    assert [t.name for t in tiles] == ["h09v05", "h10v05"]
    lut = sinusoidal_lookup(window, 1200)
    assert lut["i"].min() >= 0 and lut["i"].max() < 1200 and lut["j"].max() < 1200
    # Longitude grows with the tile column along a row of the window.
    global_col = lut["h"][0] * 1200 + lut["j"][0]
    assert np.all(np.diff(global_col) >= 0)


@pytest.mark.parametrize("pixels", [1200, 2400])
def test_sinusoidal_lookup_is_the_closed_form_of_the_modland_grid(pixels):
    """The lookup against the sinusoidal projection written out (x = R·λ·cos φ, y = R·φ on the MODLAND
    sphere, tiles of 10° of the rounded half-circumference from the upper left): cell centres from the
    EASE2 grid, nothing else from the code under test."""
    radius, half_circumference = 6371007.181, 20015109.354  # MODLAND's published constants
    pixel = 2 * half_circumference / 36 / pixels
    window = REGIONS["oklahoma"].window("M01")
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, window.nrows, 300), rng.integers(0, window.ncols, 300)
    lon, lat = window.grid.lonlat(window.row0 + rows, window.col0 + cols)
    x = radius * np.radians(lon) * np.cos(np.radians(lat))
    y = radius * np.radians(lat)
    global_row = np.floor((half_circumference / 2 - y) / pixel).astype(int)
    global_col = np.floor((x + half_circumference) / pixel).astype(int)
    lut = sinusoidal_lookup(window, pixels)
    assert np.array_equal(lut["v"][rows, cols] * pixels + lut["i"][rows, cols], global_row)
    assert np.array_equal(lut["h"][rows, cols] * pixels + lut["j"][rows, cols], global_col)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["M36", "M09", "M01", "M400"]), st.sampled_from([1200, 2400]),
       st.floats(0, 1, exclude_max=True), st.floats(0, 1, exclude_max=True),
       st.integers(1, 300), st.integers(1, 300))
def test_sinusoidal_blocks_are_those_of_the_lookup(name, pixels, row_at, col_at, nrows, ncols):
    """The blocks each tile gives a window, from each row's ends and border bisection, are exactly the
    min–max rows and columns the per-cell lookup takes: anywhere on the globe (poles, equator, the
    antimeridian), windows within a tile or across several."""
    rows, cols = ease2_grid(name).shape
    nrows, ncols = min(nrows, rows), min(ncols, cols)
    window = Window(name, int(row_at * (rows - nrows + 1)), int(col_at * (cols - ncols + 1)), nrows, ncols)
    assert sinusoidal_blocks(window, pixels) == lookup_blocks(sinusoidal_lookup(window, pixels))


def test_sinusoidal_blocks_of_the_whole_globe():
    """Every tile of the globe, rows crossing many tile borders each."""
    window = Window("M36", 0, 0, *ease2_grid("M36").shape)
    blocks = sinusoidal_blocks(window, 1200)
    assert blocks == lookup_blocks(sinusoidal_lookup(window, 1200))
    assert len({key for key in blocks if 0 <= key[0] < 36}) > 300  # most of the grid's 460 tiles


@settings(max_examples=200, deadline=None)
@given(st.integers(1_420_070_400, 1_900_000_000), st.floats(-180, 180))
def test_local_solar_dates_are_utc_plus_lon_over_15_hours_floored_to_the_day(seconds, lon):
    utc = np.datetime64(seconds, "s")
    expected = (pd.Timestamp(utc) + pd.Timedelta(hours=lon / 15)).normalize().to_datetime64()
    assert local_solar_dates([utc], lon)[0] == expected
