"""Flow: the daily near-real-time run (cron, flows/prefect.yaml).

Target date = run date − 3 days, plus a trailing window re-checked for late or reprocessed granules
(`soilcube.runs.nrt_days`): new granules get references, then those days are downscaled in one commit per
cube with slices marked `nrt`; days a backfill already made final are left alone. A failed run leaves the
cubes as they were; the next day's run re-checks. The STAC catalog of the cubes is written anew after the
commits.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from prefect import flow, get_run_logger
from tasks.refs import build_references_task
from tasks.store import describe_cubes
from tasks.visir import downscale_days_task

from soilcube.cluster import dask_client
from soilcube.config import load_settings
from soilcube.runs import nrt_days_to_make


@flow(name="soilcube-nrt")
def nrt_flow(
    run_date: date | None = None, config_file: str | None = None, **overrides: Any
) -> dict[str, str]:
    """Reference new granules, then downscale the NRT days of `run_date` (default: today, UTC)."""
    run_date = run_date or datetime.now(UTC).date()
    settings = load_settings(config_file, **overrides)
    config = settings.model_dump()
    with dask_client(settings.scheduler_address, settings.n_workers):
        build_references_task(config, None)
        days = nrt_days_to_make(settings, run_date)
        if not days:
            get_run_logger().info("NRT run of %s: its days are final already, nothing to downscale", run_date)
            return {}
        get_run_logger().info("NRT run of %s: days %s", run_date, ", ".join(map(str, days)))
        commits = downscale_days_task(config, days, "nrt")
    if commits:
        describe_cubes(config)
    return commits
