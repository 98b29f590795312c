"""The benchmarks run end to end on tiny sizes and return finite, positive figures. No speed thresholds here:
speed and memory targets are ratios that the benchmarks themselves report (`soilcube bench …`)."""

import io
import json
import math

import pytest
from rich.console import Console

from soilcube.bench import ACCESS_OPERATIONS, run_access_benchmark, run_refs_benchmark, run_visir_benchmark
from soilcube.grids import Window


def _positive(value) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and math.isfinite(value) and value > 0


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=150)


def test_refs_benchmark_figures():
    figures = run_refs_benchmark(console=_quiet(), repeats=2, reference_repeats=1)
    json.dumps(figures)  # JSON-friendly
    for key in ("h5py_open_slice_s", "refs_open_read_s", "refs_read_only_s", "refs_on_the_fly_s",
                "reference_granule_s", "ratio_refs_to_h5py", "ratio_read_only_to_h5py",
                "ratio_on_the_fly_to_h5py", "granule_bytes", "sm_surface_chunk_bytes"):
        assert _positive(figures[key]), key
    assert figures["window"] == {"grid": "M09", "rows": [320, 360], "cols": [864, 904]}
    assert all(len(runs) == 2 for runs in figures["runs_s"].values())
    # the chunk is heavy (dense data over the whole grid), not a window in a sea of fill values
    assert figures["sm_surface_chunk_bytes"] > 5 * 2**20


@pytest.fixture(scope="module")
def visir():
    return run_visir_benchmark(
        console=_quiet(), quick=True, conus_fraction=0.002, apply_repeats=1,
        global_window=Window("M400", 14400, 36000, 900, 1350), global_chunk=450, global_bands=None,
        global_budget_s=0.0, check_chunks=2,
        fit_years=0.2, fit_time_chunk=37, fit_cells=(6, 12), plan_sample=3,
    )


def test_visir_apply_figures(visir):
    json.dumps(visir)
    a = visir["apply"]
    for key in ("apply_correct_s", "hybrid_only_s", "apply_correct_cpu_s", "pixels_per_s_per_core",
                "hybrid_only_pixels_per_s_per_core", "triad_values_per_s", "ratio_apply_to_triad",
                "ratio_hybrid_only_to_triad"):
        assert _positive(a[key]), key
    assert a["pixels"] == a["fine_window"]["shape"][0] * a["fine_window"]["shape"][1]
    assert a["fine_window"]["shape"] == [9 * n for n in a["coarse_window"]["shape"]]
    assert a["profile_top"] and all(_positive(p["tottime_s"]) for p in a["profile_top"])


def test_visir_global_figures(visir):
    g = visir["global_400m"]
    # a zero time budget stops after the first band: a partial run, extrapolated and saying so
    assert g["bands"] == 2 and g["bands_measured"] == 1 and not g["complete"]
    assert g["chunks"] == 6 and g["chunks_measured"] == 3
    assert "measured 1 of 2 bands = 3 of 6 chunks" in g["note"] and "extrapolated" in g["note"]
    assert g["wall_s_full_day"] == pytest.approx(g["wall_s_measured"] / g["fraction_measured"])
    for key in ("wall_s_measured", "pixels_per_s", "peak_rss_bytes_max", "mean_sm", "valid_pixels"):
        assert _positive(g[key]), key
    assert 0.05 < g["mean_sm"] < 0.6
    assert len(g["per_worker"]) == 2
    assert all(_positive(w["peak_rss_bytes"]) and w["peak_rss_bytes"] >= 0.9 * w["start_rss_bytes"]
               for w in g["per_worker"])
    exact = g["exact"]
    assert exact["shape"] == [900, 900] and exact["chunks"] == 4
    assert exact["tiled_equals_whole"]  # the tiled computation is exact, not an approximation
    assert _positive(exact["valid_pixels"]) and _positive(exact["tiled_wall_s"])


def test_visir_fit_figures(visir):
    per_class, by_month = visir["fit"]
    assert not per_class["by_month"] and by_month["by_month"]
    for fit in (per_class, by_month):
        assert fit["cells"] == [6, 12] and fit["days"] == 73
        assert fit["pairs"] == 73 * 2 * 6 * 12
        for key in ("wall_s", "pairs_per_s", "peak_rss_bytes_max", "strata"):
            assert _positive(fit[key]), key
    assert by_month["strata"] == 12 * per_class["strata"]
    assert _positive(per_class["fitted_strata"])  # 73 days are too few for most strata by month
    assert per_class["mean_a1"] == pytest.approx(-0.008, abs=0.002)  # the synthetic slope comes back


def test_visir_mosaic_plan_figures(visir):
    m = visir["mosaic_plan"]
    assert m["window"] == {"grid": "M400", "shape": [900, 1350]} and m["chunks"] == 4  # 720² chunks
    for pixels, t in m["tiles"].items():
        assert t["sample_chunks"] == 3 and t["sample_blocks_equal"], pixels
        assert _positive(t["plan_s"]) and _positive(t["lookup_s_per_chunk"]) and t["tile_blocks"] >= 4
        assert t["lookup_s_extrapolated"] == pytest.approx(t["lookup_s_per_chunk"] * 4)


@pytest.mark.slow
def test_access_benchmark_figures():
    figures = run_access_benchmark(console=_quiet(), days=10, repeats=1)  # (it checks its reads' values)
    json.dumps(figures)
    assert figures["days"] == 10 and figures["window"] == {"grid": "M01", "shape": [360, 360]}
    assert _positive(figures["chunk_bytes_stored_all_snapshots"])
    for where in ("local disk", "S3"):
        assert _positive(figures["write_s"][where])
        assert all(len(figures["runs_s"][where][op]) == 1 for op in ACCESS_OPERATIONS)
    for operation in ACCESS_OPERATIONS:
        assert _positive(figures["ratio_s3_to_local_disk"][operation]), operation
