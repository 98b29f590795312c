"""The `soilcube` command line. The data verbs read `--config FILE` and `SOILCUBE_*` variables."""

from __future__ import annotations

import contextlib
import json
import sys
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from soilcube.config import Settings, load_settings

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_show_locals=False)
bench_app = typer.Typer(help="Benchmarks: figures as ratios measured in one run.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
# Wide enough for the tables when the output is a file or a CI log (rich falls back to 80 columns).
console = Console(width=None if sys.stdout.isatty() else 150)

ConfigOption = Annotated[Path | None, typer.Option("--config", help="TOML settings file", exists=True)]
ArchiveOption = Annotated[str | None, typer.Option(help="archive URL (file://… or s3://…)")]


def _settings(config: Path | None, **overrides) -> Settings:
    return load_settings(config, **overrides)


def _require(value: str | None, what: str) -> str:
    if not value:
        raise typer.BadParameter(f"no {what} given: pass --{what} or set SOILCUBE_{what.upper()}")
    return value


def _products(value: str | None) -> list[str] | None:
    return [p.strip() for p in value.split(",") if p.strip()] if value else None


@app.command()
def synth(
    start: Annotated[str, typer.Option(help="first day, YYYY-MM-DD")],
    end: Annotated[str, typer.Option(help="last day, YYYY-MM-DD")],
    archive: ArchiveOption = None,
    region: Annotated[str | None, typer.Option(
        help="named region (oklahoma; conus is too large for the 200 m nature run)")] = None,
    bbox: Annotated[str | None, typer.Option(help="W,S,E,N instead of a named region")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed of the nature run")] = None,
    gldas_years: Annotated[int | None, typer.Option(help="years of GLDAS record before --start")] = None,
    products: Annotated[str | None, typer.Option(help="comma-separated subset of products")] = None,
    lst_noise_k: Annotated[float | None, typer.Option(
        help="VIIRS LST per-pixel noise σ (K), for sensitivity experiments (default: the "
             "observation model's, docs/synthetic-archive.md)")] = None,
    config: ConfigOption = None,
):
    """Synthesize a granule archive in the real layouts from a nature run (the truth is saved too)."""
    from soilcube.grids import region as make_region
    from soilcube.synth.archive import build_archive
    from soilcube.synth.observe import LST_NOISE_K

    s = _settings(config, archive=archive, region=bbox or region, seed=seed, gldas_years=gldas_years)
    summary = build_archive(
        make_region(s.region),
        date.fromisoformat(start),
        date.fromisoformat(end),
        _require(s.archive, "archive"),
        seed=s.seed,
        gldas_years=s.gldas_years,
        storage_options=s.storage_options,
        products=_products(products),
        lst_noise_k=LST_NOISE_K if lst_noise_k is None else lst_noise_k,
    )
    _print_summary("synthetic archive", summary)


@app.command()
def refs(
    archive: ArchiveOption = None,
    products: Annotated[str | None, typer.Option(help="comma-separated subset of products")] = None,
    config: ConfigOption = None,
):
    """Build or update the kerchunk references of an archive (incremental). Lists each granule that cannot
    be read, with the reason, and exits 1 while the archive holds one."""
    from soilcube.refs import build_references

    s = _settings(config, archive=archive)
    report = build_references(_require(s.archive, "archive"), _products(products), s.storage_options)
    _print_summary("references", report)
    for name, reason in report.failed.items():
        console.print(f"[red]unreadable granule[/red] {name}: {reason}", soft_wrap=True)
    if report.failed:
        raise typer.Exit(code=1)


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="where the demo writes")] = Path("soilcube-demo"),
    store: Annotated[str | None, typer.Option(help="archive/store root URL; default: WORKDIR")] = None,
    s3: Annotated[
        bool, typer.Option(help="run against an embedded S3 server (SeaweedFS) on loopback")
    ] = False,
    seed: Annotated[int, typer.Option(help="random seed of the nature run")] = 0,
    start: Annotated[str, typer.Option(help="first day")] = "2016-06-01",
    end: Annotated[str, typer.Option(help="last day")] = "2016-06-30",
):
    """The whole chain on a synthetic month over Oklahoma: synthesize, reference, fit, backfill, validate."""
    from soilcube.demo import run_demo

    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        storage_options: dict = {}
        if s3:
            from soilcube.embedded import SeaweedFS

            server = stack.enter_context(SeaweedFS(workdir / "s3"))
            root, storage_options = server.new_bucket("demo"), server.storage_options
            console.print(f"embedded S3 server at {server.endpoint}, bucket {root}")
        else:
            root = store or workdir.resolve().as_uri()
        scores = run_demo(
            root,
            workdir,
            date.fromisoformat(start),
            date.fromisoformat(end),
            seed=seed,
            storage_options=storage_options,
            console=console,
        )
    _print_scores(scores)


run_app = typer.Typer(help="Units of work on a Dask cluster: model fit, backfill, NRT.", no_args_is_help=True)
app.add_typer(run_app, name="run")
StoreOption = Annotated[str | None, typer.Option(help="cube store URL (file://… or s3://…)")]
RegionOption = Annotated[str | None, typer.Option(
    help="named region or W,S,E,N: the archive's (as given to synth); default SOILCUBE_REGION or oklahoma")]


def _run_settings(
    config: Path | None, archive: str | None, store: str | None, region: str | None
) -> Settings:
    s = _settings(config, archive=archive, store=store, region=region)
    _require(s.archive, "archive")
    _require(s.store, "store")
    return s


@run_app.command("model")
def run_model(
    archive: ArchiveOption = None,
    store: StoreOption = None,
    by_month: Annotated[bool, typer.Option(help="also stratify by calendar month (public code)")] = False,
    region: RegionOption = None,
    config: ConfigOption = None,
):
    """Fit the VIS/IR model on the archive's GLDAS record and write a new `visir_model` version."""
    from soilcube import runs
    from soilcube.cluster import dask_client

    s = _run_settings(config, archive, store, region)
    with dask_client(s.scheduler_address, s.n_workers, console=console):
        snapshot = runs.fit_model(s, by_month=by_month)
    console.print(f"visir_model committed: {snapshot}")


@run_app.command("backfill")
def run_backfill(
    start: Annotated[str, typer.Option(help="first day, YYYY-MM-DD")],
    end: Annotated[str, typer.Option(help="last day, YYYY-MM-DD")],
    archive: ArchiveOption = None,
    store: StoreOption = None,
    products: Annotated[str, typer.Option(help="products to make (visir)")] = "visir",
    region: RegionOption = None,
    config: ConfigOption = None,
):
    """Downscale from --start to --end month by month as 'final' slices; months already committed are
    skipped."""
    from soilcube import runs
    from soilcube.cluster import dask_client

    unknown = set(_products(products)) - {"visir"}
    if unknown:
        raise typer.BadParameter(f"products {sorted(unknown)} are not available; available: visir")
    s = _run_settings(config, archive, store, region)
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    with dask_client(s.scheduler_address, s.n_workers, console=console):
        for month, commits in runs.backfill(s, first, last).items():
            console.print(
                f"{month}: "
                + (", ".join(f"{k} {v}" for k, v in commits.items()) or "already committed, skipped")
            )


@run_app.command("nrt")
def run_nrt(
    run_date: Annotated[str | None, typer.Option("--date", help="run date (default: today, UTC)")] = None,
    archive: ArchiveOption = None,
    store: StoreOption = None,
    region: RegionOption = None,
    config: ConfigOption = None,
):
    """The daily near-real-time run: update references, downscale run date − 3 days (and re-check 2)."""
    from datetime import UTC, datetime

    from soilcube import runs
    from soilcube.cluster import dask_client

    s = _run_settings(config, archive, store, region)
    day = date.fromisoformat(run_date) if run_date else datetime.now(UTC).date()
    with dask_client(s.scheduler_address, s.n_workers, console=console):
        commits = runs.nrt(s, day)
    made = ", ".join(f"{k} {v}" for k, v in commits.items())
    console.print(made or "every day is final already: nothing made")


@app.command()
def validate(
    out: Annotated[Path, typer.Option(help="report directory")],
    store: StoreOption = None,
    truth: Annotated[
        str | None, typer.Option(help="truth cube URL (synthetic archive: <archive>/truth.zarr)")
    ] = None,
    insitu: Annotated[Path | None, typer.Option(help="ISMN download folder or zip")] = None,
    archive: Annotated[
        str | None,
        typer.Option(help="granule archive URL (or SOILCUBE_ARCHIVE, the config's archive): also score "
                          "SMAP L4 bicubic-interpolated to 1 km"),
    ] = None,
    json_file: Annotated[Path | None, typer.Option("--json", help="write {product: {metric: value}}")] = None,
    config: ConfigOption = None,
):
    """Score the cubes (and, with --archive, SMAP L4 bicubic at 1 km) against a truth and/or stations; write
    a Markdown report with tables and figures."""
    from soilcube.validate.osse import validate_store

    s = _settings(config, store=store, archive=archive)
    scores = validate_store(
        _require(s.store, "store"),
        out,
        truth_url=truth,
        insitu_dir=insitu,
        archive_url=s.archive,
        storage_options=s.storage_options,
    )
    _print_scores(scores)
    console.print(f"report: {out / 'report.md'}")
    if json_file:
        json_file.write_text(json.dumps(scores, indent=2) + "\n")


def _print_scores(scores: dict) -> None:
    table = Table(title="scores against the truth")
    metrics = ["R", "bias", "RMSE", "ubRMSE", "SSD", "SSD_ref", "KGE", "artifact_index", "n"]
    table.add_column("product")
    for metric in metrics:
        table.add_column(metric, justify="right")
    for product, values in scores.items():
        cells = [values.get(m) for m in metrics]
        table.add_row(
            product, *("–" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v) for v in cells)
        )
    console.print(table)


@app.command("open")
def open_(
    url: Annotated[str, typer.Argument(help="cube URL, <store>/<cube>")],
    version: Annotated[str | None, typer.Option(help="tag or snapshot id (default: latest)")] = None,
    config: ConfigOption = None,
):
    """Open a cube the way analysts do (xarray, lazily) and print what it holds."""
    from soilcube.access import open_cube

    s = _settings(config)
    console.print(open_cube(url, version=version, storage_options=s.storage_options))


def _print_summary(title: str, summary) -> None:
    rows = summary.rows() if hasattr(summary, "rows") else summary
    if isinstance(rows, dict):
        rows = [{"item": k, "value": v} for k, v in rows.items()]
    table = Table(title=title)
    for column in rows[0] if rows else []:
        table.add_column(str(column))
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)


@bench_app.command("refs")
def bench_refs(
    json_file: Annotated[Path | None, typer.Option("--json", help="also write the figures as JSON")] = None,
):
    """Read one SMAP L4 scene window through references vs h5py (ratio), and time to reference a granule."""
    from soilcube.bench import run_refs_benchmark

    figures = run_refs_benchmark(console=console)
    if json_file:
        json_file.write_text(json.dumps(figures, indent=2))


@bench_app.command("visir")
def bench_visir(
    quick: Annotated[bool, typer.Option(help="one band of the 400 m day, 4 years of fit")] = False,
    json_file: Annotated[Path | None, typer.Option("--json", help="also write the figures as JSON")] = None,
):
    """VIS/IR: apply + correct vs a numpy triad (ratio), a global 400 m day on a local cluster (wall time,
    peak memory per worker), the model fit over 40 years of CONUS, planning the global VIIRS mosaic."""
    from soilcube.bench import run_visir_benchmark

    figures = run_visir_benchmark(console=console, quick=quick)
    if json_file:
        json_file.write_text(json.dumps(figures, indent=2))
