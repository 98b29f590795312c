"""The reader of every product key (granules.PRODUCTS), one per input format."""

from __future__ import annotations

from soilcube.sources.base import Reader
from soilcube.sources.latlon import Gldas, LtdrNdvi
from soilcube.sources.smap import SmapL2E, SmapL3E, SmapL4
from soilcube.sources.viirs import ViirsLai, ViirsLst

READERS: dict[str, Reader] = {
    r.product: r for r in (SmapL2E(), SmapL3E(), SmapL4(), Gldas(), ViirsLst(), ViirsLai(), LtdrNdvi())
}


def reader(product: str) -> Reader:
    try:
        return READERS[product]
    except KeyError:
        raise ValueError(f"unknown product {product!r}; known: {', '.join(READERS)}") from None
