"""The units of work that flows schedule and the CLI runs: fit the VIS/IR model, downscale days.

Each composes readers (`sources`) → pure algorithms (`visir`) → the cube store (`store`); the Dask work
inside runs on the current default scheduler (a distributed Client where the caller opened one).
"""

from __future__ import annotations

import calendar
import logging
from collections.abc import Callable
from datetime import date, timedelta
from typing import NamedTuple

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from soilcube import __version__, refs, store
from soilcube.access import open_cube
from soilcube.config import Settings
from soilcube.grids import GLDAS_GRID, Region, Window, local_solar_dates, parent_index, region
from soilcube.sources import open_granules
from soilcube.validate.metrics import score
from soilcube.validate.report import qc_gate
from soilcube.visir.apply import delta_t, vegetation_class
from soilcube.visir.correct import CORRECTIONS, downscale_and_correct
from soilcube.visir.fit import fit_model as fit_coefficients
from soilcube.visir.qa import DENSE_VEGETATION_VWC, QA, flag_where, qa_attrs
from soilcube.visir.training import OVERPASSES, gldas_pairs, ndvi_on_gldas

log = logging.getLogger(__name__)
DOWNSCALED_CUBES = {"downscaled_1km": "M01", "downscaled_400m": "M400"}
# The daily cubes' time axis: the SMAP era, with room for years of NRT.
CUBE_FIRST_DAY, CUBE_LAST_DAY = date(2015, 4, 1), date(2030, 12, 31)
# SMAP surface_flag bits (input-formats.md §2): snow_or_ice, permanent_snow_or_ice,
# radiometer_frozen_ground, model_frozen_ground.
SMAP_FROZEN_OR_SNOW_BITS = (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8)
# SMAP retrieval_qual_flag: bit 0 "not recommended" and bit 2 "not successful" mark a bad retrieval.
SMAP_BAD_RETRIEVAL_BITS = (1 << 0) | (1 << 2)
SMAP_FLAG_FILL = 65534
# Fine pixels per side of a downscaling task's tile: the cubes' shard side (store.CubeLayout).
TILE_PIXELS = store.CubeLayout().spatial_shard


class RunInput(NamedTuple):
    variables: list[str]
    grids: tuple[str, ...]
    span_days: tuple[int, int]


def granule_versions(
    settings: Settings, product: str, first: np.datetime64 | None = None, last: np.datetime64 | None = None
) -> dict[str, str]:
    """`refs.granule_versions` (URL → version) of the settings' archive."""
    return refs.granule_versions(settings.archive, product, settings.storage_options, first, last)


# VNP15A2H LAI composites cover 8-day periods and are named by their first day. A day takes the composite
# of its period or, where that one is missing, the one before: at most 15 days old, in a run of one day as
# in a month's.
LAI_LOOKBACK_DAYS = 15
# What a run of some days reads of each input product: the variables, on which grids' windows of the
# region, and which granules: how many days before the first day and after the last one their file-name
# times may lie (SMAP half orbits of the local days; the night after each day, for the PM pairing; the LAI
# composites that may serve the first day). The search for a bad granule reads the same.
INPUTS = {
    "smap_l2e": RunInput(
        ["soil_moisture", "retrieval_qual_flag", "vegetation_water_content", "surface_flag"], ("M09",), (1, 2)
    ),
    "viirs_lst": RunInput(["LST_1KM", "QC"], tuple(DOWNSCALED_CUBES.values()), (0, 1)),
    "viirs_lai": RunInput(["Lai"], tuple(DOWNSCALED_CUBES.values()), (LAI_LOOKBACK_DAYS, 1)),
}


def run_inputs(settings: Settings, days: list[date]) -> dict[str, dict[str, str]]:
    """Product → {URL → version} of the readable granules (per the reference index) that a run of `days`
    reads. A run lists them once, reads those and records them: a month counts as done only while they are
    what the index offers (`month_committed`)."""
    inputs = {}
    for product, reads in INPUTS.items():
        before, after = reads.span_days
        first = np.datetime64(min(days)) - np.timedelta64(before, "D")
        last = np.datetime64(max(days)) + np.timedelta64(after, "D")
        inputs[product] = granule_versions(settings, product, first, last)
    return inputs


def _by_name(inputs: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Product → {URL → version} as product → {file name → version}: the provenance's record of inputs."""
    return {product: {url.rsplit("/", 1)[-1]: version for url, version in versions.items()}
            for product, versions in inputs.items()}


# --- model fit -----------------------------------------------------------------------------------------


def fit_model(settings: Settings, *, by_month: bool = False, absolute_dt: bool = False) -> str:
    """Fit θ = a0 + a1·dT per GLDAS cell × vegetation class × overpass (× month) on the archive's whole
    GLDAS record over the region; write the `visir_model` cube; return the commit id. `absolute_dt` fits
    on |dT|, as the public code's model build does (the application keeps the signed dT, as there)."""
    area = region(settings.region)
    # fails now, naming the store, if it cannot hold cubes (not after the long fit)
    store.cube_exists(settings.store, "visir_model", storage_options=settings.storage_options)
    gldas_versions = granule_versions(settings, "gldas")
    ndvi_versions = granule_versions(settings, "ltdr_ndvi")
    gldas_urls, ndvi_urls = list(gldas_versions), list(ndvi_versions)
    if not gldas_urls or not ndvi_urls:
        raise RuntimeError(
            f"the archive {settings.archive} has no referenced GLDAS or LTDR granules: "
            "run `soilcube refs` first"
        )
    gldas = open_granules(
        "gldas",
        gldas_urls,
        settings.storage_options,
        window=area.window("M09"),
        variables=["SoilMoi0_10cm_inst", "AvgSurfT_inst"],
    )
    soil_moisture, dt = gldas_pairs(gldas)
    ndvi = ndvi_on_gldas(
        open_granules(
            "ltdr_ndvi", ndvi_urls, settings.storage_options, window=area.window("M09"), variables=["NDVI"]
        )["NDVI"]
    )
    ndvi = ndvi.reindex(
        time=soil_moisture["time"].values, lat=soil_moisture["lat"].values, lon=soil_moisture["lon"].values
    )
    model = fit_coefficients(soil_moisture, dt, ndvi, by_month=by_month, absolute=absolute_dt).compute()
    if model["a1"].isnull().all():
        raise RuntimeError(
            f"no GLDAS cell of region {settings.region!r} has a fit: the archive {settings.archive} holds no "
            f"valid GLDAS/LTDR pairs there ({len(gldas_urls)} GLDAS granules read). Is the archive over this "
            "region? Pass --region (or SOILCUBE_REGION) as given to `soilcube synth`."
        )
    model.attrs.update(
        {
            "title": "soilcube VIS/IR model: theta = a0 + a1 * dT",
            "source": "GLDAS Noah 0.25 3-hourly, LTDR AVHRR NDVI",
            "soilcube_version": __version__,
        }
    )
    provenance = {
        "inputs": _by_name({"gldas": gldas_versions, "ltdr_ndvi": ndvi_versions}),
        "parameters": {"region": settings.region, "by_month": by_month, "absolute_dt": absolute_dt},
        "record": [str(gldas["time"].values.min()), str(gldas["time"].values.max())],
    }
    return store.write_dataset(
        settings.store,
        "visir_model",
        model,
        provenance=provenance,
        message=f"visir model fit on {len(gldas_urls)} GLDAS granules",
        storage_options=settings.storage_options,
    )


# --- downscaling -----------------------------------------------------------------------------------------


def _model_index(model: xr.Dataset, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Row/column of the model's (lat, lon) table holding each fine row/column (−1 outside)."""
    rows, cols = GLDAS_GRID.index(window)
    lat_pos = pd.Index(np.round(model["lat"].values, 4)).get_indexer(np.round(GLDAS_GRID.lat[rows], 4))
    lon_pos = pd.Index(np.round(model["lon"].values, 4)).get_indexer(np.round(GLDAS_GRID.lon[cols], 4))
    return lat_pos, lon_pos


def smap_9km(settings: Settings, days: list[date], area: Region, inputs: dict[str, dict]) -> xr.Dataset:
    """SMAP L2_E half orbits composited per local day and overpass (descending = AM, ascending = PM) on
    the region's M09 window: soil_moisture (bad retrievals removed), vegetation_water_content, frozen.
    `inputs`: the run's (`run_inputs`)."""
    urls = list(inputs["smap_l2e"])
    window = area.window("M09")
    shape = (len(days), len(OVERPASSES), *window.shape)
    empty = np.full(shape, np.nan, dtype=np.float32)
    sm, vwc, frozen = empty.copy(), empty.copy(), np.zeros(shape, dtype=bool)
    if urls:
        orbits = open_granules(
            "smap_l2e",
            urls,
            settings.storage_options,
            window=window,
            variables=INPUTS["smap_l2e"].variables,
        ).compute()
        bad = (orbits["retrieval_qual_flag"] & SMAP_BAD_RETRIEVAL_BITS) > 0
        orbit_sm = orbits["soil_moisture"].where(~bad).values
        west, _, east, _ = area.bounds_lonlat
        local_day = local_solar_dates(orbits["time"].values, (west + east) / 2)  # at the region's centre
        day_index = pd.DatetimeIndex([np.datetime64(d, "ns") for d in days]).get_indexer(local_day)
        overpass_index = np.where(orbits["half_orbit"].values == "D", 0, 1)
        # a few half orbits a day: the first valid retrieval of a cell wins
        for i in np.flatnonzero(day_index >= 0):
            target = (day_index[i], overpass_index[i])
            sm[target] = np.where(np.isnan(sm[target]), orbit_sm[i], sm[target])
            vwc[target] = np.fmax(vwc[target], orbits["vegetation_water_content"].values[i])
            flags = orbits["surface_flag"].values[i]
            frozen[target] |= (flags != SMAP_FLAG_FILL) & ((flags & SMAP_FROZEN_OR_SNOW_BITS) > 0)
    coords = {
        "time": [np.datetime64(d, "ns") for d in days],
        "overpass": OVERPASSES,
        "y": window.y,
        "x": window.x,
    }
    dims = ("time", "overpass", "y", "x")
    return xr.Dataset(
        {"soil_moisture": (dims, sm), "vegetation_water_content": (dims, vwc), "frozen": (dims, frozen)},
        coords=coords,
    )


def _viirs(settings: Settings, days: list[date], window: Window,
           inputs: dict[str, dict]) -> tuple[xr.DataArray, xr.DataArray]:
    """Day and night LST (days and the day after, for the PM pairing) and the LAI class on `window`."""
    lst_urls, lai_urls = list(inputs["viirs_lst"]), list(inputs["viirs_lai"])
    if not lst_urls:
        raise MissingInputs(f"no VIIRS LST granules for {min(days)} … {max(days)} in {settings.archive}")
    granules = open_granules("viirs_lst", lst_urls, settings.storage_options, window=window,
                             variables=INPUTS["viirs_lst"].variables)
    lst = granules["LST_1KM"].where(usable_lst(granules["QC"], settings.lst_quality))
    day_times = [np.datetime64(d, "ns") for d in days]
    lst_day = lst.sel(day_night="day").reindex(time=day_times)
    dts = xr.concat([delta_t(lst_day, lst.sel(day_night="night"), o) for o in OVERPASSES], dim="overpass")
    if lai_urls:
        lai = open_granules("viirs_lai", lai_urls, settings.storage_options, window=window,
                            variables=INPUTS["viirs_lai"].variables)["Lai"]
        lai = lai_of_days(lai, days)
    else:  # as a day without a composite: every pixel takes class 0, whichever days the run covers
        lai = xr.full_like(lst_day, np.nan).drop_vars("day_night", errors="ignore").rename("Lai")
        lai.attrs = {}
    return dts, vegetation_class(lai, method="lai_minmax")


def usable_lst(qc: xr.DataArray, quality: str) -> xr.DataArray:
    """Where VNP21A1D/N LST is of the `quality` asked for, by the QC's mandatory QA (bits 0–1): 0 'best
    quality'; 1 'nominal quality' (emissivity below 0.95, retrieval affected by a nearby cloud, or low
    transmissivity), which 'nominal' also takes; 2 and 3 'not produced' (cloud, other reasons; also the
    reader's all-ones fill where no tile covers a cell)."""
    highest = {"best": 0b00, "nominal": 0b01}[quality]
    return (qc & 0b11) <= highest


def lai_of_days(lai: xr.DataArray, days: list[date]) -> xr.DataArray:
    """The LAI composite of each day: its 8-day period's, or the one before (`LAI_LOOKBACK_DAYS`); NaN
    without either (every pixel then takes class 0, as the public code gives a pixel without LAI)."""
    return lai.sortby("time").reindex(time=[np.datetime64(d, "ns") for d in days], method="ffill",
                                      tolerance=np.timedelta64(LAI_LOOKBACK_DAYS, "D"))


def downscale_window(
    settings: Settings, days: list[date], grid_name: str, model: xr.Dataset, smap: xr.Dataset, area: Region,
    inputs: dict[str, dict],
) -> xr.Dataset:
    """The downscaled cube slices of `days` on the region's `grid_name` window (lazy), from the run's
    `inputs` (`run_inputs`).

    Apply + both corrections run fused (`downscale_and_correct`), one task per tile of `TILE_PIXELS`²
    fine pixels (the cubes' shard side, so tiles map onto shards) × one day × one overpass, each reading
    its tile plus the halo of whole 9 km cells that the footprints reach: no task holds more than a tile
    and its halo of the fine fields.
    """
    window = area.window(grid_name)
    dts, veg_class = _viirs(settings, days, window, inputs)
    tile = {"y": TILE_PIXELS, "x": TILE_PIXELS}
    parents = parent_index(window, area.window("M09"))
    fields = downscale_and_correct(
        dts.chunk({"time": 1, "overpass": 1} | tile),
        veg_class.chunk({"time": 1} | tile),
        model,
        _model_index(model, window),
        smap["soil_moisture"],
        parents,
        CORRECTIONS,
    )
    flags = flag_where(smap["vegetation_water_content"] > DENSE_VEGETATION_VWC, QA.DENSE_VEGETATION) | (
        flag_where(smap["frozen"], QA.FROZEN_OR_SNOW)
    )
    like = fields["qa"].transpose("time", "overpass", "y", "x")
    slices = xr.Dataset(
        {
            "sm": fields["sm"],
            "sm_additive": fields["sm_additive"],
            "smap_9km": _on_fine_chunks(smap["soil_moisture"].astype(np.float32), parents, like),
            "qa": like | _on_fine_chunks(flags.astype(np.uint8), parents, like),
        }
    )
    return slices.transpose("time", "overpass", "y", "x").assign_coords(x=window.x, y=window.y)


def _on_fine_chunks(coarse: xr.DataArray, parents, like: xr.DataArray) -> xr.DataArray:
    """A 9 km field (numpy) on the fine grid of `like`, with `like`'s dims and chunks: each task gathers its
    own block, and the graph holds the 9 km array once (gathered eagerly it would be copied to the fine
    grid inside the graph; gathered by dask indexing it would come in 9 km-sized chunks)."""
    coarse = coarse.transpose(*like.dims)
    tables = {"y": parents[0], "x": parents[1]}
    positions = [
        da.from_array(tables.get(d, np.arange(like.sizes[d])), chunks=(c,))
        for d, c in zip(like.dims, like.chunks, strict=True)
    ]
    out, whole = "abcd"[: like.ndim], "ABCD"[: like.ndim]
    pairs = [arg for p, i in zip(positions, out, strict=True) for arg in (p, i)]
    data = da.blockwise(
        _gather_block,
        out,
        da.from_array(coarse.values, chunks=-1),
        whole,
        *pairs,
        dtype=coarse.dtype,
        concatenate=True,
    )
    return xr.DataArray(data, dims=like.dims, coords=like.coords)


def _gather_block(table: np.ndarray, *positions: np.ndarray) -> np.ndarray:
    """table[p0, p1, …] for 1-D positions along each axis (an outer product); −1 (outside the 9 km window)
    → NaN, or 0 for integer tables."""
    values = table[np.ix_(*(np.maximum(p, 0) for p in positions))]
    outside = np.zeros(values.shape, dtype=bool)
    for axis, p in enumerate(positions):
        outside |= (p < 0).reshape([-1 if a == axis else 1 for a in range(len(positions))])
    return np.where(outside, np.nan if values.dtype.kind == "f" else 0, values).astype(table.dtype)


def _parameters(settings: Settings, model_version: str) -> dict:
    return {
        "region": settings.region,
        "model_version": model_version,
        "method": CORRECTIONS["sm"].method,
        "k": CORRECTIONS["sm"].k,
        "footprint_km": CORRECTIONS["sm"].footprint_km,
        "additive_footprint_km": CORRECTIONS["sm_additive"].footprint_km,
        "veg_class": "lai_minmax",
        "lst_quality": settings.lst_quality,
    }


def _ensure_cube(settings: Settings, name: str, window: Window) -> None:
    variable_attrs = {
        "qa": qa_attrs(),
        "sm": {"long_name": "soil moisture, hybrid correction to SMAP"},
        "sm_additive": {"long_name": "soil moisture, additive correction (public code)"},
        "smap_9km": {"long_name": "SMAP L2_E 9 km soil moisture of the parent cell"},
    }
    store.create_cube(
        settings.store,
        name,
        window,
        pd.date_range(CUBE_FIRST_DAY, CUBE_LAST_DAY, freq="D").values,
        extra_dims={"overpass": OVERPASSES},
        variables={"sm": np.float32, "sm_additive": np.float32, "smap_9km": np.float32, "qa": np.uint8},
        variable_attrs=variable_attrs,
        status=True,
        exist_ok=True,
        storage_options=settings.storage_options,
        attrs={
            "title": f"soilcube VIS/IR downscaled SMAP soil moisture ({name})",
            "institution": "soilcube",
            "Conventions": "CF-1.10",
        },
    )


def model_snapshot(settings: Settings) -> str:
    """The snapshot id of the current VIS/IR model."""
    try:
        history = store.history(settings.store, "visir_model", storage_options=settings.storage_options)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{error}: fit the model first (soilcube run model)") from None
    return history[0].snapshot_id


def model_version(settings: Settings) -> tuple[xr.Dataset, str]:
    """The current VIS/IR model and its snapshot id."""
    snapshot = model_snapshot(settings)
    url = store.cube_url(settings.store, "visir_model")
    return open_cube(url, version=snapshot, storage_options=settings.storage_options).load(), snapshot


class MissingInputs(RuntimeError):
    """Days without any granule of a product the run needs: nothing to look for in the granules."""


class QCError(RuntimeError):
    """An NRT run whose products fail the QC gate: nothing was committed."""


def qc_failures(slices: xr.Dataset, thresholds: dict) -> list[str]:
    """The QC gate of `thresholds` on the 1 km slices scored against their SMAP 9 km retrievals."""
    scores = {"visir_1km_hybrid": score(slices["sm"], slices["smap_9km"], min_count=100)}
    return qc_gate(scores, thresholds)


def downscale_days(
    settings: Settings, days: list[date], *, status: str = "final", key: str | None = None
) -> dict[str, str]:
    """Downscale `days` at 1 km and 400 m and write them, one commit per cube; {cube: commit id} (an NRT
    run leaves out a cube that holds all its days as 'final' already: `store.stage_slices`).

    Both cubes' slices are computed and staged before either is committed, so a failure while reading or
    computing leaves both cubes as they were. A granule found missing or unreadable only now (removed since
    it was referenced, or a corrupt data block behind a sound header) is rejected (`refs.reject_granules`),
    named in a warning and in the commits' provenance, and the run is made once more without it: the
    slices that needed it are NaN with their QA reasons, the other days complete. NRT runs
    (`status="nrt"`) pass the QC gate of `settings.nrt_qc` over the days they stage, or raise QCError having
    committed nothing.
    """
    days = sorted(days)
    model = model_version(settings)  # outside the try: a missing model is no granule's fault
    try:
        staged = _stage_days(settings, days, status, key, model, rejected={})
    except (QCError, MissingInputs):
        raise
    except Exception as error:
        if refs.transient(error):  # the network or the server: the next run retries
            raise
        try:
            rejected = _reject_unreadable(settings, days)
        except Exception as checking:
            error.add_note(f"looking for the granule behind it failed too: {checking!r}")
            raise error from None
        if not rejected:
            raise
        staged = _stage_days(settings, days, status, key, model, rejected)
    # committed only when both are staged; a failed second commit undoes the first (`commit_together`)
    commits = store.commit_together(staged)
    return {name: commit for name, commit in commits.items() if commit is not None}


def _reject_unreadable(settings: Settings, days: list[date]) -> dict[str, str]:
    """Find the run's input granules that are missing or unreadable where the run reads them, reject them
    (so runs read them as missing) and warn; '<product>/<file name>' → reason."""
    area = region(settings.region)
    rejected = {}
    for product, versions in run_inputs(settings, days).items():
        reads = INPUTS[product]
        bad = refs.unreadable_granules(product, list(versions), settings.storage_options,
                                       windows=[area.window(grid) for grid in reads.grids],
                                       variables=reads.variables)
        if bad:
            refs.reject_granules(settings.archive, product, bad, settings.storage_options)
        for url, unreadable in bad.items():
            log.warning("%s: %s; rejected, the slices that need it stay empty", url, unreadable.reason)
            rejected[f"{product}/{url.rsplit('/', 1)[-1]}"] = unreadable.reason
    return rejected


def _stage_days(
    settings: Settings, days: list[date], status: str, key: str | None, model: tuple[xr.Dataset, str],
    rejected: dict[str, str],
) -> dict[str, store.StagedSlices]:
    area = region(settings.region)
    model, version = model
    inputs = run_inputs(settings, days)  # once: both cubes are made from the same granules
    smap = smap_9km(settings, days, area, inputs)
    products = {
        name: downscale_window(settings, days, grid, model, smap, area, inputs)
        for name, grid in DOWNSCALED_CUBES.items()
    }
    if status == "nrt":
        products["downscaled_1km"].load()  # once, for both the write and the QC gate
    staged = {}
    for name, grid_name in DOWNSCALED_CUBES.items():
        _ensure_cube(settings, name, area.window(grid_name))
        provenance = {
            "inputs": _by_name(inputs),
            "parameters": _parameters(settings, version),
            "strategy": status,
        }
        if rejected:
            provenance["rejected"] = rejected
        staged[name] = store.stage_slices(
            settings.store,
            name,
            products[name],
            provenance=provenance,
            key=key,
            status=status,
            message=f"{name}: {days[0]} … {days[-1]} ({status})",
            storage_options=settings.storage_options,
        )
        if status == "nrt":  # after each cube (1 km first): a failing gate costs no further cube's work
            _check_qc(settings, products["downscaled_1km"], staged)
    return staged


def _check_qc(settings: Settings, slices_1km: xr.Dataset, staged: dict[str, store.StagedSlices]) -> None:
    """The NRT QC gate over the days the run is about to commit to the cubes staged so far: those staged,
    not those asked for (a backfill may have made some final since, and staging leaves final days alone)."""
    times = np.unique(np.concatenate([s.times for s in staged.values()]))
    if not times.size:
        return
    failures = qc_failures(slices_1km.sel(time=times), settings.nrt_qc)
    if failures:
        days = [str(t)[:10] for t in times]
        raise QCError(f"NRT {', '.join(days)} fails the QC gate: {'; '.join(failures)}")


def month_days(year: int, month: int, start: date | None = None, end: date | None = None) -> list[date]:
    """The days of a month clipped to [start, end]."""
    days = [date(year, month, d) for d in range(1, calendar.monthrange(year, month)[1] + 1)]
    return [d for d in days if (start is None or d >= start) and (end is None or d <= end)]


def month_key(days: list[date]) -> str:
    """The unit-of-work key of a month's days: 'YYYY-MM' for a whole month, else the span."""
    whole = month_days(days[0].year, days[0].month)
    return f"{days[0]:%Y-%m}" if days == whole else f"{days[0]}..{days[-1]}"


def month_committed(
    settings: Settings, year: int, month: int, start: date | None = None, end: date | None = None
) -> bool:
    """Whether both downscaled cubes hold these days of the month as made with the current model and
    parameters from the granules the archive offers now: the record of the unit's run in each cube
    (`store.unit_run`: not rolled back, not rewritten by a later run) has the current parameters and the
    digest of exactly the readable granules of its days in their current versions. A granule referenced
    since (a rejected or failed one replaced by a good file, a late or reprocessed one) or rejected since
    asks for the month again."""
    try:
        parameters_hash = store.stable_hash(_parameters(settings, model_snapshot(settings)))
    except FileNotFoundError:
        return False
    days = month_days(year, month, start, end)
    key = month_key(days)
    made = []
    for name in DOWNSCALED_CUBES:
        try:
            run = store.unit_run(settings.store, name, key, storage_options=settings.storage_options)
        except FileNotFoundError:
            return False
        if run is None or run["parameters_hash"] != parameters_hash:
            return False
        made.append(run)
    inputs = store.stable_hash(_by_name(run_inputs(settings, days)))  # last: it reads every input's index
    return all(run["inputs_hash"] == inputs for run in made)


def backfill_month(
    settings: Settings,
    year: int,
    month: int,
    start: date | None = None,
    end: date | None = None,
    *,
    status: str = "final",
) -> dict[str, str]:
    """Downscale the days of one month within [start, end] unless already committed (resumable);
    {cube: commit id}, or {} when skipped."""
    days = month_days(year, month, start, end)
    if not days or month_committed(settings, year, month, start, end):
        return {}
    return downscale_days(settings, days, status=status, key=month_key(days))


class BackfillError(RuntimeError):
    """Months of a backfill that failed; the other months were committed."""


def backfill(
    settings: Settings,
    start: date,
    end: date,
    *,
    on_month: Callable[[str, dict | Exception], None] | None = None,
) -> dict[str, dict[str, str]]:
    """Backfill [start, end] month by month as 'final' slices: {'YYYY-MM': {cube: commit id}}, {} for a
    month already committed. A month that fails does not stop the others: they are all tried, then
    BackfillError names each failed month and its error (a rerun retries only those). `on_month(label,
    outcome)` hears of each month as it ends (its commits, or its error): progress for long backfills."""
    done, failed = {}, {}
    for year, month in months(start, end):
        label = f"{year}-{month:02d}"
        try:
            done[label] = backfill_month(settings, year, month, start, end)
        except Exception as error:
            log.error("%s failed: %s", label, with_notes(error))
            failed[label] = error
        if on_month is not None:
            on_month(label, failed[label] if label in failed else done[label])
    if failed:
        raise BackfillError(backfill_failure(failed, done))
    return done


def backfill_failure(failed: dict[str, object], done: dict) -> str:
    """The message of a backfill with failed months (month → error)."""
    errors = "; ".join(f"{label}: {with_notes(error)}" for label, error in failed.items())
    return (f"{len(failed)} of {len(failed) + len(done)} months failed ({errors}); the other months are "
            "committed, and a rerun retries only the failed ones")


def with_notes(error: BaseException) -> str:
    """An error's message and its notes (they say, for one, which commits of the run were undone)."""
    return " ".join([str(error), *getattr(error, "__notes__", [])])


def months(start: date, end: date) -> list[tuple[int, int]]:
    """(year, month) of every month that [start, end] touches."""
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    first, last = start.year * 12 + start.month - 1, end.year * 12 + end.month - 1
    return [(m // 12, m % 12 + 1) for m in range(first, last + 1)]


def nrt(settings: Settings, run_date: date, *, latency_days: int = 3) -> dict[str, str]:
    """The daily NRT unit: update the references, then downscale the target day and the re-checked
    trailing days as 'nrt' slices in one commit per cube. Days the cubes already hold as 'final' (a
    backfill reached them) are left as they are; {} when no day is left."""
    report = refs.build_references(settings.archive, storage_options=settings.storage_options, progress=False)
    for name, reason in report.newly_failed.items():
        log.warning("%s: %s; not referenced, the slices that need it stay empty", name, reason)
    days = nrt_days_to_make(settings, run_date, latency_days)
    if not days:
        return {}
    return downscale_days(settings, days, status="nrt", key=f"nrt {run_date}")


def nrt_days_to_make(settings: Settings, run_date: date, latency_days: int = 3) -> list[date]:
    """The NRT days of `run_date` (`nrt_days`) that the cubes do not hold as 'final' already."""
    days = nrt_days(run_date, latency_days)
    final = final_days(settings, days)
    return [d for d in days if d not in final]


def final_days(settings: Settings, days: list[date]) -> set[date]:
    """The days among `days` that both downscaled cubes hold as 'final' slices."""
    final = set(days)
    for name in DOWNSCALED_CUBES:
        if not store.cube_exists(settings.store, name, storage_options=settings.storage_options):
            return set()
        cube = open_cube(store.cube_url(settings.store, name), storage_options=settings.storage_options)
        # a day outside the cube's time axis is not final (the write then says why it cannot be made)
        status = cube["status"].reindex(time=[np.datetime64(d, "ns") for d in days], fill_value=0).values
        final &= {d for d, code in zip(days, status, strict=True) if code == store.STATUS_CODES["final"]}
    return final


def nrt_days(run_date: date, latency_days: int = 3, recheck_days: int = 2) -> list[date]:
    """The NRT target date (run date − latency) and the trailing days re-checked for late granules."""
    target = run_date - timedelta(days=latency_days)
    return [target - timedelta(days=n) for n in range(recheck_days, -1, -1)]
