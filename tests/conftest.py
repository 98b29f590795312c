"""Shared fixtures: the real sample files in ../shared, a real S3 server (SeaweedFS) on loopback, and bit rot
for local granules."""

import json
import os
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


def _bit_rot(granule: Path, variable: str | None = None, block: str | None = None) -> None:
    """Overwrite the data blocks of a granule (those of `variable`, or all; only the chunk `block`, e.g.
    "0.0", if given) referenced in its local archive (`<archive>/refs/<product>/granules/<name>.json`),
    keeping its size and time as bit rot would: its header still reads and its references still count as
    current."""
    references = granule.parent.parent / "refs" / granule.parent.name / "granules" / f"{granule.name}.json"
    chunks = [v for k, v in json.loads(references.read_text())["refs"].items()
              if isinstance(v, list) and len(v) == 3
              and (variable is None or k.rpartition("/")[0].endswith(f"/{variable}"))
              and (block is None or k.rpartition("/")[2] == block)]
    assert chunks, f"no data blocks of {variable or 'any array'} in {references}"
    stat = granule.stat()
    with granule.open("r+b") as f:
        for _, offset, length in chunks:
            f.seek(offset)
            f.write(b"\xff" * length)
    os.utime(granule, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.fixture
def bit_rot():
    """`_bit_rot`: damage a referenced local granule's data behind a sound header."""
    return _bit_rot
