"""The Prefect layer: thin tasks (bodies run with `.fn`, library calls replaced), the deployments file, and
the flows run for real on Prefect's test server against a tiny synthetic archive (slow)."""

import inspect
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pystac
import pytest
import xarray as xr
import yaml
from prefect import Flow
from tasks.refs import build_references_task
from tasks.store import collect_garbage_task, describe_cubes_task
from tasks.visir import SKIPPED, downscale_days_task, downscale_month_task, fit_model_task, worth_retrying

import soilcube.runs as runs
from soilcube import refs, store
from soilcube.access import open_cube
from soilcube.config import Settings

REPO = Path(__file__).resolve().parents[2]
PREFECT_YAML = REPO / "flows" / "prefect.yaml"
FIRST, LAST = date(2016, 6, 1), date(2016, 6, 3)
# What the VIS/IR fit and downscaling read (runs.py): nothing else is synthesized.
PRODUCTS = ["gldas", "ltdr_ndvi", "smap_l2e", "viirs_lst", "viirs_lai"]


def settings(**values) -> dict:
    return Settings(**{"archive": "file:///a", "store": "file:///s", **values}).model_dump()


# -- tasks, without a server -------------------------------------------------------------------------------


@pytest.fixture
def calls(monkeypatch):
    """Replace the library's run functions with recorders; returns the list of (name, args, kwargs)."""
    made = []

    def recorder(name, result):
        def record(*args, **kwargs):
            made.append((name, args, kwargs))
            return result

        return record

    monkeypatch.setattr(runs, "fit_model", recorder("fit_model", "model-commit"))
    monkeypatch.setattr(runs, "downscale_days", recorder("downscale_days", {"downscaled_1km": "c1"}))
    monkeypatch.setattr(runs, "backfill_month", recorder("backfill_month", {"downscaled_1km": "c2"}))
    return made


def test_downscale_month_task_reports_a_month_already_committed_as_skipped(calls, monkeypatch):
    monkeypatch.setattr(runs, "backfill_month", lambda *args, **kwargs: {})
    assert downscale_month_task.fn(settings(), 2016, 6, FIRST, LAST) == SKIPPED
    assert calls == []


def test_downscale_month_task_passes_the_month_and_bounds_to_one_library_call(calls):
    result = downscale_month_task.fn(settings(region="iowa"), 2016, 6, FIRST, LAST, "final")
    assert result == {"downscaled_1km": "c2"}
    [(name, (s, year, month, start, end), kwargs)] = calls
    assert (name, year, month, start, end, kwargs) == (
        "backfill_month",
        2016,
        6,
        FIRST,
        LAST,
        {"status": "final"},
    )
    assert isinstance(s, Settings) and (s.region, s.archive) == ("iowa", "file:///a")


def test_downscale_days_task_and_fit_model_task_pass_their_arguments(calls):
    days = [date(2016, 6, 2), date(2016, 6, 1)]
    assert downscale_days_task.fn(settings(), days, "nrt") == {"downscaled_1km": "c1"}
    assert fit_model_task.fn(settings(store="file:///m"), True, True) == "model-commit"
    (_, (s, passed), kwargs), (_, (s_fit,), fit_kwargs) = calls
    assert passed == days and kwargs == {"status": "nrt"} and s.store == "file:///s"
    assert s_fit.store == "file:///m" and fit_kwargs == {"by_month": True, "absolute_dt": True}


def test_build_references_task_passes_archive_products_and_storage_options(monkeypatch):
    seen = {}

    def fake(archive, products, storage_options, progress=True):
        seen.update(archive=archive, products=products, storage_options=storage_options, progress=progress)
        return refs.RefsReport(archive, {"gldas": refs.ProductReport("gldas", granules=3, reused=["a", "b"])})

    monkeypatch.setattr("tasks.refs.build_references", fake)
    rows = build_references_task.fn(settings(storage_options={"anon": True}), ("gldas",))
    assert seen == {
        "archive": "file:///a",
        "products": ["gldas"],
        "storage_options": {"anon": True},
        "progress": False,
    }
    assert rows == [
        {"product": "gldas", "granules": 3, "referenced": 0, "reused": 2, "failed": 0, "removed": 0}
    ]
    with pytest.raises(ValueError, match="archive"):
        build_references_task.fn({**settings(), "archive": None}, None)


def test_tasks_retry_and_do_not_cache():
    from prefect.cache_policies import NO_CACHE

    for task in (build_references_task, fit_model_task, downscale_month_task, downscale_days_task,
                 collect_garbage_task, describe_cubes_task):
        assert task.retries >= 1 and task.retry_delay_seconds
        assert task.cache_policy is NO_CACHE, "the cubes say what is done, not Prefect's cache"


def test_downscaling_tasks_do_not_retry_what_fails_the_same_way_again():
    from prefect.states import Failed

    for task in (downscale_month_task, downscale_days_task):
        assert task.retry_condition_fn is worth_retrying
    assert not worth_retrying(None, None, Failed(data=runs.QCError("NRT 2016-06-01 fails the QC gate")))
    assert not worth_retrying(None, None, Failed(data=runs.MissingInputs("no VIIRS LST granules")))
    assert worth_retrying(None, None, Failed(data=OSError("the connection was reset")))


# -- deployments ---------------------------------------------------------------------------------------------


def deployments() -> list[dict]:
    return yaml.safe_load(PREFECT_YAML.read_text())["deployments"]


def load_entrypoint(entrypoint: str, monkeypatch) -> Flow:
    """Load an entrypoint the way a worker does (Prefect's loader, from the repository root), then forget
    the modules and sys.path entries the loader added."""
    from prefect.flows import load_flow_from_entrypoint

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    try:
        return load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False)
    finally:
        stem = Path(entrypoint.split(":")[0]).stem
        for name in set(sys.modules) - before:
            if name == stem or name.startswith("__prefect_loader_"):
                del sys.modules[name]


def test_prefect_yaml_deployments_load_their_flows(monkeypatch):
    from prefect.cli.deploy._models import DeploymentConfig, PrefectYamlModel  # what `prefect deploy` reads

    raw = yaml.safe_load(PREFECT_YAML.read_text())
    model = PrefectYamlModel.model_validate(raw)
    assert {d.name for d in model.deployments} == {"nrt", "backfill", "model", "refs", "gc"}
    for deployment in raw["deployments"]:
        assert set(deployment) <= set(DeploymentConfig.model_fields), f"unknown keys in {deployment['name']}"
        path, function = deployment["entrypoint"].split(":")
        assert (REPO / path).is_file(), deployment["entrypoint"]
        flow = load_entrypoint(deployment["entrypoint"], monkeypatch)
        assert isinstance(flow, Flow) and flow.fn.__name__ == function
        assert deployment["work_pool"]["name"] == "soilcube"


def test_prefect_yaml_pulls_into_the_image_workdir_and_schedules_nrt_daily_and_gc_weekly():
    workdir = next(
        line.split()[1]
        for line in (REPO / "Dockerfile").read_text().splitlines()
        if line.startswith("WORKDIR")
    )
    pull = yaml.safe_load(PREFECT_YAML.read_text())["pull"]
    assert {"prefect.deployments.steps.set_working_directory": {"directory": workdir}} in pull
    schedules = {d["name"]: d.get("schedules") for d in deployments()}
    (nrt,), (gc,) = schedules.pop("nrt"), schedules.pop("gc")
    assert nrt["cron"].split()[2:] == ["*", "*", "*"] and nrt["timezone"] == "UTC"
    assert gc["cron"].split()[2:4] == ["*", "*"] and gc["cron"].split()[4].isdigit()  # one day a week
    assert all(s is None for s in schedules.values())  # the other units run when someone asks


@pytest.mark.parametrize(
    "run_parameters", [{}, {"run_date": "2016-06-06", "overrides": {"store": "s3://b/c"}}]
)
def test_prefect_yaml_parameters_pass_the_checks_of_server_and_engine(run_parameters, monkeypatch):
    """A run of each deployment checked with Prefect's own functions (fast; the server itself is in the
    test below): the API merges deployment and run parameters and checks them against the flow's parameter
    schema, which lists **overrides as a *required* `overrides` parameter (hence `overrides: {}` in
    prefect.yaml); the engine then validates them and expands `overrides` into keyword arguments. Settings
    overrides must be nested under `overrides` (a top-level one is refused)."""
    from prefect.exceptions import SignatureMismatchError
    from prefect.utilities.callables import parameters_to_args_kwargs
    from prefect.utilities.schema_tools import ValidationError, validate

    required = {"backfill": {"start": "2016-06-01", "end": "2016-06-03"}}
    for deployment in deployments():
        name = deployment["name"]
        flow = load_entrypoint(deployment["entrypoint"], monkeypatch)
        given = {**required.get(name, {}), **(run_parameters if name == "nrt" else {})}
        parameters = {**deployment.get("parameters", {}), **given}
        validate(parameters, flow.parameters.model_dump(), raise_on_error=True)
        if name != "nrt":
            with pytest.raises(ValidationError, match="'overrides' is a required property"):  # as the API
                validate(given, flow.parameters.model_dump(), raise_on_error=True)
        args, kwargs = parameters_to_args_kwargs(flow.fn, flow.validate_parameters(parameters))
        inspect.signature(flow.fn).bind(*args, **kwargs)
        assert kwargs.get("store") == parameters["overrides"].get("store")
        with pytest.raises(SignatureMismatchError):
            flow.validate_parameters({**parameters, "store": "s3://b/c"})


# -- flows on Prefect's test server (slow) --------------------------------------------------------------


TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="session")
def prefect_server():
    """One Prefect test server (SQLite, subprocess) for the whole session: it takes 10–20 s to start."""
    from prefect.testing.utilities import prefect_test_harness

    began = time.perf_counter()
    with pytest.MonkeyPatch.context() as patch:
        # The server's telemetry heartbeat otherwise races the migrations: "database is locked" tracebacks.
        patch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        with prefect_test_harness(server_startup_timeout=120):
            TIMINGS["harness start"] = time.perf_counter() - began
            yield
    print("\nPrefect flow timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in TIMINGS.items()))


def timed(name: str, flow: Flow, **parameters):
    began = time.perf_counter()
    state = flow(**parameters, return_state=True)
    TIMINGS[name] = time.perf_counter() - began
    return state


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """A three-day synthetic archive over Oklahoma with ~18 days of GLDAS/LTDR record before it (enough dry
    pairs for the fit to give coefficients: 0.02 years leaves every stratum under the minimum), and an empty
    store."""
    from soilcube.grids import REGIONS
    from soilcube.synth.archive import build_archive

    root = tmp_path_factory.mktemp("flows")
    archive, cubes = (root / "archive").as_uri(), (root / "store").as_uri()
    began = time.perf_counter()
    build_archive(
        REGIONS["oklahoma"],
        FIRST,
        LAST,
        archive,
        seed=0,
        gldas_years=0.05,
        products=PRODUCTS,
        progress=False,
        workers=2,
    )
    TIMINGS["synthetic archive"] = time.perf_counter() - began
    return {"archive": archive, "store": cubes}


@pytest.fixture(scope="module")
def scheduler(roots):
    """A standing Dask cluster, as in production (the Dask operator's scheduler address in the settings):
    the flows after refs_flow connect to it instead of starting a local cluster each."""
    from dask.distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    ) as cluster:
        yield {**roots, "scheduler_address": cluster.scheduler_address}


@pytest.fixture(scope="module")
def refs_run(prefect_server, roots):
    """refs_flow without a scheduler address: the flow starts and stops its own local cluster."""
    from flows.refs import refs_flow

    return timed("refs_flow (own local cluster)", refs_flow, products=PRODUCTS, **roots)


@pytest.fixture(scope="module")
def model_run(refs_run, scheduler):
    from flows.model import model_flow

    return timed("model_flow", model_flow, **scheduler)


@pytest.fixture(scope="module")
def nrt_run(model_run, scheduler):
    from flows.nrt import nrt_flow

    return timed("nrt_flow", nrt_flow, run_date=date(2016, 6, 6), **scheduler)


def cube_status(cube_root: str, name: str, version: str | None = None) -> np.ndarray:
    cube = open_cube(f"{cube_root}/{name}", version=version)
    return cube["status"].sel(time=slice(str(FIRST), str(LAST))).values


@pytest.mark.slow
def test_prefect_yaml_deployments_on_the_server_merge_and_check_run_parameters(prefect_server, monkeypatch):
    """Each deployment of prefect.yaml registered on Prefect's server; runs created through it (no worker
    picks them up): the server merges the deployment's parameters with the run's and refuses a run the
    flow's schema rejects."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import PrefectHTTPStatusError

    given = {
        "backfill": {"start": "2016-06-01", "end": "2016-06-03"},
        "nrt": {"run_date": "2016-06-06", "overrides": {"store": "s3://b/c"}},
    }
    registered = {}
    for deployment in deployments():
        name, defaults = deployment["name"], deployment.get("parameters", {})
        flow = load_entrypoint(deployment["entrypoint"], monkeypatch)
        registered[name] = flow.to_deployment(f"test-{name}", parameters=defaults).apply()
        run = run_deployment(registered[name], parameters=given.get(name, {}), timeout=0)
        assert run.parameters == {**defaults, **given.get(name, {})}, name
    with pytest.raises(PrefectHTTPStatusError, match="'start' is a required property"):
        run_deployment(registered["backfill"], parameters={}, timeout=0)  # backfill without its dates


@pytest.mark.slow
def test_refs_flow_builds_the_granule_index(refs_run, roots):
    assert refs_run.is_completed(), refs_run
    rows = {row["product"]: row for row in refs_run.result()}
    assert set(rows) == set(PRODUCTS)
    for product in PRODUCTS:
        index = refs.read_index(roots["archive"], product)
        assert len(index) == rows[product]["granules"] > 0 and (index["status"] == "ok").all(), product


@pytest.mark.slow
def test_model_flow_commits_the_visir_model(model_run, roots):
    assert model_run.is_completed(), model_run
    model = open_cube(f"{roots['store']}/visir_model")
    assert {"a0", "a1"} <= set(model.data_vars) and np.isfinite(model["a0"].values).any()
    assert store.history(roots["store"], "visir_model")[0].snapshot_id == model_run.result()


@pytest.mark.slow
def test_nrt_flow_downscales_the_target_and_recheck_days_as_nrt(nrt_run, roots):
    assert nrt_run.is_completed(), nrt_run
    commits = nrt_run.result()
    assert set(commits) == set(runs.DOWNSCALED_CUBES)
    # the versions the run made (the backfill test makes the days final later)
    for name, commit in commits.items():
        assert (cube_status(roots["store"], name, commit) == store.STATUS_CODES["nrt"]).all(), name
    cube = open_cube(f"{roots['store']}/downscaled_1km", version=commits["downscaled_1km"])
    assert np.isfinite(cube["sm"].sel(time=slice(str(FIRST), str(LAST))).values).any()
    # the STAC catalog written after the commits (names this run's commit, or a later one where the backfill
    # test has run first)
    described = catalog_snapshots(roots["store"])
    assert described.keys() == {*runs.DOWNSCALED_CUBES, "visir_model"}
    for name, commit in commits.items():
        history = [c.snapshot_id for c in store.history(roots["store"], name)]  # newest first
        assert history.index(described[name]) <= history.index(commit), name


def catalog_snapshots(cube_root: str) -> dict[str, str]:
    """{collection: the snapshot id its cube asset names} of the store's STAC catalog."""
    catalog = pystac.Catalog.from_file(f"{cube_root}/stac/catalog.json")
    return {c.id: c.assets["cube"].extra_fields["icechunk:snapshot_id"] for c in catalog.get_children()}


@pytest.mark.slow
def test_backfill_flow_replaces_nrt_with_final_then_skips_the_month(nrt_run, scheduler, roots):
    from flows.backfill import backfill_flow

    first = timed("backfill_flow", backfill_flow, start=FIRST, end=LAST, **scheduler)
    assert first.is_completed(), first
    commits = first.result()["2016-06"]
    assert set(commits) == set(runs.DOWNSCALED_CUBES)
    for name, commit in commits.items():
        assert store.history(roots["store"], name)[0].snapshot_id == commit
        assert (cube_status(roots["store"], name) == store.STATUS_CODES["final"]).all(), name
    sm = open_cube(f"{roots['store']}/downscaled_400m")["sm"].sel(time=slice(str(FIRST), str(LAST)))
    assert np.isfinite(sm.values).any()

    described = catalog_snapshots(roots["store"])
    assert {name: described[name] for name in commits} == commits
    catalog = Path(roots["store"].removeprefix("file://")) / "stac" / "catalog.json"
    written = catalog.stat().st_mtime_ns
    again = timed("backfill_flow again (resume)", backfill_flow, start=FIRST, end=LAST, **scheduler)
    assert again.is_completed() and again.result() == {"2016-06": SKIPPED}
    assert store.history(roots["store"], "downscaled_1km")[0].snapshot_id == commits["downscaled_1km"]
    assert catalog.stat().st_mtime_ns == written  # nothing committed: not written again


@pytest.mark.slow
def test_backfill_flow_tries_every_month_and_fails_naming_the_failed_ones(nrt_run, scheduler, roots):
    from flows.backfill import backfill_flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    # the archive holds no granules of April or May 2016: the April task fails and the May task still
    # runs (and fails too), each once: days without inputs fail the same way again, so no retry
    state = timed("backfill_flow, failing months", backfill_flow, start=date(2016, 4, 30),
                  end=date(2016, 5, 1), **scheduler)
    assert state.is_failed()
    failed = r"2 of 2 months failed \(2016-04: no VIIRS .*; 2016-05: no VIIRS"
    with pytest.raises(runs.BackfillError, match=failed):
        state.result()
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    assert sorted((t.name, t.run_count) for t in task_runs if t.name.startswith("downscale-")) == [
        ("downscale-2016-04", 1), ("downscale-2016-05", 1)]


@pytest.mark.slow
def test_backfill_flow_refuses_products_it_cannot_make(prefect_server, roots):
    from flows.backfill import backfill_flow

    state = backfill_flow(start=FIRST, end=LAST, products=("stf",), return_state=True, **roots)
    assert state.is_failed()
    with pytest.raises(ValueError, match="stf"):
        state.result()


@pytest.mark.slow
def test_gc_flow_deletes_the_chunks_of_a_run_that_never_committed_in_every_cube(prefect_server, tmp_path):
    from flows.maintenance import gc_flow

    from soilcube.grids import REGIONS

    url, window = (tmp_path / "store").as_uri(), REGIONS["oklahoma"].window("M09")
    days = np.arange("2016-06-01", "2016-06-09", dtype="datetime64[D]").astype("datetime64[ns]")
    names = ["downscaled_1km", "downscaled_400m"]
    for name in names:
        store.create_cube(url, name, window, days, layout=store.CubeLayout(time_shard=4, spatial_shard=20,
                                                                            spatial_chunk=10))
    values = np.random.default_rng(0).random((1, *window.shape), np.float32)  # (constant chunks go inline)
    day = xr.Dataset({"sm": (("time", "y", "x"), values)},
                     coords={"time": days[:1], "y": window.y, "x": window.x})
    store.write_slices(url, names[0], day, provenance={}, message="a run")
    chunks = {name: Path(tmp_path / "store" / name / "chunks") for name in names}
    kept = {name: set(chunks[name].rglob("*")) for name in names}
    history = {name: store.history(url, name) for name in names}
    store.stage_slices(url, names[0], day.assign_coords(time=days[5:6]), provenance={}, message="no commit")
    assert set(chunks[names[0]].rglob("*")) > kept[names[0]]

    empty = gc_flow(store=(tmp_path / "typo").as_uri(), return_state=True)
    assert empty.is_failed()
    with pytest.raises(ValueError, match="no cube in the store"):
        empty.result()
    young = gc_flow(store=url, return_state=True)  # the default minimum age spares today's chunks
    assert young.is_completed() and young.result()[names[0]]["chunks"] == 0
    state = gc_flow(store=url, min_age_hours=0, return_state=True)
    assert state.is_completed(), state
    deleted = state.result()
    assert set(deleted) == set(names) and deleted[names[0]]["chunks"] > 0
    assert deleted[names[1]]["chunks"] == 0
    for name in names:
        assert set(chunks[name].rglob("*")) == kept[name]
        assert store.history(url, name) == history[name]
    np.testing.assert_array_equal(open_cube(f"{url}/{names[0]}")["sm"].values[0], values[0])


@pytest.mark.slow
def test_gc_flow_collects_every_cube_when_one_fails_then_fails_naming_it(prefect_server, tmp_path,
                                                                          monkeypatch):
    import flows.maintenance
    import tasks.store

    from soilcube.grids import REGIONS

    url, window = (tmp_path / "store").as_uri(), REGIONS["oklahoma"].window("M09")
    days = np.arange("2016-06-01", "2016-06-09", dtype="datetime64[D]").astype("datetime64[ns]")
    for name in ("downscaled_1km", "downscaled_400m"):
        store.create_cube(url, name, window, days)
    collect = store.collect_garbage

    def unreadable_1km(store_url, name, **options):  # (the first cube)
        if name == "downscaled_1km":
            raise OSError(f"cannot collect the garbage of the cube at {store_url}/{name}: access denied")
        collected.append(name)
        return collect(store_url, name, **options)

    collected = []
    monkeypatch.setattr(tasks.store, "collect_garbage", unreadable_1km)
    monkeypatch.setattr(flows.maintenance, "collect_garbage_task",
                        tasks.store.collect_garbage_task.with_options(retries=0))
    state = flows.maintenance.gc_flow(store=url, return_state=True)
    assert state.is_failed() and collected == ["downscaled_400m"]
    with pytest.raises(RuntimeError, match="garbage collection failed: downscaled_1km: .*access denied"):
        state.result()
