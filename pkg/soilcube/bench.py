"""Benchmarks, reported as RATIOS measured in one run (machines are shared and noisy), never as absolute
targets in timed unit tests.

- `run_refs_benchmark`: read the Oklahoma M09 window of one SMAP L4 scene through kerchunk references
  (`open_granules`) against h5py straight from the file, interleaved, median of repeats; and the time to
  reference one granule.
- `run_visir_benchmark`: (a) apply + correct a CONUS 1 km day (the fused kernel, `downscale_and_correct`, as
  `runs.downscale_window` calls it) in one process and one thread against a numpy streaming triad over as
  many float32 values; (b) a global 400 m day chunk by chunk on a local Dask cluster with bounded memory
  (wall time, peak memory per worker), (b') its tiles checked bit for bit against one kernel call on a
  block of chunks; (c) the model fit over 40 years of a CONUS GLDAS window (wall time, peak memory per
  worker); (d) planning the VIIRS mosaic of a global 400 m day (the tile blocks of every chunk) against the
  per-cell lookup it replaced.
- `run_access_benchmark`: what an analyst does with a cube through `open_cube` (open it; a map of one day; a
  pixel's time series; a 36 km box's mean time series), on a year of a downscaled_1km cube over Oklahoma
  in the real layout, through the embedded S3 server on loopback against the same cube on local disk,
  interleaved, warm cache.

Every figure is measured in the run that prints it; where a run covers only part of the work (a band of
chunks, a few years) the output says so and how the whole was extrapolated.
"""

from __future__ import annotations

import cProfile
import io
import logging
import math
import os
import pstats
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    import xarray as xr

# Single-threaded numerics for the per-core figures; set before the native libraries start their pools
# where possible (worker processes of the local clusters inherit them).
_ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                      "NUMEXPR_NUM_THREADS", "BLOSC_NTHREADS")}

REFS_GOAL = 1.3  # refs/h5py read time, at most
APPLY_GOAL = 0.5  # (pixels/s of apply + correct) / (values/s of the triad), at least
MINUTES_BUDGET = 8.0  # a global 400 m day longer than this on this machine is run in part and extrapolated


# --- shared helpers ---------------------------------------------------------------------------------------


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _table(title: str, rows: list[tuple[str, str, str]]) -> Table:
    table = Table(title=title)
    for column in ("figure", "value", "note"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    return table


def _plain(value):
    """numpy scalars → Python numbers, tuples → lists, recursively: JSON-friendly figures."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.0f} MiB"


@contextmanager
def _one_thread_libraries():
    """OMP/MKL/OpenBLAS limited to one thread in the environment: anything started inside inherits it."""
    saved = {k: os.environ.get(k) for k in _ONE_THREAD}
    os.environ.update(_ONE_THREAD)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def _one_thread():
    """One-thread libraries and dask's synchronous scheduler."""
    import dask

    with _one_thread_libraries(), dask.config.set(scheduler="synchronous"):
        yield


# --- 1. references vs h5py --------------------------------------------------------------------------------


def _global_l4_fields(shape: tuple[int, int], seed: int) -> dict[str, np.ndarray]:
    """Dense valid values on the whole M09 grid: a smooth large-scale pattern plus pixel noise, so that the
    single gzip chunk compresses like real float32 science data (not like a constant)."""
    rng = np.random.default_rng(seed)
    lat = np.linspace(-1.0, 1.0, shape[0], dtype=np.float32)[:, None]
    lon = np.linspace(-np.pi, np.pi, shape[1], dtype=np.float32)[None, :]
    pattern = np.cos(3 * lat) * (0.5 + 0.5 * np.sin(2 * lon + lat))
    noise = rng.standard_normal(shape, dtype=np.float32)
    return {
        "sm_surface": np.clip(0.05 + 0.3 * pattern + 0.02 * noise, 0.02, 0.5),
        "sm_rootzone": np.clip(0.08 + 0.25 * pattern + 0.01 * noise, 0.02, 0.5),
        "surface_temp": 250.0 + 50.0 * pattern + 2.0 * noise,
    }


def run_refs_benchmark(console: Console | None = None, repeats: int = 7, reference_repeats: int = 3,
                       seed: int = 0) -> dict:
    """Read the Oklahoma M09 window of `sm_surface` from one SMAP L4 granule written dense over the whole
    globe (one 1624 × 3856 float32 gzip chunk, as the real files): h5py (open + slice) against
    `open_granules` with persisted references (open + `.values`), interleaved, median of `repeats`.

    Also: the read alone on a dataset opened once ("read only"), `open_granules` on a granule without
    persisted references (referenced on the fly), and the time to reference one granule
    (`reference_granule`). Returns the figures as a JSON-friendly dict.
    """
    import h5py

    from soilcube.grids import REGIONS, Window, ease2_grid
    from soilcube.refs import build_references
    from soilcube.sources import open_granules, reader
    from soilcube.sources.references import reference_granule
    from soilcube.synth.writers import write_smap_l4

    console = console or Console()
    grid = ease2_grid("M09")
    whole = Window("M09", 0, 0, *grid.shape)
    region = REGIONS["oklahoma"]
    rows, cols = region.window("M09").slices
    l4 = reader("smap_l4")
    with tempfile.TemporaryDirectory(prefix="soilcube-bench-") as tmp:
        archive = Path(tmp) / "archive"
        write_s, url = _timed(lambda: write_smap_l4(
            (archive / "smap_l4").as_uri(), window=whole, centre=datetime(2016, 6, 1, 1, 30),
            fields=_global_l4_fields(grid.shape, seed)))
        path = url.removeprefix("file://")
        # the same file outside the archive layout: no persisted references, so open_granules makes them
        loose = Path(tmp) / "loose" / Path(path).name
        loose.parent.mkdir()
        os.link(path, loose)
        loose_url = loose.as_uri()

        reference_times = [_timed(lambda: reference_granule(l4, url))[0] for _ in range(reference_repeats)]
        build_s, _ = _timed(lambda: build_references(archive.as_uri(), ["smap_l4"], progress=False))

        def by_h5py():
            with h5py.File(path, "r") as f:
                return f["Geophysical_Data/sm_surface"][rows, cols]

        def by_refs(target=url):
            ds = open_granules("smap_l4", [target], window=region, variables=["sm_surface"])
            return ds["sm_surface"].values

        opened = open_granules("smap_l4", [url], window=region, variables=["sm_surface"])

        def read_only():
            return opened["sm_surface"].values

        raw = by_h5py()
        expected = np.where(raw == -9999.0, np.nan, raw)
        for got in (by_refs(), read_only(), by_refs(loose_url)):  # also the warm-up of every path
            np.testing.assert_array_equal(got[0], expected)
        runs = {"h5py": [], "refs": [], "refs_read_only": [], "refs_on_the_fly": []}
        for _ in range(repeats):
            runs["h5py"].append(_timed(by_h5py)[0])
            runs["refs"].append(_timed(by_refs)[0])
            runs["refs_read_only"].append(_timed(read_only)[0])
            runs["refs_on_the_fly"].append(_timed(lambda: by_refs(loose_url))[0])
        size = os.path.getsize(path)
        with h5py.File(path, "r") as f:
            chunk_bytes = f["Geophysical_Data/sm_surface"].id.get_chunk_info(0).size

    median = {k: statistics.median(v) for k, v in runs.items()}
    figures = {
        "granule_bytes": size,
        "sm_surface_chunk_bytes": int(chunk_bytes),
        "window": {"grid": "M09", "rows": [rows.start, rows.stop], "cols": [cols.start, cols.stop]},
        "repeats": repeats,
        "write_granule_s": write_s,
        "reference_granule_s": statistics.median(reference_times),
        "build_references_s": build_s,
        "h5py_open_slice_s": median["h5py"],
        "refs_open_read_s": median["refs"],
        "refs_read_only_s": median["refs_read_only"],
        "refs_on_the_fly_s": median["refs_on_the_fly"],
        "ratio_refs_to_h5py": median["refs"] / median["h5py"],
        "ratio_read_only_to_h5py": median["refs_read_only"] / median["h5py"],
        "ratio_on_the_fly_to_h5py": median["refs_on_the_fly"] / median["h5py"],
        "goal_ratio_refs_to_h5py_at_most": REFS_GOAL,
        "runs_s": runs,
    }
    figures["goal_met"] = figures["ratio_refs_to_h5py"] <= REFS_GOAL
    figures = _plain(figures)
    console.print(_table(
        f"SMAP L4 sm_surface, Oklahoma M09 window {rows.stop - rows.start}×{cols.stop - cols.start}, "
        f"median of {repeats} interleaved runs",
        [
            ("granule", f"{size / 2**20:.1f} MiB", f"sm_surface chunk {chunk_bytes / 2**20:.1f} MiB, dense "
             "valid data on the whole 1624×3856 grid"),
            ("h5py open + slice", _ms(median["h5py"]), "baseline"),
            ("refs open_granules + .values", _ms(median["refs"]), "persisted references (soilcube refs)"),
            ("refs read only", _ms(median["refs_read_only"]), "dataset opened once, .values timed"),
            ("refs on the fly", _ms(median["refs_on_the_fly"]), "no persisted refs: referenced per open"),
            ("reference_granule", _ms(figures["reference_granule_s"]),
             f"median of {reference_repeats}; build_references {build_s:.2f} s"),
            ("ratio refs / h5py", f"{figures['ratio_refs_to_h5py']:.2f}",
             f"goal ≤ {REFS_GOAL}: {'met' if figures['goal_met'] else 'NOT met'}"),
            ("ratio read only / h5py", f"{figures['ratio_read_only_to_h5py']:.2f}", ""),
            ("ratio on the fly / h5py", f"{figures['ratio_on_the_fly_to_h5py']:.2f}", ""),
        ],
    ))
    return figures


# --- 2. VIS/IR apply, correct and fit -------------------------------------------------------------------

FINE_PER_COARSE_400M = 22.5  # M400 pixels per M09 cell along an axis
ALIGN_400M = 45  # the smallest whole number of M400 pixels that is a whole number of M09 cells (2)
HALO_CELLS = 2  # the default 36 km footprint reaches 2 M09 cells (weights ½, 1, 1, 1, ½) from its cell
N_CLASSES = 10
DAY = np.datetime64("2016-06-01")


def _random_model(shape: tuple[int, int], rng: np.random.Generator, *, months: bool) -> xr.Dataset:
    """A fitted-model stand-in on a block of GLDAS cells: random a0, a1 (and `borrowed`) per cell × class
    (× month × overpass: `months`), the layout `fit_model` returns."""
    import xarray as xr

    dims = ("lat", "lon", "veg_class")
    coords = {"veg_class": np.arange(N_CLASSES)}
    full = (*shape, N_CLASSES)
    if months:
        dims, full = (*dims, "month", "overpass"), (*full, 12, 2)
        coords |= {"month": np.arange(1, 13), "overpass": ["AM", "PM"]}
    return xr.Dataset(
        {"a0": (dims, rng.uniform(0.25, 0.45, full)), "a1": (dims, rng.uniform(-0.012, -0.002, full)),
         "borrowed": (dims, (rng.random(full) < 0.1).astype(np.uint8))},
        coords=coords,
    )


def _gldas_cells(window, origin: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """The GLDAS row and column (counted from `origin`, the model block's first cell) of every row and
    column of an EASE2 window, −1 off the GLDAS grid (EASE2 reaches ±85°, GLDAS only −60° … 90°)."""
    from soilcube.grids import GLDAS_GRID

    rows, cols = GLDAS_GRID.row_of_lat(window.lat), GLDAS_GRID.col_of_lon(window.lon)
    off = (rows < 0) | (rows >= GLDAS_GRID.shape[0]), (cols < 0) | (cols >= GLDAS_GRID.shape[1])
    rows, cols = rows - origin[0], cols - origin[1]
    rows[off[0]], cols[off[1]] = -1, -1
    return rows, cols


def _gldas_block(window) -> tuple[tuple[int, int], tuple[int, int]]:
    """(origin, shape) of the block of GLDAS cells that the EASE2 window reaches: the model a day needs
    (the whole GLDAS grid for the global window)."""
    rows, cols = _gldas_cells(window)
    rows, cols = rows[rows >= 0], cols[cols >= 0]
    if not rows.size or not cols.size:
        raise ValueError(f"{window} does not reach the GLDAS grid")
    return ((int(rows.min()), int(cols.min())),
            (int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)))


def _triad(x: np.ndarray, y: np.ndarray, out: np.ndarray, a: np.float32) -> None:
    """out = a·x + y, the STREAM triad at numpy's best (no temporaries)."""
    np.multiply(x, a, out=out)
    np.add(out, y, out=out)


def _top_functions(profile: cProfile.Profile, n: int = 8) -> list[dict]:
    stats = pstats.Stats(profile, stream=io.StringIO())
    total = stats.total_tt
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:n]
    return [{"function": f"{Path(file).name}:{line}({name})", "tottime_s": tt, "share": tt / total}
            for (file, line, name), (_, _, tt, _, _) in rows]


def _bench_apply(conus_fraction: float, repeats: int, seed: int) -> dict:
    """(a) `downscale_and_correct` (the fused kernel, as `runs.downscale_window` calls it: hybrid + additive,
    float32 out) on a CONUS 1 km day, numpy-backed, one process and one thread, against the triad over as
    many float32 values, interleaved; and the hybrid correction alone (the earlier figure's scope)."""
    import xarray as xr

    from soilcube.grids import GLDAS_GRID, REGIONS, Window, parent_index
    from soilcube.visir.correct import CORRECTIONS, downscale_and_correct

    conus = REGIONS["conus"].window("M09")
    scale = math.sqrt(conus_fraction)
    coarse = Window("M09", conus.row0, conus.col0, max(1, round(conus.nrows * scale)),
                    max(1, round(conus.ncols * scale)))
    fine = Window("M01", coarse.row0 * 9, coarse.col0 * 9, coarse.nrows * 9, coarse.ncols * 9)
    rng = np.random.default_rng(seed)
    gldas_rows, gldas_cols = GLDAS_GRID.window_slices(fine)
    model = _random_model((gldas_rows.stop - gldas_rows.start, gldas_cols.stop - gldas_cols.start), rng,
                          months=True)
    rows, cols = GLDAS_GRID.index(fine)
    cell_index = (rows - gldas_rows.start, cols - gldas_cols.start)
    u = rng.random(fine.shape, dtype=np.float32)
    dt = np.where(u < 0.3, np.float32(np.nan), np.float32(2) + np.float32(40) * (u - np.float32(0.3)))
    dt = xr.DataArray(dt, dims=("y", "x")).assign_coords(time=DAY, overpass="AM")  # 30 % cloud
    veg = xr.DataArray(rng.integers(0, N_CLASSES, fine.shape, dtype=np.uint8), dims=("y", "x"))
    smap = rng.uniform(0.05, 0.45, coarse.shape)
    smap[rng.random(coarse.shape) < 0.05] = np.nan
    smap = xr.DataArray(smap, dims=("y", "x"))
    parents = parent_index(fine, coarse)
    pixels = fine.nrows * fine.ncols
    hybrid_only = {"sm": CORRECTIONS["sm"]}

    def apply_correct(corrections=CORRECTIONS) -> tuple[float, float]:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        out = downscale_and_correct(dt, veg, model, cell_index, smap, parents, corrections)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        assert isinstance(out["sm"].data, np.ndarray) and out["sm"].dtype == np.float32
        return wall, cpu

    x, y = rng.random(pixels, dtype=np.float32), rng.random(pixels, dtype=np.float32)
    out = np.empty_like(x)
    a = np.float32(3.0)

    def triad() -> tuple[float, float]:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        _triad(x, y, out, a)
        return time.perf_counter() - wall0, time.process_time() - cpu0

    with _one_thread():
        # warm-up: compilation (or the on-disk cache) of the kernels, first touch of the arrays
        apply_correct(), apply_correct(hybrid_only), triad()
        runs: dict[str, list[float]] = {k: [] for k in ("total", "cpu", "hybrid", "triad", "triad_cpu")}
        usage0 = resource.getrusage(resource.RUSAGE_SELF)
        for _ in range(repeats):
            for _ in range(5):
                wall, cpu = triad()
                runs["triad"].append(wall)
                runs["triad_cpu"].append(cpu)
            wall, cpu = apply_correct()
            runs["total"].append(wall)
            runs["cpu"].append(cpu)
            runs["hybrid"].append(apply_correct(hybrid_only)[0])
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        profile = cProfile.Profile()
        profile.runcall(apply_correct)
    median = {k: statistics.median(v) for k, v in runs.items()}
    user, system = usage1.ru_utime - usage0.ru_utime, usage1.ru_stime - usage0.ru_stime
    apply_rate, triad_rate = pixels / median["total"], pixels / median["triad"]
    return {
        "fine_window": {"grid": "M01", "shape": list(fine.shape)},
        "coarse_window": {"grid": "M09", "shape": list(coarse.shape)},
        "model_cells": [gldas_rows.stop - gldas_rows.start, gldas_cols.stop - gldas_cols.start],
        "model_groups": "veg_class × month × overpass = 10 × 12 × 2",
        "pixels": pixels,
        "repeats": repeats,
        "threads": 1,
        "what": "downscale_and_correct: apply + hybrid (36 km) + additive (33 km) corrections + QA, float32 "
                "out, as runs.downscale_window calls it",
        "apply_correct_s": median["total"],
        "apply_correct_cpu_s": median["cpu"],
        "hybrid_only_s": median["hybrid"],
        # of the timed loop (the apply + correct runs and the triads)
        "kernel_time_share": system / (user + system) if user + system else 0.0,
        "pixels_per_s_per_core": apply_rate,
        "hybrid_only_pixels_per_s_per_core": pixels / median["hybrid"],
        "triad_s": median["triad"],
        "triad_values_per_s": triad_rate,
        "ratio_apply_to_triad": apply_rate / triad_rate,
        "ratio_hybrid_only_to_triad": pixels / median["hybrid"] / triad_rate,
        "ratio_apply_to_triad_cpu_time": (pixels / median["cpu"]) / (pixels / median["triad_cpu"])
        if median["triad_cpu"] > 0 else None,
        "goal_ratio_at_least": APPLY_GOAL,
        "goal_met": apply_rate / triad_rate >= APPLY_GOAL,
        "profile_top": _top_functions(profile),
    }


# --- distributed runs: local clusters, peak memory per worker ---------------------------------------------
#
# Peak memory is the kernel's high-water mark of each worker process (VmHWM in /proc/<pid>/status), reset to
# the current RSS before each measurement (`echo 5 > /proc/self/clear_refs`). Not ru_maxrss: a process
# spawned by fork + exec inherits its parent's ru_maxrss, so every worker of a cluster started from a big
# benchmark process would report at least the parent's peak.


def _proc_status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0]) * 1024
    return out


def _worker_reset_peak() -> bool:
    """Runs on a worker: reset its peak RSS to the current RSS (Linux ≥ 4.0); False where not allowed."""
    import gc

    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _worker_usage() -> dict:
    """Runs on a worker: peak RSS since the last reset, current RSS (bytes) and CPU seconds so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    status = _proc_status()
    return {"peak_rss_bytes": status["VmHWM"], "rss_bytes": status["VmRSS"],
            "cpu_s": usage.ru_utime + usage.ru_stime}


@contextmanager
def _local_cluster(memory_limit: str, n_workers: int = 2):
    """A LocalCluster of `n_workers` processes × 1 thread with `memory_limit` per worker."""
    import warnings

    from dask.distributed import Client, LocalCluster

    with _one_thread_libraries(), warnings.catch_warnings():  # the worker processes inherit the environment
        warnings.filterwarnings("ignore", message=".*[Ll]arge graph.*")
        warnings.filterwarnings("ignore", message=".*[Pp]ort .* already in use.*")
        with (
            LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                         dashboard_address=":0", memory_limit=memory_limit,
                         silence_logs=logging.CRITICAL) as cluster,
            Client(cluster) as client,
        ):
            yield client


@contextmanager
def _measured(client, into: dict):
    """Per worker, into `into["per_worker"]`: peak RSS during the block (measured), RSS at its start and
    CPU seconds spent in it; and the 1-minute load average at the start and the end."""
    reset = all(client.run(_worker_reset_peak).values())
    before = client.run(_worker_usage)
    load = os.getloadavg()[0]
    yield
    after = client.run(_worker_usage)
    into["per_worker"] = [
        {"peak_rss_bytes": after[w]["peak_rss_bytes"], "start_rss_bytes": before[w]["rss_bytes"],
         "cpu_s": after[w]["cpu_s"] - before[w]["cpu_s"]}
        for w in sorted(after)
    ]
    into["peak_rss_bytes_max"] = max(w["peak_rss_bytes"] for w in into["per_worker"])
    into["peak_is"] = "VmHWM since reset" if reset else "VmHWM since the worker started (reset refused)"
    into["worker_cpu_s"] = sum(w["cpu_s"] for w in into["per_worker"])
    into["load_average_1min"] = [load, os.getloadavg()[0]]


def _global_inputs(fine, chunk: int, seed: int):
    """Lazy synthetic inputs of a 400 m day on `fine` (dask.array random, `chunk` × `chunk`): ΔT (float32,
    30 % cloud NaN), vegetation class (uint8) and SMAP 9 km (chunks of chunk / 22.5 cells, aligned)."""
    import dask.array as da

    from soilcube.grids import Window

    coarse = Window("M09", round(fine.row0 / FINE_PER_COARSE_400M), round(fine.col0 / FINE_PER_COARSE_400M),
                    round(fine.nrows / FINE_PER_COARSE_400M), round(fine.ncols / FINE_PER_COARSE_400M))
    rng = da.random.default_rng(seed)
    u = rng.random(fine.shape, chunks=chunk, dtype=np.float32)
    dt = da.where(u < 0.3, np.float32(np.nan), np.float32(2) + np.float32(40) * (u - np.float32(0.3)))
    veg = rng.integers(0, N_CLASSES, fine.shape, chunks=chunk, dtype=np.uint8)
    smap = rng.uniform(0.05, 0.45, coarse.shape, chunks=round(chunk / FINE_PER_COARSE_400M))
    return dt, veg, smap, coarse


def _check_aligned(fine, chunk: int) -> None:
    values = {"chunk": chunk, "row0": fine.row0, "col0": fine.col0, "nrows": fine.nrows, "ncols": fine.ncols}
    odd = {k: v for k, v in values.items() if v % ALIGN_400M}
    if odd:
        raise ValueError(f"the 400 m window and chunks must be whole multiples of {ALIGN_400M} pixels "
                         f"(2 × 9 km cells): {odd}")


def _corrected_400m(fine, chunk: int, seed: int, model, origin: tuple[int, int], *, tiled: bool = True):
    """The corrected 400 m soil moisture of `fine` by `downscale_and_correct`: `tiled`, lazily on the chunked
    inputs, the production path (`runs.downscale_window`: one task per chunk plus its halo of 9 km cells);
    else numpy-backed in this process (the inputs computed first, one kernel call, no tiles)."""
    import dask
    import xarray as xr

    from soilcube.grids import parent_index
    from soilcube.visir.correct import CORRECTIONS, downscale_and_correct

    *inputs, coarse = _global_inputs(fine, chunk, seed)
    if not tiled:
        inputs = dask.compute(*inputs, scheduler="synchronous")
    dt, veg, smap = (xr.DataArray(a, dims=("y", "x")) for a in inputs)
    out = downscale_and_correct(dt, veg, model, _gldas_cells(fine, origin), smap, parent_index(fine, coarse),
                                CORRECTIONS)
    return out["sm"].data


def _reduce(sm) -> tuple:
    import dask.array as da

    return da.nansum(sm), da.isfinite(sm).sum()


def _bands(fine, chunk: int) -> list[tuple[int, int]]:
    """(first, stop) fine rows (relative to the window) of every band of chunk rows, middle band first and
    then outwards, so that a partial run measures the middle latitudes first."""
    starts = list(range(0, fine.nrows, chunk))
    middle = len(starts) // 2
    order = sorted(range(len(starts)), key=lambda b: (abs(b - middle), b))
    return [(starts[b], min(starts[b] + chunk, fine.nrows)) for b in order]


def _bench_global(client, window, chunk: int, bands: int | None, budget_s: float, model, origin,
                  seed: int) -> dict:
    """(b) the 400 m day on `window`, tile by tile, band of chunk rows by band; stops early (and
    extrapolates) when the whole would take longer than `budget_s`, unless `bands` fixes the count."""
    import dask

    _check_aligned(window, chunk)
    order = _bands(window, chunk)
    n_chunk_cols = math.ceil(window.ncols / chunk)
    total_chunks = len(order) * n_chunk_cols
    total_pixels = window.nrows * window.ncols
    result: dict = {
        "window": {"grid": "M400", "row0": window.row0, "col0": window.col0, "shape": list(window.shape)},
        "pixels": total_pixels, "chunk": [chunk, chunk], "chunks": total_chunks,
        "halo_pixels": round(HALO_CELLS * FINE_PER_COARSE_400M), "budget_s": budget_s,
        "method": "downscale_and_correct on the chunked inputs (as runs.downscale_window): one task per "
                  "chunk with a 2-cell (45 px) halo, then nansum and count; one dask.compute per band of "
                  "chunk rows",
    }
    # the model and tables are scattered to the cluster once
    sm = _corrected_400m(window, chunk, seed, model, origin)
    # warm-up, not timed: one chunk (imports and first calls on the workers)
    first_row, first_col = order[0][0], (n_chunk_cols // 2) * chunk
    result["warmup_s"], _ = _timed(lambda: dask.compute(
        *_reduce(sm[first_row : first_row + chunk, first_col : first_col + chunk])))
    done, done_pixels, total_sum, total_count, band_times, band_peaks = 0, 0, 0.0, 0, [], []
    with _measured(client, result):
        start = time.perf_counter()
        for first, stop in order[: bands or len(order)]:
            client.run(_worker_reset_peak)
            band_start = time.perf_counter()
            band_sum, band_count = dask.compute(*_reduce(sm[first:stop]))
            band_times.append(time.perf_counter() - band_start)
            band_peaks.append([u["peak_rss_bytes"] for _, u in sorted(client.run(_worker_usage).items())])
            total_sum, total_count = total_sum + float(band_sum), total_count + int(band_count)
            done += 1
            done_pixels += (stop - first) * window.ncols
            elapsed = time.perf_counter() - start
            projected = elapsed / done_pixels * total_pixels
            if bands is None and projected > budget_s and elapsed >= 0.4 * budget_s:
                break
        wall = time.perf_counter() - start
    # the peak per worker over the whole run is the largest of the per-band peaks (reset before each band)
    for i, worker in enumerate(result["per_worker"]):
        worker["peak_rss_bytes"] = max(peaks[i] for peaks in band_peaks)
    result["peak_rss_bytes_max"] = max(max(peaks) for peaks in band_peaks)
    complete = done == len(order)
    scale = 1.0 if complete else total_pixels / done_pixels
    result |= {
        "bands_measured": done, "bands": len(order), "chunks_measured": done * n_chunk_cols,
        "pixels_measured": done_pixels, "fraction_measured": done_pixels / total_pixels, "complete": complete,
        "wall_s_measured": wall, "band_wall_s": band_times, "band_peak_rss_bytes": band_peaks,
        "wall_s_full_day": wall * scale,
        "wall_s_full_day_is": "measured" if complete else "extrapolated linearly by pixels",
        "worker_cpu_s_full_day": result["worker_cpu_s"] * scale,
        "pixels_per_s": done_pixels / wall,
        "mean_sm": total_sum / total_count if total_count else float("nan"), "valid_pixels": total_count,
    }
    result["note"] = (f"measured {done} of {len(order)} bands = {done * n_chunk_cols} of {total_chunks} "
                      f"chunks ({result['fraction_measured']:.1%} of the pixels)"
                      + ("" if complete else "; extrapolated linearly"))
    return result


def _bench_exact(client, window, chunk: int, n_chunks: int, model, origin, seed: int) -> dict:
    """(b') the tiled computation (on the cluster) against one numpy kernel call on the whole of an
    `n_chunks` × `n_chunks` block of chunks around the window's middle: the tiles must be exact."""
    import dask

    from soilcube.grids import Window

    rows, cols = min(n_chunks * chunk, window.nrows), min(n_chunks * chunk, window.ncols)
    row0 = window.row0 + max(0, min(_bands(window, chunk)[0][0], window.nrows - rows))
    col0 = window.col0 + max(0, min((window.ncols // chunk // 2) * chunk, window.ncols - cols))
    block = Window("M400", row0, col0, rows, cols)
    out: dict = {"row0": block.row0, "col0": block.col0, "shape": list(block.shape), "chunks": n_chunks ** 2}
    tiled_s, tiled = _timed(lambda: dask.compute(_corrected_400m(block, chunk, seed, model, origin))[0])
    whole_s, whole = _timed(lambda: _corrected_400m(block, chunk, seed, model, origin, tiled=False))
    out |= {"tiled_wall_s": tiled_s, "whole_wall_s": whole_s, "valid_pixels": int(np.isfinite(whole).sum()),
            "tiled_equals_whole": bool(np.array_equal(tiled, whole, equal_nan=True))}
    return out


def _bench_mosaic_plan(window, sample_parts: int) -> dict:
    """(d) Planning the VIIRS mosaic of `window` as `ViirsReader.open` does on the client: the tile blocks
    of every chunk (`grids.sinusoidal_blocks`), for the LST (1200 px tiles) and LAI (2400 px) grids;
    against the per-cell lookup it replaced, timed on `sample_parts` chunks spread over the window's
    rows (they span the latitudes) and extrapolated, its blocks checked equal on the same chunks."""
    from soilcube.grids import lookup_blocks, sinusoidal_blocks, sinusoidal_lookup
    from soilcube.sources.viirs import ViirsReader, _parts

    parts = [part for row in _parts(window, ViirsReader.chunk) for part in row]
    sample = np.unique(np.linspace(0, len(parts) - 1, min(sample_parts, len(parts))).astype(int)).tolist()
    out = {"window": {"grid": window.grid_name, "shape": list(window.shape)}, "chunk": ViirsReader.chunk,
           "chunks": len(parts), "tiles": {}}
    for pixels in (1200, 2400):
        wall0 = time.perf_counter()
        blocks = [sinusoidal_blocks(part, pixels) for part in parts]
        planned = time.perf_counter() - wall0
        wall0 = time.perf_counter()
        lookups = [sinusoidal_lookup(parts[k], pixels) for k in sample]
        per_chunk = (time.perf_counter() - wall0) / len(sample)
        equal = all(blocks[k] == lookup_blocks(lut) for k, lut in zip(sample, lookups, strict=True))
        out["tiles"][str(pixels)] = {
            "plan_s": planned, "tile_blocks": sum(len(b) for b in blocks),
            "lookup_s_per_chunk": per_chunk, "lookup_s_extrapolated": per_chunk * len(parts),
            "sample_chunks": len(sample), "sample_blocks_equal": equal,
        }
    return out


def _fit_inputs(years: float, time_chunk: int, seed: int, cells: tuple[int, int] | None):
    """Lazy synthetic training pairs on the CONUS GLDAS window: daily AM/PM ΔT (40 % non-dry → NaN), θ
    linear in ΔT plus noise, daily NDVI (time, lat, lon)."""
    import dask.array as da
    import pandas as pd
    import xarray as xr

    from soilcube.grids import GLDAS_GRID, REGIONS

    rows, cols = GLDAS_GRID.window_slices(REGIONS["conus"].window("M01"))
    ny, nx = cells or (int(rows.stop - rows.start), int(cols.stop - cols.start))
    times = pd.date_range("1981-01-01", periods=max(1, round(365.25 * years)), freq="D")
    nt = len(times)
    rng = da.random.default_rng(seed)
    chunks = (time_chunk, 2, ny, nx)
    u = rng.random((nt, 2, ny, nx), chunks=chunks, dtype=np.float32)
    dt = da.where(u < 0.4, np.float32(np.nan), np.float32(2) + np.float32(40) * (u - np.float32(0.4)))
    noise = rng.standard_normal((nt, 2, ny, nx), chunks=chunks, dtype=np.float32)
    sm = np.float32(0.4) - np.float32(0.008) * dt + np.float32(0.02) * noise
    ndvi = rng.random((nt, ny, nx), chunks=(time_chunk, ny, nx), dtype=np.float32)
    dims, coords = ("time", "overpass", "lat", "lon"), {"time": times, "overpass": ["AM", "PM"]}
    return (xr.DataArray(sm, dims=dims, coords=coords), xr.DataArray(dt, dims=dims, coords=coords),
            xr.DataArray(ndvi, dims=("time", "lat", "lon"), coords={"time": times}), (nt, ny, nx))


def _bench_fit(client, years: float, by_month: bool, time_chunk: int, seed: int,
               cells: tuple[int, int] | None = None) -> dict:
    """(c) fit_model over `years` of the CONUS GLDAS window (or `cells`)."""
    from soilcube.visir.fit import fit_model

    sm, dt, ndvi, (nt, ny, nx) = _fit_inputs(years, time_chunk, seed, cells)
    out: dict = {"years": years, "days": nt, "cells": [ny, nx], "overpasses": 2, "by_month": by_month,
                 "time_chunk_days": time_chunk, "pairs": nt * 2 * ny * nx}
    with _measured(client, out):
        wall, model = _timed(lambda: fit_model(sm, dt, ndvi, by_month=by_month).compute())
    a1 = model["a1"].values
    fitted = int(np.isfinite(a1).sum())  # own fit or borrowed from the nearest class
    out |= {"wall_s": wall, "pairs_per_s": out["pairs"] / wall, "fitted_strata": fitted,
            "strata": int(a1.size), "mean_a1": float(np.nanmean(a1)) if fitted else None}
    return out


def run_visir_benchmark(console: Console | None = None, quick: bool = False, *,
                        conus_fraction: float = 1.0, apply_repeats: int | None = None,
                        global_window=None, global_chunk: int | None = None, global_bands: int | None = None,
                        global_budget_s: float = MINUTES_BUDGET * 60, worker_memory: str = "4GiB",
                        check_chunks: int = 2, fit_years: float | None = None, fit_time_chunk: int = 183,
                        fit_by_month: bool = True, fit_cells: tuple[int, int] | None = None,
                        plan_sample: int = 12, seed: int = 0) -> dict:
    """The VIS/IR benchmark (module docstring): (a) apply + correct vs the triad, (b) a 400 m day (default:
    the global M400 grid) on a local cluster of 2 worker processes × 1 thread with `worker_memory` each, and
    (b') the tiles against one whole-window kernel call on `check_chunks`² chunks (0: skip), (c) the model
    fit over `fit_years` of the CONUS GLDAS window, per class and (`fit_by_month`) by month (0 years:
    skip), (d) planning the VIIRS mosaic of the 400 m window (the per-cell lookup timed on `plan_sample`
    chunks). `quick`: one band of 1800-pixel chunks for (b), 4 years for (c). The size parameters exist so
    that tests can run it small.
    """
    from soilcube.grids import Window, ease2_grid

    console = console or Console()
    if global_chunk is None:
        global_chunk = 1800 if quick else 3600
    if quick and global_bands is None:
        global_bands = 1
    if fit_years is None:
        fit_years = 4 if quick else 40
    window = global_window or Window("M400", 0, 0, *ease2_grid("M400").shape)
    started = time.perf_counter()
    figures: dict = {"quick": quick, "cores": os.cpu_count(), "load_average_1min_start": os.getloadavg()[0]}
    console.print("(a) apply + correct, CONUS 1 km, one thread …")
    figures["apply"] = _bench_apply(conus_fraction, apply_repeats or (2 if quick else 5), seed)
    # the day's model on the GLDAS cells the window reaches (the whole grid for the global window): one
    # month and one overpass, as a daily run selects them
    origin, block = _gldas_block(window)
    model = _random_model(block, np.random.default_rng(seed), months=False)
    cluster = {"workers": 2, "threads_per_worker": 1}

    with _local_cluster(worker_memory) as client:
        console.print("(b) 400 m day, tile by tile, on a local cluster …")
        figures["global_400m"] = _bench_global(client, window, global_chunk, global_bands, global_budget_s,
                                               model, origin, seed)
        figures["global_400m"] |= cluster | {"memory_limit_per_worker": worker_memory,
                                             "model_cells": list(block),
                                             "model": "GLDAS 0.25° cells × 10 classes (the day's month and "
                                                      "overpass), scattered to the workers once"}
        if check_chunks:
            console.print("(b') tiles against the whole window …")
            figures["global_400m"]["exact"] = _bench_exact(client, window, global_chunk, check_chunks, model,
                                                           origin, seed)
        figures["fit"] = []
        if fit_years:
            console.print("(c) model fit …")
            figures["fit"].append(_bench_fit(client, fit_years, False, fit_time_chunk, seed, fit_cells))
            if fit_by_month:
                figures["fit"].append(_bench_fit(client, fit_years, True, fit_time_chunk, seed, fit_cells))
        for fit in figures["fit"]:
            fit |= cluster | {"memory_limit_per_worker": worker_memory}
    console.print("(d) planning the VIIRS mosaic of the 400 m window …")
    figures["mosaic_plan"] = _bench_mosaic_plan(window, plan_sample)
    figures["wall_s_total"] = time.perf_counter() - started
    figures = _plain(figures)
    _print_visir(console, figures)
    return figures


def _peaks(figures: dict) -> str:
    return ", ".join(_mib(w["peak_rss_bytes"]) for w in figures["per_worker"])


def _print_visir(console: Console, f: dict) -> None:
    a, g = f["apply"], f["global_400m"]
    rows = [
        ("(a) window", f"{a['fine_window']['shape'][0]}×{a['fine_window']['shape'][1]} M01",
         f"{a['pixels'] / 1e6:.1f} Mpx; SMAP M09 {a['coarse_window']['shape'][0]}×"
         f"{a['coarse_window']['shape'][1]}; model {a['model_cells'][0]}×{a['model_cells'][1]} GLDAS cells × "
         "10 classes × 12 months × 2 overpasses"),
        ("(a) apply + 2 corrections", f"{a['apply_correct_s']:.3f} s",
         f"downscale_and_correct (hybrid 36 km + additive 33 km + QA, float32, as runs.downscale_window); "
         f"CPU {a['apply_correct_cpu_s']:.3f} s, of it kernel (sys) {a['kernel_time_share']:.0%}; "
         f"median of {a['repeats']}"),
        ("(a) pixels/s/core", f"{a['pixels_per_s_per_core'] / 1e6:.0f} M", "numpy-backed, 1 thread"),
        ("(a) hybrid only", f"{a['hybrid_only_s']:.3f} s",
         f"{a['hybrid_only_pixels_per_s_per_core'] / 1e6:.0f} M px/s/core, "
         f"ratio to the triad {a['ratio_hybrid_only_to_triad']:.3f} (the earlier figure's scope)"),
        ("(a) triad a·x + y values/s", f"{a['triad_values_per_s'] / 1e6:.0f} M",
         f"float32, as many values, preallocated output; median {_ms(a['triad_s'])}"),
        ("(a) ratio apply / triad", f"{a['ratio_apply_to_triad']:.3f}",
         f"goal ≥ {APPLY_GOAL}: {'met' if a['goal_met'] else 'NOT met'}; by CPU time "
         f"{a['ratio_apply_to_triad_cpu_time'] or float('nan'):.4f}"),
        ("(a) where the time goes", "cProfile tottime",
         ", ".join(f"{p['function']} {p['share']:.0%}" for p in a["profile_top"][:6])),
        ("(b) 400 m window", f"{g['window']['shape'][0]}×{g['window']['shape'][1]}",
         f"{g['pixels'] / 1e9:.2f} Gpx, chunks {g['chunk'][0]}² + {g['halo_pixels']} px halo, "
         f"{g['chunks']} chunks; 2 workers × 1 thread, limit {g['memory_limit_per_worker']} each"),
        ("(b) measured", f"{g['wall_s_measured']:.0f} s wall",
         f"{g['note']}; {g['worker_cpu_s']:.0f} worker CPU s; {g['pixels_per_s'] / 1e6:.1f} Mpx/s"),
        ("(b) full day wall time", f"{g['wall_s_full_day'] / 60:.1f} min",
         f"{g['wall_s_full_day_is']}; bands {', '.join(f'{t:.0f}' for t in g['band_wall_s'])} s, "
         f"warm-up chunk {g['warmup_s']:.0f} s not counted; worker CPU for the full day "
         f"{g['worker_cpu_s_full_day'] / 60:.1f} min (2 cores)"),
        ("(b) peak RSS per worker", _peaks(g),
         "measured (VmHWM), the largest of the per-band peaks; per band (MiB): "
         + "; ".join("/".join(f"{p / 2**20:.0f}" for p in band) for band in g["band_peak_rss_bytes"])
         + "; RSS at start " + ", ".join(_mib(w["start_rss_bytes"]) for w in g["per_worker"])),
        ("(b) result", f"mean θ {g['mean_sm']:.4f}", f"{g['valid_pixels']:,} valid pixels (measured bands)"),
    ]
    if "exact" in g:
        e = g["exact"]
        rows.append(("(b') tiles = whole window", str(e["tiled_equals_whole"]),
                     f"{e['shape'][0]}×{e['shape'][1]} px ({e['chunks']} chunks): tiled on the cluster "
                     f"{e['tiled_wall_s']:.0f} s, one kernel call in this process {e['whole_wall_s']:.0f} s, "
                     "bit for bit"))
    for fit in f["fit"]:
        label = "by month" if fit["by_month"] else "per class"
        rows.append((f"(c) fit {label}, {fit['years']:g} years", f"{fit['wall_s']:.0f} s",
                     f"{fit['pairs'] / 1e6:.0f} M pairs ({fit['cells'][0]}×{fit['cells'][1]} cells × "
                     f"{fit['days']} days × 2), {fit['pairs_per_s'] / 1e6:.2f} M pairs/s, worker CPU "
                     f"{fit['worker_cpu_s']:.0f} s; peak RSS per worker {_peaks(fit)}"))
    m = f["mosaic_plan"]
    for pixels, t in m["tiles"].items():
        rows.append((f"(d) VIIRS mosaic plan, {pixels} px tiles", f"{t['plan_s']:.1f} s",
                     f"tile blocks of all {m['chunks']} chunks ({m['chunk']}²) of the "
                     f"{m['window']['shape'][0]}×{m['window']['shape'][1]} window, {t['tile_blocks']} blocks "
                     f"(grids.sinusoidal_blocks); the per-cell lookup it replaced: "
                     f"{t['lookup_s_extrapolated']:.0f} s ({t['lookup_s_per_chunk']:.3f} s a chunk on "
                     f"{t['sample_chunks']}, extrapolated); same blocks there: {t['sample_blocks_equal']}"))
    rows.append(("load average (1 min)", f"{f['load_average_1min_start']:.1f}",
                 f"at start, {f['cores']} cores: wall times include other processes' load"))
    console.print(_table("VIS/IR benchmark", rows))


# --- 3. analysts' access to a cube ------------------------------------------------------------------------

ACCESS_CUBE = "downscaled_1km"
ACCESS_OPERATIONS = ("open", "map of one day", "pixel time series", "36 km box mean time series")


def _access_year(window, times, seed: int) -> np.ndarray:
    """Plausible soil moisture (time, overpass, y, x), float32: a static pattern, a seasonal cycle, drydowns
    and noise, so that chunks compress as real fields do, not as constants or white noise."""
    rng = np.random.default_rng(seed)
    y, x = np.meshgrid(np.linspace(0, 6, window.nrows), np.linspace(0, 6, window.ncols), indexing="ij")
    static = 0.05 * np.sin(y) * np.cos(1.3 * x)
    day = np.arange(len(times))[:, None, None, None]
    seasonal = 0.05 * np.cos(2 * np.pi * (day - 150) / 365.25)
    overpass = np.array([0.0, -0.01])[None, :, None, None]
    noise = rng.normal(0, 0.01, (len(times), 2, *window.shape))
    return (0.25 + static + seasonal + overpass + noise).astype(np.float32)


def run_access_benchmark(console: Console | None = None, days: int = 365, repeats: int = 5,
                         seed: int = 0) -> dict:
    """Analysts' reads through `open_cube`, on `days` days of a `downscaled_1km` cube over Oklahoma (the
    stores' default layout: 8-day shards of 180² chunks), written once to the embedded S3 server
    (SeaweedFS on loopback) and once to local disk; the operations (`ACCESS_OPERATIONS`, each read after a
    fresh open, the open timed alone) interleaved between the two, which goes first alternating, median of
    `repeats` after a warm-up round whose reads are checked against the values written. Both stores' data
    are in the page cache by then: the ratios measure the S3 protocol on loopback against file reads, not
    a network or a disk. Returns the figures (JSON-friendly), with the ratios S3 / local disk."""
    import pandas as pd
    import xarray as xr

    from soilcube import store
    from soilcube.access import open_cube
    from soilcube.embedded import SeaweedFS
    from soilcube.grids import REGIONS

    console = console or Console()
    window = REGIONS["oklahoma"].window("M01")
    times = pd.date_range("2016-01-01", periods=days, freq="D")
    values = _access_year(window, times, seed)
    row, col, box = window.nrows // 2, window.ncols // 3, 36
    expected = {
        "map of one day": values[days // 2, 0],
        "pixel time series": values[:, :, row, col],
        "36 km box mean time series": values[:, :, row : row + box, col : col + box].mean(axis=(2, 3)),
    }
    reads = {
        "map of one day": lambda cube: cube["sm"].isel(time=days // 2, overpass=0).values,
        "pixel time series": lambda cube: cube["sm"].isel(y=row, x=col).values,
        "36 km box mean time series": lambda cube: cube["sm"].isel(
            y=slice(row, row + box), x=slice(col, col + box)).mean(("y", "x")).values,
    }
    with tempfile.TemporaryDirectory(prefix="soilcube-bench-") as tmp, SeaweedFS() as server:
        stores = {"local disk": ((Path(tmp) / "cubes").as_uri(), {}),
                  "S3": (f"{server.new_bucket()}/cubes", server.storage_options)}
        write_s = {}
        for where, (url, options) in stores.items():
            def write(url=url, options=options):
                store.create_cube(url, ACCESS_CUBE, window, times, extra_dims={"overpass": ["AM", "PM"]},
                                  status=True, storage_options=options)
                for month in sorted(set(times.strftime("%Y-%m"))):
                    at = np.flatnonzero(times.strftime("%Y-%m") == month)
                    dataset = xr.Dataset(
                        {"sm": (("time", "overpass", "y", "x"), values[at])},
                        coords={"time": times[at], "overpass": ["AM", "PM"], "y": window.y, "x": window.x})
                    store.write_slices(url, ACCESS_CUBE, dataset, provenance={}, message=month, key=month,
                                       status="final", storage_options=options)
            write_s[where] = _timed(write)[0]
        runs: dict[str, dict[str, list[float]]] = {w: {op: [] for op in ACCESS_OPERATIONS} for w in stores}
        for repeat in range(repeats + 1):  # the first round warms up (and checks every read)
            for where, (url, options) in list(stores.items())[:: 1 if repeat % 2 else -1]:
                target = store.cube_url(url, ACCESS_CUBE)
                open_s, _ = _timed(lambda target=target, options=options: open_cube(target,
                                                                                    storage_options=options))
                timings = {"open": open_s}
                for operation, read in reads.items():
                    cube = open_cube(target, storage_options=options)
                    timings[operation], got = _timed(lambda read=read, cube=cube: read(cube))
                    if repeat == 0:
                        np.testing.assert_allclose(got, expected[operation], rtol=1e-6, err_msg=operation)
                if repeat:
                    for operation, seconds in timings.items():
                        runs[where][operation].append(seconds)
        # (the same objects in both stores; every snapshot's, as a store holds them)
        stored = sum(p.stat().st_size for p in (Path(tmp) / "cubes" / ACCESS_CUBE / "chunks").rglob("*"))

    median = {w: {op: statistics.median(v) for op, v in ops.items()} for w, ops in runs.items()}
    ratios = {op: median["S3"][op] / median["local disk"][op] for op in ACCESS_OPERATIONS}
    figures = _plain({
        "cube": ACCESS_CUBE, "window": {"grid": "M01", "shape": list(window.shape)}, "days": days,
        "layout": "8-day shards of 180x180 chunks (the stores' default)", "repeats": repeats,
        "chunk_bytes_stored_all_snapshots": stored, "write_s": write_s, "median_s": median,
        "ratio_s3_to_local_disk": ratios, "runs_s": runs,
    })
    console.print(_table(
        f"{ACCESS_CUBE}, Oklahoma {window.nrows}×{window.ncols} at 1 km, {days} days × AM/PM, through "
        f"open_cube, median of {repeats} interleaved runs",
        [("chunks stored", _mib(stored), f"all snapshots; written to local disk / S3 in "
          f"{write_s['local disk']:.1f} s / {write_s['S3']:.1f} s (one commit per month)")]
        + [(operation, f"{_ms(median['local disk'][operation])} / {_ms(median['S3'][operation])}",
            f"local disk / S3 on loopback (warm cache); S3 / local disk {ratios[operation]:.2f}")
           for operation in ACCESS_OPERATIONS],
    ))
    return figures

