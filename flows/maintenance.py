"""Flow: the store's weekly upkeep. Garbage collection of every cube: the chunks of runs that never committed
(a failed NRT QC gate, a crash, a refused conflict), of rolled-back commits whose tag was deleted, and of
snapshots expired by hand (`soilcube store expire`); the history is kept."""

from __future__ import annotations

from typing import Any

from prefect import flow
from tasks.store import collect_garbage_task

from soilcube.config import load_settings
from soilcube.store import GC_GRACE, cubes_in


@flow(name="soilcube-gc")
def gc_flow(
    min_age_hours: float = GC_GRACE.total_seconds() / 3600, config_file: str | None = None, **overrides: Any
) -> dict[str, dict]:
    """Collect the garbage of each cube in the store; objects younger than `min_age_hours` stay (a run
    still writing has uncommitted chunks). Returns {cube: counts of what was deleted}."""
    settings = load_settings(config_file, **overrides)
    if not settings.store:
        raise ValueError("settings.store is not set (SOILCUBE_STORE or the config file)")
    cubes = cubes_in(settings.store, storage_options=settings.storage_options)
    if not cubes:
        raise ValueError(f"no cube in the store {settings.store}")
    # every cube's task runs, even when one fails; the flow then fails naming each failed cube
    config = settings.model_dump()
    futures = {cube: collect_garbage_task.submit(config, cube, min_age_hours) for cube in cubes}
    for future in futures.values():
        future.wait()
    failed = {cube: f.state.result(raise_on_failure=False) for cube, f in futures.items()
              if not f.state.is_completed()}
    if failed:
        raise RuntimeError("garbage collection failed: " + "; ".join(f"{c}: {e}" for c, e in failed.items()))
    return {cube: future.result() for cube, future in futures.items()}
