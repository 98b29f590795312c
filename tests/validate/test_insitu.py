"""soilcube.validate.insitu: real ISMN files via the ismn package, synthetic stations, matchups, core."""

import shutil
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pyproj import Transformer

from soilcube.grids import Window
from soilcube.synth.archive import write_ismn
from soilcube.synth.observe import Station
from soilcube.validate.insitu import (
    cell_scores,
    core_cells,
    core_cells_from_shares,
    fao_texture_class,
    matchup,
    read_ismn,
    station_cells,
    stratified_scores,
)

COSMOS = "Data_seperate_files_header_20170810_20180809"
SMOSMANIA_FILE = (
    "SMOSMANIA/SMOSMANIA_SMOSMANIA_Narbonne_sm_0.050000_0.050000_ThetaProbe-ML2X_20070101_20070131.stm"
)


def _flags_and_values(stm_file) -> pd.DataFrame:
    """An independent parse of a header+values file: the value and flag of each hour."""
    table = pd.read_csv(stm_file, sep=r"\s+", skiprows=1, header=None, usecols=[0, 1, 2, 3])
    table.index = pd.to_datetime(table[0] + " " + table[1])
    return table.rename(columns={2: "value", 3: "flag"})[["value", "flag"]]


# --- reading real ISMN downloads ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smosmania(real_data):
    ismn = real_data / "ismn"
    return {
        layout: read_ismn(ismn / layout, good_only=False)
        for layout in ("format_header_values", "format_ceop_sep")
    }


@pytest.fixture(scope="module")
def cosmos(real_data):
    return real_data / "ismn" / COSMOS


def test_both_real_layouts_read_the_same_station(real_data, smosmania):
    header_obs, header_stations = smosmania["format_header_values"]
    ceop_obs, ceop_stations = smosmania["format_ceop_sep"]
    xr.testing.assert_identical(header_obs, ceop_obs)
    pd.testing.assert_frame_equal(header_stations, ceop_stations)

    station = header_stations.loc["SMOSMANIA/Narbonne"]
    assert (station["network"], station["station"]) == ("SMOSMANIA", "Narbonne")
    assert (station["lon"], station["lat"], station["elevation"]) == (2.9567, 43.15, 112.0)
    assert (station["depth_from"], station["depth_to"]) == (0.05, 0.05)
    assert station["instrument"] == "ThetaProbe-ML2X"
    # No static-variables csv beside these samples: no land cover, climate or texture.
    assert station[["landcover", "climate", "soil_texture"]].isna().all()

    # Hourly axis over the whole month; the file skips 30 Jan 14:00 and 15:00 (bare-CR line endings).
    expected = _flags_and_values(real_data / "ismn" / "format_header_values" / SMOSMANIA_FILE)
    assert len(expected) == 741
    series = header_obs.sel(station="SMOSMANIA/Narbonne").to_series()
    assert series.index[0] == pd.Timestamp("2007-01-01 01:00") and series.index[-1] == pd.Timestamp(
        "2007-01-31 23:00"
    )
    assert len(series) == 743 and series.count() == 741
    np.testing.assert_allclose(series.reindex(expected.index), expected["value"])
    assert series.loc["2007-01-30 14:00":"2007-01-30 15:00"].isna().all()


def test_good_only_keeps_only_the_g_flag(real_data, smosmania):
    # The 2007 SMOSMANIA sample carries 'U' and 'D05' flags only, so nothing of it is 'G'.
    obs, stations = read_ismn(real_data / "ismn" / "format_ceop_sep")
    assert list(stations.index) == ["SMOSMANIA/Narbonne"]
    assert obs.sizes["time"] == 743 and int(obs.count()) == 0


def test_reading_writes_nothing_next_to_the_data(real_data, smosmania, cosmos):
    read_ismn(cosmos, depth=(0, 0.3))
    assert not list((real_data / "ismn").rglob("python_metadata"))


def test_cosmos_probes_are_outside_the_default_layer(cosmos):
    with pytest.raises(ValueError, match="no soil-moisture sensor within 0.0–0.05 m"):
        read_ismn(cosmos)


def test_cosmos_with_a_deeper_layer_flags_and_static_metadata(cosmos):
    obs, stations = read_ismn(cosmos, depth=(0, 0.3))
    assert list(obs.station.values) == ["COSMOS/ARM-1", "COSMOS/Barrow-ARM"]
    assert list(stations.index) == list(obs.station.values)
    assert stations["depth_to"].tolist() == [0.19, 0.21]
    assert stations["landcover"].tolist() == [130, 210]  # ESA CCI grassland, shrub or herbaceous cover
    assert stations["climate"].tolist() == ["Cfa", "ET"]
    assert stations["clay_fraction"].tolist() == [23.0, 18.0]
    assert stations["sand_fraction"].tolist() == [36.0, 34.0]
    assert stations["soil_texture"].tolist() == ["medium", "medium"]
    assert (obs.time.to_index().freq or pd.infer_freq(obs.time.to_index())) in ("h", "H")

    all_flags = read_ismn(cosmos, depth=(0, 0.3), good_only=False)[0]
    for name, series in (
        ("ARM-1", obs.sel(station="COSMOS/ARM-1")),
        ("Barrow-ARM", obs.sel(station="COSMOS/Barrow-ARM")),
    ):
        expected = _flags_and_values(next((cosmos / "COSMOS" / name).glob("*.stm")))
        good = expected["flag"] == "G"
        assert int(series.count()) == good.sum()
        values = series.to_series().reindex(expected.index)
        np.testing.assert_allclose(values[good], expected.loc[good, "value"])
        assert values[~good].isna().all()  # D03, D05, 'D03,D05', D08 … are dropped
        unfiltered = all_flags.sel(station=f"COSMOS/{name}").to_series().reindex(expected.index)
        np.testing.assert_allclose(unfiltered, expected["value"])
    assert float(obs.sel(station="COSMOS/ARM-1", time="2017-08-10T00:00")) == 0.141


def test_a_zipped_download_reads_like_the_folder(cosmos, tmp_path):
    archive = shutil.make_archive(str(tmp_path / COSMOS), "zip", root_dir=cosmos)
    zipped_obs, zipped_stations = read_ismn(archive, depth=(0, 0.3))
    obs, stations = read_ismn(cosmos, depth=(0, 0.3))
    xr.testing.assert_identical(zipped_obs, obs)
    pd.testing.assert_frame_equal(zipped_stations, stations)


def test_synthetic_archive_stations(tmp_path):
    times = [datetime(2021, 6, 1) + timedelta(hours=h) for h in range(48)]
    series = np.linspace(0.1, 0.3, 48)
    flags = np.array(["G"] * 48, dtype=object)
    flags[[5, 30]] = "D06"
    flags[40] = "D10"

    def station(name, sand, clay, cover, code):
        return Station(
            network="SOILCUBE", name=name, lon=-97.5, lat=35.0, elevation=350.0, cover=cover, cci_code=code,
            sand=sand, clay=clay, porosity=0.45, times=times, soil_moisture=series, flags=flags,
        )  # fmt: skip

    write_ismn(
        str(tmp_path),
        [station("Site-01", 0.7, 0.1, "grassland", 130), station("Site-02", 0.2, 0.4, "cropland", 10)],
        None,
    )
    obs, stations = read_ismn(tmp_path / "ismn")
    assert list(obs.station.values) == ["SOILCUBE/Site-01", "SOILCUBE/Site-02"]
    assert stations["landcover"].tolist() == [130, 10]
    assert stations["soil_texture"].tolist() == ["coarse", "fine"]
    assert stations["climate"].tolist() == ["Cfa", "Cfa"]
    assert stations["instrument"].tolist() == ["Hydraprobe-II-Sdi-12"] * 2
    values = obs.sel(station="SOILCUBE/Site-01").values
    np.testing.assert_allclose(values[flags == "G"], np.round(series, 4)[flags == "G"])
    assert np.isnan(values[[5, 30, 40]]).all()


def test_fao_texture_classes():
    classes = fao_texture_class([10, 20, 40, 10, np.nan], [70, 70, 20, 50, 50])
    assert classes.iloc[:4].tolist() == ["coarse", "medium", "fine", "medium"]
    assert pd.isna(classes.iloc[4])


# --- matchups ----------------------------------------------------------------------------------------------

WINDOW = Window("M09", 330, 890, 4, 5)  # central Oklahoma, −97° to −96.5°: time-zone band UTC−6
TO_LONLAT = Transformer.from_crs(6933, 4326, always_xy=True)


def _stations(cells, offsets_m=None) -> pd.DataFrame:
    """Stations in the given (row, col) cells of WINDOW, moved by offsets (x, y metres) from the centre."""
    rows, cols = np.array(cells).T
    offsets = np.zeros((len(rows), 2)) if offsets_m is None else np.asarray(offsets_m, dtype=float)
    x, y = WINDOW.grid.xy(WINDOW.row0 + rows, WINDOW.col0 + cols)
    lon, lat = TO_LONLAT.transform(x + offsets[:, 0], y + offsets[:, 1])
    return pd.DataFrame({"lon": lon, "lat": lat}, index=[f"NET/S{i}" for i in range(len(rows))])


def _hourly(stations: pd.DataFrame, values, start="2021-06-01", days=4) -> xr.DataArray:
    time = pd.date_range(start, periods=24 * days, freq="h")
    data = np.broadcast_to(np.asarray(values(time), dtype=float), (len(stations), len(time)))
    return xr.DataArray(
        data.copy(), dims=("station", "time"), coords={"station": stations.index, "time": time}
    )


def _product(times, values=None) -> xr.DataArray:
    rows, cols = np.meshgrid(np.arange(WINDOW.nrows), np.arange(WINDOW.ncols), indexing="ij")
    field = (100 * rows + cols) if values is None else values
    data = np.broadcast_to(field, (len(times), *WINDOW.shape)).astype(float)
    return xr.DataArray(data, dims=("time", "y", "x"), coords={"time": times, "y": WINDOW.y, "x": WINDOW.x})


def test_station_cells_nearest_cell_and_outside():
    stations = _stations([(1, 2), (3, 4), (0, 0)], offsets_m=[(4000, -4000), (-4400, 4400), (0, 0)])
    outside = pd.DataFrame({"lon": [-80.0], "lat": [35.0]}, index=["NET/far"])
    cells = station_cells(pd.concat([stations, outside]), WINDOW)
    assert cells.to_dict("index") == {
        "NET/S0": {"row": 1, "col": 2},
        "NET/S1": {"row": 3, "col": 4},
        "NET/S2": {"row": 0, "col": 0},
    }


def test_am_overpass_takes_exactly_05_to_07_local():
    stations = _stations([(1, 1)])
    local_hour = lambda t: (t - pd.Timedelta(hours=6)).hour  # noqa: E731  (UTC−6)
    obs = _hourly(stations, lambda t: local_hour(t) ** 2)
    days = pd.date_range("2021-06-01", periods=3, freq="D")
    for overpass, hours in (("AM", (5, 6, 7)), ("PM", (17, 18, 19))):
        m = matchup(obs, stations, _product(days), window=WINDOW, kind="overpass", overpass=overpass)
        # the squares of 05, 06 and 07 average to a value no other run of whole hours gives
        np.testing.assert_allclose(m["insitu"].values, np.mean(np.square(hours)))
        np.testing.assert_array_equal(m["product"].values, 101.0)


def test_overpass_uses_the_local_date_and_an_explicit_offset():
    stations = _stations([(2, 3)])
    obs = _hourly(stations, lambda t: (t - pd.Timestamp("2021-06-01")) / pd.Timedelta(hours=1))
    days = pd.date_range("2021-06-01", periods=3, freq="D")
    m = matchup(obs, stations, _product(days), window=WINDOW, kind="overpass", utc_offset_hours=-6)
    # 05–07 local on day d is 11–13 UTC: hours 11, 12, 13 after the start, +24 per day
    np.testing.assert_allclose(m["insitu"].values[0], [12, 36, 60])
    east = matchup(obs, stations, _product(days), window=WINDOW, kind="overpass", utc_offset_hours=9)
    # 05–07 local at UTC+9 is 20–22 UTC of the day before: day 1 has no such hours in the record
    np.testing.assert_allclose(east["insitu"].values[0], [np.nan, 21, 45])


def test_three_hourly_takes_the_two_whole_hours_around_the_scene():
    stations = _stations([(0, 4)])
    obs = _hourly(stations, lambda t: (t - pd.Timestamp("2021-06-01")) / pd.Timedelta(hours=1))
    scenes = pd.DatetimeIndex(
        ["2021-06-01 01:30", "2021-06-01 04:30", "2021-06-02 22:30", "2021-06-03 03:00"]
    )
    m = matchup(obs, stations, _product(scenes), window=WINDOW, kind="3hourly")
    np.testing.assert_allclose(m["insitu"].values[0], [1.5, 4.5, 46.5, 51.0])
    assert (m["time"].values == scenes.values).all()


def test_three_hourly_with_one_of_the_two_hours_missing():
    stations = _stations([(0, 4)])
    obs = _hourly(stations, lambda t: (t - pd.Timestamp("2021-06-01")) / pd.Timedelta(hours=1))
    obs.loc[{"time": "2021-06-01T05:00"}] = np.nan
    m = matchup(
        obs, stations, _product(pd.DatetimeIndex(["2021-06-01 04:30"])), window=WINDOW, kind="3hourly"
    )
    assert m["insitu"].item() == 4.0


def test_daily_means_and_stations_in_one_cell_are_averaged():
    stations = _stations([(1, 1), (1, 1), (3, 2)], offsets_m=[(-3000, 0), (3000, 2000), (0, 0)])
    obs = _hourly(stations, lambda t: t.day + 0.0 * t.hour)
    obs[0] = obs[0] + 0.1
    obs[1] = obs[1] + 0.3
    obs[1, 30] = np.nan  # a gap in one station leaves the other's hour standing
    days = pd.date_range("2021-06-01", periods=4, freq="D")
    m = matchup(obs, stations, _product(days), window=WINDOW, kind="daily")
    assert m.sizes == {"cell": 2, "time": 4}
    assert m["n_stations"].values.tolist() == [2, 1]
    assert m["stations"].values.tolist() == ["NET/S0;NET/S1", "NET/S2"]
    assert (m["row"].values.tolist(), m["col"].values.tolist()) == ([1, 3], [1, 2])
    np.testing.assert_allclose(m["x"], WINDOW.x[[1, 2]])
    np.testing.assert_allclose(m["y"], WINDOW.y[[1, 3]])
    np.testing.assert_allclose(m["insitu"].sel(cell=m.cell[0]), [1.2, 2.2 - 0.1 / 24, 3.2, 4.2])
    np.testing.assert_allclose(m["insitu"].sel(cell=m.cell[1]), [1, 2, 3, 4])
    np.testing.assert_array_equal(m["product"].values, [[101] * 4, [302] * 4])


def test_daily_product_time_stamps_are_read_as_dates():
    stations = _stations([(2, 2)])
    obs = _hourly(stations, lambda t: t.day + 0.0 * t.hour)
    stamps = pd.DatetimeIndex(["2021-06-02 06:00", "2021-06-03 18:00"])
    m = matchup(obs, stations, _product(stamps), window=WINDOW, kind="daily")
    np.testing.assert_allclose(m["insitu"].values[0], [2, 3])
    assert (m["time"].values == stamps.values).all()


def test_matchup_carries_cell_metadata_and_rejects_bad_input():
    stations = _stations([(1, 1), (1, 1), (2, 2)]).assign(
        landcover=[10.0, 10.0, 130.0],
        climate=["Cfa", "Cfa", "BSk"],
        soil_texture=["fine", "medium", "coarse"],
    )
    obs = _hourly(stations, lambda t: 0.2 + 0.0 * t.hour)
    days = pd.date_range("2021-06-01", periods=2, freq="D")
    m = matchup(obs, stations, _product(days), window=WINDOW, kind="daily")
    assert m["landcover"].values.tolist() == [10.0, 130.0]
    assert m["climate"].values.tolist() == ["Cfa", "BSk"]
    assert m["soil_texture"].values[1] == "coarse"
    with pytest.raises(ValueError, match="kind"):
        matchup(obs, stations, _product(days), window=WINDOW, kind="hourly")
    with pytest.raises(ValueError, match="x/y"):
        matchup(obs, stations, _product(days).isel(x=slice(1, None)), window=WINDOW, kind="daily")


# --- core / extra cells, stratified scores ------------------------------------------------------------------


def test_core_cells_by_land_cover_share():
    coarse = Window("M09", 330, 890, 2, 2)
    fine = Window("M01", 330 * 9, 890 * 9, 18, 18)
    landcover = np.full(fine.shape, 10.0)
    landcover[0, :9] = 20  # cell (0, 0): 72 of 81 pixels are class 10 → 0.889
    landcover[9:11, 9:18] = 20
    landcover[11, 9:11] = 20  # cell (1, 1): 61 of 81 → 0.753
    landcover[9, 0] = np.nan  # cell (1, 0): 80 pixels with a class, all 10 → 1.0
    rows, cols = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 1])
    lon, lat = coarse.grid.lonlat(coarse.row0 + rows, coarse.col0 + cols)
    stations = pd.DataFrame(
        {"lon": lon, "lat": lat, "landcover": [10.0, 10.0, 10.0, 20.0]}, index=list("abcd")
    )
    outside = pd.DataFrame({"lon": [-80.0], "lat": [35.0], "landcover": [10.0]}, index=["far"])
    unknown = stations.iloc[:1].assign(landcover=np.nan).rename(index={"a": "unknown"})
    stations = pd.concat([stations, outside, unknown])
    landcover = xr.DataArray(landcover, dims=("y", "x"))
    result = core_cells(landcover, stations, fine_window=fine, coarse_window=coarse)
    np.testing.assert_allclose(result["lc_share"], [72 / 81, 61 / 81, 1.0, 0.0, np.nan, np.nan])
    assert result["core"].tolist() == [True, False, True, False, False, False]
    assert result.loc["b", ["coarse_row", "coarse_col"]].tolist() == [1, 1]
    assert result.loc["far", ["coarse_row", "coarse_col"]].tolist() == [-1, -1]
    lenient = core_cells(landcover, stations, fine_window=fine, coarse_window=coarse, threshold=0.75)
    assert lenient["core"].tolist() == [True, True, True, False, False, False]


CODES = [10.0, 20.0, 60.0]


@settings(max_examples=40, deadline=None)
@given(
    landcover=arrays(np.float64, (18, 18), elements=st.sampled_from([*CODES, np.nan])),
    station_codes=st.lists(st.sampled_from([*CODES, 130.0, np.nan]), min_size=4, max_size=4),
    threshold=st.floats(0.3, 1.0),
)
def test_core_cells_from_shares_agree_with_those_from_a_fine_map(landcover, station_codes, threshold):
    coarse = Window("M09", 330, 890, 2, 2)
    fine = Window("M01", 330 * 9, 890 * 9, 18, 18)
    rows, cols = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 1])
    lon, lat = coarse.grid.lonlat(coarse.row0 + rows, coarse.col0 + cols)
    stations = pd.concat([
        pd.DataFrame({"lon": lon, "lat": lat, "landcover": station_codes}, index=list("abcd")),
        pd.DataFrame({"lon": [-80.0], "lat": [35.0], "landcover": [10.0]}, index=["far"]),
    ])
    blocks = landcover.reshape(2, 9, 2, 9)
    with np.errstate(invalid="ignore"):  # a cell without any class has no shares
        shares = np.stack([(blocks == code).sum(axis=(1, 3)) for code in CODES]) / (~np.isnan(blocks)).sum(
            axis=(1, 3))
    from_map = core_cells(xr.DataArray(landcover, dims=("y", "x")), stations, fine_window=fine,
                          coarse_window=coarse, threshold=threshold)
    shares = xr.DataArray(shares, dims=("code", "y", "x"), coords={"code": CODES})
    from_shares = core_cells_from_shares(shares, stations, window=coarse, threshold=threshold)
    pd.testing.assert_frame_equal(from_shares, from_map, check_dtype=False)


def test_stratified_scores_per_land_cover_and_core():
    rng = np.random.default_rng(3)
    n_cells, n_time = 6, 40
    insitu = 0.25 + 0.05 * rng.standard_normal((n_cells, n_time))
    bias = np.array([0.01, 0.01, 0.01, -0.03, -0.03, 0.0])[:, None]
    product = insitu + bias
    product[5, :35] = np.nan  # one cell below min_count
    m = xr.Dataset(
        {"product": (("cell", "time"), product), "insitu": (("cell", "time"), insitu)},
        coords={
            "cell": np.arange(n_cells),
            "landcover": ("cell", [10.0, 10.0, 10.0, 130.0, 130.0, 130.0]),
            "core": ("cell", [True, False, True, True, False, True]),
        },
    )
    strata = stratified_scores(m, "landcover")
    assert list(strata.index) == [10.0, 130.0]
    np.testing.assert_allclose(strata["bias"], [0.01, -0.03])
    np.testing.assert_allclose(strata["ubRMSE"], [0, 0], atol=1e-12)
    np.testing.assert_allclose(strata["R"], [1, 1])
    assert strata["n_cells"].tolist() == [3, 2]
    assert strata["n"].tolist() == [120, 85]
    by_core = stratified_scores(m, "core")
    np.testing.assert_allclose(by_core.loc[True, "bias"], (0.01 + 0.01 - 0.03) / 3)
    per_cell = cell_scores(m)
    assert len(per_cell) == n_cells and per_cell["landcover"].tolist() == m["landcover"].values.tolist()
    with pytest.raises(ValueError, match="climate"):
        stratified_scores(m, "climate")


def test_a_missing_or_empty_ismn_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no ISMN download at {tmp_path / 'none'}"):
        read_ismn(tmp_path / "none")
    with pytest.raises(ValueError, match=rf"no ISMN station files \(\*.stm\) under {tmp_path}"):
        read_ismn(tmp_path)
