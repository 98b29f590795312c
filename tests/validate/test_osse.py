"""soilcube.validate.osse with the 3-hourly products: SMAP L4 bicubic from a real (small) synthetic archive
and a fused_1km_3h cube in the contract layout written through soilcube.store from the truth plus a known
perturbation, scored end to end (library and CLI) with exact expectations."""

import json
from datetime import date

import h5py
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy.special import gammaln
from typer.testing import CliRunner

from soilcube import refs, store
from soilcube.access import open_cube
from soilcube.cli import app
from soilcube.grids import Region, block_mean
from soilcube.resample import imresize
from soilcube.synth.archive import build_archive
from soilcube.validate.metrics import score
from soilcube.validate.osse import (
    SCENES_PER_DAY,
    campaign_scores,
    common_valid,
    cube_window,
    daily_mean,
    m09_window,
    smap_l4_bicubic,
    validate_store,
)

TINY = Region("tiny", 84, 220, 2, 2)  # 72 km × 72 km: 72 × 72 cells at 1 km, 8 × 8 at 9 km
START, END = date(2016, 6, 1), date(2016, 6, 4)
N_SCENES = 4 * SCENES_PER_DAY
FUSED_TIMES = pd.date_range("2016-06-01 01:30", "2016-06-30 22:30", freq="3h")  # the template: a month


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """Four days of SMAP L4 granules (referenced), the truth, the ISMN stations and the campaign flights."""
    root = tmp_path_factory.mktemp("archive")
    build_archive(
        TINY,
        START,
        END,
        root.as_uri(),
        seed=5,
        gldas_years=0,
        products=["smap_l4", "truth", "ismn", "campaign"],
        progress=False,
        workers=2,
    )
    refs.build_references(root.as_uri(), ["smap_l4"], progress=False)
    return root


@pytest.fixture(scope="module")
def truth_3h(archive) -> xr.DataArray:
    return xr.open_zarr((archive / "truth.zarr").as_uri(), group="M01_3h", consolidated=False)["sm"].load()


def _write_fused(store_url: str, sm: xr.DataArray) -> None:
    """A fused_1km_3h cube as the architecture lays it out: (time, y, x) sm, qa and per-slice status."""
    store.create_cube(
        store_url,
        "fused_1km_3h",
        cube_window(sm, "M01"),
        FUSED_TIMES,
        variables={"sm": np.float32, "qa": np.uint8},
        status=True,
    )
    slices = xr.Dataset({"sm": sm.astype(np.float32), "qa": sm.isnull().astype(np.uint8)})
    store.write_slices(
        store_url,
        "fused_1km_3h",
        slices,
        provenance={"parameters": {"test": True}},
        message="fused test slices",
        status="final",
    )


def _validate(archive, tmp_path, store_url, *, with_archive=True, insitu=False, min_count=3) -> dict:
    return validate_store(
        store_url,
        tmp_path / "report",
        truth_url=(archive / "truth.zarr").as_uri(),
        archive_url=archive.as_uri() if with_archive else None,
        insitu_dir=archive / "ismn" if insitu else None,
        min_count=min_count,
    )


def _expected_chi(k: int) -> float:
    """E[χ_k]: the mean of sqrt of a χ² variable with k degrees of freedom."""
    return float(np.sqrt(2) * np.exp(gammaln((k + 1) / 2) - gammaln(k / 2)))


def test_daily_mean_takes_complete_days_only():
    times = pd.date_range("2016-06-01 01:30", periods=2 * SCENES_PER_DAY, freq="3h")
    values = np.arange(2.0 * SCENES_PER_DAY)[:, None, None] * np.ones((1, 1, 2))
    values[3, 0, 1] = np.nan  # day 1 of pixel (0, 1) is incomplete
    field = xr.DataArray(values, dims=("time", "y", "x"), coords={"time": times})
    means = daily_mean(field)
    assert list(means["time"].values) == list(pd.to_datetime(["2016-06-01", "2016-06-02"]).values)
    np.testing.assert_array_equal(means.isel(y=0, x=0).values, [3.5, 11.5])
    assert np.isnan(means.isel(time=0, y=0, x=1)) and float(means.isel(time=1, y=0, x=1)) == 11.5


def test_smap_l4_bicubic_is_imresize_of_the_granules(archive, truth_3h):
    window = cube_window(truth_3h, "M01")
    field = smap_l4_bicubic(archive.as_uri(), window, truth_3h.time.values[0], truth_3h.time.values[-1])
    np.testing.assert_array_equal(field["time"].values, truth_3h["time"].values)
    np.testing.assert_array_equal(field["x"].values, window.x)
    # The same scenes read straight from the HDF5 files, fills to NaN, then imresize ×9.
    coarse = m09_window(window)
    rows, cols = coarse.slices
    scenes = []
    for t in pd.DatetimeIndex(truth_3h["time"].values):
        (granule,) = (archive / "smap_l4").glob(f"SMAP_L4_SM_gph_{t:%Y%m%dT%H%M%S}_*.h5")
        with h5py.File(granule) as h5:
            values = h5["Geophysical_Data/sm_surface"][rows, cols].astype(np.float64)
        scenes.append(np.where(values == -9999.0, np.nan, values))
    expected = imresize(np.stack(scenes).astype(np.float32), 9)
    np.testing.assert_allclose(field.values, expected, rtol=0, atol=1e-7)


def test_zero_perturbation_scores_perfectly(archive, truth_3h, tmp_path):
    store_url = (tmp_path / "cubes").as_uri()
    _write_fused(store_url, truth_3h)
    scores = _validate(archive, tmp_path, store_url, with_archive=False)
    assert list(scores) == ["fused_3h", "fused_daily"]
    cells = truth_3h.sizes["y"] * truth_3h.sizes["x"]
    assert scores["fused_3h"]["n"] == N_SCENES * cells
    assert scores["fused_daily"]["n"] == 4 * cells
    for key in ("fused_3h", "fused_daily"):
        values = scores[key]
        assert values["R"] == pytest.approx(1, abs=1e-9), key
        assert values["KGE"] == pytest.approx(1, abs=1e-5), key  # α of float32 values over 4 days
        # float32 storage of the truth's 1e-4-quantised values: zero up to float32 rounding
        for metric in ("bias", "RMSE", "ubRMSE", "MAE"):
            assert abs(values[metric]) < 1e-7, (key, metric)
        assert values["SSD"] == pytest.approx(values["SSD_ref"], abs=1e-7)


def test_known_noise_gives_its_ubrmse_bias_and_rmse(archive, truth_3h, tmp_path):
    sigma, offset = 0.02, 0.01
    noise = np.random.default_rng(4).normal(0.0, sigma, truth_3h.shape)
    store_url = (tmp_path / "cubes").as_uri()
    _write_fused(store_url, truth_3h + offset + noise)
    scores = _validate(archive, tmp_path, store_url, with_archive=False)
    fused, daily = scores["fused_3h"], scores["fused_daily"]
    # Per pixel, ubRMSE² = σ²·χ²(n−1)/n for iid noise over n samples: its mean over pixels is σ·E[χ]/√n.
    assert fused["ubRMSE"] == pytest.approx(sigma * _expected_chi(N_SCENES - 1) / np.sqrt(N_SCENES), rel=0.01)
    assert fused["bias"] == pytest.approx(offset, abs=4 * sigma / np.sqrt(fused["n"]))
    assert fused["RMSE"] == pytest.approx(np.hypot(offset, sigma), rel=0.02)
    assert fused["MAE"] > offset
    # A daily mean of 8 scenes has noise σ/√8; 4 days per pixel.
    daily_sigma = sigma / np.sqrt(SCENES_PER_DAY)
    assert daily["ubRMSE"] == pytest.approx(daily_sigma * _expected_chi(3) / 2, rel=0.02)
    assert daily["bias"] == pytest.approx(offset, abs=4 * daily_sigma / np.sqrt(daily["n"]))
    assert 0 < fused["R"] < daily["R"] < 1  # averaging out noise raises R


def _write_downscaled(store_url: str, archive, holes: np.ndarray) -> xr.DataArray:
    """A downscaled_1km cube in its layout from the daily truth; `holes` (days, 2, y, x) become NaN."""
    truth = xr.open_zarr((archive / "truth.zarr").as_uri(), group="M01", consolidated=False)["sm"].load()
    days = pd.date_range("2016-06-01", "2016-06-30", freq="D")
    variables = {"sm": np.float32, "sm_additive": np.float32, "smap_9km": np.float32, "qa": np.uint8}
    store.create_cube(
        store_url,
        "downscaled_1km",
        cube_window(truth, "M01"),
        days,
        extra_dims={"overpass": ["AM", "PM"]},
        variables=variables,
        status=True,
    )
    sm = truth.where(~holes) + 0.01
    blocky = truth.copy(data=np.repeat(np.repeat(block_mean(truth.values, 9), 9, axis=-2), 9, axis=-1))
    slices = xr.Dataset(
        {"sm": sm, "sm_additive": sm - 0.02, "smap_9km": blocky, "qa": sm.isnull().astype(np.uint8)}
    )
    store.write_slices(store_url, "downscaled_1km", slices, provenance={}, message="test", status="final")
    return truth


def test_campaign_flights_score_the_am_slice_of_their_day_on_their_box(archive, tmp_path):
    store_url = (tmp_path / "cubes").as_uri()
    holes = np.random.default_rng(4).random((4, 2, 72, 72)) < 0.3
    _write_downscaled(store_url, archive, holes)
    cube = open_cube(f"{store_url}/downscaled_1km")
    table = campaign_scores(cube, archive.as_uri(), min_count=3)
    flights = sorted((archive / "campaign").glob("*.nc"))
    assert len(flights) == 4 and len(table) == 4 * 3
    for path in flights:  # read with h5py; the product from the cube by position in the window
        with h5py.File(path, "r") as f:
            field, x, y = f["sm"][0], f["x"][:], f["y"][:]
            stamp = path.stem.rsplit("_", 1)[-1]  # e.g. 20160601T1629: 10:00 local over Oklahoma, same day
        day = np.datetime64(f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}", "ns")
        rows, cols = ((np.abs(cube[axis].values[:, None] - values[None, :]) < 1).argmax(0)
                      for axis, values in (("y", y), ("x", x)))
        slices = cube.sel(time=day, overpass="AM").load()
        products = {key: slices[variable].values[np.ix_(rows, cols)]
                    for key, variable in (("smap_9km", "smap_9km"), ("visir_1km_additive", "sm_additive"),
                                          ("visir_1km_hybrid", "sm"))}
        valid = np.isfinite(field) & np.all([np.isfinite(v) for v in products.values()], axis=0)
        for key, values in products.items():
            row = table[(table["flight"] == f"{str(day)[:10]}T{stamp[9:11]}:{stamp[11:13]}")
                        & (table["product"] == key)].iloc[0]
            p, o = values[valid], field[valid]
            assert row["n"] == valid.sum() > 100
            assert row["R"] == pytest.approx(np.corrcoef(p, o)[0, 1], rel=1e-6)
            assert row["RMSE"] == pytest.approx(np.sqrt(np.mean((p - o) ** 2)), rel=1e-6)
            assert row["bias"] == pytest.approx(np.mean(p) - np.mean(o), rel=1e-5, abs=1e-7)


def test_common_samples_within_each_group_and_not_across(archive, truth_3h, tmp_path):
    rng = np.random.default_rng(9)
    gaps = rng.random(truth_3h.shape) < 0.2  # fused gaps: 20 % of the 3-hourly samples
    store_url = (tmp_path / "cubes").as_uri()
    _write_fused(store_url, truth_3h.where(~gaps))
    holes = rng.random((4, 2, *truth_3h.shape[1:])) < 0.3
    daily_truth = _write_downscaled(store_url, archive, holes)

    scores = _validate(archive, tmp_path, store_url)
    assert list(scores) == [
        "smap_9km",
        "smap_l4_bicubic",
        "visir_1km_additive",
        "visir_1km_hybrid",
        "fused_3h",
        "fused_daily",
    ]
    # 3-hourly: SMAP L4 bicubic is complete here, so both are scored where the fused cube is valid.
    assert scores["smap_l4_bicubic"]["n"] == scores["fused_3h"]["n"] == int((~gaps).sum())
    # Daily AM/PM: the downscaled holes only, whatever the 3-hourly products miss.
    daily_valid = int((~holes & daily_truth.notnull().values).sum())
    assert scores["smap_9km"]["n"] == scores["visir_1km_hybrid"]["n"] == daily_valid
    # Daily means: only pixel-days with all 8 fused scenes.
    complete_days = (~gaps).reshape(4, SCENES_PER_DAY, *gaps.shape[1:]).all(axis=1)
    assert scores["fused_daily"]["n"] == int(complete_days.sum())
    # The hybrid is the daily truth + 0.01 on its samples.
    assert scores["visir_1km_hybrid"]["bias"] == pytest.approx(0.01, abs=1e-6)
    assert scores["visir_1km_hybrid"]["ubRMSE"] == pytest.approx(0, abs=1e-6)

    alone = _validate(archive, tmp_path / "alone", (tmp_path / "empty").as_uri())
    assert list(alone) == ["smap_l4_bicubic"]
    assert alone["smap_l4_bicubic"]["n"] == truth_3h.size  # no fused cube: every scene, every pixel
    # A smooth interpolation: no 9 km steps, unlike the blocky 9 km field (index undefined there).
    assert 0.5 < alone["smap_l4_bicubic"]["artifact_index"] < 1.5
    # Alone it is scored on every sample: its per-pixel scores against the truth, averaged.
    field = smap_l4_bicubic(archive.as_uri(), cube_window(truth_3h, "M01"), *truth_3h.time.values[[0, -1]])
    direct = score(field, truth_3h, dim="time", min_count=3)
    for metric in ("R", "bias", "ubRMSE", "KGE"):
        assert alone["smap_l4_bicubic"][metric] == pytest.approx(float(direct[metric].mean()), rel=1e-9)
    assert 0.005 < alone["smap_l4_bicubic"]["ubRMSE"] < 0.03  # L4's error: σ 0.015, AR(1)
    assert scores["smap_9km"]["artifact_index"] is None


def test_common_valid_is_the_intersection():
    truth = xr.DataArray([[1.0, np.nan, 3.0, 4.0]], dims=("time", "x"))
    a = xr.DataArray([[1.0, 2.0, np.nan, 4.0]], dims=("time", "x"))
    b = xr.DataArray([[np.nan, 2.0, 3.0, 4.0]], dims=("time", "x"))
    assert common_valid({"a": a, "b": b}, truth).values.tolist() == [[False, False, False, True]]


def test_cli_validate_with_archive_fused_cube_and_stations(archive, truth_3h, tmp_path):
    store_url = (tmp_path / "cubes").as_uri()
    noise = np.random.default_rng(2).normal(0.0, 0.01, truth_3h.shape)
    _write_fused(store_url, truth_3h + noise)
    out, json_file = tmp_path / "report", tmp_path / "scores.json"
    result = CliRunner().invoke(
        app,
        [
            "validate",
            "--store",
            store_url,
            "--truth",
            (archive / "truth.zarr").as_uri(),
            "--archive",
            archive.as_uri(),
            "--insitu",
            str(archive / "ismn"),
            "--out",
            str(out),
            "--json",
            str(json_file),
        ],
    )
    assert result.exit_code == 0, result.output
    scores = json.loads(json_file.read_text())
    assert list(scores) == ["smap_l4_bicubic", "fused_3h", "fused_daily"]
    for key in ("smap_l4_bicubic", "fused_3h"):
        assert scores[key]["n"] == truth_3h.size and scores[key]["ubRMSE"] > 0, key
    assert scores["fused_3h"]["ubRMSE"] < scores["smap_l4_bicubic"]["ubRMSE"]
    # 4 days < the default 10 samples per pixel: temporal daily scores are undefined, SSD is not.
    assert scores["fused_daily"]["ubRMSE"] is None and scores["fused_daily"]["SSD"] > 0
    report = (out / "report.md").read_text()
    for name in (
        "smap_l4_bicubic",
        "fused_3h",
        "fused_daily",
        "maps_1_km_3_hourly.png",
        "maps_1_km_daily_mean.png",
    ):
        assert name in report, name
    for png in (
        "maps_1_km_3_hourly.png",
        "maps_1_km_daily_mean.png",
        "scatter_density.png",
        "timeseries_fused_3h.png",
    ):
        assert (out / png).read_bytes()[:4] == b"\x89PNG", png
    for table in (
        "in_situ__fused_1_km__3_hourly__per_cell.csv",
        "in_situ__fused_1_km__daily_means__per_cell.csv",
        "in_situ__smap_l4_bicubic_1_km__3_hourly__per_cell.csv",
        "bias_by_soil_moisture_range__fused_3h.csv",
    ):
        assert (out / table).is_file(), table
    cells = pd.read_csv(out / "in_situ__fused_1_km__3_hourly__per_cell.csv")
    assert len(cells) > 0 and (cells["n"] > 0).all() and (cells["n"] <= N_SCENES).all()
    daily_cells = pd.read_csv(out / "in_situ__fused_1_km__daily_means__per_cell.csv")
    assert len(daily_cells) > 0 and (daily_cells["n"] <= 4).all() and (daily_cells["n"] > 0).all()


def test_stations_are_scored_by_core_and_extra_cells_from_the_truth_s_land_cover_shares(archive, truth_3h,
                                                                                          tmp_path):
    from soilcube.validate.insitu import CORE_SHARE, read_ismn

    store_url = (tmp_path / "cubes").as_uri()
    _write_fused(store_url, truth_3h)
    _validate(archive, tmp_path, store_url, insitu=True)
    report = tmp_path / "report"
    cells = pd.read_csv(report / "in_situ__fused_1_km__3_hourly__per_cell.csv")
    by_core = pd.read_csv(report / "in_situ__fused_1_km__3_hourly__by_core.csv", index_col="core")

    # expected: the share of the station's own class (its ISMN land-cover code) in the truth's 1 km cell
    static = xr.open_zarr((archive / "truth.zarr").as_uri(), group="static", consolidated=False)
    window = cube_window(truth_3h, "M01")
    _, stations = read_ismn(archive / "ismn")
    rows, cols = window.grid.rowcol(stations["lon"].to_numpy(), stations["lat"].to_numpy())
    rows, cols = rows - window.row0, cols - window.col0
    classes = [static["cci_code"].values.tolist().index(code) for code in stations["landcover"]]
    share = static["cover_fraction"].values[classes, rows, cols]
    expected = pd.Series(np.where(share >= CORE_SHARE, "core", "extra"), index=rows * window.ncols + cols)
    assert expected.groupby(level=0).nunique().max() == 1  # (stations sharing a cell share its label)
    expected = expected.groupby(level=0).first()
    assert set(cells["cell"]) == set(expected.index)
    assert cells.set_index("cell")["core"].sort_index().tolist() == expected.sort_index().tolist()
    assert set(expected) == {"core", "extra"}  # both kinds among this archive's stations
    assert by_core["n_cells"].to_dict() == expected.value_counts().to_dict()
    np.testing.assert_allclose(by_core.loc["extra", "ubRMSE"],
                               cells.loc[cells["core"] == "extra", "ubRMSE"].mean())
