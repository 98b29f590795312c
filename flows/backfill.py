"""Flow: reprocess a period, one task per month, resumable.

A month the cubes already hold with the same model and parameters, made from the granules the archive offers
now (`soilcube.runs.month_committed`), is skipped, so a failed or interrupted backfill is resumed by running
it again. Months run one after another (each is one commit per cube, and commits to one cube do not run
concurrently); a month that fails after its retries (none for days without inputs: they fail the same way
again) does not stop the others: all are tried, then the flow fails naming each failed month and its error.
Slices are marked `final`. References and the model must exist (refs and model flows). The STAC catalog
of the cubes is written anew once any month committed.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from prefect import flow, get_run_logger
from tasks.store import describe_cubes
from tasks.visir import SKIPPED, downscale_month_task

from soilcube import runs
from soilcube.cluster import dask_client
from soilcube.config import load_settings

PRODUCTS = ("visir",)


@flow(name="soilcube-backfill")
def backfill_flow(
    start: date,
    end: date,
    products: tuple[str, ...] = ("visir",),
    config_file: str | None = None,
    **overrides: Any,
) -> dict[str, dict[str, str] | str]:
    """Downscale every day of [start, end], month by month.

    Returns {"YYYY-MM": {cube: commit id} or "skipped"}."""
    unknown = set(products) - set(PRODUCTS)
    if unknown:
        raise ValueError(f"backfill does not support {sorted(unknown)} yet; supported: {', '.join(PRODUCTS)}")
    settings = load_settings(config_file, **overrides)
    config = settings.model_dump()
    done: dict[str, dict[str, str] | str] = {}
    failed: dict[str, BaseException] = {}
    with dask_client(settings.scheduler_address, settings.n_workers):
        for year, month in runs.months(start, end):
            state = downscale_month_task(config, year, month, start, end, "final", return_state=True)
            label = f"{year}-{month:02d}"
            if state.is_completed():
                done[label] = state.result()
            else:
                failed[label] = state.result(raise_on_failure=False)
    skipped = sum(result == SKIPPED for result in done.values())
    if failed or len(done) > skipped:  # (a failed month's commit may stand: `store.commit_together`)
        describe_cubes(config)
    get_run_logger().info(
        "backfill %s … %s: %d months done, %d skipped, %d failed",
        start, end, len(done) - skipped, skipped, len(failed),
    )
    if failed:
        raise runs.BackfillError(runs.backfill_failure(failed, done))
    return done
