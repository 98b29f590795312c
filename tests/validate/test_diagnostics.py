"""soilcube.validate.diagnostics: spatial scores, dynamic range, bias by range, 9 km grid-artifact index."""

import dask.array
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from soilcube.grids import Window, parent_index
from soilcube.validate.diagnostics import (
    artifact_index,
    bias_by_range,
    dynamic_range,
    spatial_scores,
    subcell_scores,
)

COARSE = Window("M09", 330, 890, 4, 5)
TIME = pd.date_range("2021-06-01", periods=3, freq="D")


def _fine(grid: str) -> Window:
    ratio = {"M01": 9, "M400": 22.5}[grid]
    return Window(grid, int(COARSE.row0 * ratio), int(COARSE.col0 * ratio), int(4 * ratio), int(5 * ratio))


def _smooth(fine: Window) -> xr.DataArray:
    """A gentle gradient with a wave much longer than a 9 km cell: no structure at the 9 km scale."""
    rows, cols = np.meshgrid(np.arange(fine.nrows), np.arange(fine.ncols), indexing="ij")
    values = 0.2 + 0.002 * cols + 0.001 * rows + 0.01 * np.sin(2 * np.pi * (cols + rows) / 150)
    return xr.DataArray(values, dims=("y", "x"), coords={"y": fine.y, "x": fine.x})


def _blocky(fine: Window, seed=0) -> xr.DataArray:
    """Constant within each 9 km cell, random between cells: what an additive 9 km correction leaves."""
    rows, cols = parent_index(fine, COARSE)
    steps = np.random.default_rng(seed).uniform(-0.05, 0.05, COARSE.shape)
    return xr.DataArray(steps[rows][:, cols], dims=("y", "x"), coords={"y": fine.y, "x": fine.x})


# --- artifact index ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("grid", ["M01", "M400"])
def test_artifact_index_smooth_blocky_and_mixed(grid):
    fine = _fine(grid)
    parents = parent_index(fine, COARSE)
    smooth, blocky = _smooth(fine), _blocky(fine)
    assert float(artifact_index(smooth, parents)) == pytest.approx(1.0, abs=0.05)
    huge = float(artifact_index(blocky + 1e-3 * smooth, parents))
    assert huge > 1000
    mixed = float(artifact_index(blocky + smooth, parents))
    assert mixed > 1.5 and mixed < huge
    # constant within every cell: no within-cell jump to compare with
    assert np.isnan(float(artifact_index(blocky, parents)))


def test_artifact_index_hand_computed():
    # 1 km pixels nested 9× in 9 km cells: a 1 × 18 strip crosses one edge (between columns 8 and 9).
    fine = Window("M01", COARSE.row0 * 9, COARSE.col0 * 9, 1, 18)
    parents = parent_index(fine, COARSE)
    values = np.cumsum(np.r_[0.0, np.full(8, 0.01), 0.1, np.full(8, 0.01)])
    field = xr.DataArray(values[None, :], dims=("y", "x"))
    assert float(artifact_index(field, parents)) == pytest.approx(10.0)


def test_artifact_index_per_scene_and_nan_aware():
    fine = _fine("M01")
    parents = parent_index(fine, COARSE)
    scenes = xr.concat([_smooth(fine), _blocky(fine) + _smooth(fine)], dim="time")
    per_scene = artifact_index(scenes, parents, dim=("y", "x"))
    assert per_scene.dims == ("time",)
    assert per_scene[0] == pytest.approx(1.0, abs=0.05) and per_scene[1] > 1.5
    holes = scenes.copy()
    holes[:, ::7, ::5] = np.nan
    np.testing.assert_allclose(artifact_index(holes, parents, dim=("y", "x")), per_scene, rtol=0.1)
    pooled = float(artifact_index(scenes, parents))
    assert float(per_scene[0]) < pooled < float(per_scene[1])


def test_artifact_index_skips_pixels_outside_the_coarse_window():
    fine = _fine("M01")
    parents = parent_index(fine, Window("M09", COARSE.row0, COARSE.col0, 4, 3))  # the last two columns: −1
    field = _smooth(fine).copy()
    field[:, 27:] = 5.0  # a cliff outside the coarse window does not count
    assert float(artifact_index(field, parents)) == pytest.approx(1.0, abs=0.05)


# --- spatial scores, dynamic range, bias by range ---------------------------------------------------------


def _scenes(seed=1) -> tuple[xr.DataArray, xr.DataArray]:
    fine = _fine("M01")
    rng = np.random.default_rng(seed)
    reference = xr.DataArray(
        rng.uniform(0.05, 0.45, (len(TIME), *fine.shape)),
        dims=("time", "y", "x"),
        coords={"time": TIME, "y": fine.y, "x": fine.x},
    )
    product = 0.8 * reference + 0.05 + rng.normal(0, 0.01, reference.shape)
    return product, reference


def test_spatial_scores_one_per_scene():
    product, reference = _scenes()
    scores = spatial_scores(product, reference)
    assert scores["R"].dims == ("time",)
    for i in range(len(TIME)):  # the definitions written out, on each scene's pixels
        p, o = product.values[i].ravel(), reference.values[i].ravel()
        assert float(scores["R"][i]) == pytest.approx(np.corrcoef(p, o)[0, 1], rel=1e-12)
        assert float(scores["RMSE"][i]) == pytest.approx(np.sqrt(np.mean((p - o) ** 2)), rel=1e-12)
        assert float(scores["bias"][i]) == pytest.approx(np.mean(p) - np.mean(o), rel=1e-9)
        assert float(scores["ubRMSE"][i]) == pytest.approx(np.std((p - p.mean()) - (o - o.mean())), rel=1e-12)
    assert (scores["n"] == 36 * 45).all()


def test_spatial_scores_stay_lazy_on_dask():
    product, reference = _scenes()
    lazy = spatial_scores(product.chunk({"time": 1}), reference.chunk({"time": 1}))
    assert isinstance(lazy["RMSE"].data, dask.array.Array)
    xr.testing.assert_allclose(lazy.compute(), spatial_scores(product, reference))


def test_dynamic_range_over_common_pixels():
    reference = xr.DataArray(np.linspace(0.05, 0.45, 101), dims="x")
    product = 0.5 * reference + 0.1
    product[-1] = np.nan  # hides the reference maximum too
    stats = dynamic_range(product, reference)
    assert float(stats["max"].sel(source="reference")) == pytest.approx(0.446)
    assert float(stats["min"].sel(source="product")) == pytest.approx(0.125)
    assert float(stats["range_ratio"]) == pytest.approx(0.5)
    assert float(stats["range_p05_p95_ratio"]) == pytest.approx(0.5)
    np.testing.assert_allclose(
        stats["range_p05_p95"].sel(source="reference"),
        np.percentile(reference[:-1], 95) - np.percentile(reference[:-1], 5),
    )


def test_dynamic_range_per_scene():
    product, reference = _scenes()
    stats = dynamic_range(product, reference, dim=("y", "x"))
    assert stats["range"].dims == ("source", "time")
    # noise widens the product's extremes more than its 5–95 % spread, which keeps the slope 0.8
    np.testing.assert_allclose(stats["range_p05_p95_ratio"], 0.8, atol=0.02)
    assert (stats["range_ratio"] > stats["range_p05_p95_ratio"]).all()


def test_bias_by_range_bins_by_reference():
    reference = xr.DataArray([0.0, 0.02, 0.05, 0.07, 0.33, 0.50, 0.55, np.nan, 0.2], dims="x")
    product = reference + xr.DataArray([0.01, 0.03, -0.02, -0.04, 0.1, -0.05, 0.0, 0.1, np.nan], dims="x")
    result = bias_by_range(product, reference)
    assert result["sm_range"].values.tolist()[:3] == ["0.00–0.05", "0.05–0.10", "0.10–0.15"]
    assert result.sizes["sm_range"] == 10
    np.testing.assert_allclose(result["bias"].sel(sm_range="0.00–0.05"), 0.02)
    np.testing.assert_allclose(result["bias"].sel(sm_range="0.05–0.10"), -0.03)
    np.testing.assert_allclose(result["bias"].sel(sm_range="0.30–0.35"), 0.1)
    np.testing.assert_allclose(result["bias"].sel(sm_range="0.45–0.50"), -0.05)  # 0.50 closes the last range
    assert np.isnan(result["bias"].sel(sm_range="0.15–0.20"))  # 0.2's pair has no product value
    assert result["n"].values.tolist() == [2, 2, 0, 0, 0, 0, 1, 0, 0, 1]  # 0.55 is outside every range
    np.testing.assert_allclose(result["lower"][:2], [0.0, 0.05])


def test_bias_by_range_per_time_and_custom_edges():
    product, reference = _scenes()
    result = bias_by_range(product, reference, edges=(0.0, 0.25, 0.5), dim=("y", "x"))
    assert result["bias"].dims == ("time", "sm_range")
    # product = 0.8·ref + 0.05: wet-end bias is negative, dry-end positive
    assert (result["bias"].sel(sm_range="0.00–0.25") > 0).all()
    assert (result["bias"].sel(sm_range="0.25–0.50") < 0).all()
    assert (result["n"].sum("sm_range") == 36 * 45).all()


@pytest.mark.parametrize("grid", ["M01", "M400"])
def test_subcell_scores_split_static_and_dynamic_structure_inside_the_9km_cells(grid):
    fine = _fine(grid)
    parents = parent_index(fine, COARSE)
    rng = np.random.default_rng(4)
    shape = (6, fine.nrows, fine.ncols)
    dims = ("time", "y", "x")
    cells = rng.normal(0.25, 0.05, (6, *COARSE.shape))[:, parents[0]][:, :, parents[1]]
    static, dynamic = rng.normal(0, 0.02, shape[1:]), rng.normal(0, 0.01, shape)
    truth = xr.DataArray(cells + static + dynamic, dims=dims)

    perfect = subcell_scores(truth, truth, parents)
    assert perfect["subcell_R_static"] == pytest.approx(1)
    assert perfect["subcell_R_dynamic"] == pytest.approx(1)
    # Anomalies from the cell means: the 9 km-cell means' own errors (any per-scene cell offset) do not count.
    offsets = rng.normal(0, 0.05, (6, *COARSE.shape))[:, parents[0]][:, :, parents[1]]
    assert subcell_scores(truth + offsets, truth, parents) == pytest.approx(perfect)
    # A 9 km field on the fine grid has no structure inside its cells.
    coarse_only = subcell_scores(xr.DataArray(cells, dims=dims), truth, parents)
    assert coarse_only["subcell_std_static"] < 1e-6 and np.isnan(coarse_only["subcell_R_static"])
    assert coarse_only["subcell_std_dynamic_ref"] == pytest.approx(perfect["subcell_std_dynamic_ref"])
    # Right static pattern, no dynamics: static R 1, no dynamic structure.
    static_only = subcell_scores(xr.DataArray(cells + static, dims=dims), truth, parents)
    assert static_only["subcell_R_static"] > 0.97 and np.isnan(static_only["subcell_R_dynamic"])
    # Independent noise of the dynamic part's size halves the dynamic R², not the static one.
    noisy = subcell_scores(truth + rng.normal(0, 0.01, shape), truth, parents)
    assert noisy["subcell_R_dynamic"] ** 2 == pytest.approx(0.5, abs=0.05)
    assert noisy["subcell_R_static"] > 0.95
