"""The nature run's physics: determinism, nesting of the truths, ranges, the non-linear thermal-inertia
relation, rain pulses and drydown, the SMAP retrieval error, swaths, tiles, and the ISMN tree."""

from datetime import date, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pytest

from soilcube import grids
from soilcube.grids import Region, region_from_bbox
from soilcube.synth.nature import (
    LAND_COVER,
    NatureRun,
    coarsen,
    diurnal_amplitude,
    hours,
    tile_pixels_in_window,
)
from soilcube.synth.observe import (
    DENSE_VEGETATION_VWC,
    SMAP_NOISE,
    SURFACE_DENSE_VEGETATION,
    ViirsWorld,
    gldas_fit_hours,
    ismn_stations,
    smap_l2_half_orbits,
    smap_swaths,
)

# 3 × 3 cells of 36 km inside the Oklahoma test region: 540 × 540 cells of 200 m, 12 × 12 of 9 km.
SMALL = Region("small", 84, 219, 3, 3)
START, END = date(2019, 6, 1), date(2019, 6, 14)


@pytest.fixture(scope="module")
def nature() -> NatureRun:
    return NatureRun(SMALL, START, END, seed=7)


def overpass_truth(nature: NatureRun, day: date, local_hour: float = 6.0) -> np.ndarray:
    return nature.soil_moisture(nature.utc(day, local_hour))


def test_same_seed_same_world_other_seed_other_world(nature):
    twin = NatureRun(SMALL, START, END, seed=7)
    other = NatureRun(SMALL, START, END, seed=8)
    t = nature.utc(date(2019, 6, 9), 6.0)
    np.testing.assert_array_equal(twin.soil_moisture(t), nature.soil_moisture(t))
    np.testing.assert_array_equal(twin.statics.sand, nature.statics.sand)
    assert [s.start for s in twin.storms(START, END)] == [s.start for s in nature.storms(START, END)]
    assert not np.allclose(other.soil_moisture(t), nature.soil_moisture(t))


def test_a_later_end_reproduces_the_common_days(nature):
    shorter = NatureRun(SMALL, START, START + timedelta(days=4), seed=7)
    t = nature.utc(START + timedelta(days=3), 18.0)
    np.testing.assert_array_equal(shorter.soil_moisture(t), nature.soil_moisture(t))


def test_1km_and_400m_truths_nest_in_the_9km_and_36km_truths(nature):
    theta = overpass_truth(nature, date(2019, 6, 10))
    m400, m01, m09 = coarsen(theta, "M400"), coarsen(theta, "M01"), coarsen(theta, "M09")
    assert m400.shape == nature.windows["M400"].shape and m01.shape == nature.windows["M01"].shape
    # M01 nests in M09 (9 × 9) and both M01 and M400 nest in M36 (36 × 36, 90 × 90): exact block means.
    np.testing.assert_allclose(grids.block_mean(m01, 9), m09, atol=1e-6)
    np.testing.assert_allclose(grids.block_mean(m400, 90), grids.block_mean(m01, 36), atol=1e-6)
    # A 9 km cell is 22.5 × 22.5 cells of 400 m: its area-weighted mean of the 400 m truth is close to the
    # 9 km truth (only the half cells on its edges differ).
    area_weighted = grids.block_mean(np.repeat(np.repeat(m400, 2, axis=0), 2, axis=1), 45)
    assert np.abs(area_weighted - m09).max() < 0.01


def test_physical_ranges(nature):
    statics = nature.statics
    assert 0.3 < statics.porosity.min() and statics.porosity.max() < 0.5
    assert np.all(statics.residual < statics.field_capacity)
    assert np.all(statics.field_capacity < statics.porosity)
    for day in (date(2019, 6, 3), date(2019, 6, 12)):
        for local in (1.5, 6.0, 13.5, 18.0):
            theta = overpass_truth(nature, day, local)
            assert np.all(theta >= statics.residual - 1e-6) and np.all(theta <= statics.porosity + 1e-6)
            assert 0.02 < theta.mean() < 0.45
        statics01 = nature.statics_on("M01")
        skin = nature.skin_temperature(nature.utc(day, 13.5), coarsen(theta, "M01"), statics01,
                                       nature.lai(day, "M01"))
        assert 285 < skin.min() and skin.max() < 340
        lai = nature.lai(day, "M200")
        assert lai.min() >= 0 and lai.max() < 8
        assert nature.vegetation_water_content(day, "M09").min() >= 0


def day_night_difference(nature: NatureRun, day: date):
    """dT = LST(13:30) − LST(01:30) on the 1 km grid, θ at 13:30, LAI and land cover."""
    statics, lai = nature.statics_on("M01"), nature.lai(day, "M01")
    t_day, t_night = nature.utc(day, 13.5), nature.utc(day, 1.5)
    theta_day = coarsen(nature.soil_moisture(t_day), "M01")
    theta_night = coarsen(nature.soil_moisture(t_night), "M01")
    dt = (nature.skin_temperature(t_day, theta_day, statics, lai)
          - nature.skin_temperature(t_night, theta_night, statics, lai))
    return dt.ravel(), theta_day.ravel(), lai.ravel(), statics.cover.ravel()


def least_squares(columns, y):
    a = np.column_stack(columns)
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    residual = y - a @ coef
    covariance = np.linalg.inv(a.T @ a) * residual.var(ddof=a.shape[1])
    return coef, coef / np.sqrt(np.diag(covariance)), residual


def test_day_night_difference_is_nonlinear_in_theta_and_damped_by_vegetation(nature):
    dt, theta, lai, cover = day_night_difference(nature, date(2019, 6, 12))
    grass = cover == LAND_COVER.index("grassland")
    x, y = theta[grass], dt[grass]
    one = np.ones_like(x)
    # The linear per-class model that the VIS/IR downscaling fits leaves curved residuals: positive at
    # both ends of the θ range, negative in the middle (the truth is convex: exponential decay).
    _, _, residual = least_squares([one, x], y)
    lo, hi = np.quantile(x, [0.1, 0.9])
    assert residual[x < lo].mean() > 0 and residual[x > hi].mean() > 0
    assert residual[(x > np.quantile(x, 0.4)) & (x < np.quantile(x, 0.6))].mean() < 0
    coef, t_values, _ = least_squares([one, x, x**2], y)
    assert coef[2] > 0 and t_values[2] > 10
    # Vegetation damps the cycle: at equal θ, more leaf area means a smaller day-night difference.
    coef, t_values, _ = least_squares([np.ones_like(theta), theta, theta**2, lai], dt)
    assert coef[3] < 0 and t_values[3] < -10
    # The same in the amplitude law itself, for any θ.
    wet = np.linspace(0.05, 0.45, 9)
    assert np.all(diurnal_amplitude(wet, 0.45, 4.0, 0.4, 1.0) < diurnal_amplitude(wet, 0.45, 0.5, 0.4, 1.0))


def test_rain_wets_the_soil_then_it_dries_down(nature):
    storms = [s for s in nature.water.openers if s is not None]
    assert 2 <= len(storms) <= 12  # realistic frequency for two June weeks in the southern Plains
    for before, storm, after in zip(storms, storms[1:], storms[2:] + [None], strict=False):
        if storm.start - before.end < 1:
            continue
        wet_before = nature.water.at(storm.start - 0.5)
        wet_after = nature.water.at(storm.end + 0.5)
        rained = wet_after - wet_before > 0.02
        if rained.mean() < 0.01:
            continue
        # Wetting where it rained, capped at porosity …
        assert np.all(wet_after <= nature.statics.porosity + 1e-6)
        # … then a monotonic drydown until the next storm.
        stop = after.start if after is not None else hours(END)
        series = [nature.water.at(t)[rained] for t in np.linspace(storm.end + 1, stop - 0.1, 6)]
        assert all(np.all(b <= a + 1e-6) for a, b in zip(series, series[1:], strict=False))
        assert np.mean(series[-1]) < np.mean(series[0])
        return
    pytest.fail("no storm wetted the region in the test period")


def test_smap_l2_error_has_the_requested_sigma_and_flags_dense_vegetation(nature):
    errors, coverage, dense_flags = [], [], []
    for day in nature.days:
        for overpass in ("AM", "PM"):
            truth = coarsen(overpass_truth(nature, day, 6.0 if overpass == "AM" else 18.0), "M09")
            halves = smap_l2_half_orbits(nature, day, overpass, truth)
            coverage.append(sum(np.isfinite(h.fields["tb_time_seconds"]).mean() for h in halves))
            vwc = nature.vegetation_water_content(day, "M09")
            for half in halves:
                f = half.fields
                swath = np.isfinite(f["tb_time_seconds"])
                # Away from the 0.02/0.5 clipping, retrieval − truth is the retrieval noise.
                clean = swath & (truth > 0.15) & (truth < 0.38)
                errors.append((f["soil_moisture"] - truth)[clean])
                dense = (f["surface_flag"][swath] & SURFACE_DENSE_VEGETATION) > 0
                dense_flags.append(np.array_equal(dense, vwc[swath] > DENSE_VEGETATION_VWC))
                np.testing.assert_array_equal(f["retrieval_qual_flag"][swath] & 1, dense.astype(np.uint16))
    error = np.concatenate(errors)
    assert error.size > 300
    assert abs(error.std() - SMAP_NOISE) < 0.004 and abs(error.mean()) < 0.005
    assert all(dense_flags)
    coverage = np.array(coverage)
    assert (coverage == 0).any() and (coverage == 1).any()  # days without and with a full swath


def test_swath_times_follow_the_overpass(nature):
    day = next(d for d in nature.days if smap_swaths(nature, d, "AM"))
    for swath, passing in smap_swaths(nature, day, "AM"):
        local = passing + timedelta(hours=nature.utc_offset_h)
        assert abs((local - datetime(day.year, day.month, day.day, 6)).total_seconds()) < 3 * 3600
        assert swath.any()


def test_tile_pixel_lookup_inverts_the_ease2_lookup(nature):
    window = nature.windows["M01"]
    world = ViirsWorld(nature)
    hit = np.zeros(window.shape, bool)
    for tile in world.lst_tiles:
        i, j, r, c = tile_pixels_in_window(tile, window)
        hit[r, c] = True
        # Where the forward lookup (EASE2 cell → nearest pixel) lands in this tile, the inverse lookup of
        # that pixel mostly returns the same cell (pixels are 926 m, cells 1 km).
        forward = grids.sinusoidal_lookup(window, 1200)
        mine = (forward["h"] == tile.h) & (forward["v"] == tile.v)
        inverse = dict(zip(zip(i.tolist(), j.tolist(), strict=True), zip(r.tolist(), c.tolist(), strict=True),
                           strict=True))
        rows, cols = np.nonzero(mine)
        same = [inverse.get((forward["i"][y, x], forward["j"][y, x])) == (y, x)
                for y, x in zip(rows, cols, strict=True)]
        assert np.mean(same) > 0.7
    assert hit.mean() > 0.95


def test_viirs_lst_noise_has_the_requested_sigma(nature):
    """`lst_noise_k` (the sensitivity experiments' knob): the same world's LST tiles differ from the
    noise-free ones by white noise of that σ on clear pixels, and only there."""
    worlds = {sigma: ViirsWorld(nature, lst_noise_k=sigma) for sigma in (0.0, 0.8, 2.0)}
    diffs = {0.8: [], 2.0: []}
    for day in nature.days:
        theta = coarsen(nature.soil_moisture(nature.utc(day, 13.5)), "M01")
        clean = worlds[0.0].lst(day, "D", theta)
        for sigma, found in diffs.items():
            for a, b in zip(clean, worlds[sigma].lst(day, "D", theta), strict=True):
                np.testing.assert_array_equal(a.arrays["qc"], b.arrays["qc"])
                np.testing.assert_array_equal(np.isnan(a.arrays["lst"]), np.isnan(b.arrays["lst"]))
                found.append((b.arrays["lst"] - a.arrays["lst"])[np.isfinite(a.arrays["lst"])])
    for sigma, found in diffs.items():
        diff = np.concatenate(found)
        assert diff.size > 2_000
        assert abs(diff.mean()) < 0.1 * sigma and diff.std() == pytest.approx(sigma, rel=0.06)


@pytest.mark.parametrize(
    ("bbox", "hours"),
    [
        # time-zone band −6 h (Oklahoma, and Georgia at −84°, where lon/15 = −5.6 would pick 00/06/12/18):
        # 01:30 → 07:30 (tie → 09), 13:30 → 19:30 (→ 21), 06:00 → 12:00, 18:00 → 24:00 (00)
        ((-98.0, 35.0, -97.8, 35.2), [0, 9, 12, 21]),
        ((-84.2, 34.0, -84.0, 34.2), [0, 9, 12, 21]),
        # band −5 h: 01:30 → 06:30 (tie → 06), 13:30 → 18:30 (→ 18), 06:00 → 11:00 (12), 18:00 → 23:00 (00)
        ((-75.2, 40.0, -75.0, 40.2), [0, 6, 12, 18]),
    ],
)
def test_gldas_fit_hours_are_the_steps_the_fit_reads(bbox, hours):
    """The historic GLDAS years hold only these hours: they must be the ones `visir.training` pairs."""
    nature = SimpleNamespace(windows={"M01": region_from_bbox(*bbox).window("M01")})
    assert gldas_fit_hours(nature) == hours


def test_ismn_stations_sit_in_the_region_with_hourly_flagged_records(nature):
    stations = ismn_stations(nature, count=4)
    west, south, east, north = SMALL.bounds_lonlat
    assert len(stations) == 4
    for s in stations:
        assert west < s.lon < east and south < s.lat < north
        assert len(s.times) == 24 * len(nature.days) == len(s.soil_moisture)
        assert (s.flags == "G").mean() > 0.9
        assert 0 < s.soil_moisture.min() and s.soil_moisture.max() < 0.55


def test_ismn_stations_of_a_later_end_reproduce_the_common_days(nature):
    shorter = ismn_stations(NatureRun(SMALL, START, START + timedelta(days=4), seed=7), count=4)
    for short, long in zip(shorter, ismn_stations(nature, count=4), strict=True):
        hours = len(short.times)
        assert (short.lon, short.lat, short.name) == (long.lon, long.lat, long.name)
        assert short.times == long.times[:hours]
        np.testing.assert_array_equal(short.soil_moisture, long.soil_moisture[:hours])
        np.testing.assert_array_equal(short.flags, long.flags[:hours])
