"""The command line on bad input: a usage error names the option (exit 2), an error of the work says itself in
one line without a traceback (exit 1), and neither writes anything."""

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from soilcube.cli import app

# the `soilcube` command as installed: `main` (CliRunner runs `app`, whose errors `main` says in one line)
SOILCUBE = [sys.executable, "-c", "import sys; from soilcube.cli import main; sys.argv[0] = 'soilcube'; "
            "main()"]


@pytest.fixture(autouse=True)
def no_settings_from_the_environment(monkeypatch):
    for name in [n for n in os.environ if n.startswith("SOILCUBE_")]:
        monkeypatch.delenv(name)


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def flat(output: str) -> str:
    """Output on one line: rich boxes and wraps the messages of usage errors."""
    return " ".join(output.replace("│", " ").split())


DAYS = ["--start", "2016-06-01", "--end", "2016-06-02"]
ARCHIVE, FOLDER = "<archive>", "<folder>"  # replaced by the URL and path of a folder that must stay absent


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["synth", "--start", "2016-13-01", "--end", "2016-06-02", "--archive", ARCHIVE],
         "Invalid value for '--start'"),
        (["synth", "--start", "2016-06-03", "--end", "2016-06-02", "--archive", ARCHIVE],
         "2016-06-02 is before --start 2016-06-03"),
        (["synth", *DAYS, "--bbox=-98,35,-97,abc", "--archive", ARCHIVE],
         "'-98,35,-97,abc' is not four numbers"),
        (["synth", *DAYS, "--region", "texas", "--archive", ARCHIVE], "unknown region 'texas'"),
        (["synth", *DAYS, "--region", "oklahoma", "--bbox=-98,35,-97,36", "--archive", ARCHIVE],
         "give --region or --bbox, not both"),
        (["run", "backfill", "--start", "2016-06-30", "--end", "2016-06-01", "--archive", ARCHIVE, "--store",
          "file:///s"], "2016-06-01 is before --start 2016-06-30"),
        (["run", "nrt", "--date", "2016-06-31", "--archive", ARCHIVE, "--store", "file:///s"],
         "Invalid value for '--date'"),
        (["run", "model", "--region", "texas", "--archive", ARCHIVE, "--store", "file:///s"],
         "unknown region 'texas'"),
        (["validate", "--out", FOLDER, "--store", "file:///s"], "nothing to score against"),
        (["validate", "--out", FOLDER, "--store", "file:///s", "--archive", ARCHIVE],
         "nothing to score against"),
        (["refs", "--archive", ARCHIVE, "--products", "smap_l4,viirs"], "unknown ['viirs']; known: smap_l2e"),
        (["synth", *DAYS, "--products", "smap", "--archive", ARCHIVE], "unknown ['smap']; known: smap_l2e"),
        (["validate", "--out", FOLDER, "--store", "file:///s", "--insitu", "no-such-folder"],
         "Invalid value for '--insitu'"),
    ],
)
def test_a_bad_option_value_is_a_usage_error_naming_it(args, said, tmp_path):
    archive = tmp_path / "archive"
    result = invoke(*({ARCHIVE: archive.as_uri(), FOLDER: str(archive)}.get(arg, arg) for arg in args))
    assert result.exit_code == 2
    assert said in flat(result.output)
    assert not archive.exists()


def test_synth_does_not_write_into_an_archive_without_overwrite(tmp_path):
    (tmp_path / "smap_l4").mkdir()
    result = invoke("synth", "--start", "2016-06-01", "--end", "2016-06-01", "--archive", tmp_path.as_uri())
    assert result.exit_code == 2
    assert "holds an archive already (smap_l4); pass --overwrite" in flat(result.output)
    assert [p.name for p in tmp_path.iterdir()] == ["smap_l4"]


@pytest.mark.parametrize("where", ["missing", "a product's folder"])
def test_refs_of_a_mistyped_archive_says_so_in_one_line_and_writes_nothing(tmp_path, where):
    target = tmp_path / "nope" if where == "missing" else tmp_path / "smap_l4"
    if where != "missing":
        target.mkdir()
        (target / "SMAP_L4_SM_gph_20160601T013000_Vv8010_001.h5").write_bytes(b"granule")
    before = sorted(tmp_path.rglob("*"))
    run = subprocess.run([*SOILCUBE, "refs", "--archive", target.as_uri()], capture_output=True, text=True)
    assert run.returncode == 1
    assert run.stderr.startswith("error: ") and "Traceback" not in run.stderr + run.stdout
    assert "(SOILCUBE_DEBUG=1 shows the traceback)" in run.stderr
    assert f"{target.as_uri()} holds no granules or references" in flat(run.stderr)
    assert sorted(tmp_path.rglob("*")) == before


def test_soilcube_debug_shows_the_traceback(tmp_path):
    run = subprocess.run([*SOILCUBE, "open", (tmp_path / "cube").as_uri()], capture_output=True, text=True,
                         env={**os.environ, "SOILCUBE_DEBUG": "1"})
    assert run.returncode == 1
    assert "Traceback" in run.stderr and "no cube (icechunk repository)" in run.stderr


def test_a_catalog_that_cannot_be_written_after_a_run_is_a_warning_not_an_error(tmp_path, monkeypatch):
    import io

    from rich.console import Console

    from soilcube import cli
    from soilcube.config import Settings

    said = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=said, width=300))
    cli._describe_cubes(Settings(store=(tmp_path / "no-store").as_uri()))  # (no cubes there)
    assert "warning: the STAC catalog was not written anew (no cubes in" in said.getvalue()
    assert "run `soilcube store stac`" in said.getvalue()


@pytest.mark.parametrize(("flags", "expected"),
                         [([], (False, False)), (["--by-month", "--absolute-dt"], (True, True))])
def test_run_model_passes_the_public_code_variants_on(tmp_path, monkeypatch, flags, expected):
    from contextlib import nullcontext

    from soilcube import cluster, runs

    fitted = []
    monkeypatch.setattr(cluster, "dask_client", lambda *args, **kwargs: nullcontext())
    monkeypatch.setattr(runs, "fit_model", lambda settings, by_month, absolute_dt: fitted.append(
        (by_month, absolute_dt)) or "SNAPSHOT")
    result = invoke("run", "model", *flags, "--archive", tmp_path.as_uri(), "--store", tmp_path.as_uri())
    assert result.exit_code == 0, result.output
    assert fitted == [expected] and "visir_model committed: SNAPSHOT" in result.output
