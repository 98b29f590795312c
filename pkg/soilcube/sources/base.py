"""What every reader shares: the granule record, the error that names a bad file, the reader base class
and the decoding rules (fills → NaN, valid range, scale/offset; flags stay integers).

Readers open kerchunk references with xarray without CF decoding and decode here, so that the rules are
the same for every product and flags are not turned into floats by xarray's mask-and-scale.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from fnmatch import fnmatch

import numpy as np
import xarray as xr
from dask.base import tokenize

from soilcube import granules
from soilcube.grids import Region, Window


class GranuleError(Exception):
    """A granule that cannot be read; the message names the file and the reason."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


@dataclass(frozen=True)
class Granule:
    """One granule ready to open: where it is, what its name says, and its kerchunk references."""

    url: str
    name: granules.GranuleName
    refs: dict

    @property
    def time(self) -> np.datetime64:
        return self.name.time


# Attributes that describe the encoding on disk; they are dropped once a variable is decoded.
ENCODING_ATTRS = ("_FillValue", "missing_value", "fmissing_value", "scale_factor", "add_offset",
                  "valid_min", "valid_max", "valid_range")


def valid_range(attrs: dict) -> tuple[float | None, float | None]:
    if "valid_range" in attrs:
        low, high = attrs["valid_range"]
        return low, high
    return attrs.get("valid_min"), attrs.get("valid_max")


def decode_variable(var: xr.DataArray, fill) -> xr.DataArray:
    """Decode one (dask-backed) variable.

    Integer variables without scale_factor/add_offset are flags, classes or indices: they stay integers,
    their fill value moves to `encoding`. Everything else becomes float: the fill value and values outside
    the valid range become NaN, then scale and offset are applied. The on-disk encoding (chunks, filters)
    is not carried over: it describes the granule, not what a caller will write.
    """
    attrs = dict(var.attrs)
    scale, offset = attrs.get("scale_factor"), attrs.get("add_offset")
    low, high = valid_range(attrs)
    for key in ENCODING_ATTRS:
        attrs.pop(key, None)
    if var.dtype.kind in "iu" and scale is None and offset is None:
        flags = var.copy()
        flags.attrs = attrs
        flags.encoding = {} if fill is None else {"_FillValue": fill}
        return flags
    float_type = np.float64 if var.dtype.itemsize > 4 else np.float32
    # one pass per block (one dask task), not one task per comparison
    out = xr.apply_ufunc(_decode_block, var, dask="parallelized", output_dtypes=[float_type], kwargs={
        "fill": fill, "low": low, "high": high, "scale": scale, "offset": offset, "float_type": float_type})
    out.attrs = attrs
    return out


def _decode_block(raw: np.ndarray, fill, low, high, scale, offset, float_type) -> np.ndarray:
    out = raw.astype(float_type)
    invalid = np.zeros(raw.shape, dtype=bool) if fill is None else raw == fill
    if low is not None:
        invalid |= raw < low
    if high is not None:
        invalid |= raw > high
    if scale is not None and scale != 1:
        out *= float_type(scale)
    if offset is not None and offset != 0:
        out += float_type(offset)
    out[invalid] = np.nan
    return out


def chunked(ds: xr.Dataset | xr.DataArray, chunks: dict, *identity) -> xr.Dataset | xr.DataArray:
    """`ds.chunk(chunks)` for lazily indexed reference-backed data, named by `identity` (URLs, group,
    window…). Without a token, dask would name each chunk by pickling the whole reference filesystem, which
    costs more than the read itself."""
    return ds.chunk(chunks, token=tokenize(*identity))


def window_coords(window: Window) -> dict:
    """The 1-D x/y coordinates (cell centres, metres, EPSG:6933) of an EASE2 window."""
    return {
        "y": ("y", window.y, {"units": "m", "standard_name": "projection_y_coordinate"}),
        "x": ("x", window.x, {"units": "m", "standard_name": "projection_x_coordinate"}),
    }


def without_strings(ds: xr.Dataset) -> xr.Dataset:
    """Drop character variables (e.g. SMAP tb_time_utc): the cubes carry numbers only."""
    return ds.drop_vars([k for k, v in ds.data_vars.items() if v.dtype.kind in "SUO"])


def rename_dims_in_refs(refs: dict, dims_of) -> None:
    """Give every array of a reference set meaningful dimension names, in place.

    `dims_of(path, shape, dims)` returns the new names (or the old ones). HDF5 files without dimension
    scales (SMAP L2/L3, VIIRS) come out of kerchunk with `phony_dim_<axis>` names, which clash when two
    arrays of one group have different lengths on the same axis; fixing them in the references once means
    the persisted sets open cleanly too.
    """
    store = refs["refs"]
    for key in [k for k in store if k.endswith("/.zarray")]:
        path = key[: -len("/.zarray")]
        shape = json.loads(store[key])["shape"]
        attrs = json.loads(store.get(f"{path}/.zattrs", "{}"))
        dims = dims_of(path, tuple(shape), tuple(attrs.get("_ARRAY_DIMENSIONS", ())))
        attrs["_ARRAY_DIMENSIONS"] = list(dims)
        store[f"{path}/.zattrs"] = json.dumps(attrs)


def array_shapes(refs: dict) -> dict[str, tuple[int, ...]]:
    """Path → shape of every array in a reference set."""
    store = refs["refs"]
    return {k[: -len("/.zarray")]: tuple(json.loads(v)["shape"]) for k, v in store.items()
            if k.endswith("/.zarray")}


class Reader(ABC):
    """One input format. Subclasses say which arrays must be there, how dimensions are named, how the
    granules combine, and how to open a list of granules as one decoded, lazy dataset."""

    product: str = ""
    grid_name: str = "M01"  # the EASE2 grid a Region is cut on for this product
    # path (or fnmatch pattern) → required shape (None for a free length); a granule without them is refused
    required: dict[str, tuple[int | None, ...]] = {}
    version_pattern: re.Pattern
    combines_along_time = False  # one persisted reference set for all granules (shapes agree)

    def dims_of(self, path: str, shape: tuple[int, ...], dims: tuple[str, ...]) -> tuple[str, ...]:
        return dims

    def varies_in_time(self, path: str, dims: tuple[str, ...]) -> bool:
        """Whether the array at `path` is stacked along time when granules are combined."""
        return bool(dims) and dims[0] == "time" and path != "time"

    def check(self, url: str, refs: dict) -> None:
        """Raise GranuleError if the references lack an array the reader needs, or its shape is wrong."""
        shapes = array_shapes(refs)
        for pattern, want in self.required.items():
            path = next((p for p in shapes if fnmatch(p, pattern)), None)
            if path is None:
                raise GranuleError(url, f"missing required variable {pattern}")
            got = shapes[path]
            if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got, strict=True)):
                raise GranuleError(url, f"wrong layout: {path} has shape {got}, expected {want}")

    def version(self, name: str) -> str:
        """The product version that the file name carries (CRID, collection, production stamp…)."""
        m = self.version_pattern.search(name)
        return ".".join(m.groups()) if m else ""

    def window_for(self, area: Window | Region | None) -> Window | None:
        if isinstance(area, Region):
            return area.window(self.grid_name)
        return area

    @abstractmethod
    def open(self, granules: list[Granule], storage_options: dict | None, window: Window | None,
             variables: list[str] | None) -> xr.Dataset:
        """The granules as one lazy, decoded dataset (cut to `window` where given)."""
