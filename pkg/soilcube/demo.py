"""`soilcube demo`: the whole chain on the embedded default, on a synthetic month over Oklahoma."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem
from rich.console import Console
from rich.table import Table

from soilcube import refs, runs
from soilcube.access import write_stac_catalog
from soilcube.cluster import dask_client
from soilcube.config import Settings
from soilcube.grids import REGIONS
from soilcube.sources import open_granules
from soilcube.synth.archive import GRANULE_PRODUCTS, build_archive
from soilcube.validate.osse import validate_store

DEMO_REGION = "oklahoma"
# The variable each product is summarised by in the demo's table.
SUMMARY_VARIABLE = {
    "smap_l2e": "soil_moisture",
    "smap_l3e": "soil_moisture",
    "smap_l4": "sm_surface",
    "gldas": "SoilMoi0_10cm_inst",
    "viirs_lst": "LST_1KM",
    "viirs_lai": "Lai",
    "ltdr_ndvi": "NDVI",
}


def run_demo(
    root: str,
    workdir: Path,
    start: date,
    end: date,
    *,
    seed: int = 0,
    storage_options: dict | None = None,
    console: Console | None = None,
) -> dict:
    """Synthesize, reference, open, fit, backfill and validate; return the scores."""
    console = console or Console()
    archive, cubes = f"{root.rstrip('/')}/archive", f"{root.rstrip('/')}/cubes"
    region = REGIONS[DEMO_REGION]
    settings = Settings(
        archive=archive, store=cubes, region=DEMO_REGION, storage_options=storage_options or {}
    )

    console.rule(f"1. synthesize {DEMO_REGION} {start} … {end} → {archive}")
    build_archive(region, start, end, archive, seed=seed, gldas_years=1, storage_options=storage_options)

    with dask_client(console=console):
        console.rule("2. kerchunk references (incremental)")
        report = refs.build_references(archive, storage_options=storage_options)
        if report.failed:
            for name, reason in report.failed.items():
                console.print(f"[red]unreadable granule[/red] {name}: {reason}")

        console.rule("3. open every product through the references")
        rows = {product: _summarise(settings, product, region) for product in GRANULE_PRODUCTS}
        _print_rows(console, rows)

        console.rule("4. fit the VIS/IR model on the GLDAS record")
        console.print(f"visir_model committed: {runs.fit_model(settings)}")
        console.rule(f"5. backfill downscaled 1 km and 400 m cubes → {cubes}")
        for month, commits in runs.backfill(settings, start, end).items():
            console.print(f"{month}: " + ", ".join(f"{k} {v}" for k, v in commits.items()))

        console.rule("6. validate against the nature-run truth and the stations")
        report_dir = Path(workdir) / "report"
        scores = validate_store(
            cubes,
            report_dir,
            truth_url=f"{archive}/truth.zarr",
            insitu_dir=_local_insitu(archive, storage_options, Path(workdir)),
            archive_url=archive,
            storage_options=storage_options,
        )
    console.print(f"report: {report_dir / 'report.md'}")
    console.rule("7. describe the cubes as a STAC catalog")
    catalog, _ = write_stac_catalog(cubes, storage_options=storage_options)
    console.print(f"STAC catalog: {catalog}")
    return scores


def _summarise(settings: Settings, product: str, region) -> dict:
    urls = refs.granule_urls(settings.archive, product, settings.storage_options)
    ds = open_granules(
        product, urls, settings.storage_options, window=region, variables=[SUMMARY_VARIABLE[product]]
    )
    values = ds[SUMMARY_VARIABLE[product]]
    finite = np.isfinite(values.values)
    return {
        "granules": len(urls),
        "dims": " × ".join(f"{d} {n}" for d, n in ds[SUMMARY_VARIABLE[product]].sizes.items()),
        "first": str(ds["time"].values.min())[:16],
        "last": str(ds["time"].values.max())[:16],
        "variable": SUMMARY_VARIABLE[product],
        "valid %": f"{100 * finite.mean():.1f}",
        "mean": f"{float(values.values[finite].mean()):.3f}" if finite.any() else "–",
    }


def _local_insitu(archive: str, storage_options: dict | None, workdir: Path) -> Path:
    """The archive's ISMN tree as a local folder (the ismn package reads local files only)."""
    fs, path = fsspec.core.url_to_fs(f"{archive}/ismn", **(storage_options or {}))
    if isinstance(fs, LocalFileSystem):
        return Path(path)
    local = workdir / "ismn"
    fs.get(path, str(local), recursive=True)
    return local


def _print_rows(console: Console, rows: dict) -> None:
    table = Table(title="products opened through kerchunk references (Oklahoma window)")
    table.add_column("product")
    for column in next(iter(rows.values())):
        table.add_column(column)
    for product, row in rows.items():
        table.add_row(product, *(str(v) for v in row.values()))
    console.print(table)
