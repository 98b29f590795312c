"""Persisted references (soilcube.refs): incremental updates, unreadable granules reported and skipped, the
index written last, combined sets (JSON and parquet) reused by the readers."""

import io
import os
import shutil
import time

import fsspec
import fsspec.implementations.local
import h5py
import netCDF4
import numpy as np
import pytest
from synthetic_granules import SMAP_WINDOW, VIIRS_WINDOW, write_gldas, write_granules, write_smap_l4
from typer.testing import CliRunner

from soilcube import refs
from soilcube.cli import app
from soilcube.refs import build_references, read_index
from soilcube.sources import GranuleError, open_granules


def names(urls):
    return sorted(url.rsplit("/", 1)[1] for url in urls)


def l4_through_h5py(url, options):
    fs, path = fsspec.core.url_to_fs(url, **(options or {}))
    with h5py.File(io.BytesIO(fs.cat_file(path)), "r") as f:  # not through fsspec: see cyclic_gc_paused
        raw = f["Geophysical_Data/sm_surface"][SMAP_WINDOW.slices]
    return np.where(raw == -9999.0, np.nan, raw)


def refs_listing(root, options, product):
    fs, path = fsspec.core.url_to_fs(f"{root}/refs/{product}", **(options or {}))
    fs.invalidate_cache()
    return sorted(p.rsplit("/", 1)[1] for p in fs.ls(path, detail=False))


def test_incremental_references(archive_root, monkeypatch):
    monkeypatch.setattr(refs, "UNINDEXED_GRACE_S", 0)  # superseded objects go at once
    root, options = archive_root
    l4 = write_granules(root, options, "smap_l4", 2)
    gldas = write_granules(root, options, "gldas", 2)
    report = build_references(root, ["smap_l4", "gldas"], options, progress=False)
    assert report.failed == {}
    assert report.products["smap_l4"].referenced == names(l4)
    assert report.products["gldas"].referenced == names(gldas)
    first_combined = report.products["smap_l4"].combined
    index = read_index(root, "smap_l4", options)
    assert list(index["status"]) == ["ok", "ok"]
    assert list(index["version"]) == ["Vv8010_001", "Vv8010_001"]
    assert list(index["time"]) == list(open_granules("smap_l4", l4, options)["time"].values)

    # a new granule: only it is referenced, and the combined set is replaced
    new = write_smap_l4(root, options, 2)
    report = build_references(root, ["smap_l4", "gldas"], options, progress=False)
    assert report.products["smap_l4"].referenced == names([new])
    assert report.products["smap_l4"].reused == names(l4)
    assert report.products["gldas"].referenced == [] and report.products["gldas"].reused == names(gldas)
    assert report.products["smap_l4"].combined != first_combined
    assert first_combined.rsplit("/", 1)[1] not in refs_listing(root, options, "smap_l4")

    # a reprocessed granule: it is re-referenced, and reads return its new values
    changed = write_smap_l4(root, options, 0, offset=0.01)
    report = build_references(root, ["smap_l4"], options, progress=False)
    assert report.products["smap_l4"].referenced == names([changed])
    ds = open_granules("smap_l4", l4 + [new], options, window=SMAP_WINDOW)
    for k, url in enumerate(sorted(l4 + [new])):
        np.testing.assert_array_equal(ds["sm_surface"][k], l4_through_h5py(url, options).astype(np.float32))

    # nothing changed: nothing is referenced again
    report = build_references(root, ["smap_l4"], options, progress=False)
    assert report.products["smap_l4"].referenced == [] and len(report.products["smap_l4"].reused) == 3


def test_unreadable_granules_are_reported_and_skipped(archive_root):
    root, options = archive_root
    good = write_granules(root, options, "smap_l4", 2)
    fs, _ = fsspec.core.url_to_fs(root, **(options or {}))
    whole = fs.cat_file(good[0])
    folder = f"{root}/smap_l4"
    gldas_bytes = fs.cat_file(write_gldas(root, options, 0))
    bad = {
        "SMAP_L4_SM_gph_20160602T013000_Vv8010_001.h5": (whole[: len(whole) // 2], "not a readable HDF5"),
        "SMAP_L4_SM_gph_20160602T043000_Vv8010_001.h5": (b"\x89HDF garbage" * 1000, "not a readable HDF5"),
        "SMAP_L4_SM_gph_20160602T073000_Vv8010_001.h5": (gldas_bytes, "missing required variable"),
        "sm_surface_scene.h5": (whole, "not a SPL4SMGP file name"),
    }
    for name, (data, _) in bad.items():
        fs.pipe_file(f"{folder}/{name}", data)
    report = build_references(root, ["smap_l4"], options, progress=False)
    assert report.products["smap_l4"].referenced == names(good)
    assert sorted(report.products["smap_l4"].failed) == sorted(bad)
    for name, (_, reason) in bad.items():
        assert reason in report.failed[f"smap_l4/{name}"]
    index = read_index(root, "smap_l4", options)
    assert sorted(index.loc[index["status"] == "failed", "name"]) == sorted(bad)
    assert refs_listing(root, options, "smap_l4") == sorted(
        [report.products["smap_l4"].combined.rsplit("/", 1)[1], "granules", "index.csv"])

    assert open_granules("smap_l4", good, options)["sm_surface"].shape[0] == 2
    truncated = f"{folder}/SMAP_L4_SM_gph_20160602T013000_Vv8010_001.h5"
    with pytest.raises(GranuleError, match="20160602T013000.*not a readable HDF5"):
        open_granules("smap_l4", good + [truncated], options)


def test_the_refs_verb_names_each_unreadable_granule_and_exits_1_while_one_remains(tmp_path):
    root = tmp_path.as_uri()
    good = write_granules(root, None, "smap_l4", 1)
    truncated = tmp_path / "smap_l4" / "SMAP_L4_SM_gph_20160602T013000_Vv8010_001.h5"
    truncated.write_bytes((tmp_path / "smap_l4" / good[0].rsplit("/", 1)[1]).read_bytes()[:5000])
    for _ in range(2):  # the second run reuses the failure found by the first
        result = CliRunner().invoke(app, ["refs", "--archive", root, "--products", "smap_l4"])
        assert result.exit_code == 1
        assert f"unreadable granule smap_l4/{truncated.name}: not a readable HDF5" in result.output
    truncated.unlink()
    assert CliRunner().invoke(app, ["refs", "--archive", root, "--products", "smap_l4"]).exit_code == 0


def test_granules_whose_scale_differs_are_not_combined(tmp_path):
    root = tmp_path.as_uri()
    urls = write_granules(root, None, "gldas", 3)
    odd = tmp_path / "gldas" / urls[1].rsplit("/", 1)[1]
    with h5py.File(odd, "r+") as f:
        f["SoilMoi0_10cm_inst"].attrs["scale_factor"] = np.float32(2.0)
    report = build_references(root, ["gldas"], progress=False)
    assert list(report.failed) == [f"gldas/{odd.name}"]
    assert "layout differs" in report.failed[f"gldas/{odd.name}"]
    assert open_granules("gldas", [urls[0], urls[2]])["SoilMoi0_10cm_inst"].shape[0] == 2


def test_a_time_taken_twice_keeps_the_later_granule(tmp_path):
    root = tmp_path.as_uri()
    (url,) = write_granules(root, None, "ltdr_ndvi", 1)
    kept = tmp_path / "ltdr_ndvi" / url.rsplit("/", 1)[1]
    older = kept.with_name(kept.name.replace("NOAA-19", "NOAA-18"))
    shutil.copy(kept, older)
    report = build_references(root, ["ltdr_ndvi"], progress=False)
    assert report.failed == {f"ltdr_ndvi/{older.name}": f"same time as {kept.name}, which is used instead"}
    assert list(open_granules("ltdr_ndvi", [url])["granule"].values) == [kept.name]


def test_removed_granules_leave_the_index(tmp_path, monkeypatch):
    monkeypatch.setattr(refs, "UNINDEXED_GRACE_S", 0)
    root = tmp_path.as_uri()
    urls = write_granules(root, None, "smap_l4", 2)
    build_references(root, ["smap_l4"], progress=False)
    gone = tmp_path / "smap_l4" / urls[0].rsplit("/", 1)[1]
    gone.unlink()
    report = build_references(root, ["smap_l4"], progress=False)
    assert report.products["smap_l4"].removed == [gone.name]
    assert list(read_index(root, "smap_l4")["name"]) == names(urls[1:])
    assert not (tmp_path / "refs" / "smap_l4" / "granules" / f"{gone.name}.json").exists()


def test_a_build_keeps_young_unindexed_references_of_a_concurrent_build(tmp_path):
    root = tmp_path.as_uri()
    write_granules(root, None, "smap_l4", 2)
    build_references(root, ["smap_l4"], progress=False)
    # what a build running at the same time has written and its index (written later) will name
    folder = tmp_path / "refs" / "smap_l4"
    theirs = [folder / "granules" / "SMAP_L4_SM_gph_20991231T223000_Vv8010_001.h5.json",
              folder / "combined-0ff.json"]
    for path in theirs:
        path.write_text("{}")
    build_references(root, ["smap_l4"], progress=False)
    assert all(path.exists() for path in theirs)
    two_days_ago = time.time() - 2 * 24 * 3600
    for path in theirs:  # left behind by a build that died: removed once old
        os.utime(path, (two_days_ago, two_days_ago))
    build_references(root, ["smap_l4"], progress=False)
    assert not any(path.exists() for path in theirs)


def test_an_interrupted_run_leaves_the_previous_index(tmp_path, monkeypatch):
    root = tmp_path.as_uri()
    urls = write_granules(root, None, "smap_l4", 2)
    build_references(root, ["smap_l4"], progress=False)
    before = (tmp_path / "refs" / "smap_l4" / "index.csv").read_bytes()
    write_smap_l4(root, None, 2)
    put = refs.Archive.put

    def fail_on_index(self, path, data):
        if path.endswith("index.csv"):
            raise OSError("disk full")
        put(self, path, data)

    monkeypatch.setattr(refs.Archive, "put", fail_on_index)
    with pytest.raises(OSError, match="disk full"):
        build_references(root, ["smap_l4"], progress=False)
    assert (tmp_path / "refs" / "smap_l4" / "index.csv").read_bytes() == before
    assert not list((tmp_path / "refs" / "smap_l4").glob("*.partial-*"))
    ds = open_granules("smap_l4", urls, window=SMAP_WINDOW)
    np.testing.assert_array_equal(ds["sm_surface"][1], l4_through_h5py(urls[1], None).astype(np.float32))


# fsspec's parquet references use pandas' fastparquet engine, which pandas 3 deprecates (no pyarrow here)
@pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")
@pytest.mark.parametrize("parquet", [False, True])
def test_readers_reuse_persisted_references(tmp_path, monkeypatch, parquet):
    root = tmp_path.as_uri()
    l4 = write_granules(root, None, "smap_l4", 3)
    l3 = write_granules(root, None, "smap_l3e", 1)
    if parquet:
        monkeypatch.setattr(refs, "PARQUET_MIN_REFS", 1)
    report = build_references(root, ["smap_l4", "smap_l3e"], progress=False)
    assert report.products["smap_l4"].combined.endswith(".parq" if parquet else ".json")
    assert report.products["smap_l3e"].combined == ""

    def no_referencing(*args):
        raise AssertionError("persisted references should have been used")

    monkeypatch.setattr(refs, "reference_granule", no_referencing)
    ds = open_granules("smap_l4", l4[1:], window=SMAP_WINDOW)  # a subset of the combined set
    assert list(ds["granule"].values) == names(l4[1:])
    for k, url in enumerate(l4[1:]):
        np.testing.assert_array_equal(ds["sm_surface"][k], l4_through_h5py(url, None).astype(np.float32))
    l3_soil_moisture = open_granules("smap_l3e", l3, window=SMAP_WINDOW)["soil_moisture"]
    assert l3_soil_moisture.shape == (1, 2, *SMAP_WINDOW.shape)


def test_real_gldas_persisted_references(real_data, archive_root):
    root, options = archive_root
    fs, _ = fsspec.core.url_to_fs(root, **(options or {}))
    files = sorted((real_data / "gldas").glob("*.nc4"))
    fs.makedirs(f"{root}/gldas", exist_ok=True)
    for path in files:
        fs.put_file(str(path), f"{root}/gldas/{path.name}")
    report = build_references(root, ["gldas"], options, progress=False)
    assert report.failed == {} and report.products["gldas"].referenced == [p.name for p in files]
    ds = open_granules("gldas", [f"{root}/gldas/{p.name}" for p in files], options)
    for k, path in enumerate(files):
        with netCDF4.Dataset(path) as nc:
            expected = nc["SoilMoi0_10cm_inst"][0].filled(np.nan)
            np.testing.assert_array_equal(ds["SoilMoi0_10cm_inst"][k].values, expected)


def test_unreadable_granules_blames_bad_bytes_and_missing_files_not_the_network(
    tmp_path, monkeypatch, bit_rot
):
    root = tmp_path.as_uri()
    urls = write_granules(root, None, "smap_l4", 3)
    build_references(root, ["smap_l4"], progress=False)
    assert refs.unreadable_granules("smap_l4", urls) == {}
    rotten, gone = (tmp_path / "smap_l4" / url.rsplit("/", 1)[1] for url in urls[:2])
    indexed = {name: {k: row[k] for k in refs.SIGNATURE_KEYS}
               for name, row in refs.Archive(root).read_index("smap_l4").items()}
    bit_rot(rotten)
    gone.unlink()
    bad = refs.unreadable_granules("smap_l4", urls)
    assert set(bad) == {urls[0], urls[1]}
    assert bad[urls[0]].reason.startswith("unreadable data") and bad[urls[1]].reason == "file does not exist"
    # the versions checked: the file as listed (the same as indexed, its size and time kept), the vanished
    # one as indexed
    for url, path in zip(urls[:2], (rotten, gone), strict=True):
        assert bad[url].versions == (indexed[path.name],)

    def connection_reset(*args, **kwargs):
        raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(fsspec.implementations.local.LocalFileSystem, "cat_file", connection_reset)
    with pytest.raises(Exception, match="reset|failed to fetch") as raised:
        refs.unreadable_granules("smap_l4", urls[2:])
    assert refs.transient(raised.value)


def test_unreadable_granules_blame_only_what_the_caller_reads(tmp_path, bit_rot):
    """Damage in an array the caller does not read leaves the granule serving."""
    root = tmp_path.as_uri()
    urls = write_granules(root, None, "smap_l4", 1)
    build_references(root, ["smap_l4"], progress=False)
    bit_rot(tmp_path / "smap_l4" / names(urls)[0], "sm_rootzone")

    def blamed(variables):
        return refs.unreadable_granules("smap_l4", urls, windows=[SMAP_WINDOW], variables=variables)

    assert blamed(["sm_surface"]) == {}
    for variables in (["sm_rootzone"], None):
        assert blamed(variables)[urls[0]].reason.startswith("unreadable data")


def test_unreadable_granules_blame_no_damage_outside_the_window(tmp_path, bit_rot):
    """A VIIRS tile damaged only in a block that the window does not reach reads fine, alone or first among
    others, and is not blamed; damaged inside the window, it is."""
    root, lst = tmp_path.as_uri(), "LST_1KM"
    urls = write_granules(root, None, "viirs_lst", 1)
    build_references(root, ["viirs_lst"], progress=False)
    granule = tmp_path / "viirs_lst" / names(urls)[0]
    bit_rot(granule, lst, block="0.0")  # the tile's north-west corner, far from the window
    for order in (urls, urls[::-1]):
        open_granules("viirs_lst", order, window=VIIRS_WINDOW, variables=[lst]).load()

    def blamed():
        return list(refs.unreadable_granules("viirs_lst", urls, windows=[VIIRS_WINDOW], variables=[lst]))

    assert blamed() == []
    bit_rot(granule, lst)
    assert blamed() == [urls[0]]


def test_rejections_survive_concurrent_builds_and_cover_the_versions_checked(tmp_path, monkeypatch, bit_rot):
    """A run rejects a granule while a build that read the index before writes its own: both the rejection
    and the build's new granule hold. A rejection covers the version of the file checked and the one the
    index described (a file changed since it was referenced), until a newer version is referenced."""
    root = tmp_path.as_uri()
    urls = write_granules(root, None, "smap_l4", 3)
    build_references(root, ["smap_l4"], progress=False)
    rotten, changed, _ = (tmp_path / "smap_l4" / name for name in names(urls))
    rejected_dir = tmp_path / "refs" / "smap_l4" / "rejected"
    bit_rot(rotten)

    write_index = refs.Archive.write_index

    def rejection_just_before(archive, product, rows):  # the race: between the build's read and write
        refs.reject_granules(root, "smap_l4", refs.unreadable_granules("smap_l4", urls[:1]))
        write_index(archive, product, rows)

    monkeypatch.setattr(refs.Archive, "write_index", rejection_just_before)
    new = write_smap_l4(root, None, 3)
    report = build_references(root, ["smap_l4"], progress=False)
    monkeypatch.setattr(refs.Archive, "write_index", write_index)
    assert report.products["smap_l4"].referenced == names([new])
    index = read_index(root, "smap_l4").set_index("name")
    assert list(index["status"]) == ["failed", "ok", "ok", "ok"]
    assert index.loc[rotten.name, "reason"].startswith("unreadable data")
    assert refs.granule_urls(root, "smap_l4") == sorted([*urls[1:], new])
    with pytest.raises(GranuleError, match="unreadable data"):
        open_granules("smap_l4", urls[:1])
    # a later build keeps it rejected (the same file) and keeps the record
    assert list(build_references(root, ["smap_l4"], progress=False).failed) == [f"smap_l4/{rotten.name}"]
    assert len(list(rejected_dir.glob("*.json"))) == 1

    # a file replaced since it was referenced, and the new one bad: the row runs read it from is rejected
    # too, so runs skip it before any build references the new file
    changed.write_bytes(changed.read_bytes()[:2000])
    [unreadable] = refs.unreadable_granules("smap_l4", urls[1:2]).values()
    assert len(unreadable.versions) == 2
    refs.reject_granules(root, "smap_l4", {urls[1]: unreadable})
    assert refs.granule_urls(root, "smap_l4") == sorted([urls[2], new])
    assert len(list(rejected_dir.glob("*.json"))) == 2

    # good files again: referenced anew, the rejections no longer apply; stale, they go after the grace
    for path, k in ((rotten, 0), (changed, 1)):
        path.unlink()
        write_smap_l4(root, None, k, offset=0.01)
    assert build_references(root, ["smap_l4"], progress=False).failed == {}
    assert (read_index(root, "smap_l4")["status"] == "ok").all()
    assert len(list(rejected_dir.glob("*.json"))) == 2
    monkeypatch.setattr(refs, "UNINDEXED_GRACE_S", 0)
    build_references(root, ["smap_l4"], progress=False)
    assert list(rejected_dir.glob("*.json")) == []


def test_rejections_on_the_s3_server(seaweedfs, monkeypatch):
    """The rejection records through S3: written, read into the index, stale ones deleted (an emptied
    folder that the server lists as an entry of its own is not a record)."""
    root, options = seaweedfs.new_bucket(), seaweedfs.storage_options
    urls = write_granules(root, options, "smap_l4", 2)
    build_references(root, ["smap_l4"], options, progress=False)
    fs, path = fsspec.core.url_to_fs(f"{root}/refs/smap_l4/rejected", **options)
    fs.rm(urls[0], recursive=False)
    refs.reject_granules(root, "smap_l4", refs.unreadable_granules("smap_l4", urls, options), options)
    assert len(fs.find(path)) == 1
    index = read_index(root, "smap_l4", options)
    assert list(index["status"]) == ["failed", "ok"] and index["reason"][0] == "file does not exist"
    monkeypatch.setattr(refs, "UNINDEXED_GRACE_S", 0)
    build_references(root, ["smap_l4"], options, progress=False)  # the granule is gone: stale
    fs.invalidate_cache()
    assert not [p for p in fs.find(path) if p.endswith(".json")]  # (the server keeps an emptied folder)
    assert list(read_index(root, "smap_l4", options)["status"]) == ["ok"]
    assert refs.Archive(root, options).rejections("smap_l4") == {}
