"""Open a cube for analysis: `open_cube("s3://bucket/store/downscaled_1km")` → a lazy, decoded xarray Dataset.

Reads go through a read-only icechunk session, so an analyst sees one consistent snapshot even while a
run is writing, and can pin a release (a tag) or any snapshot id from the cube's history.
"""

from __future__ import annotations

from collections.abc import Mapping

import icechunk
import xarray as xr

from soilcube.store import BRANCH, open_repository


def open_cube(url: str, version: str | None = None, storage_options: Mapping | None = None) -> xr.Dataset:
    """The cube at `url` (`<store>/<cube name>`), lazily, as dask arrays chunked by storage shard.

    `version`: None for the latest commit of the main branch, a release tag, or a snapshot id.
    `storage_options` are s3fs-style (key, secret, client_kwargs.endpoint_url…); without them S3
    credentials come from the environment. CF decoding applies (NaN fills, datetime times) and the
    `crs` grid-mapping variable becomes a coordinate, so it follows every variable selected.
    """
    repo = open_repository(url, storage_options)
    session = _readonly_session(repo, url, version)
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
