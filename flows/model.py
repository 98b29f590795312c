"""Flow: fit the VIS/IR model on the archive's GLDAS record and commit it to the `visir_model` cube."""

from __future__ import annotations

from typing import Any

from prefect import flow
from tasks.visir import fit_model_task

from soilcube.cluster import dask_client
from soilcube.config import load_settings


@flow(name="soilcube-model")
def model_flow(by_month: bool = False, absolute_dt: bool = False, config_file: str | None = None,
               **overrides: Any) -> str:
    """Fit θ = a0 + a1·dT (per month with `by_month`, on |dT| with `absolute_dt`); returns the commit id of
    the new model version."""
    settings = load_settings(config_file, **overrides)
    with dask_client(settings.scheduler_address, settings.n_workers):
        return fit_model_task(settings.model_dump(), by_month, absolute_dt)
