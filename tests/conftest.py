"""Shared fixtures: the real sample files in ../shared, and a real S3 server (SeaweedFS) on loopback."""

from pathlib import Path

import pytest

from soilcube.embedded import SeaweedFS

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REAL_DATA = SHARED / "data" / "real"
CHECK_LAYOUT = SHARED / "tools" / "check_layout.py"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """../shared/data/real, or skip: a user's checkout has no ../shared."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real sample files not found at {REAL_DATA} (only developers and CI have ../shared)")
    return REAL_DATA


@pytest.fixture(scope="session")
def check_layout() -> Path:
    """The layout checker of ../shared/tools, or skip where ../shared is absent."""
    if not CHECK_LAYOUT.is_file():
        pytest.skip(f"layout checker not found at {CHECK_LAYOUT} (only developers and CI have ../shared)")
    return CHECK_LAYOUT


@pytest.fixture(scope="session")
def seaweedfs():
    """A real S3 server on loopback for the whole test session; `.new_bucket()` gives a fresh s3:// URL."""
    with SeaweedFS() as server:
        yield server


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.slow)])
def archive_root(request, tmp_path):
    """An empty archive location, once as a local directory and once as a bucket on the real S3 server."""
    if request.param == "file":
        return tmp_path.as_uri(), None
    server = request.getfixturevalue("seaweedfs")
    return server.new_bucket(), server.storage_options
