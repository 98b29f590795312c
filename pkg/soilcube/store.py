"""The cube store: icechunk repositories of Zarr v3 cubes. The only module that writes cubes.

One cube = one icechunk repository at `<store>/<cube name>` (`file://…`, a plain path, or `s3://bucket/…`).
Its life cycle:

1. `create_cube` commits a template: every coordinate, the CF `crs` grid-mapping variable and every
   attribute, but no data chunks (the data variables are lazy dask arrays written with compute=False, so
   empty chunks stay unwritten and read back as the fill value: NaN for floats, 0 for integers).
2. `write_slices` fills time slices by region writes, all in one writable session, and makes one commit
   whose metadata carries the provenance; the same commit keeps the run's record in the cube (group
   `runs`, see `unit_run`). Until that commit nothing is visible: a failure midway leaves
   the cube exactly as it was (`collect_garbage` removes the orphaned chunk objects once a day old).
   `stage_slices` does the writes and leaves the commit to the caller, so that a run writing several
   cubes commits none before all are written; `commit_together` then commits them and undoes the first
   commits when a later one fails.
3. `tag_release`, `delete_release`, `rollback`, `history`, `unit_run`, `collect_garbage` and `expire`
   manage the versions.

Layout (Zarr v3 sharding, see `CubeLayout`): dims (time, [extra dims such as overpass], y, x).

- shard = `time_shard` time steps × every extra-dim label × a spatial tile of up to `spatial_shard`²
  cells. One shard is one object in storage: 8 steps (8 days of a daily cube, 1 day of the 3-hourly one)
  of a 720×720 tile is at most ~33 MB of float32 per overpass pair before compression, in the range
  object stores serve well, and a time series of one pixel over a year touches 46 objects, not 730.
- inner chunk = 1 time step × 1 extra-dim label × `spatial_chunk`² cells (180² float32 = 127 kB): a map
  of one day reads only the inner chunks it needs, by byte range, out of the shards.
- every write is shard-aligned along time: `write_slices` widens each run of touched shards to whole
  shards, taking the steps it was not given from the current cube. Dask chunks then map one-to-one onto
  shards, which is what zarr needs for parallel writes without locks (xarray ≥ 2026.02 refuses anything
  else), and two runs that touch different shards do not conflict on commit (their run records are
  nodes of their own under `runs`; two runs of the same unit key conflict, as they write the same days).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any
from urllib.parse import urlparse

import dask.array as da
import icechunk
import numpy as np
import xarray as xr
import zarr
from icechunk.xarray import to_icechunk
from pyproj import CRS

from soilcube import __version__
from soilcube.grids import EPSG, Window

CUBE_NAMES = ("downscaled_1km", "downscaled_400m", "visir_model", "characteristics", "fused_1km_3h")
BRANCH = "main"
RUNS_GROUP = "runs"  # the records of the runs whose slices a cube holds (`unit_run`)
# icechunk warns on every open that a local directory is unsafe for concurrent commits (no conditional
# writes): true, and said once in the README (a `file://` store is for one writer at a time, as the demo
# and the CLI use it; deployments whose runs may overlap use S3). ICECHUNK_LOG still overrides.
if "ICECHUNK_LOG" not in os.environ:
    icechunk.set_logs_filter("error")
SOIL_MOISTURE_UNITS = "m3 m-3"
DEFAULT_VARIABLES = {"sm": np.float32, "qa": np.uint8}
STATUS_CODES = {"empty": 0, "nrt": 1, "final": 2}
# `expire` and `collect_garbage` delete no object younger than this: a run still writing has chunks that
# nothing reaches yet.
GC_GRACE = timedelta(days=1)
GC_COUNTS = {"chunks": "chunks_deleted", "manifests": "manifests_deleted", "snapshots": "snapshots_deleted",
             "attributes": "attributes_deleted", "transaction logs": "transaction_logs_deleted",
             "bytes": "bytes_deleted"}  # collect_garbage's counts: icechunk's GCSummary fields
# Minutes since the epoch hold every time step of every cube (daily, 3-hourly at 01:30…) exactly.
TIME_ENCODING = {"units": "minutes since 1970-01-01", "calendar": "proleptic_gregorian", "dtype": "int64"}


@dataclass(frozen=True)
class CubeLayout:
    """Chunk and shard sizes of a cube's data variables (see the module docstring for the reasons)."""

    time_shard: int = 8
    spatial_shard: int = 720
    spatial_chunk: int = 180

    def __post_init__(self) -> None:
        if min(self.time_shard, self.spatial_shard, self.spatial_chunk) < 1:
            raise ValueError(f"layout sizes must be positive, got {self}")
        if self.spatial_shard % self.spatial_chunk:
            raise ValueError(f"spatial_shard {self.spatial_shard} is not a multiple of spatial_chunk "
                             f"{self.spatial_chunk}: zarr shards must hold whole inner chunks")

    def spatial_sizes(self, cells: int) -> tuple[int, int]:
        """(inner chunk, shard) along a spatial axis of `cells` cells; the shard holds whole chunks."""
        chunk = min(self.spatial_chunk, cells)
        return chunk, min(self.spatial_shard, -(-cells // chunk) * chunk)


# --- repositories ----------------------------------------------------------------------------------------


def _check_cube_name(name: str) -> None:
    if name not in CUBE_NAMES:
        raise ValueError(f"unknown cube {name!r}; cubes are {', '.join(CUBE_NAMES)}")


def cube_url(store_url: str, name: str) -> str:
    """URL of the repository that holds cube `name` in the store at `store_url`."""
    return f"{store_url.rstrip('/')}/{name}"


@contextmanager
def _naming(url: str, doing: str = "use"):
    """icechunk errors as an OSError naming the cube: icechunk's message names no path, and its first line
    says what failed (the rest is a trace)."""
    try:
        yield
    except icechunk.IcechunkError as error:
        raise OSError(f"cannot {doing} the cube at {url}: {str(error).strip().splitlines()[0]}") from error


def open_repository(
    url: str, storage_options: Mapping | None = None, create: bool = False
) -> icechunk.Repository:
    """The icechunk repository at `url` (file://…, a plain path, or s3://bucket/prefix).

    `storage_options` are s3fs-style (key, secret, token, endpoint_url, client_kwargs.endpoint_url,
    client_kwargs.region_name, anon, config_kwargs.s3.addressing_style), so the config's one set of
    options serves fsspec and icechunk alike. Without them, S3 credentials come from the environment.
    """
    storage = _storage(url, storage_options or {})
    with _naming(url):
        if create:
            if icechunk.Repository.exists(storage):
                raise FileExistsError(f"a cube already exists at {url}")
            return icechunk.Repository.create(storage)
        if not icechunk.Repository.exists(storage):
            raise FileNotFoundError(f"no cube (icechunk repository) at {url}")
        return icechunk.Repository.open(storage)


def _storage(url: str, options: Mapping) -> icechunk.Storage:
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        prefix = parsed.path.strip("/")
        if not parsed.netloc or not prefix:
            raise ValueError(f"an S3 cube URL needs a bucket and a path: s3://bucket/…/cube, got {url}")
        return _s3_storage(parsed.netloc, prefix, options)
    if parsed.scheme == "file":
        return icechunk.local_filesystem_storage(parsed.path)
    if parsed.scheme == "":
        return icechunk.local_filesystem_storage(os.path.abspath(url))
    raise ValueError(f"unsupported store URL {url!r}: use file://…, a local path, or s3://…")


def _s3_storage(bucket: str, prefix: str, options: Mapping) -> icechunk.Storage:
    """Translate s3fs-style options into icechunk's S3 storage."""
    client = options.get("client_kwargs", {})
    endpoint = options.get("endpoint_url") or client.get("endpoint_url")
    region = options.get("region") or client.get("region_name")
    addressing = options.get("config_kwargs", {}).get("s3", {}).get("addressing_style")
    if options.get("anon"):
        credentials: dict[str, Any] = {"anonymous": True}
    elif options.get("key"):
        credentials = {"access_key_id": options["key"], "secret_access_key": options.get("secret"),
                       "session_token": options.get("token")}
    else:
        credentials = {"from_env": True}
    return icechunk.s3_storage(
        bucket=bucket,
        prefix=prefix,
        endpoint_url=endpoint,
        # A custom endpoint (SeaweedFS, MinIO, a loopback server) has no region of its own but the signer
        # needs one; it rarely resolves virtual-hosted bucket names either, hence path-style by default.
        region=region or ("us-east-1" if endpoint else None),
        allow_http=bool(endpoint and endpoint.startswith("http://")),
        force_path_style=addressing == "path" if addressing else bool(endpoint),
        **credentials,
    )


# --- template --------------------------------------------------------------------------------------------


def crs_attrs() -> dict[str, Any]:
    """CF grid-mapping attributes of EASE-Grid 2.0 (EPSG:6933), with the WKT for GDAL-style readers."""
    cf = CRS.from_epsg(EPSG).to_cf()
    wanted = ("grid_mapping_name", "standard_parallel", "longitude_of_central_meridian", "false_easting",
              "false_northing", "semi_major_axis", "inverse_flattening", "crs_wkt")
    attrs = {key: cf[key] for key in wanted}
    attrs.update(epsg_code=f"EPSG:{EPSG}", spatial_ref=attrs["crs_wkt"])
    return attrs


def cube_template(
    window: Window,
    times: Iterable,
    *,
    variables: Mapping[str, Any] = DEFAULT_VARIABLES,
    extra_dims: Mapping[str, Iterable] | None = None,
    layout: CubeLayout = CubeLayout(),
    attrs: Mapping[str, Any] | None = None,
    variable_attrs: Mapping[str, Mapping[str, Any]] | None = None,
    status: bool = False,
) -> tuple[xr.Dataset, dict[str, dict]]:
    """The lazy template dataset of a cube and the zarr encoding that lays it out (no I/O).

    Float variables are NaN-filled, carry units m3 m-3 and _FillValue NaN; integer variables (QA bits,
    counts) are 0-filled and carry no _FillValue, so they decode as integers. `variable_attrs` adds to or
    overrides each variable's attributes (QA flag_masks/flag_meanings, long_name, other units).
    """
    times = _as_times(times)
    if times.size == 0 or np.any(np.diff(times) <= np.timedelta64(0, "ns")):
        raise ValueError("times must be a non-empty, strictly increasing sequence")
    extra = {dim: np.asarray(list(labels)) for dim, labels in (extra_dims or {}).items()}
    chunk_y, shard_y = layout.spatial_sizes(window.nrows)
    chunk_x, shard_x = layout.spatial_sizes(window.ncols)
    dims = ("time", *extra, "y", "x")
    shape = (times.size, *(labels.size for labels in extra.values()), window.nrows, window.ncols)
    chunks = (1, *(1 for _ in extra), chunk_y, chunk_x)
    shards = (layout.time_shard, *(labels.size for labels in extra.values()), shard_y, shard_x)

    data_vars, encoding = {}, {}
    for name, dtype in variables.items():
        dtype = np.dtype(dtype)
        floating = dtype.kind == "f"
        base = {"units": SOIL_MOISTURE_UNITS, "_FillValue": dtype.type(np.nan)} if floating else {}
        var_attrs = {**base, "grid_mapping": "crs", **(variable_attrs or {}).get(name, {})}
        # dask chunks = shards: xarray checks that lazy arrays align with shards even when nothing is computed
        lazy = da.full(shape, np.nan if floating else 0, dtype=dtype, chunks=shards)
        data_vars[name] = xr.Variable(dims, lazy, var_attrs)
        encoding[name] = {"chunks": chunks, "shards": shards}
    if status:
        data_vars["status"] = xr.Variable(
            ("time",), da.zeros(times.size, dtype=np.uint8, chunks=layout.time_shard),
            {
                "long_name": "processing status of the time slice",
                "flag_values": np.array(list(STATUS_CODES.values()), dtype=np.uint8),
                "flag_meanings": " ".join(STATUS_CODES),
            },
        )
        # one status chunk per time shard, so runs on different shards never write the same chunk
        encoding["status"] = {"chunks": (layout.time_shard,)}
    data_vars["crs"] = xr.Variable((), np.int32(0), crs_attrs())

    coords = {
        "time": ("time", times, {"standard_name": "time", "axis": "T"}),
        **{dim: (dim, labels) for dim, labels in extra.items()},
        "y": ("y", window.y, _axis_attrs("y")),
        "x": ("x", window.x, _axis_attrs("x")),
    }
    global_attrs = {
        "Conventions": "CF-1.10",
        "grid": window.grid_name,
        "window_rows_cols": [window.row0, window.col0, window.nrows, window.ncols],
        **(attrs or {}),
    }
    encoding["time"] = dict(TIME_ENCODING)
    return xr.Dataset(data_vars, coords, global_attrs), encoding


def create_cube(
    store_url: str,
    name: str,
    window: Window,
    times: Iterable,
    *,
    variables: Mapping[str, Any] = DEFAULT_VARIABLES,
    extra_dims: Mapping[str, Iterable] | None = None,
    layout: CubeLayout = CubeLayout(),
    attrs: Mapping[str, Any] | None = None,
    variable_attrs: Mapping[str, Mapping[str, Any]] | None = None,
    status: bool = False,
    exist_ok: bool = False,
    storage_options: Mapping | None = None,
) -> str | None:
    """Create cube `name` in the store: a new repository whose first commit is the empty template.

    `times` spans the whole period the cube will ever hold (e.g. every day of the years to process);
    see `cube_template` for the other arguments. Returns the snapshot id of the template commit. A
    repository left without its template (icechunk commits the empty repository first: a creation
    interrupted between the two commits) gets it now. An existing cube raises FileExistsError, or with
    `exist_ok` is kept as it is (None is returned), also when a concurrent run creates it first.
    """
    _check_cube_name(name)
    url = cube_url(store_url, name)
    if cube_exists(store_url, name, storage_options=storage_options):
        if exist_ok:
            return None
        raise FileExistsError(f"a cube already exists at {url}")
    template, encoding = cube_template(
        window, times, variables=variables, extra_dims=extra_dims, layout=layout,
        attrs={"cube": name, **(attrs or {})}, variable_attrs=variable_attrs, status=status,
    )
    try:
        repo = open_repository(url, storage_options, create=True)
    except FileExistsError:  # the repository without its template
        repo = open_repository(url, storage_options)
    session = repo.writable_session(BRANCH)
    # compute=False writes metadata and the in-memory coordinates only: no data chunk exists until written
    template.to_zarr(
        session.store, mode="w-", encoding=encoding, compute=False, zarr_format=3, consolidated=False
    )
    zarr.open_group(session.store, mode="r+", zarr_format=3).create_group(RUNS_GROUP)
    metadata = _jsonable({
        "operation": "create_cube", "soilcube_version": __version__, "cube": name, "grid": window.grid_name,
        "time_start": _iso(template.time.values[0]), "time_end": _iso(template.time.values[-1]),
        "layout": vars(layout),
    })
    try:
        return session.commit(f"create {name} template", metadata=metadata)
    except icechunk.ConflictError:
        if exist_ok:
            return None  # a concurrent run committed the template first
        raise


def cubes_in(store_url: str, *, storage_options: Mapping | None = None) -> list[str]:
    """The names of the cubes (repositories) the store holds, in `CUBE_NAMES` order."""
    names = []
    for name in CUBE_NAMES:
        url = cube_url(store_url, name)
        with _naming(url, "look for"):
            if icechunk.Repository.exists(_storage(url, storage_options or {})):
                names.append(name)
    return names


def cube_exists(store_url: str, name: str, *, storage_options: Mapping | None = None) -> bool:
    """Whether cube `name` exists with its template (a repository with more than icechunk's root commit)."""
    try:
        repo = open_repository(cube_url(store_url, name), storage_options)
    except FileNotFoundError:
        return False
    return len(list(islice(repo.ancestry(branch=BRANCH), 2))) > 1


# --- region writes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StagedSlices:
    """Time slices written into a writable session of one cube and not yet visible (`stage_slices`)."""

    repository: icechunk.Repository
    session: icechunk.Session
    message: str
    metadata: dict[str, Any] | None  # None: nothing staged
    times: np.ndarray  # the time steps staged (datetime64[ns]), in the order of the dataset

    def commit(self) -> str | None:
        """Make the slices one new version of the cube; return its snapshot id (None: nothing staged).

        Refused (RuntimeError, nothing committed) when main was rolled back past the snapshot the run
        started from (its whole shards carry the days it read there, which would bring the rolled-back
        slices back), or when that snapshot expired meanwhile.
        """
        if self.metadata is None:
            return None
        if not _on_main(self.repository, self.session.snapshot_id):
            raise RuntimeError(f"cube {self.metadata['cube']}: main was rolled back past the snapshot this "
                               f"run started from ({self.session.snapshot_id}), or it expired; nothing "
                               "committed, run it again")
        # ConflictDetector lets a run commit after a concurrent one that touched other shards, and refuses
        # (nothing committed) when both wrote the same shard.
        return self.session.commit(
            self.message, metadata=self.metadata, rebase_with=icechunk.ConflictDetector()
        )


def _on_main(repo: icechunk.Repository, snapshot_id: str) -> bool:
    """Whether `snapshot_id` is on main's history; walks back from the head only as far as an hour before
    its time (commits come from machines whose clocks may differ a little)."""
    try:
        oldest = repo.lookup_snapshot(snapshot_id).written_at - timedelta(hours=1)
    except icechunk.NotFoundError:  # expired meanwhile (`expire`): no longer on main either
        return False
    for snapshot in repo.ancestry(branch=BRANCH):
        if snapshot.id == snapshot_id:
            return True
        if snapshot.written_at < oldest:
            return False
    return False


def commit_together(staged: Mapping[str, StagedSlices]) -> dict[str, str | None]:
    """Commit the staged slices of several cubes, in order; {cube: snapshot id (None: nothing staged)}.

    icechunk has no transaction across repositories, so this comes as close as it can: when a commit
    fails or is interrupted (a conflict, a rollback meanwhile, the server, a cancelled flow), the commits
    made before it are undone (main put back at each one's parent, only while that commit is still the
    head) and the error is raised, with a note per cube saying what became of its commit. Not covered: a
    process killed between two commits; an undo that finds another commit on top already, or that fails
    itself (the note names the commit that stands); a commit that landed although its call failed.
    """
    made: dict[str, str | None] = {}
    for name, staged_slices in staged.items():
        try:
            made[name] = staged_slices.commit()
        except BaseException as error:  # also a cancellation (Prefect's TerminationSignal, Ctrl-C)
            for done, snapshot_id in made.items():
                if snapshot_id is not None:
                    error.add_note(_undo_commit(staged[done].repository, done, snapshot_id))
            raise
    return made


def _undo_commit(repo: icechunk.Repository, name: str, snapshot_id: str) -> str:
    """Put main back at the parent of `snapshot_id` if that is still the head; say what happened."""
    try:
        parent = repo.lookup_snapshot(snapshot_id).parent_id
        repo.reset_branch(BRANCH, parent, from_snapshot_id=snapshot_id)
    except icechunk.ConflictError:
        return (f"cube {name}: its commit {snapshot_id} of this run stands (another commit is on top of it "
                "now); `soilcube store rollback` can undo it")
    except Exception as error:  # the server that failed the later commit may fail this too
        return (f"cube {name}: its commit {snapshot_id} of this run stands (undoing it failed: {error}); "
                "`soilcube store rollback` can undo it")
    return f"cube {name}: its commit {snapshot_id} of this run was undone (main is back at {parent})"


def write_slices(store_url: str, name: str, dataset: xr.Dataset, **options) -> str | None:
    """`stage_slices` and commit: the slices become one new version of cube `name`; return its id (None:
    nothing to write, every step final already for an 'nrt' write)."""
    return stage_slices(store_url, name, dataset, **options).commit()


def stage_slices(
    store_url: str,
    name: str,
    dataset: xr.Dataset,
    *,
    provenance: Mapping[str, Any],
    message: str,
    key: str | None = None,
    status: str | None = None,
    storage_options: Mapping | None = None,
) -> StagedSlices:
    """Write the time slices of `dataset` into a writable session of cube `name`, to commit later.

    Everything is computed and written here; until `commit` nothing is visible, so a caller that stages
    several cubes and commits them only when all staged leaves every cube as it was on any failure.

    `dataset` holds some of the cube's data variables on exactly the cube's grid (same x, y and extra-dim
    labels) at times that the template holds, in any order and with gaps. `provenance` (input granules
    and versions, `parameters`, strategy…) goes into the commit metadata together with the code version,
    `key` (the unit of work, e.g. '2016-03', for `unit_run`) and the hash of
    `provenance['parameters']`. `status` ('nrt' or 'final') marks the slices of cubes that track it; 'nrt'
    slices never replace 'final' ones: time steps that the session's base holds as final (a backfill may
    have committed them since the caller looked) are left as they are, and with none left nothing is
    staged (`commit` then returns None). Dask-backed datasets are computed by the current scheduler (a
    distributed Client if one is active).
    """
    repo = open_repository(cube_url(store_url, name), storage_options)
    session = _writable_session_with_runs_group(repo)
    # Everything is read from the session's base snapshot through a read-only session: it pickles, so the
    # values kept around the new slices are read in the write tasks (loaded here they would travel inside
    # the task graph).
    base = repo.readonly_session(snapshot_id=session.snapshot_id)
    cube = xr.open_zarr(base.store, consolidated=False, zarr_format=3, chunks=None)
    slices = _conform(dataset, cube, name)
    status_code = _status_code(status, cube, name)
    positions = cube.indexes["time"].get_indexer(slices.time.values)
    if status == "nrt":
        open_steps = np.flatnonzero(cube["status"].values[positions] != STATUS_CODES["final"])
        slices, positions = slices.isel(time=open_steps), positions[open_steps]
        if not positions.size:
            return StagedSlices(repo, session, message, None, slices.time.values)
    shard_chunks = _shard_chunks(cube, list(slices.data_vars))
    for span in _shard_spans(positions, shard_chunks["time"], cube.sizes["time"]):
        block = _whole_shards(slices, cube, positions, span)
        if status_code is not None:
            written = np.isin(np.arange(span.start, span.stop), positions)
            codes = np.where(written, status_code, cube.status.values[span])
            block["status"] = ("time", codes.astype(np.uint8))
        if any(var.chunks is not None for var in block.data_vars.values()):
            block = block.chunk(shard_chunks)
        to_icechunk(block.drop_vars(list(block.coords)), session, region={"time": span})

    times = slices.time.values
    record = {
        "key": key,
        "time_start": _iso(times.min()),
        "time_end": _iso(times.max()),
        "status": status,
        "parameters_hash": stable_hash(provenance.get("parameters", {})),
        "inputs_hash": stable_hash(provenance.get("inputs", {})),
        "soilcube_version": __version__,
        "message": message,
        "staged_at": f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}",
    }
    _record_run(session, _jsonable(record))
    metadata = {
        **record,
        "operation": "write_slices",
        "cube": name,
        "n_times": int(times.size),
        "variables": sorted(slices.data_vars),
        "provenance": provenance,
    }
    return StagedSlices(repo, session, message, _jsonable(metadata), times)


def _record_run(session: icechunk.Session, record: dict[str, Any]) -> None:
    """Keep the record of a run in the cube itself, in the commit that makes its slices: group
    `runs/<key>` (see `unit_run`). It replaces the unit's earlier record, and the records of units whose
    days this run rewrites go."""
    runs = zarr.open_group(session.store, mode="r+", zarr_format=3)[RUNS_GROUP]
    node = None if record["key"] is None else _run_node(record["key"])
    for name, unit in list(runs.groups()):
        start, end = unit.attrs["time_start"], unit.attrs["time_end"]
        if name == node or (start <= record["time_end"] and record["time_start"] <= end):
            del runs[name]
    if node is not None:
        runs.create_group(node, attributes=record)


def _writable_session_with_runs_group(repo: icechunk.Repository) -> icechunk.Session:
    """A writable session on main whose base has the `runs` group. A cube made before the run records gets
    it first, in a commit of its own: made inside two concurrent runs' commits, the one group would
    conflict."""
    session = repo.writable_session(BRANCH)
    root = zarr.open_group(session.store, mode="r+", zarr_format=3)
    if RUNS_GROUP in root:
        return session
    root.create_group(RUNS_GROUP)
    try:
        session.commit("add the group of run records", metadata={"operation": "add_runs_group"})
    except icechunk.ConflictError:
        pass  # a concurrent run added it
    return repo.writable_session(BRANCH)


def _run_node(key: str) -> str:
    """A portable Zarr node name for a unit key ('2016-06', 'nrt 2016-06-10', '2016-06-01..2016-06-03')."""
    if not key:
        raise ValueError("a unit key must not be empty")
    return re.sub(r"[^A-Za-z0-9._-]", "_", key)


def write_dataset(
    store_url: str,
    name: str,
    dataset: xr.Dataset,
    *,
    provenance: Mapping[str, Any],
    message: str,
    storage_options: Mapping | None = None,
) -> str:
    """Replace the whole content of cube `name` with `dataset` in one commit; return its id.

    For cubes that are rewritten as a whole, not sliced in time (the `visir_model` coefficients): each
    write is a new version on the main branch, earlier versions stay readable by snapshot id or tag.
    """
    _check_cube_name(name)
    url = cube_url(store_url, name)
    try:
        repo = open_repository(url, storage_options)
    except FileNotFoundError:
        repo = open_repository(url, storage_options, create=True)
    session = repo.writable_session(BRANCH)
    to_icechunk(dataset, session, mode="w")
    metadata = {
        "operation": "write_dataset",
        "soilcube_version": __version__,
        "cube": name,
        "parameters_hash": stable_hash(provenance.get("parameters", {})),
        "provenance": provenance,
    }
    return session.commit(message, metadata=_jsonable(metadata))


def _conform(dataset: xr.Dataset, cube: xr.Dataset, name: str) -> xr.Dataset:
    """`dataset`'s data variables checked against the cube's grid and times, in the cube's dims and dtypes."""
    if "time" not in dataset.dims:
        raise ValueError("the dataset to write has no time dimension")
    for axis in ("x", "y"):
        if axis not in dataset.coords:
            raise ValueError(f"the dataset to write has no {axis} coordinate; cube {name} needs EASE2 x/y")
        given, expected = dataset[axis].values, cube[axis].values
        if given.shape != expected.shape or not np.allclose(given, expected, rtol=0, atol=1e-3):
            raise ValueError(
                f"grid mismatch on {axis}: the dataset has {given.size} cells from {given[0]:.1f} to "
                f"{given[-1]:.1f} m, cube {name} has {expected.size} from {expected[0]:.1f} to "
                f"{expected[-1]:.1f} m"
            )
    writable = [v for v in cube.data_vars if "time" in cube[v].dims and v != "status"]
    unknown = sorted(set(map(str, dataset.data_vars)) - set(writable))
    if unknown or not dataset.data_vars:
        raise ValueError(f"cube {name} holds variables {writable}; cannot write {unknown or 'no variables'}")
    for dim in set(dataset.dims) & set(cube.dims) - {"time", "x", "y"}:
        if dataset.sizes[dim] != cube.sizes[dim] or (
            dim in dataset.coords and not np.array_equal(dataset[dim].values, cube[dim].values)
        ):
            raise ValueError(f"{dim} labels {dataset[dim].values.tolist()} differ from cube {name}'s "
                             f"{cube[dim].values.tolist()}")
    times = _as_times(dataset.time.values)
    outside = times[~np.isin(times, cube.time.values)]
    if outside.size:
        raise ValueError(f"{outside.size} time(s) are not in cube {name}'s template "
                         f"({cube.time.values[0]} … {cube.time.values[-1]}), e.g. {outside[0]}")
    if np.unique(times).size != times.size:
        raise ValueError("the dataset to write repeats time steps")
    conformed = {}
    for var in dataset.data_vars:
        target = cube[var]
        if set(dataset[var].dims) != set(target.dims):
            raise ValueError(f"{var} has dims {dataset[var].dims}; cube {name} stores it as {target.dims}")
        conformed[var] = dataset[var].transpose(*target.dims).astype(target.dtype).variable
        conformed[var].attrs, conformed[var].encoding = {}, {}
    return xr.Dataset(conformed, coords={"time": times})


def _status_code(status: str | None, cube: xr.Dataset, name: str) -> int | None:
    tracked = "status" in cube.data_vars
    if status is None and not tracked:
        return None
    if not tracked:
        raise ValueError(f"cube {name} does not track slice status; write it without status=")
    if status not in ("nrt", "final"):
        raise ValueError(f"cube {name} tracks slice status: pass status='nrt' or 'final', got {status!r}")
    return STATUS_CODES[status]


def _shard_spans(positions: np.ndarray, time_shard: int, length: int) -> list[slice]:
    """The time regions to write: each run of consecutive touched shards, as one whole-shard slice."""
    shards = np.unique(positions // time_shard)
    runs = np.split(shards, np.flatnonzero(np.diff(shards) > 1) + 1)
    return [slice(int(run[0]) * time_shard, min((int(run[-1]) + 1) * time_shard, length)) for run in runs]


def _whole_shards(slices: xr.Dataset, cube: xr.Dataset, positions: np.ndarray, span: slice) -> xr.Dataset:
    """The slices that fall in `span`, completed with the cube's current values for the other steps (lazily
    when the slices are dask-backed)."""
    inside = (positions >= span.start) & (positions < span.stop)
    given = slices.isel(time=np.flatnonzero(inside))
    kept = np.setdiff1d(np.arange(span.start, span.stop), positions[inside])
    if kept.size == 0:
        return given.sortby("time")
    current = cube[list(slices.data_vars)].isel(time=kept)
    current = current.drop_vars([c for c in current.coords if c != "time"])
    lazy = any(var.chunks is not None for var in given.data_vars.values())
    current = current.chunk() if lazy else current.load()
    for var in current.variables.values():
        var.attrs, var.encoding = {}, {}
    return xr.concat([given, current], dim="time").sortby("time")


def _shard_chunks(cube: xr.Dataset, names: list[str]) -> dict[str, int]:
    """Dask chunk sizes per dim equal to the variables' shard (or chunk) shape."""
    sizes: dict[str, int] = {}
    for name in names:
        var = cube[name]
        shape = var.encoding.get("shards") or var.encoding["chunks"]
        sizes.update(zip(var.dims, shape, strict=True))
    return sizes


# --- versions --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Commit:
    """One snapshot of a cube, as listed by `history`."""

    snapshot_id: str
    parent_id: str | None
    written_at: datetime
    message: str
    metadata: dict[str, Any]


def history(store_url: str, name: str, *, storage_options: Mapping | None = None) -> list[Commit]:
    """Every snapshot on the main branch of cube `name`, newest first (the repository's root included)."""
    repo = open_repository(cube_url(store_url, name), storage_options)
    return [
        Commit(s.id, s.parent_id, s.written_at, s.message, s.metadata) for s in repo.ancestry(branch=BRANCH)
    ]


def committed_runs(store_url: str, name: str, *, storage_options: Mapping | None = None) -> list[Commit]:
    """The `write_slices` commits on the main branch of cube `name`, newest first (for inspection: their
    provenance; which runs count for a unit is `unit_run`'s)."""
    return [c for c in history(store_url, name, storage_options=storage_options)
            if c.metadata.get("operation") == "write_slices"]


def stable_hash(value: Any) -> str:
    """A stable hash of JSON-like data (key order does not matter): run parameters and inputs, as stored
    with every commit and run record."""
    canonical = json.dumps(_jsonable(value), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def unit_run(store_url: str, name: str, key: str, *, storage_options: Mapping | None = None) -> dict | None:
    """The record of the run of unit `key` whose slices cube `name` holds on main: key, time_start,
    time_end, status, parameters_hash, inputs_hash, soilcube_version, message, staged_at. None when no
    run of the unit committed, when a later run wrote a time step inside its span (an NRT run over its
    days, a run of another unit), or when main was rolled back past it.

    The records live in the cube (group `runs`, written in each run's commit), not in its history: they
    outlive `expire`, and reading one is one read of the head, however long the history.
    """
    repo = open_repository(cube_url(store_url, name), storage_options)
    root = zarr.open_group(repo.readonly_session(branch=BRANCH).store, mode="r", zarr_format=3)
    try:
        record = dict(root[f"{RUNS_GROUP}/{_run_node(key)}"].attrs)
    except KeyError:  # no such run, or a cube made before the records (its months are made again)
        return None
    return record if record.get("key") == key else None


def tag_release(
    store_url: str,
    name: str,
    tag: str,
    *,
    snapshot_id: str | None = None,
    storage_options: Mapping | None = None,
) -> str:
    """Tag a snapshot (the head of main by default) as release `tag`; return the tagged snapshot id."""
    url = cube_url(store_url, name)
    repo = open_repository(url, storage_options)
    with _naming(url, "tag"):
        snapshot_id = _snapshot(repo, url, snapshot_id).id if snapshot_id else repo.lookup_branch(BRANCH)
        if tag in repo.list_tags():
            raise ValueError(f"cube {url} has a tag {tag!r} already, on {repo.lookup_tag(tag)}")
        repo.create_tag(tag, snapshot_id)
    return snapshot_id


def delete_release(store_url: str, name: str, tag: str, *, storage_options: Mapping | None = None) -> str:
    """Delete tag `tag` of cube `name` (a release, or a rollback's `rolled-back-…`); return the snapshot id
    it was on. Its snapshot stays readable by id until `collect_garbage` or `expire` deletes what nothing
    else reaches; a deleted tag's name cannot be used again (icechunk keeps it as deleted)."""
    url = cube_url(store_url, name)
    repo = open_repository(url, storage_options)
    with _naming(url, "untag"):
        tags = repo.list_tags()
        if tag not in tags:
            raise ValueError(f"cube {url} has no tag {tag!r}; its tags: {', '.join(sorted(tags)) or 'none'}")
        snapshot_id = repo.lookup_tag(tag)
        repo.delete_tag(tag)
    return snapshot_id


def tags_by_snapshot(
    store_url: str, name: str, *, storage_options: Mapping | None = None
) -> dict[str, list[str]]:
    """{snapshot id: its tag names, sorted} of cube `name`."""
    repo = open_repository(cube_url(store_url, name), storage_options)
    tagged: dict[str, list[str]] = {}
    for tag in sorted(repo.list_tags()):
        tagged.setdefault(repo.lookup_tag(tag), []).append(tag)
    return tagged


def rollback(
    store_url: str, name: str, snapshot_id: str, *, storage_options: Mapping | None = None
) -> str | None:
    """Point the main branch back at `snapshot_id`; return the tag now kept on the head it leaves.

    The commits after `snapshot_id` leave the branch. The tag `rolled-back-<UTC time>-<old head>` keeps
    the head it leaves readable: `collect_garbage` and `expire` keep that snapshot and every chunk it
    uses while the tag exists (`delete_release` lets them go). A run that
    started before the rollback and commits after it is refused (`StagedSlices.commit`). Nothing changes
    (None) when main is at `snapshot_id` already; nothing changes either (RuntimeError) when another
    commit lands meanwhile, and the target must be a commit of soilcube's (not icechunk's empty root).
    """
    url = cube_url(store_url, name)
    repo = open_repository(url, storage_options)
    with _naming(url, "roll back"):
        target = _snapshot(repo, url, snapshot_id)
        if target.parent_id is None:
            raise ValueError(f"{snapshot_id} is the empty repository of {url}, before its template: "
                             "roll back to a later commit")
        head = repo.lookup_branch(BRANCH)
        if head == snapshot_id:
            return None
        kept = f"rolled-back-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{head[:8]}"
        repo.create_tag(kept, head)
        try:
            repo.reset_branch(BRANCH, snapshot_id, from_snapshot_id=head)
        except icechunk.ConflictError:
            repo.delete_tag(kept)
            raise RuntimeError(f"{url}: a commit landed on main while rolling back; nothing rolled back, "
                               "look at its history again") from None
    return kept


def _snapshot(repo: icechunk.Repository, url: str, snapshot_id: str) -> icechunk.SnapshotInfo:
    try:
        return repo.lookup_snapshot(snapshot_id)
    except (icechunk.NotFoundError, ValueError):  # well-formed and unknown, or not an id at all
        raise ValueError(f"cube {url} has no snapshot {snapshot_id!r} (see its history)") from None


def collect_garbage(
    store_url: str, name: str, *, min_age: timedelta | None = None, dry_run: bool = False,
    storage_options: Mapping | None = None,
) -> dict[str, int]:
    """Delete the objects of cube `name` that no branch or tag reaches and that are older than `min_age`:
    the chunks a run staged and never committed (a failed QC gate, a crash, a conflict), and those of
    expired snapshots. The history is untouched. `min_age` (default `GC_GRACE`) protects a run still
    writing (its chunks are reached by nothing until it commits). Returns counts of what was (with
    `dry_run`: would be) deleted, by kind of object, and the bytes.
    """
    min_age = GC_GRACE if min_age is None else min_age
    if min_age < timedelta(0):
        raise ValueError(f"min_age must not be negative, got {min_age}")
    url = cube_url(store_url, name)
    repo = open_repository(url, storage_options)
    with _naming(url, "collect the garbage of"):
        summary = repo.garbage_collect(datetime.now(UTC) - min_age, dry_run=dry_run)
    counts = {kind: int(getattr(summary, field)) for kind, field in GC_COUNTS.items()}
    if summary.objects_failed_to_delete:
        errors = "; ".join(str(e) for e in list(summary.delete_errors)[:2])
        raise OSError(f"garbage collection of {url} could not delete {summary.objects_failed_to_delete} "
                      f"objects ({errors}); deleted: {counts}")
    return counts


def expire(
    store_url: str, name: str, older_than: datetime, *, storage_options: Mapping | None = None
) -> set[str]:
    """Expire snapshots older than `older_than` and delete the objects nothing reaches any more.

    Tagged releases and the head of main survive; so do the chunks they use. Snapshots and objects
    younger than `GC_GRACE` survive too, whatever `older_than` says: a run still writing started from a
    recent snapshot, and its chunks are reached by nothing until it commits. Naive datetimes are UTC.
    Returns the ids of the expired snapshots.

    The expired commits leave the branch's history with their metadata: main can no longer be rolled back
    to them, and their provenance (the input granules by name) is gone. The run records in the cube stay
    (`unit_run`: parameters, the digest of the inputs, code version), so a backfill still skips the months
    they made. No flow schedules this: it is an operator's decision (`soilcube store expire`).
    """
    if older_than.tzinfo is None:
        older_than = older_than.replace(tzinfo=UTC)
    older_than = min(older_than, datetime.now(UTC) - GC_GRACE)
    url = cube_url(store_url, name)
    repo = open_repository(url, storage_options)
    with _naming(url, "expire snapshots of"):
        expired = repo.expire_snapshots(older_than)
    collect_garbage(store_url, name, min_age=datetime.now(UTC) - older_than, storage_options=storage_options)
    return expired


# --- helpers ---------------------------------------------------------------------------------------------


def _as_times(values: Iterable) -> np.ndarray:
    return np.asarray(values, dtype="datetime64[ns]")


def _axis_attrs(axis: str) -> dict[str, str]:
    return {
        "standard_name": f"projection_{axis}_coordinate",
        "long_name": f"{axis} of the cell centre, EASE-Grid 2.0",
        "units": "m",
        "axis": axis.upper(),
    }


def _iso(time: np.datetime64) -> str:
    return str(time.astype("datetime64[s]"))


def _jsonable(value: Any) -> Any:
    """Plain JSON types (numpy scalars, dates and paths become numbers or strings) for commit metadata."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if isinstance(v, np.generic) else str(v)))
