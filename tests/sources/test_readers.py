"""Readers through kerchunk references: values equal what h5py/netCDF4 read from the same files (fills as
NaN, scale applied, flags as integers), time from the file name, coordinates from the grid definitions."""

import gc
import io
import pickle
import shutil
import threading

import dask.array as da
import fsspec
import h5py
import netCDF4
import numpy as np
import pytest
import xarray as xr
from kerchunk.hdf import SingleHdf5ToZarr
from synthetic_granules import SMAP_WINDOW, T0, VIIRS_WINDOW, write_granules

from soilcube.grids import GLDAS_GRID, LTDR_GRID, REGIONS, Window, lookup_blocks, sinusoidal_lookup
from soilcube.sources import GranuleError, open_granules, reader, references


def ns(*times):
    return np.array(times, dtype="datetime64[ns]")


REAL_GLDAS_TIMES = ns("2016-01-01T03:00", "2016-01-01T06:00", "2016-01-01T21:00")


def h5file(url, options):
    """The granule through h5py, from its bytes in memory: h5py reading through fsspec risks the deadlock
    that `cyclic_gc_paused` is about."""
    fs, path = fsspec.core.url_to_fs(url, **(options or {}))
    return h5py.File(io.BytesIO(fs.cat_file(path)), "r")


def decoded(raw, fill, scale=1.0, offset=0.0, valid=(None, None)):
    """The reference decoding, by hand: fill and out-of-range → NaN, then scale and offset."""
    bad = raw == fill
    if valid[0] is not None:
        bad |= raw < valid[0]
    if valid[1] is not None:
        bad |= raw > valid[1]
    return np.where(bad, np.nan, raw.astype(np.float64) * scale + offset)


def assert_lazy(ds):
    for name, var in ds.data_vars.items():
        assert var.chunks is not None, f"{name} is not dask-backed"


def test_smap_l4_values_time_and_coordinates(synthetic_archive):
    root, options, urls = synthetic_archive
    ds = open_granules("smap_l4", urls["smap_l4"], options, window=SMAP_WINDOW)
    assert_lazy(ds)
    assert ds["sm_surface"].dims == ("time", "y", "x")
    np.testing.assert_array_equal(ds["time"], ns(*(T0 + np.timedelta64(90 + 180 * k, "m") for k in range(3))))
    np.testing.assert_array_equal(ds["x"], SMAP_WINDOW.x)
    np.testing.assert_array_equal(ds["y"], SMAP_WINDOW.y)
    for k, url in enumerate(urls["smap_l4"]):
        with h5file(url, options) as f:
            for name in ("sm_surface", "surface_temp"):
                raw = f[f"Geophysical_Data/{name}"][SMAP_WINDOW.slices]
                expected = decoded(raw, -9999.0)
                np.testing.assert_array_equal(ds[name][k].values, expected.astype(np.float32))
    assert np.isnan(ds["sm_surface"][0, 0, 0])


def test_smap_l4_region_and_default_window(synthetic_archive):
    _, options, urls = synthetic_archive
    oklahoma = REGIONS["oklahoma"]
    by_region = open_granules("smap_l4", urls["smap_l4"], options, window=oklahoma, variables=["sm_surface"])
    by_window = open_granules("smap_l4", urls["smap_l4"], options, window=oklahoma.window("M09"))
    assert list(by_region.data_vars) == ["sm_surface"]
    np.testing.assert_array_equal(by_region["sm_surface"], by_window["sm_surface"])
    whole = open_granules("smap_l4", urls["smap_l4"][:1], options)
    assert whole["sm_surface"].shape == (1, 1624, 3856)
    with pytest.raises(ValueError, match="M09"):
        open_granules("smap_l4", urls["smap_l4"], options, window=oklahoma.window("M01"))


def test_smap_l3e_overpasses(synthetic_archive):
    _, options, urls = synthetic_archive
    ds = open_granules("smap_l3e", urls["smap_l3e"], options, window=SMAP_WINDOW)
    assert_lazy(ds)
    assert ds["soil_moisture"].dims == ("time", "overpass", "y", "x")
    assert list(ds["overpass"].values) == ["AM", "PM"]
    assert "soil_moisture_pm" not in ds
    np.testing.assert_array_equal(ds["time"], ns(T0, T0 + np.timedelta64(1, "D")))
    for k, url in enumerate(urls["smap_l3e"]):
        with h5file(url, options) as f:
            for overpass, group, suffix in (("AM", "Soil_Moisture_Retrieval_Data_AM", ""),
                                            ("PM", "Soil_Moisture_Retrieval_Data_PM", "_pm")):
                sm = f[f"{group}/soil_moisture{suffix}"]
                expected = decoded(sm[SMAP_WINDOW.slices], -9999.0,
                                   valid=(sm.attrs["valid_min"], sm.attrs["valid_max"]))
                got = ds["soil_moisture"].sel(overpass=overpass)[k]
                np.testing.assert_array_equal(got, expected.astype(np.float32))
                flags = ds["retrieval_qual_flag"].sel(overpass=overpass)[k]
                assert flags.dtype == np.uint16
                raw_flags = f[f"{group}/retrieval_qual_flag{suffix}"][SMAP_WINDOW.slices]
                np.testing.assert_array_equal(flags, raw_flags)


def test_smap_l2e_swaths_gridded(synthetic_archive):
    _, options, urls = synthetic_archive
    ds = open_granules("smap_l2e", urls["smap_l2e"], options, window=SMAP_WINDOW)
    assert_lazy(ds)
    assert ds["soil_moisture"].dims == ("time", "y", "x")
    assert list(ds["half_orbit"].values) == ["D", "A"]
    np.testing.assert_array_equal(ds["time"], ns(T0 + np.timedelta64(6, "h"), T0 + np.timedelta64(18, "h")))
    for k, url in enumerate(urls["smap_l2e"]):
        with h5file(url, options) as f:
            group = f["Soil_Moisture_Retrieval_Data"]
            rows = group["EASE_row_index"][:].astype(int) - SMAP_WINDOW.row0
            cols = group["EASE_column_index"][:].astype(int) - SMAP_WINDOW.col0
            sm = group["soil_moisture"]
            valid = (sm.attrs["valid_min"], sm.attrs["valid_max"])
            expected = np.full(SMAP_WINDOW.shape, np.nan)
            expected[rows, cols] = decoded(sm[:], -9999.0, valid=valid)
            flags = np.full(SMAP_WINDOW.shape, 65534, np.uint16)
            flags[rows, cols] = group["surface_flag"][:]
        np.testing.assert_array_equal(ds["soil_moisture"][k], expected.astype(np.float32))
        np.testing.assert_array_equal(ds["surface_flag"][k], flags)
    assert ds["soil_moisture"][:, :2].isnull().all()  # outside the swath


def test_smap_l2e_bounding_window(synthetic_archive):
    _, options, urls = synthetic_archive
    ds = open_granules("smap_l2e", urls["smap_l2e"], options, variables=["soil_moisture"])
    # the swath misses the window's first two rows
    expected = Window("M09", SMAP_WINDOW.row0 + 2, SMAP_WINDOW.col0, SMAP_WINDOW.nrows - 2, SMAP_WINDOW.ncols)
    np.testing.assert_array_equal(ds["y"], expected.y)
    np.testing.assert_array_equal(ds["x"], expected.x)
    assert list(ds.data_vars) == ["soil_moisture"]


def test_gldas_synthetic(synthetic_archive):
    _, options, urls = synthetic_archive
    ds = open_granules("gldas", urls["gldas"], options, window=SMAP_WINDOW)
    rows, cols = GLDAS_GRID.window_slices(SMAP_WINDOW, margin=1)
    np.testing.assert_array_equal(ds["lat"], GLDAS_GRID.lat[rows])
    assert (np.diff(ds["lat"]) > 0).all()
    assert "time_bnds" not in ds
    for k, url in enumerate(urls["gldas"]):
        with h5file(url, options) as f:
            raw = f["SoilMoi0_10cm_inst"][0, rows, cols]
        np.testing.assert_array_equal(ds["SoilMoi0_10cm_inst"][k], decoded(raw, -9999.0).astype(np.float32))


def test_ltdr_ndvi_scaled_and_descending(synthetic_archive):
    _, options, urls = synthetic_archive
    ds = open_granules("ltdr_ndvi", urls["ltdr_ndvi"], options, window=SMAP_WINDOW)
    rows, cols = LTDR_GRID.window_slices(SMAP_WINDOW, margin=1)
    np.testing.assert_allclose(ds["latitude"], LTDR_GRID.lat[rows])
    assert (np.diff(ds["latitude"]) < 0).all()
    assert ds["QA"].dtype == np.int16
    for k, url in enumerate(urls["ltdr_ndvi"]):
        with h5file(url, options) as f:
            raw = f["NDVI"][0, rows, cols]
        expected = decoded(raw, -9999, np.float32(1e-4), valid=(-1000, 10000))
        np.testing.assert_allclose(ds["NDVI"][k], expected, rtol=1e-6)
    assert np.isnan(ds["NDVI"][0, 0, 0])


def _tile_values(urls, options, variable, lut, decode, missing):
    """Mosaic by hand: each window cell takes pixel (i, j) of tile (h, v), read with h5py."""
    out = np.full(lut["h"].shape, missing, dtype=np.float64)
    for url in urls:
        tile = url.rsplit("/", 1)[1].split(".")[2]
        h, v = int(tile[1:3]), int(tile[4:6])
        where = (lut["h"] == h) & (lut["v"] == v)
        with h5file(url, options) as f:
            (grid,) = f["HDFEOS/GRIDS"].values()
            raw = grid[f"Data Fields/{variable}"][...]
        out[where] = decode(raw[lut["i"][where], lut["j"][where]])
    return out


def test_viirs_lst_mosaic(synthetic_archive):
    _, options, urls = synthetic_archive
    ds = open_granules("viirs_lst", urls["viirs_lst"], options, window=VIIRS_WINDOW)
    assert_lazy(ds)
    assert ds["LST_1KM"].dims == ("time", "day_night", "y", "x")
    np.testing.assert_array_equal(ds["x"], VIIRS_WINDOW.x)
    lut = sinusoidal_lookup(VIIRS_WINDOW, 1200)
    assert len(np.unique(lut["h"])) == 2, "the test window must straddle two tiles"
    for layer, letter in (("day", "VNP21A1D"), ("night", "VNP21A1N")):
        files = [u for u in urls["viirs_lst"] if letter in u]
        lst = _tile_values(files, options, "LST_1KM", lut,
                           lambda raw: decoded(raw, 0, np.float32(0.02), valid=(7500, 65535)), np.nan)
        np.testing.assert_allclose(ds["LST_1KM"].sel(day_night=layer)[0], lst, rtol=1e-6)
        qc = _tile_values(files, options, "QC", lut, lambda raw: raw, 65535)
        assert ds["QC"].dtype == np.uint16
        np.testing.assert_array_equal(ds["QC"].sel(day_night=layer)[0], qc)
    night = ds["LST_1KM"].sel(day_night="night")[0].values
    assert np.isnan(night[lut["h"] == 10]).all() and np.isfinite(night[lut["h"] == 9]).any()


def test_viirs_lai_codes_are_nan(synthetic_archive):
    _, options, urls = synthetic_archive
    ds = open_granules("viirs_lai", urls["viirs_lai"], options, window=VIIRS_WINDOW)
    assert ds["Lai"].dims == ("time", "y", "x")
    lut = sinusoidal_lookup(VIIRS_WINDOW, 2400)
    lai = _tile_values(urls["viirs_lai"], options, "Lai", lut,
                       lambda raw: decoded(raw, 255, 0.1, valid=(0, 100)), np.nan)
    np.testing.assert_allclose(ds["Lai"][0], lai, rtol=1e-6)
    assert ds["FparLai_QC"].dtype == np.uint8
    coded = np.isin(_tile_values(urls["viirs_lai"], options, "Lai", lut, lambda raw: raw, 0), [251, 254])
    assert coded.any() and np.isnan(ds["Lai"][0].values[coded]).all()


def test_viirs_default_window_covers_the_tiles(synthetic_archive):
    _, options, urls = synthetic_archive
    ds = open_granules("viirs_lai", urls["viirs_lai"], options, variables=["Lai"])
    assert ds.sizes["x"] > 1000 and ds.sizes["y"] > 1000  # two 10° tiles at 1 km
    assert ds["Lai"].chunks is not None
    by_tile = {url.rsplit("/", 1)[1].split(".")[2]: url for url in urls["viirs_lai"]}
    assert len(by_tile) == 2
    for url in by_tile.values():  # the window of both holds each tile's own window
        alone = open_granules("viirs_lai", [url], options, variables=["Lai"])
        for axis in ("x", "y"):
            assert ds[axis].min() <= alone[axis].min() and ds[axis].max() >= alone[axis].max()
        assert ds.sizes["x"] > alone.sizes["x"]


def test_missing_and_unreadable_files_are_named(tmp_path, synthetic_archive):
    _, options, urls = synthetic_archive
    folder = tmp_path / "smap_l4"
    folder.mkdir()
    missing = (folder / "SMAP_L4_SM_gph_20160601T223000_Vv8010_001.h5").as_uri()
    with pytest.raises(GranuleError, match="T223000.*does not exist"):
        open_granules("smap_l4", [missing])
    garbage = folder / "SMAP_L4_SM_gph_20160602T013000_Vv8010_001.h5"
    garbage.write_bytes(b"not an HDF5 file" * 100)
    with pytest.raises(GranuleError, match="20160602T013000.*not a readable HDF5"):
        open_granules("smap_l4", [garbage.as_uri()])
    with pytest.raises(GranuleError, match="not a SPL4SMGP file name"):
        open_granules("smap_l4", [(folder / "scene.h5").as_uri()])
    write_granules(tmp_path.as_uri(), None, "gldas", 1)
    impostor = folder / "SMAP_L4_SM_gph_20160602T043000_Vv8010_001.h5"
    shutil.copy(next((tmp_path / "gldas").iterdir()), impostor)
    with pytest.raises(GranuleError, match="T043000.*missing required variable Geophysical_Data/sm_surface"):
        open_granules("smap_l4", [impostor.as_uri()])


def test_real_gldas_through_references(real_data, archive_root):
    """The real GLDAS granules read through references equal netCDF4's read of the same files."""
    root, options = archive_root
    fs = fsspec.filesystem(root.split("://")[0], **(options or {}))
    files = sorted((real_data / "gldas").glob("*.nc4"))
    fs.makedirs(f"{root}/gldas", exist_ok=True)
    urls = []
    for path in files:
        url = f"{root}/gldas/{path.name}"
        fs.put_file(str(path), url)
        urls.append(url)
    ds = open_granules("gldas", urls, options)
    np.testing.assert_array_equal(ds["time"], REAL_GLDAS_TIMES)
    assert (np.diff(ds["lat"]) > 0).all()
    for k, path in enumerate(files):
        with netCDF4.Dataset(path) as nc:
            np.testing.assert_allclose(ds["lat"], nc["lat"][:], atol=1e-5)
            for name in ("SoilMoi0_10cm_inst", "SoilMoi10_40cm_inst"):
                expected = nc[name][0].filled(np.nan)
                np.testing.assert_array_equal(ds[name][k].values, expected)
                assert np.isnan(expected).any() and np.isfinite(expected).any()


def test_no_cyclic_collection_runs_while_a_granule_is_referenced(real_data, monkeypatch):
    """A CI run hung in kerchunk's translation: h5py held its lock while waiting on zarr's thread, and a
    collection on that thread that frees an h5py object waits for the lock. With collections after nearly
    every allocation, none starts (in any thread) while a granule is referenced."""
    translating = threading.Event()
    translate = references._Hdf5ToZarr.translate

    def watched_translate(self, *args, **kwargs):
        translating.set()
        try:
            return translate(self, *args, **kwargs)
        finally:
            translating.clear()

    collected_while_translating = []

    def on_collection(phase, info):
        if phase == "start" and translating.is_set():
            collected_while_translating.append(threading.current_thread().name)

    monkeypatch.setattr(references._Hdf5ToZarr, "translate", watched_translate)
    thresholds = gc.get_threshold()
    gc.set_threshold(1)
    gc.callbacks.append(on_collection)
    try:
        granule = next((real_data / "gldas").glob("*.nc4"))
        refs = references.reference_granule(reader("gldas"), granule.as_uri())
        threshold_after = gc.get_threshold()[0]
    finally:
        gc.callbacks.remove(on_collection)
        gc.set_threshold(*thresholds)
    assert "SoilMoi0_10cm_inst/.zarray" in refs["refs"]
    assert collected_while_translating == []
    assert threshold_after == 1  # collection resumes as it was


def test_empty_datasets_are_left_out_of_the_references(tmp_path):
    """As SMAP L2's polar group on a half orbit that saw no polar cell: kerchunk alone fails the granule."""
    path = tmp_path / "granule.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("Polar/soil_moisture", shape=(0,), dtype="f4")
        f.create_dataset("Swath/soil_moisture", data=np.arange(4, dtype="f4"))
    with open(path, "rb") as file:
        refs = references._Hdf5ToZarr(file, url=str(path), error="raise").translate()
        assert sorted(k for k in refs["refs"] if k.endswith(".zarray")) == ["Swath/soil_moisture/.zarray"]
        with pytest.raises(ValueError, match="Chunk size"):
            SingleHdf5ToZarr(file, url=str(path), error="raise").translate()


def test_cyclic_collection_resumes_when_the_last_thread_leaves():
    paused, entered, leave = references.cyclic_gc_paused, threading.Event(), threading.Event()
    thresholds = gc.get_threshold()

    def referencing():
        with paused:
            entered.set()
            leave.wait(30)

    other = threading.Thread(target=referencing)
    other.start()
    entered.wait(30)
    with paused:
        assert gc.get_threshold()[0] == 0
    assert gc.get_threshold()[0] == 0  # the other thread is still inside
    leave.set()
    other.join(30)
    assert gc.get_threshold() == thresholds


def test_cyclic_collection_stays_paused_when_dask_turns_it_back_on():
    """dask's `slice_array` calls `gc.enable()` whenever it returns; a thread that slices a dask array while
    another references a granule must not end the pause."""
    paused, collections = threading.Event(), []

    def on_collection(phase, info):
        if phase == "start" and paused.is_set():
            collections.append(threading.current_thread().name)

    thresholds = gc.get_threshold()
    gc.set_threshold(1)
    gc.callbacks.append(on_collection)
    try:
        with references.cyclic_gc_paused:
            paused.set()
            gc.disable()  # so that dask's turning collection on shows
            assert da.ones(10, chunks=5)[2:7].shape == (5,)
            assert gc.isenabled()
            for _ in range(1000):
                cycle = []
                cycle.append(cycle)
            paused.clear()
    finally:
        gc.callbacks.remove(on_collection)
        gc.set_threshold(*thresholds)
    assert collections == []


def _arrays_in(graph: dict) -> list[tuple[int, ...]]:
    """Shapes of the numpy arrays of more than 16 elements that pickling the graph meets."""
    found = []

    class Pickler(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, np.ndarray) and obj.size > 16:
                found.append(obj.shape)
            return NotImplemented

    Pickler(io.BytesIO()).dump(graph)
    return found


@pytest.mark.parametrize("product", ["viirs_lst", "viirs_lai"])
def test_viirs_chunks_equal_the_whole_window_and_read_only_what_they_touch(synthetic_archive, monkeypatch,
                                                                           product):
    """Spatial chunks of the window (`ViirsReader.chunk` cells a side) give the same mosaic as one chunk,
    and each chunk's task gets only the tiles its sub-window touches, cut to the block it takes pixels
    from (the lookup of the sub-window is built in the task: no index arrays in the graph)."""
    from soilcube.sources import viirs

    _, options, urls = synthetic_archive
    reader = viirs.ViirsLst if product == "viirs_lst" else viirs.ViirsLai
    monkeypatch.setattr(reader, "chunk", 10_000)
    whole = open_granules(product, urls[product], options, window=VIIRS_WINDOW).compute()
    monkeypatch.setattr(reader, "chunk", 25)
    lazy = open_granules(product, urls[product], options, window=VIIRS_WINDOW, variables=[reader.main])
    assert lazy[reader.main].data.numblocks[-2:] == (3, 5)  # 72 × 108 cells in chunks of 25
    graph = dict(lazy[reader.main].data.__dask_graph__())
    assert not _arrays_in(graph), "the graph must not carry lookup arrays"
    calls = []
    gather = viirs._gather

    def spy(pieces, window, pixels, shape, dtype, missing):
        calls.append((window, [(h, v, i0, j0, block.shape) for _, _, h, v, i0, j0, block in pieces]))
        return gather(pieces, window, pixels, shape, dtype, missing)

    monkeypatch.setattr(viirs, "_gather", spy)
    lazy = open_granules(product, urls[product], options, window=VIIRS_WINDOW, variables=[reader.main])
    xr.testing.assert_identical(lazy.compute(), whole[[reader.main]])
    assert {w for w, _ in calls} == {w for row in viirs._parts(VIIRS_WINDOW, 25) for w in row}
    one_tile = 0
    for window, pieces in calls:
        touched = lookup_blocks(sinusoidal_lookup(window, reader.pixels))
        assert {(h, v) for h, v, *_ in pieces} <= set(touched)
        one_tile += len(touched) == 1
        for h, v, i0, j0, shape in pieces:
            assert touched[(h, v)] == (slice(i0, i0 + shape[0]), slice(j0, j0 + shape[1]))
    assert one_tile, "some chunks must lie within one tile"


def test_viirs_chunk_is_the_cube_shard():
    """The mosaic's chunks are the tiles `runs.downscale_window` processes: no spatial rechunk between."""
    from soilcube import runs
    from soilcube.sources.viirs import ViirsReader

    assert ViirsReader.chunk == runs.TILE_PIXELS
