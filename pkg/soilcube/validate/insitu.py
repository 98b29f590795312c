"""In-situ validation: ISMN stations, matchups with gridded products, core/extra cells, stratified scores.

Reading goes through the ``ismn`` package (TU Wien), which understands both real ISMN station-file layouts
("header + values" and "CEOP separate files"), zips and static-variable csvs (input-formats.md §6). The rest
is pure xarray/pandas: a station's hourly record is matched to the grid cell that holds it, stations sharing a
cell are averaged, and the time sampling follows the product:

- ``overpass`` (daily AM/PM products, SMAP 06:00/18:00 local): the mean of the hourly observations from
  05:00 to 07:00 local time (17:00–19:00 for PM), both ends included, on the product's date;
- ``3hourly`` (SMAP L4 scenes at hh:30 UTC): the mean of the two whole hours around the scene time
  (04:30 → 04:00 and 05:00 UTC); a scene on a whole hour takes that hour alone;
- ``daily``: the mean of all hourly observations of the UTC day (daily products are means of UTC scenes).
"""

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from ismn.interface import ISMN_Interface

from soilcube.grids import Window, parent_index
from soilcube.validate.metrics import METRICS, score

GOOD_FLAG = "G"  # ISMN quality flag of a good value; C01–C03 (implausible) and D01–D10 (dubious) are not
KINDS = ("overpass", "3hourly", "daily")
OVERPASS_LOCAL_HOURS = {"AM": (5, 7), "PM": (17, 19)}
# Static station metadata that a matchup cell inherits (the most common value among its stations).
CELL_METADATA = ("landcover", "climate", "soil_texture", "core")
# A station's cell is "core" where its own land-cover class covers at least this share of the cell.
CORE_SHARE = 0.82


def read_ismn(
    path, *, depth: tuple[float, float] = (0.0, 0.05), good_only: bool = True
) -> tuple[xr.DataArray, pd.DataFrame]:
    """Soil moisture of every ISMN station under ``path`` (a download folder or zip) in the ``depth`` layer.

    A sensor is used when its whole depth range lies in ``depth`` (metres), so the default 0–5 cm layer
    leaves out e.g. cosmic-ray probes (0–0.19 m). Several sensors of one station in the layer are averaged,
    as are sub-hourly values within a UTC hour (labelled with the hour's start). With ``good_only`` only
    values flagged ``G`` are kept (the ``ismn`` package's own notion of good); other values become NaN.

    Returns ``obs`` (station, time), hourly UTC in m³/m³ on a complete hourly axis, and ``stations``, one
    row per station indexed like ``obs.station`` ("NETWORK/STATION"): network, station, lon, lat,
    elevation, depth_from, depth_to (m, of the layer its sensors span), instrument, and the static metadata
    the download carries: landcover (ESA CCI code, the latest of 2010/2005/2000), climate (Köppen-Geiger),
    clay/sand/silt_fraction (% weight, topsoil) and soil_texture (FAO class, see ``fao_texture_class``).
    """
    with tempfile.TemporaryDirectory(prefix="soilcube-ismn-") as scratch:
        scratch = Path(scratch)
        data_path = Path(path)
        if not data_path.exists():
            raise FileNotFoundError(f"no ISMN download at {path}")
        if data_path.is_dir():
            data_path = _station_tree(data_path, scratch / "data")
        # The metadata csv and log go to the scratch folder, never next to the (possibly read-only) data;
        # the package chats on stdout while it collects them.
        with contextlib.redirect_stdout(io.StringIO()):
            ismn = ISMN_Interface(
                data_path, meta_path=scratch / "meta", temp_root=scratch / "extract", parallel=False
            )
        ids = ismn.get_dataset_ids("soil_moisture", min_depth=depth[0], max_depth=depth[1])
        if not ids:
            raise ValueError(f"no soil-moisture sensor within {depth[0]}–{depth[1]} m under {path}")
        sensors = _sensor_table(ismn.metadata.loc[ids])
        records = pd.concat(
            [
                _sensor_record(ismn.read_ts(i), sensor_id, good_only)
                for i, sensor_id in zip(ids, sensors["id"], strict=True)
            ]
        )

    hourly = records.groupby(["station", records["time"].dt.floor("h")])["soil_moisture"].mean()
    obs = hourly.to_xarray()
    obs = obs.reindex(time=pd.date_range(obs.time.values.min(), obs.time.values.max(), freq="h"))
    obs.attrs = {"units": "m3 m-3", "long_name": f"in-situ soil moisture {depth[0]}–{depth[1]} m"}
    stations = sensors.groupby("id").agg(
        network=("network", "first"),
        station=("station", "first"),
        lon=("lon", "first"),
        lat=("lat", "first"),
        elevation=("elevation", "first"),
        depth_from=("depth_from", "min"),
        depth_to=("depth_to", "max"),
        instrument=("instrument", lambda s: ", ".join(sorted(set(s)))),
        landcover=("landcover", "first"),
        climate=("climate", "first"),
        clay_fraction=("clay_fraction", "first"),
        sand_fraction=("sand_fraction", "first"),
        silt_fraction=("silt_fraction", "first"),
    )
    stations["soil_texture"] = fao_texture_class(stations["clay_fraction"], stations["sand_fraction"])
    stations.index.name = "station_id"
    return obs.transpose("station", "time"), stations.loc[obs.station.values]


def _station_tree(folder: Path, into: Path) -> Path:
    """Link the ISMN files under ``folder`` into the <NETWORK>/<STATION>/<file> tree the package scans.

    Real downloads already have that tree, but single-station samples (like the package's own test data)
    put the files straight into the network folder, and there ``ISMN_Interface`` finds no station and
    fails. Network and station come from the file name, exactly where the package reads them."""
    stations = list(folder.rglob("*.stm"))
    if not stations:
        raise ValueError(f"no ISMN station files (*.stm) under {folder}")
    for file in [*stations, *folder.rglob("*_static_variables.csv")]:
        _, network, station = file.name.split("_")[:3]
        link = into / network / station / file.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(file.resolve())
    return into


def _sensor_table(metadata: pd.DataFrame) -> pd.DataFrame:
    """One row per sensor from the package's metadata table (columns (variable, key))."""

    def value(name: str) -> pd.Series:
        return metadata[(name, "val")]

    landcover = value("lc_2010").fillna(value("lc_2005")).fillna(value("lc_2000"))
    climate = value("climate_KG").where(value("climate_KG") != "unknown")
    table = pd.DataFrame(
        {
            "network": value("network"),
            "station": value("station"),
            "lon": value("longitude").astype(float),
            "lat": value("latitude").astype(float),
            "elevation": value("elevation").astype(float),
            "depth_from": metadata[("variable", "depth_from")].astype(float),
            "depth_to": metadata[("variable", "depth_to")].astype(float),
            "instrument": value("instrument"),
            "landcover": landcover.astype(float),
            "climate": climate,
            "clay_fraction": value("clay_fraction").astype(float),
            "sand_fraction": value("sand_fraction").astype(float),
            "silt_fraction": value("silt_fraction").astype(float),
        }
    )
    table["id"] = table["network"] + "/" + table["station"]
    return table


def _sensor_record(data: pd.DataFrame, station_id: str, good_only: bool) -> pd.DataFrame:
    values = data["soil_moisture"].astype(float)
    if good_only:
        values = values.where(data["soil_moisture_flag"] == GOOD_FLAG)
    return pd.DataFrame({"station": station_id, "time": data.index, "soil_moisture": values.to_numpy()})


def fao_texture_class(clay_percent, sand_percent) -> pd.Series:
    """FAO/HWSD topsoil texture class from clay and sand (% weight): "coarse" (clay < 18 and sand > 65),
    "fine" (clay > 35), else "medium"; NaN where either fraction is unknown."""
    clay, sand = pd.Series(clay_percent, dtype=float), pd.Series(sand_percent, dtype=float)
    texture = pd.Series(
        np.where(clay > 35, "fine", np.where((clay < 18) & (sand > 65), "coarse", "medium")),
        index=clay.index,
        dtype=object,
    )
    return texture.where(clay.notna() & sand.notna())


def station_cells(stations: pd.DataFrame, window: Window) -> pd.DataFrame:
    """Row and column (within ``window``) of the grid cell holding each station; stations outside dropped."""
    rows, cols = window.grid.rowcol(stations["lon"].to_numpy(), stations["lat"].to_numpy())
    inside = window.contains(rows, cols)
    return pd.DataFrame(
        {"row": rows[inside] - window.row0, "col": cols[inside] - window.col0}, index=stations.index[inside]
    )


def matchup(
    obs: xr.DataArray,
    stations: pd.DataFrame,
    product: xr.DataArray,
    *,
    window: Window,
    kind: str = "overpass",
    overpass: str = "AM",
    utc_offset_hours: float | None = None,
) -> xr.Dataset:
    """Pair ``product`` (time, y, x) on ``window`` with in-situ ``obs`` (station, time) from ``read_ismn``.

    Each station goes to the cell holding it (nearest cell centre); stations in one cell are averaged hour
    by hour. ``kind`` picks the time sampling (module docstring): for ``overpass`` and ``daily`` the
    product's time stamps are read as dates (their calendar day). Local time for the overpass window is
    UTC + ``utc_offset_hours``, by default each cell's 15° time-zone band, round(lon/15) hours, as in
    Fang et al.'s GLDAS time-zone handling.

    Returns a Dataset with ``product`` and ``insitu`` (cell, time) on the product's time axis and, per cell:
    row, col (within ``window``), x, y, lon, lat, n_stations, stations (ids joined by ";") and the
    ``CELL_METADATA`` columns that ``stations`` has (e.g. ``core`` after merging ``core_cells``).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown matchup kind {kind!r}; known: {', '.join(KINDS)}")
    if overpass not in OVERPASS_LOCAL_HOURS:
        raise ValueError(f"unknown overpass {overpass!r}; known: {', '.join(OVERPASS_LOCAL_HOURS)}")
    same_shape = (product.sizes["y"], product.sizes["x"]) == window.shape
    if not (same_shape and np.allclose(product["x"], window.x) and np.allclose(product["y"], window.y)):
        raise ValueError("product x/y do not match the window's cell centres")

    located = station_cells(stations.loc[obs.station.values], window)
    if located.empty:
        raise ValueError("no station lies inside the product window")
    located["cell"] = located["row"] * window.ncols + located["col"]
    cells = _cell_table(located.join(stations), window)

    hourly = (
        obs.sel(station=located.index.to_numpy())
        .assign_coords(cell=("station", located["cell"].to_numpy()))
        .groupby("cell")
        .mean()
    )
    if kind == "3hourly":
        insitu = _around_scenes(hourly, pd.DatetimeIndex(product["time"].values))
    else:
        if kind == "overpass":
            offsets = np.round(cells["lon"] / 15) if utc_offset_hours is None else utc_offset_hours
            daily = _local_window_means(hourly, offsets, OVERPASS_LOCAL_HOURS[overpass])
        else:
            daily = hourly.resample(time="1D").mean()
        days = pd.DatetimeIndex(product["time"].values).floor("D")
        insitu = daily.reindex(time=days).assign_coords(time=product["time"].values)

    at_cells = product.isel(
        y=xr.DataArray(cells["row"].to_numpy(), dims="cell"),
        x=xr.DataArray(cells["col"].to_numpy(), dims="cell"),
    ).drop_vars(["x", "y"])
    return xr.Dataset(
        {"product": at_cells.transpose("cell", "time"), "insitu": insitu.transpose("cell", "time")},
        coords={"cell": cells.index.to_numpy(), **{name: ("cell", cells[name].to_numpy()) for name in cells}},
    )


def _cell_table(located: pd.DataFrame, window: Window) -> pd.DataFrame:
    by_cell = located.groupby("cell")
    cells = by_cell[["row", "col"]].first()
    cells["x"], cells["y"] = window.x[cells["col"]], window.y[cells["row"]]
    cells["lon"], cells["lat"] = window.lon[cells["col"]], window.lat[cells["row"]]
    cells["n_stations"] = by_cell.size()
    cells["stations"] = by_cell.apply(lambda group: ";".join(group.index), include_groups=False)
    for name in CELL_METADATA:
        if name in located:
            cells[name] = by_cell[name].agg(_most_common)
    return cells


def _most_common(values: pd.Series):
    counts = values.value_counts()
    return counts.index[0] if len(counts) else np.nan


def _around_scenes(hourly: xr.DataArray, scenes: pd.DatetimeIndex) -> xr.DataArray:
    """Mean of the whole hours before and after each scene time (one hour for a scene on the hour)."""
    pair = [
        hourly.reindex(time=hours).assign_coords(time=scenes)
        for hours in (scenes.floor("h"), scenes.ceil("h"))
    ]
    return xr.concat(pair, dim="hour").mean("hour")


def _local_window_means(hourly: xr.DataArray, offsets, local_hours: tuple[int, int]) -> xr.DataArray:
    """Per cell and local date, the mean of the observations from local_hours[0] to local_hours[1] o'clock
    (inclusive); ``offsets`` (hours, scalar or one per cell) turn UTC into local time."""
    offsets = xr.DataArray(
        np.broadcast_to(np.asarray(offsets, dtype=float), hourly["cell"].shape), dims="cell"
    )
    local_time = hourly["time"] + (offsets * 3600e9).astype("timedelta64[ns]")
    hour_of_day = (local_time - local_time.dt.floor("D")) / np.timedelta64(1, "h")
    in_window = (hour_of_day >= local_hours[0]) & (hour_of_day <= local_hours[1])
    values = hourly.where(in_window).to_series()
    local_day = local_time.dt.floor("D").transpose(*hourly.dims).to_series()
    means = values.groupby([values.index.get_level_values("cell"), local_day.to_numpy()]).mean()
    return means.rename_axis(["cell", "time"]).to_xarray()


def core_cells(
    landcover_fine: xr.DataArray,
    stations: pd.DataFrame,
    *,
    fine_window: Window,
    coarse_window: Window,
    threshold: float = CORE_SHARE,
    landcover_column: str = "landcover",
) -> pd.DataFrame:
    """Core/extra classification of the coarse cell that holds each station.

    The LC-area share of a station is the fraction of the fine pixels of its coarse cell (pixels assigned
    by ``grids.parent_index``; pixels without a class are left out) whose land-cover class equals the
    station's (``stations[landcover_column]``, in the same code list as ``landcover_fine``). The cell is
    *core* where that share is ≥ ``threshold``, else *extra*.

    Returns, indexed like ``stations``: coarse_row, coarse_col (within ``coarse_window``; −1 outside),
    lc_share (NaN outside or for a station of unknown land cover) and core (False there).
    """
    if landcover_fine.shape != fine_window.shape:
        raise ValueError(
            f"land cover shape {landcover_fine.shape} does not match the fine window {fine_window.shape}"
        )
    parent_rows, parent_cols = parent_index(fine_window, coarse_window)
    parent = np.where(
        (parent_rows[:, None] >= 0) & (parent_cols[None, :] >= 0),
        parent_rows[:, None] * coarse_window.ncols + parent_cols[None, :],
        -1,
    )
    pixels = pd.DataFrame(
        {"cell": parent.ravel(), "landcover": landcover_fine.to_numpy().astype(float).ravel()}
    )
    pixels = pixels[(pixels["cell"] >= 0) & pixels["landcover"].notna()]
    class_counts = pixels.value_counts()
    cell_counts = pixels["cell"].value_counts()

    located = station_cells(stations, coarse_window).reindex(stations.index, fill_value=-1)
    station_cell = (located["row"] * coarse_window.ncols + located["col"]).where(located["row"] >= 0, -1)
    station_class = stations[landcover_column].astype(float)
    wanted = pd.MultiIndex.from_arrays([station_cell, station_class])
    share = class_counts.reindex(wanted).fillna(0).to_numpy() / cell_counts.reindex(station_cell).to_numpy()
    return _core_table(located, share, station_class.to_numpy(), threshold)


def core_cells_from_shares(
    cover_share: xr.DataArray,
    stations: pd.DataFrame,
    *,
    window: Window,
    threshold: float = CORE_SHARE,
    landcover_column: str = "landcover",
) -> pd.DataFrame:
    """`core_cells` where the land-cover shares of the cells are known already: ``cover_share`` (code, y,
    x) on ``window`` holds the share of each class (its ``code`` coordinate, in the stations' code list) in
    each cell, e.g. the synthetic truth's cover fractions; NaN in a cell without any class. A station's
    class missing from ``code`` has share 0. Returns the same columns."""
    located = station_cells(stations, window).reindex(stations.index, fill_value=-1)
    rows, cols = located["row"].to_numpy(), located["col"].to_numpy()
    station_class = stations[landcover_column].astype(float).to_numpy()
    position = pd.Index(cover_share["code"].to_numpy().astype(float)).get_indexer(station_class)
    shares = cover_share.transpose("code", ...).to_numpy()
    absent = np.where(np.isnan(shares).all(axis=0), np.nan, 0.0)  # in a cell with shares, a class it lacks
    at = (rows.clip(0), cols.clip(0))
    share = np.where(position >= 0, shares[(position.clip(0), *at)], absent[at])
    return _core_table(located, np.where(rows >= 0, share, np.nan), station_class, threshold)


def _core_table(located: pd.DataFrame, share: np.ndarray, station_class: np.ndarray, threshold: float):
    share = np.where(np.isnan(station_class), np.nan, share)  # a station of unknown land cover has no share
    return pd.DataFrame(
        {"coarse_row": located["row"], "coarse_col": located["col"], "lc_share": share,
         "core": share >= threshold},
        index=located.index,
    )


def cell_scores(matchups: xr.Dataset, *, min_count: int = 10) -> pd.DataFrame:
    """Temporal scores (``metrics.score`` along time) of every matchup cell, one row per cell, with the
    cell's metadata columns (``CELL_METADATA`` present in ``matchups``)."""
    scores = score(matchups["product"], matchups["insitu"], dim="time", min_count=min_count)
    table = scores.reset_coords(drop=True).to_dataframe()[list(METRICS)]
    for name in CELL_METADATA:
        if name in matchups.coords:
            table[name] = matchups[name].to_numpy()
    return table


def stratified_scores(matchups: xr.Dataset, by: str, *, min_count: int = 10) -> pd.DataFrame:
    """Scores per stratum (``by`` = landcover, climate, soil_texture, core …, a cell coordinate).

    Each cell is scored along time (``cell_scores``); a stratum reports the mean of its cells' scores
    (cells below ``min_count`` pairs contribute NaN and are skipped), the total ``n`` and ``n_cells``, the
    number of cells with a score. Averaging per-site scores, rather than pooling all pairs, keeps
    differences between sites out of R and ubRMSE, as in SMAP core-site validation.
    """
    if by not in matchups.coords:
        raise ValueError(f"matchups have no cell metadata {by!r}")
    table = cell_scores(matchups, min_count=min_count)
    grouped = table.groupby(by)
    strata = grouped[list(METRICS)].mean()
    strata["n"] = grouped["n"].sum()
    strata["n_cells"] = grouped["R"].count()
    return strata
