"""Observation operators: what each synthetic granule holds, computed from the nature run (no I/O).

Every product sees the truth through its own, documented error (docs/synthetic-archive.md):
- SMAP L2_E/L3_E: 9 km truth at the overpass + white noise σ = 0.04, swaths with gaps, dense vegetation
  (VWC > 5 kg m-2) flagged, frozen ground not retrieved;
- SMAP L4: 9 km truth at the 3-hourly centre, spatially smoothed, with a static bias and an AR(1) error;
- GLDAS: 0.25° area means (study period) or a 0.25° run of the same process model (historic years), then a
  damped, slightly wet 0–10 cm layer and a slightly cool skin temperature;
- VIIRS LST: 1 km skin temperature + emissivity bias + sensor noise, cloud-masked; VIIRS LAI and LTDR NDVI
  from the vegetation model with noise (and clouds for LTDR);
- ISMN: the 200 m truth at a point, with representativeness gain/offset, sensor noise and a few spikes;
- airborne campaign: 1 km truth + noise + flight-line striping on a box inside the region.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cached_property

import numpy as np
import pandas as pd
from pyproj import Transformer
from scipy import ndimage

from soilcube import grids
from soilcube.grids import LatLonGrid, SinusoidalTile, Window
from soilcube.synth.nature import (
    CCI_CODE,
    LAND_COVER,
    M200_PER,
    SPINUP_DAYS,
    NatureRun,
    SoilWater,
    Statics,
    gaussian_random_field,
    hours,
    ndvi_from_lai,
    random_stream,
    to_tile,
)
from soilcube.visir.training import LST_LOCAL_HOURS, SM_LOCAL_HOURS, nearest_step, utc_offset_hours

J2000 = datetime(2000, 1, 1, 11, 58, 55, 816000)  # epoch of SMAP tb_time_seconds
FLAG_FILL = 65534

# --- SMAP L2_E / L3_E ---------------------------------------------------------------------------------------
SMAP_NOISE = 0.04  # m3 m-3, retrieval error against the 9 km truth
SMAP_VALID = (0.02, 0.5)
DENSE_VEGETATION_VWC = 5.0  # kg m-2
BIT_NOT_RECOMMENDED, BIT_NOT_ATTEMPTED, BIT_NOT_SUCCESSFUL = 1, 2, 4
SURFACE_RADIOMETER_FROZEN, SURFACE_MODEL_FROZEN, SURFACE_DENSE_VEGETATION = 1 << 7, 1 << 8, 1 << 10
ORBIT_MINUTES = 98.46
ORBITS_PER_DAY = 1440 / ORBIT_MINUTES  # 14.625: exact 8-day repeat (117 orbits)
TRACK_SPACING_DEG = 360 / ORBITS_PER_DAY
DAILY_TRACK_SHIFT_DEG = (ORBITS_PER_DAY % 1) * TRACK_SPACING_DEG
SWATH_HALF_WIDTH_M = 500e3  # the 1000 km radiometer swath
TRACK_SLOPE = {"D": 0.28, "A": -0.28}  # dλ/dφ of the ground track at mid-latitudes (it leans westward)
TRACK_PHASE_DEG = {"D": 3.0, "A": 11.0}
SECONDS_PER_DEGREE_LATITUDE = ORBIT_MINUTES * 60 / 360
HALF_ORBIT = {"AM": "D", "PM": "A"}
OVERPASS_LOCAL_H = {"AM": 6.0, "PM": 18.0}
# A real half orbit (input-formats.md §1) anchors the orbit numbers.
ORBIT_ANCHOR, ORBIT_ANCHOR_NUMBER = datetime(2023, 12, 4, 10, 53, 36), 47223

# --- SMAP L4, GLDAS ---------------------------------------------------------------------------------------
L4_CENTRES_H = (1.5, 4.5, 7.5, 10.5, 13.5, 16.5, 19.5, 22.5)
L4_ERROR_SIGMA, L4_ERROR_LAG1 = 0.015, 0.9
L4_ROOTZONE_DAYS = 5.0
GLDAS_STEPS_H = (0, 3, 6, 9, 12, 15, 18, 21)
GLDAS_DAMPING = 0.8  # the 0–10 cm layer swings less than 0–5 cm
GLDAS_WET_BIAS = 0.01
GLDAS_TEMP_BIAS = -0.7

# --- VIIRS, LTDR ------------------------------------------------------------------------------------------
VIIRS_LOCAL_H = {"D": 13.5, "N": 1.5}
LST_NOISE_K, EMISSIVITY_BIAS_K, CLOUD_EDGE_COOLING_K = 0.8, 0.4, 1.5
QC_GOOD, QC_OTHER, QC_CLOUD, QC_NOT_PRODUCED = 0b00, 0b01, 0b10, 0b11
QC_CLOUD_SHIFT = 4
LAI_PERIOD_DAYS = 8
LTDR_NOISE = 0.015

# --- ISMN, campaign ---------------------------------------------------------------------------------------
ISMN_NETWORK = "SOILCUBE"
ISMN_SENSOR = "Hydraprobe-II-Sdi-12"
ISMN_DEPTH_M = (0.0, 0.05)
ISMN_NOISE = 0.004  # sensor noise, m3 m-3
CAMPAIGN_LOCAL_H = 10.0
CAMPAIGN_NOISE = 0.02

_LONLAT_TO_EASE = Transformer.from_crs(4326, grids.EPSG, always_xy=True)


def j2000_seconds(t: datetime) -> float:
    return (t - J2000).total_seconds()


# --- SMAP L2_E / L3_E ---------------------------------------------------------------------------------------


@dataclass
class HalfOrbit:
    """The content of one SPL2SMP_E granule over the region."""

    half_orbit: str  # "D" (AM) or "A" (PM)
    orbit: int
    start: datetime
    fields: dict[str, np.ndarray]  # on the M09 window; tb_time_seconds finite = inside the swath


def orbit_number(t: datetime) -> int:
    return ORBIT_ANCHOR_NUMBER + int(np.floor((t - ORBIT_ANCHOR).total_seconds() / 60 / ORBIT_MINUTES))


def smap_swaths(nature: NatureRun, day: date, overpass: str) -> list[tuple[np.ndarray, datetime]]:
    """(swath mask on the M09 window, pass time at the region's centre latitude) of each half orbit that
    touches the region on a local day. Tracks repeat every 8 days; at mid-latitudes ~45 % of the land
    lies inside a swath each day, so the region is covered fully, partly or not at all."""
    window, node = nature.windows["M09"], HALF_ORBIT[overpass]
    lat, lon = window.lat[:, None], window.lon[None, :]
    phase = TRACK_PHASE_DEG[node] + day.toordinal() * DAILY_TRACK_SHIFT_DEG
    offset = lon - phase - TRACK_SLOPE[node] * (lat - nature.centre_lat)
    track = np.round(offset / TRACK_SPACING_DEG)
    distance = np.abs(offset - track * TRACK_SPACING_DEG) * 111_320.0 * np.cos(np.deg2rad(lat))
    inside = distance < SWATH_HALF_WIDTH_M
    swaths = []
    for j in np.unique(track[inside]):
        track_lon = (phase + j * TRACK_SPACING_DEG + 180) % 360 - 180
        # A sun-synchronous pass crosses the track's longitude at the node's local solar time.
        local = datetime(day.year, day.month, day.day) + timedelta(hours=OVERPASS_LOCAL_H[overpass])
        passing = (local - timedelta(hours=track_lon / 15)).replace(microsecond=0)
        swaths.append((inside & (track == j), passing))
    return swaths


def smap_l2_half_orbits(nature: NatureRun, day: date, overpass: str,
                        theta_m09: np.ndarray) -> list[HalfOrbit]:
    """SPL2SMP_E contents of one overpass ('AM' descending, 'PM' ascending) of a local day, given the 9 km
    truth at the overpass."""
    window, node = nature.windows["M09"], HALF_ORBIT[overpass]
    t = nature.utc(day, OVERPASS_LOCAL_H[overpass])
    statics = nature.statics_on("M09")
    vwc = nature.vegetation_water_content(day, "M09")
    rng = random_stream(nature.seed, "smap-l2", day.toordinal(), overpass)
    # GEOS-5 surface temperature: the skin temperature of the 9 km cell with a 1 K model error.
    tskin = nature.skin_temperature(t, theta_m09, statics, nature.lai(day, "M09"))
    tskin = tskin + rng.normal(0, 1.0, window.shape)
    frozen = tskin < 273.15
    dense = vwc > DENSE_VEGETATION_VWC
    retrieved = np.clip(theta_m09 + rng.normal(0, SMAP_NOISE, window.shape), *SMAP_VALID)
    quality = np.where(dense, BIT_NOT_RECOMMENDED, 0) | np.where(
        frozen, BIT_NOT_RECOMMENDED | BIT_NOT_ATTEMPTED | BIT_NOT_SUCCESSFUL, 0)
    surface = np.where(dense, SURFACE_DENSE_VEGETATION, 0) | np.where(
        frozen, SURFACE_RADIOMETER_FROZEN | SURFACE_MODEL_FROZEN, 0)
    lat = window.lat[:, None]
    sign = -1.0 if node == "D" else 1.0  # descending passes reach southern cells later
    halves = []
    for swath, passing in smap_swaths(nature, day, overpass):
        seconds = j2000_seconds(passing) + sign * (lat - nature.centre_lat) * SECONDS_PER_DEGREE_LATITUDE
        # Half orbits start at the poles (±85°): descending ones at the north, ascending ones at the south.
        to_centre = (85 - nature.centre_lat) if node == "D" else (85 + nature.centre_lat)
        start = (passing - timedelta(seconds=to_centre * SECONDS_PER_DEGREE_LATITUDE)).replace(microsecond=0)
        fields = {
            "soil_moisture": np.where(swath & ~frozen, retrieved, np.nan).astype(np.float32),
            "vegetation_water_content": np.where(swath, vwc, np.nan).astype(np.float32),
            "surface_temperature": np.where(swath, tskin, np.nan).astype(np.float32),
            "retrieval_qual_flag": np.where(swath, quality, FLAG_FILL).astype(np.uint16),
            "surface_flag": np.where(swath, surface, FLAG_FILL).astype(np.uint16),
            "tb_time_seconds": np.where(swath, seconds, np.nan).astype(np.float64),
        }
        halves.append(HalfOrbit(node, orbit_number(start), start, fields))
    return halves


def smap_l3_composite(halves: list[HalfOrbit]) -> dict[str, np.ndarray] | None:
    """The L3_E half (AM or PM) of a day from its L2 half orbits: each cell from the granule that saw it."""
    if not halves:
        return None
    merged = {k: v.copy() for k, v in halves[0].fields.items()}
    for half in halves[1:]:
        seen = np.isfinite(half.fields["tb_time_seconds"])
        for k, v in half.fields.items():
            merged[k][seen] = v[seen]
    return merged


# --- SMAP L4 ----------------------------------------------------------------------------------------------


class SmapL4Model:
    """Stand-in for the GEOS-5 land model with assimilation: the 9 km truth smoothed over ~1 cell, a static
    bias field, and an error that persists in time (AR(1), lag-1 correlation 0.9 per 3 h). Root-zone water
    is an exponential filter (5 days) of the surface. Feed scenes in time order."""

    def __init__(self, nature: NatureRun):
        self.nature = nature
        window = nature.windows["M09"]
        self.shape, self.cell_size = window.shape, window.grid.cell_size
        self.statics = nature.statics_on("M09")
        rng = random_stream(nature.seed, "l4-bias")
        self.bias = 0.01 + 0.02 * gaussian_random_field(rng, self.shape, self.cell_size, {50e3: 1.0})
        self.error = np.zeros(self.shape, np.float32)
        self.rootzone: np.ndarray | None = None
        self.gain, self.last = 1.0, None

    def scene(self, centre: datetime, theta_m09: np.ndarray) -> dict[str, np.ndarray]:
        h = hours(centre)
        rng = random_stream(self.nature.seed, "l4", int(round(h * 2)))
        shock = gaussian_random_field(rng, self.shape, self.cell_size, {30e3: 1.0})
        self.error = L4_ERROR_LAG1 * self.error + np.sqrt(1 - L4_ERROR_LAG1**2) * L4_ERROR_SIGMA * shock
        surface = ndimage.gaussian_filter(theta_m09, 1.0, mode="nearest") + self.bias + self.error
        surface = np.clip(surface, 0.01, self.statics.porosity)
        # Recursive exponential filter (Albergel et al. 2008) with its gain recursion.
        if self.rootzone is None:
            self.rootzone = surface.copy()
        else:
            decay = np.exp(-(h - self.last) / (24 * L4_ROOTZONE_DAYS))
            self.gain = self.gain / (self.gain + decay)
            self.rootzone = self.rootzone + self.gain * (surface - self.rootzone)
        self.last = h
        day = self.nature.local_day(h)
        temp = self.nature.skin_temperature(centre, theta_m09, self.statics, self.nature.lai(day, "M09"))
        return {"sm_surface": surface.astype(np.float32), "sm_rootzone": self.rootzone.astype(np.float32),
                "surface_temp": (temp + rng.normal(0, 0.5, self.shape)).astype(np.float32)}


# --- lat/lon aggregation (GLDAS 0.25°, LTDR 0.05°) --------------------------------------------------------


class LatLonBlock:
    """The block of a lat/lon grid over the region and the area mean of 1 km cells into its cells."""

    def __init__(self, grid: LatLonGrid, window: Window):
        self.grid = grid
        self.rows, self.cols = grid.window_slices(window)
        self.shape = (self.rows.stop - self.rows.start, self.cols.stop - self.cols.start)
        row_of, col_of = grid.index(window)
        rows, cols = row_of - self.rows.start, col_of - self.cols.start
        self.cell = (rows[:, None] * self.shape[1] + cols[None, :]).ravel()
        self.size = self.shape[0] * self.shape[1]

    def mean(self, values: np.ndarray) -> np.ndarray:
        """Area mean of window values (NaN-aware) per block cell; NaN where nothing is valid."""
        v = np.asarray(values, np.float64).ravel()
        ok = np.isfinite(v)
        n = np.bincount(self.cell[ok], minlength=self.size)
        total = np.bincount(self.cell[ok], weights=v[ok], minlength=self.size)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, total / n, np.nan).reshape(self.shape)

    @cached_property
    def lonlat(self) -> tuple[np.ndarray, np.ndarray]:
        lat = self.grid.lat[self.rows][:, None]
        lon = self.grid.lon[self.cols][None, :]
        return np.broadcast_arrays(lon, lat)


def gldas_fit_hours(nature: NatureRun) -> list[int]:
    """UTC hours of the GLDAS files the VIS/IR fit reads over the region: for each column of the block, the
    steps `visir.training` picks for the VIIRS LST and SMAP local times (whole-hour 15° time-zone bands,
    nearest 3-hourly step)."""
    block = LatLonBlock(grids.GLDAS_GRID, nature.windows["M01"])
    local_hours = (*LST_LOCAL_HOURS.values(), *SM_LOCAL_HOURS.values())
    return sorted({int(nearest_step(local, offset) / pd.Timedelta(hours=1)) % 24
                   for offset in set(utc_offset_hours(grids.GLDAS_GRID.lon[block.cols]).tolist())
                   for local in local_hours})


def gldas_soil_moisture(theta: np.ndarray, statics: Statics) -> np.ndarray:
    """GLDAS Noah 0–10 cm water (kg m-2) from a 0.25° mean of the 0–5 cm truth: damped towards the cell's
    typical wetness and slightly wet."""
    typical = statics.residual + 0.45 * (statics.field_capacity - statics.residual)
    volumetric = GLDAS_DAMPING * theta + (1 - GLDAS_DAMPING) * typical + GLDAS_WET_BIAS
    return (100.0 * volumetric).astype(np.float32)  # 1000 kg m-3 × 0.1 m


class GldasWorld:
    """GLDAS 0.25° on the block over the region: study-period steps from the truth's area means, historic
    years from a 0.25° run of the same process model (rain averaged over each cell)."""

    def __init__(self, nature: NatureRun):
        self.nature = nature
        self.block = LatLonBlock(grids.GLDAS_GRID, nature.windows["M01"])
        points = nature.point_statics  # one M200 cell at each 1 km centre
        fields = {k: self.block.mean(v).astype(np.float32) for k, v in vars(points).items() if k != "cover"}
        shares = np.stack([self.block.mean(points.cover == c) for c in range(len(LAND_COVER))])
        self.statics = Statics(cover=shares.argmax(axis=0).astype(np.uint8), **fields)
        self._lai_day, self._lai = None, None

    @property
    def rows(self) -> slice:
        return self.block.rows

    @property
    def cols(self) -> slice:
        return self.block.cols

    def lai(self, day: date) -> np.ndarray:
        """0.25° mean LAI of a day (kept for the day's further steps)."""
        if self._lai_day != day:
            self._lai = self.block.mean(self.nature.point_lai(day)).astype(np.float32)
            self._lai_day = day
        return self._lai

    def fields(self, t: datetime, theta: np.ndarray) -> dict[str, np.ndarray]:
        """One GLDAS step from 0.25° water content θ (m3 m-3)."""
        rng = random_stream(self.nature.seed, "gldas", int(hours(t)))
        day = self.nature.local_day(hours(t))
        temp = self.nature.skin_temperature(t, theta, self.statics, self.lai(day))
        temp = temp + GLDAS_TEMP_BIAS + rng.normal(0, 0.4, theta.shape)
        return {"SoilMoi0_10cm_inst": gldas_soil_moisture(theta, self.statics),
                "AvgSurfT_inst": temp.astype(np.float32)}

    @cached_property
    def study_water(self) -> SoilWater:
        k = M200_PER["M01"]
        fine = self.nature.fine
        rows, cols = np.mgrid[k // 2:fine.nrows:k, k // 2:fine.ncols:k]
        return self.nature.water.subset(rows, cols)

    def study_step(self, t: datetime) -> dict[str, np.ndarray]:
        return self.fields(t, self.block.mean(self.study_water.at(hours(t))))

    def historic_run(self, first: date, last: date) -> SoilWater:
        """The process model run directly on the 0.25° cells for [first, last] (after a spin-up), with the
        storms of those days' own random streams and rain averaged over 5 × 5 points per cell."""
        nature = self.nature
        lon, lat = self.block.lonlat
        x, y = _LONLAT_TO_EASE.transform(lon, lat)
        sub = (np.arange(5) - 2) * 0.05
        sx, sy = _LONLAT_TO_EASE.transform(lon[..., None, None] + sub[None, None, None, :],
                                           lat[..., None, None] + sub[None, None, :, None])
        factor = nature.infiltration_factor(self.statics)
        spinup = first - timedelta(days=SPINUP_DAYS)
        storms = nature.storms(spinup, last)
        return SoilWater(x, y, self.statics, hours(spinup), storms,
                         lambda k: storms[k].depth(sx, sy).mean(axis=(-2, -1)) * factor)

    def historic_day(self, water: SoilWater, day: date) -> list[tuple[datetime, dict[str, np.ndarray]]]:
        """The fit's GLDAS steps of one historic day from `historic_run`."""
        steps = [datetime(day.year, day.month, day.day, h) for h in self.fit_hours]
        return [(t, self.fields(t, water.at(hours(t)))) for t in steps]

    @cached_property
    def fit_hours(self) -> list[int]:
        return gldas_fit_hours(self.nature)


# --- VIIRS ------------------------------------------------------------------------------------------------


@dataclass
class Tile:
    tile: SinusoidalTile
    arrays: dict[str, np.ndarray]


class ViirsWorld:
    """VIIRS LST (1 km, daily day/night) and LAI (500 m, 8-day) on the sinusoidal tiles over the region."""

    def __init__(self, nature: NatureRun, lst_noise_k: float = LST_NOISE_K):
        self.nature, self.lst_noise_k = nature, lst_noise_k
        self.m01, self.m400 = nature.windows["M01"], nature.windows["M400"]
        self.lst_tiles = grids.sinusoidal_tiles(self.m01, 1200)
        self.lai_tiles = grids.sinusoidal_tiles(self.m400, 2400)
        self.statics = nature.statics_on("M01")
        rng = random_stream(nature.seed, "emissivity")
        self.emissivity_bias = EMISSIVITY_BIAS_K * gaussian_random_field(
            rng, self.m01.shape, self.m01.grid.cell_size, {2e3: 0.5, 10e3: 0.5})

    def lst(self, day: date, overpass: str, theta_m01: np.ndarray) -> list[Tile]:
        """VNP21A1D ('D', 13:30) or VNP21A1N ('N', 01:30) tiles of a local day, given the 1 km truth θ at
        that overpass. Thin cloud at cloud edges passes as 'nominal quality' (VNP21 mandatory QA 1) and
        reads a little cool."""
        nature = self.nature
        t = nature.utc(day, VIIRS_LOCAL_H[overpass])
        skin = nature.skin_temperature(t, theta_m01, self.statics, nature.lai(day, "M01"))
        skin = skin + self.emissivity_bias
        cloud = nature.cloudiness(day, overpass)
        edge = (cloud > -0.25) & (cloud <= 0)
        skin = np.where(edge, skin - CLOUD_EDGE_COOLING_K, skin)
        state = np.select([cloud > 0, edge], [QC_CLOUD, QC_OTHER], QC_GOOD).astype(np.uint16)
        tiles = []
        for tile in self.lst_tiles:
            rng = random_stream(nature.seed, "viirs-lst", day.toordinal(), overpass, tile.name)
            lst = to_tile(skin, tile, self.m01)
            lst += rng.normal(0, self.lst_noise_k, lst.shape).astype(np.float32)
            mandatory = to_tile(state, tile, self.m01, fill=QC_NOT_PRODUCED, dtype=np.uint16)
            lst[mandatory >= QC_CLOUD] = np.nan
            cloud_bits = np.where(mandatory == QC_NOT_PRODUCED, 0, mandatory) << QC_CLOUD_SHIFT
            tiles.append(Tile(tile, {"lst": lst, "qc": (mandatory | cloud_bits).astype(np.uint16)}))
        return tiles

    def lai(self, period_start: date) -> list[Tile]:
        """VNP15A2H tiles of an 8-day period: LAI at the period's middle + retrieval noise."""
        lai = self.nature.lai(period_start + timedelta(days=LAI_PERIOD_DAYS // 2), "M400")
        tiles = []
        for tile in self.lai_tiles:
            rng = random_stream(self.nature.seed, "viirs-lai", period_start.toordinal(), tile.name)
            values = to_tile(lai, tile, self.m400)
            values = values + rng.normal(0, 1, values.shape).astype(np.float32) * (0.1 + 0.1 * values)
            tiles.append(Tile(tile, {"lai": np.clip(values, 0, 10)}))
        return tiles


def lai_periods(first: date, last: date) -> list[date]:
    """Starts of the 8-day VNP15A2H periods (day 1, 9, 17, … of each year) that overlap [first, last]."""
    starts = []
    for year in range(first.year - 1, last.year + 1):
        for doy in range(1, 366, LAI_PERIOD_DAYS):
            start = date(year, 1, 1) + timedelta(days=doy - 1)
            if start.year == year and start <= last and start + timedelta(days=LAI_PERIOD_DAYS - 1) >= first:
                starts.append(start)
    return starts


# --- LTDR NDVI ----------------------------------------------------------------------------------------------


class LtdrWorld:
    """Daily AVHRR NDVI on the 0.05° block: area-mean NDVI of the vegetation model, noise, cloud gaps."""

    def __init__(self, nature: NatureRun):
        self.nature = nature
        self.block = LatLonBlock(grids.LTDR_GRID, nature.windows["M01"])

    @property
    def rows(self) -> slice:
        return self.block.rows

    @property
    def cols(self) -> slice:
        return self.block.cols

    def ndvi(self, day: date) -> np.ndarray:
        nature = self.nature
        ndvi = self.block.mean(ndvi_from_lai(nature.point_lai(day)))
        rng = random_stream(nature.seed, "ltdr", day.toordinal())
        ndvi = ndvi + rng.normal(0, LTDR_NOISE, ndvi.shape)
        clouds = gaussian_random_field(rng, self.block.shape, 5e3, {25e3: 1.0})
        cloudy = clouds > np.quantile(clouds, 1 - nature.cloud_fraction(day))
        return np.where(cloudy, np.nan, np.clip(ndvi, -0.1, 1.0)).astype(np.float32)


# --- ISMN -------------------------------------------------------------------------------------------------


@dataclass
class Station:
    """One synthetic ISMN station and its hourly 0–5 cm record."""

    network: str
    name: str
    lon: float
    lat: float
    elevation: float
    cover: str
    cci_code: int
    sand: float
    clay: float
    porosity: float
    times: list[datetime]
    soil_moisture: np.ndarray
    flags: np.ndarray  # 'G', or 'D06' (spike) / 'D10' (saturated plateau)


def ismn_stations(nature: NatureRun, count: int = 10) -> list[Station]:
    """Stations at random 200 m cells away from the region's edge, mostly in grassland and cropland.

    Each station reads θr + g·(θ − θr) + b + ε of its 200 m cell: g (0.85–1.2) and b (σ 0.02) are the
    point-versus-200 m representativeness error, ε (σ 0.004) the sensor noise; ~0.3 % of hours spike."""
    rng = random_stream(nature.seed, "ismn")
    fine, statics = nature.fine, nature.statics
    margin = fine.nrows // 10
    rows, cols = [], []
    while len(rows) < count:
        r, c = rng.integers(margin, fine.nrows - margin), rng.integers(margin, fine.ncols - margin)
        if statics.cover[r, c] != LAND_COVER.index("forest") or rng.random() < 0.1:
            rows.append(int(r))
            cols.append(int(c))
    rows, cols = np.array(rows), np.array(cols)
    gain, offset = rng.uniform(0.85, 1.2, count), rng.normal(0, 0.02, count)
    jitter = rng.uniform(-0.4, 0.4, (2, count)) * fine.grid.cell_size / 111_320.0  # inside the 200 m cell
    first = datetime(nature.start.year, nature.start.month, nature.start.day)
    times = [first + timedelta(hours=i) for i in range(24 * len(nature.days))]
    water = nature.water.subset(rows, cols)
    theta = np.stack([water.at(hours(t)) for t in times])
    # noise and spikes day by day, each day from its own stream: a later end leaves the common days alone
    day_streams = [random_stream(nature.seed, "ismn", day.toordinal()) for day in nature.days]
    noise = np.concatenate([stream.normal(0, ISMN_NOISE, (24, count)) for stream in day_streams])
    spikes = np.concatenate([stream.random((24, count)) < 0.003 for stream in day_streams])
    residual, porosity = statics.residual[rows, cols], statics.porosity[rows, cols]
    sm = residual + gain * (theta - residual) + offset + noise
    sm = np.clip(np.where(spikes, sm + 0.08, sm), 0.005, porosity + 0.02)
    flags = np.where(spikes, "D06", np.where(sm >= porosity - 0.005, "D10", "G"))
    lon, lat = fine.grid.lonlat(fine.row0 + rows, fine.col0 + cols)
    classes = statics.cover[rows, cols]
    return [
        Station(
            network=ISMN_NETWORK, name=f"Site-{i + 1:02d}", lon=float(lon[i] + jitter[0, i]),
            lat=float(lat[i] + jitter[1, i]), elevation=float(statics.elevation[rows[i], cols[i]]),
            cover=LAND_COVER[classes[i]], cci_code=CCI_CODE[classes[i]],
            sand=float(statics.sand[rows[i], cols[i]]), clay=float(statics.clay[rows[i], cols[i]]),
            porosity=float(porosity[i]), times=times, soil_moisture=sm[:, i], flags=flags[:, i],
        )
        for i in range(count)
    ]


# --- airborne campaign --------------------------------------------------------------------------------------


def campaign_window(nature: NatureRun) -> Window:
    """The flight box: the middle ~40 % of the region in each direction, on the M01 grid."""
    m01 = nature.windows["M01"]
    nrows, ncols = max(1, int(m01.nrows * 0.4)), max(1, int(m01.ncols * 0.4))
    row0, col0 = m01.row0 + (m01.nrows - nrows) // 2, m01.col0 + (m01.ncols - ncols) // 2
    return Window("M01", row0, col0, nrows, ncols)


def campaign_times(nature: NatureRun, flights: int = 4) -> list[datetime]:
    """Flights at 10:00 local on up to `flights` days spread over the study period."""
    days = nature.days
    picks = np.unique(np.linspace(0, len(days) - 1, min(flights, len(days))).round().astype(int))
    return [nature.utc(days[i], CAMPAIGN_LOCAL_H) for i in picks]


def campaign_field(nature: NatureRun, t: datetime, theta_m01: np.ndarray) -> np.ndarray:
    """Airborne 1 km retrieval on the flight box: truth + noise + a bias per flight line (10 km strips)."""
    box, m01 = campaign_window(nature), nature.windows["M01"]
    truth = theta_m01[box.row0 - m01.row0: box.row0 - m01.row0 + box.nrows,
                      box.col0 - m01.col0: box.col0 - m01.col0 + box.ncols]
    rng = random_stream(nature.seed, "campaign", int(hours(t)))
    lines = rng.normal(0, 0.01, box.nrows // 10 + 1).repeat(10)[: box.nrows, None]
    return np.clip(truth + lines + rng.normal(0, CAMPAIGN_NOISE, truth.shape), 0.01, 0.6).astype(np.float32)
