"""Kerchunk references: of one granule, of granules stacked along time, and opening a reference set with
xarray (lazily and undecoded; the readers decode).

References are kerchunk "version 1" sets (Zarr v2 metadata, chunks pointing into the HDF5 files), the
format that kerchunk, fsspec and VirtualiZarr all read and write.
"""

from __future__ import annotations

import base64
import functools
import gc
import json
import threading
from collections import Counter

import fsspec
import h5py
import numpy as np
import xarray as xr
import zarr
from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import get_protocol
from kerchunk.hdf import SingleHdf5ToZarr

from soilcube.sources.base import Granule, GranuleError, Reader, rename_dims_in_refs

# Chunks smaller than this (bytes) are copied into the references: saves one tiny GET each on S3.
INLINE_THRESHOLD = 500


class _AttributesInOneWrite:
    """The part of a zarr node that kerchunk 0.2.10's attribute transfer uses (`.attrs.update`), saving the
    node's metadata once: zarr 3 rewrites it on every single key, which made referencing 2× slower."""

    def __init__(self, node):
        self.attrs = self
        self._node = node

    def update(self, attributes: dict) -> None:
        self._node.update_attributes(attributes)


class _Hdf5ToZarr(SingleHdf5ToZarr):
    """kerchunk's translator with two fixes for zarr 3.

    Empty datasets are skipped (e.g. SMAP L2's polar group on a half orbit that saw no polar cell): zarr 3
    refuses the zero-length chunk of an unchunked one, which would fail the whole granule, and they hold
    nothing to reference. Attributes are written in one go.
    """

    def _translator(self, name, h5obj):
        if isinstance(h5obj, h5py.Dataset) and h5obj.size == 0:
            return
        super()._translator(name, h5obj)

    def _transfer_attrs(self, h5obj, zobj):
        super()._transfer_attrs(h5obj, _AttributesInOneWrite(zobj))


class _CyclicGcPaused:
    """Automatic cyclic garbage collection off, in every thread, while any thread is inside (counted: dask
    workers reference granules in several threads at once).

    While h5py works it holds its global lock, also when it calls back into Python: reading the file
    through fsspec (whose I/O runs on fsspec's thread) and kerchunk's writes to its zarr store (run on
    zarr's thread). A collection that starts on one of those threads and frees an h5py object needs that
    lock, and waits for it forever. h5py's docs on file-like objects name this deadlock and this remedy.

    The pause sets the first generation's threshold to 0 rather than calling `gc.disable`: other code turns
    collection back on without asking (dask's `slice_array` calls `gc.enable` whenever it returns), and a
    zero threshold holds through that. Explicit `gc.collect()` calls still run.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._inside = 0
        self._thresholds = gc.get_threshold()

    def __enter__(self):
        with self._lock:
            if self._inside == 0:
                self._thresholds = gc.get_threshold()
                gc.set_threshold(0, *self._thresholds[1:])
            self._inside += 1

    def __exit__(self, *exc):
        with self._lock:
            self._inside -= 1
            if self._inside == 0:
                gc.set_threshold(*self._thresholds)


cyclic_gc_paused = _CyclicGcPaused()


def reference_granule(reader: Reader, url: str, storage_options: dict | None = None) -> dict:
    """The kerchunk references of one granule, checked against what `reader` needs."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    try:
        with cyclic_gc_paused, fs.open(path, "rb") as f:
            refs = _Hdf5ToZarr(f, url=url, inline_threshold=INLINE_THRESHOLD, error="raise").translate()
    except FileNotFoundError:
        raise GranuleError(url, "file does not exist") from None
    except Exception as e:  # h5py and kerchunk raise many types (OSError, KeyError…) on a bad file
        raise GranuleError(url, f"not a readable HDF5/NetCDF-4 file ({type(e).__name__}: {e})") from e
    rename_dims_in_refs(refs, reader.dims_of)
    reader.check(url, refs)
    return refs


def _arrays(refs: dict) -> dict[str, dict]:
    """Path → parsed .zarray of every array in a reference set."""
    return {k[: -len("/.zarray")]: json.loads(v) for k, v in refs["refs"].items() if k.endswith("/.zarray")}


def _attrs(refs: dict, path: str) -> dict:
    return json.loads(refs["refs"].get(f"{path}/.zattrs", "{}"))


def _dims(refs: dict, path: str) -> tuple[str, ...]:
    return tuple(_attrs(refs, path).get("_ARRAY_DIMENSIONS", ()))


def stacked_arrays(reader: Reader, refs: dict) -> dict[str, bool]:
    """The arrays that stack along time → whether they already have a (length-1) time axis."""
    stacked = {}
    for path in (k[: -len("/.zarray")] for k in refs["refs"] if k.endswith("/.zarray")):
        dims = _dims(refs, path)
        if reader.varies_in_time(path, dims):
            stacked[path] = bool(dims) and dims[0] == "time"
    return stacked


def _layout(reader: Reader, refs: dict) -> str:
    """What must agree between granules stacked together: the metadata of every stacked array and the
    attributes that decode it (a scale mismatch would otherwise decode wrongly without an error)."""
    arrays = _arrays(refs)
    layout = {}
    for path in sorted(stacked_arrays(reader, refs)):
        attrs = _attrs(refs, path)
        decoding = {k: attrs.get(k) for k in ("scale_factor", "add_offset", "valid_min", "valid_max",
                                               "valid_range", "_ARRAY_DIMENSIONS")}
        layout[path] = [arrays[path], decoding]
    return json.dumps(layout, sort_keys=True)


def split_combinable(reader: Reader, granules: list[Granule]) -> tuple[list[Granule], dict[str, str]]:
    """The granules that can be stacked along time, and url → reason for the others: those whose layout
    differs from the most common one, and those whose time another granule already has (of two, the last
    by file name is kept: the newer production)."""
    layouts = [_layout(reader, g.refs) for g in granules]
    if not layouts:
        return [], {}
    common, _ = Counter(layouts).most_common(1)[0]
    example = next(g for g, lay in zip(granules, layouts, strict=True) if lay == common)
    odd = {g.url: f"array layout differs from the other granules (e.g. {example.name.name})"
           for g, lay in zip(granules, layouts, strict=True) if lay != common}
    by_time: dict[np.datetime64, Granule] = {}
    for g in sorted((g for g in granules if g.url not in odd), key=lambda g: g.name.name):
        if g.time in by_time:
            odd[by_time[g.time].url] = f"same time as {g.name.name}, which is used instead"
        by_time[g.time] = g
    return list(by_time.values()), odd


def combine_along_time(reader: Reader, granules: list[Granule]) -> dict:
    """One reference set for granules of one layout, stacked along `time` in time order.

    Arrays with a leading length-1 `time` axis (GLDAS, LTDR) are concatenated along it; arrays without
    one (SMAP L4 `Geophysical_Data`) get it prepended. A `time` coordinate is written inline, from the
    file-name times (int64 seconds since 1970), into every group holding stacked arrays; it replaces the
    files' own time variables. Every other array (lat/lon, x/y…) is taken from the first granule.
    """
    granules = sorted(granules, key=lambda g: g.time)
    first = granules[0].refs
    stacked = stacked_arrays(reader, first)
    groups = {path.rpartition("/")[0] for path in stacked}  # "" is the root group
    time_arrays = {f"{group}/time".lstrip("/") for group in groups}
    dropped = time_arrays | {"time"}  # the files' own time variables (SMAP L4's root `time` is 64 s off)
    n = len(granules)
    out = {}
    for key, value in first["refs"].items():
        path, _, leaf = key.rpartition("/")
        if path in dropped or (path in stacked and not leaf.startswith(".z")):
            continue
        out[key] = value
    for path, has_time_axis in stacked.items():
        meta = json.loads(first["refs"][f"{path}/.zarray"])
        attrs = json.loads(first["refs"].get(f"{path}/.zattrs", "{}"))
        if has_time_axis:
            meta["shape"][0] = n
        else:
            meta["shape"], meta["chunks"] = [n, *meta["shape"]], [1, *meta["chunks"]]
            attrs["_ARRAY_DIMENSIONS"] = ["time", *attrs.get("_ARRAY_DIMENSIONS", [])]
        out[f"{path}/.zarray"], out[f"{path}/.zattrs"] = json.dumps(meta), json.dumps(attrs)
    for t, granule in enumerate(granules):
        for key, value in granule.refs["refs"].items():
            path, _, leaf = key.rpartition("/")
            if path not in stacked or leaf.startswith(".z"):
                continue
            # chunk key "i.j.k": a length-1 time axis has chunk index 0 first, replaced by t
            chunk = f"{t}.{leaf.partition('.')[2]}".rstrip(".") if stacked[path] else f"{t}.{leaf}"
            out[f"{path}/{chunk}"] = value
    seconds = np.array([g.time.astype("datetime64[s]").astype(np.int64) for g in granules], dtype="<i8")
    for path in time_arrays:
        out[f"{path}/.zarray"] = json.dumps({
            "shape": [n], "chunks": [n], "dtype": "<i8", "fill_value": None, "order": "C", "filters": None,
            "compressor": None, "dimension_separator": ".", "zarr_format": 2,
        })
        out[f"{path}/.zattrs"] = json.dumps({
            "_ARRAY_DIMENSIONS": ["time"], "standard_name": "time",
            "units": "seconds since 1970-01-01T00:00:00", "calendar": "proleptic_gregorian",
        })
        out[f"{path}/0"] = "base64:" + base64.b64encode(seconds.tobytes()).decode()
    return {"version": 1, "refs": out}


@functools.cache
def _local_files() -> AsyncFileSystemWrapper:
    """Local files for every reference filesystem, wrapped for async access once: wrapping costs more than
    opening a small reference set."""
    return AsyncFileSystemWrapper(LocalFileSystem(), asynchronous=True)


def _remote_protocol(refs: dict | str) -> str:
    """Protocol of the granules a reference set points to (they share the archive's protocol)."""
    if isinstance(refs, str):
        return get_protocol(refs)
    url = next((v[0] for v in refs["refs"].values() if isinstance(v, list) and v and v[0]), "file://")
    return get_protocol(url)


def _only(refs: dict, group: str | None, variables: list[str]) -> dict:
    """The reference set cut to the named arrays of `group` and its coordinates (1-D arrays named after
    their dimension): opening a 45-variable SMAP L4 group to read one variable parses 45 array headers."""
    arrays = _arrays(refs)
    prefix = f"{group}/" if group else ""
    wanted = set()
    for path in arrays:
        name = path.removeprefix(prefix)
        in_group = path.startswith(prefix) and "/" not in name
        if in_group and (name in variables or _dims(refs, path) == (name,)):
            wanted.add(path)
    kept = {k: v for k, v in refs["refs"].items()
            if k.rpartition("/")[0] not in arrays or k.rpartition("/")[0] in wanted}
    return {**refs, "refs": kept}


def open_references(refs: dict | str, storage_options: dict | None = None, group: str | None = None,
                    variables: list[str] | None = None) -> xr.Dataset:
    """Open a reference set (a dict, or the URL of a persisted parquet set) as a lazy, undecoded dataset,
    with only `variables` (and coordinates) of `group` if given.

    Arrays stay lazily indexed (no dask yet): readers cut their window first and chunk afterwards, so a
    row-chunked SMAP L3 file does not become 1624 dask tasks per variable.
    """
    if variables and isinstance(refs, dict):
        refs = _only(refs, group, variables)
    return xr.open_dataset(
        _reference_store(refs, storage_options), engine="zarr", group=group, consolidated=False,
        zarr_format=2, chunks=None, mask_and_scale=False, decode_times=False,
    )


def _reference_store(refs: dict | str, storage_options: dict | None) -> zarr.storage.FsspecStore:
    """A read-only zarr store over a reference set and the granules it points to."""
    options = storage_options or {}
    protocol = _remote_protocol(refs)
    if protocol in LocalFileSystem.protocol:
        remote = {"fs": {protocol: _local_files(), None: _local_files()}}
    else:
        # zarr reads asynchronously: an async remote filesystem (s3fs) must be made asynchronous too
        remote = {"remote_protocol": protocol, "remote_options": {**options, "asynchronous": True}}
    fs = fsspec.filesystem("reference", fo=refs, target_options=options, asynchronous=True,
                           skip_instance_cache=True, **remote)
    return zarr.storage.FsspecStore(fs, read_only=True)


def file_name_times(ds: xr.Dataset) -> np.ndarray:
    """The `time` coordinate of a combined reference set as datetime64[ns]."""
    return ds["time"].values.astype("datetime64[s]").astype("datetime64[ns]")
