"""`soilcube validate`: score the cubes of a store (and SMAP L4 from the archive) against a truth (OSSE)
and in-situ stations, and write the report (Markdown, CSV tables, PNG figures, JSON scores).

Products, by the truth field they are scored on (each item is one *scoring group*):

- 1 km daily AM/PM: smap_9km, visir_1km_additive, visir_1km_hybrid (cube `downscaled_1km`), truth `M01`;
- 400 m daily AM/PM: smap_9km_400m, visir_400m_additive, visir_400m (hybrid) (cube `downscaled_400m`), truth
  `M400`;
- 1 km 3-hourly: smap_l4_bicubic (the archive's SMAP L4 9 km `sm_surface`, MATLAB bicubic ×9) and
  fused_3h (`fused_1km_3h`), truth `M01_3h` (the truth.zarr groups);
- 1 km daily means: fused_daily (UTC-day means of the `fused_1km_3h` scenes), daily means of `M01_3h`.

Gridded scores within a group are taken on ONE common sample set: the (time[, overpass], pixel) samples
where the truth and every product of the group are valid, so no product is flattered by scoring only its
easy pixels; groups are independent of each other (a 3-hourly gap does not remove daily AM/PM samples). A
daily mean is made only of complete days: all `SCENES_PER_DAY` scenes valid in the product and the truth.
Temporal metrics (R, bias, RMSE, ubRMSE, MAE, KGE) are computed per pixel over the group's time axis
(days × overpasses, or scenes, or days), then averaged over pixels; SSD is the spatial standard deviation
of each scene, averaged over scenes (`SSD_ref`: the truth's); the artifact index pools every scene.

Station scores (tables, boxplot, time series): visir_1km_hybrid at the AM/PM overpass windows, the 3-hourly
products against the mean of the two whole hours around each scene, fused_daily against UTC-day means. With
a truth that holds the 1 km cells' land-cover shares (the synthetic one), the stations' cells are split into
core (the station's own class covers ≥ `insitu.CORE_SHARE` of the cell) and extra, and scored by that too.

Airborne campaign (with `archive_url`, from its `campaign/` flights; `campaign_scores`): spatial scores of the
1 km daily products against each flight's field, on its box, one table row per flight and product.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import xarray as xr

from soilcube import refs
from soilcube.access import open_cube
from soilcube.grids import Window, ease2_grid, local_solar_dates, parent_index
from soilcube.resample import bicubic
from soilcube.sources import open_granules
from soilcube.store import cube_url
from soilcube.validate import insitu
from soilcube.validate.diagnostics import artifact_index, bias_by_range, dynamic_range, subcell_scores
from soilcube.validate.metrics import score
from soilcube.validate.report import Figures, scores_json, write_report

SPATIAL_DIMS = ("y", "x")
FUSED_CUBE = "fused_1km_3h"
CUBES = ("downscaled_1km", "downscaled_400m", FUSED_CUBE)
# Daily AM/PM product key → (cube, variable), grouped by the truth grid they are scored on.
GRIDDED_PRODUCTS = {
    "M01": {
        "smap_9km": ("downscaled_1km", "smap_9km"),
        "visir_1km_additive": ("downscaled_1km", "sm_additive"),
        "visir_1km_hybrid": ("downscaled_1km", "sm"),
    },
    "M400": {
        "smap_9km_400m": ("downscaled_400m", "smap_9km"),
        "visir_400m_additive": ("downscaled_400m", "sm_additive"),
        "visir_400m": ("downscaled_400m", "sm"),
    },
}
SMAP_L4_VARIABLE = "sm_surface"
# The flights (10:00 local) are scored against the AM slice (06:00) of their local day, the nearest overpass.
CAMPAIGN_OVERPASS = "AM"
CAMPAIGN_METRICS = ("R", "bias", "RMSE", "ubRMSE", "SSD", "SSD_ref", "n")
SCENES_PER_DAY = 8  # SMAP L4 and the fused cube: 01:30, 04:30 … 22:30 UTC
TEMPORAL_METRICS = ("R", "R2", "bias", "RMSE", "ubRMSE", "MAE", "KGE", "KGE2012")


def cube_window(cube: xr.Dataset | xr.DataArray, grid_name: str) -> Window:
    """The EASE2 window that a cube's 1-D x/y coordinates cover."""
    grid = ease2_grid(grid_name)
    row0, col0 = int(grid.row_of_y(cube["y"].values[0])), int(grid.col_of_x(cube["x"].values[0]))
    return Window(grid_name, row0, col0, cube.sizes["y"], cube.sizes["x"])


def same_extent(window: Window, grid_name: str) -> Window:
    """The window of `grid_name` with the same extent (cube windows are 36 km-aligned: exact division)."""
    ratio = ease2_grid(grid_name).subdivision / window.grid.subdivision
    corners = (window.row0, window.col0, window.nrows, window.ncols)
    return Window(grid_name, *(round(v * ratio) for v in corners))


def m09_window(window: Window) -> Window:
    """The 9 km window of the same extent."""
    return same_extent(window, "M09")


def gridded_scores(
    products: dict[str, xr.DataArray], truth: xr.DataArray, valid: xr.DataArray, parents, min_count: int = 10
) -> dict[str, dict]:
    """Scores of each product against the truth on the common `valid` samples (a pixel's temporal
    metrics, along every dim but y and x, need `min_count` samples)."""
    reference = truth.where(valid)
    temporal_dims = tuple(d for d in truth.dims if d not in SPATIAL_DIMS)
    results = {}
    for key, field in products.items():
        product = field.where(valid)
        temporal = score(product, reference, dim=temporal_dims, min_count=min_count)
        spatial = score(product, reference, dim=SPATIAL_DIMS)
        row = {m: float(temporal[m].mean()) for m in TEMPORAL_METRICS}
        row["n"] = int(valid.sum())
        row["SSD"] = float(spatial["SSD"].mean())
        row["SSD_ref"] = float(spatial["SSD_ref"].mean())
        row["artifact_index"] = float(artifact_index(product, parents))
        results[key] = row
    return results


def common_valid(products: dict[str, xr.DataArray], truth: xr.DataArray) -> xr.DataArray:
    valid = truth.notnull()
    for field in products.values():
        valid = valid & field.notnull()
    return valid


def campaign_scores(cube: xr.Dataset, archive_url: str, storage_options: dict | None = None,
                    min_count: int = 10) -> pd.DataFrame:
    """Spatial scores of the 1 km daily products (`GRIDDED_PRODUCTS["M01"]` of `cube`, the `downscaled_1km`
    cube) against each airborne flight of the archive (`campaign/*.nc`, 1 km fields on the M01 grid).

    Per flight: the `CAMPAIGN_OVERPASS` slice of the flight's local solar day (UTC + longitude/15 h at the
    box's centre), on the flight box, over the pixels where the flight and every product hold a value (one
    common sample set, as for the truth). One row per flight and product; empty without flights."""
    fs, root = fsspec.core.url_to_fs(archive_url, **(storage_options or {}))
    grid, rows = ease2_grid("M01"), []
    for path in sorted(fs.glob(f"{root.rstrip('/')}/campaign/*.nc")):
        # the bytes first: h5py reading through fsspec risks the deadlock `cyclic_gc_paused` is about
        with xr.open_dataset(io.BytesIO(fs.cat_file(path)), engine="h5netcdf") as ds:
            flight = ds["sm"].isel(time=0).load()
        lon, _ = grid.lonlat(grid.row_of_y(float(flight.y.mean())), grid.col_of_x(float(flight.x.mean())))
        day = local_solar_dates(flight.time.values, float(lon))
        if day not in cube.indexes["time"]:
            continue
        on_box = cube.sel(time=day, overpass=CAMPAIGN_OVERPASS).reindex(
            y=flight.y, x=flight.x, method="nearest", tolerance=grid.cell_size / 4
        )
        products = {key: on_box[variable].load() for key, (_, variable) in GRIDDED_PRODUCTS["M01"].items()}
        valid = common_valid(products, flight)
        for key, product in products.items():
            scores = score(product.where(valid), flight.where(valid), min_count=min_count)
            values = {m: float(scores[m]) for m in CAMPAIGN_METRICS} | {"n": int(scores["n"])}
            rows.append({"flight": str(flight.time.values)[:16], "product": key, **values})
    return pd.DataFrame(rows, columns=["flight", "product", *CAMPAIGN_METRICS])


def daily_mean(field: xr.DataArray, scenes_per_day: int = SCENES_PER_DAY) -> xr.DataArray:
    """Mean of each UTC day's scenes (time = the day at 00:00), NaN where a pixel has fewer than
    `scenes_per_day` valid scenes that day: a daily mean of part of a day is not a daily mean."""
    field = field.assign_coords(day=("time", field["time"].dt.floor("D").values))
    count = field.notnull().groupby("day").sum()
    means = field.groupby("day").mean().where(count >= scenes_per_day)
    return means.rename(day="time").transpose(*field.dims)


def smap_l4_bicubic(
    archive_url: str,
    window: Window,
    first: np.datetime64,
    last: np.datetime64,
    storage_options: dict | None = None,
) -> xr.DataArray:
    """SMAP L4 `sm_surface` scenes of [first, last] on the 9 km window of `window`'s extent, interpolated
    onto `window` (M01) by MATLAB imresize bicubic at the integer scale 9 (`soilcube.resample`): the
    mirror boundary is the window's edge. Granules come from the archive's reference index."""
    # L4 file names sort by time
    urls = sorted(refs.granule_urls(archive_url, "smap_l4", storage_options, first, last))
    if not urls:
        raise FileNotFoundError(
            f"no referenced smap_l4 granules for {first} … {last} in {archive_url}: run `soilcube refs`"
        )
    coarse_window = m09_window(window)
    scale = window.grid.subdivision // coarse_window.grid.subdivision
    scenes = open_granules(
        "smap_l4",
        urls,
        storage_options,
        window=coarse_window,
        variables=[SMAP_L4_VARIABLE],
    )[SMAP_L4_VARIABLE]
    fine = bicubic(scenes.drop_vars("granule", errors="ignore").load(), scale)
    if not (np.allclose(fine["x"], window.x, atol=1e-3) and np.allclose(fine["y"], window.y, atol=1e-3)):
        raise ValueError(f"bicubic ×{scale} of the M09 window misses the {window.grid_name} cell centres")
    return fine.assign_coords(x=window.x, y=window.y).rename("smap_l4_bicubic")


@dataclass
class ScoringGroup:
    """Products scored together, on one common sample set, against one truth field."""

    label: str  # names the truth in the figures, e.g. "1 km 3-hourly"
    truth: xr.DataArray
    fields: dict[str, xr.DataArray]
    window: Window
    own_figure: bool  # maps in a figure of their own (the daily AM/PM groups share maps.png)


def _scene_with_most_samples(valid: xr.DataArray) -> dict[str, int]:
    other = [d for d in valid.dims if d not in SPATIAL_DIMS]
    counts = valid.sum(SPATIAL_DIMS).transpose(*other)
    index = np.unravel_index(int(np.argmax(counts.values)), counts.shape)
    return {dim: int(i) for dim, i in zip(other, index, strict=True)}


def _written(cube: xr.Dataset) -> xr.Dataset:
    return cube.isel(time=np.flatnonzero(cube["status"].values > 0))


def _open_truth(truth_url: str, group: str, storage_options) -> xr.DataArray:
    truth = xr.open_zarr(truth_url, group=group, consolidated=False, storage_options=storage_options or None)
    return truth["sm"]


def _on_grid(field: xr.DataArray, like: xr.DataArray, key: str) -> xr.DataArray:
    for axis in SPATIAL_DIMS:
        if field.sizes[axis] != like.sizes[axis] or not np.allclose(field[axis], like[axis], atol=1e-3):
            raise ValueError(
                f"{key}: its {axis} cells differ from the truth's; the cube and the truth must "
                "cover the same window"
            )
    # Scalar coordinates (the cubes' crs) would follow every masked field into the tables.
    return field.reset_coords(drop=True).assign_coords(x=like["x"], y=like["y"])


def _daily_groups(cubes: dict[str, xr.Dataset], truth_url: str, storage_options) -> list[ScoringGroup]:
    groups = []
    for grid_name, members in GRIDDED_PRODUCTS.items():
        members = {key: source for key, source in members.items() if source[0] in cubes}
        if not members:
            continue
        cube = cubes[next(iter(members.values()))[0]]
        truth = _open_truth(truth_url, grid_name, storage_options).sel(time=cube["time"].values).load()
        fields = {
            key: _on_grid(cubes[name][variable].load(), truth, key)
            for key, (name, variable) in members.items()
        }
        label = {"M01": "1 km", "M400": "400 m"}[grid_name]
        groups.append(ScoringGroup(label, truth, fields, cube_window(truth, grid_name), own_figure=False))
    return groups


def _three_hourly_groups(three_hourly: dict[str, xr.DataArray], truth_url: str, storage_options):
    """The 3-hourly group (every 3-hourly product on the scenes they and the truth share) and the daily
    means group of the fused product."""
    if not three_hourly:
        return []
    truth = _open_truth(truth_url, "M01_3h", storage_options)
    window = cube_window(truth, "M01")
    times = pd.DatetimeIndex(truth["time"].values)
    for field in three_hourly.values():
        times = times.intersection(pd.DatetimeIndex(field["time"].values))
    truth = truth.sel(time=times.values).load()
    fields = {key: _on_grid(field.sel(time=times.values), truth, key) for key, field in three_hourly.items()}
    groups = [ScoringGroup("1 km 3-hourly", truth, fields, window, own_figure=True)]
    if "fused_3h" in fields:
        fused = fields["fused_3h"]
        both = fused.notnull() & truth.notnull()
        groups.append(
            ScoringGroup(
                "1 km daily mean",
                daily_mean(truth.where(both)),
                {"fused_daily": daily_mean(fused.where(both))},
                window,
                own_figure=True,
            )
        )
    return groups


def _score_group(group: ScoringGroup, scores, tables, figures: Figures, min_count: int) -> None:
    valid = common_valid(group.fields, group.truth)
    parents = parent_index(group.window, m09_window(group.window))
    scores.update(gridded_scores(group.fields, group.truth, valid, parents, min_count))
    scene = _scene_with_most_samples(valid)
    truth_name = f"truth {group.label}"
    if group.own_figure:  # name the scene (the daily AM/PM maps keep their short names)
        when = pd.Timestamp(group.truth["time"].values[scene["time"]])
        truth_name += f" {when:%Y-%m-%d}" + ("" if when == when.normalize() else f" {when:%H:%M}")
    maps = {truth_name: group.truth.isel(scene)}
    structure = {}
    for key, field in group.fields.items():
        product, reference = field.where(valid), group.truth.where(valid)
        structure[key] = subcell_scores(product, reference, parents)
        maps[key] = field.isel(scene)
        figures.scatter[key] = (product, reference)
        tables[f"bias by soil-moisture range: {key}"] = (
            bias_by_range(product, reference).to_dataframe().reset_index()
        )
        tables[f"dynamic range: {key}"] = dynamic_range(product, reference).to_dataframe().reset_index()
    tables[f"structure inside the 9 km cells, {group.label}"] = pd.DataFrame.from_dict(
        structure, orient="index"
    ).rename_axis("product")
    if group.own_figure:
        figures.map_sets[group.label] = maps
    else:
        figures.maps.update(maps)


@dataclass
class StationProduct:
    """A gridded (time, y, x) field on the M01 window to match with the stations."""

    key: str  # product name in the boxplot and time series
    title: str  # in the table titles
    field: xr.DataArray
    kind: str  # insitu.matchup kind
    overpass: str = "AM"
    timeseries: bool = False


def _station_products(cubes: dict[str, xr.Dataset], three_hourly: dict[str, xr.DataArray]):
    products = []
    if "downscaled_1km" in cubes:
        for overpass in ("AM", "PM"):
            products.append(
                StationProduct(
                    f"visir_1km_hybrid {overpass}",
                    f"1 km hybrid, {overpass} overpass",
                    cubes["downscaled_1km"]["sm"].sel(overpass=overpass),
                    "overpass",
                    overpass,
                    timeseries=overpass == "AM",
                )
            )
    if "smap_l4_bicubic" in three_hourly:
        products.append(
            StationProduct(
                "smap_l4_bicubic",
                "SMAP L4 bicubic 1 km, 3-hourly",
                three_hourly["smap_l4_bicubic"],
                "3hourly",
            )
        )
    if "fused_3h" in three_hourly:
        fused = three_hourly["fused_3h"]
        products.append(StationProduct("fused_3h", "fused 1 km, 3-hourly", fused, "3hourly", timeseries=True))
        products.append(StationProduct("fused_daily", "fused 1 km, daily means", daily_mean(fused), "daily"))
    return products


def _cover_share(truth_url: str, storage_options) -> xr.DataArray | None:
    """The truth's share of each land-cover class per 1 km cell, (code, y, x) by ESA CCI code; None for a
    truth without one."""
    try:
        static = xr.open_zarr(truth_url, group="static", consolidated=False,
                              storage_options=storage_options or None)
    except FileNotFoundError:  # (zarr's GroupNotFoundError)
        return None
    if "cover_fraction" not in static or "cci_code" not in static.coords:
        return None
    return static["cover_fraction"].swap_dims(cover="cci_code").rename(cci_code="code").load()


def _score_against_stations(products: list[StationProduct], insitu_dir: Path, tables, figures, min_count,
                            cover_share: xr.DataArray | None = None):
    """Per-cell and stratified (land cover, climate, soil texture and, with the 1 km cells' `cover_share`,
    core/extra cells) scores of each product against the stations, time series of some, and a boxplot of
    per-cell ubRMSE by land cover."""
    obs, stations = insitu.read_ismn(insitu_dir)
    if cover_share is not None:
        cells = insitu.core_cells_from_shares(cover_share, stations, window=cube_window(cover_share, "M01"))
        # (no label where the station has no share: outside the truth's window, or of unknown land cover)
        stations = stations.assign(core=cells["core"].map({True: "core", False: "extra"})
                                   .where(cells["lc_share"].notna()))
    per_cell = []
    for product in products:
        field = product.field.load()
        matchups = insitu.matchup(
            obs,
            stations,
            field,
            window=cube_window(field, "M01"),
            kind=product.kind,
            overpass=product.overpass,
        )
        cells = insitu.cell_scores(matchups, min_count=min_count).reset_index()
        tables[f"in situ, {product.title}, per cell"] = cells
        for stratum in ("landcover", "climate", "soil_texture", "core"):
            if stratum in matchups.coords:
                tables[f"in situ, {product.title}, by {stratum}"] = insitu.stratified_scores(
                    matchups, stratum, min_count=min_count
                ).reset_index()
        per_cell.append(cells.assign(product=product.key))
        if product.timeseries:
            figures.timeseries[product.key.split()[0]] = matchups
    boxes = pd.concat(per_cell)
    if "landcover" in boxes:
        figures.boxplots["per-cell ubRMSE against stations, by land cover"] = boxes.rename(
            columns={"landcover": "stratum", "ubRMSE": "value"}
        )[["stratum", "product", "value"]]


def _l4_extent(cubes: dict[str, xr.Dataset], truth_url: str | None, storage_options):
    """Where and when to interpolate SMAP L4: the truth's 3-hourly window and period, else the 1 km
    cubes' (the fused cube's scenes, else the downscaled days)."""
    if truth_url:
        reference = _open_truth(truth_url, "M01_3h", storage_options)
        times = reference["time"].values
        return cube_window(reference, "M01"), times.min(), times.max()
    for name in (FUSED_CUBE, "downscaled_1km"):
        if name in cubes and cubes[name].sizes["time"]:
            times = cubes[name]["time"].values
            last = times.max() + (np.timedelta64(1, "D") if name != FUSED_CUBE else np.timedelta64(0, "s"))
            return cube_window(cubes[name], "M01"), times.min(), last - np.timedelta64(1, "s")
    raise ValueError("SMAP L4 needs a window and period: give a truth or have a 1 km cube in the store")


def validate_store(
    store_url: str,
    out_dir: str | Path,
    *,
    truth_url: str | None = None,
    insitu_dir: str | Path | None = None,
    archive_url: str | None = None,
    storage_options: dict | None = None,
    min_count: int = 10,
) -> dict:
    """Score the store's cubes (downscaled_1km, downscaled_400m, fused_1km_3h: those that exist) and, with
    `archive_url`, the archive's SMAP L4 interpolated to 1 km, and the 1 km products against the archive's
    campaign flights; write the report into `out_dir`; return the JSON scores (`{product: {metric:
    value}}`, gridded scores against the truth)."""
    cubes = {}
    for name in CUBES:
        try:
            cubes[name] = _written(open_cube(cube_url(store_url, name), storage_options=storage_options))
        except FileNotFoundError:
            continue
    if not cubes and not archive_url:
        raise FileNotFoundError(f"no cubes in {store_url}: run `soilcube run backfill` first")

    three_hourly: dict[str, xr.DataArray] = {}
    if archive_url:
        three_hourly["smap_l4_bicubic"] = smap_l4_bicubic(
            archive_url, *_l4_extent(cubes, truth_url, storage_options), storage_options
        )
    if FUSED_CUBE in cubes:
        three_hourly["fused_3h"] = cubes[FUSED_CUBE]["sm"].load()

    scores: dict[str, dict] = {}
    tables: dict[str, pd.DataFrame] = {}
    figures = Figures()
    if truth_url:
        groups = _daily_groups(cubes, truth_url, storage_options)
        groups += _three_hourly_groups(three_hourly, truth_url, storage_options)
        for group in groups:
            _score_group(group, scores, tables, figures, min_count)
    if archive_url and "downscaled_1km" in cubes:
        flights = campaign_scores(cubes["downscaled_1km"], archive_url, storage_options, min_count)
        if not flights.empty:
            tables["airborne campaign, per flight (1 km, AM slice of the flight's day, spatial)"] = flights
    if insitu_dir:
        products = _station_products(cubes, three_hourly)
        if products:
            cover_share = _cover_share(truth_url, storage_options) if truth_url else None
            _score_against_stations(products, Path(insitu_dir), tables, figures, min_count, cover_share)
    write_report(
        scores,
        out_dir,
        tables=tables,
        figures=figures,
        title="soilcube validation: soil-moisture products against the nature-run truth and stations",
    )
    return scores_json(scores)
