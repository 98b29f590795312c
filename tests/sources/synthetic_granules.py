"""Small synthetic granules of every product, written by soilcube.synth.writers in the real layouts."""

from datetime import datetime, timedelta

import numpy as np

from soilcube.grids import GLDAS_GRID, LTDR_GRID, Window, region_from_bbox, sinusoidal_tiles
from soilcube.synth import writers

T0 = datetime(2016, 6, 1)
SMAP_EPOCH = np.datetime64("2000-01-01T11:58:55.816", "ms")
# A 12 × 10 window of 9 km cells over Oklahoma, and a 1 km window across the h09v05|h10v05 tile edge.
SMAP_WINDOW = Window("M09", 332, 872, 12, 10)
VIIRS_WINDOW = region_from_bbox(-98.0, 35.0, -97.4, 35.3).window("M01")


def smooth(shape, low, high, phase=0.0):
    """A smooth field between low and high (compresses fast, unlike noise)."""
    rows, cols = np.indices(shape)
    return low + (high - low) * (0.5 + 0.5 * np.sin(0.3 * rows + 0.2 * cols + phase))


def smap_fields(window: Window, time: datetime, phase: float) -> dict[str, np.ndarray]:
    """L2/L3 writer input: the first two rows are outside the swath (NaN tb_time_seconds), one cell has no
    soil moisture retrieval."""
    shape = window.shape
    seconds = (np.datetime64(time, "ms") - SMAP_EPOCH) / np.timedelta64(1, "s")
    tb_time = np.full(shape, seconds)
    tb_time[:2] = np.nan
    soil_moisture = smooth(shape, 0.05, 0.45, phase)
    soil_moisture[5, 5] = np.nan
    flags = (np.arange(np.prod(shape)).reshape(shape) % 16).astype(np.uint16)
    return {"soil_moisture": soil_moisture, "vegetation_water_content": smooth(shape, 0.0, 5.0, phase),
            "surface_temperature": smooth(shape, 270.0, 310.0, phase), "retrieval_qual_flag": flags,
            "surface_flag": flags * 7, "tb_time_seconds": tb_time}


def write_smap_l2e(root, options, k: int) -> str:
    half_orbit = "DA"[k % 2]
    start = T0 + timedelta(hours=6 + 12 * k)
    return writers.write_smap_l2e(f"{root}/smap_l2e", window=SMAP_WINDOW, start=start, half_orbit=half_orbit,
                                  orbit=1000 + k, fields=smap_fields(SMAP_WINDOW, start, k),
                                  storage_options=options)


def write_smap_l3e(root, options, k: int) -> str:
    day = T0 + timedelta(days=k)
    return writers.write_smap_l3e(f"{root}/smap_l3e", window=SMAP_WINDOW, day=day,
                                  am=smap_fields(SMAP_WINDOW, day + timedelta(hours=6), k),
                                  pm=smap_fields(SMAP_WINDOW, day + timedelta(hours=18), k + 0.5),
                                  storage_options=options)


def write_smap_l4(root, options, k: int, offset: float = 0.0) -> str:
    shape = SMAP_WINDOW.shape
    fields = {"sm_surface": smooth(shape, 0.05, 0.45, k) + offset, "sm_rootzone": smooth(shape, 0.1, 0.4, k),
              "surface_temp": smooth(shape, 280.0, 300.0, k)}
    fields["sm_surface"][0, 0] = np.nan
    centre = T0 + timedelta(hours=1.5 + 3 * k)
    return writers.write_smap_l4(f"{root}/smap_l4", window=SMAP_WINDOW, centre=centre, fields=fields,
                                 storage_options=options)


def write_gldas(root, options, k: int, offset: float = 0.0) -> str:
    rows, cols = GLDAS_GRID.window_slices(SMAP_WINDOW, margin=1)
    shape = (rows.stop - rows.start, cols.stop - cols.start)
    fields = {"SoilMoi0_10cm_inst": smooth(shape, 5.0, 40.0, k) + offset,
              "AvgSurfT_inst": smooth(shape, 280.0, 300.0)}
    return writers.write_gldas(f"{root}/gldas", time=T0 + timedelta(hours=3 * k), rows=rows, cols=cols,
                               fields=fields, storage_options=options)


def write_ltdr_ndvi(root, options, k: int) -> str:
    rows, cols = LTDR_GRID.window_slices(SMAP_WINDOW, margin=1)
    ndvi = smooth((rows.stop - rows.start, cols.stop - cols.start), -0.1, 0.9, k)
    ndvi[0, 0] = np.nan
    return writers.write_ltdr_ndvi(f"{root}/ltdr_ndvi", day=T0 + timedelta(days=k), rows=rows, cols=cols,
                                   ndvi=ndvi, storage_options=options)


def write_viirs_lst(root, options, k: int) -> list[str]:
    """Day and night tiles of both tiles under VIIRS_WINDOW; the night one misses the h10v05 tile."""
    urls = []
    for tile in sinusoidal_tiles(VIIRS_WINDOW, 1200):
        for day_or_night in "DN" if tile.h == 9 else "D":
            lst = smooth((1200, 1200), 260.0, 320.0, k + tile.h)
            lst[:, :600] = np.where(np.arange(600) % 50 == 0, np.nan, lst[:, :600])
            qc = (np.indices((1200, 1200)).sum(axis=0) % 4).astype(np.uint16)
            urls.append(writers.write_viirs_lst(f"{root}/viirs_lst", tile=tile, day=T0 + timedelta(days=k),
                                                day_or_night=day_or_night, lst=lst, qc=qc,
                                                storage_options=options))
    return urls


def write_viirs_lai(root, options, k: int) -> list[str]:
    """Tiles with non-vegetated class codes (251, 254) in a block, which must read as NaN."""
    urls = []
    for tile in sinusoidal_tiles(VIIRS_WINDOW, 2400):
        codes = np.zeros((2400, 2400), np.uint8)
        codes[:, 2300:] = 254
        codes[:1200, 2300:] = 251
        urls.append(writers.write_viirs_lai(f"{root}/viirs_lai", tile=tile,
                                            period_start=T0 + timedelta(days=8 * k),
                                            lai=smooth((2400, 2400), 0.0, 6.0, tile.h), codes=codes,
                                            storage_options=options))
    return urls


WRITERS = {
    "smap_l2e": (write_smap_l2e, 2), "smap_l3e": (write_smap_l3e, 2), "smap_l4": (write_smap_l4, 3),
    "gldas": (write_gldas, 3), "ltdr_ndvi": (write_ltdr_ndvi, 2), "viirs_lst": (write_viirs_lst, 1),
    "viirs_lai": (write_viirs_lai, 1),
}


def write_granules(root: str, options, product: str, count: int | None = None) -> list[str]:
    """`count` granules of a product (default: the product's usual number) under <root>/<product>/."""
    write, default = WRITERS[product]
    urls = []
    for k in range(default if count is None else count):
        written = write(root, options, k)
        urls += written if isinstance(written, list) else [written]
    return sorted(urls)
