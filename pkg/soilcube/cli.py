"""The `soilcube` command line. Every verb reads `--config FILE` and `SOILCUBE_*` variables."""

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
    region: Annotated[str | None, typer.Option(help="named region (oklahoma, conus)")] = None,
    bbox: Annotated[str | None, typer.Option(help="W,S,E,N instead of a named region")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed of the nature run")] = None,
    gldas_years: Annotated[int | None, typer.Option(help="years of GLDAS record before --start")] = None,
    products: Annotated[str | None, typer.Option(help="comma-separated subset of products")] = None,
    config: ConfigOption = None,
):
    """Synthesize a granule archive in the real layouts from a nature run (the truth is saved too)."""
    from soilcube.grids import region as make_region
    from soilcube.synth.archive import build_archive

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
    )
    _print_summary("synthetic archive", summary)


@app.command()
def refs(
    archive: ArchiveOption = None,
    products: Annotated[str | None, typer.Option(help="comma-separated subset of products")] = None,
    config: ConfigOption = None,
):
    """Build or update the kerchunk references of an archive (incremental)."""
    from soilcube.refs import build_references

    s = _settings(config, archive=archive)
    report = build_references(_require(s.archive, "archive"), _products(products), s.storage_options)
    _print_summary("references", report)
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
    """Synthesize a month over Oklahoma, reference it, and open every product through the readers."""
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
        run_demo(
            root,
            date.fromisoformat(start),
            date.fromisoformat(end),
            seed=seed,
            storage_options=storage_options,
            console=console,
        )


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
