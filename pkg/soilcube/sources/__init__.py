"""Readers of the input granules: `open_granules(product, urls)` opens any product lazily through
kerchunk references (persisted ones where the archive has them, made on the fly otherwise) and returns
decoded xarray with real variable names, NaN fills, integer flags, the file name's time and coordinates
computed from the grid definitions.

One reader class per format (registry.READERS): smap_l2e, smap_l3e, smap_l4 (smap.py), gldas, ltdr_ndvi
(latlon.py), viirs_lst, viirs_lai (viirs.py).
"""

from __future__ import annotations

import xarray as xr

from soilcube import refs
from soilcube.grids import Region, Window
from soilcube.sources.base import Granule, GranuleError
from soilcube.sources.registry import READERS, reader

__all__ = ["READERS", "Granule", "GranuleError", "open_granules", "reader"]


def open_granules(product: str, urls: list[str], storage_options: dict | None = None,
                  window: Window | Region | None = None, variables: list[str] | None = None) -> xr.Dataset:
    """Open granules of one product as one lazy (dask) dataset.

    `window`: an EASE2 window (M09 for SMAP; any grid for VIIRS, which is mosaicked onto it; any grid for
    GLDAS/LTDR, which are cut to the lat/lon block covering it) or a Region (cut on the product's grid).
    `variables`: real variable names to keep (default all). A granule that does not exist or cannot be
    read raises GranuleError naming the file and the reason.
    """
    urls = [str(url) for url in urls]
    if not urls:
        raise ValueError(f"no {product} granules given")
    product_reader = reader(product)
    window = product_reader.window_for(window)
    persisted = refs.PersistedReferences(product_reader, urls, storage_options)
    combined = persisted.combined(urls)
    if combined is not None:
        names = [persisted.names[url] for url in urls]
        return product_reader.open_combined(combined, names, storage_options, window, variables)
    return product_reader.open(persisted.granules(urls), storage_options, window, variables)
