"""One configuration object for every verb and flow: a TOML file and `SOILCUBE_*` environment variables.

Precedence (highest first): explicit CLI options, environment (`SOILCUBE_ARCHIVE=s3://…`, nested with a
double underscore: `SOILCUBE_STORAGE_OPTIONS__KEY=…`), the `--config FILE` TOML, the defaults below.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SOILCUBE_", env_nested_delimiter="__", extra="forbid")

    archive: str | None = Field(None, description="URL of the granule archive (file://… or s3://…)")
    store: str | None = Field(None, description="URL of the cube store (file://… or s3://…)")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec/s3fs options")
    region: str = Field("oklahoma", description="named region or 'W,S,E,N'")
    seed: int = 0
    gldas_years: float = Field(1, description="years of GLDAS record before the study period (synthetic)")
    scheduler_address: str | None = Field(None, description="Dask scheduler; None starts a local cluster")
    n_workers: int = 2
    # VIIRS LST (VNP21A1D/N) the downscaling uses, by the QC's mandatory QA (bits 0–1): 'best' (00) only,
    # or 'nominal' too (01: emissivity < 0.95, near a cloud, or humid air; common on real data)
    lst_quality: Literal["best", "nominal"] = "best"
    # NRT QC gate: {product key: {metric: [comparison, limit]}} on the scores of the NRT slices against
    # the SMAP 9 km retrievals they were corrected to; a failing gate commits nothing.
    nrt_qc: dict[str, dict[str, tuple[str, float]]] = Field(
        default_factory=lambda: {"visir_1km_hybrid": {"R": (">=", 0.3), "bias": ("<=", 0.05)}}
    )


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from the TOML file (if given), the environment, and explicit overrides (None = not given)."""
    file_values: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        try:
            file_values = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"config file {path} is not valid TOML: {error}") from None
    try:
        environment = Settings().model_dump(exclude_unset=True)
    except ValidationError as error:
        raise ValueError(f"environment: {_problems(error, 'SOILCUBE_')}") from None
    if file_values:
        try:
            Settings(**file_values)  # its own mistakes named as its own (the environment's are checked above)
        except ValidationError as error:
            raise ValueError(f"config file {config_file}: {_problems(error)}") from None
    explicit = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**_merged(_merged(file_values, environment), explicit))


def _problems(error: ValidationError, prefix: str = "") -> str:
    """pydantic's errors in one line, each with the key (or, with `prefix`, the variable) it is about."""
    def key(location) -> str:
        name = "__".join(str(part) for part in location)
        return f"{prefix}{name.upper()}" if prefix else name

    return "; ".join(f"{key(e['loc'])}: {e['msg']}" for e in error.errors())


def _merged(base: dict, update: dict) -> dict:
    """`update` over `base`, nested tables merged key by key (a secret from the environment keeps the
    file's endpoint)."""
    result = dict(base)
    for key, value in update.items():
        both_tables = isinstance(value, dict) and isinstance(result.get(key), dict)
        result[key] = _merged(result[key], value) if both_tables else value
    return result
