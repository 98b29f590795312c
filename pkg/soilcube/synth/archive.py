"""build_archive: a nature run observed into a granule archive in the real layouts, plus its truth.

Layout: `<archive>/<product key>/<real file name>` for smap_l2e, smap_l3e, smap_l4, gldas, viirs_lst,
viirs_lai and ltdr_ndvi; `<archive>/ismn/<NETWORK>/<STATION>/…stm` (+ static variables csv);
`<archive>/campaign/…nc`; `<archive>/truth.zarr` (groups M400, M01, M01_3h, M09, static).

The main process runs the physics day by day (it is vectorised numpy) and hands each granule's arrays to a
pool of writer processes: HDF5 and NetCDF writing hold the GIL, so processes, not threads, overlap them.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import dask.array as da
import fsspec
import numpy as np
import pandas as pd
import xarray as xr
from pyproj import CRS
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from soilcube import __version__, grids
from soilcube.grids import Region, Window
from soilcube.synth import writers
from soilcube.synth.nature import CCI_CODE, LAND_COVER, NatureRun, coarsen, hours
from soilcube.synth.observe import (
    GLDAS_STEPS_H,
    ISMN_DEPTH_M,
    ISMN_SENSOR,
    L4_CENTRES_H,
    LST_NOISE_K,
    OVERPASS_LOCAL_H,
    VIIRS_LOCAL_H,
    GldasWorld,
    LtdrWorld,
    SmapL4Model,
    Station,
    ViirsWorld,
    campaign_field,
    campaign_times,
    campaign_window,
    ismn_stations,
    lai_periods,
    smap_l2_half_orbits,
    smap_l3_composite,
)

GRANULE_PRODUCTS = ("smap_l2e", "smap_l3e", "smap_l4", "gldas", "viirs_lst", "viirs_lai", "ltdr_ndvi")
PRODUCTS = (*GRANULE_PRODUCTS, "ismn", "campaign", "truth")
WRITERS = {
    "smap_l2e": "write_smap_l2e", "smap_l3e": "write_smap_l3e", "smap_l4": "write_smap_l4",
    "gldas": "write_gldas", "viirs_lst": "write_viirs_lst", "viirs_lai": "write_viirs_lai",
    "ltdr_ndvi": "write_ltdr_ndvi",
}
TRUTH_ATTRS = {
    "title": "soilcube synthetic nature run: TRUE surface (0-5 cm) soil moisture",
    "source": "soilcube.synth.nature (synthetic, not an observation)",
    "comment": "Synthetic truth behind the stand-in granule archive; M400, M01 and M09 are exact block means "
               "of one 200 m field. See docs/synthetic-archive.md.",
}
# Stored to 1e-4 m3 m-3 (CF scale_factor on int16): far below any error of interest, 3× smaller than float32.
TRUTH_ENCODING = {"dtype": "int16", "scale_factor": 1e-4, "_FillValue": np.int16(-32768)}
PENDING_LIMIT = 24  # granules in flight at once: bounds the memory held by arrays waiting to be written


@dataclass
class ArchiveSummary:
    """What build_archive wrote: items (granule files; ISMN files; campaign files; truth zarr groups), bytes
    and writer seconds (summed over the writer processes) per product, and the wall time."""

    archive: str
    counts: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    write_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def rows(self) -> list[dict[str, object]]:
        rows = [{"product": p, "items": n, "MiB": round(self.sizes.get(p, 0) / 2**20, 2),
                 "write s": round(self.write_seconds.get(p, 0.0), 1)} for p, n in self.counts.items()]
        rows.append({"product": f"total ({self.seconds:.1f} s wall)", "items": sum(self.counts.values()),
                     "MiB": round(sum(self.sizes.values()) / 2**20, 2),
                     "write s": round(sum(self.write_seconds.values()), 1)})
        return rows


def _write_granule(product: str, folder: str, kwargs: dict, storage_options: dict | None) -> float:
    """Runs in a writer process: one granule through the product's writer; returns the seconds it took."""
    began = time.perf_counter()
    getattr(writers, WRITERS[product])(folder, storage_options=storage_options, **kwargs)
    return time.perf_counter() - began


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)


class _Writers:
    """A process pool for granule writes with a bounded number in flight, and a progress bar."""

    def __init__(self, archive: str, storage_options: dict | None, progress: Progress | None, workers: int):
        self.archive, self.storage_options, self.progress = archive, storage_options, progress
        # forkserver: the main process may hold threads (progress refresh, FFT workers) that fork would copy.
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))
        self.pending: dict[Future, str] = {}  # future → product
        self.counts: dict[str, int] = {}
        self.seconds: dict[str, float] = {}  # writer time per product, summed over the processes
        self.task = progress.add_task("granules written", total=None) if progress else None

    def submit(self, product: str, **kwargs) -> None:
        while len(self.pending) >= PENDING_LIMIT:
            self._collect(wait(self.pending, return_when=FIRST_COMPLETED).done)
        folder = f"{self.archive}/{product}"
        future = self.pool.submit(_write_granule, product, folder, kwargs, self.storage_options)
        self.pending[future] = product

    def _collect(self, done: Iterable[Future]) -> None:
        for future in done:
            seconds = future.result()  # re-raises a writer's error here
            product = self.pending.pop(future)
            self.counts[product] = self.counts.get(product, 0) + 1
            self.seconds[product] = self.seconds.get(product, 0.0) + seconds
            if self.progress:
                self.progress.advance(self.task)

    def close(self) -> None:
        try:
            self._collect(wait(self.pending).done)
        finally:
            self.pool.shutdown(cancel_futures=True)


# --- truth cube -------------------------------------------------------------------------------------------


def _crs_variable() -> xr.DataArray:
    crs = CRS.from_epsg(grids.EPSG)
    wkt = crs.to_wkt()
    return xr.DataArray(np.int32(0), attrs={**crs.to_cf(), "crs_wkt": wkt, "spatial_ref": wkt})


def _xy(window: Window) -> dict[str, xr.DataArray]:
    return {
        "x": xr.DataArray(window.x, dims="x", attrs={"standard_name": "projection_x_coordinate", "units": "m",
                                                     "axis": "X"}),
        "y": xr.DataArray(window.y, dims="y", attrs={"standard_name": "projection_y_coordinate", "units": "m",
                                                     "axis": "Y"}),
    }


class TruthCube:
    """truth.zarr: a template written up front, then day slices written into it as the run goes."""

    CHUNK_DAYS = 8

    def __init__(self, url: str, nature: NatureRun, storage_options: dict | None):
        self.url, self.nature, self.storage_options = url, nature, storage_options or None
        days = nature.days
        self.times = pd.DatetimeIndex([_midnight(d) for d in days])
        self.times_3h = pd.DatetimeIndex(
            [_midnight(d) + timedelta(hours=h) for d in days for h in L4_CENTRES_H])
        attrs = {**TRUTH_ATTRS, "seed": nature.seed, "region": nature.region.name,
                 "start": str(nature.start), "end": str(nature.end), "soilcube_version": __version__}
        self.buffers: dict[str, list[np.ndarray]] = {g: [] for g in ("M400", "M01", "M09", "M01_3h")}
        self.written = {g: 0 for g in self.buffers}
        for group in self.buffers:
            self._template(group, attrs)

    def _template(self, group: str, attrs: dict) -> None:
        grid = "M01" if group == "M01_3h" else group
        window = self.nature.windows[grid]
        if group == "M01_3h":
            dims, shape = ("time", "y", "x"), (len(self.times_3h), *window.shape)
            chunks = (len(L4_CENTRES_H), *window.shape)  # one day
            coords = {"time": self.times_3h}
            long_name = "true 0-5 cm soil moisture at the SMAP L4 3-hourly centres"
        else:
            step = 1 if group == "M400" else self.CHUNK_DAYS
            dims, shape = ("time", "overpass", "y", "x"), (len(self.times), 2, *window.shape)
            chunks = (step, 2, *window.shape)
            coords = {"time": self.times, "overpass": ["AM", "PM"]}
            long_name = "true 0-5 cm soil moisture at the SMAP overpasses (06:00 AM, 18:00 PM local time)"
        sm = xr.DataArray(da.full(shape, np.nan, dtype=np.float32, chunks=chunks), dims=dims, attrs={
            "long_name": long_name, "standard_name": "volume_fraction_of_condensed_water_in_soil",
            "units": "m3 m-3", "grid_mapping": "crs"})
        ds = xr.Dataset({"sm": sm, "crs": _crs_variable()}, coords={**coords, **_xy(window)},
                        attrs={**attrs, "grid": grid})
        ds.sm.encoding.update(chunks=chunks, **TRUTH_ENCODING)
        ds.to_zarr(self.url, group=group, mode="w", compute=False, consolidated=False,
                   storage_options=self.storage_options)

    def add_day(self, m400: np.ndarray, m01: np.ndarray, m09: np.ndarray, m01_3h: np.ndarray) -> None:
        """One local day: (2, y, x) AM/PM fields of M400, M01, M09 and the (8, y, x) 3-hourly M01 fields."""
        for group, values in (("M400", m400), ("M01", m01), ("M09", m09), ("M01_3h", m01_3h)):
            self.buffers[group].append(values)
        if len(self.buffers["M01"]) == self.CHUNK_DAYS:
            self.flush()

    def flush(self) -> None:
        """Write the buffered days (whole time chunks, so no chunk is written twice)."""
        for group, buffered in self.buffers.items():
            if not buffered:
                continue
            data = np.stack(buffered) if group != "M01_3h" else np.concatenate(buffered)
            dims = ("time", "y", "x") if group == "M01_3h" else ("time", "overpass", "y", "x")
            first = self.written[group]
            xr.Dataset({"sm": (dims, data)}).to_zarr(
                self.url, group=group, region={"time": slice(first, first + len(data))}, consolidated=False,
                storage_options=self.storage_options)
            self.written[group] += len(data)
            buffered.clear()

    def write_static(self) -> None:
        """Static inputs of the truth on the 1 km grid (block means; land cover as class shares)."""
        nature, window = self.nature, self.nature.windows["M01"]
        statics = nature.statics_on("M01")
        described = {
            "porosity": ("m3 m-3", "porosity (saturated water content)"),
            "residual": ("m3 m-3", "residual water content: the drydown asymptote"),
            "field_capacity": ("m3 m-3", "field capacity"),
            "sand": ("1", "sand fraction"), "clay": ("1", "clay fraction"),
            "elevation": ("m", "elevation"), "lai_max": ("m2 m-2", "peak leaf area index"),
            "drydown_hours": ("h", "drydown time scale at the season factor 1"),
        }
        data = {k: (("y", "x"), getattr(statics, k), {"units": u, "long_name": n, "grid_mapping": "crs"})
                for k, (u, n) in described.items()}
        data["cover_fraction"] = (("cover", "y", "x"), nature.cover_fractions("M01"), {
            "units": "1", "long_name": "share of each land-cover class", "grid_mapping": "crs"})
        ds = xr.Dataset(data, coords={"cover": list(LAND_COVER), "cci_code": ("cover", list(CCI_CODE)),
                                      **_xy(window)},
                        attrs={**TRUTH_ATTRS, "grid": "M01"})
        ds["crs"] = _crs_variable()
        ds.to_zarr(self.url, group="static", mode="w", consolidated=False,
                   storage_options=self.storage_options)


# --- ISMN and campaign files --------------------------------------------------------------------------------


def _ismn_header(s: Station) -> str:
    """Line 1 of an ISMN header+values file: CSE network station lat lon elev depth_from depth_to sensor."""
    return (f"{s.network:<10} {s.network:<15} {s.name:<17} {s.lat:9.5f} {s.lon:11.5f} {s.elevation:7.2f} "
            f"{ISMN_DEPTH_M[0]:7.2f} {ISMN_DEPTH_M[1]:7.2f} {ISMN_SENSOR}")


def ismn_file_text(s: Station) -> str:
    stamps = pd.DatetimeIndex(s.times).strftime("%Y/%m/%d %H:%M")
    lines = [f"{t} {v:8.4f} {f} M" for t, v, f in zip(stamps, s.soil_moisture, s.flags, strict=True)]
    return "\r\n".join([_ismn_header(s), *lines]) + "\r\n"


def ismn_static_text(s: Station) -> str:
    """The station's static variables csv (';'-separated, ISMN columns), soil and land-cover entries."""
    columns = ("quantity_name;unit;depth_from[m];depth_to[m];value;description;quantity_source_name;"
               "quantity_source_description;quantity_source_provider;quantity_source_version;"
               "quantity_source_resolution;quantity_source_timerange;quantity_source_url;")
    soil = "soilcube nature run (synthetic soil texture)"
    silt = max(0.0, 1.0 - s.sand - s.clay)
    rows = [
        f"saturation;m^3*m^-3;0.00;0.30;{s.porosity:.2f};;SYNTH;{soil};soilcube;1;200m;;;",
        f"clay fraction;% weight;0.00;0.30;{100 * s.clay:.2f};;SYNTH;{soil};soilcube;1;200m;;;",
        f"sand fraction;% weight;0.00;0.30;{100 * s.sand:.2f};;SYNTH;{soil};soilcube;1;200m;;;",
        f"silt fraction;% weight;0.00;0.30;{100 * silt:.2f};;SYNTH;{soil};soilcube;1;200m;;;",
        f"organic carbon;% weight;0.00;0.30;1.00;;SYNTH;{soil};soilcube;1;200m;;;",
        *(f"land cover classification;;;;{s.cci_code};{s.cover.capitalize()};CCI_landcover_{year};"
          f"ESA CCI Land Cover (synthetic);soilcube;{year};200m;;;" for year in (2000, 2005, 2010)),
        "climate classification;;;;Cfa;Temperate - Without dry season - Hot Summer;koeppen_geiger_2007;"
        "Koeppen-Geiger Climate Classification;;Peel2007;0.1°;;;",
    ]
    return "\r\n".join([columns, *rows]) + "\r\n"


def write_ismn(archive: str, stations: list[Station], storage_options: dict | None) -> int:
    """The stations as an ISMN 'header + values' download tree under <archive>/ismn; returns files written."""
    fs, root = fsspec.core.url_to_fs(f"{archive}/ismn", **(storage_options or {}))
    written = 0
    for s in stations:
        first, last = s.times[0], s.times[-1]
        folder = f"{root}/{s.network}/{s.name}"
        stem = f"{s.network}_{s.network}_{s.name}"
        depth = f"{ISMN_DEPTH_M[0]:.6f}_{ISMN_DEPTH_M[1]:.6f}"
        fs.makedirs(folder, exist_ok=True)
        fs.pipe_file(f"{folder}/{stem}_sm_{depth}_{ISMN_SENSOR}_{first:%Y%m%d}_{last:%Y%m%d}.stm",
                     ismn_file_text(s).encode("ascii"))
        fs.pipe_file(f"{folder}/{stem}_static_variables.csv", ismn_static_text(s).encode("utf-8"))
        written += 2
    return written


def write_campaign(archive: str, nature: NatureRun, t: datetime, sm: np.ndarray, storage_options) -> str:
    """One airborne-campaign-like 1 km field as NetCDF-4 with x/y in EPSG:6933 on the M01 grid."""
    box = campaign_window(nature)
    ds = xr.Dataset(
        {"sm": (("time", "y", "x"), sm[None], {
            "long_name": "airborne L-band retrieval of 0-5 cm soil moisture (synthetic)",
            "standard_name": "volume_fraction_of_condensed_water_in_soil", "units": "m3 m-3",
            "grid_mapping": "crs"}),
         "crs": _crs_variable()},
        coords={"time": [np.datetime64(t, "ns")], **_xy(box)},
        attrs={"title": "soilcube synthetic airborne soil-moisture campaign, 1 km EASE-Grid 2.0",
               "source": "soilcube nature run 1 km truth + retrieval noise (sigma 0.02) + flight-line bias",
               "Conventions": "CF-1.8", "grid": "M01", "time_coverage_start": f"{t:%Y-%m-%dT%H:%M:%SZ}"},
    )
    ds.sm.encoding.update(zlib=True, complevel=4, _FillValue=np.float32(np.nan))
    url = f"{archive}/campaign/SOILCUBE-AIRBORNE_SM_1km_{t:%Y%m%dT%H%M}.nc"
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, bytes(ds.to_netcdf(engine="h5netcdf")))
    return url


# --- the build --------------------------------------------------------------------------------------------


def _folder(product: str) -> str:
    """A product's folder in the archive."""
    return "truth.zarr" if product == "truth" else product


def archive_folders(archive: str, storage_options: dict | None = None) -> list[str]:
    """The folders of an archive (products' and the references') that `archive` holds already."""
    fs, root = fsspec.core.url_to_fs(archive, **(storage_options or {}))
    folders = [*(_folder(p) for p in PRODUCTS), "refs"]
    return [name for name in folders if fs.exists(f"{root.rstrip('/')}/{name}")]


def _sizes(archive: str, storage_options: dict | None, products: Iterable[str]) -> dict[str, int]:
    fs, root = fsspec.core.url_to_fs(archive, **(storage_options or {}))
    sizes = {}
    for p in products:
        folder = f"{root}/{_folder(p)}"
        sizes[p] = int(fs.du(folder, total=True)) if fs.exists(folder) else 0
    return sizes


def build_archive(
    region: Region,
    start: date,
    end: date,
    archive_url: str,
    seed: int = 0,
    gldas_years: float = 1,
    storage_options: dict | None = None,
    products: Iterable[str] | None = None,
    progress: bool = True,
    workers: int | None = None,
    lst_noise_k: float = LST_NOISE_K,
) -> ArchiveSummary:
    """Synthesize a nature run over `region` for [start, end] (local days) and write the archive.

    `gldas_years` years (365.25 days each, fractions allowed) of GLDAS (the fit's time steps only) and
    LTDR NDVI before `start` feed the VIS/IR model fit. `products`: a subset of PRODUCTS (default all).
    `workers`: writer processes (default: one per CPU; started with forkserver, so a calling script needs
    an `if __name__ == "__main__":` guard). `lst_noise_k`: the VIIRS LST per-pixel noise σ (K), for
    sensitivity experiments. Returns items, bytes and writer seconds per product.
    """
    began = time.perf_counter()
    start = start.date() if isinstance(start, datetime) else start
    end = end.date() if isinstance(end, datetime) else end
    wanted = set(PRODUCTS if products is None else products)
    unknown = wanted - set(PRODUCTS)
    if unknown:
        raise ValueError(f"unknown product(s) {sorted(unknown)}; known: {', '.join(PRODUCTS)}")
    archive = archive_url.rstrip("/")
    if "://" not in archive:
        archive = Path(archive).resolve().as_uri()
    nature = NatureRun(region, start, end, seed)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   disable=not progress)
    with bar:
        out = _Writers(archive, storage_options, bar if progress else None, workers or os.cpu_count() or 2)
        extra: dict[str, int] = {}
        try:
            first = start - timedelta(days=round(365.25 * gldas_years))
            # Built once for both periods: the 0.25° and 0.05° blocks and their static means are costly.
            gldas = GldasWorld(nature) if "gldas" in wanted else None
            ltdr = LtdrWorld(nature) if "ltdr_ndvi" in wanted else None
            _historic(gldas, ltdr, out, bar, first, start - timedelta(days=1))
            viirs = ViirsWorld(nature, lst_noise_k) if {"viirs_lst", "viirs_lai"} & wanted else None
            extra = _study_period(nature, gldas, ltdr, viirs, out, bar, wanted, archive, storage_options)
        finally:
            out.close()
    counts = {p: out.counts.get(p, 0) for p in GRANULE_PRODUCTS if p in wanted} | extra
    return ArchiveSummary(archive, counts, _sizes(archive, storage_options, counts), out.seconds,
                          time.perf_counter() - began)


def _historic(gldas: GldasWorld | None, ltdr: LtdrWorld | None, out: _Writers, bar: Progress, first: date,
              last: date) -> None:
    """GLDAS (the fit's time steps, from a 0.25° process run) and LTDR NDVI of the years before the study."""
    if last < first or not (gldas or ltdr):
        return
    days = (last - first).days + 1
    task = bar.add_task("historic GLDAS, LTDR (days)", total=days)
    water = gldas.historic_run(first, last) if gldas else None
    for i in range(days):
        day = first + timedelta(days=i)
        if gldas:
            for t, fields in gldas.historic_day(water, day):
                out.submit("gldas", time=t, rows=gldas.rows, cols=gldas.cols, fields=fields)
        if ltdr:
            out.submit("ltdr_ndvi", day=_midnight(day), rows=ltdr.rows, cols=ltdr.cols, ndvi=ltdr.ndvi(day))
        bar.advance(task)


def _study_period(nature: NatureRun, gldas: GldasWorld | None, ltdr: LtdrWorld | None,
                  viirs: ViirsWorld | None, out: _Writers, bar: Progress, wanted: set[str], archive: str,
                  storage_options: dict | None) -> dict[str, int]:
    """Every product of the study period, one local day at a time; returns counts of the non-granule items."""
    m09 = nature.windows["M09"]
    truth = TruthCube(f"{archive}/truth.zarr", nature, storage_options) if "truth" in wanted else None
    l4 = SmapL4Model(nature) if "smap_l4" in wanted else None
    flights = {nature.local_day(hours(t)): t for t in campaign_times(nature)} if "campaign" in wanted else {}
    task = bar.add_task("nature run (days)", total=len(nature.days))
    for day in nature.days:
        midnight = _midnight(day)
        # SMAP overpasses: the truth on every grid, L2 half orbits and the L3 composite.
        overpass = {}
        for o in ("AM", "PM"):
            theta = nature.soil_moisture(nature.utc(day, OVERPASS_LOCAL_H[o]))
            overpass[o] = {g: coarsen(theta, g) for g in ("M400", "M01", "M09")}
        halves = {o: smap_l2_half_orbits(nature, day, o, overpass[o]["M09"]) for o in overpass}
        if "smap_l2e" in wanted:
            for half in halves["AM"] + halves["PM"]:
                out.submit("smap_l2e", window=m09, start=half.start, half_orbit=half.half_orbit,
                           orbit=half.orbit, fields=half.fields)
        if "smap_l3e" in wanted:
            out.submit("smap_l3e", window=m09, day=midnight, am=smap_l3_composite(halves["AM"]),
                       pm=smap_l3_composite(halves["PM"]))
        # SMAP L4 centres of the (UTC) day.
        three_hourly = []
        for h in L4_CENTRES_H:
            t = midnight + timedelta(hours=h)
            theta = nature.soil_moisture(t)
            three_hourly.append(coarsen(theta, "M01"))
            if l4:
                out.submit("smap_l4", window=m09, centre=t, fields=l4.scene(t, coarsen(theta, "M09")))
        if gldas:
            for h in GLDAS_STEPS_H:
                t = midnight + timedelta(hours=h)
                out.submit("gldas", time=t, rows=gldas.rows, cols=gldas.cols, fields=gldas.study_step(t))
        if "viirs_lst" in wanted:
            for o in ("D", "N"):
                theta = coarsen(nature.soil_moisture(nature.utc(day, VIIRS_LOCAL_H[o])), "M01")
                for tile in viirs.lst(day, o, theta):
                    out.submit("viirs_lst", tile=tile.tile, day=midnight, day_or_night=o, **tile.arrays)
        if ltdr:
            out.submit("ltdr_ndvi", day=midnight, rows=ltdr.rows, cols=ltdr.cols, ndvi=ltdr.ndvi(day))
        if day in flights:
            t = flights[day]
            flown = campaign_field(nature, t, coarsen(nature.soil_moisture(t), "M01"))
            write_campaign(archive, nature, t, flown, storage_options)
        if truth:
            truth.add_day(*(np.stack([overpass[o][g] for o in ("AM", "PM")]) for g in ("M400", "M01", "M09")),
                          np.stack(three_hourly))
        bar.advance(task)
    if "viirs_lai" in wanted:
        for period in lai_periods(nature.start, nature.end):
            for tile in viirs.lai(period):
                out.submit("viirs_lai", tile=tile.tile, period_start=_midnight(period),
                           lai=tile.arrays["lai"])
    counts = {}
    if "ismn" in wanted:
        counts["ismn"] = write_ismn(archive, ismn_stations(nature), storage_options)
    if "campaign" in wanted:
        counts["campaign"] = len(flights)
    if truth:
        truth.flush()
        truth.write_static()
        counts["truth"] = len(truth.buffers) + 1  # zarr groups
    return counts
