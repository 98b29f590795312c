"""Flow: bring the archive's kerchunk references up to date (incremental: only new or changed granules)."""

from __future__ import annotations

from typing import Any

from prefect import flow
from tasks.refs import build_references_task

from soilcube.cluster import dask_client
from soilcube.config import load_settings


@flow(name="soilcube-refs")
def refs_flow(
    products: list[str] | None = None, config_file: str | None = None, **overrides: Any
) -> list[dict]:
    """Reference the granules of `products` (default: every product); returns one summary row per product."""
    settings = load_settings(config_file, **overrides)
    with dask_client(settings.scheduler_address, settings.n_workers):
        return build_references_task(settings.model_dump(), products)
