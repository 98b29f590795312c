"""The Dask cluster every run uses: a scheduler address from the settings, or a local cluster of worker
processes (2 cores here: processes, because HDF5 decoding and referencing hold the GIL)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from dask.distributed import Client, LocalCluster
from rich.console import Console


@contextlib.contextmanager
def dask_client(
    scheduler_address: str | None = None, n_workers: int = 2, console: Console | None = None
) -> Iterator[Client]:
    """A distributed Client, made the default scheduler while the context is open."""
    if scheduler_address:
        with Client(scheduler_address) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        if console is not None:
            console.print(f"local Dask cluster: {n_workers} worker processes at {cluster.scheduler_address}")
        yield client
