"""Readers of products whose granules all share one layout (SMAP L4, GLDAS, LTDR): the granules are
stacked along time in one reference set, opened once, cut to the window, then chunked and decoded."""

from __future__ import annotations

import uuid
from abc import abstractmethod

import numpy as np
import pandas as pd
import xarray as xr

from soilcube import granules
from soilcube.grids import Window
from soilcube.sources.base import Granule, GranuleError, Reader, chunked, decode_variable, without_strings
from soilcube.sources.references import combine_along_time, file_name_times, open_references, split_combinable


class StackedReader(Reader):
    combines_along_time = True
    group: str | None = None  # the HDF5 group that holds the science variables

    def decode(self, var: xr.DataArray) -> xr.DataArray:
        return decode_variable(var, var.attrs.get("_FillValue"))

    def open(self, granules: list[Granule], storage_options: dict | None, window: Window | None,
             variables: list[str] | None) -> xr.Dataset:
        _, odd = split_combinable(self, granules)
        if odd:
            url, reason = next(iter(odd.items()))
            raise GranuleError(url, reason)
        refs = combine_along_time(self, granules)
        return self.open_combined(refs, [g.name for g in granules], storage_options, window, variables)

    def open_combined(self, refs: dict | str, names: list[granules.GranuleName], storage_options: dict | None,
                      window: Window | None, variables: list[str] | None) -> xr.Dataset:
        """Open the granules `names` out of a combined reference set (in memory, or persisted) that holds
        them and maybe more."""
        ds = open_references(refs, storage_options, group=self.group, variables=variables)
        names = sorted(names, key=lambda n: n.time)
        times = np.array([n.time for n in names], dtype="datetime64[ns]")
        position = pd.Index(file_name_times(ds)).get_indexer(times)
        if (position < 0).any():
            missing = names[int(np.flatnonzero(position < 0)[0])].name
            raise GranuleError(missing, "not in the combined references")
        ds = without_strings(ds.isel(time=position).drop_vars("time"))
        if variables:
            ds = ds[list(variables)]
        # a persisted set is named by the digest of its granules; one made in memory is unique to this call
        identity = refs if isinstance(refs, str) else uuid.uuid4().hex
        ds = chunked(self.place(ds, window), {"time": 1}, identity, [n.name for n in names], window)
        ds = ds.map(self.decode, keep_attrs=True)
        return ds.assign_coords(time=times, granule=("time", [n.name for n in names]))

    @abstractmethod
    def place(self, ds: xr.Dataset, window: Window | None) -> xr.Dataset:
        """Cut the (still lazily indexed) dataset to the window and attach the grid's coordinates."""
