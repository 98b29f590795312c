"""Prefect tasks: thin wrappers that turn a settings dict and dates into ONE call of the soilcube library.

Tasks take and return small values (settings dicts, dates, URLs, commit ids), never arrays; the Dask work
inside runs on the default scheduler the calling flow opened (`soilcube.cluster.dask_client`). Results are
not cached by Prefect: the cubes themselves say what is done (`soilcube.runs.month_committed`).
"""

from __future__ import annotations

import logging

from prefect import get_run_logger
from prefect.exceptions import MissingContextError
from prefect.logging import get_logger


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The task run's logger (its lines reach the Prefect UI), or a plain logger where a task body runs
    outside a run (`task.fn(...)`), where `get_run_logger()` raises."""
    try:
        return get_run_logger()
    except MissingContextError:
        return get_logger("soilcube.tasks")
