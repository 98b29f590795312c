"""QA bits of the downscaled soil-moisture cubes (uint8, one bit per reason, CF flag_masks convention).

`downscale` sets NO_DELTA_T, CLASS_BORROWED, NO_MODEL and OUT_OF_RANGE, `correct_to_smap` sets NO_SMAP,
OUT_OF_RANGE and ADDITIVE_FALLBACK; the caller sets DENSE_VEGETATION (SMAP vegetation water content above
`DENSE_VEGETATION_VWC`) and FROZEN_OR_SNOW from the SMAP flags, and combines the layers with `|`.
"""

from enum import IntFlag

import numpy as np


class QA(IntFlag):
    NO_SMAP = 1  # no SMAP 9 km retrieval for the parent cell (or the pixel lies outside the 9 km window)
    NO_DELTA_T = 2  # cloud: day or night LST missing, so no day−night difference
    DENSE_VEGETATION = 4  # SMAP vegetation water content > 5 kg m-2: retrieval quality not recommended
    FROZEN_OR_SNOW = 8  # frozen ground or snow cover per SMAP flags
    CLASS_BORROWED = 16  # the vegetation class had too few pairs; coefficients of the nearest class used
    OUT_OF_RANGE = 32  # value outside the physical range, set to NaN
    ADDITIVE_FALLBACK = 64  # footprint mean too small for the ratio branch; additive correction used
    NO_MODEL = 128  # no coefficients for the pixel: its model cell has no fit (none of its classes had
    # enough pairs), or the month, or the pixel lies outside the model grid, or it has no vegetation class


DENSE_VEGETATION_VWC = 5.0  # kg m-2, SMAP's recommended-quality limit


def flag_where(condition, flag: QA):
    """uint8 layer holding `flag` where `condition` is true, 0 elsewhere (numpy, dask or xarray)."""
    return condition.astype(np.uint8) * np.uint8(flag)


def qa_attrs() -> dict:
    """CF attributes of a QA variable: flag_masks and flag_meanings in bit order."""
    return {
        "long_name": "quality flags",
        "flag_masks": np.array([int(f) for f in QA], dtype=np.uint8),
        "flag_meanings": " ".join(f.name.lower() for f in QA),
    }
