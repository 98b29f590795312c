"""Open a cube for analysis: `open_cube("s3://bucket/store/downscaled_1km")` → a lazy, decoded xarray Dataset.

Reads go through a read-only icechunk session, so an analyst sees one consistent snapshot even while a
run is writing, and can pin a release (a tag) or any snapshot id from the cube's history.

`write_stac_catalog` describes the store's cubes as a STAC catalog (one collection per cube, with the
datacube extension's dimensions and variables, the made period as temporal extent, and the cube itself as
the asset), for search tools and for analysts who browse before they open.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import urlparse

import fsspec
import icechunk
import numpy as np
import pandas as pd
import pystac
import xarray as xr
from pyproj import Transformer
from pystac.extensions.datacube import DatacubeExtension, Dimension, Variable

from soilcube.grids import EPSG
from soilcube.store import BRANCH, CUBE_NAMES, cube_exists, cube_url, open_repository

CUBE_DESCRIPTIONS = {
    "downscaled_1km": "Daily 1 km soil moisture (0-5 cm) at the SMAP AM/PM overpasses: VIS/IR thermal-"
                      "inertia downscaling of SMAP L2_E 9 km (Fang et al. 2025), hybrid and additive "
                      "corrections.",
    "downscaled_400m": "Daily 400 m soil moisture (0-5 cm) at the SMAP AM/PM overpasses: VIS/IR thermal-"
                       "inertia downscaling of SMAP L2_E 9 km (Fang et al. 2025), hybrid and additive "
                       "corrections.",
    "visir_model": "The VIS/IR model: theta = a0 + a1 * delta_t per GLDAS cell, vegetation class and "
                   "overpass (and month), fitted on the GLDAS Noah record.",
    "characteristics": "Yearly per-pixel soil-moisture characteristics (max, min, mean, median).",
    "fused_1km_3h": "3-hourly 1 km soil moisture: VIPSTF fusion of SMAP L4 with the 1 km daily product.",
}
# Not plain Zarr: the Zarr v3 arrays are inside an icechunk repository (an icechunk-aware client opens it).
CUBE_MEDIA_TYPE = "application/vnd.zarr+icechunk"


def open_cube(url: str, version: str | None = None, storage_options: Mapping | None = None) -> xr.Dataset:
    """The cube at `url` (`<store>/<cube name>`), lazily, as dask arrays chunked by storage shard.

    `version`: None for the latest commit of the main branch, a release tag, or a snapshot id.
    `storage_options` are s3fs-style (key, secret, client_kwargs.endpoint_url…); without them S3
    credentials come from the environment. CF decoding applies (NaN fills, datetime times) and the
    `crs` grid-mapping variable becomes a coordinate, so it follows every variable selected.
    """
    repo = open_repository(url, storage_options)
    return _cube(_readonly_session(repo, url, version))


def _cube(session: icechunk.Session) -> xr.Dataset:
    cube = xr.open_zarr(session.store, consolidated=False, zarr_format=3, chunks=None, decode_coords="all")
    return cube.chunk(_storage_chunks(cube))


def _readonly_session(repo: icechunk.Repository, url: str, version: str | None) -> icechunk.Session:
    if version is None:
        return repo.readonly_session(branch=BRANCH)
    if version in repo.list_tags():
        return repo.readonly_session(tag=version)
    try:
        return repo.readonly_session(snapshot_id=version)
    except (icechunk.NotFoundError, ValueError):
        # icechunk raises NotFoundError for a well-formed unknown id and InvalidInputError (a ValueError)
        # for a string that cannot be a snapshot id; both mean "no such version" to the analyst.
        tags = ", ".join(sorted(repo.list_tags())) or "none"
        raise ValueError(
            f"cube {url} has no version {version!r}: give a tag (tags: {tags}) or a snapshot id "
            "from its history"
        ) from None


def _storage_chunks(cube: xr.Dataset) -> dict[str, int]:
    """One dask chunk per shard (or per chunk for unsharded variables): whole objects per task."""
    sizes: dict[str, int] = {}
    for var in cube.data_vars.values():  # index coordinates are in memory already
        shape = var.encoding.get("shards") or var.encoding.get("chunks")
        if shape:
            for dim, size in zip(var.dims, shape, strict=True):
                sizes[dim] = max(sizes.get(dim, 0), size)
    return sizes


# --- STAC ----------------------------------------------------------------------------------------------


def stac_collection(url: str, storage_options: Mapping | None = None) -> pystac.Collection:
    """A STAC collection describing the cube at `url` as it is now (the head of main): its box in lon/lat,
    the period it holds data for (the days with a `status`, else its whole time axis), the datacube
    extension's dimensions and variables, and one asset, the cube (with the head's snapshot id and tags,
    to open with `open_cube`)."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    repo = open_repository(url, storage_options)
    session = repo.readonly_session(branch=BRANCH)  # one snapshot for everything said (a run may commit)
    head, cube = session.snapshot_id, _cube(session)
    extent = pystac.Extent(pystac.SpatialExtent([_lonlat_box(cube)]), pystac.TemporalExtent([_period(cube)]))
    collection = pystac.Collection(id=name, description=CUBE_DESCRIPTIONS.get(name, name), extent=extent,
                                   license="other", keywords=["soil moisture", "SMAP", "downscaling"])
    DatacubeExtension.ext(collection, add_if_missing=True).apply(
        dimensions={dim: _dimension(cube, dim) for dim in cube.dims},
        variables={var: _variable(cube[var]) for var in cube.data_vars},
    )
    snapshot = {"icechunk:snapshot_id": head, "icechunk:tags": sorted(repo.list_tags())}
    collection.add_asset("cube", pystac.Asset(
        href=url, media_type=CUBE_MEDIA_TYPE, roles=["data"], extra_fields=snapshot,
        title=f"{name}: an icechunk repository, soilcube.access.open_cube(href, version=tag or snapshot id)",
    ))
    return collection


def write_stac_catalog(
    store_url: str, out_url: str | None = None, storage_options: Mapping | None = None
) -> tuple[str, list[pystac.Collection]]:
    """Write a self-contained STAC catalog of the store's cubes to `out_url` (default `<store>/stac`):
    catalog.json and `<cube>/collection.json` each. Returns the catalog's URL and the collections."""
    store_url = _absolute(store_url)  # the assets' hrefs must not depend on where the catalog lies
    out_url = _absolute(out_url or f"{store_url.rstrip('/')}/stac").rstrip("/")
    names = [n for n in CUBE_NAMES if cube_exists(store_url, n, storage_options=storage_options)]
    if not names:
        raise FileNotFoundError(f"no cubes in {store_url} to describe")
    catalog = pystac.Catalog(id="soilcube", description=f"soilcube cubes in {store_url}")
    collections = [stac_collection(cube_url(store_url, name), storage_options) for name in names]
    catalog.add_children(collections)
    catalog.normalize_hrefs(out_url)
    catalog.save(pystac.CatalogType.SELF_CONTAINED, stac_io=FsspecStacIO(storage_options))
    return f"{out_url}/catalog.json", collections


class FsspecStacIO(pystac.stac_io.DefaultStacIO):
    """pystac reading and writing through fsspec (file://, s3:// with the store's storage options):
    ``pystac.Catalog.from_file(url, stac_io=FsspecStacIO(options))``."""

    def __init__(self, storage_options: Mapping | None = None):
        super().__init__()
        self.storage_options = dict(storage_options or {})

    def read_text(self, source, *args, **kwargs) -> str:
        fs, path = fsspec.core.url_to_fs(str(source), **self.storage_options)
        return fs.cat_file(path).decode()

    def write_text(self, dest, txt: str, *args, **kwargs) -> None:
        fs, path = fsspec.core.url_to_fs(str(dest), **self.storage_options)
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(path, txt.encode())


def _absolute(url: str) -> str:
    """A plain path made absolute (not a file:// URL: the stores take paths as they are, unencoded); URLs as
    they are."""
    return url if urlparse(url).scheme else os.path.abspath(url)


def _lonlat_box(cube: xr.Dataset) -> list[float]:
    """[west, south, east, north] of the cells' outer edges: EASE2 x/y (cylindrical: the edges map to
    meridians and parallels), or lon/lat cell centres."""
    if {"x", "y"} <= set(cube.dims):
        (x0, x1), (y0, y1) = (_edges(cube[axis].values) for axis in ("x", "y"))
        lon, lat = Transformer.from_crs(EPSG, 4326, always_xy=True).transform([x0, x1], [y0, y1])
        return [float(lon[0]), float(lat[0]), float(lon[1]), float(lat[1])]
    lon, lat = ([cube[d].values for d in cube.dims if d.startswith(axis)] for axis in ("lon", "lat"))
    if not (lon and lat):
        raise ValueError(f"a cube with dims {list(cube.dims)}: neither x/y nor lon/lat to place it")
    return [float(lon[0].min()), float(lat[0].min()), float(lon[0].max()), float(lat[0].max())]


def _edges(centres: np.ndarray) -> tuple[float, float]:
    half = abs(float(centres[1] - centres[0])) / 2 if centres.size > 1 else 0.0
    return float(centres.min()) - half, float(centres.max()) + half


def _period(cube: xr.Dataset) -> list[datetime | None]:
    """[first, end] of the time labels that hold data (with a `status`, else all): end = the last label + the
    axis' step (a day's AM and PM slices lie after the day's label); [t, t] for a one-step axis."""
    if "time" not in cube.dims:
        return [None, None]
    times = cube["time"].values
    step = np.diff(times).min() if times.size > 1 else np.timedelta64(0, "s")
    if "status" in cube:
        made = cube["status"].values > 0
        times = times[made] if made.any() else times
    return [pd.Timestamp(t).to_pydatetime().replace(tzinfo=UTC) for t in (times.min(), times.max() + step)]


def _dimension(cube: xr.Dataset, dim: str) -> Dimension:
    """The datacube extension's dimension object: spatial (EASE2 x/y, or lon/lat), temporal, or the labels."""
    values = cube[dim].values if dim in cube.coords else np.arange(cube.sizes[dim])
    if dim in ("x", "y") or dim.startswith(("lon", "lat")):
        axis = dim if dim in ("x", "y") else "x" if dim.startswith("lon") else "y"
        steps = np.diff(values.astype(float))
        regular = steps.size > 0 and np.allclose(steps, steps[0], rtol=1e-9)
        return Dimension.from_dict({
            "type": "spatial", "axis": axis, "extent": [float(values.min()), float(values.max())],
            "step": float(steps.mean()) if regular else None,
            "reference_system": EPSG if dim in ("x", "y") else 4326})
    if dim == "time":
        first, last = (f"{pd.Timestamp(t):%Y-%m-%dT%H:%M:%SZ}" for t in (values.min(), values.max()))
        steps = np.unique(np.diff(values))
        step = pd.Timedelta(steps[0]).isoformat() if steps.size == 1 else None
        return Dimension.from_dict({"type": "temporal", "extent": [first, last], "step": step})
    return Dimension.from_dict({"type": dim, "values": values.tolist()})


def _variable(var: xr.DataArray) -> Variable:
    return Variable({"dimensions": list(var.dims), "type": "auxiliary" if var.name == "status" else "data",
                     "description": var.attrs.get("long_name", var.name),
                     **({"unit": var.attrs["units"]} if "units" in var.attrs else {})})
