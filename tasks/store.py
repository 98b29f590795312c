"""Task: garbage collection of one cube (the objects no commit or tag reaches)."""

from __future__ import annotations

from datetime import timedelta

from prefect import task
from prefect.cache_policies import NO_CACHE

from soilcube.config import Settings
from soilcube.store import collect_garbage
from tasks import run_logger


@task(name="collect-garbage", task_run_name="collect-garbage-{cube}", retries=2, retry_delay_seconds=10,
      cache_policy=NO_CACHE)
def collect_garbage_task(settings: dict, cube: str, min_age_hours: float) -> dict[str, int]:
    """Delete the unreachable objects of `cube` older than `min_age_hours`; returns what was deleted."""
    s = Settings(**settings)
    deleted = collect_garbage(s.store, cube, min_age=timedelta(hours=min_age_hours),
                              storage_options=s.storage_options)
    run_logger().info("garbage collection of %s: %s", cube, deleted)
    return deleted
