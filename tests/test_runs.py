"""The VIS/IR chain end to end on a small synthetic archive: fit, downscale, write cubes, validate; and
bad input (missing or corrupt granules) costing only the slices it touches."""

import shutil
from datetime import date, timedelta
from pathlib import Path

import fsspec
import h5py
import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

from soilcube import refs, runs, store
from soilcube.access import open_cube
from soilcube.cli import app
from soilcube.config import Settings
from soilcube.grids import REGIONS, parent_index, region
from soilcube.sources import open_granules
from soilcube.synth.archive import build_archive
from soilcube.validate.metrics import score
from soilcube.validate.osse import validate_store
from soilcube.visir.qa import QA

DAYS = [date(2016, 6, d) for d in range(1, 7)]
# the archive holds no granules of April or May 2016: both months fail, each on its own
FAILED_APRIL_AND_MAY = r"2 of 2 months failed \(2016-04: no VIIRS LST granules .*; 2016-05: no VIIRS LST"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pristine_archive(tmp_path_factory) -> Path:
    """Six days over Oklahoma with ~5 weeks of GLDAS/LTDR record, referenced."""
    path = tmp_path_factory.mktemp("archive")
    build_archive(
        REGIONS["oklahoma"], DAYS[0], DAYS[-1], path.as_uri(), seed=3, gldas_years=0.1, progress=False
    )
    refs.build_references(path.as_uri(), progress=False)
    return path


@pytest.fixture(scope="module")
def downscaled(pristine_archive, tmp_path_factory) -> Settings:
    settings = Settings(archive=pristine_archive.as_uri(), store=tmp_path_factory.mktemp("cubes").as_uri())
    runs.fit_model(settings)
    runs.backfill_month(settings, 2016, 6, DAYS[0], DAYS[-1])
    return settings


@pytest.fixture(scope="module")
def fitted(pristine_archive, tmp_path_factory) -> Settings:
    """A store that holds the fitted model and no downscaled cube; tests take copies (`_copy_of`)."""
    settings = Settings(archive=pristine_archive.as_uri(), store=tmp_path_factory.mktemp("fitted").as_uri())
    runs.fit_model(settings)
    return settings


def _copy_of(settings: Settings, tmp_path: Path, **changes) -> Settings:
    """`settings` with a store of its own: a copy of the store's directory."""
    shutil.copytree(Path(settings.store.removeprefix("file://")), tmp_path / "cubes")
    return settings.model_copy(update={"store": (tmp_path / "cubes").as_uri(), **changes})


def test_a_run_without_a_model_says_to_fit_one(tmp_path):
    settings = Settings(archive=(tmp_path / "archive").as_uri(), store=(tmp_path / "cubes").as_uri())
    with pytest.raises(FileNotFoundError, match=r"visir_model: fit the model first \(soilcube run model\)"):
        runs.downscale_days(settings, DAYS[:1])


def test_model_fit_is_physical_and_versioned(downscaled):
    model = open_cube(store.cube_url(downscaled.store, "visir_model")).load()
    fitted = model["n"] >= 9
    assert int(fitted.sum()) > 0
    # Wetter soil has more thermal inertia: a smaller day-night range, so theta falls with dT.
    assert float(model["a1"].where(fitted).median()) < 0
    assert set(np.unique(model["borrowed"].values)) <= {0, 1}
    commit = store.history(downscaled.store, "visir_model")[0]
    assert commit.metadata["provenance"]["inputs"]["gldas"]


@pytest.mark.parametrize(("cube", "shape"), [("downscaled_1km", (360, 360)), ("downscaled_400m", (900, 900))])
def test_downscaled_cubes_are_cf_and_physical(downscaled, pristine_archive, cube, shape):
    ds = open_cube(store.cube_url(downscaled.store, cube))
    days = ds.sel(time=[np.datetime64(d, "ns") for d in DAYS])
    assert (days.sizes["y"], days.sizes["x"]) == shape
    # CF decoding moves grid_mapping from the attributes into the encoding.
    assert ds["sm"].encoding.get("grid_mapping", ds["sm"].attrs.get("grid_mapping")) == "crs"
    assert "crs" in ds.coords
    assert ds["sm"].attrs["units"] == "m3 m-3"
    sm, qa = days["sm"].values, days["qa"].values
    assert np.isfinite(sm).mean() > 0.05
    assert np.nanmin(sm) > 0 and np.nanmax(sm) <= 0.6
    # Every missing pixel says why.
    assert np.all(qa[np.isnan(sm)] > 0)
    assert set(np.unique(days["status"].values)) == {store.STATUS_CODES["final"]}
    provenance = store.committed_runs(downscaled.store, cube)[0].metadata["provenance"]
    # every granule the days need, found by name in the archive: the day and night LST of each day and the
    # night after the last (PM pairing), the SMAP half orbits of the local days, each day's LAI composite
    archive, fs = pristine_archive, fsspec.filesystem("file")
    # composite → its period's first day, as in the name (A2016153)
    periods = {p.name: p.name.split(".")[1] for p in (archive / "viirs_lai").glob("VNP15A2H.*.h5")}
    of_days = {max(a for a in periods.values() if a <= f"A{d:%Y%j}") for d in DAYS}
    need = {
        "viirs_lst": {p.name for d in [*DAYS, DAYS[-1] + timedelta(days=1)]
                      for p in (archive / "viirs_lst").glob(f"VNP21A1?.A{d:%Y%j}.*.h5")},
        "smap_l2e": {p.name for p in (archive / "smap_l2e").glob("*.h5") if _local_day_of(p.name) in DAYS},
        "viirs_lai": {name for name, period in periods.items() if period in of_days},
    }
    # 2 tiles, day and night (the archive ends with the last day: no night after it)
    assert len(need["viirs_lst"]) == 2 * 2 * len(DAYS) and len(need["viirs_lai"]) == 2 * len(of_days)
    assert len(need["smap_l2e"]) >= len(DAYS)
    for product, names in need.items():
        assert names <= set(provenance["inputs"][product]), product
        # each with the version of the file as it is (size and time)
        on_disk = {n: refs.signature(fs.info(str(archive / product / n))) for n in names}
        assert {n: provenance["inputs"][product][n] for n in names} == {
            n: refs.signature_digest(signature) for n, signature in on_disk.items()}
    assert set(provenance["inputs"]["viirs_lst"]) == need["viirs_lst"]  # and no LST of other days


def test_lst_of_nominal_quality_gives_no_delta_t_by_default(downscaled, pristine_archive):
    """Cloud-edge LST (VNP21 mandatory QA 1, 'nominal', cool in the synthetic archive) is not used:
    the AM slice of each day is NaN with NO_DELTA_T wherever that day's daytime LST is flagged so."""
    window = region(downscaled.region).window("M01")
    urls = [p.as_uri() for p in sorted((pristine_archive / "viirs_lst").glob("VNP21A1D.*.h5"))]
    qc = open_granules("viirs_lst", urls, window=window, variables=["QC"])["QC"]
    day = qc.sel(day_night="day", time=[np.datetime64(d, "ns") for d in DAYS])
    nominal = ((day & 0b11) == 1).values
    assert nominal.sum() > 100  # the archive has cloud edges
    cube = open_cube(store.cube_url(downscaled.store, "downscaled_1km"))
    am = cube.sel(time=[np.datetime64(d, "ns") for d in DAYS], overpass="AM")
    assert np.isnan(am["sm"].values[nominal]).all()
    assert (am["qa"].values[nominal] & QA.NO_DELTA_T > 0).all()


def test_backfill_is_resumable(downscaled):
    before = [c.snapshot_id for c in store.history(downscaled.store, "downscaled_1km")]
    assert runs.month_committed(downscaled, 2016, 6, DAYS[0], DAYS[-1])
    assert runs.backfill_month(downscaled, 2016, 6, DAYS[0], DAYS[-1]) == {}
    assert [c.snapshot_id for c in store.history(downscaled.store, "downscaled_1km")] == before


def test_the_backfill_verb_reports_each_month_as_it_ends(downscaled):
    result = CliRunner().invoke(
        app,
        ["run", "backfill", "--start", "2016-06-01", "--end", "2016-06-06", "--archive", downscaled.archive,
         "--store", downscaled.store],
        env={"SOILCUBE_N_WORKERS": "1"},
    )
    assert result.exit_code == 0, result.output
    assert "2016-06: already committed, skipped" in result.output
    assert "1/1 months" in result.output  # the progress bar, at its end
    assert "STAC catalog" not in result.output  # nothing committed: the catalog is not written anew


def test_validation_report_scores_every_product_on_common_samples(downscaled, pristine_archive, tmp_path):
    scores = validate_store(
        downscaled.store,
        tmp_path,
        truth_url=(pristine_archive / "truth.zarr").as_uri(),
        insitu_dir=pristine_archive / "ismn",
    )
    one_km, four_hundred_m = ("smap_9km", "visir_1km_additive", "visir_1km_hybrid"), (
        "smap_9km_400m", "visir_400m_additive", "visir_400m")
    assert list(scores) == [*one_km, *four_hundred_m]
    for group in (one_km, four_hundred_m):
        counts = {scores[k]["n"] for k in group}
        assert len(counts) == 1 and counts.pop() > 1000
    for key, values in scores.items():
        # Six days with partial SMAP coverage leave < 10 samples per pixel: no temporal score is made up.
        assert values["ubRMSE"] is None and values["R"] is None, key
        assert 0 < values["SSD"] < 0.2, key
    # Blocky 9 km field: no jumps inside cells, so its index is undefined (None), not a number.
    for key in ("smap_9km", "smap_9km_400m"):
        assert scores[key]["artifact_index"] is None, key
    for key in ("visir_1km_hybrid", "visir_400m_additive", "visir_400m"):
        assert scores[key]["artifact_index"] > 1, key
    report = (tmp_path / "report.md").read_text()
    assert "visir_1km_hybrid" in report and (tmp_path / "maps.png").stat().st_size > 10_000
    assert list(tmp_path.glob("in_situ*.csv"))


def _copy_and_damage(pristine: Path, tmp_path: Path, damage) -> Settings:
    archive = tmp_path / "archive"
    shutil.copytree(pristine, archive, ignore=shutil.ignore_patterns("refs"))
    damage(archive)
    report = refs.build_references(archive.as_uri(), progress=False)
    settings = Settings(archive=archive.as_uri(), store=(tmp_path / "cubes").as_uri())
    runs.fit_model(settings)
    runs.downscale_days(settings, DAYS)
    return settings, report


def _slice(settings: Settings, day: date, overpass: str) -> xr.Dataset:
    cube = open_cube(store.cube_url(settings.store, "downscaled_1km"))
    return cube.sel(time=np.datetime64(day, "ns"), overpass=overpass).load()


def test_missing_viirs_night_loses_only_the_slices_that_need_it(pristine_archive, downscaled, tmp_path):
    # night(d) makes AM(d) = day(d) − night(d) and PM(d − 1) = day(d − 1) − night(d)
    lost = next(d for d in DAYS[1:] if np.isfinite(_slice(downscaled, d, "AM")["sm"].values).any()
                and np.isfinite(_slice(downscaled, d - timedelta(days=1), "PM")["sm"].values).any())
    needing = {(lost, "AM"), (lost - timedelta(days=1), "PM")}

    def remove_night(archive):
        for granule in (archive / "viirs_lst").glob(f"VNP21A1N.A{lost:%Y%j}.*.h5"):
            granule.unlink()

    settings, _ = _copy_and_damage(pristine_archive, tmp_path, remove_night)
    for day, overpass in needing:
        damaged = _slice(settings, day, overpass)
        assert np.isnan(damaged["sm"].values).all()
        assert np.all(damaged["qa"].values & QA.NO_DELTA_T)
    for day, overpass in ((d, o) for d in DAYS for o in ("AM", "PM") if (d, o) not in needing):
        np.testing.assert_array_equal(
            _slice(settings, day, overpass)["sm"].values, _slice(downscaled, day, overpass)["sm"].values
        )


def test_a_run_without_any_lai_composite_gives_every_pixel_class_0(pristine_archive, downscaled, tmp_path):
    # as a day whose composite and the one before are missing, whichever days the run covers
    def remove_lai(archive):
        for granule in (archive / "viirs_lai").glob("*.h5"):
            granule.unlink()

    settings, _ = _copy_and_damage(pristine_archive, tmp_path, remove_lai)
    window = region(settings.region).window("M01")
    (delta_t, classes), (pristine_delta_t, pristine_classes) = (
        runs._viirs(s, DAYS, window, runs.run_inputs(s, DAYS)) for s in (settings, downscaled)
    )
    assert (classes.values == 0).all() and (pristine_classes.values > 0).any()
    xr.testing.assert_identical(delta_t, pristine_delta_t)
    assert any(np.isfinite(_slice(settings, d, "AM")["sm"].values).any() for d in DAYS)


def _local_day_of(granule_name: str) -> date:
    """SMAP half orbits over Oklahoma: UTC start − 6.5 h is the local solar time."""
    stamp = np.datetime64(
        f"{granule_name.split('_')[7][:4]}-{granule_name.split('_')[7][4:6]}-"
        f"{granule_name.split('_')[7][6:8]}T{granule_name.split('_')[7][9:11]}:00"
    )
    return (stamp - np.timedelta64(390, "m")).astype("datetime64[D]").astype(date)


def _cloud_over(granule: Path) -> None:
    """Rewrite a VNP21A1 tile as all cloud: LST fill and QC 'not produced due to cloud' (mandatory bits 2,
    cloud bits 2) wherever the tile had data."""
    fields = "HDFEOS/GRIDS/VIIRS_Grid_Daily_1km_LST21/Data Fields"
    with h5py.File(granule, "r+") as h5:
        qc = h5[f"{fields}/QC"][...]
        produced = (qc & 0b11) != 0b11
        h5[f"{fields}/QC"][...] = np.where(produced, 0b10 | (0b10 << 4), qc)
        h5[f"{fields}/LST_1KM"][...] = 0


def test_missing_smap_half_orbit_corrupt_granule_and_all_cloud_day(pristine_archive, downscaled, tmp_path):
    by_day: dict[date, list[str]] = {}
    for granule in sorted((pristine_archive / "smap_l2e").glob("SMAP_L2_SM_P_E_*_D_*.h5")):
        by_day.setdefault(_local_day_of(granule.name), []).append(granule.name)
    victim_day = next(
        d
        for d, names in by_day.items()
        if len(names) == 1 and d in DAYS and np.isfinite(_slice(downscaled, d, "AM")["sm"].values).any()
    )
    corrupt_day = next(d for d in DAYS if d != victim_day)
    cloudy_day = next(d for d in DAYS if d not in (victim_day, corrupt_day))

    def damage(archive):
        (archive / "smap_l2e" / by_day[victim_day][0]).unlink()
        tile = sorted((archive / "viirs_lst").glob(f"VNP21A1D.A{corrupt_day:%Y%j}.*.h5"))[0]
        tile.write_bytes(tile.read_bytes()[:2000])  # a truncated download
        for tile in (archive / "viirs_lst").glob(f"VNP21A1D.A{cloudy_day:%Y%j}.*.h5"):
            _cloud_over(tile)

    settings, report = _copy_and_damage(pristine_archive, tmp_path, damage)
    assert [name for name in report.failed if f"VNP21A1D.A{corrupt_day:%Y%j}" in name]
    am = _slice(settings, victim_day, "AM")
    assert np.isnan(am["sm"].values).all() and np.all(am["qa"].values & QA.NO_SMAP)
    damaged = _slice(settings, corrupt_day, "AM")
    assert (damaged["qa"].values & QA.NO_DELTA_T).any()
    # An all-cloud day: no day LST, so both overpasses of that day are NaN, each pixel saying why.
    for overpass in ("AM", "PM"):
        cloudy = _slice(settings, cloudy_day, overpass)
        assert np.isnan(cloudy["sm"].values).all() and np.all(cloudy["qa"].values & QA.NO_DELTA_T)
    intact = [d for d in DAYS if d not in (victim_day, corrupt_day, cloudy_day)]
    for day in intact:
        np.testing.assert_array_equal(
            _slice(settings, day, "AM")["sm"].values, _slice(downscaled, day, "AM")["sm"].values
        )


def test_granules_damaged_after_referencing_are_named_and_lose_only_their_slices(
    pristine_archive, downscaled, tmp_path, caplog, bit_rot
):
    archive = tmp_path / "archive"
    shutil.copytree(pristine_archive, archive, ignore=shutil.ignore_patterns("refs"))
    refs.build_references(archive.as_uri(), progress=False)
    settings = Settings(archive=archive.as_uri(), store=(tmp_path / "cubes").as_uri())
    runs.fit_model(settings)
    clear = [d for d in DAYS[1:] if np.isfinite(_slice(downscaled, d, "AM")["sm"].values).any()]
    rotten_day, gone_day, spared_day = clear[:3]
    rotten = sorted((archive / "viirs_lst").glob(f"VNP21A1N.A{rotten_day:%Y%j}.*.h5"))
    for granule in rotten:
        bit_rot(granule, "LST_1KM")
    # damaged only in an array that runs do not read: it still serves, and is not rejected
    spared = sorted((archive / "viirs_lst").glob(f"VNP21A1N.A{spared_day:%Y%j}.*.h5"))
    for granule in spared:
        bit_rot(granule, "Emis_14")
    gone = sorted((archive / "viirs_lst").glob(f"VNP21A1D.A{gone_day:%Y%j}.*.h5"))
    for granule in gone:
        granule.unlink()

    with caplog.at_level("WARNING", logger="soilcube.runs"):
        commits = runs.backfill_month(settings, 2016, 6, DAYS[0], DAYS[-1])

    named = {g.name for g in rotten + gone}
    warnings = [r.getMessage() for r in caplog.records if r.name == "soilcube.runs"]
    assert {w.split(": ")[0].rsplit("/", 1)[-1] for w in warnings} == named
    assert all("unreadable data" in w for w in warnings if "VNP21A1N" in w)
    assert all("file does not exist" in w for w in warnings if "VNP21A1D" in w)
    provenance = store.history(settings.store, "downscaled_1km")[0].metadata["provenance"]
    assert store.history(settings.store, "downscaled_1km")[0].snapshot_id == commits["downscaled_1km"]
    assert {name.split("/")[1] for name in provenance["rejected"]} == named
    index = refs.read_index(settings.archive, "viirs_lst").set_index("name")
    assert (index.loc[[g.name for g in rotten], "status"] == "failed").all()
    assert (index.loc[[g.name for g in spared], "status"] == "ok").all()
    # the lost night's AM and the lost day's both overpasses are empty, saying why; other days as before
    for day, overpass in [(rotten_day, "AM"), (gone_day, "AM"), (gone_day, "PM")]:
        lost = _slice(settings, day, overpass)
        assert np.isnan(lost["sm"].values).all() and np.all(lost["qa"].values & QA.NO_DELTA_T)
    for day in (d for d in DAYS if d not in (rotten_day, gone_day)):
        np.testing.assert_array_equal(
            _slice(settings, day, "AM")["sm"].values, _slice(downscaled, day, "AM")["sm"].values
        )

    # the month counts as done, until a rejected granule is replaced by a good file: then it is made again
    assert runs.month_committed(settings, 2016, 6, DAYS[0], DAYS[-1])
    for granule in rotten:
        shutil.copy(pristine_archive / "viirs_lst" / granule.name, granule)  # a new time: re-referenced
    refs.build_references(settings.archive, ["viirs_lst"], progress=False)
    assert not runs.month_committed(settings, 2016, 6, DAYS[0], DAYS[-1])
    assert set(runs.backfill_month(settings, 2016, 6, DAYS[0], DAYS[-1])) == set(runs.DOWNSCALED_CUBES)
    np.testing.assert_array_equal(
        _slice(settings, rotten_day, "AM")["sm"].values, _slice(downscaled, rotten_day, "AM")["sm"].values
    )

    # the NRT run references the archive anew: it warns of the granules that fail now, not of old ones
    truncated = sorted((archive / "viirs_lst").glob(f"VNP21A1D.A{DAYS[-1]:%Y%j}.*.h5"))[0]
    truncated.write_bytes(truncated.read_bytes()[:2000])
    caplog.clear()
    with caplog.at_level("WARNING", logger="soilcube.runs"):
        runs.nrt(settings, DAYS[-1] + timedelta(days=3))
    warnings = [r.getMessage() for r in caplog.records if r.name == "soilcube.runs"]
    assert len(warnings) == 1 and warnings[0].startswith(f"viirs_lst/{truncated.name}: ")


def test_a_month_counts_as_done_only_with_the_granules_the_archive_offers_now(
    pristine_archive, tmp_path, bit_rot
):
    """Granules that were unavailable to a month's run before it began (one failed when referenced, one
    rejected by another run), then replaced by good files: the month is made again with them."""
    archive = tmp_path / "archive"
    shutil.copytree(pristine_archive, archive, ignore=shutil.ignore_patterns("refs"))
    settings = Settings(archive=archive.as_uri(), store=(tmp_path / "cubes").as_uri())
    truncated, rotten = sorted((archive / "viirs_lst").glob(f"VNP21A1D.A{DAYS[2]:%Y%j}.*.h5"))
    truncated.write_bytes(truncated.read_bytes()[:2000])
    failed = refs.build_references(settings.archive, progress=False).failed
    assert list(failed) == [f"viirs_lst/{truncated.name}"]
    bit_rot(rotten, "LST_1KM")  # found by another run (an NRT one), before the month's
    rotten_url = f"{settings.archive}/viirs_lst/{rotten.name}"
    refs.reject_granules(settings.archive, "viirs_lst", refs.unreadable_granules("viirs_lst", [rotten_url]))
    runs.fit_model(settings)
    runs.backfill_month(settings, 2016, 6, DAYS[0], DAYS[-1])
    assert runs.month_committed(settings, 2016, 6, DAYS[0], DAYS[-1])
    assert "rejected" not in store.committed_runs(settings.store, "downscaled_1km")[0].metadata["provenance"]

    for granule in (truncated, rotten):
        shutil.copy(pristine_archive / "viirs_lst" / granule.name, granule)  # a new time: re-referenced
        refs.build_references(settings.archive, ["viirs_lst"], progress=False)
        assert not runs.month_committed(settings, 2016, 6, DAYS[0], DAYS[-1])
        assert set(runs.backfill_month(settings, 2016, 6, DAYS[0], DAYS[-1])) == set(runs.DOWNSCALED_CUBES)
        assert runs.month_committed(settings, 2016, 6, DAYS[0], DAYS[-1])


def test_run_model_over_a_region_the_archive_lacks_fails_clearly_and_writes_nothing(
    pristine_archive, tmp_path
):
    # the archive is over Oklahoma; Georgia's GLDAS cells are fill in every file
    cubes = tmp_path / "cubes"
    result = CliRunner().invoke(
        app,
        ["run", "model", "--archive", pristine_archive.as_uri(), "--store", cubes.as_uri(),
         "--region", "-84.2,34.0,-84.0,34.2"],
        env={"SOILCUBE_N_WORKERS": "1"},
    )
    assert result.exit_code != 0
    message = " ".join(str(result.exception).split())
    assert "no GLDAS cell of region '-84.2,34.0,-84.0,34.2' has a fit" in message
    assert pristine_archive.as_uri() in message
    assert not (cubes / "visir_model").exists()


def test_a_failed_month_does_not_stop_the_backfill(downscaled, monkeypatch):
    tried = []
    backfill_month = runs.backfill_month

    def recorded(settings, year, month, *bounds):
        tried.append(month)
        return backfill_month(settings, year, month, *bounds)

    monkeypatch.setattr(runs, "backfill_month", recorded)
    heard = []
    with pytest.raises(runs.BackfillError, match=FAILED_APRIL_AND_MAY):
        runs.backfill(downscaled, date(2016, 4, 30), date(2016, 5, 1),
                      on_month=lambda month, outcome: heard.append((month, type(outcome).__name__)))
    assert tried == [4, 5]
    assert heard == [("2016-04", "MissingInputs"), ("2016-05", "MissingInputs")]


def test_an_nrt_run_failing_the_qc_gate_commits_no_slice(fitted, tmp_path):
    strict = _copy_of(fitted, tmp_path, nrt_qc={"visir_1km_hybrid": {"R": (">=", 1.5)}})
    with pytest.raises(runs.QCError, match="visir_1km_hybrid R"):
        runs.downscale_days(strict, DAYS[:3], status="nrt")
    assert store.committed_runs(strict.store, "downscaled_1km") == []
    assert not store.cube_exists(strict.store, "downscaled_400m")  # the gate came before the 400 m work


def _overtaken_nrt_run(settings: Settings, monkeypatch) -> dict[str, str]:
    """An NRT run of DAYS[:3] that a backfill of DAYS[0] overtakes: it commits after the NRT run computed
    its days and before it stages them."""
    stage, overtaken = store.stage_slices, []

    def overtaking(store_url, name, dataset, **options):
        if not overtaken:
            overtaken.append(name)
            runs.downscale_days(settings, DAYS[:1])  # its writes pass straight through to `stage`
        return stage(store_url, name, dataset, **options)

    with monkeypatch.context() as patch:
        patch.setattr(store, "stage_slices", overtaking)
        return runs.downscale_days(settings, DAYS[:3], status="nrt")


def test_the_nrt_qc_gate_scores_the_days_the_run_commits(fitted, tmp_path, monkeypatch):
    # a gate that the three days asked for pass and the two the run commits fail: learnt from a first race
    first = _copy_of(fitted, tmp_path / "first")
    assert set(_overtaken_nrt_run(first, monkeypatch)) == set(runs.DOWNSCALED_CUBES)
    cube = open_cube(store.cube_url(first.store, "downscaled_1km"))
    asked = cube.sel(time=[np.datetime64(d, "ns") for d in DAYS[:3]]).load()
    committed = asked.isel(time=slice(1, None))
    r_asked, r_committed = (float(score(ds["sm"], ds["smap_9km"], min_count=100)["R"])
                            for ds in (asked, committed))
    assert r_asked != r_committed
    gate = {"visir_1km_hybrid": {"R": (">=" if r_committed < r_asked else "<=", (r_asked + r_committed) / 2)}}
    assert runs.qc_failures(asked, gate) == [] and runs.qc_failures(committed, gate) != []

    second = _copy_of(fitted, tmp_path / "second", nrt_qc=gate)
    with pytest.raises(runs.QCError, match="NRT 2016-06-02, 2016-06-03 fails the QC gate: visir_1km_hybrid"):
        _overtaken_nrt_run(second, monkeypatch)
    for name in runs.DOWNSCALED_CUBES:
        status = open_cube(store.cube_url(second.store, name))["status"]
        days = status.sel(time=[np.datetime64(d, "ns") for d in DAYS[:3]]).values
        assert list(days) == [store.STATUS_CODES["final"]] + [store.STATUS_CODES["empty"]] * 2


def test_a_run_failing_on_its_second_cube_commits_neither(fitted, tmp_path, monkeypatch):
    settings = _copy_of(fitted, tmp_path)
    stage = store.stage_slices

    def failing_400m(store_url, name, dataset, **options):
        staged = stage(store_url, name, dataset, **options)
        if name == "downscaled_400m":
            raise OSError("injected: the 400 m write lost its connection")
        return staged

    monkeypatch.setattr(store, "stage_slices", failing_400m)
    with pytest.raises(OSError, match="injected"):
        runs.downscale_days(settings, DAYS[:2])
    for name in runs.DOWNSCALED_CUBES:
        assert store.committed_runs(settings.store, name) == []

    # failing at the 400 m commit, once the 1 km one is made: that one is undone
    monkeypatch.setattr(store, "stage_slices", stage)
    commit = store.StagedSlices.commit

    def failing_400m_commit(self):
        if self.metadata["cube"] == "downscaled_400m":
            raise OSError("injected: the 400 m commit lost its connection")
        return commit(self)

    monkeypatch.setattr(store.StagedSlices, "commit", failing_400m_commit)
    with pytest.raises(OSError, match="injected: the 400 m commit") as failed:
        runs.downscale_days(settings, DAYS[:2], key="2016-06-01..2016-06-02")
    [note] = failed.value.__notes__
    assert note.startswith("cube downscaled_1km: its commit") and "was undone" in note
    for name in runs.DOWNSCALED_CUBES:
        assert store.committed_runs(settings.store, name) == []
        assert store.unit_run(settings.store, name, "2016-06-01..2016-06-02") is None


def test_an_nrt_run_passing_the_default_qc_gate_marks_its_slices_nrt(fitted, tmp_path):
    settings = _copy_of(fitted, tmp_path)
    assert set(runs.downscale_days(settings, DAYS[:3], status="nrt")) == set(runs.DOWNSCALED_CUBES)
    for name in runs.DOWNSCALED_CUBES:
        cube = open_cube(store.cube_url(settings.store, name))
        status = cube["status"].sel(time=[np.datetime64(d, "ns") for d in DAYS]).values
        assert list(status) == [store.STATUS_CODES["nrt"]] * 3 + [store.STATUS_CODES["empty"]] * 3


def test_nrt_leaves_the_days_a_backfill_made_final_alone(downscaled):
    # the backfill made every day final; an NRT run whose target and re-checked days are among them
    # has nothing to do (it would mark final slices 'nrt' and the month done would never be final again)
    before = {name: store.history(downscaled.store, name)[0].snapshot_id for name in runs.DOWNSCALED_CUBES}
    assert set(DAYS[3:]) <= runs.final_days(downscaled, DAYS)
    assert runs.nrt(downscaled, DAYS[-1] + timedelta(days=3)) == {}
    after = {name: store.history(downscaled.store, name)[0].snapshot_id for name in runs.DOWNSCALED_CUBES}
    assert after == before


def test_the_whole_chain_on_the_real_s3_server(seaweedfs, tmp_path):
    root, options = seaweedfs.new_bucket("chain"), seaweedfs.storage_options
    archive, cubes = f"{root}/archive", f"{root}/cubes"
    build_archive(
        REGIONS["oklahoma"],
        DAYS[0],
        DAYS[3],
        archive,
        seed=1,
        gldas_years=0.1,
        storage_options=options,
        progress=False,
    )
    refs.build_references(archive, storage_options=options, progress=False)
    settings = Settings(archive=archive, store=cubes, storage_options=options)
    runs.fit_model(settings)
    assert set(runs.backfill_month(settings, 2016, 6, DAYS[0], DAYS[3])) == set(runs.DOWNSCALED_CUBES)
    scores = validate_store(cubes, tmp_path, truth_url=f"{archive}/truth.zarr", storage_options=options)
    assert scores["visir_1km_hybrid"]["n"] > 1000
    cube = open_cube(store.cube_url(cubes, "downscaled_400m"), storage_options=options)
    assert (
        np.isfinite(cube["sm"].sel(time=np.datetime64(DAYS[0], "ns")).values).any()
        or np.isfinite(cube["sm"].sel(time=np.datetime64(DAYS[1], "ns")).values).any()
    )


def test_downscaled_slices_share_the_tile_chunks_and_a_small_graph(downscaled):
    area = region(downscaled.region)
    model, _ = runs.model_version(downscaled)
    inputs = runs.run_inputs(downscaled, DAYS)
    smap = runs.smap_9km(downscaled, DAYS, area, inputs)
    slices = runs.downscale_window(downscaled, DAYS, "M400", model, smap, area, inputs)
    chunks = slices["sm"].chunks
    assert all(slices[name].chunks == chunks for name in slices.data_vars)
    assert max(chunks[-1]) == runs.TILE_PIXELS
    n_chunks = np.prod([len(c) for c in chunks])
    graph = dict(slices.__dask_graph__())
    assert len(graph) < 40 * n_chunks  # a handful of tasks per tile, not per 9 km cell
    # the 9 km fields on the fine grid: each pixel takes its 9 km cell's value
    rows, cols = parent_index(area.window("M400"), area.window("M09"))
    expected = smap["soil_moisture"].values[:, :, rows][:, :, :, cols]
    np.testing.assert_array_equal(slices["smap_9km"].values, expected.astype(np.float32))
