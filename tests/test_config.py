"""One settings object: TOML file < SOILCUBE_* environment < explicit options."""

import pytest

from soilcube.config import load_settings


def test_file_then_environment_then_explicit_options(tmp_path, monkeypatch):
    config = tmp_path / "soilcube.toml"
    config.write_text('archive = "file:///from-file"\nstore = "file:///store-from-file"\nseed = 7\n'
                      '[storage_options]\nkey = "from-file"\n')
    monkeypatch.setenv("SOILCUBE_STORE", "s3://from-env")
    monkeypatch.setenv("SOILCUBE_STORAGE_OPTIONS__SECRET", "env-secret")
    settings = load_settings(config, seed=None, region="conus")
    assert settings.archive == "file:///from-file"
    assert settings.store == "s3://from-env"
    assert settings.seed == 7 and settings.region == "conus"
    assert settings.storage_options == {"key": "from-file", "secret": "env-secret"}
    assert load_settings(config, archive="s3://explicit").archive == "s3://explicit"


def test_bad_config_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.toml"):
        load_settings(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("archive = ")
    with pytest.raises(ValueError, match="broken.toml is not valid TOML"):
        load_settings(broken)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('archve = "typo"\nn_workers = "two"\n')
    with pytest.raises(ValueError, match=r"config file .*unknown.toml: .*n_workers: Input should be a valid "
                                         r"integer.*archve: Extra inputs are not permitted"):
        load_settings(unknown)


def test_a_bad_environment_variable_is_named(monkeypatch):
    monkeypatch.setenv("SOILCUBE_N_WORKERS", "two")
    with pytest.raises(ValueError, match="environment: SOILCUBE_N_WORKERS: Input should be a valid integer"):
        load_settings(None)
