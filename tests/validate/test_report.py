"""soilcube.validate.report: JSON scores with the architecture's keys, the QC gate, the Markdown report."""

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from matplotlib.image import imread

from soilcube.validate.diagnostics import artifact_index, bias_by_range
from soilcube.validate.insitu import cell_scores, stratified_scores
from soilcube.validate.metrics import score, to_dict
from soilcube.validate.report import PRODUCT_KEYS, SCORE_KEYS, Figures, qc_gate, scores_json, write_report

RNG = np.random.default_rng(7)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _truth_and_products():
    rows, cols = np.meshgrid(np.arange(36), np.arange(45), indexing="ij")
    time = pd.date_range("2021-06-01", periods=4, freq="D")
    truth = xr.DataArray(
        0.25 + 0.1 * np.sin(cols / 7 + rows / 11)[None] + 0.02 * RNG.standard_normal((4, 36, 45)),
        dims=("time", "y", "x"),
        coords={"time": time},
    )
    blocks = np.repeat(np.repeat(RNG.uniform(-0.03, 0.03, (4, 5)), 9, axis=0), 9, axis=1)
    products = {
        "visir_1km_hybrid": truth + 0.01 + 0.01 * RNG.standard_normal(truth.shape),
        "visir_1km_additive": truth + blocks + 0.02 * RNG.standard_normal(truth.shape),
    }
    return truth, products


def _matchups(bias: float) -> xr.Dataset:
    insitu = 0.25 + 0.05 * RNG.standard_normal((6, 30))
    return xr.Dataset(
        {
            "product": (("cell", "time"), insitu + bias + 0.02 * RNG.standard_normal((6, 30))),
            "insitu": (("cell", "time"), insitu),
        },
        coords={
            "cell": np.arange(6),
            "time": pd.date_range("2021-06-01", periods=30, freq="D"),
            "stations": ("cell", [f"NET/S{i}" for i in range(6)]),
            "landcover": ("cell", [10.0, 10.0, 130.0, 130.0, 60.0, 60.0]),
        },
    )


def test_scores_json_keys_types_and_nan():
    truth, products = _truth_and_products()
    parents = (np.arange(36) // 9, np.arange(45) // 9)
    hybrid = score(products["visir_1km_hybrid"], truth)
    hybrid["artifact_index"] = artifact_index(products["visir_1km_hybrid"], parents)
    few = to_dict(score([0.1, 0.2, 0.3], [0.1, 0.25, 0.3]))  # n = 3 < min_count: every metric NaN
    result = scores_json({"smap_9km": few, "visir_1km_hybrid": hybrid})
    assert list(result) == ["smap_9km", "visir_1km_hybrid"]  # the architecture's order
    assert list(result["visir_1km_hybrid"]) == list(SCORE_KEYS)
    assert "KGE2012" not in result["visir_1km_hybrid"] and "fang_ubrmse" not in result["visir_1km_hybrid"]
    assert result["visir_1km_hybrid"]["n"] == 4 * 36 * 45 and isinstance(result["visir_1km_hybrid"]["n"], int)
    assert result["visir_1km_hybrid"]["bias"] == pytest.approx(0.01, abs=0.002)
    assert result["smap_9km"]["n"] == 3 and result["smap_9km"]["R"] is None
    assert "artifact_index" not in result["smap_9km"]
    json.loads(json.dumps(result, allow_nan=False))  # strict JSON
    with pytest.raises(ValueError, match="unknown product"):
        scores_json({"visir_1km": few})


def test_qc_gate():
    scores = {
        "visir_1km_hybrid": {"R": 0.8, "ubRMSE": 0.05, "n": 500},
        "fused_3h": {"R": float("nan"), "ubRMSE": 0.07, "n": 4},
    }
    thresholds = {
        "visir_1km_hybrid": {"ubRMSE": ("<=", 0.06), "R": (">=", 0.5), "n": (">", 100)},
        "fused_3h": {"ubRMSE": ("<=", 0.06), "R": (">=", 0.5)},
        "visir_400m": {"ubRMSE": ("<", 0.06)},
    }
    failures = qc_gate(scores, thresholds)
    assert failures == [
        "fused_3h ubRMSE: 0.07 fails <= 0.06",
        "fused_3h R: no score (needs >= 0.5)",
        "visir_400m ubRMSE: no score (needs < 0.06)",
    ]
    assert qc_gate(scores, {"visir_1km_hybrid": thresholds["visir_1km_hybrid"]}) == []
    with pytest.raises(ValueError, match="comparison"):
        qc_gate(scores, {"visir_1km_hybrid": {"R": ("=>", 0.5)}})


def _assert_real_png(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100
    rgb = image[..., :3]
    assert rgb.std() > 0.05  # not a blank canvas
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 50  # data drawn, not a few flat colours


def test_write_report_files_tables_and_figures(tmp_path):
    truth, products = _truth_and_products()
    parents = (np.arange(36) // 9, np.arange(45) // 9)
    scores = {}
    for name, values in products.items():
        scores[name] = score(values, truth)
        scores[name]["artifact_index"] = artifact_index(values, parents)
    matchups = {"visir_1km_hybrid": _matchups(0.01), "visir_1km_additive": _matchups(-0.02)}
    per_cell = pd.concat(
        cell_scores(m).assign(product=name).rename(columns={"landcover": "stratum", "ubRMSE": "value"})
        for name, m in matchups.items()
    )
    tables = {
        "Scores by land cover (visir_1km_hybrid)": stratified_scores(
            matchups["visir_1km_hybrid"], "landcover"
        ),
        "Bias by soil-moisture range": bias_by_range(products["visir_1km_hybrid"], truth).to_dataframe(),
    }
    figures = Figures(
        scatter={name: (values, truth) for name, values in products.items()},
        timeseries=matchups,
        maps={
            "truth": truth.isel(time=0),
            **{name: values.isel(time=0) for name, values in products.items()},
        },
        boxplots={"ubRMSE by land cover": per_cell[["stratum", "product", "value"]]},
    )
    report = write_report(scores, tmp_path / "out", tables=tables, figures=figures)

    out = tmp_path / "out"
    assert report == out / "report.md"
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [
        "boxplot_ubrmse_by_land_cover.png",
        "maps.png",
        "scatter_density.png",
        "timeseries_visir_1km_additive.png",
        "timeseries_visir_1km_hybrid.png",
    ]
    for png in pngs:
        _assert_real_png(out / png)
    csvs = sorted(p.name for p in out.glob("*.csv"))
    assert csvs == [
        "bias_by_soil_moisture_range.csv",
        "scores.csv",
        "scores_by_land_cover__visir_1km_hybrid.csv",
    ]

    text = report.read_text()
    for name in [*pngs, *csvs]:
        assert name in text
    assert "| product | R | R2 | bias |" in text
    assert "## Scores by land cover (visir_1km_hybrid)" in text

    summary = json.loads((out / "scores.json").read_text())
    assert summary == scores_json(scores)
    assert set(summary) <= set(PRODUCT_KEYS)
    assert summary["visir_1km_additive"]["artifact_index"] > summary["visir_1km_hybrid"]["artifact_index"]
    table = pd.read_csv(out / "scores.csv", index_col="product")
    assert list(table.columns) == list(SCORE_KEYS)
    assert table.loc["visir_1km_hybrid", "RMSE"] == pytest.approx(summary["visir_1km_hybrid"]["RMSE"])
    strata = pd.read_csv(out / "scores_by_land_cover__visir_1km_hybrid.csv", index_col=0)
    assert list(strata.index) == [10.0, 60.0, 130.0] and strata["n_cells"].tolist() == [2, 2, 2]


def test_write_report_with_scores_only(tmp_path):
    report = write_report({"smap_9km": {"R": 0.6, "ubRMSE": 0.04, "n": 120}}, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md", "scores.csv", "scores.json"]
    assert "| smap_9km | 0.6 | 0.04 | 120 |" in report.read_text()


def test_map_sets_get_figures_of_their_own_and_scatter_wraps(tmp_path):
    truth, products = _truth_and_products()
    many = {f"{name} {k}": values + 0.01 * k for name, values in products.items() for k in range(3)}
    figures = Figures(
        scatter={name: (values, truth) for name, values in many.items()},  # 6 panels: 2 rows of 4
        maps={"truth": truth.isel(time=0), "visir_1km_hybrid": products["visir_1km_hybrid"].isel(time=0)},
        map_sets={
            "1 km 3-hourly": {
                "truth 1 km 3-hourly 2021-06-01 13:30": truth.isel(time=1),
                "fused_3h": products["visir_1km_additive"].isel(time=1),
            },
        },
    )
    report = write_report({}, tmp_path, figures=figures).read_text()
    for png in ("maps.png", "maps_1_km_3_hourly.png", "scatter_density.png"):
        _assert_real_png(tmp_path / png)
        assert f"({png})" in report
    assert "### Maps, 1 km 3-hourly" in report
    two_rows = imread(tmp_path / "scatter_density.png")
    assert two_rows.shape[0] > 1.5 * imread(tmp_path / "maps_1_km_3_hourly.png").shape[0]


def test_maps_wrap_into_rows_of_four(tmp_path):
    """The daily groups share maps.png: truth and three products at 1 km, then at 400 m (8 panels)."""
    truth, _ = _truth_and_products()
    one_row = {f"map {k}": truth.isel(time=0) + 0.01 * k for k in range(4)}
    two_rows = one_row | {f"map {k}": truth.isel(time=1) + 0.01 * k for k in range(4, 8)}
    heights = {}
    for name, maps in (("one", one_row), ("two", two_rows)):
        write_report({}, tmp_path / name, figures=Figures(maps=maps))
        heights[name], width = imread(tmp_path / name / "maps.png").shape[:2]
        assert width > 2.5 * heights[name] / (1 if name == "one" else 2), name
    assert heights["two"] > 1.7 * heights["one"]
