"""Synthetic granule writers: the real layouts (check_layout.py), value round trips, atomic publication."""

import os
import subprocess
import sys
import uuid
import zlib
from datetime import datetime, timedelta
from pathlib import Path

import fsspec
import h5py
import netCDF4
import numpy as np
import pytest
import xarray as xr

from soilcube import granules
from soilcube.grids import GLDAS_GRID, LTDR_GRID, REGIONS, ease2_grid, sinusoidal_tiles
from soilcube.synth import writers

WINDOW = REGIONS["oklahoma"].window("M09")
M01 = REGIONS["oklahoma"].window("M01")
L2_START = datetime(2016, 7, 1, 11, 52, 3)
L4_CENTRE = datetime(2016, 7, 1, 13, 30)
GLDAS_TIME = datetime(2016, 7, 1, 21)
DAY = datetime(2016, 7, 3)
# Every dataset of /Soil_Moisture_Retrieval_Data in real v006 L2_E granules (input-formats.md §1).
L2_REAL_VARIABLES = """
    EASE_column_index EASE_row_index albedo albedo_option3 boresight_incidence bulk_density
    clay_fraction freeze_thaw_fraction grid_surface_status latitude latitude_centroid longitude
    longitude_centroid organic_content radar_water_body_fraction retrieval_qual_flag
    retrieval_qual_flag_option1 retrieval_qual_flag_option2 retrieval_qual_flag_option3
    roughness_coefficient roughness_coefficient_option3 sand_fraction soil_moisture
    soil_moisture_error soil_moisture_option1 soil_moisture_option2 soil_moisture_option3
    static_water_body_fraction surface_flag surface_temperature surface_water_fraction_mb_h
    surface_water_fraction_mb_v tb_3_corrected tb_4_corrected tb_h_corrected tb_h_uncorrected
    tb_qual_flag_3 tb_qual_flag_4 tb_qual_flag_h tb_qual_flag_v tb_time_seconds tb_v_corrected
    tb_v_uncorrected vegetation_opacity vegetation_opacity_option1 vegetation_opacity_option2
    vegetation_opacity_option3 vegetation_water_content tb_time_utc
""".split()


def text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def smap_fields(seed: int, shape=WINDOW.shape) -> dict[str, np.ndarray]:
    """A diagonal swath band over the window, soil moisture with failed retrievals (NaN) inside it."""
    rng = np.random.default_rng(seed)
    r, c = np.indices(shape)
    swath = np.abs(c - r - 3) < 14
    t0 = (L2_START - datetime(2000, 1, 1, 11, 58, 55, 816000)).total_seconds()
    sm = rng.uniform(0.03, 0.48, shape)
    sm[rng.random(shape) < 0.15] = np.nan
    return {
        "soil_moisture": np.where(swath, sm, np.nan),
        "vegetation_water_content": rng.uniform(0.0, 6.0, shape),
        "surface_temperature": rng.uniform(275.0, 315.0, shape),
        "retrieval_qual_flag": np.where(np.isnan(sm), 7, rng.choice([0, 1], shape)).astype(np.uint16),
        "surface_flag": rng.integers(0, 4096, shape).astype(np.uint16),
        "tb_time_seconds": np.where(swath, t0 + 60.0 + 0.05 * r + rng.uniform(0, 1, shape), np.nan),
    }


def with_fill(values, fill, dtype=np.float32) -> np.ndarray:
    return np.where(np.isfinite(values), values, fill).astype(dtype)


def listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder)) if folder.exists() else []


# --- one granule per product, written once per module --------------------------------------------------


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("archive")


@pytest.fixture(scope="module")
def l2(archive):
    fields = smap_fields(1)
    url = writers.write_smap_l2e(archive / "smap_l2e", window=WINDOW, start=L2_START, half_orbit="D",
                                 orbit=12345, fields=fields)
    return url, fields


@pytest.fixture(scope="module")
def l3(archive):
    am, pm = smap_fields(2), smap_fields(3)
    pm["tb_time_seconds"][:5] = np.nan  # the PM swath misses the first rows
    return writers.write_smap_l3e(archive / "smap_l3e", window=WINDOW, day=DAY, am=am, pm=pm), am, pm


@pytest.fixture(scope="module")
def l4(archive):
    rng = np.random.default_rng(4)
    fields = {"sm_surface": rng.uniform(0.02, 0.5, WINDOW.shape),
              "sm_rootzone": rng.uniform(0.1, 0.4, WINDOW.shape),
              "surface_temp": rng.uniform(270.0, 320.0, WINDOW.shape)}
    fields["sm_surface"][3, 4] = np.nan
    return writers.write_smap_l4(archive / "smap_l4", window=WINDOW, centre=L4_CENTRE, fields=fields), fields


@pytest.fixture(scope="module")
def gldas(archive):
    rows, cols = GLDAS_GRID.window_slices(WINDOW, margin=1)
    shape = (rows.stop - rows.start, cols.stop - cols.start)
    rng = np.random.default_rng(5)
    fields = {"SoilMoi0_10cm_inst": rng.uniform(5.0, 45.0, shape),
              "AvgSurfT_inst": rng.uniform(270.0, 320.0, shape)}
    fields["SoilMoi0_10cm_inst"][0, 0] = np.nan
    url = writers.write_gldas(archive / "gldas", time=GLDAS_TIME, rows=rows, cols=cols, fields=fields)
    return url, fields, rows, cols


@pytest.fixture(scope="module")
def lst(archive):
    tile = sinusoidal_tiles(M01, 1200)[0]
    rng = np.random.default_rng(6)
    values = np.full((1200, 1200), np.nan)
    values[600:900, 1000:1200] = rng.uniform(250.0, 330.0, (300, 200))
    values[650, 1100] = np.nan
    qc = np.zeros((1200, 1200), np.uint16)
    qc[600:900, 1000:1200] = rng.integers(0, 2**16, (300, 200), dtype=np.uint16)
    url = writers.write_viirs_lst(archive / "viirs_lst", tile=tile, day=DAY, day_or_night="N", lst=values,
                                  qc=qc)
    return url, tile, values, qc


@pytest.fixture(scope="module")
def lai(archive):
    tile = sinusoidal_tiles(M01, 2400)[0]
    rng = np.random.default_rng(7)
    values = np.full((2400, 2400), np.nan)
    values[1200:1800, 2000:2400] = rng.uniform(0.0, 7.0, (600, 400))
    values[1300, 2100:2110] = np.nan
    codes = np.zeros((2400, 2400), np.uint8)
    codes[1500, 2200:2205] = [250, 254, 252, 0, 249]
    url = writers.write_viirs_lai(archive / "viirs_lai", tile=tile, period_start=DAY, lai=values, codes=codes)
    return url, tile, values, codes


@pytest.fixture(scope="module")
def ltdr(archive):
    rows, cols = LTDR_GRID.window_slices(WINDOW)
    shape = (rows.stop - rows.start, cols.stop - cols.start)
    ndvi = np.random.default_rng(8).uniform(-0.1, 0.95, shape)
    ndvi[::7, ::5] = np.nan
    url = writers.write_ltdr_ndvi(archive / "ltdr_ndvi", day=DAY, rows=rows, cols=cols, ndvi=ndvi)
    return url, ndvi, rows, cols


# --- real layouts ---------------------------------------------------------------------------------------

# SPL3SMP_E has no entry in layouts.json; its layout is checked in test_smap_l3e below.
@pytest.mark.parametrize("product", ["smap_l2e", "smap_l4", "gldas", "viirs_lst", "viirs_lai", "ltdr_ndvi"])
def test_granule_passes_the_real_layout_check(product, request, check_layout):
    fixture = {"smap_l2e": "l2", "smap_l4": "l4", "viirs_lst": "lst", "viirs_lai": "lai", "ltdr_ndvi": "ltdr"}
    url = request.getfixturevalue(fixture.get(product, product))[0]
    run = subprocess.run([sys.executable, str(check_layout), product, url], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("fixture, product", [("l2", "smap_l2e"), ("l3", "smap_l3e"), ("l4", "smap_l4"),
                                              ("gldas", "gldas"), ("lst", "viirs_lst"), ("lai", "viirs_lai"),
                                              ("ltdr", "ltdr_ndvi")])
def test_file_names_are_real_and_parse(fixture, product, request, archive):
    url = request.getfixturevalue(fixture)[0]
    assert Path(url).parent == archive / product
    parsed = granules.parse(product, Path(url).name)
    nominal = {"l2": L2_START, "l4": L4_CENTRE, "gldas": GLDAS_TIME}.get(fixture, DAY)
    assert parsed.time == np.datetime64(nominal, "ns")
    assert listing(archive / product) == [Path(url).name]  # no temporary file left beside it


# --- SMAP -----------------------------------------------------------------------------------------------


def test_smap_l2e_swath(l2):
    url, fields = l2
    r, c = np.nonzero(np.isfinite(fields["tb_time_seconds"]))
    assert granules.parse("smap_l2e", Path(url).name).variant == "D"
    with h5py.File(url) as f:
        g = f["Soil_Moisture_Retrieval_Data"]
        assert sorted(g) == sorted(L2_REAL_VARIABLES)
        assert {d.shape for d in g.values()} == {(r.size,)}  # the swath length = the number of swath cells
        assert all("DIMENSION_LIST" not in d.attrs and "CLASS" not in d.attrs for d in g.values())
        np.testing.assert_array_equal(g["EASE_row_index"][:], WINDOW.row0 + r)  # GLOBAL M09 indices
        np.testing.assert_array_equal(g["EASE_column_index"][:], WINDOW.col0 + c)
        assert g["EASE_row_index"].dtype == np.uint16 and g["EASE_row_index"].fillvalue == 65534
        sm = g["soil_moisture"]
        np.testing.assert_array_equal(sm[:], with_fill(fields["soil_moisture"][r, c], -9999.0))
        assert (sm[:] == -9999.0).any()
        np.testing.assert_array_equal(sm[:], g["soil_moisture_option3"][:])
        assert sm.attrs["_FillValue"] == np.float32(-9999.0) and sm.fillvalue == np.float32(-9999.0)
        assert text(sm.attrs["units"]) == "cm**3/cm**3"
        assert (sm.attrs["valid_min"], sm.attrs["valid_max"]) == (np.float32(0.02), np.float32(0.5))
        np.testing.assert_array_equal(g["retrieval_qual_flag"][:], fields["retrieval_qual_flag"][r, c])
        np.testing.assert_array_equal(g["surface_flag"][:], fields["surface_flag"][r, c])
        np.testing.assert_allclose(g["vegetation_water_content"][:], fields["vegetation_water_content"][r, c],
                                   rtol=1e-6)
        np.testing.assert_array_equal(g["tb_time_seconds"][:], fields["tb_time_seconds"][r, c])
        lon, lat = ease2_grid("M09").lonlat(WINDOW.row0 + r, WINDOW.col0 + c)
        np.testing.assert_allclose(g["latitude"][:], lat, atol=1e-4)
        np.testing.assert_allclose(g["longitude"][:], lon, atol=1e-4)
        assert "_FillValue" not in g["latitude"].attrs and "_FillValue" not in g["longitude"].attrs
        utc = g["tb_time_utc"]
        assert utc.dtype == np.dtype("S24")
        first = datetime.strptime(utc[0].decode(), "%Y-%m-%dT%H:%M:%S.%fZ")
        seconds = fields["tb_time_seconds"][r[0], c[0]]
        expected = datetime(2000, 1, 1, 11, 58, 55, 816000) + timedelta(seconds=seconds)
        assert abs((first - expected).total_seconds()) < 1e-3
        ident = f["Metadata/DatasetIdentification"].attrs
        assert (text(ident["shortName"]), text(ident["ECSVersionID"])) == ("SPL2SMP_E", "006")
        assert text(ident["CompositeReleaseID"]) == granules.SMAP_CRID
        assert "Lineage/InputConfiguration/L1C_TB_E" in f["Metadata"]


def test_tb_time_utc_is_counted_from_the_smap_epoch():
    utc = writers._tb_time_utc(np.array([0.0, 86400.25, np.nan]))
    assert utc.tolist() == [b"2000-01-01T11:58:55.816Z", b"2000-01-02T11:58:56.066Z", b""]


def test_smap_l2e_refuses_an_empty_swath(tmp_path):
    fields = smap_fields(1)
    fields["tb_time_seconds"][:] = np.nan
    with pytest.raises(ValueError, match="no swath cell"):
        writers.write_smap_l2e(tmp_path, window=WINDOW, start=L2_START, half_orbit="A", orbit=1,
                               fields=fields)
    assert listing(tmp_path) == []


def test_smap_l3e_global_grid(l3):
    url, am, pm = l3
    rows, cols = WINDOW.slices
    with h5py.File(url) as f:
        assert text(f["Metadata/DatasetIdentification"].attrs["shortName"]) == "SPL3SMP_E"
        a, p = f["Soil_Moisture_Retrieval_Data_AM"], f["Soil_Moisture_Retrieval_Data_PM"]
        assert len(a) == len(p) == 51 and all(name.endswith("_pm") for name in p)
        assert {"soil_moisture_dca", "soil_moisture_scah", "soil_moisture_scav"} <= set(a)
        for group, suffix, fields in ((a, "", am), (p, "_pm", pm)):
            sm = group["soil_moisture" + suffix]
            assert sm.shape == (1624, 3856) and sm.chunks == (1, 3856)
            assert (sm.compression, sm.compression_opts) == ("gzip", 2)
            swath = np.isfinite(fields["tb_time_seconds"])
            hit = np.flatnonzero(swath.any(axis=1))
            assert sm.id.get_num_chunks() == hit[-1] - hit[0] + 1  # rows without data stay unallocated
            grid = sm[:]
            expected = with_fill(np.where(swath, fields["soil_moisture"], np.nan), -9999.0)
            np.testing.assert_array_equal(grid[rows, cols], expected)
            grid[rows, cols] = -9999.0
            assert (grid == -9999.0).all()
            row_index = group["EASE_row_index" + suffix][rows, cols]
            np.testing.assert_array_equal(row_index, np.where(swath, WINDOW.rows[:, None], 65534))
        lat = a["latitude"]
        assert "_FillValue" not in lat.attrs and "_FillValue" in p["latitude_pm"].attrs
        window_lat = lat[rows, cols]
        assert (window_lat[~np.isfinite(am["tb_time_seconds"])] == -9999.0).all()
        on_swath = window_lat[np.isfinite(am["tb_time_seconds"])]
        np.testing.assert_allclose(on_swath.max(), WINDOW.lat.max(), atol=1e-4)
        assert lat[0, 0] == -9999.0
        assert f["Soil_Moisture_Retrieval_Data_Polar_PM/soil_moisture_pm"].shape == (2000, 2000)


def test_smap_l3e_half_without_data_is_all_fill(tmp_path):
    url = writers.write_smap_l3e(tmp_path, window=WINDOW, day=DAY, am=smap_fields(2), pm=None)
    with h5py.File(url) as f:
        sm = f["Soil_Moisture_Retrieval_Data_PM/soil_moisture_pm"]
        assert sm.id.get_num_chunks() == 0 and sm[WINDOW.row0, WINDOW.col0] == -9999.0


def test_smap_l4_global_grid(l4):
    url, fields = l4
    grid = ease2_grid("M09")
    with h5py.File(url) as f:
        geo = f["Geophysical_Data"]
        assert len(geo) == 45
        for var, units in (("sm_surface", "m3 m-3"), ("sm_rootzone", "m3 m-3"), ("surface_temp", "K")):
            d = geo[var]
            assert d.shape == d.chunks == (1624, 3856) and d.compression == "gzip"  # one chunk, as real
            assert d.id.get_num_chunks() == 1 and text(d.attrs["units"]) == units
            assert d.attrs["_FillValue"] == d.fillvalue == np.float32(-9999.0)
            values = d[:]
            np.testing.assert_array_equal(values[WINDOW.slices], with_fill(fields[var], -9999.0))
            values[WINDOW.slices] = -9999.0
            assert (values == -9999.0).all()
        assert geo["snow_mass"].id.get_num_chunks() == 0 and geo["snow_mass"][0, 0] == -9999.0
        assert (geo["sm_surface"].dims[0].label, geo["sm_surface"].dims[1].label) == ("y", "x")
        lat, lon = grid.lonlat(np.arange(1624), 0)[1], grid.lonlat(0, np.arange(3856))[0]
        np.testing.assert_allclose(f["cell_lat"][:, 0], lat, atol=1e-4)
        np.testing.assert_allclose(f["cell_lat"][:, -1], lat, atol=1e-4)
        np.testing.assert_allclose(f["cell_lon"][7, :], lon, atol=1e-4)
        assert f["cell_row"][1000, 17] == 1000 and f["cell_column"][1000, 17] == 17
        assert f["cell_row"].dtype == np.uint32
        for axis, values in (("x", grid.x(np.arange(3856))), ("y", grid.y(np.arange(1624)))):
            assert f[axis].dtype == np.float64 and h5py.h5ds.is_scale(f[axis].id)
            np.testing.assert_array_equal(f[axis][:], values)
        time = f["time"]
        assert time[0] == (L4_CENTRE - datetime(2000, 1, 1, 12)).total_seconds()  # the writer's 12:00 quirk
        assert text(time.attrs["units"]) == "seconds since 2000-01-01 11:58:55.816"
        proj = f["EASE2_global_projection"].attrs
        assert text(proj["grid_mapping_name"]) == "lambert_cylindrical_equal_area"
        assert text(f.attrs["Title"]) == "SMAP L4_SM Geophysical (GPH) Data Granule"
        assert text(f["Metadata/DatasetIdentification"].attrs["shortName"]) == "SPL4SMGP"


def test_single_deflate_chunk_assembled_from_pieces():
    a, b = b"abc", b"defg" * 9000
    assert writers._adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b)) == zlib.adler32(a + b)
    rng = np.random.default_rng(9)
    cases = (((37, 11), 0, 0, (5, 3)), ((37, 11), 30, 8, (7, 3)), ((64, 8), 17, 2, (1, 1)))
    for shape, row0, col0, block in cases:
        values = rng.random(block).astype(np.float32)
        expected = np.full(shape, -9999.0, np.float32)
        expected[row0 : row0 + block[0], col0 : col0 + block[1]] = values
        chunk = writers._window_chunk(shape, np.float32, -9999.0, row0, col0, values)
        decoded = np.frombuffer(zlib.decompress(chunk), np.float32).reshape(shape)
        np.testing.assert_array_equal(decoded, expected)


# --- GLDAS ----------------------------------------------------------------------------------------------


def test_gldas_netcdf4(gldas):
    url, fields, rows, cols = gldas
    with netCDF4.Dataset(url) as nc:
        assert nc.data_model == "NETCDF4"
        dims = {k: len(v) for k, v in nc.dimensions.items()}
        assert dims == {"time": 1, "lat": 600, "lon": 1440, "bnds": 2}
        assert len([v for v in nc.variables.values() if v.ndim == 3]) == 36
        assert nc.getncattr("tavg definision:") == "past 3-hour average" and nc.conventions == "CF-1.6"
        time = nc["time"]
        assert time.units == " minutes since 2000-01-01 03:00:00"
        assert (time.begin_date, time.begin_time) == ("20160701", "210000")
        np.testing.assert_array_equal(nc["time_bnds"][:], [[time[0] - 180.0, time[0]]])
        sm = nc["SoilMoi0_10cm_inst"]
        assert sm.chunking() == [1, 600, 1440]
        assert {k: sm.filters()[k] for k in ("zlib", "shuffle", "complevel")} == {
            "zlib": True, "shuffle": True, "complevel": 4}
        assert sm.getncattr("_FillValue") == np.float32(-9999.0) and sm.units == "kg m-2"
        assert nc["lat"].dtype == np.float32 and nc["lat"][0] == np.float32(-59.875)
    with xr.open_dataset(url) as ds:
        assert ds.time.values[0] == np.datetime64(GLDAS_TIME, "ns")
        assert np.all(np.diff(ds.lat.values) > 0)
        sm, root = ds.SoilMoi0_10cm_inst.values[0], ds.RootMoist_inst.values
    np.testing.assert_allclose(sm[rows, cols], fields["SoilMoi0_10cm_inst"].astype(np.float32))
    assert np.isnan(sm[rows, cols][0, 0])
    sm[rows, cols] = np.nan
    assert np.isnan(sm).all()
    assert np.isnan(root).all()


def test_gldas_data_read_back_and_filters(gldas):
    url, fields, rows, cols = gldas
    with netCDF4.Dataset(url) as nc:
        nc.set_auto_maskandscale(False)
        for var, values in fields.items():
            expected = np.full(GLDAS_GRID.shape, -9999.0, np.float32)
            expected[rows, cols] = with_fill(values, -9999.0)
            np.testing.assert_array_equal(nc[var][0], expected)
            finite = values[np.isfinite(values)]
            assert (nc[var].vmin, nc[var].vmax) == (np.float32(finite.min()), np.float32(finite.max()))
        assert (nc["RootMoist_inst"][0] == np.float32(-9999.0)).all()
    with h5py.File(url) as f:
        for var in ("SoilMoi0_10cm_inst", "AvgSurfT_inst", "RootMoist_inst"):
            d = f[var]
            assert d.chunks == (1, 600, 1440) and d.dtype == np.float32 and d.fillvalue == np.float32(-9999.0)
            assert (d.compression, d.compression_opts, d.shuffle) == ("gzip", 4, True)
            dcpl = d.id.get_create_plist()
            pipeline = [dcpl.get_filter(i)[:3] for i in range(dcpl.get_nfilters())]
            assert pipeline == [(h5py.h5z.FILTER_SHUFFLE, 1, (4,)), (h5py.h5z.FILTER_DEFLATE, 1, (4,))]
            assert d.id.get_num_chunks() == (var in fields)  # fields not supplied are never allocated


@pytest.mark.parametrize("dtype, fill", [(np.float32, -9999.0), (np.int16, -9999), (np.int16, -32767),
                                         (np.uint8, 255)])
def test_shuffled_window_chunk_is_what_hdf5_reads(dtype, fill, tmp_path):
    rng = np.random.default_rng(12)
    shape, row0, col0 = (37, 11), 30, 8
    values = (rng.random((7, 3)) * 100).astype(dtype)
    expected = np.full(shape, fill, dtype)
    expected[row0 : row0 + 7, col0 : col0 + 3] = values
    chunk = writers._window_chunk(shape, dtype, fill, row0, col0, values, shuffle=True)
    itemsize = np.dtype(dtype).itemsize
    planes = np.frombuffer(zlib.decompress(chunk), np.uint8).reshape(itemsize, -1)  # HDF5's byte planes
    np.testing.assert_array_equal(planes.T.copy().view(dtype).reshape(shape), expected)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        d = f.create_dataset("x", shape=shape, dtype=dtype, chunks=shape, fillvalue=fill, shuffle=True,
                             compression="gzip", compression_opts=4)
        d.id.write_direct_chunk((0, 0), chunk)
    with h5py.File(tmp_path / "x.h5") as f:
        np.testing.assert_array_equal(f["x"][...], expected)


def netcdf_view(path) -> tuple[dict, dict]:
    """Everything netCDF4 and h5py say about a netCDF-4 file's layout (less netCDF-C's hidden
    _Netcdf4Dimid, which it writes on variables that exist at its first data write), and the values of
    the variables with allocated storage within the bounding box of their allocated chunks (the rest reads
    as the fill value)."""
    layout, values, boxes = {}, {}, {}

    def dataset(name, d):
        if isinstance(d, h5py.Dataset):
            dcpl = d.id.get_create_plist()
            layout[f"h5:{name}"] = (
                [k for k in d.attrs if k != "_Netcdf4Dimid"], d.chunks, d.fillvalue, dcpl.get_layout(),
                [dcpl.get_filter(i) for i in range(dcpl.get_nfilters())],
                d.id.get_num_chunks() if d.chunks else None)
            allocated = d.id.get_num_chunks() if d.chunks else 0
            if allocated:
                corners = np.array([d.id.get_chunk_info(i).chunk_offset for i in range(allocated)])
                boxes[name] = tuple(slice(lo, hi + n) for lo, hi, n in
                                    zip(corners.min(axis=0), corners.max(axis=0), d.chunks, strict=True))
                layout[f"box:{name}"] = boxes[name]
            elif not d.chunks:
                boxes[name] = ...

    with h5py.File(path) as f:
        f.visititems(dataset)
    with netCDF4.Dataset(path) as nc:
        nc.set_auto_maskandscale(False)
        layout["/"] = [(k, repr(nc.getncattr(k))) for k in nc.ncattrs()]
        layout["dims"] = [(k, len(v)) for k, v in nc.dimensions.items()]
        for name, v in nc.variables.items():
            layout[name] = ([(k, repr(v.getncattr(k))) for k in v.ncattrs()], v.dtype, v.dimensions,
                            v.chunking(), v.filters(), v.endian())
            if name in boxes:
                values[name] = v[boxes[name]]
    return layout, values


@pytest.mark.parametrize("product", ["gldas", "ltdr_ndvi"])
def test_template_granules_equal_the_netcdf_library_write(product, tmp_path):
    """The granule made from the template equals the one that the netCDF library writes itself, for the
    oklahoma block, a block over several chunks (LTDR) or all of the one chunk (GLDAS) and a corner."""
    rng = np.random.default_rng(13)
    grid = GLDAS_GRID if product == "gldas" else LTDR_GRID
    (nrows, ncols), blocks = grid.shape, [grid.window_slices(WINDOW, margin=1)]
    blocks += [(slice(350, min(1100, nrows)), slice(700, min(2200, ncols))),
               (slice(0, 1), slice(ncols - 3, ncols))]
    for i, (rows, cols) in enumerate(blocks):
        shape = (rows.stop - rows.start, cols.stop - cols.start)
        values = rng.uniform(0.1, 0.9, shape)
        values[rng.random(shape) < 0.2] = np.nan
        reference = tmp_path / f"reference{i}.nc"
        if product == "gldas":
            t = GLDAS_TIME + timedelta(hours=3 * i)
            fields = {"SoilMoi0_10cm_inst": 50 * values, "AvgSurfT_inst": 300 + values,
                      "Wind_f_inst": values * np.nan}
            url = writers.write_gldas(tmp_path, time=t, rows=rows, cols=cols, fields=fields)
            writers._gldas_netcdf(str(reference), t, rows, cols, fields)
        else:
            day = DAY + timedelta(days=i)
            url = writers.write_ltdr_ndvi(tmp_path, day=day, rows=rows, cols=cols, ndvi=values)
            writers._ltdr_netcdf(str(reference), day, rows, cols, values)
        (layout, data), (expected_layout, expected_data) = netcdf_view(url), netcdf_view(reference)
        assert layout == expected_layout
        assert data.keys() == expected_data.keys()
        assert [name for name in data if not np.array_equal(data[name], expected_data[name])] == []
        if i:
            continue  # decoded values once (costly on the 3600 × 7200 LTDR grid)
        with xr.open_dataset(url) as ds, xr.open_dataset(reference) as ref:
            xr.testing.assert_identical(ds, ref)


def test_template_attributes_keep_their_type_and_size(tmp_path):
    with h5py.File(tmp_path / "t.nc", "w") as f:
        f.attrs["history"] = np.bytes_(b"created on date: 2016-08-10T21:00:00.000")
        f.attrs["vmin"] = np.array([1.0], np.float32)
        writers._patch_attrs(f, {"history": "created on date: 2017-01-02T03:00:00.000", "vmin": 2.5})
        assert f.attrs["history"] == b"created on date: 2017-01-02T03:00:00.000"
        assert f.attrs["vmin"].dtype == np.float32 and list(f.attrs["vmin"]) == [2.5]
        with pytest.raises(ValueError, match="does not fit"):
            writers._patch_attrs(f, {"history": "created on date: 12017-01-02T03:00:00.000"})
        with pytest.raises(ValueError, match="value"):
            writers._patch_attrs(f, {"vmin": [1.0, 2.0]})


# --- VIIRS ----------------------------------------------------------------------------------------------


def test_viirs_lst_hdfeos5(lst):
    url, tile, values, qc = lst
    parsed = granules.parse("viirs_lst", Path(url).name)
    assert (parsed.tile, parsed.variant) == (tile.name, "N")
    with h5py.File(url) as f:
        odl = f["HDFEOS INFORMATION/StructMetadata.0"][()].decode().rstrip("\0")
        (ulx, uly), (lrx, lry) = tile.upper_left, tile.lower_right
        for line in (f"UpperLeftPointMtrs=({ulx:.6f},{uly:.6f})", f"LowerRightMtrs=({lrx:.6f},{lry:.6f})",
                     "XDim=1200", "YDim=1200", "Projection=HE5_GCTP_SNSOID", "ProjParams=(6371007.181000,",
                     'GridName="VIIRS_Grid_Daily_1km_LST21"'):
            assert line in odl
        grid = f["HDFEOS/GRIDS/VIIRS_Grid_Daily_1km_LST21"]
        fields = grid["Data Fields"]
        assert {"LST_1KM", "QC", "Emis_14", "Emis_15", "Emis_16", "View_Angle", "View_Time"} <= set(fields)
        raw = fields["LST_1KM"][:]
        assert raw.dtype == np.uint16 and fields["LST_1KM"].attrs["_FillValue"] == 0
        scale = float(fields["LST_1KM"].attrs["scale_factor"])
        finite = np.isfinite(values)
        np.testing.assert_allclose(raw[finite] * scale, values[finite], atol=0.011)
        assert (raw[~finite] == 0).all()
        np.testing.assert_array_equal(fields["QC"][:], qc)
        emis = fields["Emis_14"]
        decoded = emis[:] * emis.attrs["scale_factor"] + emis.attrs["add_offset"]
        np.testing.assert_allclose(decoded[finite], 0.975, atol=0.002)
        assert (emis[:][~finite] == 0).all()
        assert fields["LST_1KM"].id.get_num_chunks() < 16  # chunks outside the data stay unallocated
        half = tile.pixel_size / 2
        np.testing.assert_allclose(grid["XDim"][:][[0, -1]], [ulx + half, lrx - half])
        attrs = {k: text(v) for k, v in f.attrs.items() if isinstance(v, bytes | np.bytes_)}
        assert attrs["ShortName"] == "VNP21A1N" and attrs["LocalGranuleID"] == Path(url).name
        assert attrs["HORIZONTALTILENUMBER"] == f"{tile.h:02d}"
        assert attrs["VERTICALTILENUMBER"] == f"{tile.v:02d}"
        assert attrs["TileID"] == f"51{tile.h:03d}{tile.v:03d}" and attrs["DataResolution"] == "1km"
        assert attrs["StartTime"] == "2016-07-03 00:00:00" and attrs["EndTime"] == "2016-07-03 23:59:59"


def test_viirs_lai_hdfeos5(lai):
    url, tile, values, codes = lai
    assert granules.parse("viirs_lai", Path(url).name).tile == tile.name
    with h5py.File(url) as f:
        assert list(f["HDFEOS/GRIDS"]) == ["VIIRS_Grid_LAIFPAR"]
        fields = f["HDFEOS/GRIDS/VIIRS_Grid_LAIFPAR/Data Fields"]
        assert {"Lai", "Fpar", "LaiStdDev", "FparStdDev", "FparLai_QC", "FparExtra_QC"} <= set(fields)
        stored = fields["Lai"][:]
        assert stored.dtype == np.uint8 and stored.shape == (2400, 2400)
        assert fields["Lai"].attrs["scale_factor"] == 0.1 and fields["Lai"].attrs["_FillValue"] == 255
        special = (codes >= 249) & (codes <= 254)
        plain = np.isfinite(values) & ~special
        np.testing.assert_allclose(stored[plain] * 0.1, values[plain], atol=0.05 + 1e-9)
        np.testing.assert_array_equal(stored[special], codes[special])
        assert (stored[~np.isfinite(values) & ~special] == 255).all()
        assert (fields["Fpar"][:][special] == codes[special]).all()
        assert text(f.attrs["DataResolution"]) == "500m"


# --- LTDR -----------------------------------------------------------------------------------------------


def test_ltdr_ndvi_netcdf4(ltdr):
    url, ndvi, rows, cols = ltdr
    with netCDF4.Dataset(url) as nc:
        nc.set_auto_maskandscale(False)
        v = nc["NDVI"]
        assert v.dimensions == ("time", "latitude", "longitude") and v.shape == (1, 3600, 7200)
        assert v.dtype == np.int16 and v.getncattr("_FillValue") == -9999
        assert list(v.valid_range) == [-1000, 10000]
        assert v.chunking() == [1, 360, 720]
        raw = v[0]
        finite = np.isfinite(ndvi)
        np.testing.assert_allclose(raw[rows, cols][finite] * 1e-4, ndvi[finite], atol=5e-5 + 1e-7)
        assert (raw[rows, cols][~finite] == -9999).all()
        raw[rows, cols] = -9999
        assert (raw == -9999).all()
        assert nc["QA"].getncattr("_FillValue") == -32767 and "TIMEOFDAY" in nc.variables
        lat = nc["latitude"][:]
        assert lat[0] == np.float32(89.975) and np.all(np.diff(lat) < 0)
        assert nc["longitude"][0] == np.float32(-179.975)
    with h5py.File(url) as f:
        touched = (len(range(rows.start // 360, (rows.stop - 1) // 360 + 1))
                   * len(range(cols.start // 720, (cols.stop - 1) // 720 + 1)))
        assert f["NDVI"].id.get_num_chunks() == touched  # the other chunks stay unallocated
    with xr.open_dataset(url) as ds:
        decoded = ds.NDVI.values[0, rows, cols]
    np.testing.assert_array_equal(np.isnan(decoded), ~np.isfinite(ndvi))


# --- publication: destination, atomicity, remote stores ---------------------------------------------


def test_destination_is_a_folder_or_the_granule_itself(tmp_path):
    name = granules.ltdr_ndvi_name(DAY)
    assert writers._destination(tmp_path, "ltdr_ndvi", name) == f"{tmp_path}/{name}"
    assert writers._destination(f"file://{tmp_path}/", "ltdr_ndvi", name) == f"file://{tmp_path}/{name}"
    assert writers._destination(f"s3://b/ltdr/{name}", "ltdr_ndvi", "other.nc") == f"s3://b/ltdr/{name}"
    rows, cols = LTDR_GRID.window_slices(WINDOW)
    ndvi = np.zeros((rows.stop - rows.start, cols.stop - cols.start))
    url = writers.write_ltdr_ndvi(f"file://{tmp_path}/x/{name}", day=DAY, rows=rows, cols=cols, ndvi=ndvi)
    assert url == f"file://{tmp_path}/x/{name}" and listing(tmp_path / "x") == [name]


WRONG_SHAPE = {
    "smap_l2e": lambda url: writers.write_smap_l2e(
        url, window=WINDOW, start=L2_START, half_orbit="A", orbit=7,
        fields=smap_fields(1) | {"surface_flag": np.zeros((3, 3), np.uint16)}),
    "smap_l3e": lambda url: writers.write_smap_l3e(
        url, window=WINDOW, day=DAY, am=smap_fields(1), pm=smap_fields(2) | {"soil_moisture": np.zeros(3)}),
    "smap_l4": lambda url: writers.write_smap_l4(
        url, window=WINDOW, centre=L4_CENTRE,
        fields={"sm_surface": np.zeros(WINDOW.shape), "sm_rootzone": np.zeros(WINDOW.shape),
                "surface_temp": np.zeros((4, 4))}),
    "gldas": lambda url: writers.write_gldas(
        url, time=GLDAS_TIME, rows=slice(0, 4), cols=slice(0, 4),
        fields={"SoilMoi0_10cm_inst": np.zeros((4, 5))}),
    "viirs_lst": lambda url: writers.write_viirs_lst(
        url, tile=sinusoidal_tiles(M01, 1200)[0], day=DAY, day_or_night="D", lst=np.zeros((1200, 1200)),
        qc=np.zeros((1200, 1199), np.uint16)),
    "viirs_lai": lambda url: writers.write_viirs_lai(
        url, tile=sinusoidal_tiles(M01, 2400)[0], period_start=DAY, lai=np.zeros((1200, 1200))),
    "ltdr_ndvi": lambda url: writers.write_ltdr_ndvi(
        url, day=DAY, rows=slice(0, 4), cols=slice(0, 4), ndvi=np.zeros((4, 3))),
}


@pytest.mark.parametrize("product", sorted(WRONG_SHAPE))
def test_a_field_of_the_wrong_shape_writes_nothing(product, tmp_path):
    with pytest.raises(ValueError, match="shape"):
        WRONG_SHAPE[product](tmp_path / product)
    assert listing(tmp_path / product) == []


class Boom(RuntimeError):
    pass


def fail_after(n: int, function):
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) > n:
            raise Boom("simulated failure in the middle of a write")
        return function(*args, **kwargs)

    return wrapped


def test_a_write_failing_midway_leaves_no_file_and_keeps_the_old_granule(tmp_path, monkeypatch):
    fields = smap_fields(11)
    write = lambda: writers.write_smap_l2e(  # noqa: E731
        tmp_path, window=WINDOW, start=L2_START, half_orbit="A", orbit=8, fields=fields)
    monkeypatch.setattr(writers, "_h5_var", fail_after(20, writers._h5_var))
    with pytest.raises(Boom):
        write()
    assert listing(tmp_path) == []
    monkeypatch.undo()
    url = write()
    before = Path(url).read_bytes()
    fields["soil_moisture"] = fields["soil_moisture"] * 0.5
    monkeypatch.setattr(writers, "_h5_var", fail_after(30, writers._h5_var))
    with pytest.raises(Boom):
        write()
    assert listing(tmp_path) == [Path(url).name] and Path(url).read_bytes() == before


def test_a_netcdf_write_failing_midway_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(writers, "_nc_var", fail_after(10, writers._nc_var))
    with pytest.raises(Boom):
        writers.write_gldas(tmp_path, time=GLDAS_TIME, rows=slice(0, 4), cols=slice(0, 4),
                            fields={"SoilMoi0_10cm_inst": np.ones((4, 4))})
    assert listing(tmp_path) == []


def test_a_template_write_failing_midway_leaves_no_file_and_keeps_the_old_granule(tmp_path, monkeypatch):
    fields = {"SoilMoi0_10cm_inst": np.ones((4, 4)), "AvgSurfT_inst": np.full((4, 4), 290.0)}
    write = lambda: writers.write_gldas(  # noqa: E731
        tmp_path, time=GLDAS_TIME, rows=slice(0, 4), cols=slice(0, 4), fields=fields)
    writers._gldas_template()  # built beforehand: the failure hits the copy, not the template
    monkeypatch.setattr(writers, "_write_window_chunks", fail_after(1, writers._write_window_chunks))
    with pytest.raises(Boom):
        write()
    assert listing(tmp_path) == []
    monkeypatch.undo()
    url = write()
    before = Path(url).read_bytes()
    fields["SoilMoi0_10cm_inst"] = fields["SoilMoi0_10cm_inst"] * 2
    monkeypatch.setattr(writers, "_write_window_chunks", fail_after(1, writers._write_window_chunks))
    with pytest.raises(Boom):
        write()
    assert listing(tmp_path) == [Path(url).name] and Path(url).read_bytes() == before


def test_remote_targets_are_uploaded_once_complete(monkeypatch):
    fs = fsspec.filesystem("memory")
    root = f"memory://soilcube-writers-test-{uuid.uuid4().hex}"
    folder = f"{root}/smap_l4"
    uploads = []
    put_file = type(fs).put_file

    def recorded_put_file(self, lpath, rpath, *args, **kwargs):
        with h5py.File(lpath, "r") as f:  # the local file is a whole granule when it goes up
            uploads.append((rpath, f["Geophysical_Data/sm_rootzone"][WINDOW.row0, WINDOW.col0]))
        return put_file(self, lpath, rpath, *args, **kwargs)

    monkeypatch.setattr(type(fs), "put_file", recorded_put_file)
    fields = {k: np.full(WINDOW.shape, v) for k, v in
              (("sm_surface", 0.2), ("sm_rootzone", 0.25), ("surface_temp", 290.0))}
    write = lambda: writers.write_smap_l4(folder, window=WINDOW, centre=L4_CENTRE, fields=fields)  # noqa: E731
    try:
        with monkeypatch.context() as patch:
            patch.setattr(writers, "_h5_var", fail_after(2, writers._h5_var))
            with pytest.raises(Boom):
                write()
        assert uploads == [] and not fs.exists(folder)
        url = write()
        assert url == f"{folder}/{granules.smap_l4_name(L4_CENTRE)}"
        assert [(fs._strip_protocol(rpath), value) for rpath, value in uploads] == [
            (fs._strip_protocol(url), np.float32(0.25))]
        names = [p.rsplit("/", 1)[-1] for p in fs.ls(folder, detail=False)]
        assert names == [granules.smap_l4_name(L4_CENTRE)]
        with fs.open(url, "rb") as raw, h5py.File(raw) as f:
            assert f["Geophysical_Data/sm_rootzone"][WINDOW.row0, WINDOW.col0] == np.float32(0.25)
    finally:
        if fs.exists(root):
            fs.rm(root, recursive=True)
