"""The `soilcube` command line. The data verbs read `--config FILE` and `SOILCUBE_*` variables."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from soilcube.config import Settings, load_settings

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_show_locals=False)
bench_app = typer.Typer(help="Benchmarks: figures as ratios measured in one run.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
# Wide enough for the tables when the output is a file or a CI log (rich falls back to 80 columns).
console = Console(width=None if sys.stdout.isatty() else 150)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="TOML settings file", exists=True, dir_okay=False)
]
ArchiveOption = Annotated[str | None, typer.Option(help="archive URL (file://… or s3://…)")]
DAY_FORMAT = ["%Y-%m-%d"]
StartOption = Annotated[datetime, typer.Option(formats=DAY_FORMAT, help="first day, YYYY-MM-DD")]
EndOption = Annotated[datetime, typer.Option(formats=DAY_FORMAT, help="last day, YYYY-MM-DD")]
REGION_SETTING = "'--region' (or SOILCUBE_REGION, the config's region)"


def main() -> None:
    """The `soilcube` command: the app, with an error of the work (a path, a value, a missing input, a
    failed run) said on stderr without a traceback (exit 1); SOILCUBE_DEBUG=1 shows the traceback."""
    try:
        app()
    except Exception as error:
        if os.environ.get("SOILCUBE_DEBUG") or not _said_plainly(error):
            raise
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        err.print(f"[red]error:[/red] {escape(str(error) or type(error).__name__)}")
        for note in getattr(error, "__notes__", []):
            err.print(f"  {escape(note)}")
        err.print("[dim](SOILCUBE_DEBUG=1 shows the traceback)[/dim]")
        sys.exit(1)


def _said_plainly(error: Exception) -> bool:
    """Errors of the work, not of the code (those keep their traceback)."""
    import icechunk  # here, not at import: `soilcube --help` stays fast

    from soilcube.sources import GranuleError

    of_the_work = (ValueError, OSError, RuntimeError, GranuleError, icechunk.IcechunkError)
    return isinstance(error, of_the_work) and not isinstance(error, (NotImplementedError, RecursionError))


def _days(start: datetime, end: datetime) -> tuple[date, date]:
    if end < start:
        raise typer.BadParameter(f"{end:%Y-%m-%d} is before --start {start:%Y-%m-%d}", param_hint="'--end'")
    return start.date(), end.date()


def _checked_region(value: str | None, where: str) -> str | None:
    """`value` if it names a region or is a W,S,E,N box, else a usage error saying `where` it came from."""
    from soilcube.grids import region

    if value is not None:
        try:
            region(value)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint=where) from None
    return value


def _checked_products(value: str | None, known) -> list[str] | None:
    """The comma-separated `--products`, each one of `known`, else a usage error."""
    products = _products(value)
    unknown = sorted(set(products or ()) - set(known))
    if unknown:
        raise typer.BadParameter(f"unknown {unknown}; known: {', '.join(known)}", param_hint="'--products'")
    return products


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
    start: StartOption,
    end: EndOption,
    archive: ArchiveOption = None,
    region: Annotated[str | None, typer.Option(
        help="named region (oklahoma; conus is too large for the 200 m nature run)")] = None,
    bbox: Annotated[str | None, typer.Option(help="W,S,E,N instead of a named region")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed of the nature run")] = None,
    gldas_years: Annotated[
        float | None, typer.Option(help="years of GLDAS record before --start (fractions allowed)")
    ] = None,
    products: Annotated[str | None, typer.Option(help="comma-separated subset of products")] = None,
    lst_noise_k: Annotated[float | None, typer.Option(
        help="VIIRS LST per-pixel noise σ (K), for sensitivity experiments (default: the "
             "observation model's, docs/synthetic-archive.md)")] = None,
    overwrite: Annotated[bool, typer.Option(
        help="write into an archive that holds granules already (same names are replaced)")] = False,
    config: ConfigOption = None,
):
    """Synthesize a granule archive in the real layouts from a nature run (the truth is saved too)."""
    from soilcube.grids import region as make_region
    from soilcube.synth.archive import PRODUCTS, archive_folders, build_archive
    from soilcube.synth.observe import LST_NOISE_K

    if region and bbox:
        raise typer.BadParameter("give --region or --bbox, not both", param_hint="'--bbox'")
    first, last = _days(start, end)
    wanted = _checked_products(products, PRODUCTS)
    s = _settings(config, archive=archive, region=bbox or region, seed=seed, gldas_years=gldas_years)
    _checked_region(s.region, "'--bbox'" if bbox else "'--region'" if region else REGION_SETTING)
    target = _require(s.archive, "archive")
    held = archive_folders(target, s.storage_options)
    if held and not overwrite:  # another run's granules would be mixed with this one's
        raise typer.BadParameter(f"{target} holds an archive already ({', '.join(held)}); "
                                 "pass --overwrite to write into it", param_hint="'--archive'")
    summary = build_archive(
        make_region(s.region),
        first,
        last,
        target,
        seed=s.seed,
        gldas_years=s.gldas_years,
        storage_options=s.storage_options,
        products=wanted,
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
    from soilcube.sources import READERS

    s = _settings(config, archive=archive)
    wanted = _checked_products(products, list(READERS))
    report = build_references(_require(s.archive, "archive"), wanted, s.storage_options)
    _print_summary("references", report)
    for name, reason in report.failed.items():  # (reasons are any library's words: no markup)
        console.print(f"[red]unreadable granule[/red] {escape(name)}: {escape(reason)}", soft_wrap=True)
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
    start: Annotated[datetime, typer.Option(formats=DAY_FORMAT, help="first day", show_default="2016-06-01")
                     ] = datetime(2016, 6, 1),
    end: Annotated[datetime, typer.Option(formats=DAY_FORMAT, help="last day", show_default="2016-06-30")
                   ] = datetime(2016, 6, 30),
):
    """The whole chain on a synthetic month over Oklahoma: synthesize, reference, fit, backfill, validate."""
    from soilcube.demo import run_demo

    first, last = _days(start, end)
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
            first,
            last,
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
    _checked_region(s.region, REGION_SETTING)
    _require(s.archive, "archive")
    _require(s.store, "store")
    return s


@run_app.command("model")
def run_model(
    archive: ArchiveOption = None,
    store: StoreOption = None,
    by_month: Annotated[bool, typer.Option(help="also stratify by calendar month (public code)")] = False,
    absolute_dt: Annotated[bool, typer.Option(help="fit on |dT| (public code's model build)")] = False,
    region: RegionOption = None,
    config: ConfigOption = None,
):
    """Fit the VIS/IR model on the archive's GLDAS record and write a new `visir_model` version."""
    from soilcube import runs
    from soilcube.cluster import dask_client

    s = _run_settings(config, archive, store, region)
    with dask_client(s.scheduler_address, s.n_workers, console=console):
        snapshot = runs.fit_model(s, by_month=by_month, absolute_dt=absolute_dt)
    console.print(f"visir_model committed: {snapshot}")


@run_app.command("backfill")
def run_backfill(
    start: StartOption,
    end: EndOption,
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

    _checked_products(products, ["visir"])
    first, last = _days(start, end)
    s = _run_settings(config, archive, store, region)
    progress = Progress(TextColumn("backfill"), BarColumn(), MofNCompleteColumn(), TextColumn("months"),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console)
    committed = False
    with dask_client(s.scheduler_address, s.n_workers, console=console), progress:
        task = progress.add_task("backfill", total=len(runs.months(first, last)))

        def month_ended(month: str, outcome: dict | Exception) -> None:
            nonlocal committed
            if not isinstance(outcome, Exception):  # (a failure is logged by the backfill itself)
                said = ", ".join(f"{k} {v}" for k, v in outcome.items()) or "already committed, skipped"
                progress.console.print(f"{month}: {said}", soft_wrap=True)
                committed = committed or bool(outcome)
            progress.advance(task)

        try:
            runs.backfill(s, first, last, on_month=month_ended)
        except Exception:  # failed months (a commit may stand: `commit_together`): describe all the same
            _describe_cubes(s)
            raise
    if committed:
        _describe_cubes(s)


@run_app.command("nrt")
def run_nrt(
    run_date: Annotated[
        datetime | None, typer.Option("--date", formats=DAY_FORMAT, help="run date (default: today, UTC)")
    ] = None,
    archive: ArchiveOption = None,
    store: StoreOption = None,
    region: RegionOption = None,
    config: ConfigOption = None,
):
    """The daily near-real-time run: update references, downscale run date − 3 days (and re-check 2)."""
    from soilcube import runs
    from soilcube.cluster import dask_client

    s = _run_settings(config, archive, store, region)
    day = run_date.date() if run_date else datetime.now(UTC).date()
    with dask_client(s.scheduler_address, s.n_workers, console=console):
        commits = runs.nrt(s, day)
    made = ", ".join(f"{k} {v}" for k, v in commits.items())
    console.print(made or "every day is final already: nothing made")
    if commits:
        _describe_cubes(s)


def _describe_cubes(s: Settings) -> None:
    """The STAC catalog of the store's cubes written anew after a run committed; as in the flows, a failure
    is a warning (the run's commits stand), not an error of the run."""
    from soilcube.access import write_stac_catalog

    try:
        catalog, _ = write_stac_catalog(s.store, storage_options=s.storage_options)
    except Exception as error:
        console.print(f"[yellow]warning:[/yellow] the STAC catalog was not written anew "
                      f"({escape(str(error))}); run `soilcube store stac`", soft_wrap=True)
        return
    console.print(f"STAC catalog: {catalog}")


store_app = typer.Typer(help="The cubes' versions: history, release tags, rollback, garbage collection.",
                        no_args_is_help=True)
app.add_typer(store_app, name="store")
CubeOption = Annotated[str, typer.Option(help="cube name: downscaled_1km, downscaled_400m, visir_model, …")]


def _store_settings(config: Path | None, store: str | None, cube: str | None) -> tuple[Settings, str]:
    """The settings and the store URL, for the store verbs; `cube` (if given) checked against the names."""
    from soilcube.store import CUBE_NAMES

    if cube is not None and cube not in CUBE_NAMES:
        raise typer.BadParameter(f"unknown cube {cube!r}; cubes are {', '.join(CUBE_NAMES)}",
                                 param_hint="'--cube'")
    s = _settings(config, store=store)
    return s, _require(s.store, "store")


def _confirmed(yes: bool, consequence: str) -> None:
    """A store verb that changes what readers see or may read goes ahead only with --yes."""
    if not yes:
        raise typer.BadParameter(f"{consequence}: add --yes to do it", param_hint="'--yes'")


@store_app.command("history")
def store_history(
    cube: CubeOption,
    store: StoreOption = None,
    limit: Annotated[int, typer.Option(min=1, help="newest commits shown")] = 20,
    config: ConfigOption = None,
):
    """The commits of a cube's main branch, newest first: what each run wrote, and the tags on them."""
    from soilcube import store as cubes

    s, url = _store_settings(config, store, cube)
    commits = cubes.history(url, cube, storage_options=s.storage_options)
    tags = cubes.tags_by_snapshot(url, cube, storage_options=s.storage_options)
    shown = f", the newest {limit}" if len(commits) > limit else ""
    _print_summary(f"{cube}: {len(commits)} commits on main{shown}",
                   [_commit_row(commit, tags.get(commit.snapshot_id, [])) for commit in commits[:limit]])


def _commit_row(commit, tags: list[str]) -> dict[str, str]:
    meta = commit.metadata
    days = ""
    if meta.get("operation") == "write_slices":  # a run's (not the template's, not a whole dataset's)
        days = f"{meta['time_start'][:10]} … {meta['time_end'][:10]} ({meta['n_times']})"
    return {"snapshot": commit.snapshot_id, "written (UTC)": f"{commit.written_at:%Y-%m-%d %H:%M:%S}",
            "unit": meta.get("key") or "", "status": meta.get("status") or "", "time steps": days,
            "parameters": meta.get("parameters_hash", "")[:12], "code": meta.get("soilcube_version", ""),
            "tags": ", ".join(tags), "message": escape(commit.message)}


@store_app.command("tag")
def store_tag(
    tag: Annotated[str, typer.Argument(help="release name, e.g. v2024.1")],
    cube: CubeOption,
    store: StoreOption = None,
    snapshot: Annotated[str | None, typer.Option(help="snapshot id (default: the head of main)")] = None,
    config: ConfigOption = None,
):
    """Tag a snapshot of a cube as a release: analysts open it with `open_cube(url, version=TAG)`, and
    neither garbage collection nor expiry removes it."""
    from soilcube import store as cubes

    s, url = _store_settings(config, store, cube)
    tagged = cubes.tag_release(url, cube, tag, snapshot_id=snapshot, storage_options=s.storage_options)
    console.print(f"{cube}: tag {escape(tag)} → {tagged}")


@store_app.command("untag")
def store_untag(
    tag: Annotated[str, typer.Argument(help="the tag to delete (`store history` shows them)")],
    cube: CubeOption,
    store: StoreOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="confirm: gc may delete what only the tag kept")] = False,
    config: ConfigOption = None,
):
    """Delete a tag of a cube (a release, or a rollback's `rolled-back-…`). What only the tag kept (commits
    rolled back, expired snapshots) is deleted by the next `store gc`; icechunk does not let the name be
    used again."""
    from soilcube import store as cubes

    s, url = _store_settings(config, store, cube)
    _confirmed(yes, "what only the tag keeps may then be deleted by gc")
    snapshot = cubes.delete_release(url, cube, tag, storage_options=s.storage_options)
    console.print(f"{cube}: tag {escape(tag)} deleted (it was on {snapshot})")


@store_app.command("rollback")
def store_rollback(
    snapshot: Annotated[str, typer.Argument(help="snapshot id to put main back at (`store history`)")],
    cube: CubeOption,
    store: StoreOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="confirm: main moves back for every reader")] = False,
    config: ConfigOption = None,
):
    """Put a cube's main branch back at an earlier snapshot; the head it leaves stays under a new tag.
    The 1 km and 400 m cubes are separate repositories: roll back each."""
    from soilcube import store as cubes

    s, url = _store_settings(config, store, cube)
    _confirmed(yes, "rolling back changes what every reader sees")
    kept = cubes.rollback(url, cube, snapshot, storage_options=s.storage_options)
    console.print(f"{cube}: main is at {snapshot} already, nothing changed" if kept is None
                  else f"{cube}: main is at {snapshot}; the commits it left are kept under tag {kept}")


@store_app.command("gc")
def store_gc(
    store: StoreOption = None,
    cube: Annotated[str | None, typer.Option(help="one cube (default: every cube in the store)")] = None,
    min_age_hours: Annotated[float | None, typer.Option(
        min=0, help="keep objects younger than this: a run still writing has uncommitted chunks",
        show_default="24")] = None,
    dry_run: Annotated[bool, typer.Option(help="count, delete nothing")] = False,
    config: ConfigOption = None,
):
    """Delete what no commit or tag reaches (chunks of failed or refused runs, expired snapshots); the
    history is kept."""
    from datetime import timedelta

    from soilcube import store as cubes

    s, url = _store_settings(config, store, cube)
    names = [cube] if cube else cubes.cubes_in(url, storage_options=s.storage_options)
    if not names:
        raise ValueError(f"no cube in the store {url}")
    min_age = None if min_age_hours is None else timedelta(hours=min_age_hours)
    rows = [{"cube": name, **cubes.collect_garbage(url, name, min_age=min_age, dry_run=dry_run,
                                                  storage_options=s.storage_options)}
            for name in names]
    done = "it would delete (dry run)" if dry_run else "deleted"
    _print_summary(f"garbage collection: objects {done}", rows)


@store_app.command("expire")
def store_expire(
    cube: CubeOption,
    older_than_days: Annotated[float, typer.Option(min=0, help="expire the snapshots older than this")],
    store: StoreOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="confirm: main can no longer be rolled back to them")]
    = False,
    config: ConfigOption = None,
):
    """Expire a cube's snapshots older than the given age (and than a day) and delete what only they used
    (chunks that later runs replaced). The head and tagged releases stay; the expired commits leave the
    history with their granule lists, while the run records in the cube keep each month's parameters and
    input digest."""
    from datetime import UTC, datetime, timedelta

    from soilcube import store as cubes

    s, url = _store_settings(config, store, cube)
    _confirmed(yes, "expired snapshots cannot be rolled back to or read")
    older_than = datetime.now(UTC) - timedelta(days=older_than_days)
    expired = cubes.expire(url, cube, older_than, storage_options=s.storage_options)
    snapshots = "1 snapshot" if len(expired) == 1 else f"{len(expired)} snapshots"
    console.print(f"{cube}: {snapshots} older than {older_than:%Y-%m-%d %H:%M} UTC expired")


@store_app.command("stac")
def store_stac(
    store: StoreOption = None,
    out: Annotated[str | None, typer.Option(help="catalog folder URL (default: <store>/stac)")] = None,
    config: ConfigOption = None,
):
    """Describe the store's cubes as a STAC catalog: a collection per cube (box, period made, datacube
    dimensions and variables, the cube as asset with its snapshot id and tags)."""
    from soilcube.access import write_stac_catalog

    s, url = _store_settings(config, store, None)
    catalog, collections = write_stac_catalog(url, out, s.storage_options)
    rows = [{"collection": c.id, "period": " … ".join(f"{t:%Y-%m-%d}" if t else "–"
                                                      for t in c.extent.temporal.intervals[0]),
             "box (W, S, E, N)": ", ".join(f"{v:.3f}" for v in c.extent.spatial.bboxes[0]),
             "snapshot": c.assets["cube"].extra_fields["icechunk:snapshot_id"]} for c in collections]
    _print_summary(f"STAC catalog {catalog}", rows)


@app.command()
def validate(
    out: Annotated[Path, typer.Option(help="report directory")],
    store: StoreOption = None,
    truth: Annotated[
        str | None, typer.Option(help="truth cube URL (synthetic archive: <archive>/truth.zarr)")
    ] = None,
    insitu: Annotated[Path | None, typer.Option(help="ISMN download folder or zip", exists=True)] = None,
    archive: Annotated[
        str | None,
        typer.Option(help="granule archive URL (or SOILCUBE_ARCHIVE, the config's archive): also score "
                          "SMAP L4 bicubic-interpolated to 1 km, and the 1 km products against its airborne "
                          "campaign flights"),
    ] = None,
    json_file: Annotated[Path | None, typer.Option("--json", help="write {product: {metric: value}}")] = None,
    config: ConfigOption = None,
):
    """Score the cubes (and, with --archive, SMAP L4 bicubic at 1 km) against a truth and/or stations (and,
    with --archive, the campaign flights); write a Markdown report with tables and figures."""
    from soilcube.validate.osse import validate_store

    s = _settings(config, store=store, archive=archive)
    if not (truth or insitu):
        raise typer.BadParameter("nothing to score against: give --truth and/or --insitu")
    if json_file and not json_file.parent.is_dir():
        raise typer.BadParameter(f"folder {json_file.parent} does not exist", param_hint="'--json'")
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


@bench_app.command("access")
def bench_access(
    quick: Annotated[bool, typer.Option(help="a month of the cube instead of a year")] = False,
    json_file: Annotated[Path | None, typer.Option("--json", help="also write the figures as JSON")] = None,
):
    """Analysts' reads through open_cube (open, a day's map, a pixel's and a box's time series) on a year of
    a 1 km cube: through the embedded S3 server against local disk (ratios)."""
    from soilcube.bench import run_access_benchmark

    figures = run_access_benchmark(console=console, days=31 if quick else 365)
    if json_file:
        json_file.write_text(json.dumps(figures, indent=2))
