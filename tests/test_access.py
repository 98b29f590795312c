"""open_cube: what an analyst gets back, by version, and the errors for wrong URLs and versions; the STAC
catalog that describes the cubes."""

import json
from datetime import UTC
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pystac
import pytest
import xarray as xr
from pyproj import Transformer
from pystac.extensions.datacube import DatacubeExtension
from stac_pydantic import Catalog, Collection

from soilcube import store
from soilcube.access import FsspecStacIO, open_cube, write_stac_catalog
from soilcube.grids import REGIONS
from soilcube.visir.qa import QA, qa_attrs

WINDOW = REGIONS["oklahoma"].window("M09")
LAYOUT = store.CubeLayout(time_shard=8, spatial_shard=20, spatial_chunk=10)
# the fused cube's 3-hourly steps, 01:30 … 22:30, for four days
SCENES = (
    np.arange("2016-07-01", "2016-07-05", dtype="datetime64[D]")[:, None] + np.timedelta64(90, "m")
    + np.arange(8) * np.timedelta64(3, "h")
).ravel().astype("datetime64[ns]")
NAME = "fused_1km_3h"


def scenes(indices) -> xr.Dataset:
    sm = np.stack([np.full(WINDOW.shape, 0.01 * i, dtype=np.float32) for i in indices])
    return xr.Dataset(
        {"sm": (("time", "y", "x"), sm)}, coords={"time": SCENES[list(indices)], "y": WINDOW.y, "x": WINDOW.x}
    )


@pytest.fixture
def store_url(tmp_path):
    url = str(tmp_path / "store")  # a plain path works as well as file://
    store.create_cube(url, NAME, WINDOW, SCENES, variables={"sm": np.float32}, layout=LAYOUT, status=True,
                      attrs={"title": "STF_SSM 3-hourly 1 km"})
    return url


def test_open_cube_is_lazy_decoded_and_georeferenced(store_url):
    store.write_slices(store_url, NAME, scenes([9, 10]), provenance={}, message="day 2", status="nrt")
    cube = open_cube(f"{store_url}/{NAME}")
    assert isinstance(cube.sm.data, da.Array)
    assert cube.sm.chunks == ((8,) * 4, (20, 20), (20, 20))  # one dask chunk per shard
    assert cube.time.dtype == np.dtype("datetime64[ns]")
    np.testing.assert_array_equal(cube.time.values, SCENES)  # 01:30 … 22:30 exactly
    assert "crs" in cube.coords and cube.crs.attrs["grid_mapping_name"] == "lambert_cylindrical_equal_area"
    assert cube.sm.encoding["grid_mapping"] == "crs" and cube.attrs["title"] == "STF_SSM 3-hourly 1 km"
    np.testing.assert_allclose(cube.sm.isel(time=[9, 10]).values[:, 0, 0], [0.09, 0.10])
    assert int(cube.sm.count()) == 2 * WINDOW.nrows * WINDOW.ncols  # NaN everywhere else
    np.testing.assert_array_equal(np.flatnonzero(cube.status.values), [9, 10])


def test_cf_xarray_reads_the_axes_the_grid_mapping_and_the_flags(tmp_path):
    """The CF attributes are what a CF library reads: an analyst decodes the QA bits and the status with
    cf_xarray, lazily."""
    import cf_xarray  # noqa: F401  (registers the .cf accessor)

    url = str(tmp_path / "store")
    store.create_cube(url, "downscaled_1km", WINDOW, SCENES[::8], variables={"sm": np.float32,
                      "qa": np.uint8}, variable_attrs={"qa": qa_attrs()}, layout=LAYOUT, status=True)
    qa = np.zeros((2, *WINDOW.shape), np.uint8)
    qa[0, 0, 0] = QA.NO_DELTA_T | QA.CLASS_BORROWED
    sm = np.full(qa.shape, 0.2, np.float32)
    made = xr.Dataset({"sm": (("time", "y", "x"), sm), "qa": (("time", "y", "x"), qa)},
                      coords={"time": SCENES[::8][1:3], "y": WINDOW.y, "x": WINDOW.x})
    store.write_slices(url, "downscaled_1km", made, provenance={}, message="2 days", status="final")
    cube = open_cube(f"{url}/downscaled_1km")
    assert cube.cf.axes == {"X": ["x"], "Y": ["y"], "T": ["time"]}
    assert cube.cf.grid_mapping_names == {"lambert_cylindrical_equal_area": ["crs"]}
    np.testing.assert_array_equal((cube.status.cf == "final").values, [False, True, True, False])
    flags = cube.qa.cf.flags
    assert list(flags) == [flag.name.lower() for flag in QA] and isinstance(flags.no_delta_t.data, da.Array)
    assert int(flags.no_delta_t.sum()) == int(flags.class_borrowed.sum()) == 1
    assert bool(flags.no_delta_t.isel(time=1, y=0, x=0)) and not bool(flags.no_smap.any())


def test_versions_by_tag_and_by_snapshot_id(store_url):
    first = store.write_slices(store_url, NAME, scenes([0]), provenance={}, message="first", status="nrt")
    store.tag_release(store_url, NAME, "v1")
    store.write_slices(store_url, NAME, scenes([0, 1]), provenance={}, message="second", status="final")
    url = f"{store_url}/{NAME}"
    assert int(open_cube(url).sm.count()) == 2 * WINDOW.nrows * WINDOW.ncols
    for version in ("v1", first):
        old = open_cube(url, version=version)
        assert int(old.sm.count()) == WINDOW.nrows * WINDOW.ncols and old.status.values[0] == 1


def test_missing_cube_and_unknown_version_are_clear_errors(store_url, tmp_path):
    with pytest.raises(FileNotFoundError, match="no cube"):
        open_cube(f"{store_url}/downscaled_1km")
    store.tag_release(store_url, NAME, "v1")
    for version in ("v2", "0000000000000000000A", "not a snapshot"):
        with pytest.raises(ValueError, match=f"no version '{version}'.*tags: v1"):
            open_cube(f"{store_url}/{NAME}", version=version)
    with pytest.raises(ValueError, match="unsupported store URL"):
        open_cube(f"gs://bucket/{NAME}")


def window_box(window) -> list[float]:
    """[W, S, E, N] of the window's outer edges, from the grid's corner and cell size."""
    grid = window.grid
    x = grid.x0 + np.array([window.col0, window.col0 + window.ncols]) * grid.cell_size
    y = grid.y0 - np.array([window.row0 + window.nrows, window.row0]) * grid.cell_size
    lon, lat = Transformer.from_crs("EPSG:6933", "EPSG:4326", always_xy=True).transform(x, y)
    return [lon[0], lat[0], lon[1], lat[1]]


def utc(time) -> object:
    return pd.Timestamp(time).to_pydatetime().replace(tzinfo=UTC)


def test_stac_catalog_describes_each_cube_as_it_is_when_written(store_url):
    with pytest.raises(FileNotFoundError, match="no cubes in"):
        write_stac_catalog(f"{store_url}-empty")
    store.write_slices(store_url, NAME, scenes([9, 10]), provenance={}, message="day 2", status="nrt")
    store.tag_release(store_url, NAME, "v1")
    url, _ = write_stac_catalog(store_url)
    assert url == f"{store_url}/stac/catalog.json"
    assert_valid_stac(Path(url))
    (collection,) = pystac.Catalog.from_file(url).get_children()
    assert collection.id == NAME
    np.testing.assert_allclose(collection.extent.spatial.bboxes[0], window_box(WINDOW))
    three_hours = np.timedelta64(3, "h")  # the period ends one step after the last scene made
    assert collection.extent.temporal.intervals == [[utc(SCENES[9]), utc(SCENES[10] + three_hours)]]
    cube = DatacubeExtension.ext(collection)
    assert pd.Timedelta(cube.dimensions["time"].step) == pd.Timedelta("3h")
    assert cube.dimensions["time"].extent == ["2016-07-01T01:30:00Z", "2016-07-04T22:30:00Z"]
    cell = WINDOW.grid.cell_size
    assert cube.dimensions["x"].step == pytest.approx(cell)
    assert cube.dimensions["y"].step == pytest.approx(-cell)  # rows run north to south
    assert cube.dimensions["x"].reference_system == 6933
    assert cube.variables["sm"].dimensions == ["time", "y", "x"] and cube.variables["sm"].unit == "m3 m-3"
    assert cube.variables["status"].var_type == "auxiliary"
    asset = collection.assets["cube"]
    assert asset.href == f"{store_url}/{NAME}" and asset.extra_fields["icechunk:tags"] == ["v1"]
    assert asset.media_type == "application/vnd.zarr+icechunk"
    assert asset.extra_fields["icechunk:snapshot_id"] == store.history(store_url, NAME)[0].snapshot_id
    assert int(open_cube(asset.href, version="v1").sm.count()) == 2 * WINDOW.nrows * WINDOW.ncols

    newer = store.write_slices(store_url, NAME, scenes([20]), provenance={}, message="day 3", status="nrt")
    (collection,) = pystac.Catalog.from_file(write_stac_catalog(store_url)[0]).get_children()
    assert collection.extent.temporal.intervals == [[utc(SCENES[9]), utc(SCENES[20] + three_hours)]]
    assert collection.assets["cube"].extra_fields["icechunk:snapshot_id"] == newer


def assert_valid_stac(catalog: Path) -> None:
    """The files hold valid STAC 1.x core objects (stac-pydantic's models of the spec: offline, unlike the
    JSON schemas, which pystac fetches from the network; the extensions' fields are not checked here)."""
    Catalog.model_validate(json.loads(catalog.read_text()))
    collections = list(catalog.parent.glob("*/collection.json"))
    assert collections
    for collection in collections:
        Collection.model_validate(json.loads(collection.read_text()))


def test_a_stac_catalog_of_a_store_given_as_a_relative_path_names_the_cube_absolutely(tmp_path, monkeypatch):
    folder = tmp_path / "my store"  # (a character a file:// URL would encode)
    store.create_cube(str(folder), NAME, WINDOW, SCENES, variables={"sm": np.float32}, layout=LAYOUT)
    monkeypatch.chdir(tmp_path)
    url, _ = write_stac_catalog(folder.name)
    assert url == str(folder / "stac" / "catalog.json")
    (collection,) = pystac.Catalog.from_file(url).get_children()
    assert collection.assets["cube"].get_absolute_href() == str(folder / NAME)
    assert open_cube(collection.assets["cube"].href).sizes["time"] == len(SCENES)


@pytest.mark.slow
def test_stac_catalog_on_the_real_s3_server(seaweedfs):
    url, options = f"{seaweedfs.new_bucket()}/cubes", seaweedfs.storage_options
    store.create_cube(url, NAME, WINDOW, SCENES, variables={"sm": np.float32}, layout=LAYOUT, status=True,
                      storage_options=options)
    catalog, _ = write_stac_catalog(url, storage_options=options)
    assert catalog == f"{url}/stac/catalog.json"
    (collection,) = pystac.Catalog.from_file(catalog, stac_io=FsspecStacIO(options)).get_children()
    assert collection.assets["cube"].href == f"{url}/{NAME}"
    # nothing made yet: the period is the whole time axis
    whole_axis = [utc(SCENES[0]), utc(SCENES[-1] + np.timedelta64(3, "h"))]
    assert collection.extent.temporal.intervals == [whole_axis]
