"""Writers of single synthetic granules in the real product layouts (input-formats.md), one per product.

Every writer takes numpy arrays from the nature run and writes ONE granule:

- ``url`` is either the granule's own URL (its last component is a real file name of the product) or a
  folder, to which the real name from :mod:`soilcube.granules` is appended. Plain paths are ``file://``.
  The writer returns the granule's URL.
- The file is first written to a local temporary file, then renamed into place (local folders: same folder,
  atomic ``os.replace``) or uploaded in one piece (``s3://`` or any other fsspec protocol), so no reader
  ever sees a half-written granule, and a failed write leaves nothing behind.
- NaN marks missing data and becomes the product's fill value. Where the real files carry ``_FillValue``
  it is written both as the attribute and as the HDF5 fill value, so chunks never written read as fill.

Chunking and filters (real where input-formats.md verifies them, a documented choice otherwise):

============  ==================================  =============================================
product       chunks                              filter
============  ==================================  =============================================
SMAP L2_E     1-D, min(N, 4096) cells             gzip 2 (not verified for L2)
SMAP L3_E     one grid row (1, 3856)              gzip 2 (as real SPL3SMP); rows without data are
                                                  never allocated
SMAP L4       one chunk per 2-D variable, as real gzip 4, assembled from cached deflate pieces
                                                  (see ``_window_chunk``)
GLDAS         (1, 600, 1440), as real             zlib 4 + shuffle, as real; shuffled chunk assembled
                                                  from cached pieces, file from a per-process template
VIIRS         (300, 300)                          gzip 4 (not verified); chunks outside the data's
                                                  bounding box are never allocated
LTDR          (1, 360, 720)                       zlib 4 + shuffle (not verified); unwritten chunks
                                                  unallocated; as GLDAS, from a per-process template
============  ==================================  =============================================
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from functools import cache
from typing import NamedTuple

import fsspec
import h5py
import netCDF4
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from soilcube import granules
from soilcube.grids import GLDAS_GRID, LTDR_GRID, SINUSOIDAL_RADIUS, SinusoidalTile, Window, ease2_grid

# --- shared mechanics: destination, temp-file-then-publish, attributes, fills ------------------------------


def _destination(url, product_key: str, name: str) -> str:
    """The granule URL: ``url`` itself if it ends in a real file name of the product, else ``url/name``."""
    base = os.fspath(url).rstrip("/")
    if granules.product(product_key).pattern.match(base.rsplit("/", 1)[-1]):
        return base
    return f"{base}/{name}"


@contextlib.contextmanager
def _published(target: str, storage_options: Mapping | None) -> Iterator[str]:
    """Yield a local temporary path; when the block succeeds, publish it as ``target`` in one step.

    Local targets: the temporary file is a hidden ``.<name>.*.part`` beside the target and is renamed
    onto it (atomic). Remote targets: the file is uploaded once complete (an S3 object is visible only
    when its upload has finished). On any error the temporary file is removed and the target untouched.
    """
    fs, path = fsspec.core.url_to_fs(target, **dict(storage_options or {}))
    local = isinstance(fs, LocalFileSystem)
    folder = os.path.dirname(path) if local else None
    if local:
        os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".part", dir=folder)
    os.close(fd)
    try:
        yield tmp
        if local:
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        else:
            fs.put_file(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _set_attrs(obj, attrs: Mapping) -> None:
    """HDF5 attributes as the NASA writers store them: strings fixed-length ASCII, numbers typed as given."""
    for key, value in attrs.items():
        if value is None:
            continue
        obj.attrs[key] = np.bytes_(value.encode()) if isinstance(value, str) else value


def _h5_var(group, name, data=None, *, shape=None, dtype=None, fill=None, fill_attr=True, attrs=None, **kw):
    """Create an HDF5 dataset with ``fill`` as its HDF5 fill value and (``fill_attr``) ``_FillValue``."""
    dtype = np.dtype(dtype if dtype is not None else np.asarray(data).dtype)
    fillvalue = None if fill is None else dtype.type(fill)
    d = group.create_dataset(name, shape=shape, data=data, dtype=dtype, fillvalue=fillvalue, **kw)
    if fill is not None and fill_attr:
        d.attrs["_FillValue"] = fillvalue
    _set_attrs(d, attrs or {})
    return d


def _encode(values, fill, dtype, scale=1.0, offset=0.0, valid=None) -> np.ndarray:
    """Physical values → stored values: NaN → ``fill``; integers round((v − offset) / scale), clipped to
    ``valid``."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    dtype = np.dtype(dtype)
    raw = (np.where(ok, v, 0.0) - offset) / scale
    if dtype.kind in "iu":
        raw = np.rint(raw)
        if valid is not None:
            raw = np.clip(raw, *valid)
    return np.where(ok, raw, fill).astype(dtype)


def _require(fields: Mapping, keys, shape, what: str) -> dict[str, np.ndarray]:
    """The named fields as arrays, each of ``shape``; ValueError naming the first problem otherwise."""
    missing = [k for k in keys if k not in fields]
    if missing:
        raise ValueError(f"{what}: missing field(s) {missing}")
    out = {}
    for k in keys:
        a = np.asarray(fields[k])
        if a.shape != tuple(shape):
            raise ValueError(f"{what}: field {k!r} has shape {a.shape}, expected {tuple(shape)}")
        out[k] = a
    return out


def _check_m09(window: Window) -> None:
    if window.grid_name != "M09":
        raise ValueError(f"SMAP 9 km granules need an M09 window, got {window.grid_name}")


def _block_shape(rows: slice, cols: slice, grid_shape) -> tuple[int, int]:
    for s, n in ((rows, grid_shape[0]), (cols, grid_shape[1])):
        if s.step not in (None, 1) or s.start is None or s.stop is None or not 0 <= s.start < s.stop <= n:
            raise ValueError(f"block slices must be contiguous and inside a grid of shape {grid_shape}")
    return rows.stop - rows.start, cols.stop - cols.start


def _iso(t: datetime) -> str:
    return f"{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond // 1000:03d}Z"


# --- one deflate chunk assembled from cached pieces (SMAP L4, GLDAS, LTDR) -----------------------------
#
# Real L4 files store each 1624 × 3856 variable as ONE compressed chunk. Compressing 25 MB per variable per
# granule costs ~35 ms (≈ 0.15 s per granule), so the chunk is assembled instead: a zlib stream may be cut
# into independently compressed raw-deflate pieces that each end on a byte boundary (sync flush), and the
# Adler-32 checksum of the whole follows from the pieces' checksums. The all-fill rows above and below the
# window come from cached pieces of 2^k fill rows; only the window's rows are compressed per granule. The
# result is an ordinary gzip-filtered HDF5 chunk (written with H5Dwrite_chunk), byte-compatible with what
# HDF5's own deflate filter reads. Chunks with the shuffle filter before deflate (GLDAS, LTDR) are assembled
# the same way per byte plane (see ``_window_chunk``).

_DEFLATE_LEVEL = 4
_ZLIB_HEADER = b"\x78\x5e"  # deflate, 32 KiB window, FLEVEL 1 (levels 2-5)
_FINAL_BLOCK = zlib.compressobj(_DEFLATE_LEVEL, zlib.DEFLATED, -15).flush()  # empty final block


class _Deflated(NamedTuple):
    raw: bytes  # raw deflate blocks ending on a byte boundary, no final block
    adler: int  # Adler-32 of the uncompressed bytes
    size: int  # number of uncompressed bytes


def _deflate(data: bytes) -> _Deflated:
    c = zlib.compressobj(_DEFLATE_LEVEL, zlib.DEFLATED, -15)
    return _Deflated(c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH), zlib.adler32(data), len(data))


def _adler32_combine(adler1: int, adler2: int, len2: int) -> int:
    """Adler-32 of A + B from those of A and B (zlib's adler32_combine)."""
    base = 65521
    rem = len2 % base
    s1 = ((adler1 & 0xFFFF) + (adler2 & 0xFFFF) + base - 1) % base
    s2 = (rem * (adler1 & 0xFFFF) + (adler1 >> 16) + (adler2 >> 16) + base - rem) % base
    return (s2 << 16) | s1


def _zlib_stream(parts) -> bytes:
    raw, adler = [], 1
    for p in parts:
        raw.append(p.raw)
        adler = _adler32_combine(adler, p.adler, p.size)
    return _ZLIB_HEADER + b"".join(raw) + _FINAL_BLOCK + struct.pack(">I", adler)


@cache
def _fill_rows_piece(dtype: str, fill: float, ncols: int, k: int) -> _Deflated:
    return _deflate(np.full((1 << k, ncols), fill, dtype).tobytes())


def _fill_rows(dtype: str, fill: float, ncols: int, n: int) -> list[_Deflated]:
    return [_fill_rows_piece(dtype, fill, ncols, k) for k in range(n.bit_length()) if n >> k & 1]


def _window_chunk(shape, dtype, fill, row0: int, col0: int, block: np.ndarray,
                  shuffle: bool = False) -> bytes:
    """The zlib-compressed bytes of a C-order array of ``shape`` that is ``fill`` except ``block`` at
    (row0, col0).

    ``shuffle``: the bytes as HDF5's shuffle filter passes them on to deflate. The filter regroups the
    WHOLE chunk into byte planes (the k-th byte of every element, plane after plane), so plane k is the
    ``shape`` array of uint8 that is fill's k-th byte except the block's rows: the stream is, per plane,
    cached pieces of constant fill rows around the block's rows, which are compressed per call.
    """
    dtype = np.dtype(dtype)
    nrows, ncols = shape
    rows = np.full((block.shape[0], ncols), fill, dtype)
    rows[:, col0 : col0 + block.shape[1]] = block
    below = nrows - row0 - block.shape[0]
    if shuffle and dtype.itemsize > 1:
        planes = rows.view(np.uint8).reshape(*rows.shape, dtype.itemsize)
        layers = [("|u1", byte, planes[..., k]) for k, byte in enumerate(np.array(fill, dtype).tobytes())]
    else:
        layers = [(dtype.str, fill, rows)]
    parts = []
    for key, value, data in layers:
        parts += [*_fill_rows(key, value, ncols, row0), _deflate(np.ascontiguousarray(data).tobytes()),
                  *_fill_rows(key, value, ncols, below)]
    return _zlib_stream(parts)


# --- netCDF-4 granules from a per-process template ------------------------------------------------------
#
# Creating a netCDF-4 file with dozens of variables costs ~10 ms in netCDF-C alone. Granules of a product
# differ only in a few attribute values, a few coordinate values and their data chunks, so each process
# writes ONE template with the netCDF library (``_*_netcdf`` with no data) and every granule is a copy of
# its bytes in which those values are overwritten in place (same HDF5 type and size: attribute order,
# types and storage stay as netCDF-C made them) and the data chunks are written pre-compressed.


def _patch_attrs(obj, attrs: Mapping) -> None:
    """Overwrite existing attributes of an h5py object in place, raw (no type conversion); a value of a
    different size or shape is an error."""
    for key, value in attrs.items():
        attr = h5py.h5a.open(obj.id, key.encode())
        ftype = attr.get_type()
        if isinstance(value, str):
            raw = value.encode()
            if attr.dtype.kind != "S" or len(raw) != attr.dtype.itemsize or attr.shape not in ((), (1,)):
                raise ValueError(f"attribute {key!r}: {value!r} does not fit the template's {attr.dtype}")
            data = np.array(raw, dtype=attr.dtype).reshape(attr.shape)
        else:
            data = np.asarray(value, dtype=attr.dtype)
            if data.size != int(np.prod(attr.shape)):
                raise ValueError(f"attribute {key!r}: {data.size} value(s), the template has {attr.shape}")
            data = data.reshape(attr.shape)
        attr.write(np.ascontiguousarray(data), mtype=ftype)


def _from_template(tmp: str, template: bytes) -> h5py.File:
    """The template's bytes written to ``tmp``, opened for patching."""
    with open(tmp, "wb") as fh:
        fh.write(template)
    return h5py.File(tmp, "r+")


def _write_window_chunks(d, rows: slice, cols: slice, block: np.ndarray, fill) -> None:
    """Write the chunks of a 2-D (or (1, ny, nx)) dataset that the block (rows, cols) touches, pre-compressed
    for the dataset's own filters (deflate, optionally after shuffle): fill outside the block, as HDF5 would
    write them; the other chunks stay unallocated."""
    ny, nx = d.chunks[-2:]
    lead = (0,) * (d.ndim - 2)
    dcpl = d.id.get_create_plist()
    pipeline = [dcpl.get_filter(i) for i in range(dcpl.get_nfilters())]
    filters = [f[0] for f in pipeline]
    if filters not in ([h5py.h5z.FILTER_DEFLATE], [h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_DEFLATE]):
        raise ValueError(f"{d.name}: chunks are pre-compressed for deflate (+ shuffle) only, not {filters}")
    shuffle = filters[0] == h5py.h5z.FILTER_SHUFFLE
    if shuffle and tuple(pipeline[0][2][:1]) != (d.dtype.itemsize,):  # the shuffle's element size
        raise ValueError(f"{d.name}: shuffle element size {pipeline[0][2]} is not that of {d.dtype}")
    r_first, r_stop, c_first, c_stop = (int(i) for i in (rows.start, rows.stop, cols.start, cols.stop))
    for r0 in range(r_first // ny * ny, r_stop, ny):
        r1, r2 = max(r_first, r0), min(r_stop, r0 + ny)
        for c0 in range(c_first // nx * nx, c_stop, nx):
            c1, c2 = max(c_first, c0), min(c_stop, c0 + nx)
            part = block[r1 - r_first : r2 - r_first, c1 - c_first : c2 - c_first]
            chunk = _window_chunk((ny, nx), d.dtype, fill, r1 - r0, c1 - c0, part, shuffle)
            d.id.write_direct_chunk((*lead, r0, c0), chunk)


@cache
def _template(build, *code) -> bytes:
    """The bytes of the file that ``build(path)`` writes, once per process and per version of the code
    that writes it: ``code`` are the functions ``build`` relies on, so that replacing one (a test that
    makes netCDF writing fail) builds the template anew through it."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "template.nc")
        build(path)
        with open(path, "rb") as fh:
            return fh.read()


# --- SMAP common: variable catalogue, derived variables, /Metadata --------------------------------------

SMAP_FILL = -9999.0
SMAP_FLAG_FILL = 65534
# Epoch of tb_time_seconds (SMAP metadata: epochUTCDateTime, J2000). Leap seconds are not counted: the
# nature run's tb_time_seconds are plain UTC seconds since this instant.
SMAP_EPOCH = np.datetime64("2000-01-01T11:58:55.816", "ms")
_SMAP_INPUTS = (
    "soil_moisture", "vegetation_water_content", "surface_temperature",
    "retrieval_qual_flag", "surface_flag", "tb_time_seconds",
)
_ALG_LABEL = {"dca": "DCA", "scah": "SCA-H", "scav": "SCA-V"}
_RQF_FLAGS = (
    "1s, 2s, 4s, 8s", "Retrieval_recommended Retrieval_attempted Retrieval_success FT_retrieval_success")
_SURFACE_FLAGS = (
    ", ".join(f"{1 << i}s" for i in range(12)),
    " ".join("9_km_" + s for s in (
        "static_water_body", "radar_water_body_detection", "coastal_proximity", "urban_area", "precipitation",
        "snow_or_ice", "permanent_snow_or_ice", "radiometer_frozen_ground", "model_frozen_ground",
        "mountainous_terrain", "dense_vegetation", "nadir_region")),
)
_TB_QUAL_BITS = (
    "quality", "range", "RFI_detection", "RFI_correction", "NEDT", "direct_sun_correction",
    "reflected_sun_correction", "reflected_moon_correction", "direct_galaxy_correction",
    "reflected_galaxy_correction", "atmosphere_correction", "Faraday_rotation_correction", "null_value_bit",
    "water_correction", "RFI_check", "RFI_clean",
)


def _tb_flags(prefix: str, bits) -> tuple[str, str]:
    return ", ".join(f"{1 << b}s" for b in bits), " ".join(f"{prefix}_{_TB_QUAL_BITS[b]}" for b in bits)


_STOKES_BITS = [b for b in range(16) if b not in (11, 13)]  # no Faraday or water correction bits
_TB_TEXT = "brightness temperature in {} Earth grid cell {} for the presence of water bodies."
# base name: (dtype, units, valid_min, valid_max, long_name[, (flag_masks, flag_meanings)]); {alg} is the
# retrieval algorithm. Texts and ranges from the real SPL3SMP_E DMR (OPENDAP/bes), shared by L2.
_SMAP_SPECS: dict[str, tuple] = {
    "EASE_column_index": (
        "u2", None, 0, 3855,
        "The column index of the 9 km EASE grid cell that contains the associated data."),
    "EASE_row_index": (
        "u2", None, 0, 1623,
        "The row index of the 9 km EASE grid cell that contains the associated data."),
    "albedo": (
        "f4", None, 0.0, 1.0,
        "Diffuse reflecting power of the Earth's surface used in {alg} within the grid cell."),
    "boresight_incidence": (
        "f4", "degrees", 0.0, 90.0,
        "Representative angle between the antenna boresight vector and the normal to the Earth's surface "
        "for all footprints within the cell."),
    "bulk_density": (
        "f4", None, 0.0, 2.65,
        "A unitless value that is indicative of aggregated bulk_density within the 9 km grid cell."),
    "clay_fraction": (
        "f4", None, 0.0, 1.0,
        "A unitless value that is indicative of aggregated clay fraction within the 9 km grid cell."),
    "freeze_thaw_fraction": (
        "f4", None, 0.0, 1.0,
        "Fraction of the 9 km grid cell that is denoted as frozen.  Based on binary flag that specifies "
        "freeze thaw conditions in each of the component 3 km grid cells."),
    "grid_surface_status": (
        "u2", None, 0, 1,
        "Indicates if the grid point lies on land (0) or water (1)."),
    "latitude": (
        "f4", "degrees_north", None, None,
        "Latitude of the center of the Earth based grid cell."),
    "latitude_centroid": (
        "f4", "degrees", -90.0, 90.0,
        "Weighted average of the latitude of the center of the  brightness temperature footprints that "
        "fall within the EASE grid cell."),
    "longitude": (
        "f4", "degrees_east", None, None,
        "Longitude of the center of the Earth based grid cell."),
    "longitude_centroid": (
        "f4", "degrees", -180.0, 179.999,
        "Weighted average of the longitude of the center of the brightness temperature footprints that "
        "fall within the EASE grid cell."),
    "organic_content": (
        "f4", None, 0.0, 1.0,
        "A unitless value that is indicative of aggregated organic content within the 9 km grid cell."),
    "radar_water_body_fraction": (
        "f4", None, 0.0, 1.0,
        "The fraction of the area of the 9 km grid cell that is covered by water based on the radar "
        "detection algorithm."),
    "retrieval_qual_flag": (
        "u2", None, None, None,
        "Bit flags that record the conditions and the quality of the {alg} retrieval algorithms that "
        "generate soil moisture for the grid cell.", _RQF_FLAGS),
    "roughness_coefficient": (
        "f4", None, 0.0, 1.0,
        "A unitless value that is indicative of bare soil roughness used in {alg} within the 9 km grid "
        "cell."),
    "sand_fraction": (
        "f4", None, 0.0, 1.0,
        "A unitless value that is indicative of aggregated sand fraction within the 9 km grid cell."),
    "soil_moisture": (
        "f4", "cm**3/cm**3", 0.02, 0.5,
        "Representative {alg} soil moisture measurement for the Earth based grid cell."),
    "soil_moisture_error": (
        "f4", "cm**3/cm**3", 0.0, 0.2,
        "Net uncertainty measure of soil moisture measure for the Earth based grid cell. - Calculation "
        "method is TBD."),
    "static_water_body_fraction": (
        "f4", None, 0.0, 1.0,
        "The fraction of the area of the 9 km grid cell that is covered by static water based on a Digital "
        "Elevation Map."),
    "surface_flag": (
        "u2", None, None, None,
        "Bit flags that record ambient surface conditions for the grid cell", _SURFACE_FLAGS),
    "surface_temperature": (
        "f4", "Kelvins", 0.0, 350.0,
        "Temperature at land surface based on GMAO GEOS-5 data."),
    "surface_water_fraction_mb_h": (
        "f4", None, 0.0, 1.0,
        "Gain weighted fraction of static water within the radiometer horizontal polarization brightness "
        "temperature antenna pattern in 36 km Earth grid cell."),
    "surface_water_fraction_mb_v": (
        "f4", None, 0.0, 1.0,
        "Gain weighted fraction of static water within the radiometer vertical polarization brightness "
        "temperature antenna pattern in 36 km Earth grid cell."),
    "tb_3_corrected": (
        "f4", "Kelvin", 0.0, 330.0,
        "Third stokes parameter for each 9 km grid cell calculated with an adjustment for the presence of "
        "water bodies"),
    "tb_4_corrected": (
        "f4", "Kelvin", 0.0, 330.0,
        "Fourth stokes parameter for each 9 km grid cell calculated with an adjustment for the presence of "
        "water bodies"),
    "tb_h_corrected": (
        "f4", "Kelvin", 0.0, 330.0,
        "Horizontal polarization " + _TB_TEXT.format("9 km", "adjusted")),
    "tb_h_uncorrected": (
        "f4", "Kelvin", 0.0, 330.0,
        "Horizontal polarization " + _TB_TEXT.format("36 km", "before adjustment")),
    "tb_qual_flag_3": (
        "u2", None, None, None,
        "Bit flags that represent the quality of the 3rd Stokes brightness temperature within each grid cell",
        _tb_flags("3rd_Stokes", _STOKES_BITS)),
    "tb_qual_flag_4": (
        "u2", None, None, None,
        "Bit flags that represent the quality of the 4th Stokes brightness temperature within each grid cell",
        _tb_flags("4th_Stokes", _STOKES_BITS)),
    "tb_qual_flag_h": (
        "u2", None, None, None,
        "Bit flags that represent the quality of the horizontal polarization brightness temperature within "
        "each grid cell", _tb_flags("Horizontal_polarization", range(16))),
    "tb_qual_flag_v": (
        "u2", None, None, None,
        "Bit flags that represent the quality of the vertical polarization brightness temperature within "
        "each grid cell", _tb_flags("Vertical_polarization", range(16))),
    "tb_time_seconds": (
        "f8", "seconds", -999999.9, 940000000.0,
        "Arithmetic average of the acquisition time of all of the brightness temperature footprints with a "
        "center that falls within the EASE grid cell in seconds since noon on January 1, 2000 UTC."),
    "tb_time_utc": (
        "S24", None, None, None,
        "Arithmetic average of the acquisition time of all of the brightness temperature footprints with a "
        "center that falls within the EASE grid cell in UTC."),
    "tb_v_corrected": (
        "f4", "Kelvin", 0.0, 330.0,
        "Vertical polarization " + _TB_TEXT.format("9 km", "adjusted")),
    "tb_v_uncorrected": (
        "f4", "Kelvin", 0.0, 330.0,
        "Vertical polarization " + _TB_TEXT.format("36 km", "before adjustment")),
    "vegetation_opacity": (
        "f4", None, -999999.875, 999999.875,
        "The measured opacity of the vegetation used in the {alg} retrieval in the grid cell."),
    "vegetation_water_content": (
        "f4", "kg/m**2", 0.0, 20.0,
        "Representative measure of water in the vegetation within the 9 km grid cell."),
}
_ALG_BASES = ("albedo", "retrieval_qual_flag", "roughness_coefficient", "soil_moisture", "vegetation_opacity")
_COMMON = tuple(b for b in _SMAP_SPECS if b not in _ALG_BASES + ("organic_content", "sand_fraction"))
# (file name, base, algorithm). L2 v006: option1 = SCA-H, option2 = SCA-V, option3 = DCA = the baseline
# (soil_moisture == soil_moisture_option3, input-formats.md §1). L3 uses _dca/_scah/_scav instead.
_L2_VARS = sorted(
    [(b, b, None) for b in _COMMON + ("organic_content", "sand_fraction")]
    + [(b, b, "dca") for b in _ALG_BASES]
    + [(f"{b}_option{i}", b, alg) for b in ("retrieval_qual_flag", "soil_moisture", "vegetation_opacity")
       for i, alg in ((1, "scah"), (2, "scav"), (3, "dca"))]
    + [(f"{b}_option3", b, "dca") for b in ("albedo", "roughness_coefficient")],
    key=lambda v: v[0].lower(),
)
_L3_VARS = sorted(
    [(b, b, None) for b in _COMMON] + [(b, b, "dca") for b in _ALG_BASES]
    + [(f"{b}_{alg}", b, alg) for b in _ALG_BASES for alg in _ALG_LABEL],
    key=lambda v: v[0].lower(),
)


def _smap_spec(base: str, alg: str | None) -> tuple[np.dtype, float | None, dict]:
    """dtype, fill and attributes of one SMAP L2/L3 variable."""
    dtype, units, vmin, vmax, long_name, *flags = _SMAP_SPECS[base]
    dtype = np.dtype(dtype)
    fill = None if dtype.kind == "S" else SMAP_FLAG_FILL if dtype.kind == "u" else SMAP_FILL
    attrs = {"long_name": long_name.format(alg=_ALG_LABEL.get(alg, "DCA")), "units": units}
    if vmin is not None:
        attrs |= {"valid_min": dtype.type(vmin), "valid_max": dtype.type(vmax)}
    if flags:
        attrs |= {"flag_masks": flags[0][0], "flag_meanings": flags[0][1]}
    return dtype, fill, attrs


def _tb_time_utc(seconds: np.ndarray) -> np.ndarray:
    """``YYYY-MM-DDThh:mm:ss.sssZ`` (S24) of each finite tb_time_seconds; empty strings elsewhere."""
    ok = np.isfinite(seconds)
    t = SMAP_EPOCH + np.rint(np.where(ok, seconds, 0.0) * 1000).astype("timedelta64[ms]")
    text = np.char.add(np.datetime_as_string(t, unit="ms").astype("S23"), b"Z")
    return np.where(ok, text, b"").astype("S24")


def _smap_values(f: Mapping[str, np.ndarray], lat, lon, rows, cols, swath) -> dict:
    """Every SMAP L2/L3 variable on the given cells, keyed (base, algorithm): float64 with NaN off the swath
    (flags and indices too), tb_time_utc as S24.

    The six inputs pass through unchanged (soil_moisture is the DCA baseline). The rest is derived with
    simple, plausible relations: SCA-H/SCA-V soil moisture within a few percent of DCA, opacity b·VWC,
    brightness temperatures Ts·e(θ) with e falling linearly with soil moisture, constant soil texture,
    no water, frozen ground or RFI.
    """
    off = ~np.asarray(swath, dtype=bool)

    def cells(a):
        a = np.array(np.broadcast_to(a, off.shape), dtype=np.float64)
        a[off] = np.nan
        return a

    sm, vwc = cells(f["soil_moisture"]), cells(f["vegetation_water_content"])
    ts = cells(f["surface_temperature"])
    tb_sm = np.where(np.isfinite(sm), sm, 0.25)
    tb_ts = np.where(np.isfinite(ts), ts, 290.0)
    tb_v, tb_h = cells(tb_ts * (0.99 - 0.45 * tb_sm)), cells(tb_ts * (0.95 - 0.80 * tb_sm))
    zero = cells(0.0)
    v = {
        ("EASE_row_index", None): cells(rows), ("EASE_column_index", None): cells(cols),
        ("latitude", None): cells(lat), ("longitude", None): cells(lon),
        ("latitude_centroid", None): cells(lat + 0.01 * np.sin(cols)),
        ("longitude_centroid", None): cells(lon + 0.01 * np.cos(rows)),
        ("boresight_incidence", None): cells(40.0), ("bulk_density", None): cells(1.45),
        ("clay_fraction", None): cells(0.25), ("sand_fraction", None): cells(0.35),
        ("organic_content", None): cells(0.01), ("freeze_thaw_fraction", None): zero,
        ("grid_surface_status", None): zero, ("radar_water_body_fraction", None): zero,
        ("static_water_body_fraction", None): zero, ("surface_water_fraction_mb_h", None): zero,
        ("surface_water_fraction_mb_v", None): zero,
        ("soil_moisture_error", None): np.where(np.isnan(sm), sm, 0.04),
        ("surface_flag", None): cells(f["surface_flag"]), ("surface_temperature", None): ts,
        ("vegetation_water_content", None): vwc, ("tb_time_seconds", None): cells(f["tb_time_seconds"]),
        ("tb_v_corrected", None): tb_v, ("tb_v_uncorrected", None): tb_v,
        ("tb_h_corrected", None): tb_h, ("tb_h_uncorrected", None): tb_h,
        ("tb_3_corrected", None): cells(0.5), ("tb_4_corrected", None): cells(0.3),
    }
    for pol in "hv34":
        v["tb_qual_flag_" + pol, None] = zero
    v["tb_time_utc", None] = _tb_time_utc(v["tb_time_seconds", None])
    rqf = cells(f["retrieval_qual_flag"])
    for alg, k_sm, b, albedo, rough in (("dca", 1.0, 0.11, 0.06, 0.16), ("scah", 0.97, 0.12, 0.05, 0.13),
                                         ("scav", 1.03, 0.10, 0.05, 0.13)):
        v["soil_moisture", alg] = sm * k_sm
        v["retrieval_qual_flag", alg] = rqf
        v["vegetation_opacity", alg] = b * vwc
        v["albedo", alg] = cells(albedo)
        v["roughness_coefficient", alg] = cells(rough)
    return v


def _smap_encode(values, base: str, alg: str | None):
    dtype, fill, attrs = _smap_spec(base, alg)
    data = values[base, alg]
    return (data if fill is None else _encode(data, fill, dtype)), dtype, fill, attrs


def _smap_metadata(h5, *, short_name: str, file_name: str, begin: datetime, end: datetime,
                   bounds=None, groups=(), **ident) -> None:
    """/Metadata with the attributes readers use (DatasetIdentification@shortName) and the usual subgroups."""
    md = h5.create_group("Metadata")
    _set_attrs(md.create_group("DatasetIdentification"), {
        "shortName": short_name, "fileName": file_name, "characterSet": "utf8", "language": "eng",
        "creationDate": _iso(end + timedelta(days=3)), **ident,
    })
    west, south, east, north = bounds if bounds is not None else (-180.0, -85.04450226, 180.0, 85.04450226)
    _set_attrs(md.create_group("Extent"), {
        "rangeBeginningDateTime": _iso(begin), "rangeEndingDateTime": _iso(end),
        "westBoundLongitude": np.float64(west), "southBoundLatitude": np.float64(south),
        "eastBoundLongitude": np.float64(east), "northBoundLatitude": np.float64(north),
    })
    _set_attrs(md.create_group("ProcessStep"), {
        "epochUTCDateTime": "2000-01-01T11:58:55.816Z", "timeVariableEpoch": "J2000",
        "processor": "SMAP Science Data System (synthetic)",
    })
    grid = md.create_group("GridSpatialRepresentation")
    _set_attrs(grid.create_group("Column"), {"dimensionSize": np.int32(3856), "resolution": np.float64(9.0)})
    _set_attrs(grid.create_group("Row"), {"dimensionSize": np.int32(1624), "resolution": np.float64(9.0)})
    _set_attrs(grid.create_group("GridDefinition"), {"identifier": "EASEGrid2", "description": "M09km"})
    _set_attrs(grid.create_group("GridDefinitionDocument"),
               {"edition": "EASE-Grid 2.0", "title": "EASE-Grid 2.0"})
    for g in groups:
        md.require_group(g)


def _smap_window_cells(window: Window):
    rows = np.broadcast_to(window.rows[:, None], window.shape)
    cols = np.broadcast_to(window.cols[None, :], window.shape)
    return window.lat[:, None], window.lon[None, :], rows, cols


# --- SMAP SPL2SMP_E ------------------------------------------------------------------------------------

_L2_METADATA_GROUPS = (
    *(f"AcquisitionInformation/{g}" for g in (
        "platform", "platformDocument", "radar", "radarDocument", "radiometer", "radiometerDocument")),
    "DataQuality/CompletenessOmission", "DataQuality/DomainConsistency",
    "Lineage/InputConfiguration/L1C_TB_E", "Lineage/InputConfiguration/L2_SM_A",
    *(f"Lineage/{g}" for g in (
        "DEMSLP", "DIST2WATER", "L1C_TB_E", "L2_SM_A", "LANDCOVER_CLASS", "LANDCOVER_CLASS_FRACTION_TOP3",
        "LANDCOVER_CLASS_TOP3", "MetadataConfiguration", "NDVI", "NDVI_MAX", "OutputConfiguration", "PRECIP",
        "RunConfiguration", "SNOW", "SOIL_TEXTURE_BULK", "SOIL_TEXTURE_CLAY", "SOIL_TEXTURE_ORGANICCONTENT",
        "SOIL_TEXTURE_SAND", "SURFACE_ROUGHNESS_COEFF", "TSURF", "URBAN_FRACTION", "WATER_FRACTION")),
    "OrbitMeasuredLocation", "ProductSpecificationDocument", "QADatasetIdentification",
    "SeriesIdentification",
)
_HALF_ORBIT = timedelta(minutes=49, seconds=20)
_L2_CHUNK = 4096


def write_smap_l2e(url, *, window: Window, start: datetime, half_orbit: str, orbit: int,
                   fields: Mapping[str, np.ndarray], storage_options=None) -> str:
    """One SPL2SMP_E v006 half-orbit granule: 1-D swath arrays of the cells where tb_time_seconds is finite
    (row-major order), located by GLOBAL M09 EASE_row_index/EASE_column_index."""
    _check_m09(window)
    if half_orbit not in ("A", "D"):
        raise ValueError(f"half_orbit must be 'A' (ascending, PM) or 'D' (descending, AM): {half_orbit!r}")
    f = _require(fields, _SMAP_INPUTS, window.shape, "SMAP L2_E")
    r, c = np.nonzero(np.isfinite(f["tb_time_seconds"]))
    if not r.size:
        # A real half-orbit granule always holds cells. Zero-length datasets would also make kerchunk
        # 0.2.10 (with zarr 3) hang once a group holds a dozen of them.
        raise ValueError("SMAP L2_E: no swath cell in the window (tb_time_seconds all NaN); write no granule")
    lat, lon = window.lat[r], window.lon[c]
    values = _smap_values({k: a[r, c] for k, a in f.items()}, lat, lon, window.row0 + r, window.col0 + c,
                          np.ones(r.size, dtype=bool))
    name = granules.smap_l2e_name(orbit, half_orbit, start)
    target = _destination(url, "smap_l2e", name)
    storage = {"chunks": (min(r.size, _L2_CHUNK),), "compression": "gzip", "compression_opts": 2}
    with _published(target, storage_options) as tmp, h5py.File(tmp, "w") as h5:
        _smap_metadata(h5, short_name="SPL2SMP_E", file_name=name, begin=start, end=start + _HALF_ORBIT,
                       bounds=(lon.min(), lat.min(), lon.max(), lat.max()), groups=_L2_METADATA_GROUPS,
                       CompositeReleaseID=granules.SMAP_CRID, ECSVersionID="006", SMAPShortName="L2_SM_P_E",
                       orbitNumber=np.int32(orbit))
        # Real granules also hold /Soil_Moisture_Retrieval_Data_Polar (N09 grid); the synthetic windows never
        # reach the pole, and an empty group of zero-length datasets would hang kerchunk (see above).
        swath = h5.create_group("Soil_Moisture_Retrieval_Data")
        for var, base, alg in _L2_VARS:
            data, _, fill, attrs = _smap_encode(values, base, alg)
            plain = base in ("latitude", "longitude")  # no _FillValue attribute on L2 latitude/longitude
            _h5_var(swath, var, data, fill=fill, fill_attr=not plain, attrs=attrs, **storage)
    return target


# --- SMAP SPL3SMP_E ------------------------------------------------------------------------------------


def write_smap_l3e(url, *, window: Window, day: datetime, am: Mapping | None, pm: Mapping | None,
                   storage_options=None) -> str:
    """One SPL3SMP_E daily composite on the global 1624 × 3856 grid: AM and PM groups (PM names with the
    ``_pm`` suffix), row chunks (1, 3856) gzip 2; only rows holding retrievals are allocated.

    ``am``/``pm`` hold the L2 fields of the window; a cell belongs to the composite where its
    tb_time_seconds is finite. ``None`` or an empty mapping leaves that half all fill.
    """
    _check_m09(window)
    halves = []
    lat, lon, rows, cols = _smap_window_cells(window)
    for label, suffix, fields in (("AM", "", am), ("PM", "_pm", pm)):
        values, span = None, None
        if fields:
            f = _require(fields, _SMAP_INPUTS, window.shape, f"SMAP L3_E {label}")
            swath = np.isfinite(f["tb_time_seconds"])
            if swath.any():
                values = _smap_values(f, lat, lon, rows, cols, swath)
                hit = np.flatnonzero(swath.any(axis=1))
                span = slice(hit[0], hit[-1] + 1)
        halves.append((label, suffix, values, span))
    name = granules.smap_l3e_name(day)
    target = _destination(url, "smap_l3e", name)
    shape = ease2_grid("M09").shape
    storage = {"chunks": (1, shape[1]), "compression": "gzip", "compression_opts": 2}
    day0 = datetime(day.year, day.month, day.day)
    with _published(target, storage_options) as tmp, h5py.File(tmp, "w") as h5:
        _smap_metadata(h5, short_name="SPL3SMP_E", file_name=name, begin=day0,
                       end=day0 + timedelta(days=1, milliseconds=-1), CompositeReleaseID=granules.SMAP_CRID,
                       ECSVersionID="006", SMAPShortName="L3_SM_P_E",
                       groups=("Lineage/L2_SM_P", "AcquisitionInformation", "DataQuality",
                               "SeriesIdentification"))
        for label, suffix, values, span in halves:
            group = h5.create_group(f"Soil_Moisture_Retrieval_Data_{label}")
            polar = h5.create_group(f"Soil_Moisture_Retrieval_Data_Polar_{label}")
            for var, base, alg in _L3_VARS:
                dtype, fill, attrs = _smap_spec(base, alg)
                plain = suffix == "" and base in ("latitude", "longitude")  # AM lat/lon: no _FillValue attr
                if suffix and base in ("latitude", "longitude"):
                    lo, hi = (-90.0, 90.0) if base == "latitude" else (-180.0, 179.999)
                    attrs |= {"valid_min": np.float32(lo), "valid_max": np.float32(hi)}
                kw = {"dtype": dtype, "fill": fill, "fill_attr": not plain, "attrs": attrs} | storage
                d = _h5_var(group, var + suffix, shape=shape, **kw)
                _h5_var(polar, var + suffix, shape=(2000, 2000), **(kw | {"chunks": (1, 2000)}))
                if values is not None:
                    data = _smap_encode(values, base, alg)[0][span]
                    d[window.row0 + span.start : window.row0 + span.stop, window.slices[1]] = data
    return target


# --- SMAP SPL4SMGP -------------------------------------------------------------------------------------

L4_FILL = -9999.0
# Geophysical_Data: name → (units, valid_min, valid_max, long_name). The three the nature run supplies carry
# data; the other 42 exist as in the real files and read as fill (their single chunk is never written).
_L4_VARS: dict[str, tuple] = {
    "sm_surface": ("m3 m-3", 0.0, 0.9, "Top layer soil moisture (0-5 cm)"),
    "sm_rootzone": ("m3 m-3", 0.0, 0.9, "Root zone soil moisture (0-100 cm)"),
    "sm_profile": ("m3 m-3", 0.0, 0.9, "Total profile soil moisture (0 cm to model bedrock depth)"),
    "sm_surface_wetness": ("dimensionless", 0.0, 1.0, "Top layer soil wetness (0-5 cm)"),
    "sm_rootzone_wetness": ("dimensionless", 0.0, 1.0, "Root zone soil wetness (0-100 cm)"),
    "sm_profile_wetness": ("dimensionless", 0.0, 1.0,
                           "Total profile soil wetness (0 cm to model bedrock depth)"),
    "surface_temp": ("K", 180.0, 350.0, "Mean land surface temperature (incl. snow-covered land area)"),
    **{f"soil_temp_layer{i}": ("K", 180.0, 350.0, f"Soil temperature in layer {i} of the soil heat diffusion "
                               "model") for i in range(1, 7)},
    "snow_mass": ("kg m-2", 0.0, 10000.0, "Average snow mass (or snow water equivalent) over land"),
    "snow_depth": ("m", 0.0, 100.0, "Snow depth within snow-covered land area"),
    "land_evapotranspiration_flux": ("kg m-2 s-1", -0.001, 0.001, "Evapotranspiration from land"),
    "overland_runoff_flux": ("kg m-2 s-1", 0.0, 0.05, "Overland (surface) runoff"),
    "baseflow_flux": ("kg m-2 s-1", 0.0, 0.01, "Baseflow"),
    "snow_melt_flux": ("kg m-2 s-1", 0.0, 0.05, "Snowmelt"),
    "soil_water_infiltration_flux": ("kg m-2 s-1", 0.0, 0.05, "Soil water infiltration rate"),
    "land_fraction_saturated": ("dimensionless", 0.0, 1.0, "Fractional land area that is saturated"),
    "land_fraction_unsaturated": ("dimensionless", 0.0, 1.0, "Fractional land area that is unsaturated"),
    "land_fraction_wilting": ("dimensionless", 0.0, 1.0, "Fractional land area that is wilting"),
    "land_fraction_snow_covered": ("dimensionless", 0.0, 1.0, "Fractional land area that is snow-covered"),
    "heat_flux_sensible": ("W m-2", -2500.0, 3000.0, "Sensible heat flux from land"),
    "heat_flux_latent": ("W m-2", -2500.0, 3000.0, "Latent heat flux from land"),
    "heat_flux_ground": ("W m-2", -1000.0, 1000.0,
                         "Downward ground heat flux into layer 1 of soil heat model"),
    "net_downward_shortwave_flux": ("W m-2", 0.0, 1400.0, "Net downward shortwave flux over land"),
    "net_downward_longwave_flux": ("W m-2", -1000.0, 1000.0, "Net downward longwave flux over land"),
    "radiation_shortwave_downward_flux": ("W m-2", 0.0, 1400.0, "Incident shortwave radiation flux density"),
    "radiation_longwave_absorbed_flux": ("W m-2", 0.0, 1000.0, "Absorbed longwave radiation flux density"),
    "precipitation_total_surface_flux": ("kg m-2 s-1", 0.0, 0.05, "Total precipitation flux density"),
    "snowfall_surface_flux": ("kg m-2 s-1", 0.0, 0.05, "Snowfall flux density"),
    "surface_pressure": ("Pa", 40000.0, 110000.0, "Surface pressure"),
    "height_lowatmmodlay": ("m", 0.0, 200.0, "Center height of lowest atmospheric model layer"),
    "temp_lowatmmodlay": ("K", 180.0, 350.0,
                          "Air temperature at center height of lowest atmospheric model layer"),
    "specific_humidity_lowatmmodlay": ("kg kg-1", 0.0, 0.1, "Specific humidity at center height of lowest "
                                       "atmospheric model layer"),
    "windspeed_lowatmmodlay": ("m s-1", 0.0, 100.0, "Wind speed at center height of lowest atmospheric model "
                               "layer"),
    "vegetation_greenness_fraction": ("dimensionless", 0.0, 1.0, "Vegetation greenness fraction"),
    "leaf_area_index": ("m2 m-2", 0.0, 10.0, "Vegetation leaf area index"),
    "sm_rootzone_pctl": ("percent", 0.0, 100.0, "Root zone soil moisture percentile"),
    "sm_profile_pctl": ("percent", 0.0, 100.0, "Total profile soil moisture percentile"),
    "depth_to_water_table_from_surface_in_peat": ("m", -10.0, 10.0,
                                                  "Depth to water table from surface in peat"),
    "free_surface_water_on_peat_flux": ("kg m-2 s-1", -0.01, 0.01, "Free surface water on peat flux"),
    "mwrtm_vegopacity": ("dimensionless", 0.0, 10.0, "L-band microwave vegetation opacity (nadir)"),
}
_L4_CELL_NAMES = {
    "cell_lat": "Center latitude of cell in global EASE-Grid 2.0 9 km grid",
    "cell_lon": "Center longitude of cell in global EASE-Grid 2.0 9 km grid",
    "cell_row": "Row index of cell in global EASE-Grid 2.0 9 km grid",
    "cell_column": "Column index of cell in global EASE-Grid 2.0 9 km grid",
}
_L4_DISCOVER = "/discover/nobackup/projects/gmao/smap/SMAP_L4/L4_SM"
_L4_FILL_ATTRS = {"missing_value": np.float32(L4_FILL), "fmissing_value": np.float32(L4_FILL)}
_L4_CHUNK_OPTS = {"compression": "gzip", "compression_opts": _DEFLATE_LEVEL}


@cache
def _l4_static() -> dict[str, tuple[np.dtype, bytes]]:
    """cell_lat, cell_lon, cell_row, cell_column of the global M09 grid as ready single zlib chunks.

    Computed once per process: EASE2 is cylindrical, so latitude depends on the row only and longitude on
    the column only.
    """
    grid = ease2_grid("M09")
    nr, nc = grid.shape
    lat = grid.lonlat(np.arange(nr), 0)[1].astype(np.float32)
    lon = grid.lonlat(0, np.arange(nc))[0].astype(np.float32)
    arrays = {
        "cell_lat": np.broadcast_to(lat[:, None], (nr, nc)),
        "cell_lon": np.broadcast_to(lon[None, :], (nr, nc)),
        "cell_row": np.broadcast_to(np.arange(nr, dtype=np.uint32)[:, None], (nr, nc)),
        "cell_column": np.broadcast_to(np.arange(nc, dtype=np.uint32)[None, :], (nr, nc)),
    }
    return {k: (a.dtype, _zlib_stream([_deflate(np.ascontiguousarray(a).tobytes())]))
            for k, a in arrays.items()}


def _label_yx(d) -> None:
    d.dims[0].label = "y"
    d.dims[1].label = "x"


def write_smap_l4(url, *, window: Window, centre: datetime, fields: Mapping[str, np.ndarray],
                  storage_options=None) -> str:
    """One SPL4SMGP (v8) 3-hourly granule: /Geophysical_Data/<var> float32 on the global 1624 × 3856 grid
    with -9999 outside the window, one gzip chunk per variable as in the real files.

    ``fields``: sm_surface, sm_rootzone (m3 m-3) and surface_temp (K) on the M09 window.
    """
    _check_m09(window)
    f = _require(fields, ("sm_surface", "sm_rootzone", "surface_temp"), window.shape, "SMAP L4")
    name = granules.smap_l4_name(centre)
    target = _destination(url, "smap_l4", name)
    grid = ease2_grid("M09")
    shape = grid.shape
    # The GMAO writer counts seconds from 12:00:00 while the units say 11:58:55.816 (input-formats.md §3).
    t = (centre - datetime(2000, 1, 1, 12)).total_seconds()
    with _published(target, storage_options) as tmp, h5py.File(tmp, "w") as h5:
        _set_attrs(h5, {
            "Title": "SMAP L4_SM Geophysical (GPH) Data Granule", "Conventions": "CF",
            "Institution": "NASA Global Modeling and Assimilation Office",
            "History": "File written by ldas2daac.x", "Comment": "HDF-5", "Contact": "http://gmao.gsfc.nasa.gov",
            "References": "see SMAP L4_SM Product Specification Documentation", "Source": "v18.1.0",
            "Filename": f"{_L4_DISCOVER}/{granules.SMAP_L4_VERSION}/{name}",
        })
        for var, (dtype, chunk) in _l4_static().items():
            fill = L4_FILL if dtype.kind == "f" else None
            attrs = {"long_name": _L4_CELL_NAMES[var], "units": "degrees" if fill is not None else None,
                     "grid_mapping": "EASE2_global_projection"}
            d = _h5_var(h5, var, shape=shape, dtype=dtype, fill=fill, chunks=shape,
                        attrs=attrs | (_L4_FILL_ATTRS if fill is not None else {}), **_L4_CHUNK_OPTS)
            _label_yx(d)
            d.id.write_direct_chunk((0, 0), chunk)
        for axis, values in (("x", grid.x(np.arange(shape[1]))), ("y", grid.y(np.arange(shape[0])))):
            d = _h5_var(h5, axis, values.astype(np.float64), attrs={
                "long_name": f"{axis}-coordinate in Cylindrical EASE-Grid 2.0",
                "standard_name": f"projection_{axis}_coordinate", "axis": axis.upper(), "units": "m"})
            d.make_scale(axis)
        _h5_var(h5, "time", np.array([t]), attrs={
            "long_name": "time", "units": "seconds since 2000-01-01 11:58:55.816",
            "actual_range": np.array([t, t]), "delta_t": "0000-00-00 03:00:00"})
        proj = h5.create_dataset("EASE2_global_projection", data=np.bytes_(b"\0"))
        _set_attrs(proj, {
            "grid_mapping_name": "lambert_cylindrical_equal_area", "standard_parallel": np.float64(30.0),
            "false_easting": np.float64(0.0), "false_northing": np.float64(0.0),
            "longitude_of_central_meridian": np.float64(0.0)})
        geo = h5.create_group("Geophysical_Data")
        for var, (units, vmin, vmax, long_name) in _L4_VARS.items():
            attrs = {"long_name": long_name, "units": units, "grid_mapping": "EASE2_global_projection",
                     "coordinates": "cell_lat cell_lon", "valid_min": np.float32(vmin),
                     "valid_max": np.float32(vmax), **_L4_FILL_ATTRS}
            d = _h5_var(geo, var, shape=shape, dtype=np.float32, fill=L4_FILL, chunks=shape, attrs=attrs,
                        **_L4_CHUNK_OPTS)
            _label_yx(d)
            if var in f:
                block = _encode(f[var], L4_FILL, np.float32)
                chunk = _window_chunk(shape, np.float32, L4_FILL, window.row0, window.col0, block)
                d.id.write_direct_chunk((0, 0), chunk)
        _smap_metadata(h5, short_name="SPL4SMGP", file_name=name, begin=centre - timedelta(hours=1.5),
                       end=centre + timedelta(hours=1.5),
                       groups=("Lineage", "AcquisitionInformation", "DataQuality", "SeriesIdentification"),
                       L4_SM_VersionID=granules.SMAP_L4_VERSION)
    return target


# --- GLDAS Noah 0.25° 3-hourly v2.1 --------------------------------------------------------------------

GLDAS_FILL = np.float32(-9999.0)
_GLDAS_EPOCH = datetime(2000, 1, 1, 3)
# name → (units, long_name) for all 36 variables of GLDAS_NOAH025_3H v2.1 (S4PA metadata). Variables that
# the caller does not supply exist as in the real files and read as fill (their chunk is never written).
_GLDAS_LAYERS = ("0_10cm", "10_40cm", "40_100cm", "100_200cm")
_GLDAS_VARS: dict[str, tuple[str, str]] = {
    "Albedo_inst": ("%", "Albedo"),
    "AvgSurfT_inst": ("K", "Average surface skin temperature"),
    "CanopInt_inst": ("kg m-2", "Plant canopy surface water"),
    "ECanop_tavg": ("W m-2", "Canopy water evaporation"),
    "ESoil_tavg": ("W m-2", "Direct evaporation from bare soil"),
    "Evap_tavg": ("kg m-2 s-1", "Evapotranspiration"),
    "LWdown_f_tavg": ("W m-2", "Downward long-wave radiation flux"),
    "Lwnet_tavg": ("W m-2", "Net long-wave radiation flux"),
    "PotEvap_tavg": ("W m-2", "Potential evaporation rate"),
    "Psurf_f_inst": ("Pa", "Pressure"),
    "Qair_f_inst": ("kg kg-1", "Specific humidity"),
    "Qg_tavg": ("W m-2", "Heat flux"),
    "Qh_tavg": ("W m-2", "Sensible heat net flux"),
    "Qle_tavg": ("W m-2", "Latent heat net flux"),
    "Qs_acc": ("kg m-2", "Storm surface runoff"),
    "Qsb_acc": ("kg m-2", "Baseflow-groundwater runoff"),
    "Qsm_acc": ("kg m-2", "Snow melt"),
    "Rainf_f_tavg": ("kg m-2 s-1", "Total precipitation rate"),
    "Rainf_tavg": ("kg m-2 s-1", "Rain precipitation rate"),
    "RootMoist_inst": ("kg m-2", "Root zone soil moisture"),
    "SnowDepth_inst": ("m", "Snow depth"),
    "Snowf_tavg": ("kg m-2 s-1", "Snow precipitation rate"),
    **{f"SoilMoi{layer}_inst": ("kg m-2", "Soil moisture") for layer in _GLDAS_LAYERS},
    **{f"SoilTMP{layer}_inst": ("K", "Soil temperature") for layer in _GLDAS_LAYERS},
    "SWdown_f_tavg": ("W m-2", "Downward short-wave radiation flux"),
    "SWE_inst": ("kg m-2", "Snow depth water equivalent"),
    "Swnet_tavg": ("W m-2", "Net short wave radiation flux"),
    "Tair_f_inst": ("K", "Air temperature"),
    "Tveg_tavg": ("W m-2", "Transpiration"),
    "Wind_f_inst": ("m s-1", "Wind speed"),
}
_GLDAS_CELL_METHODS = {"inst": "time: point", "tavg": "time: mean", "acc": "time: sum"}
_NC_DATA_OPTS = {"zlib": True, "complevel": 4, "shuffle": True}


def _nc_var(nc, name, dtype, dims, attrs, fill=None, **kw):
    """A netCDF-4 variable with its attributes, written raw (no automatic masking or scaling)."""
    v = nc.createVariable(name, dtype, dims, fill_value=fill, **kw)
    v.setncatts(dict(attrs))
    v.set_auto_maskandscale(False)
    return v


def _gldas_netcdf(path: str, time: datetime, rows: slice, cols: slice, fields: Mapping[str, np.ndarray]):
    """The granule written by the netCDF library itself: the template (``fields`` empty) and the reference
    that the template-based granules equal."""
    minutes = (time - _GLDAS_EPOCH).total_seconds() / 60.0
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.setncatts({
            "missing_value": GLDAS_FILL, "tavg definision:": "past 3-hour average",
            "acc definision:": "past 3-hour accumulation", "inst definision:": "instantaneous",
            "title": "GLDAS2.1 LIS land surface model output", "institution": "NASA GSFC",
            "source": "Noah_v3.3", "history": _gldas_history(time),
            "references": "Rodell_etal_BAMS_2004, Kumar_etal_EMS_2006, Peters-Lidard_etal_ISSE_2007",
            "conventions": "CF-1.6",
            "comment": "website: http://ldas.gsfc.nasa.gov/gldas, http://lis.gsfc.nasa.gov/",
            "MAP_PROJECTION": "EQUIDISTANT CYLINDRICAL", "SOUTH_WEST_CORNER_LAT": np.float32(-59.875),
            "SOUTH_WEST_CORNER_LON": np.float32(-179.875), "DX": np.float32(0.25), "DY": np.float32(0.25),
        })
        nlat, nlon = GLDAS_GRID.shape
        for dim, size in (("time", 1), ("lat", nlat), ("lon", nlon), ("bnds", 2)):
            nc.createDimension(dim, size)
        unit = {"scale_factor": np.float32(1.0), "add_offset": np.float32(0.0), "missing_value": GLDAS_FILL}
        for axis, long, units in (("lat", "latitude", "degrees_north"), ("lon", "longitude", "degrees_east")):
            values = getattr(GLDAS_GRID, axis).astype(np.float32)
            attrs = {"units": units, "standard_name": long, "long_name": long, **unit,
                     "vmin": values[0], "vmax": values[-1]}
            v = _nc_var(nc, axis, "f4", (axis,), attrs, GLDAS_FILL, chunksizes=values.shape, **_NC_DATA_OPTS)
            v[:] = values
        _nc_var(nc, "time", "f8", ("time",), {
            "units": " minutes since 2000-01-01 03:00:00", "long_name": "time", "time_increment": "180",
            **_gldas_begin(time), "bounds": "time_bnds",
        })[:] = [minutes]
        _nc_var(nc, "time_bnds", "f8", ("time", "bnds"), {})[:] = [[minutes - 180.0, minutes]]
        for var, (units, long_name) in _GLDAS_VARS.items():
            attrs = {"units": units, "standard_name": "soil_moisture_content" if "SoilMoi" in var else None,
                     "long_name": long_name, "cell_methods": _GLDAS_CELL_METHODS[var.rsplit("_", 1)[1]],
                     **unit, **_gldas_range(fields.get(var))}
            attrs = {k: a for k, a in attrs.items() if a is not None}
            v = _nc_var(nc, var, "f4", ("time", "lat", "lon"), attrs, GLDAS_FILL, chunksizes=(1, nlat, nlon),
                        **_NC_DATA_OPTS)
            if var in fields:
                full = np.full(GLDAS_GRID.shape, GLDAS_FILL, np.float32)
                full[rows, cols] = _encode(fields[var], GLDAS_FILL, np.float32)
                v[0] = full


def _gldas_history(time: datetime) -> str:
    return f"created on date: {time + timedelta(days=40):%Y-%m-%dT%H:%M:%S}.000"


def _gldas_begin(time: datetime) -> dict[str, str]:
    return {"begin_date": f"{time:%Y%m%d}", "begin_time": f"{time:%H%M%S}"}


def _gldas_range(values) -> dict[str, np.float32]:
    """vmin, vmax of a field's finite values (0, 0 for none or no field)."""
    values = np.zeros(0) if values is None else np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values)
    lo, hi = (values[ok].min(), values[ok].max()) if ok.any() else (0.0, 0.0)
    return {"vmin": np.float32(lo), "vmax": np.float32(hi)}


def _gldas_template() -> bytes:
    """The granule of 2000-01-01 03:00 without data (its vmin, vmax 0), written by netCDF-C."""
    return _template(_gldas_template_file, _gldas_netcdf, _nc_var)


def _gldas_template_file(path: str) -> None:
    _gldas_netcdf(path, _GLDAS_EPOCH, slice(0, 1), slice(0, 1), {})


def write_gldas(url, *, time: datetime, rows: slice, cols: slice, fields: Mapping[str, np.ndarray],
                storage_options=None) -> str:
    """One GLDAS_NOAH025_3H v2.1 granule (NetCDF-4, §5 layout): ``fields`` (SoilMoi0_10cm_inst in kg m-2,
    AvgSurfT_inst in K, or any other GLDAS variable) on the block (rows, cols) of GLDAS_GRID, NaN → -9999.

    The granule is the process's template ("netCDF-4 granules from a per-process template" above) with the
    time, the fields' vmin/vmax and their (1, 600, 1440) chunks, shuffled and deflated from cached pieces,
    filled in: the same file as ``_gldas_netcdf`` writes (~2 ms instead of ~40 ms).
    """
    block = _block_shape(rows, cols, GLDAS_GRID.shape)
    unknown = sorted(set(fields) - set(_GLDAS_VARS))
    if unknown:
        raise ValueError(f"GLDAS: unknown variable(s) {unknown}")
    f = _require(fields, list(fields), block, "GLDAS")
    name = granules.gldas_name(time)
    target = _destination(url, "gldas", name)
    minutes = (time - _GLDAS_EPOCH).total_seconds() / 60.0
    with _published(target, storage_options) as tmp, _from_template(tmp, _gldas_template()) as h5:
        _patch_attrs(h5, {"history": _gldas_history(time)})
        _patch_attrs(h5["time"], _gldas_begin(time))
        h5["time"][0] = minutes
        h5["time_bnds"][0] = [minutes - 180.0, minutes]
        for var, values in f.items():
            d = h5[var]
            _patch_attrs(d, _gldas_range(values))
            _write_window_chunks(d, rows, cols, _encode(values, GLDAS_FILL, np.float32), GLDAS_FILL)
    return target


# --- VIIRS HDF-EOS5 tiles (VNP21A1D/N, VNP15A2H) --------------------------------------------------------

_H5T_NAMES = {"u1": "H5T_NATIVE_UCHAR", "u2": "H5T_NATIVE_USHORT", "i2": "H5T_NATIVE_SHORT",
              "f4": "H5T_NATIVE_FLOAT", "i4": "H5T_NATIVE_INT"}
_VIIRS_DEFLATE = 4
# Real VIIRS chunking is not verified; 300 × 300 tiles keep granules small and fast to write (chunks
# outside the data's bounding box are never allocated) and let readers fetch only the window's chunks.
_VIIRS_CHUNKS = (300, 300)


def _struct_metadata(grid_name: str, tile: SinusoidalTile, fields: Mapping[str, np.dtype]) -> str:
    """HDF-EOS5 StructMetadata.0 (ODL) of one sinusoidal grid."""
    (ulx, uly), (lrx, lry) = tile.upper_left, tile.lower_right
    objects = "".join(
        f"\t\t\tOBJECT=DataField_{i}\n\t\t\t\tDataFieldName=\"{name}\"\n"
        f"\t\t\t\tDataType={_H5T_NAMES[np.dtype(dtype).str[1:]]}\n"
        "\t\t\t\tDimList=(\"YDim\",\"XDim\")\n\t\t\t\tMaxdimList=(\"YDim\",\"XDim\")\n"
        f"\t\t\t\tCompressionType=HE5_HDFE_COMP_DEFLATE\n\t\t\t\tDeflateLevel={_VIIRS_DEFLATE}\n"
        f"\t\t\tEND_OBJECT=DataField_{i}\n"
        for i, (name, dtype) in enumerate(fields.items(), start=1)
    )
    return (
        "GROUP=SwathStructure\nEND_GROUP=SwathStructure\nGROUP=GridStructure\n\tGROUP=GRID_1\n"
        f"\t\tGridName=\"{grid_name}\"\n\t\tXDim={tile.pixels}\n\t\tYDim={tile.pixels}\n"
        f"\t\tUpperLeftPointMtrs=({ulx:.6f},{uly:.6f})\n\t\tLowerRightMtrs=({lrx:.6f},{lry:.6f})\n"
        "\t\tProjection=HE5_GCTP_SNSOID\n"
        f"\t\tProjParams=({SINUSOIDAL_RADIUS:.6f},0,0,0,0,0,0,0,0,0,0,0,0)\n"
        "\t\tSphereCode=-1\n\t\tGridOrigin=HE5_HDFE_GD_UL\n"
        "\t\tGROUP=Dimension\n\t\tEND_GROUP=Dimension\n"
        f"\t\tGROUP=DataField\n{objects}\t\tEND_GROUP=DataField\n"
        "\t\tGROUP=MergedFields\n\t\tEND_GROUP=MergedFields\n\tEND_GROUP=GRID_1\nEND_GROUP=GridStructure\n"
        "GROUP=PointStructure\nEND_GROUP=PointStructure\nGROUP=ZaStructure\nEND_GROUP=ZaStructure\nEND\n"
    )


def _tile_bounds(tile: SinusoidalTile) -> dict[str, np.float32]:
    """Bounding coordinates (degrees) of a sinusoidal tile."""
    (ulx, uly), (lrx, lry) = tile.upper_left, tile.lower_right
    lat = np.degrees(np.array([uly, lry]) / SINUSOIDAL_RADIUS)
    widest = np.radians(np.abs(lat).max())
    lon = np.degrees(np.array([ulx, lrx]) / (SINUSOIDAL_RADIUS * np.cos(widest)))
    return {"NorthBoundingCoord": np.float32(lat[0]), "SouthBoundingCoord": np.float32(lat[1]),
            "WestBoundingCoord": np.float32(max(lon[0], -180.0)),
            "EastBoundingCoord": np.float32(min(lon[1], 180.0))}


def _write_hdfeos_tile(h5, *, grid_name: str, tile: SinusoidalTile, root_attrs: Mapping, box,
                       fields: Mapping[str, tuple[np.ndarray, Mapping]]) -> None:
    """The HDF-EOS5 layout of a VIIRS v002 tile product: StructMetadata.0, grid-level XDim/YDim dimension
    scales, Data Fields (attached to them, ``grid_mapping='Projection'``) and the root attributes.

    ``fields`` hold the stored values of the block ``box`` (row and column slices of the tile) only: the
    chunks outside it are never allocated and read as the fill value; ``box`` None writes no values.
    """
    _set_attrs(h5, {
        **root_attrs, "HORIZONTALTILENUMBER": f"{tile.h:02d}", "VERTICALTILENUMBER": f"{tile.v:02d}",
        "TileID": f"51{tile.h:03d}{tile.v:03d}", **_tile_bounds(tile)})
    info = h5.create_group("HDFEOS INFORMATION")
    _set_attrs(info, {"HDFEOSVersion": "HDFEOS_5.1.16"})
    odl = _struct_metadata(grid_name, tile, {k: v[0].dtype for k, v in fields.items()}).encode()
    info.create_dataset("StructMetadata.0", data=np.array(odl.ljust(32000, b"\0"), dtype="S32000"))
    h5.create_group("HDFEOS/ADDITIONAL/FILE_ATTRIBUTES")
    grid = h5.create_group(f"HDFEOS/GRIDS/{grid_name}")
    (ulx, uly) = tile.upper_left
    centres = (np.arange(tile.pixels) + 0.5) * tile.pixel_size
    scales = {}
    for axis, values in (("YDim", uly - centres), ("XDim", ulx + centres)):
        d = _h5_var(grid, axis, values, attrs={
            "standard_name": f"projection_{axis[0].lower()}_coordinate",
            "long_name": f"{axis[0].lower()} coordinate of projection", "units": "m"})
        d.make_scale(axis)
        scales[axis] = d
    data_fields = grid.create_group("Data Fields")
    proj = data_fields.create_dataset("Projection", data=np.zeros(1, np.int32))
    _set_attrs(proj, {"grid_mapping_name": "sinusoidal", "longitude_of_central_meridian": np.float64(0.0),
                      "false_easting": np.float64(0.0), "false_northing": np.float64(0.0),
                      "earth_radius": np.float64(SINUSOIDAL_RADIUS)})
    for name, (data, attrs) in fields.items():
        other = {k: a for k, a in attrs.items() if k != "_FillValue"} | {"grid_mapping": "Projection"}
        d = _h5_var(data_fields, name, shape=(tile.pixels, tile.pixels), dtype=data.dtype,
                    fill=attrs.get("_FillValue"), attrs=other, chunks=_VIIRS_CHUNKS, compression="gzip",
                    compression_opts=_VIIRS_DEFLATE)
        d.dims[0].attach_scale(scales["YDim"])
        d.dims[1].attach_scale(scales["XDim"])
        if box is not None:
            d[box] = data


def _bbox(mask: np.ndarray) -> tuple[slice, slice] | None:
    """Row and column slices of the smallest block holding every True cell (None if there is none)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _viirs_time_attrs(short: str, name: str, first: datetime, last: datetime) -> dict:
    produced = datetime.strptime(name.rsplit(".", 2)[-2], "%Y%j%H%M%S")
    version = granules.VIIRS_COLLECTION
    return {
        "ShortName": short, "LocalGranuleID": name, "VersionID": version, "ProcessVersion": version,
        "PlatformShortName": "SUOMI-NPP", "SensorShortname": "VIIRS", "SatelliteInstrument": "NPP_OPS",
        "Conventions": "CF-1.6", "identifier_product_doi": f"10.5067/VIIRS/{short}.{version}",
        "StartTime": f"{first:%Y-%m-%d} 00:00:00", "EndTime": f"{last:%Y-%m-%d} 23:59:59",
        "RangeBeginningDate": f"{first:%Y-%m-%d}", "RangeBeginningTime": "00:00:00.000",
        "RangeEndingDate": f"{last:%Y-%m-%d}", "RangeEndingTime": "23:59:59.000",
        "ProductionTime": f"{produced:%Y-%m-%d %H:%M:%S}.000",
    }


def _check_tile(tile: SinusoidalTile, pixels: int, arrays: Mapping[str, np.ndarray], what: str) -> None:
    if tile.pixels != pixels:
        raise ValueError(f"{what} tiles have {pixels} × {pixels} pixels, got a tile of {tile.pixels}")
    _require(arrays, list(arrays), (pixels, pixels), what)


def _scaled(long_name: str, units: str, dtype, fill, scale, offset, valid) -> dict:
    return {"long_name": long_name, "units": units, "valid_range": np.array(valid, dtype), "_FillValue": fill,
            "scale_factor": scale, "add_offset": offset}


def write_viirs_lst(url, *, tile: SinusoidalTile, day: datetime, day_or_night: str, lst: np.ndarray,
                    qc: np.ndarray, storage_options=None) -> str:
    """One VNP21A1D/VNP21A1N v002 tile (1200 × 1200, grid VIIRS_Grid_Daily_1km_LST21): ``lst`` in K
    (NaN → fill 0, scale 0.02) and the ``qc`` bit field; emissivities, view angle and time are plausible
    constants where LST exists."""
    if day_or_night not in ("D", "N"):
        raise ValueError(f"day_or_night must be 'D' or 'N', got {day_or_night!r}")
    _check_tile(tile, 1200, {"lst": lst, "qc": qc}, "VNP21A1")
    night = day_or_night == "N"
    short = f"VNP21A1{day_or_night}"
    name = granules.viirs_lst_name(day_or_night, day, tile.name)
    target = _destination(url, "viirs_lst", name)
    lst, qc = np.asarray(lst, dtype=np.float64), np.asarray(qc).astype(np.uint16)
    box = _bbox(np.isfinite(lst) | (qc != 0))
    sub = (slice(0, 0), slice(0, 0)) if box is None else box
    lst, qc = lst[sub], qc[sub]
    ok = np.isfinite(lst)

    def where_lst(values):
        return np.where(ok, values, np.nan)

    f32 = np.float32
    view_angle = 60.0 * np.arange(tile.pixels)[sub[1]] / tile.pixels  # 0 (nadir) … 60° across the tile
    fields = {
        "LST_1KM": (_encode(lst, 0, np.uint16, 0.02, valid=(7500, 65535)), _scaled(
            "Land Surface Temperature", "K", np.uint16, 0, f32(0.02), f32(0.0), (7500, 65535))),
        "QC": (qc, {"long_name": "Quality control for LST and emissivity", "units": "n/a",
                    "valid_range": np.array([0, 65535], np.uint16)}),
        **{band: (_encode(where_lst(e), 0, np.uint8, 0.002, 0.49, valid=(1, 255)), _scaled(
            f"Band {band[-2:]} emissivity", "n/a", np.uint8, 0, f32(0.002), f32(0.49), (1, 255)))
           for band, e in (("Emis_14", 0.975), ("Emis_15", 0.980), ("Emis_16", 0.972))},
        "View_Angle": (_encode(where_lst(view_angle), 255, np.uint8, 1.0, -65.0, (0, 130)), _scaled(
            "View zenith angle of LST", "degree", np.uint8, 255, f32(1.0), f32(-65.0), (0, 130))),
        "View_Time": (_encode(where_lst(1.5 if night else 13.5), 255, np.uint8, 0.1, valid=(0, 240)), _scaled(
            "Time of LST observation", "hrs", np.uint8, 255, f32(0.1), f32(0.0), (0, 240))),
    }
    root = _viirs_time_attrs(short, name, day, day) | {
        "LongName": "VIIRS/NPP Land Surface Temperature/Emissivity Daily L3 Global 1km SIN Grid "
                    + ("Night" if night else "Day"),
        "DataResolution": "1km", "DayNightFlag": "Night" if night else "Day"}
    with _published(target, storage_options) as tmp, h5py.File(tmp, "w") as h5:
        _write_hdfeos_tile(h5, grid_name="VIIRS_Grid_Daily_1km_LST21", tile=tile, root_attrs=root, box=box,
                           fields=fields)
    return target


def write_viirs_lai(url, *, tile: SinusoidalTile, period_start: datetime, lai: np.ndarray,
                    codes: np.ndarray | None = None, storage_options=None) -> str:
    """One VNP15A2H v002 tile (2400 × 2400, grid VIIRS_Grid_LAIFPAR): ``lai`` in m2/m2 (NaN → fill 255,
    scale 0.1); FPAR etc. follow from LAI. ``codes`` (optional, uint8): where 249–254 (non-vegetated
    classes), that code replaces every layer's value."""
    arrays = {"lai": lai} if codes is None else {"lai": lai, "codes": codes}
    _check_tile(tile, 2400, arrays, "VNP15A2H")
    name = granules.viirs_lai_name(period_start, tile.name)
    target = _destination(url, "viirs_lai", name)
    lai = np.asarray(lai, dtype=np.float64)
    special = np.zeros(lai.shape, np.uint8) if codes is None else np.asarray(codes)
    special = np.where((special >= 249) & (special <= 254), special, 0).astype(np.uint8)
    box = _bbox(np.isfinite(lai) | (special > 0))
    sub = (slice(0, 0), slice(0, 0)) if box is None else box
    lai, special = lai[sub], special[sub]
    fpar = 1.0 - np.exp(-0.5 * lai)

    def layer(values, scale, long_name, units):
        raw = np.where(special > 0, special, _encode(values, 255, np.uint8, scale, valid=(0, 100)))
        return raw, _scaled(long_name, units, np.uint8, 255, np.float64(scale), np.float64(0.0), (0, 100))

    qc = np.where(np.isfinite(lai), 0, 255).astype(np.uint8)
    qc_attrs = {"units": "class-flag", "valid_range": np.array([0, 254], np.uint8), "_FillValue": 255}
    fields = {
        "Fpar": layer(fpar, 0.01, "Fraction of Photosynthetically Active Radiation", "Percent"),
        "Lai": layer(lai, 0.1, "Leaf Area Index", "m^2/m^2"),
        "FparLai_QC": (qc, qc_attrs | {"long_name": "Quality for FPAR and LAI"}),
        "FparExtra_QC": (qc, qc_attrs | {"long_name": "Extra detail Quality for FPAR and LAI"}),
        "FparStdDev": layer(0.05 + 0.05 * fpar, 0.01, "Standard deviation of FPAR", "Percent"),
        "LaiStdDev": layer(0.1 + 0.15 * lai, 0.1, "Standard deviation of LAI", "m^2/m^2"),
    }
    root = _viirs_time_attrs("VNP15A2H", name, period_start, period_start + timedelta(days=7)) | {
        "LongName": "VIIRS/NPP Leaf Area Index/FPAR 8-Day L4 Global 500m SIN Grid", "DataResolution": "500m",
        "DayNightFlag": "Day"}
    with _published(target, storage_options) as tmp, h5py.File(tmp, "w") as h5:
        _write_hdfeos_tile(h5, grid_name="VIIRS_Grid_LAIFPAR", tile=tile, root_attrs=root, box=box,
                           fields=fields)
    return target


# --- LTDR AVHRR-Land v005 NDVI (AVH13C1) ---------------------------------------------------------------

NDVI_FILL = np.int16(-9999)
QA_FILL = np.int16(-32767)
_LTDR_CHUNKS = (1, 360, 720)


def _ltdr_coordinates() -> tuple[np.ndarray, np.ndarray]:
    """float32 cell centres, latitude descending: computed in float32 so that, as in the real files, the
    step is not exactly constant."""
    lat = np.float32(LTDR_GRID.lat_first) - np.arange(LTDR_GRID.shape[0], dtype=np.float32) * np.float32(0.05)
    lon = np.float32(LTDR_GRID.lon_first) + np.arange(LTDR_GRID.shape[1], dtype=np.float32) * np.float32(0.05)
    return lat, lon


def _ltdr_layers(ndvi: np.ndarray) -> dict[str, tuple[np.ndarray, np.int16, dict]]:
    """The stored values, fill and attributes of NDVI, TIMEOFDAY and QA on the block of ``ndvi``."""
    ok = np.isfinite(np.asarray(ndvi, dtype=np.float64))
    return {
        "NDVI": (_encode(ndvi, NDVI_FILL, np.int16, 0.0001, valid=(-1000, 10000)), NDVI_FILL, {
            "long_name": "NOAA Climate Data Record of Normalized Difference Vegetation Index",
            "standard_name": "normalized_difference_vegetation_index", "units": "1",
            "scale_factor": np.float32(0.0001), "add_offset": np.float32(0.0),
            "valid_range": np.array([-1000, 10000], np.int16), "grid_mapping": "crs"}),
        "TIMEOFDAY": (_encode(np.where(ok, 14.0, np.nan), NDVI_FILL, np.int16, 0.01), NDVI_FILL, {
            "long_name": "Time of the day of the observation", "units": "h",
            "scale_factor": np.float32(0.01), "add_offset": np.float32(0.0),
            "valid_range": np.array([0, 2400], np.int16), "grid_mapping": "crs"}),
        "QA": (np.where(ok, 0, QA_FILL).astype(np.int16), QA_FILL, {
            "long_name": "Quality Assurance", "units": "1", "valid_range": np.array([0, 32767], np.int16),
            "grid_mapping": "crs"}),
    }


def _ltdr_coverage(day: datetime) -> dict[str, str]:
    return {"time_coverage_start": f"{day:%Y-%m-%dT00:00:00Z}",
            "time_coverage_end": f"{day:%Y-%m-%dT23:59:59Z}"}


def _ltdr_days(day: datetime) -> float:
    return float((day - datetime(1981, 1, 1)).days)


def _ltdr_netcdf(path: str, day: datetime, rows: slice, cols: slice, ndvi: np.ndarray | None) -> None:
    """The granule written by the netCDF library itself: the template (``ndvi`` None: no data chunks) and
    the reference that the template-based granules equal."""
    lat, lon = _ltdr_coordinates()
    opts = {"chunksizes": _LTDR_CHUNKS, "zlib": True, "complevel": 4}
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.setncatts({
            "title": "NOAA Climate Data Record of AVHRR Normalized Difference Vegetation Index (NDVI), "
                     "Version 5",
            "Conventions": "CF-1.6, ACDD-1.3", "product_version": "v5", "platform": "NOAA-19",
            "sensor": "AVHRR",
            "institution": "NASA/GSFC/SED/ESD/HBSL/TIS/MODIS-LAND > MODIS Land Science Team",
            **_ltdr_coverage(day),
            "geospatial_lat_min": np.float32(-90.0), "geospatial_lat_max": np.float32(90.0),
            "geospatial_lon_min": np.float32(-180.0), "geospatial_lon_max": np.float32(180.0),
            "cdr_variable": "NDVI",
        })
        for dim, size in (("latitude", LTDR_GRID.shape[0]), ("longitude", LTDR_GRID.shape[1]), ("time", 1)):
            nc.createDimension(dim, size)
        for axis, values, units in (("latitude", lat, "degrees_north"), ("longitude", lon, "degrees_east")):
            _nc_var(nc, axis, "f4", (axis,), {"long_name": axis, "standard_name": axis, "units": units,
                                              "axis": axis[0].upper()})[:] = values
        _nc_var(nc, "time", "f4", ("time",), {
            "long_name": "time", "standard_name": "time", "units": "days since 1981-01-01 00:00:00",
            "axis": "T"})[:] = [_ltdr_days(day)]
        _nc_var(nc, "crs", "S1", (), {
            "grid_mapping_name": "latitude_longitude", "semi_major_axis": 6378137.0,
            "inverse_flattening": 298.257223563, "longitude_of_prime_meridian": 0.0})
        for var, (data, fill, attrs) in _ltdr_layers(np.zeros((0, 0)) if ndvi is None else ndvi).items():
            v = _nc_var(nc, var, "i2", ("time", "latitude", "longitude"), attrs, fill=fill, **opts)
            if ndvi is not None:
                v[0, rows, cols] = data


def _ltdr_template() -> bytes:
    """The granule of 1981-01-01 without data chunks, written by netCDF-C."""
    return _template(_ltdr_template_file, _ltdr_netcdf, _nc_var)


def _ltdr_template_file(path: str) -> None:
    _ltdr_netcdf(path, datetime(1981, 1, 1), slice(0, 1), slice(0, 1), None)


def write_ltdr_ndvi(url, *, day: datetime, rows: slice, cols: slice, ndvi: np.ndarray,
                    storage_options=None) -> str:
    """One AVHRR-Land v005 AVH13C1 daily granule (NetCDF-4, 3600 × 7200, latitude descending): ``ndvi`` on
    the block (rows, cols) of LTDR_GRID, NaN → -9999; chunks (1, 360, 720), so only the chunks that the
    block touches are allocated.

    As GLDAS: the process's template with the coverage attributes, the time and the touched chunks
    (shuffled and deflated from cached pieces) filled in, the same file as ``_ltdr_netcdf`` writes."""
    block = _block_shape(rows, cols, LTDR_GRID.shape)
    ndvi = _require({"ndvi": ndvi}, ["ndvi"], block, "LTDR NDVI")["ndvi"]
    name = granules.ltdr_ndvi_name(day)
    target = _destination(url, "ltdr_ndvi", name)
    with _published(target, storage_options) as tmp, _from_template(tmp, _ltdr_template()) as h5:
        _patch_attrs(h5, _ltdr_coverage(day))
        h5["time"][0] = _ltdr_days(day)
        for var, (data, fill, _) in _ltdr_layers(ndvi).items():
            _write_window_chunks(h5[var], rows, cols, data, fill)
    return target
