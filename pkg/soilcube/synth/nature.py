"""The nature run: a synthetic soil-moisture world from which the stand-in archive is observed.

One field, on the 200 m EASE-Grid 2.0 (M200, the common refinement of M400 = 2×2 and M01 = 5×5 blocks,
M09 = 45×45), so the 400 m, 1 km and 9 km truths are exact block means of the same thing. Everything is
deterministic from (region, start, seed): each component and each date draws from its own random stream,
so a run with a later end reproduces a shorter one (same start) on their common days.

Physics (docs/synthetic-archive.md has the equations):
- static heterogeneity: soil texture → porosity, residual water, field capacity; terrain → slope and a
  wetness index; land cover (grassland, winter-wheat cropland, forest) with per-pixel LAI ranges and
  phenology. All are Gaussian random fields of several length scales (FFT spectral synthesis).
- rain: at most one storm system a day, a front that crosses the region with a heading and speed and
  carries decaying, moving convective cells (closed-form accumulated depth) and a banded frontal part;
- soil water of the 0–5 cm layer: pulses of infiltrated rain (runoff by clay and slope, run-on by the
  wetness index, capped at porosity) and an exponential drydown to the residual water content between
  them, θ(t) = θr + (θ0 − θr)·exp(−Δt/τ), τ from texture, vegetation and season. The state after each
  storm is kept, so θ is evaluable at ANY UTC time in closed form.
- land-surface skin temperature: a diurnal cycle whose amplitude falls exponentially with relative
  saturation θ/porosity, is damped by canopy cover and scaled by the day's radiation (season × clouds).
  It is deliberately not the linear θ = a0 + a1·ΔT per class that soilcube's VIS/IR downscaling fits.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cached_property, lru_cache

import numpy as np
import scipy.fft
from pyproj import Transformer
from scipy import ndimage, special

from soilcube import grids
from soilcube.grids import Region, SinusoidalTile, Window

EPOCH = datetime(2000, 1, 1)  # internal clock: float hours since this UTC instant
FINE = "M200"
M200_PER = {"M400": 2, "M01": 5, "M09": 45}

# --- land cover -------------------------------------------------------------------------------------------
LAND_COVER = ("grassland", "cropland", "forest")
# Per class: LAI floor and peak, day of year of the peak and half-width (days) of the green season, SMAP's
# stem factor for vegetation water content (kg m-2) and the ESA CCI land-cover code ISMN metadata uses.
LAI_MIN = np.array([0.4, 0.2, 1.5], dtype=np.float32)
LAI_MAX = np.array([2.2, 3.8, 5.2], dtype=np.float32)
PEAK_DOY = np.array([175.0, 115.0, 200.0], dtype=np.float32)  # winter wheat greens up in April
SEASON_WIDTH = np.array([55.0, 32.0, 75.0], dtype=np.float32)
STEM_FACTOR = np.array([0.5, 3.5, 15.0], dtype=np.float32)
CCI_CODE = (130, 10, 60)

# --- soil water -------------------------------------------------------------------------------------------
LAYER_DEPTH_MM = 100.0  # rain spread over 0–5 cm plus the fast drainage just below it
SPINUP_DAYS = 30
MAX_FINE_CELLS = 25_000_000  # ~20 float32 fields are held at 200 m: about 2 GB at this size
MAX_PASSAGE_H = 12.0  # a storm crosses the region within this time: its cells are wet by then
STORM_START_LOCAL_H = (12.0, 22.0)  # afternoon/evening starts, so one day's storm has passed before the next

# --- skin temperature -------------------------------------------------------------------------------------
AMPLITUDE_DRY_K = 38.0  # day–night skin temperature range of dry bare soil under a clear summer sky
AMPLITUDE_WET_FLOOR = 0.3  # the wettest bare soil keeps this fraction of it
AMPLITUDE_DECAY = 3.5  # e-folding of the amplitude in relative saturation θ/porosity
AMPLITUDE_CANOPY_K = 11.0  # a transpiring canopy's range
CANOPY_EXTINCTION = 0.5  # canopy cover = 1 − exp(−k·LAI)
DIURNAL_PEAK_LOCAL_H = 13.5
DIURNAL_SHARPNESS = 2.0
DIURNAL_MEAN_LEVEL = 0.4  # where the daily mean sits in the 0…1 diurnal shape
LAPSE_RATE = 0.0065  # K m-1


def hours(t: datetime | date) -> float:
    """Hours since EPOCH (UTC) of a datetime or of a date's 00:00."""
    if not isinstance(t, datetime):
        t = datetime(t.year, t.month, t.day)
    return (t - EPOCH).total_seconds() / 3600.0


def as_datetime(h: float) -> datetime:
    return EPOCH + timedelta(hours=float(h))


def day_of_year(h: float) -> float:
    """Fractional day of year of an internal time."""
    t = as_datetime(h)
    return t.timetuple().tm_yday + (t.hour + t.minute / 60) / 24


def random_stream(seed: int, *keys: str | int) -> np.random.Generator:
    """An independent random stream per (seed, component, date, …): adding a component or a day never
    shifts the numbers any other draws."""
    words = [int(seed)] + [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    return np.random.default_rng(words)


def gaussian_random_field(
    rng: np.random.Generator, shape: tuple[int, int], cell_size: float, scales: dict[float, float]
) -> np.ndarray:
    """Zero-mean, unit-variance float32 field whose covariance is a weighted sum of Gaussians with the
    given length scales (m → weight).

    Each scale is synthesised by FFT on a padded grid (so the field is not periodic) whose cells are at
    most a quarter of the scale, then interpolated to `shape`: long scales cost little."""
    total = np.zeros(shape, dtype=np.float32)
    for length, weight in sorted(scales.items()):
        factor = max(1, int(length / (4 * cell_size)))
        coarse = (-(-shape[0] // factor), -(-shape[1] // factor))
        component = _spectral_field(rng, coarse, cell_size * factor, length)
        if factor > 1:
            component = ndimage.zoom(component, factor, order=1, mode="nearest", grid_mode=True)
        total += np.float32(np.sqrt(weight)) * component[: shape[0], : shape[1]]
    return ((total - total.mean()) / total.std()).astype(np.float32)


def _spectral_field(rng: np.random.Generator, shape: tuple[int, int], cell_size: float, length: float):
    """Unit-variance field with a Gaussian covariance of one length scale (FFT synthesis, padded)."""
    pad = int(np.ceil(2 * length / cell_size))
    ny, nx = shape[0] + pad, shape[1] + pad
    ky = 2 * np.pi * scipy.fft.fftfreq(ny, d=cell_size).astype(np.float32)
    kx = 2 * np.pi * scipy.fft.rfftfreq(nx, d=cell_size).astype(np.float32)
    # The 2-D spectrum of exp(−r²/2ℓ²) is ∝ exp(−k²ℓ²/2): its square root filters white noise.
    amplitude = np.exp(-(ky[:, None] ** 2 + kx[None, :] ** 2) * np.float32(length**2 / 4))
    noise = rng.standard_normal((ny, nx), dtype=np.float32)
    field = scipy.fft.irfft2(scipy.fft.rfft2(noise, workers=-1) * amplitude, s=(ny, nx), workers=-1)
    field = field[: shape[0], : shape[1]]
    return (field - field.mean()) / field.std()


def diurnal_shape(local_hour) -> np.ndarray:
    """0 at 01:30, 1 at 13:30 local: a von Mises bump, flat through the night, peaked after noon."""
    k = DIURNAL_SHARPNESS
    c = np.cos(2 * np.pi * (np.asarray(local_hour, dtype=np.float64) - DIURNAL_PEAK_LOCAL_H) / 24)
    return (np.exp(k * c) - np.exp(-k)) / (np.exp(k) - np.exp(-k))


def canopy_cover(lai):
    return 1 - np.exp(-CANOPY_EXTINCTION * np.asarray(lai))


def ndvi_from_lai(lai):
    """Beer's law between bare soil (0.12) and a closed canopy (0.88)."""
    return (0.12 + 0.76 * (1 - np.exp(-0.55 * np.asarray(lai)))).astype(np.float32)


def diurnal_amplitude(theta, porosity, lai, sand, radiation) -> np.ndarray:
    """Day–night skin-temperature range (K): thermal inertia grows with water, so the bare-soil range
    falls exponentially with relative saturation; canopy cover damps it; radiation scales it."""
    saturation = np.clip(np.asarray(theta) / porosity, 0, 1)
    soil = AMPLITUDE_DRY_K * (1 + 0.3 * (sand - 0.4)) * (
        AMPLITUDE_WET_FLOOR + (1 - AMPLITUDE_WET_FLOOR) * np.exp(-AMPLITUDE_DECAY * saturation)
    )
    cover = canopy_cover(lai)
    return (radiation * ((1 - cover) * soil + cover * AMPLITUDE_CANOPY_K)).astype(np.float32)


# --- statics ----------------------------------------------------------------------------------------------


@dataclass
class Statics:
    """Static fields of one grid (float32 arrays, one shape)."""

    sand: np.ndarray
    clay: np.ndarray
    porosity: np.ndarray
    residual: np.ndarray
    field_capacity: np.ndarray
    elevation: np.ndarray  # m
    slope: np.ndarray  # m m-1
    wetness: np.ndarray  # −1 (ridge) … 1 (hollow)
    cover: np.ndarray  # land-cover class index into LAND_COVER (uint8)
    lai_min: np.ndarray
    lai_max: np.ndarray
    peak_doy: np.ndarray
    season_width: np.ndarray
    drydown_hours: np.ndarray  # τ at the season factor 1
    initial_wetness: np.ndarray  # initial θ as a fraction of (field capacity − residual)

    def subset(self, index) -> Statics:
        return Statics(**{k: v[index] for k, v in vars(self).items()})

    def lai(self, doy: float) -> np.ndarray:
        """Leaf area index on a fractional day of year: a Gaussian green season between floor and peak."""
        d = (doy - self.peak_doy + 182.625) % 365.25 - 182.625
        return self.lai_min + (self.lai_max - self.lai_min) * np.exp(-((d / self.season_width) ** 2))

    def vegetation_water_content(self, lai: np.ndarray) -> np.ndarray:
        """SMAP's ancillary VWC (kg m-2): foliage from NDVI plus a stem term from the class's stem factor
        and the pixel's peak NDVI."""
        ndvi, ndvi_max = ndvi_from_lai(lai), ndvi_from_lai(self.lai_max)
        foliage = 1.9134 * ndvi**2 - 0.3215 * ndvi
        return (foliage + STEM_FACTOR[self.cover] * (ndvi_max - 0.1) / 0.9).astype(np.float32)


def make_statics(seed: int, window: Window) -> Statics:
    """Soil texture, terrain and land cover on `window` (the nature run's M200 window)."""
    shape, size = window.shape, window.grid.cell_size

    def field(name: str, scales: dict[float, float]) -> np.ndarray:
        return gaussian_random_field(random_stream(seed, "static", name), shape, size, scales)

    # Texture varies at a field (1–2 km), landscape (8 km) and regional (40 km) scale.
    texture_a = field("sand", {1.5e3: 0.3, 8e3: 0.4, 40e3: 0.3})
    texture_b = field("clay", {1e3: 0.3, 6e3: 0.4, 30e3: 0.3})
    sand = np.clip(0.40 + 0.17 * texture_a, 0.05, 0.90)
    clay = np.clip(0.22 + 0.08 * texture_b - 0.04 * texture_a, 0.03, 0.55)
    clay = np.minimum(clay, 0.95 - sand)
    porosity = 0.489 - 0.126 * sand  # Cosby et al. (1984), sand as a fraction
    residual = 0.03 + 0.15 * clay  # the drydown asymptote: air-dry surface water
    field_capacity = residual + (porosity - residual) * (0.45 + 0.5 * clay - 0.25 * sand)

    # Terrain: hillslopes (0.5–2 km) on rolling plains (10–40 km), rising to the west like the Great Plains.
    hills = field("hills", {500.0: 0.5, 2e3: 0.5})
    plains = field("plains", {10e3: 0.5, 40e3: 0.5})
    x_km = (window.x - window.x.mean())[None, :] / 1e3
    elevation = 380.0 - 0.8 * x_km + 40.0 * plains + 15.0 * hills
    dz_dy, dz_dx = np.gradient(elevation, size)
    slope = np.hypot(dz_dx, dz_dy)
    wetness = np.clip(-hills / 2.5, -1, 1)  # hollows (below the local hillslope mean) collect run-on

    # Land cover: forest in large patches, more of it to the east; cropland and grassland elsewhere.
    forest_propensity = field("forest", {4e3: 0.4, 25e3: 0.6}) + 0.9 * x_km / max(np.abs(x_km).max(), 1.0)
    crop_propensity = field("crop", {1e3: 0.5, 6e3: 0.5})
    cover = np.where(crop_propensity > -0.1, 1, 0).astype(np.uint8)
    cover[forest_propensity > np.quantile(forest_propensity, 0.82)] = 2
    vigour = 1 + 0.2 * field("vigour", {2e3: 0.5, 15e3: 0.5})
    lai_max = np.clip(LAI_MAX[cover] * vigour, LAI_MIN[cover] + 0.3, 7.0)
    peak_doy = PEAK_DOY[cover] + 8.0 * field("phenology", {20e3: 1.0})

    # Surface drydown: slower in clay, faster in sand, slower under canopy shade.
    tau_days = 4.0 * (1 + 1.2 * (clay - 0.2) - 0.8 * (sand - 0.4)) * (1 + 0.3 * canopy_cover(lai_max))
    initial_wetness = np.clip(0.6 + 0.25 * field("antecedent", {20e3: 1.0}), 0.1, 1.2)
    f32 = {k: np.asarray(v, dtype=np.float32) for k, v in {
        "sand": sand, "clay": clay, "porosity": porosity, "residual": residual,
        "field_capacity": field_capacity, "elevation": elevation, "slope": slope, "wetness": wetness,
        "lai_min": LAI_MIN[cover], "lai_max": lai_max, "peak_doy": peak_doy,
        "season_width": SEASON_WIDTH[cover], "drydown_hours": 24 * np.clip(tau_days, 2.0, 10.0),
        "initial_wetness": initial_wetness,
    }.items()}
    return Statics(cover=cover, **f32)


# --- storms -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Storm:
    """One storm system: a front crossing the region plus moving, decaying convective cells."""

    start: float  # hours since EPOCH when the front enters the region
    heading: float  # radians, direction of motion (0 = east, counter-clockwise)
    speed: float  # m h-1
    entry: float  # along-heading coordinate (m) where the front enters the region
    cell_x: np.ndarray  # cell positions when the front enters (m, EPSG:6933)
    cell_y: np.ndarray
    cell_radius: np.ndarray  # m
    cell_intensity: np.ndarray  # mm h-1
    cell_lifetime: np.ndarray  # h
    frontal_depth: float  # mm, 0 for purely convective storms
    band_wavelength: float  # m, spacing of the frontal rain bands along the front
    band_phase: float

    @property
    def end(self) -> float:
        return self.start + MAX_PASSAGE_H

    def along(self, x, y):
        return x * np.cos(self.heading) + y * np.sin(self.heading)

    def across(self, x, y):
        return -x * np.sin(self.heading) + y * np.cos(self.heading)

    def arrival(self, x, y) -> np.ndarray:
        """When the front reaches (x, y), hours since EPOCH."""
        reach = np.clip(self.along(x, y) - self.entry, 0, MAX_PASSAGE_H * self.speed)
        return self.start + reach / self.speed

    def depth(self, x, y) -> np.ndarray:
        """Storm-total rain (mm) at (x, y) (broadcastable arrays)."""
        band = np.sin(2 * np.pi * self.across(x, y) / self.band_wavelength + self.band_phase)
        total = self.frontal_depth * (0.7 + 0.3 * band)
        for cx, cy, r, intensity, life in zip(self.cell_x, self.cell_y, self.cell_radius,
                                              self.cell_intensity, self.cell_lifetime, strict=True):
            s, d = self.along(x - cx, y - cy), self.across(x - cx, y - cy)
            total = total + intensity * _moving_cell_integral(s, d, r, self.speed, life)
        return total


def _moving_cell_integral(s, d, radius, speed, lifetime):
    """∫₀^∞ exp(−t/L)·exp(−|p − v·t|²/2r²) dt for a Gaussian cell moving at `speed` (hours).

    With along-track s, cross-track d and λ = v·L, the integral is
    (r/v)·√(π/2)·exp(−d²/2r²)·exp(−s/λ + r²/2λ²)·erfc(−(s − r²/λ)/(r√2));
    upstream (large erfc argument) it is rewritten with erfcx so nothing overflows.
    """
    lam = speed * lifetime
    m = s - radius**2 / lam
    z = -m / (radius * np.sqrt(2))
    upstream = np.exp(-(s**2) / (2 * radius**2)) * special.erfcx(np.maximum(z, 0))
    downstream = np.exp(-np.maximum(s, radius**2 / lam) / lam + radius**2 / (2 * lam**2)) * special.erfc(
        np.minimum(z, 0))
    along = np.where(z > 0, upstream, downstream)
    return (radius / speed) * np.sqrt(np.pi / 2) * np.exp(-(d**2) / (2 * radius**2)) * along


def rain_day_probability(doy: float) -> float:
    """Chance that a storm system crosses the region on a day: wettest in May–June (southern Plains)."""
    return 0.2 + 0.1 * np.cos(2 * np.pi * (doy - 145) / 365.25)


def storm_of_day(seed: int, day: date, bounds_xy, utc_offset_h: float) -> Storm | None:
    """The storm system of one (local) day, or None: drawn from that day's own random stream."""
    rng = random_stream(seed, "storm", day.toordinal())
    if rng.random() >= rain_day_probability(day.timetuple().tm_yday):
        return None
    left, bottom, right, top = bounds_xy
    width, height = right - left, top - bottom
    heading = np.deg2rad(rng.normal(20.0, 30.0))  # most systems travel from the west-southwest
    speed = rng.uniform(40e3, 70e3)
    corners_x, corners_y = np.array([left, right, left, right]), np.array([bottom, bottom, top, top])
    entry = float(np.min(corners_x * np.cos(heading) + corners_y * np.sin(heading)))
    start = hours(day) + rng.uniform(*STORM_START_LOCAL_H) - utc_offset_h
    n_cells = 1 + rng.poisson(width * height / 1e10)  # ~1 cell per (100 km)²
    # Cells start upstream or inside the region, then move with the system.
    cell_x = rng.uniform(left - 0.3 * width, right, n_cells)
    cell_y = rng.uniform(bottom - 0.2 * height, top + 0.2 * height, n_cells)
    frontal = rng.random() < 0.4
    return Storm(
        start=start, heading=float(heading), speed=float(speed), entry=entry,
        cell_x=cell_x, cell_y=cell_y,
        cell_radius=rng.lognormal(np.log(12e3), 0.4, n_cells),
        cell_intensity=rng.gamma(2.0, 15.0, n_cells),
        cell_lifetime=rng.uniform(1.0, 4.0, n_cells),
        frontal_depth=float(rng.gamma(2.0, 8.0)) if frontal else 0.0,
        band_wavelength=float(rng.uniform(80e3, 250e3)),
        band_phase=float(rng.uniform(0, 2 * np.pi)),
    )


def drydown_season_factor(h: float) -> float:
    """Evaporative demand relative to its annual mean: drydown is ~35 % faster in July than on average."""
    return 1 + 0.35 * np.cos(2 * np.pi * (day_of_year(h) - 196) / 365.25)


# --- soil water -------------------------------------------------------------------------------------------


class SoilWater:
    """Pulse-and-drydown water content of the 0–5 cm layer on any set of cells, closed-form in time.

    Between storms, θ(t) = θr + (θ_k − θr)·exp(−(t − t_arrival)/τ). After storm k it is stored as
    B_k = (θ_k − θr)·exp((t_arrival − t_k)/τ_k), so that θ(t) = θr + B_k·exp(−(t − t_k)/τ_k): one exp per
    cell and time. Cells a storm has not reached yet (its front is still crossing) keep the previous state.

    `x`, `y` are cell coordinates (m) broadcastable to the statics' shape. Interval i starts at
    `starts[i]` (the initial time, or the start of the storm `openers[i]`) with amplitude B_i and season
    factor f_i (τ_i = τ/f_i).
    """

    def __init__(self, x, y, statics: Statics, t0: float, storms: list[Storm],
                 infiltration: Callable[[int], np.ndarray], keep_from: float = -np.inf):
        self.x, self.y = x, y
        self.residual = statics.residual
        self.rate = (1.0 / statics.drydown_hours).astype(np.float32)
        theta0 = statics.residual + statics.initial_wetness * (statics.field_capacity - statics.residual)
        self.starts, self.openers = [t0], [None]
        self.amplitudes = [(theta0 - self.residual).astype(np.float32)]
        self.factors = [drydown_season_factor(t0)]
        for k, storm in enumerate(storms):
            arrival = storm.arrival(x, y)
            before = self._drydown(len(self.starts) - 1, arrival)
            wet = np.minimum(before + infiltration(k) / LAYER_DEPTH_MM, statics.porosity)
            factor = drydown_season_factor(storm.start)
            rate = self.rate * np.float32(factor)
            amplitude = (wet - self.residual) * np.exp((arrival - storm.start) * rate)
            self.starts.append(storm.start)
            self.openers.append(storm)
            self.amplitudes.append(amplitude.astype(np.float32))
            self.factors.append(factor)
            # Times from `keep_from` on never look behind the last interval whose storm had fully passed
            # by then: drop older states (the spin-up) as we go.
            while len(self.openers) > 1 and self.openers[1].end <= keep_from:
                for kept in (self.starts, self.openers, self.amplitudes, self.factors):
                    del kept[0]

    def _drydown(self, i: int, t) -> np.ndarray:
        rate = self.rate * np.float32(self.factors[i])
        return self.residual + self.amplitudes[i] * np.exp(-np.asarray(t - self.starts[i], np.float32) * rate)

    def at(self, t: float) -> np.ndarray:
        """θ (m3 m-3, float32) of every cell at internal time `t` (hours since EPOCH)."""
        i = int(np.searchsorted(self.starts, t, side="right")) - 1
        storm = self.openers[max(i, 0)]
        in_passage = storm is not None and t < storm.end
        if i < 0 or (in_passage and i == 0):
            raise ValueError(f"{as_datetime(t)} is before the kept soil-water record")
        theta = self._drydown(i, t)
        if in_passage:
            arrival = storm.arrival(self.x, self.y)
            theta = np.where(arrival <= t, theta, self._drydown(i - 1, t))
        return theta

    def subset(self, rows: np.ndarray, cols: np.ndarray) -> SoilWater:
        """The same record restricted to cells (rows, cols) of a 2-D grid: cheap long time series."""
        sub = object.__new__(SoilWater)
        shape = self.residual.shape
        sub.x, sub.y = np.broadcast_to(self.x, shape)[rows, cols], np.broadcast_to(self.y, shape)[rows, cols]
        sub.residual, sub.rate = self.residual[rows, cols], self.rate[rows, cols]
        sub.starts, sub.openers, sub.factors = self.starts, self.openers, self.factors
        sub.amplitudes = [a[rows, cols] for a in self.amplitudes]
        return sub


# --- the nature run ---------------------------------------------------------------------------------------


class NatureRun:
    """The synthetic world over `region` from `start` to `end` (dates, inclusive)."""

    def __init__(self, region: Region, start: date, end: date, seed: int = 0):
        self.region, self.seed = region, seed
        self.start = start if not isinstance(start, datetime) else start.date()
        self.end = end if not isinstance(end, datetime) else end.date()
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        self.windows = {name: region.window(name) for name in ("M200", "M400", "M01", "M09")}
        self.fine = self.windows[FINE]
        rows, cols = self.fine.shape
        if rows * cols > MAX_FINE_CELLS:
            raise ValueError(f"region {region.name!r} has {rows} × {cols} cells of 200 m; the nature run "
                             f"holds at most {MAX_FINE_CELLS:,} (about 900 km × 900 km)")
        west, south, east, north = region.bounds_lonlat
        self.centre_lon, self.centre_lat = (west + east) / 2, (south + north) / 2
        # Local solar time of the region centre drives every overpass and the diurnal cycle.
        self.utc_offset_h = self.centre_lon / 15.0
        self.statics = make_statics(seed, self.fine)
        self._coarse_statics: dict[str, Statics] = {FINE: self.statics}
        self._day_fields: tuple[date | None, dict] = (None, {})

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]

    def utc(self, day: date, local_hour: float) -> datetime:
        """UTC instant of `local_hour` (region-centre local solar time) on `day`, to the second."""
        t = datetime(day.year, day.month, day.day) + timedelta(hours=local_hour - self.utc_offset_h)
        return t.replace(microsecond=0)

    def local_hour(self, h: float) -> float:
        return (h + self.utc_offset_h) % 24

    def local_day(self, h: float) -> date:
        return as_datetime(h + self.utc_offset_h).date()

    # -- rain and soil water --

    def storms(self, first: date, last: date) -> list[Storm]:
        bounds = self.fine.bounds_xy
        found = (storm_of_day(self.seed, first + timedelta(days=i), bounds, self.utc_offset_h)
                 for i in range((last - first).days + 1))
        return [s for s in found if s is not None]

    def storm_on(self, day: date) -> Storm | None:
        return storm_of_day(self.seed, day, self.fine.bounds_xy, self.utc_offset_h)

    def infiltration_factor(self, statics: Statics) -> np.ndarray:
        """Share of rain that enters the layer: runoff grows with clay and slope, hollows get run-on."""
        runoff = np.clip(0.05 + 0.35 * statics.clay + 3.0 * statics.slope, 0, 0.6)
        return ((1 - runoff) * (1 + 0.35 * statics.wetness)).astype(np.float32)

    @cached_property
    def water(self) -> SoilWater:
        """Soil water on the whole M200 window, kept from the study start on."""
        spinup = self.start - timedelta(days=SPINUP_DAYS)
        storms = self.storms(spinup, self.end)
        coarse = self.windows["M01"]
        cx, cy = coarse.x[None, :], coarse.y[:, None]
        factor = self.infiltration_factor(self.statics)
        zoom = M200_PER["M01"]

        def infiltration(k: int) -> np.ndarray:
            # Storm totals are smooth at 1 km: evaluate the closed form there and interpolate to 200 m.
            rain = storms[k].depth(cx, cy).astype(np.float32)
            fine = ndimage.zoom(rain, zoom, order=1, mode="nearest", grid_mode=True)
            return np.maximum(fine, 0) * factor

        x, y = self.fine.x[None, :].astype(np.float64), self.fine.y[:, None].astype(np.float64)
        return SoilWater(x, y, self.statics, hours(spinup), storms, infiltration, keep_from=hours(self.start))

    def soil_moisture(self, t: datetime) -> np.ndarray:
        """θ (m3 m-3) on the M200 window at a UTC time."""
        return self.water.at(hours(t))

    # -- vegetation --

    def vigour(self, year: int) -> float:
        """This year's green-season strength relative to normal (rainfall, planting): ±8 %."""
        return float(np.clip(random_stream(self.seed, "vigour", year).normal(1.0, 0.08), 0.8, 1.2))

    def lai_of(self, statics: Statics, day: date) -> np.ndarray:
        """LAI of any cells (statics of a grid or of points) on a day, with that year's vigour."""
        lai = statics.lai(float(day.timetuple().tm_yday))
        return statics.lai_min + (lai - statics.lai_min) * np.float32(self.vigour(day.year))

    def lai(self, day: date, grid: str = "M01") -> np.ndarray:
        """Block-mean LAI on a grid of the nature run (M200, M400, M01, M09)."""
        fields = self._fields_of(day)
        if ("lai", grid) not in fields:
            fine = self.lai_of(self.statics, day) if grid == FINE else self.lai(day, FINE)
            fields["lai", grid] = coarsen(fine, grid)
        return fields["lai", grid]

    def vegetation_water_content(self, day: date, grid: str = "M09") -> np.ndarray:
        fields = self._fields_of(day)
        if ("vwc", grid) not in fields:
            fields["vwc", grid] = coarsen(self.statics.vegetation_water_content(self.lai(day, FINE)), grid)
        return fields["vwc", grid]

    @cached_property
    def point_statics(self) -> Statics:
        """Statics of one M200 cell at the centre of each 1 km cell: a cheap sample for area means."""
        k = M200_PER["M01"]
        return self.statics.subset((slice(k // 2, None, k), slice(k // 2, None, k)))

    def point_lai(self, day: date) -> np.ndarray:
        fields = self._fields_of(day)
        if "point-lai" not in fields:
            fields["point-lai"] = self.lai_of(self.point_statics, day)
        return fields["point-lai"]

    def _fields_of(self, day: date) -> dict:
        """Per-day vegetation fields, kept until another day is asked for: products of a day reuse them."""
        if self._day_fields[0] != day:
            self._day_fields = (day, {})
        return self._day_fields[1]

    def statics_on(self, grid: str) -> Statics:
        """Statics as block means on a coarser grid; the land-cover class is the dominant one."""
        if grid not in self._coarse_statics:
            fine = self.statics
            fields = {k: coarsen(v, grid) for k, v in vars(fine).items() if k != "cover"}
            dominant = self.cover_fractions(grid).argmax(axis=0).astype(np.uint8)
            self._coarse_statics[grid] = Statics(cover=dominant, **fields)
        return self._coarse_statics[grid]

    def cover_fractions(self, grid: str) -> np.ndarray:
        """Share of each land-cover class per cell, (class, y, x)."""
        cover = self.statics.cover
        return np.stack([coarsen((cover == c).astype(np.float32), grid) for c in range(len(LAND_COVER))])

    # -- weather and skin temperature --

    def cloud_fraction(self, day: date) -> float:
        """Daily cloud cover of the region: cloudier on storm days."""
        rng = random_stream(self.seed, "cloud-fraction", day.toordinal())
        base = rng.beta(2.0, 5.0)
        return float(np.clip(base + (0.45 if self.storm_on(day) is not None else 0.0), 0.02, 0.95))

    def radiation(self, day: date) -> float:
        """Relative solar forcing of the diurnal cycle: noon-sun elevation × cloud attenuation × weather."""
        doy = day.timetuple().tm_yday
        declination = np.deg2rad(23.44) * np.sin(2 * np.pi * (doy - 81) / 365.25)
        noon = np.cos(np.deg2rad(self.centre_lat) - declination)
        wobble = random_stream(self.seed, "radiation", day.toordinal()).normal(0, 0.04)
        return float(noon * (1 - 0.6 * self.cloud_fraction(day)) * (1 + wobble))

    def air_temperature_anomaly(self, day: date) -> float:
        """Synoptic anomaly (K): a 4-day moving sum of daily draws, so it is a function of the date alone."""
        draws = [random_stream(self.seed, "synoptic", day.toordinal() - j).normal() for j in range(4)]
        return float(2.5 * np.dot([0.6, 0.5, 0.45, 0.4], draws))

    def mean_skin_temperature(self, day: date) -> float:
        """Regional daily-mean skin temperature (K) at the reference elevation."""
        doy = day.timetuple().tm_yday
        seasonal = 289.0 + 13.0 * np.cos(2 * np.pi * (doy - 200) / 365.25) - 0.6 * (self.centre_lat - 35)
        return float(seasonal + self.air_temperature_anomaly(day))

    def skin_temperature(self, t: datetime, theta, statics: Statics, lai) -> np.ndarray:
        """Skin temperature (K) at UTC time t for cells with water content θ, statics and LAI.

        T = T̄(day) − Γ·(z − 380 m) + A·(shape(local hour) − 0.4): dry soils heat more by day and cool more
        by night (low thermal inertia), canopies and clouds flatten the cycle.
        """
        h = hours(t)
        day = self.local_day(h)
        amplitude = diurnal_amplitude(theta, statics.porosity, lai, statics.sand, self.radiation(day))
        level = diurnal_shape(self.local_hour(h)) - DIURNAL_MEAN_LEVEL
        mean = self.mean_skin_temperature(day) - LAPSE_RATE * (statics.elevation - 380.0)
        return (mean + amplitude * level).astype(np.float32)

    def cloudiness(self, day: date, overpass: str, grid: str = "M01") -> np.ndarray:
        """Cloud field of one VIIRS overpass ('D' day, 'N' night) of a local day: cloud where > 0, thin or
        broken cloud at the edges (slightly negative values). The cloudy share is the day's cloud fraction."""
        window = self.windows[grid]
        rng = random_stream(self.seed, "cloud-mask", day.toordinal(), overpass)
        field = gaussian_random_field(rng, window.shape, window.grid.cell_size, {8e3: 0.4, 30e3: 0.6})
        fraction = self.cloud_fraction(day) * (0.8 if overpass == "N" else 1.0)
        return field - np.quantile(field, 1 - fraction)


def coarsen(fine: np.ndarray, grid: str) -> np.ndarray:
    """Exact block mean of an M200 field onto M400, M01 or M09 (M200 itself is returned as is)."""
    if grid == "M09":  # via M01: equal blocks of equal blocks, and the reductions are far cheaper
        return grids.block_mean(grids.block_mean(fine, M200_PER["M01"]), M200_PER["M09"] // M200_PER["M01"])
    return fine if grid == FINE else grids.block_mean(fine, M200_PER[grid])


# --- sinusoidal tiles → EASE2 -----------------------------------------------------------------------------

_SINU_TO_EASE = Transformer.from_crs(grids.SINUSOIDAL_PROJ, grids.EPSG, always_xy=True)
_EASE_TO_SINU = Transformer.from_crs(grids.EPSG, grids.SINUSOIDAL_PROJ, always_xy=True)


@lru_cache(maxsize=32)
def tile_pixels_in_window(tile: SinusoidalTile, window: Window) -> tuple[np.ndarray, ...]:
    """Inverse lookup: the tile pixels (i, j) whose centres fall in `window`, and the window cell (row, col)
    holding each centre. Pixels not listed lie outside the window (they stay fill)."""
    left, bottom, right, top = window.bounds_xy
    # Bound the tile rows/columns by the window outline, sampled densely (sinusoidal edges are curved).
    edge = np.linspace(0, 1, 200)
    ox = np.concatenate([left + (right - left) * edge, np.full(200, right), left + (right - left) * edge,
                         np.full(200, left)])
    oy = np.concatenate([np.full(200, top), bottom + (top - bottom) * edge, np.full(200, bottom),
                         bottom + (top - bottom) * edge])
    sx, sy = _EASE_TO_SINU.transform(ox, oy)
    tile_left, tile_top = tile.upper_left
    size = tile.pixel_size
    j0, j1 = np.clip([np.floor((sx.min() - tile_left) / size) - 1,
                      np.ceil((sx.max() - tile_left) / size) + 1], 0, tile.pixels)
    i0, i1 = np.clip([np.floor((tile_top - sy.max()) / size) - 1,
                      np.ceil((tile_top - sy.min()) / size) + 1], 0, tile.pixels)
    i, j = np.meshgrid(np.arange(int(i0), int(i1)), np.arange(int(j0), int(j1)), indexing="ij")
    ex, ey = _SINU_TO_EASE.transform(tile_left + (j + 0.5) * size, tile_top - (i + 0.5) * size)
    with np.errstate(invalid="ignore"):  # pixels off the Earth's edge transform to inf; dropped below
        rows = window.grid.row_of_y(ey) - window.row0
        cols = window.grid.col_of_x(ex) - window.col0
    inside = np.isfinite(ex) & (rows >= 0) & (rows < window.nrows) & (cols >= 0) & (cols < window.ncols)
    return i[inside], j[inside], rows[inside], cols[inside]


def to_tile(values: np.ndarray, tile: SinusoidalTile, window: Window, fill=np.nan,
            dtype=np.float32) -> np.ndarray:
    """Place a field on an EASE2 window onto a sinusoidal tile (nearest cell); outside the window = fill."""
    i, j, r, c = tile_pixels_in_window(tile, window)
    out = np.full((tile.pixels, tile.pixels), fill, dtype=dtype)
    out[i, j] = values[r, c]
    return out
