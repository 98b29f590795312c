"""build_archive end to end on a small region: every product written, every granule in the real layout,
the truth cube readable and nested, the ISMN tree readable by the `ismn` package."""

import subprocess
import sys
from datetime import date

import fsspec
import numpy as np
import pytest
import xarray as xr

from soilcube import granules, grids
from soilcube.grids import Region
from soilcube.synth.archive import GRANULE_PRODUCTS, PRODUCTS, build_archive, write_ismn
from soilcube.synth.nature import NatureRun
from soilcube.synth.observe import L4_CENTRES_H, ismn_stations

TINY = Region("tiny", 84, 220, 2, 2)  # 72 km × 72 km inside the Oklahoma test region
START, END = date(2019, 6, 1), date(2019, 6, 3)
# The products that ../shared/tools/layouts.json describes.
CHECKED = ("smap_l2e", "smap_l4", "gldas", "viirs_lst", "viirs_lai", "ltdr_ndvi")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("archive")
    summary = build_archive(TINY, START, END, root.as_uri(), seed=3, gldas_years=0.02, progress=False)
    return root, summary


def test_every_product_is_written(archive):
    root, summary = archive
    assert set(summary.counts) == set(PRODUCTS)
    for product in GRANULE_PRODUCTS:
        names = sorted(p.name for p in (root / product).iterdir())
        assert len(names) == summary.counts[product] > 0, product
        for name in names:
            granules.parse(product, name)  # real file-name patterns
        assert summary.sizes[product] > 0
    days = (END - START).days + 1
    assert summary.counts["smap_l3e"] == days
    assert summary.counts["smap_l4"] == 8 * days
    # 8 steps a day in the study period plus the fit's 4 a day in the 7 historic days.
    assert summary.counts["gldas"] == 8 * days + 4 * 7
    assert summary.counts["ltdr_ndvi"] == days + 7
    assert summary.rows()[-1]["items"] == sum(summary.counts.values())


def test_every_granule_passes_the_layout_check(archive, check_layout):
    root, _ = archive
    for product in CHECKED:
        files = sorted(str(p) for p in (root / product).iterdir())
        command = [sys.executable, str(check_layout), product, *files]
        run = subprocess.run(command, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr


def test_truth_cube_holds_nested_synthetic_truth(archive):
    root, _ = archive
    url = (root / "truth.zarr").as_uri()
    groups = ("M400", "M01", "M09", "M01_3h", "static")
    open_group = {g: xr.open_zarr(url, group=g, consolidated=False) for g in groups}
    m400, m01, m09, m3h = (open_group[g].sm for g in groups[:4])
    assert m01.dims == ("time", "overpass", "y", "x") and list(m01.overpass.values) == ["AM", "PM"]
    assert m01.sizes["time"] == 3 and m3h.sizes["time"] == 3 * len(L4_CENTRES_H)
    assert m01.attrs["units"] == "m3 m-3" and "synthetic" in open_group["M01"].attrs["source"]
    np.testing.assert_allclose(m01.x.values, TINY.window("M01").x)
    np.testing.assert_allclose(m400.y.values, TINY.window("M400").y)
    # Stored to 1e-4: the nesting holds to that precision.
    np.testing.assert_allclose(grids.block_mean(m01.values, 9), m09.values, atol=2e-4)
    np.testing.assert_allclose(grids.block_mean(m400.values, 90), grids.block_mean(m01.values, 36), atol=2e-4)
    assert np.isfinite(m3h.values).all()
    assert float(open_group["static"].porosity.min()) > 0.3


def test_ismn_tree_opens_with_the_ismn_package(archive, tmp_path):
    from ismn.interface import ISMN_Interface

    root, _ = archive
    stm = sorted((root / "ismn").rglob("*.stm"))
    assert stm and all(b"\r\n" in p.read_bytes()[:200] for p in stm)
    # ISMN_Interface writes its metadata cache into the tree: give it a copy.
    nature = NatureRun(TINY, START, END, seed=3)
    write_ismn(tmp_path.as_uri(), ismn_stations(nature), None)
    interface = ISMN_Interface(str(tmp_path / "ismn"))
    assert interface.networks and len(interface.collection.networks["SOILCUBE"].stations) == 10
    data, meta = interface.read(0, return_meta=True)
    assert len(data) == 24 * 3 and data["soil_moisture"].between(0, 0.6).all()
    assert meta["instrument"]["depth_to"] == 0.05 and meta["network"]["val"] == "SOILCUBE"


def test_campaign_fields_are_1km_ease2_netcdf(archive):
    root, summary = archive
    files = sorted((root / "campaign").iterdir())
    assert len(files) == summary.counts["campaign"] == 3
    ds = xr.open_dataset(files[0], engine="h5netcdf")
    m01 = TINY.window("M01")
    assert np.isin(ds.x.values, m01.x).all() and np.isin(ds.y.values, m01.y).all()
    assert ds.sm.attrs["grid_mapping"] == "crs" and "6933" in ds.crs.attrs["crs_wkt"]


def test_subset_to_an_object_store(archive_root):
    url, storage_options = archive_root
    summary = build_archive(TINY, START, START, url, seed=3, gldas_years=0,
                            storage_options=storage_options, products=["smap_l4", "ismn", "truth"],
                            progress=False)
    assert set(summary.counts) == {"smap_l4", "ismn", "truth"} and summary.counts["smap_l4"] == 8
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    assert len(fs.ls(f"{path}/smap_l4")) == 8
    truth = xr.open_zarr(f"{url}/truth.zarr", group="M09", consolidated=False,
                         storage_options=storage_options)
    assert truth.sm.sizes["time"] == 1 and np.isfinite(truth.sm.values).all()


def test_unknown_product_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown product"):
        build_archive(TINY, START, START, tmp_path.as_uri(), products=["smap_l5"], progress=False)
