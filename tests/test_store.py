"""The cube store: template, shard-aligned region writes, one commit per run, tags, rollback, expiry."""

import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import dask.array as da
import icechunk
import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import soilcube
from soilcube import store
from soilcube.access import open_cube
from soilcube.grids import REGIONS

WINDOW = REGIONS["oklahoma"].window("M09")  # 40×40 real EASE2 cells
DAYS = np.arange("2016-01-01", "2016-01-21", dtype="datetime64[D]").astype("datetime64[ns]")
# 4-day shards and 20×20 spatial shards of 10×10 chunks: writes cross shard edges in time and space
LAYOUT = store.CubeLayout(time_shard=4, spatial_shard=20, spatial_chunk=10)
OVERPASSES = ["AM", "PM"]
QA_ATTRS = {"flag_masks": [1, 2, 4], "flag_meanings": "retrieval_failed dense_vegetation frozen_ground"}
NAME = "downscaled_1km"


def committed(store_url, name, key, parameters_hash, **options) -> bool:
    run = store.unit_run(store_url, name, key, **options)
    return run is not None and run["parameters_hash"] == parameters_hash


def make_cube(store_url, name=NAME, **options):
    return store.create_cube(
        store_url,
        name,
        WINDOW,
        DAYS,
        extra_dims={"overpass": OVERPASSES},
        layout=LAYOUT,
        variable_attrs={"qa": QA_ATTRS},
        status=True,
        **options,
    )


def day_values(day_index: int) -> np.ndarray:
    """A field that tells which day (and overpass, and cell) it belongs to."""
    cells = np.arange(WINDOW.nrows * WINDOW.ncols, dtype=np.float32).reshape(WINDOW.shape) / 1e4
    return np.stack([day_index + 100 * overpass + cells for overpass in range(len(OVERPASSES))])


def slices(day_indices) -> xr.Dataset:
    sm = np.stack([day_values(i) for i in day_indices]).astype(np.float32)
    qa = np.full(sm.shape, 2, dtype=np.uint8)
    dims = ("time", "overpass", "y", "x")
    return xr.Dataset(
        {"sm": (dims, sm), "qa": (dims, qa)},
        coords={"time": DAYS[list(day_indices)], "overpass": OVERPASSES, "y": WINDOW.y, "x": WINDOW.x},
    )


def write(store_url, day_indices, **options):
    options.setdefault("status", "nrt")
    return store.write_slices(
        store_url,
        NAME,
        slices(day_indices),
        provenance={"parameters": {"method": "hybrid"}},
        message=f"days {list(day_indices)}",
        **options,
    )


def assert_holds_exactly(cube: xr.Dataset, written: set[int]) -> None:
    sm = cube.sm.values
    for i in range(DAYS.size):
        if i in written:
            np.testing.assert_array_equal(sm[i], day_values(i))
        else:
            assert np.isnan(sm[i]).all(), f"day {i} was never written but holds data"


@pytest.fixture
def store_url(tmp_path):
    url = (tmp_path / "store").as_uri()
    make_cube(url)
    return url


def test_template_holds_cf_metadata_and_no_data(store_url):
    cube = open_cube(f"{store_url}/{NAME}")
    assert dict(cube.sizes) == {"time": 20, "overpass": 2, "y": 40, "x": 40}
    np.testing.assert_array_equal(cube.x, WINDOW.x)
    np.testing.assert_array_equal(cube.y, WINDOW.y)
    np.testing.assert_array_equal(cube.time, DAYS)
    assert cube.crs.attrs["grid_mapping_name"] == "lambert_cylindrical_equal_area"
    assert cube.crs.attrs["standard_parallel"] == 30
    assert cube.crs.attrs["epsg_code"] == "EPSG:6933"
    assert "EASE-Grid 2.0" in cube.crs.attrs["crs_wkt"]
    assert cube.sm.encoding["grid_mapping"] == "crs" and cube.sm.attrs["units"] == "m3 m-3"
    assert cube.sm.dtype == np.float32 and np.isnan(cube.sm.encoding["_FillValue"])
    assert cube.qa.dtype == np.uint8 and cube.qa.attrs["flag_meanings"] == QA_ATTRS["flag_meanings"]
    assert cube.sm.encoding["shards"] == (4, 2, 20, 20) and cube.sm.encoding["chunks"] == (1, 1, 10, 10)
    assert np.isnan(cube.sm.values).all() and (cube.qa.values == 0).all() and (cube.status.values == 0).all()

    session = store.open_repository(f"{store_url}/{NAME}").readonly_session(branch=store.BRANCH)
    group = zarr.open_group(session.store, mode="r")
    assert group["sm"].nchunks_initialized == 0 and group["qa"].nchunks_initialized == 0


def test_region_writes_land_where_they_belong(store_url):
    write(store_url, [5, 6])
    write(store_url, [13], status="final")
    cube = open_cube(f"{store_url}/{NAME}")
    assert_holds_exactly(cube, {5, 6, 13})
    assert (cube.qa.isel(time=[5, 6, 13]).values == 2).all() and int(cube.qa.sum()) == 2 * 3 * 2 * 40 * 40
    expected_status = np.zeros(DAYS.size, np.uint8)
    expected_status[[5, 6]], expected_status[13] = 1, 2
    np.testing.assert_array_equal(cube.status.values, expected_status)


def test_nrt_slices_never_replace_final_ones(store_url):
    """An NRT run that found its days open writes after a backfill made one of them final: that day stays
    as the backfill made it; with every day final, the NRT write stages and commits nothing."""
    write(store_url, [5], status="final")
    late = slices([4, 5])
    late["sm"] = late["sm"] + 1
    snapshot = store.write_slices(store_url, NAME, late, provenance={}, message="nrt", status="nrt")
    cube = open_cube(f"{store_url}/{NAME}")
    np.testing.assert_array_equal(cube.sm.values[4], day_values(4) + 1)
    np.testing.assert_array_equal(cube.sm.values[5], day_values(5))
    assert list(cube.status.values[[4, 5]]) == [store.STATUS_CODES["nrt"], store.STATUS_CODES["final"]]
    newest = store.history(store_url, NAME)[0]
    assert newest.snapshot_id == snapshot and newest.metadata["n_times"] == 1

    assert store.write_slices(store_url, NAME, late.isel(time=[1]), provenance={}, message="nrt",
                              status="nrt") is None
    assert store.history(store_url, NAME)[0].snapshot_id == snapshot


def test_one_commit_per_write_carries_the_provenance(store_url):
    before = store.history(store_url, NAME)
    provenance = {
        "inputs": {"smap_l2e": {"SMAP_L2_SM_P_E_04200_D_20160104T002707_R19240_001.h5": "4f1c9a"}},
        "parameters": {"method": "hybrid", "window_days": 3},
        "strategy": "prior+current",
    }
    snapshot = store.write_slices(
        store_url,
        NAME,
        slices([3, 4, 9]),
        provenance=provenance,
        message="nrt 2016-01-04",
        key="2016-01",
        status="nrt",
    )
    after = store.history(store_url, NAME)
    assert len(after) == len(before) + 1 and after[0].snapshot_id == snapshot
    assert after[0].message == "nrt 2016-01-04"
    metadata = after[0].metadata
    assert metadata["provenance"] == provenance
    assert metadata["soilcube_version"] == soilcube.__version__
    assert metadata["key"] == "2016-01" and metadata["status"] == "nrt" and metadata["n_times"] == 3
    assert metadata["time_start"] == "2016-01-04T00:00:00" and metadata["time_end"] == "2016-01-10T00:00:00"
    assert [run.snapshot_id for run in store.committed_runs(store_url, NAME)] == [snapshot]
    record = store.unit_run(store_url, NAME, "2016-01")
    assert {k: metadata[k] for k in record} == record  # the commit's summary, kept in the cube
    assert record["inputs_hash"] == store.stable_hash(provenance["inputs"])

    same = store.stable_hash({"window_days": 3, "method": "hybrid"})
    assert committed(store_url, NAME, "2016-01", same)
    assert not committed(store_url, NAME, "2016-02", same)
    other = store.stable_hash({"method": "additive"})
    assert not committed(store_url, NAME, "2016-01", other)


def test_failure_midway_leaves_the_cube_exactly_as_before(store_url):
    write(store_url, [2, 10])
    head = store.history(store_url, NAME)[0].snapshot_id
    before = open_cube(f"{store_url}/{NAME}").load()
    chunk_dir = Path(urlparse(store_url).path) / NAME / "chunks"
    chunks_before = len(list(chunk_dir.iterdir()))

    def fail_on_last_slice(block, block_info=None):
        if block_info[0]["array-location"][0][0] == 3:
            raise RuntimeError("granule reader failed")
        return block

    doomed = slices([1, 2, 9, 17]).chunk({"time": 1})  # shards 0, 2 and 4: day 17's fails
    doomed["sm"] = doomed.sm.copy(data=da.map_blocks(fail_on_last_slice, doomed.sm.data, dtype=np.float32))
    with pytest.raises(RuntimeError, match="granule reader failed"):
        store.write_slices(store_url, NAME, doomed, provenance={}, message="doomed", status="final")

    assert len(list(chunk_dir.iterdir())) > chunks_before  # shards 0 and 2 were written before the failure
    assert store.history(store_url, NAME)[0].snapshot_id == head
    xr.testing.assert_identical(open_cube(f"{store_url}/{NAME}").load(), before)


@pytest.mark.parametrize(
    ("dataset", "error"),
    [
        (slices([1]).assign_coords(x=WINDOW.x + 9000.0), "grid mismatch on x"),
        (slices([1]).isel(y=slice(0, 39)), "grid mismatch on y"),
        (slices([1]).assign_coords(time=[np.datetime64("2017-01-01", "ns")]), "not in cube"),
        (slices([1]).rename(sm="soil_moisture"), "cannot write"),
        (slices([1]).assign_coords(overpass=["PM", "AM"]), "overpass labels"),
        (slices([1]).isel(overpass=0), "dims"),
        (xr.concat([slices([1]), slices([1])], dim="time"), "repeats"),
    ],
    ids=["x", "y", "time", "variable", "overpass", "dims", "duplicate"],
)
def test_slices_that_do_not_fit_the_cube_are_refused(store_url, dataset, error):
    head = store.history(store_url, NAME)[0].snapshot_id
    with pytest.raises(ValueError, match=error):
        store.write_slices(store_url, NAME, dataset, provenance={}, message="bad", status="nrt")
    assert store.history(store_url, NAME)[0].snapshot_id == head


def test_status_must_match_the_cube(tmp_path, store_url):
    with pytest.raises(ValueError, match="status='nrt' or 'final'"):
        write(store_url, [1], status=None)
    plain = (tmp_path / "plain").as_uri()
    store.create_cube(plain, NAME, WINDOW, DAYS, extra_dims={"overpass": OVERPASSES}, layout=LAYOUT)
    with pytest.raises(ValueError, match="does not track slice status"):
        store.write_slices(plain, NAME, slices([1]), provenance={}, message="m", status="nrt")
    store.write_slices(plain, NAME, slices([1]), provenance={}, message="m")
    assert "status" not in open_cube(f"{plain}/{NAME}")


def test_create_refuses_unknown_names_and_existing_cubes(store_url):
    with pytest.raises(ValueError, match="unknown cube"):
        store.create_cube(store_url, "downscaled_2km", WINDOW, DAYS)
    with pytest.raises(FileExistsError):
        make_cube(store_url)


def test_exist_ok_keeps_the_cube_and_its_versions(store_url):
    snapshot = write(store_url, [1])
    assert make_cube(store_url, exist_ok=True) is None
    assert store.history(store_url, NAME)[0].snapshot_id == snapshot


def test_a_creation_interrupted_before_the_template_is_completed_by_the_next(tmp_path):
    # icechunk commits the empty repository first; a process that dies before the template commit
    # leaves a repository that no run could open as a cube
    url = (tmp_path / "cubes").as_uri()
    store.open_repository(store.cube_url(url, NAME), create=True)
    assert not store.cube_exists(url, NAME)
    template = make_cube(url, exist_ok=True)
    assert store.cube_exists(url, NAME)
    assert store.history(url, NAME)[0].snapshot_id == template
    write(url, [1])
    cube = open_cube(f"{url}/{NAME}")
    assert float(cube["sm"].isel(time=1, overpass=0, y=0, x=0)) == day_values(1)[0, 0, 0]


def test_layout_shards_hold_whole_chunks():
    with pytest.raises(ValueError, match="multiple of spatial_chunk"):
        store.CubeLayout(spatial_shard=100, spatial_chunk=30)
    assert store.CubeLayout().spatial_sizes(360) == (180, 360)
    assert store.CubeLayout().spatial_sizes(900) == (180, 720)
    assert store.CubeLayout().spatial_sizes(40) == (40, 40)


def test_a_unit_counts_as_committed_until_a_later_run_rewrites_its_days(store_url):
    def run(days, key, method):
        provenance = {"parameters": {"method": method}}
        return store.write_slices(store_url, NAME, slices(days), provenance=provenance, message=key, key=key,
                                  status="final")

    hybrid, additive = (store.stable_hash({"method": m}) for m in ("hybrid", "additive"))
    run([1, 2, 3], "2016-01", "hybrid")
    run([5], "nrt 2016-01-08", "hybrid")  # other days: the unit stands
    assert committed(store_url, NAME, "2016-01", hybrid)
    # the unit made again with other parameters (a newer model), then the model rolled back: the cube
    # holds the newer slices, so the older parameters' run no longer counts
    run([1, 2, 3], "2016-01", "additive")
    assert committed(store_url, NAME, "2016-01", additive)
    assert not committed(store_url, NAME, "2016-01", hybrid)
    run([3, 4], "nrt 2016-01-07", "hybrid")  # an NRT run over one of its days
    assert not committed(store_url, NAME, "2016-01", additive)


def test_tags_and_rollback_which_keeps_the_head_it_leaves_under_a_tag(store_url):
    first = write(store_url, [1], key="2016-01-01")
    store.tag_release(store_url, NAME, "v1.0")
    write(store_url, [2], key="2016-01-02")
    assert_holds_exactly(open_cube(f"{store_url}/{NAME}"), {1, 2})

    left = store.history(store_url, NAME)[0].snapshot_id
    kept = store.rollback(store_url, NAME, first)
    assert store.history(store_url, NAME)[0].snapshot_id == first
    assert_holds_exactly(open_cube(f"{store_url}/{NAME}"), {1})
    assert_holds_exactly(open_cube(f"{store_url}/{NAME}", version="v1.0"), {1})
    parameters = store.stable_hash({"method": "hybrid"})
    assert committed(store_url, NAME, "2016-01-01", parameters)
    assert not committed(store_url, NAME, "2016-01-02", parameters)
    # the head it left is kept under a tag
    assert kept.startswith("rolled-back-") and kept.endswith(left[:8])
    assert store.tags_by_snapshot(store_url, NAME) == {first: ["v1.0"], left: [kept]}
    store.collect_garbage(store_url, NAME, min_age=timedelta(0))  # the tag keeps them from deletion
    assert_holds_exactly(open_cube(f"{store_url}/{NAME}", version=kept), {1, 2})
    assert store.rollback(store_url, NAME, first) is None  # there already: no second tag
    assert len(store.tags_by_snapshot(store_url, NAME)[left]) == 1
    for unknown in ("0000000000000000000A", "not an id"):
        with pytest.raises(ValueError, match=f"cube {store_url}/{NAME} has no snapshot '{unknown}'"):
            store.rollback(store_url, NAME, unknown)
    root = store.history(store_url, NAME)[-1].snapshot_id  # icechunk's empty repository
    with pytest.raises(ValueError, match="before its template"):
        store.rollback(store_url, NAME, root)
    with pytest.raises(ValueError, match="has a tag 'v1.0' already"):
        store.tag_release(store_url, NAME, "v1.0", snapshot_id=left)
    assert store.history(store_url, NAME)[0].snapshot_id == first
    assert store.tags_by_snapshot(store_url, NAME) == {first: ["v1.0"], left: [kept]}


def test_a_run_that_started_before_a_rollback_does_not_commit_after_it(store_url):
    first = write(store_url, [1], key="2016-01-01")
    write(store_url, [2], key="2016-01-02")
    staged = store.stage_slices(store_url, NAME, slices([3]), provenance={}, message="late", status="nrt")
    store.rollback(store_url, NAME, first)
    with pytest.raises(RuntimeError, match="main was rolled back past the snapshot this run started from"):
        staged.commit()  # its shard holds day 2, which the rollback removed
    assert store.history(store_url, NAME)[0].snapshot_id == first
    assert_holds_exactly(open_cube(f"{store_url}/{NAME}"), {1})
    write(store_url, [3])  # started after the rollback: commits
    assert_holds_exactly(open_cube(f"{store_url}/{NAME}"), {1, 3})


def test_a_failed_second_commit_undoes_the_first(store_url):
    """A run stages two cubes; the second cube's commit is refused (main rolled back past the run's start
    meanwhile): the first cube's commit is undone, so both cubes are as before the run."""
    other = "downscaled_400m"
    make_cube(store_url, other)
    before = store.write_slices(store_url, NAME, slices([1]), provenance={}, message="day 1", status="nrt")
    start = store.write_slices(store_url, other, slices([1]), provenance={}, message="day 1", status="nrt")
    store.write_slices(store_url, other, slices([2]), provenance={}, message="day 2", status="nrt")
    staged = {name: store.stage_slices(store_url, name, slices([3]), provenance={}, message="run", key="run",
                                       status="nrt") for name in (NAME, other)}
    store.rollback(store_url, other, start)
    with pytest.raises(RuntimeError, match="rolled back past") as refused:
        store.commit_together(staged)
    notes = " ".join(refused.value.__notes__)
    assert f"cube {NAME}: its commit" in notes and "was undone" in notes
    assert store.history(store_url, NAME)[0].snapshot_id == before
    assert_holds_exactly(open_cube(f"{store_url}/{NAME}"), {1})
    assert_holds_exactly(open_cube(f"{store_url}/{other}"), {1})
    assert store.unit_run(store_url, NAME, "run") is None


def still_away(*args, **kwargs):
    raise OSError("still away")


@pytest.mark.parametrize(
    ("meanwhile", "said", "held"),
    [("another run commits", "stands (another commit is on top of it now)", {3, 7}),
     ("the undo fails too", "stands (undoing it failed: still away)", {3})],
)
def test_an_undo_that_cannot_be_made_says_which_commit_stands(store_url, monkeypatch, meanwhile, said, held):
    """Between the run's first commit and its failing second, another run commits to the first cube (the
    run's commit stands under it), or the server fails the undo too."""

    class FailingCommit:
        def commit(self):
            if meanwhile == "another run commits":
                write(store_url, [7])
            else:
                monkeypatch.setattr(icechunk.Repository, "reset_branch", still_away)
            raise OSError("the server went away")

    staged = {NAME: store.stage_slices(store_url, NAME, slices([3]), provenance={}, message="run",
                                       status="nrt"),
              "downscaled_400m": FailingCommit()}
    with pytest.raises(OSError, match="the server went away") as failed:
        store.commit_together(staged)
    assert said in " ".join(failed.value.__notes__)
    monkeypatch.undo()
    assert_holds_exactly(open_cube(f"{store_url}/{NAME}"), held)


def test_a_commit_landing_during_a_rollback_leaves_main_and_the_tags_as_they_were(store_url, monkeypatch):
    first = write(store_url, [1], key="2016-01-01")
    write(store_url, [2], key="2016-01-02")
    create_tag = icechunk.Repository.create_tag

    def tag_then_another_run_commits(self, tag, snapshot_id):
        create_tag(self, tag, snapshot_id)
        write(store_url, [5], key="2016-01-06")

    monkeypatch.setattr(icechunk.Repository, "create_tag", tag_then_another_run_commits)
    with pytest.raises(RuntimeError, match="a commit landed on main while rolling back; nothing rolled back"):
        store.rollback(store_url, NAME, first)
    assert store.tags_by_snapshot(store_url, NAME) == {}
    assert_holds_exactly(open_cube(f"{store_url}/{NAME}"), {1, 2, 5})


def chunk_files(store_url) -> set[Path]:
    return {p for p in (Path(urlparse(store_url).path) / NAME / "chunks").rglob("*") if p.is_file()}


def test_garbage_collection_deletes_a_failed_run_s_chunks_and_keeps_every_commit(store_url, tmp_path):
    write(store_url, [1], key="2016-01-01")
    committed_chunks = chunk_files(store_url)
    store.stage_slices(store_url, NAME, slices([2, 5]), provenance={}, message="a run that fails its QC gate",
                       status="nrt")  # and never commits
    assert chunk_files(store_url) > committed_chunks
    before = store.history(store_url, NAME)

    young = store.collect_garbage(store_url, NAME)  # the run might still be writing: its chunks stay
    assert young["chunks"] == 0 and chunk_files(store_url) > committed_chunks
    counted = store.collect_garbage(store_url, NAME, min_age=timedelta(0), dry_run=True)
    assert counted["chunks"] == len(chunk_files(store_url) - committed_chunks) > 0
    assert chunk_files(store_url) > committed_chunks  # a dry run deletes nothing
    deleted = store.collect_garbage(store_url, NAME, min_age=timedelta(0))
    assert deleted == counted and deleted["bytes"] > 0
    assert chunk_files(store_url) == committed_chunks
    assert store.history(store_url, NAME) == before
    assert_holds_exactly(open_cube(f"{store_url}/{NAME}"), {1})
    assert store.cubes_in(store_url) == [NAME]
    assert store.cubes_in(tmp_path.as_uri()) == []


def test_expire_during_a_run_leaves_the_run_s_chunks(store_url):
    staged = store.stage_slices(store_url, NAME, slices([5, 6]), provenance={}, message="m", status="final")
    store.expire(store_url, NAME, datetime.now(UTC))  # the run's chunks are reached by nothing yet
    staged.commit()
    assert_holds_exactly(open_cube(f"{store_url}/{NAME}"), {5, 6})


def test_a_run_whose_base_snapshot_expires_meanwhile_does_not_commit(store_url, monkeypatch):
    monkeypatch.setattr(store, "GC_GRACE", timedelta(0))  # (by default no snapshot younger than a day goes)
    write(store_url, [1])
    staged = store.stage_slices(store_url, NAME, slices([9]), provenance={}, message="late", status="nrt")
    write(store_url, [2])
    assert staged.session.snapshot_id in store.expire(store_url, NAME, datetime.now(UTC))
    with pytest.raises(RuntimeError, match="or it expired; nothing committed, run it again"):
        staged.commit()
    assert_holds_exactly(open_cube(f"{store_url}/{NAME}"), {1, 2})


def test_expire_keeps_releases_and_the_head(store_url, monkeypatch):
    monkeypatch.setattr(store, "GC_GRACE", timedelta(0))  # else nothing this young is deleted
    write(store_url, [1])
    store.tag_release(store_url, NAME, "v1")
    write(store_url, [1, 2])
    middle = store.history(store_url, NAME)[0].snapshot_id
    write(store_url, [1, 3])  # overwrites the shard of days 1 and 2 again
    chunks = Path(urlparse(store_url).path) / NAME / "chunks"
    before = {p for p in chunks.rglob("*") if p.is_file()}
    expired = store.expire(store_url, NAME, datetime.now(UTC))
    assert middle in expired
    assert {p for p in chunks.rglob("*") if p.is_file()} < before  # the middle snapshot's own chunks
    with pytest.raises(ValueError, match=f"no version '{middle}'"):
        open_cube(f"{store_url}/{NAME}", version=middle)
    assert_holds_exactly(open_cube(f"{store_url}/{NAME}"), {1, 2, 3})
    assert_holds_exactly(open_cube(f"{store_url}/{NAME}", version="v1"), {1})


def test_run_records_outlive_expired_snapshots(store_url, monkeypatch):
    monkeypatch.setattr(store, "GC_GRACE", timedelta(0))
    write(store_url, [1, 2], key="2016-01", status="final")
    write(store_url, [9], key="2016-03")
    write(store_url, [9, 10], key="nrt 2016-03-02")  # rewrites the day of 2016-03
    record = store.unit_run(store_url, NAME, "2016-01")
    store.expire(store_url, NAME, datetime.now(UTC))
    runs_left = [run.metadata["key"] for run in store.committed_runs(store_url, NAME)]
    assert runs_left == ["nrt 2016-03-02"]  # the head: the commits of the months left the history
    assert store.unit_run(store_url, NAME, "2016-01") == record
    assert store.unit_run(store_url, NAME, "2016-03") is None
    assert store.unit_run(store_url, NAME, "nrt 2016-03-02")["time_start"] == "2016-01-10T00:00:00"


def test_a_cube_made_before_the_run_records_gets_them_with_its_next_run(store_url):
    repo = store.open_repository(f"{store_url}/{NAME}")
    session = repo.writable_session(store.BRANCH)
    del zarr.open_group(session.store, mode="r+")[store.RUNS_GROUP]
    session.commit("a cube as made before the run records")
    write(store_url, [1], key="2016-01-02")
    assert store.unit_run(store_url, NAME, "2016-01-02")["time_end"] == "2016-01-02T00:00:00"
    # the group came in a commit of its own, before the run's (in two concurrent runs it would conflict)
    messages = [commit.message for commit in store.history(store_url, NAME)][:3]
    assert messages == ["days [1]", "add the group of run records", "a cube as made before the run records"]


def unit_run_from_history(url, key):
    """The definition, from the commits: the newest run of `key` unless a later run wrote inside its span."""
    later = []
    for commit in store.committed_runs(url, NAME):  # newest first
        meta = commit.metadata
        if meta["key"] == key:
            return None if any(m["time_start"] <= meta["time_end"] and meta["time_start"] <= m["time_end"]
                               for m in later) else commit
        later.append(meta)
    return None


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(batches=[([0], "a"), ([1], "a")])  # a unit made again on other days: its record is replaced
@given(
    batches=st.lists(
        st.tuples(st.lists(st.integers(0, DAYS.size - 1), min_size=1, max_size=8, unique=True),
                  st.sampled_from(["a", "b", "c", None])),
        min_size=1, max_size=4,
    )
)
def test_random_days_in_random_order_land_exactly_where_they_belong(batches):
    """... and the run records kept in the cube say what the history says of each unit."""
    with tempfile.TemporaryDirectory() as directory:
        url = f"file://{directory}"
        make_cube(url)
        for number, (batch, key) in enumerate(batches):  # each batch in the drawn order, one commit each
            store.write_slices(url, NAME, slices(batch), provenance={}, message=f"batch {number}", key=key,
                               status="nrt")
        assert_holds_exactly(open_cube(f"{url}/{NAME}"), set().union(*(batch for batch, _ in batches)))
        assert len(store.committed_runs(url, NAME)) == len(batches)
        for key in ("a", "b", "c"):
            expected, record = unit_run_from_history(url, key), store.unit_run(url, NAME, key)
            assert (record is None) == (expected is None)
            assert record is None or record["message"] == expected.message


@pytest.mark.slow
def test_round_trip_on_the_real_s3_server(seaweedfs):
    url, options = f"{seaweedfs.new_bucket()}/cubes", seaweedfs.storage_options
    make_cube(url, storage_options=options)
    write(url, [0, 7, 8], storage_options=options, key="2016-01")
    store.tag_release(url, NAME, "v1", storage_options=options)
    assert_holds_exactly(open_cube(f"{url}/{NAME}", storage_options=options), {0, 7, 8})
    assert_holds_exactly(open_cube(f"{url}/{NAME}", version="v1", storage_options=options), {0, 7, 8})
    assert committed(
        url, NAME, "2016-01", store.stable_hash({"method": "hybrid"}), storage_options=options
    )
    def chunk_objects() -> set[str]:
        s3 = seaweedfs.filesystem()
        s3.invalidate_cache()
        return set(s3.find(f"{url}/{NAME}/chunks"))

    chunks = chunk_objects()
    assert chunks  # the data went to the bucket
    store.stage_slices(url, NAME, slices([12]), provenance={}, message="never committed", status="nrt",
                       storage_options=options)
    staged = chunk_objects() - chunks
    assert staged
    time.sleep(2)  # S3 times objects to the second: the staged ones must be older than "now"
    deleted = store.collect_garbage(url, NAME, min_age=timedelta(0), storage_options=options)
    assert deleted["chunks"] == len(staged)
    assert chunk_objects() == chunks
    assert store.cubes_in(url, storage_options=options) == [NAME]
    assert_holds_exactly(open_cube(f"{url}/{NAME}", storage_options=options), {0, 7, 8})


@pytest.mark.slow
@pytest.mark.parametrize(
    ("first", "second", "both_commit"),
    [([1], [9], True), ([1], [2], False)],
    ids=["other-shards", "same-shard"],
)
def test_concurrent_runs_conflict_only_on_the_same_shard(seaweedfs, monkeypatch, first, second, both_commit):
    """Two runs open their sessions and write before either commits (S3: the local filesystem has no
    conditional writes). The later commit rebases over other shards and is refused on the same shard."""
    url, options = f"{seaweedfs.new_bucket()}/cubes", seaweedfs.storage_options
    make_cube(url, storage_options=options)
    both_written = threading.Barrier(2, timeout=60)
    real_to_icechunk = store.to_icechunk

    def to_icechunk_then_wait(*args, **kwargs):
        real_to_icechunk(*args, **kwargs)
        both_written.wait()

    monkeypatch.setattr(store, "to_icechunk", to_icechunk_then_wait)
    outcomes: dict[str, object] = {}

    def run(days):
        try:
            outcomes[str(days)] = write(url, days, key=f"days {days}", storage_options=options)
        except icechunk.ConflictError as conflict:
            outcomes[str(days)] = conflict

    threads = [threading.Thread(target=run, args=(days,)) for days in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    committed = [days for days in (first, second) if isinstance(outcomes[str(days)], str)]
    assert len(committed) == (2 if both_commit else 1)
    cube = open_cube(f"{url}/{NAME}", storage_options=options)
    assert_holds_exactly(cube, set().union(*committed))
    for days in (first, second):  # each run's record (group runs/<key>) came with its commit, or not at all
        record = store.unit_run(url, NAME, f"days {days}", storage_options=options)
        assert (record is not None) == (days in committed)


@pytest.mark.slow
def test_dask_dataset_written_under_a_distributed_cluster(tmp_path, seaweedfs):
    """Workers write through pickled fork sessions and read through pickled read-only sessions, both in a
    directory and in a bucket (credentials travel with the session); the days already in a shard that a
    write completes are read by the workers too, and kept."""
    from dask.distributed import Client, LocalCluster, get_task_stream

    stores = [
        ((tmp_path / "store").as_uri(), None),
        (f"{seaweedfs.new_bucket()}/cubes", seaweedfs.storage_options),
    ]
    # dask chunks that fit no shard: write_slices rechunks them onto whole shards
    dataset = slices([1, 2, 9, 10, 11]).chunk({"time": 1, "y": 7, "x": 13})
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        workers = set(client.scheduler_info()["workers"])
        for url, options in stores:
            make_cube(url, storage_options=options)
            write(url, [0, 3], storage_options=options)  # the shard of days 0–3 is then completed lazily
            with get_task_stream(client) as tasks:
                store.write_slices(
                    url,
                    NAME,
                    dataset,
                    provenance={},
                    message="distributed",
                    status="final",
                    storage_options=options,
                )
            assert tasks.data and {task["worker"] for task in tasks.data} <= workers  # ran on the cluster
            # read back on the cluster too, as an analyst with a Client would
            cube = open_cube(f"{url}/{NAME}", storage_options=options)
            assert_holds_exactly(cube, {0, 1, 2, 3, 9, 10, 11})
            assert (cube.status.isel(time=[1, 2, 9, 10, 11]).values == 2).all()
            assert (cube.status.isel(time=[0, 3]).values == store.STATUS_CODES["nrt"]).all()


def test_write_dataset_versions_a_whole_cube(tmp_path):
    store_url = tmp_path.as_uri()
    coords = {"lat": [35.125, 35.375], "lon": [-97.375, -97.125, -96.875]}
    first = xr.Dataset({"a0": (("lat", "lon"), np.ones((2, 3), np.float32))}, coords=coords)
    v1 = store.write_dataset(
        store_url, "visir_model", first, provenance={"parameters": {"k": 1}}, message="v1"
    )
    v2 = store.write_dataset(
        store_url, "visir_model", first * 2, provenance={"parameters": {"k": 2}}, message="v2"
    )
    assert float(open_cube(f"{store_url}/visir_model").a0.max()) == 2.0
    assert float(open_cube(f"{store_url}/visir_model", version=v1).a0.max()) == 1.0
    assert [c.snapshot_id for c in store.history(store_url, "visir_model")][:2] == [v2, v1]
    with pytest.raises(ValueError, match="unknown cube"):
        store.write_dataset(store_url, "nonsense", first, provenance={}, message="x")


def test_a_store_url_that_cannot_hold_cubes_is_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match=f"cannot use the cube at {blocker.as_uri()}/{NAME}: .*Not a directory"):
        store.cube_exists(blocker.as_uri(), NAME)


def test_store_verbs_list_tag_roll_back_untag_and_collect_garbage(store_url, monkeypatch):
    from rich.console import Console
    from typer.testing import CliRunner

    from soilcube import cli

    monkeypatch.setattr(cli, "console", Console(width=300))  # tables unwrapped

    def soilcube(*args):
        result = CliRunner().invoke(cli.app, ["store", *args, "--store", store_url])
        said = result.output if result.exit_code != 1 else str(result.exception)  # (`main` prints that)
        return result.exit_code, " ".join(said.replace("│", " ").split())

    first = write(store_url, [1, 2], key="2016-01", status="final")
    second = write(store_url, [3], key="nrt 2016-01-04")
    code, said = soilcube("history", "--cube", NAME)
    assert code == 0 and "4 commits on main" in said  # with the template and icechunk's root
    assert f"{second} " in said and "nrt 2016-01-04 nrt 2016-01-04 … 2016-01-04 (1)" in said
    assert f"{first} " in said and "2016-01 final 2016-01-02 … 2016-01-03 (2)" in said
    assert soilcube("tag", "v1", "--cube", NAME, "--snapshot", first) == (0, f"{NAME}: tag v1 → {first}")
    code, said = soilcube("tag", "v1", "--cube", NAME)
    assert code == 1 and f"cube {store_url}/{NAME} has a tag 'v1' already, on {first}" in said

    code, said = soilcube("rollback", first, "--cube", NAME)
    assert code == 2 and "add --yes" in said
    assert store.history(store_url, NAME)[0].snapshot_id == second
    code, said = soilcube("rollback", first, "--cube", NAME, "--yes")
    kept = store.tags_by_snapshot(store_url, NAME)[second][0]
    assert code == 0 and said == f"{NAME}: main is at {first}; the commits it left are kept under tag {kept}"
    assert_holds_exactly(open_cube(f"{store_url}/{NAME}"), {1, 2})
    code, said = soilcube("history", "--cube", NAME, "--limit", "1")
    assert code == 0 and "3 commits on main, the newest 1" in said and f"{first} " in said and " v1 " in said

    committed_chunks = chunk_files(store_url)
    store.stage_slices(store_url, NAME, slices([9]), provenance={}, message="never committed", status="nrt")
    staged = len(chunk_files(store_url) - committed_chunks)
    code, said = soilcube("gc", "--min-age-hours", "0", "--dry-run")
    assert code == 0 and "objects it would delete (dry run)" in said and f"{NAME} {staged} " in said
    code, said = soilcube("gc", "--min-age-hours", "0")
    assert code == 0 and f"{NAME} {staged} " in said and chunk_files(store_url) == committed_chunks
    code, said = soilcube("gc", "--min-age-hours", "0")
    assert code == 0 and f"{NAME} 0 " in said

    code, said = soilcube("untag", kept, "--cube", NAME)
    assert code == 2 and "add --yes" in said
    code, said = soilcube("untag", "v2", "--cube", NAME, "--yes")
    assert code == 1 and f"cube {store_url}/{NAME} has no tag 'v2'; its tags: {kept}, v1" in said
    code, said = soilcube("untag", kept, "--cube", NAME, "--yes")
    assert code == 0 and said == f"{NAME}: tag {kept} deleted (it was on {second})"
    assert store.tags_by_snapshot(store_url, NAME) == {first: ["v1"]}
    code, said = soilcube("tag", kept, "--cube", NAME)
    assert code == 1 and "does not allow tag reuse" in said
    code, said = soilcube("gc", "--min-age-hours", "0")  # what only the tag kept: the rolled-back day 3
    assert code == 0 and int(said.split(f"{NAME} ")[1].split()[0]) > 0
    assert chunk_files(store_url) < committed_chunks
    assert_holds_exactly(open_cube(f"{store_url}/{NAME}", version="v1"), {1, 2})

    write(store_url, [6], key="2016-01-07")
    write(store_url, [5], key="2016-01-06")
    code, said = soilcube("expire", "--cube", NAME, "--older-than-days", "0")
    assert code == 2 and "add --yes" in said
    code, said = soilcube("expire", "--cube", NAME, "--older-than-days", "0", "--yes")
    assert code == 0 and said.startswith(f"{NAME}: 0 snapshots older than")  # none is a day old
    monkeypatch.setattr(store, "GC_GRACE", timedelta(0))
    code, said = soilcube("expire", "--cube", NAME, "--older-than-days", "0", "--yes")
    assert code == 0 and said.startswith(f"{NAME}: 2 snapshots older than") and said.endswith("expired")
    messages = [c.message for c in store.history(store_url, NAME)]
    assert messages == ["days [5]", "Repository initialized"]  # the others left main's history (v1 stays)
    assert_holds_exactly(open_cube(f"{store_url}/{NAME}"), {1, 2, 5, 6})
    assert_holds_exactly(open_cube(f"{store_url}/{NAME}", version="v1"), {1, 2})
    hybrid = store.stable_hash({"method": "hybrid"})
    assert committed(store_url, NAME, "2016-01-07", hybrid)  # its commit expired, its record stays
    code, said = soilcube("gc", "--cube", "downscaled_9km")
    assert code == 2 and "unknown cube 'downscaled_9km'" in said
