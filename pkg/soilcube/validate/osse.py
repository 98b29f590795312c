"""`soilcube validate`: score the cubes of a store against a truth (OSSE) and in-situ stations, and write
the report (Markdown, CSV tables, PNG figures, JSON scores).

Gridded scores against a truth are taken on ONE common sample set: the (day, overpass, pixel) samples
where the truth and every product compared at that resolution are valid, so no product is flattered by
scoring only its easy pixels. Temporal metrics (R, bias, RMSE, ubRMSE, MAE, KGE) are computed per pixel
over days and overpasses, then averaged over pixels; SSD is the spatial standard deviation of each scene,
averaged over scenes (`SSD_ref`: the truth's); the artifact index pools every scene.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from soilcube.access import open_cube
from soilcube.grids import Window, ease2_grid, parent_index
from soilcube.store import cube_url
from soilcube.validate import insitu
from soilcube.validate.diagnostics import artifact_index, bias_by_range, dynamic_range
from soilcube.validate.metrics import score
from soilcube.validate.report import Figures, scores_json, write_report

# product key → (cube, variable), grouped by the truth grid they are scored on.
GRIDDED_PRODUCTS = {
    "M01": {
        "smap_9km": ("downscaled_1km", "smap_9km"),
        "visir_1km_additive": ("downscaled_1km", "sm_additive"),
        "visir_1km_hybrid": ("downscaled_1km", "sm"),
    },
    "M400": {"visir_400m": ("downscaled_400m", "sm")},
}
TEMPORAL_METRICS = ("R", "R2", "bias", "RMSE", "ubRMSE", "MAE", "KGE", "KGE2012")


def cube_window(cube: xr.Dataset, grid_name: str) -> Window:
    """The EASE2 window that a cube's 1-D x/y coordinates cover."""
    grid = ease2_grid(grid_name)
    row0, col0 = int(grid.row_of_y(cube["y"].values[0])), int(grid.col_of_x(cube["x"].values[0]))
    return Window(grid_name, row0, col0, cube.sizes["y"], cube.sizes["x"])


def m09_window(window: Window) -> Window:
    """The 9 km window of the same extent (cube windows are 36 km-aligned, so the division is exact)."""
    ratio = ease2_grid("M09").subdivision / window.grid.subdivision
    return Window("M09", *(round(v * ratio) for v in (window.row0, window.col0, window.nrows, window.ncols)))


def gridded_scores(
    products: dict[str, xr.DataArray], truth: xr.DataArray, valid: xr.DataArray, parents, min_count: int = 10
) -> dict[str, dict]:
    """Scores of each product against the truth on the common `valid` samples (a pixel's temporal
    metrics need `min_count` samples)."""
    reference = truth.where(valid)
    results = {}
    for key, field in products.items():
        product = field.where(valid)
        temporal = score(product, reference, dim=("time", "overpass"), min_count=min_count)
        spatial = score(product, reference, dim=("y", "x"))
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


def _scene_with_most_samples(valid: xr.DataArray) -> dict[str, int]:
    counts = valid.sum(("y", "x"))
    time_index, overpass_index = np.unravel_index(int(np.argmax(counts.values)), counts.shape)
    return {"time": int(time_index), "overpass": int(overpass_index)}


def _written(cube: xr.Dataset) -> xr.Dataset:
    return cube.isel(time=np.flatnonzero(cube["status"].values > 0))


def _truth_grid(truth_url: str, grid_name: str, times, storage_options) -> xr.DataArray:
    truth = xr.open_zarr(
        truth_url, group=grid_name, consolidated=False, storage_options=storage_options or None
    )
    truth = truth["sm"]
    return truth.sel(time=times).load()


def _score_against_truth(cubes, truth_url, storage_options, scores, tables, figures, min_count) -> None:
    for grid_name, members in GRIDDED_PRODUCTS.items():
        members = {key: source for key, source in members.items() if source[0] in cubes}
        if not members:
            continue
        cube = cubes[next(iter(members.values()))[0]]
        fields = {key: cubes[name][variable].load() for key, (name, variable) in members.items()}
        truth = _truth_grid(truth_url, grid_name, cube["time"].values, storage_options)
        window = cube_window(cube, grid_name)
        valid = common_valid(fields, truth)
        scores.update(
            gridded_scores(fields, truth, valid, parent_index(window, m09_window(window)), min_count)
        )
        scene = _scene_with_most_samples(valid)
        label = {"M01": "1 km", "M400": "400 m"}[grid_name]
        figures.maps[f"truth {label}"] = truth.isel(scene)
        for key, field in fields.items():
            product, reference = field.where(valid), truth.where(valid)
            figures.maps[key] = field.isel(scene)
            figures.scatter[key] = (product, reference)
            tables[f"bias by soil-moisture range: {key}"] = (
                bias_by_range(product, reference).to_dataframe().reset_index()
            )
            spread = dynamic_range(product, reference)
            tables[f"dynamic range: {key}"] = spread.to_dataframe().reset_index()


def _score_against_stations(cube: xr.Dataset, insitu_dir: Path, tables, figures, min_count) -> None:
    """Per-cell and stratified (land cover, climate, soil texture) scores of the 1 km hybrid product
    against the stations, AM and PM overpass windows, and a boxplot of per-cell ubRMSE by land cover."""
    obs, stations = insitu.read_ismn(insitu_dir)
    window = cube_window(cube, "M01")
    per_cell = []
    for overpass in ("AM", "PM"):
        matchups = insitu.matchup(
            obs,
            stations,
            cube["sm"].sel(overpass=overpass).load(),
            window=window,
            kind="overpass",
            overpass=overpass,
        )
        cells = insitu.cell_scores(matchups, min_count=min_count).reset_index()
        tables[f"in situ, 1 km hybrid, {overpass} overpass, per cell"] = cells
        for stratum in ("landcover", "climate", "soil_texture"):
            if stratum in matchups.coords:
                tables[f"in situ, 1 km hybrid, {overpass}, by {stratum}"] = insitu.stratified_scores(
                    matchups, stratum, min_count=min_count
                ).reset_index()
        per_cell.append(cells.assign(product=f"visir_1km_hybrid {overpass}"))
        if overpass == "AM":
            figures.timeseries["visir_1km_hybrid"] = matchups
    boxes = pd.concat(per_cell)
    if "landcover" in boxes:
        figures.boxplots["per-cell ubRMSE against stations, by land cover"] = boxes.rename(
            columns={"landcover": "stratum", "ubRMSE": "value"}
        )[["stratum", "product", "value"]]


def validate_store(
    store_url: str,
    out_dir: str | Path,
    *,
    truth_url: str | None = None,
    insitu_dir: str | Path | None = None,
    storage_options: dict | None = None,
    min_count: int = 10,
) -> dict:
    """Score the store's downscaled cubes; write the report into `out_dir`; return the JSON scores."""
    cubes = {}
    for name in ("downscaled_1km", "downscaled_400m"):
        try:
            cubes[name] = _written(open_cube(cube_url(store_url, name), storage_options=storage_options))
        except FileNotFoundError:
            continue
    if not cubes:
        raise FileNotFoundError(f"no downscaled cubes in {store_url}: run `soilcube run backfill` first")

    scores: dict[str, dict] = {}
    tables: dict[str, pd.DataFrame] = {}
    figures = Figures()
    if truth_url:
        _score_against_truth(cubes, truth_url, storage_options, scores, tables, figures, min_count)
    if insitu_dir and "downscaled_1km" in cubes:
        _score_against_stations(cubes["downscaled_1km"], Path(insitu_dir), tables, figures, min_count)
    write_report(
        scores,
        out_dir,
        tables=tables,
        figures=figures,
        title="soilcube validation: downscaled SMAP against the nature-run truth and stations",
    )
    return scores_json(scores)
