"""Task: bring an archive's kerchunk references up to date (incremental)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from soilcube.config import Settings
from soilcube.refs import build_references
from tasks import run_logger


@task(name="build-references", retries=2, retry_delay_seconds=10, cache_policy=NO_CACHE)
def build_references_task(settings: dict, products: list[str] | None = None) -> list[dict]:
    """Reference new and changed granules of `products` (default: all); returns one summary row per product.
    Unreadable granules are skipped, not fatal; those found by this run are logged as warnings."""
    s = Settings(**settings)
    if not s.archive:
        raise ValueError("settings.archive is not set (SOILCUBE_ARCHIVE or the config file)")
    report = build_references(
        s.archive, list(products) if products else None, s.storage_options, progress=False
    )
    logger = run_logger()
    for row in report.rows():
        logger.info("references %s", row)
    for name, reason in report.newly_failed.items():
        logger.warning("unreadable granule %s: %s", name, reason)
    if len(report.failed) > len(report.newly_failed):
        logger.info("%d granules stay rejected (unchanged since found unreadable)",
                    len(report.failed) - len(report.newly_failed))
    return report.rows()
