"""Tasks on the store: garbage collection of one cube (the objects no commit or tag reaches); the STAC
catalog of the cubes."""

from __future__ import annotations

from datetime import timedelta

from prefect import task
from prefect.cache_policies import NO_CACHE

from soilcube.access import write_stac_catalog
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


@task(name="describe-cubes", retries=2, retry_delay_seconds=10, cache_policy=NO_CACHE)
def describe_cubes_task(settings: dict) -> str:
    """Write the STAC catalog of the store's cubes as they are now; returns the catalog's URL."""
    s = Settings(**settings)
    catalog, collections = write_stac_catalog(s.store, storage_options=s.storage_options)
    run_logger().info("STAC catalog %s: %s", catalog, ", ".join(c.id for c in collections))
    return catalog


def describe_cubes(settings: dict) -> None:
    """`describe_cubes_task` for a flow that has committed: a catalog left stale is logged as a warning,
    not a failure of the run, whose commits stand."""
    state = describe_cubes_task(settings, return_state=True)
    if not state.is_completed():
        error = state.result(raise_on_failure=False)
        run_logger().warning("the STAC catalog was not written anew: %s", error)
