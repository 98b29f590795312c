"""Flow: reprocess a period, one task per month, resumable.

A month the cubes already hold with the same model and parameters is skipped, so a failed or interrupted
backfill is resumed by running it again. Months run one after another (each is one commit per cube, and
commits to one cube do not run concurrently); the first month that fails after its retries fails the flow.
Slices are marked `final`. References and the model must exist (refs and model flows).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from prefect import flow, get_run_logger
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
    with dask_client(settings.scheduler_address, settings.n_workers):
        for year, month in runs.months(start, end):
            done[f"{year}-{month:02d}"] = downscale_month_task(config, year, month, start, end, "final")
    skipped = sum(result == SKIPPED for result in done.values())
    get_run_logger().info(
        "backfill %s … %s: %d months done, %d skipped", start, end, len(done) - skipped, skipped
    )
    return done
