"""soilcube: high-resolution soil-moisture cubes from NASA granules in object storage."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("soilcube")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
