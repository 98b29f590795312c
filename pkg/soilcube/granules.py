"""Granule file names of every input product: the real naming patterns (input-formats.md), the nominal
time each name carries, and the archive layout `<archive>/<product>/<file name>`.

Time always comes from the file name: SMAP L4's own `time` variable is 64.184 s off (its writer counts
from 12:00 while its units say 11:58:55.816) and GLDAS's units string has a leading space.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import numpy as np

SMAP_CRID = "R19240"  # SMAP composite release ID of v006 L2/L3_E
SMAP_L4_VERSION = "Vv8010"
VIIRS_COLLECTION = "002"


@dataclass(frozen=True)
class GranuleName:
    """What a granule's file name says."""

    product: str
    name: str
    time: np.datetime64
    tile: str | None = None  # sinusoidal tile "hHHvVV" (VIIRS)
    variant: str | None = None  # "A"/"D" half orbit (SMAP L2), "D"/"N" day/night (VIIRS LST)


@dataclass(frozen=True)
class Product:
    key: str
    short_name: str
    pattern: re.Pattern
    suffix: str

    def parse(self, name: str) -> GranuleName:
        m = self.pattern.match(name)
        if not m:
            raise ValueError(
                f"{name!r} is not a {self.short_name} file name (pattern {self.pattern.pattern})"
            )
        g = m.groupdict()
        if "ydoy" in g:
            time = np.datetime64(datetime.strptime(g["ydoy"], "%Y%j"), "ns")
        else:
            stamp = g["stamp"].replace("T", "").replace(".", "")
            time = np.datetime64(datetime.strptime(stamp, _stamp_format(stamp)), "ns")
        return GranuleName(self.key, name, time, g.get("tile"), g.get("variant"))


def _stamp_format(stamp: str) -> str:
    return {8: "%Y%m%d", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}[len(stamp)]


PRODUCTS: dict[str, Product] = {
    p.key: p
    for p in [
        Product(
            "smap_l2e",
            "SPL2SMP_E",
            re.compile(
                r"^SMAP_L2_SM_P_E_(?P<orbit>\d{5})_(?P<variant>[AD])_(?P<stamp>\d{8}T\d{6})_R\d{5}_\d{3}\.h5$"
            ),
            ".h5",
        ),
        Product(
            "smap_l3e", "SPL3SMP_E", re.compile(r"^SMAP_L3_SM_P_E_(?P<stamp>\d{8})_R\d{5}_\d{3}\.h5$"), ".h5"
        ),
        Product(
            "smap_l4",
            "SPL4SMGP",
            re.compile(r"^SMAP_L4_SM_gph_(?P<stamp>\d{8}T\d{6})_Vv\d{4}_\d{3}\.h5$"),
            ".h5",
        ),
        Product(
            "gldas",
            "GLDAS_NOAH025_3H",
            re.compile(r"^GLDAS_NOAH025_3H\.A(?P<stamp>\d{8}\.\d{4})\.021\.nc4$"),
            ".nc4",
        ),
        Product(
            "viirs_lst",
            "VNP21A1",
            re.compile(
                r"^VNP21A1(?P<variant>[DN])\.A(?P<ydoy>\d{7})\.(?P<tile>h\d{2}v\d{2})\.\d{3}\.\d{13}\.h5$"
            ),
            ".h5",
        ),
        Product(
            "viirs_lai",
            "VNP15A2H",
            re.compile(r"^VNP15A2H\.A(?P<ydoy>\d{7})\.(?P<tile>h\d{2}v\d{2})\.\d{3}\.\d{13}\.h5$"),
            ".h5",
        ),
        Product(
            "ltdr_ndvi",
            "AVH13C1",
            re.compile(r"^AVHRR-Land_v005_AVH13C1_NOAA-\d{2}_(?P<stamp>\d{8})_c\d+\.nc$"),
            ".nc",
        ),
    ]
}


def product(key: str) -> Product:
    try:
        return PRODUCTS[key]
    except KeyError:
        raise ValueError(f"unknown product {key!r}; known: {', '.join(PRODUCTS)}") from None


def parse(product_key: str, name: str) -> GranuleName:
    return product(product_key).parse(name.rsplit("/", 1)[-1])


def _ts(t: datetime) -> str:
    return t.strftime("%Y%m%dT%H%M%S")


def _production_stamp(t: datetime) -> str:
    """A plausible production time (YYYYDDDHHMMSS): a few days after the data time."""
    return (t + (datetime(2000, 1, 4) - datetime(2000, 1, 1))).strftime("%Y%j%H%M%S")


def smap_l2e_name(orbit: int, half_orbit: str, start: datetime) -> str:
    return f"SMAP_L2_SM_P_E_{orbit:05d}_{half_orbit}_{_ts(start)}_{SMAP_CRID}_001.h5"


def smap_l3e_name(day: datetime) -> str:
    return f"SMAP_L3_SM_P_E_{day:%Y%m%d}_{SMAP_CRID}_001.h5"


def smap_l4_name(centre: datetime) -> str:
    return f"SMAP_L4_SM_gph_{_ts(centre)}_{SMAP_L4_VERSION}_001.h5"


def gldas_name(t: datetime) -> str:
    return f"GLDAS_NOAH025_3H.A{t:%Y%m%d.%H%M}.021.nc4"


def viirs_lst_name(day_or_night: str, day: datetime, tile: str) -> str:
    return f"VNP21A1{day_or_night}.A{day:%Y%j}.{tile}.{VIIRS_COLLECTION}.{_production_stamp(day)}.h5"


def viirs_lai_name(period_start: datetime, tile: str) -> str:
    return f"VNP15A2H.A{period_start:%Y%j}.{tile}.{VIIRS_COLLECTION}.{_production_stamp(period_start)}.h5"


def ltdr_ndvi_name(day: datetime, satellite: int = 19) -> str:
    return f"AVHRR-Land_v005_AVH13C1_NOAA-{satellite:02d}_{day:%Y%m%d}_c{_production_stamp(day)}.nc"
