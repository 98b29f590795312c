"""The archives (file:// and, marked slow, s3://) of synthetic granules that the reader tests share."""

import pytest
from synthetic_granules import WRITERS, write_granules


@pytest.fixture(scope="session", params=["file", pytest.param("s3", marks=pytest.mark.slow)])
def synthetic_archive(request, tmp_path_factory):
    """(root URL, storage options, product → granule URLs): one archive of every product, no references."""
    if request.param == "file":
        root, options = tmp_path_factory.mktemp("archive").as_uri(), None
    else:
        server = request.getfixturevalue("seaweedfs")
        root, options = server.new_bucket(), server.storage_options
    return root, options, {product: write_granules(root, options, product) for product in WRITERS}
