"""Tasks of the VIS/IR product: fit the model, downscale a month (resumable) or a list of days."""

from __future__ import annotations

from datetime import date

from prefect import task
from prefect.cache_policies import NO_CACHE

from soilcube import runs
from soilcube.config import Settings
from tasks import run_logger

SKIPPED = "skipped"


def worth_retrying(task, task_run, state) -> bool:
    """A failed NRT QC gate or days without inputs fail the same way again: no retry for those."""
    return not isinstance(state.result(raise_on_failure=False), (runs.QCError, runs.MissingInputs))


@task(name="fit-visir-model", retries=2, retry_delay_seconds=10, cache_policy=NO_CACHE)
def fit_model_task(settings: dict, by_month: bool = False, absolute_dt: bool = False) -> str:
    """Fit the VIS/IR model from the GLDAS record; returns the commit id of the `visir_model` cube."""
    commit = runs.fit_model(Settings(**settings), by_month=by_month, absolute_dt=absolute_dt)
    run_logger().info("visir_model fitted (by_month=%s, absolute_dt=%s): commit %s", by_month, absolute_dt,
                      commit)
    return commit


@task(
    name="downscale-month",
    task_run_name="downscale-{year}-{month:02d}",
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=worth_retrying,
    cache_policy=NO_CACHE,
)
def downscale_month_task(
    settings: dict,
    year: int,
    month: int,
    start: date | None = None,
    end: date | None = None,
    status: str = "final",
) -> dict[str, str] | str:
    """Downscale one month (its days clipped to [start, end]) in one commit per cube, or return "skipped"
    when the cubes already hold those days with the same parameters and inputs (`runs.month_committed`)."""
    commits = runs.backfill_month(Settings(**settings), year, month, start, end, status=status)
    run_logger().info("%d-%02d: %s", year, month, commits or "already committed or no days in range: skipped")
    return commits or SKIPPED


@task(name="downscale-days", retries=2, retry_delay_seconds=10, retry_condition_fn=worth_retrying,
      cache_policy=NO_CACHE)
def downscale_days_task(settings: dict, days: list[date], status: str = "nrt") -> dict[str, str]:
    """Downscale the given days in one commit per cube (none for a cube where an 'nrt' run finds them all
    'final' already), slices marked `status`."""
    commits = runs.downscale_days(Settings(**settings), list(days), status=status)
    run_logger().info(
        "%d days (%s … %s) committed as %s: %s", len(days), min(days), max(days), status, commits
    )
    return commits
