"""Validation report: machine-readable scores, a QC gate, and a Markdown report with CSV tables and PNGs.

Everything here receives already-computed scores, tables and DataArrays; nothing opens a store. Figures are
drawn on ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot, so no global backend or
figure registry is touched (safe in workers and threads).
"""

import json
import math
import operator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

# The architecture's product keys, plus the 400 m group's SMAP 9 km (nearest cell) and additive correction:
# scored beside `visir_400m` (the hybrid), so that 400 m compares with SMAP 9 km as 1 km does.
PRODUCT_KEYS = (
    "smap_9km",
    "smap_l4_bicubic",
    "visir_1km_additive",
    "visir_1km_hybrid",
    "smap_9km_400m",
    "visir_400m_additive",
    "visir_400m",
    "fused_3h",
    "fused_daily",
)
SCORE_KEYS = ("R", "R2", "bias", "RMSE", "ubRMSE", "MAE", "SSD", "SSD_ref", "KGE", "n", "artifact_index")
COMPARISONS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
MAX_SERIES_CELLS = 4
MAX_PANEL_COLUMNS = 4  # scatter and map panels wrap into rows of this many


@dataclass
class Figures:
    """What to draw; every entry is optional.

    - ``scatter``: {product: (product values, reference values)} → one hexbin density panel per product;
    - ``timeseries``: {product: matchups Dataset from ``insitu.matchup``} → in situ and product over time for
      up to four cells per product;
    - ``maps``: {name: 2-D (y, x) field of one day}, the reference first → panels side by side on one scale;
    - ``map_sets``: {caption: maps as above} → one more such figure per caption (``maps_<caption>.png``);
    - ``boxplots``: {title: long DataFrame with columns stratum, product, value} → boxes per stratum and
      product (e.g. per-cell ubRMSE by land cover, from ``insitu.cell_scores``).
    """

    scatter: dict[str, tuple[xr.DataArray, xr.DataArray]] = field(default_factory=dict)
    timeseries: dict[str, xr.Dataset] = field(default_factory=dict)
    maps: dict[str, xr.DataArray] = field(default_factory=dict)
    map_sets: dict[str, dict[str, xr.DataArray]] = field(default_factory=dict)
    boxplots: dict[str, pd.DataFrame] = field(default_factory=dict)


def scores_json(scores: dict) -> dict[str, dict[str, float | int | None]]:
    """``{product: {metric: value}}`` with the product keys of ``PRODUCT_KEYS`` and the architecture's metric
    keys.

    ``scores`` maps product keys to 0-d ``metrics.score`` Datasets (optionally with an ``artifact_index``
    variable) or to ``{metric: value}`` dicts. Metrics outside ``SCORE_KEYS`` are left out, ``n`` is an int,
    and NaN becomes None so that the result is strict JSON.
    """
    unknown = set(scores) - set(PRODUCT_KEYS)
    if unknown:
        raise ValueError(f"unknown product key(s) {sorted(unknown)}; known: {', '.join(PRODUCT_KEYS)}")
    result = {}
    for product in (p for p in PRODUCT_KEYS if p in scores):
        values = scores[product]
        if isinstance(values, xr.Dataset):
            values = {name: values[name].item() for name in values.data_vars}
        result[product] = {key: _json_number(key, values[key]) for key in SCORE_KEYS if key in values}
    return result


def _json_number(key: str, value) -> float | int | None:
    value = float(value)
    if not math.isfinite(value):
        return None
    return int(value) if key == "n" else value


def qc_gate(scores: dict, thresholds: dict[str, dict[str, tuple[str, float]]]) -> list[str]:
    """Failures of ``scores`` against ``thresholds`` (empty when all pass).

    ``thresholds`` = {product: {metric: (comparison, limit)}}, comparison one of ``<= < >= >``, e.g.
    ``{"visir_1km_hybrid": {"ubRMSE": ("<=", 0.06), "R": (">=", 0.5)}}``. A missing product or metric, or
    a NaN score, fails: a QC gate must not pass on absent evidence.
    """
    table = scores_json(scores)
    failures = []
    for product, limits in thresholds.items():
        for metric, (comparison, limit) in limits.items():
            if comparison not in COMPARISONS:
                raise ValueError(f"unknown comparison {comparison!r}; known: {', '.join(COMPARISONS)}")
            value = table.get(product, {}).get(metric)
            if value is None:
                failures.append(f"{product} {metric}: no score (needs {comparison} {limit})")
            elif not COMPARISONS[comparison](value, limit):
                failures.append(f"{product} {metric}: {value:.4g} fails {comparison} {limit}")
    return failures


def write_report(
    scores: dict,
    out_dir,
    *,
    tables: dict[str, pd.DataFrame] | None = None,
    figures: Figures | None = None,
    title: str = "soilcube validation",
) -> Path:
    """Write ``report.md`` with ``scores.json``, ``scores.csv``, one CSV per entry of ``tables`` and the PNGs
    of ``figures`` into ``out_dir``; returns the path of ``report.md``.

    ``scores`` as for ``scores_json``; ``tables`` maps a title to a DataFrame (stratified scores, bias by
    range, dynamic range …), each written as ``<slug>.csv`` and shown in the report.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = figures or Figures()
    summary = scores_json(scores)
    (out / "scores.json").write_text(json.dumps(summary, indent=2) + "\n")
    score_table = pd.DataFrame.from_dict(summary, orient="index").rename_axis("product")
    score_table.to_csv(out / "scores.csv")

    lines = [
        f"# {title}",
        "",
        "## Scores",
        "",
        _markdown_table(score_table),
        "",
        "Data: `scores.csv`, `scores.json`.",
    ]
    for name, table in (tables or {}).items():
        csv = f"{_slug(name)}.csv"
        table.to_csv(out / csv)
        lines += ["", f"## {name}", "", _markdown_table(table), "", f"Data: `{csv}`."]

    drawn = []  # (caption, png path)
    if figures.scatter:
        drawn.append(("Scatter density", _draw_scatter(figures.scatter, out / "scatter_density.png")))
    for product, matchups in figures.timeseries.items():
        png = out / f"timeseries_{_slug(product)}.png"
        drawn.append((f"Station time series: {product}", _draw_timeseries(product, matchups, png)))
    if figures.maps:
        drawn.append(("Maps", _draw_maps(figures.maps, out / "maps.png")))
    for caption, fields in figures.map_sets.items():
        drawn.append((f"Maps, {caption}", _draw_maps(fields, out / f"maps_{_slug(caption)}.png")))
    for name, frame in figures.boxplots.items():
        drawn.append((name, _draw_boxplot(name, frame, out / f"boxplot_{_slug(name)}.png")))
    if drawn:
        lines += ["", "## Figures"]
        for caption, path in drawn:
            lines += ["", f"### {caption}", "", f"![{caption}]({path.name})"]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def _markdown_table(table: pd.DataFrame) -> str:
    unnamed_positions = isinstance(table.index, pd.RangeIndex) and table.index.name is None
    frame = table if unnamed_positions else table.reset_index()

    def cell(value) -> str:
        if isinstance(value, float | np.floating):
            return "" if np.isnan(value) else f"{value:.4g}"
        return "" if value is None else str(value)

    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _panels(n: int, size: float, extra_width: float = 0.0) -> tuple[Figure, list]:
    """A figure of `n` square panels of `size` inches, in rows of at most `MAX_PANEL_COLUMNS`; the axes in
    reading order (the unused ones of the last row switched off)."""
    ncols = min(n, MAX_PANEL_COLUMNS)
    nrows = -(-n // ncols)
    figure = Figure(figsize=(size * ncols + extra_width, size * nrows), layout="constrained")
    axes = figure.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_axis_off()
    return figure, list(axes[:n])


def _draw_scatter(pairs: dict[str, tuple[xr.DataArray, xr.DataArray]], path: Path) -> Path:
    figure, axes = _panels(len(pairs), 4.0)
    for ax, (product, (values, reference)) in zip(axes, pairs.items(), strict=True):
        values, reference = xr.align(values, reference, join="inner")
        x, y = np.ravel(reference.values), np.ravel(values.values)
        valid = np.isfinite(x) & np.isfinite(y)
        ax.hexbin(x[valid], y[valid], gridsize=40, mincnt=1, bins="log", cmap="viridis")
        low, high = np.nanpercentile(np.concatenate([x[valid], y[valid]]), [0.5, 99.5])
        ax.plot([low, high], [low, high], color="k", lw=0.8)
        ax.set(xlabel="reference (m³/m³)", ylabel=f"{product} (m³/m³)", title=product)
    return _save(figure, path)


def _draw_timeseries(product: str, matchups: xr.Dataset, path: Path) -> Path:
    cells = matchups["cell"].values[:MAX_SERIES_CELLS]
    figure = Figure(figsize=(9, 2.2 * len(cells)), layout="constrained")
    axes = figure.subplots(len(cells), 1, sharex=True, squeeze=False)[:, 0]
    for ax, cell in zip(axes, cells, strict=True):
        one = matchups.sel(cell=cell)
        ax.plot(one["time"].values, one["insitu"].values, ".-", ms=3, lw=0.8, label="in situ")
        ax.plot(one["time"].values, one["product"].values, "o", ms=3, label=product)
        label = str(one["stations"].item()) if "stations" in one.coords else f"cell {cell}"
        ax.set(ylabel="m³/m³", title=label)
    axes[0].legend(loc="upper right")
    locator = AutoDateLocator()
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(ConciseDateFormatter(locator))
    return _save(figure, path)


def _draw_maps(fields: dict[str, xr.DataArray], path: Path) -> Path:
    reference = next(iter(fields.values()))
    vmin, vmax = np.nanpercentile(reference.values, [2, 98])
    figure, axes = _panels(len(fields), 3.6, extra_width=0.8)
    for ax, (name, values) in zip(axes, fields.items(), strict=True):
        image = ax.imshow(
            values.transpose("y", "x").values, vmin=vmin, vmax=vmax, cmap="YlGnBu", interpolation="nearest"
        )
        ax.set(title=name, xticks=[], yticks=[])
    figure.colorbar(image, ax=axes, label="soil moisture (m³/m³)", shrink=0.8)
    return _save(figure, path)


def _draw_boxplot(name: str, frame: pd.DataFrame, path: Path) -> Path:
    strata = sorted(frame["stratum"].dropna().unique())
    products = list(dict.fromkeys(frame["product"]))
    figure = Figure(figsize=(max(5, 1.2 * len(strata) * len(products)), 4), layout="constrained")
    ax = figure.subplots()
    width = 0.8 / len(products)
    for k, product in enumerate(products):
        rows = frame[frame["product"] == product]
        data = [rows.loc[rows["stratum"] == s, "value"].dropna().to_numpy() for s in strata]
        positions = np.arange(len(strata)) + (k - (len(products) - 1) / 2) * width
        boxes = ax.boxplot(
            data, positions=positions, widths=width * 0.9, patch_artist=True, manage_ticks=False
        )
        for patch in boxes["boxes"]:
            patch.set_facecolor(f"C{k}")
        ax.plot([], [], "s", color=f"C{k}", label=product)
    ax.set_xticks(np.arange(len(strata)), [f"{s:g}" if isinstance(s, float) else str(s) for s in strata])
    ax.set(title=name, xlabel="stratum")
    ax.legend()
    return _save(figure, path)
