# The one image for Prefect workers and Dask workers alike: the soilcube package with pinned dependencies.
FROM python:3.12-slim-bookworm

# numba caches compiled kernels beside the code or in $HOME; pods may mount both read-only.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache

WORKDIR /opt/soilcube
COPY pyproject.toml constraints.txt README.md ./
COPY pkg ./pkg
RUN pip install --no-cache-dir -c constraints.txt ".[flows]"
COPY flows ./flows
COPY tasks ./tasks

RUN useradd --create-home --uid 10001 soilcube
USER 10001
# No ENTRYPOINT: Dask and Prefect pods give their own commands (dask worker, prefect flow-run …).
CMD ["soilcube", "--help"]
