"""Kerchunk references of an archive's granules, persisted next to the archive and kept up to date
incrementally (`soilcube refs`); and the look-up that lets the readers reuse them.

Layout, for each product key (archive layout `<archive>/<product>/<file name>`):

    <archive>/refs/<product>/granules/<file name>.json   references of one granule (kerchunk JSON)
    <archive>/refs/<product>/combined-<digest>.json      the good granules stacked along time, for the
    <archive>/refs/<product>/combined-<digest>.parq/     products whose granules share one layout (SMAP L4,
                                                          GLDAS, LTDR); parquet once it is large
    <archive>/refs/<product>/index.csv                   the granule index, one row per granule
    <archive>/refs/<product>/rejected/<file name>.<digest>.json
                                                          a version of a granule (the digest of its size,
                                                          ETag and time) that a run found unreadable

The index is written last and is what readers trust: a run that dies half-way leaves the previous index
pointing at previous, complete objects. A combined set is named by a digest of its granules and is reused
only when the previous index names it, so a half-written one is never trusted. A granule is re-referenced
when its size, ETag or modification time differ from the index. Objects no index names are deleted once a
day old, not before: two builds may run at once (the NRT run's, one by hand), and the one that writes its
index first must not delete what the other's index will name. A run that finds a granule's data unreadable
records that in an object of its own rather than in the index, for the version of the file it checked, so
a build writing the index at the same time cannot lose it; `read_index` reads a rejection into the row of
that version (a newer version of the file is referenced anew).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
import uuid
from dataclasses import dataclass, field

import dask
import fsspec
import pandas as pd
from fsspec.implementations.local import LocalFileSystem
from kerchunk.df import refs_to_dataframe
from tqdm import tqdm

from soilcube import granules
from soilcube.grids import Region, Window
from soilcube.sources.base import Granule, GranuleError, Reader
from soilcube.sources.references import combine_along_time, reference_granule, split_combinable
from soilcube.sources.registry import READERS, reader

REFS_DIR = "refs"
INDEX_NAME = "index.csv"
REJECTED_DIR = "rejected"
INDEX_COLUMNS = (
    "name", "url", "time", "size", "etag", "mtime", "version", "status", "reason", "refs", "combined",
)
# Granules referenced per dask.compute: in parallel on a distributed client (h5py's lock makes threads
# useless), with progress reported between batches.
BATCH = 64
# Unindexed reference objects younger than this are kept (`_remove_unindexed`): a concurrent build may
# still be about to write the index that names them.
UNINDEXED_GRACE_S = 24 * 3600
# A combined set with at least this many references is written as parquet (kerchunk.df) instead of JSON:
# a year of SMAP L4 scenes is ~150 000 references, too many to parse as one JSON document on every open.
PARQUET_MIN_REFS = 50_000


@dataclass
class ProductReport:
    product: str
    granules: int = 0  # granules in the archive
    referenced: list[str] = field(default_factory=list)  # (re)referenced by this run
    reused: list[str] = field(default_factory=list)  # unchanged since the previous run
    failed: dict[str, str] = field(default_factory=dict)  # name → reason, every granule that cannot be read
    removed: list[str] = field(default_factory=list)  # gone from the archive since the previous run
    combined: str = ""  # URL of the combined reference set, if the product has one

    def row(self) -> dict:
        return {"product": self.product, "granules": self.granules, "referenced": len(self.referenced),
                "reused": len(self.reused), "failed": len(self.failed), "removed": len(self.removed)}


@dataclass
class RefsReport:
    archive: str
    products: dict[str, ProductReport] = field(default_factory=dict)

    @property
    def failed(self) -> dict[str, str]:
        """'<product>/<file name>' → reason, for every granule that cannot be read."""
        return {f"{p}/{name}": reason for p, r in self.products.items() for name, reason in r.failed.items()}

    @property
    def newly_failed(self) -> dict[str, str]:
        """`failed`, less the granules an earlier run had already found unreadable (unchanged since)."""
        return {f"{p}/{name}": reason for p, r in self.products.items() for name, reason in r.failed.items()
                if name not in r.reused}

    def rows(self) -> list[dict]:
        return [r.row() for r in self.products.values()]


SIGNATURE_KEYS = ("size", "etag", "mtime")


def signature(info: dict) -> dict[str, str]:
    """What tells a changed granule from an unchanged one: size, ETag (S3) and modification time, as text
    (the index is CSV)."""
    mtime = info.get("mtime", info.get("LastModified", ""))
    return {"size": str(int(info["size"])), "etag": str(info.get("ETag", "")).strip('"'),
            "mtime": mtime.isoformat() if hasattr(mtime, "isoformat") else str(mtime)}


def signature_digest(version: dict) -> str:
    """A short digest of a file version's signature (size, ETag, time): names the version in rejection
    records and in the provenance of the cubes made from it."""
    return hashlib.sha1(" ".join(version[k] for k in SIGNATURE_KEYS).encode()).hexdigest()[:12]


def _unchanged(row: dict, info: dict) -> bool:
    return _same_version(row, signature(info))


def _same_version(row: dict, other: dict) -> bool:
    return all(row[k] == other[k] for k in SIGNATURE_KEYS)


def _rejected_version(row: dict, rejection: dict) -> bool:
    """Whether a rejection record covers the version of the file that index `row` describes."""
    return any(_same_version(row, version) for version in rejection["versions"])


class Archive:
    """One archive on its filesystem (file:// or s3://)."""

    def __init__(self, url: str, storage_options: dict | None = None):
        self.url = url.rstrip("/")
        self.storage_options = storage_options or {}
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **self.storage_options)

    def refs_dir(self, product: str) -> str:
        return f"{self.root}/{REFS_DIR}/{product}"

    def refs_url(self, product: str, name: str) -> str:
        return self.fs.unstrip_protocol(f"{self.refs_dir(product)}/{name}")

    def index_path(self, product: str) -> str:
        return f"{self.refs_dir(product)}/{INDEX_NAME}"

    def holds(self, product: str) -> bool:
        """Whether the archive has a folder or a reference index of `product` (no listing)."""
        return self.fs.exists(f"{self.root}/{product}") or self.fs.exists(self.index_path(product))

    def list_granules(self, product: str) -> dict[str, dict]:
        """File name → fsspec info of every file in <archive>/<product>/."""
        path = f"{self.root}/{product}"
        self.fs.invalidate_cache(path)  # s3fs caches listings; granules arrive between calls
        try:
            infos = self.fs.ls(path, detail=True)
        except FileNotFoundError:
            return {}
        return {info["name"].rsplit("/", 1)[-1]: info for info in infos if info["type"] == "file"}

    def read_index(self, product: str) -> dict[str, dict]:
        """File name → index row (all values text), empty if the product was never referenced; a granule
        rejected in the version of the file that its row describes reads as failed, with the reason."""
        path = self.index_path(product)
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError:
            return {}
        # the csv module, not pandas: its rows are the dicts wanted here, 2.4× faster at 110k granules
        rows = {row["name"]: row for row in csv.DictReader(io.StringIO(data.decode()))}
        for rejection in self.rejections(product).values():
            row = rows.get(rejection["name"])
            if row is not None and _rejected_version(row, rejection):
                row.update(status="failed", reason=rejection["reason"], refs="", combined="")
        return rows

    def rejections(self, product: str) -> dict[str, dict]:
        """Path → rejection record (name, the signatures of the versions it covers, reason). A record that
        a concurrent build deletes between listing and reading (a stale one) is left out."""
        folder = f"{self.refs_dir(product)}/{REJECTED_DIR}"
        self.fs.invalidate_cache(folder)
        try:
            # records only: not a local write's partial file, nor an emptied folder that an S3 server lists
            paths = sorted(info["name"] for info in self.fs.ls(folder, detail=True)
                           if info["type"] == "file" and info["name"].endswith(".json"))
        except FileNotFoundError:
            return {}
        return self.load_json(paths, missing_ok=True)

    def write_rejection(self, product: str, name: str, unreadable: Unreadable) -> None:
        """Record that a granule is unreadable in the versions `unreadable` covers (an object of its own per
        version checked)."""
        digest = signature_digest(unreadable.versions[0])
        record = {"name": name, "versions": list(unreadable.versions), "reason": unreadable.reason}
        self.put(f"{self.refs_dir(product)}/{REJECTED_DIR}/{name}.{digest}.json", json.dumps(record).encode())

    def write_index(self, product: str, rows: dict[str, dict]) -> None:
        """Replace the product's index with `rows` (file name → row), in one atomic write."""
        table = pd.DataFrame(list(rows.values()), columns=list(INDEX_COLUMNS))
        self.put(self.index_path(product), table.to_csv(index=False).encode())

    def put(self, path: str, data: bytes) -> None:
        """Write one object whole: a local file by atomic rename, an S3 object by one PUT (atomic)."""
        if isinstance(self.fs, LocalFileSystem):
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            partial = f"{path}.partial-{uuid.uuid4().hex}"
            self.fs.pipe_file(partial, data)
            os.replace(partial, path)
        else:
            self.fs.pipe_file(path, data)

    def load_json(self, paths: list[str], missing_ok: bool = False) -> dict[str, dict]:
        """Path → parsed JSON, fetched together (concurrently on S3); with `missing_ok`, an object gone
        since it was listed is left out."""
        found = self.fs.cat(paths, on_error="return") if paths else {}
        loaded = {}
        for path, data in found.items():
            if isinstance(data, FileNotFoundError) and missing_ok:
                continue
            if isinstance(data, Exception):
                raise data
            try:
                loaded[path] = json.loads(data)
            except ValueError as e:
                raise ValueError(f"{path}: not JSON ({e})") from None
        return loaded


def read_index(archive_url: str, product: str, storage_options: dict | None = None) -> pd.DataFrame:
    """The granule index of one product: name, url, time, size, etag, mtime, version, status, reason, refs
    (per-granule JSON, relative to <archive>/refs/<product>/), combined (the combined set holding it) and
    signature (`signature_digest` of the file version)."""
    rows = Archive(archive_url, storage_options).read_index(product)
    table = pd.DataFrame(list(rows.values()), columns=list(INDEX_COLUMNS))
    return table.astype({"size": "int64"}).assign(time=pd.to_datetime(table["time"].replace("", None)),
                                                  signature=[signature_digest(r) for r in rows.values()])


def granule_versions(
    archive_url: str, product: str, storage_options: dict | None = None, first=None, last=None
) -> dict[str, str]:
    """URL → signature digest of the readable granules (per the reference index) whose file-name time lies
    in [first, last]."""
    index = read_index(archive_url, product, storage_options)  # `time` is datetime there
    ok = index[index["status"] == "ok"]
    if first is not None:
        ok = ok[ok["time"] >= pd.Timestamp(first)]
    if last is not None:
        ok = ok[ok["time"] <= pd.Timestamp(last)]
    return dict(zip(ok["url"], ok["signature"], strict=True))


def granule_urls(
    archive_url: str, product: str, storage_options: dict | None = None, first=None, last=None
) -> list[str]:
    """URLs of readable granules (per the reference index) whose file-name time lies in [first, last]."""
    return list(granule_versions(archive_url, product, storage_options, first, last))


@dataclass(frozen=True)
class Unreadable:
    """A granule found missing or unreadable: why, and the versions of the file (`signature`s) the verdict
    covers: the one checked (the file listed, or for a vanished file the one the index describes) and the
    one the index described then, if it differs (the file changed since it was referenced: runs still read
    the URL from that row). Empty when the file is neither listed nor indexed."""

    reason: str
    versions: tuple[dict[str, str], ...]


def unreadable_granules(product: str, urls: list[str], storage_options: dict | None = None, *,
                        windows: list[Window | Region | None] | None = None,
                        variables: list[str] | None = None) -> dict[str, Unreadable]:
    """URL → `Unreadable` for each of `urls` that is missing or whose data cannot be read: each granule is
    opened through the product's reader and read on each of `windows` (default: whole), `variables` only
    (default: all), as a run reads it (a header can be fine while a data block is corrupt). Damage where
    the run does not read, another array or outside its windows, does not count: the granule still serves.
    Swath products (SMAP L2) need a window: a half orbit with no cell on the grid cannot be read whole.

    A network or server error (`transient`) is raised, not blamed on the file."""
    product_reader = reader(product)
    persisted = PersistedReferences(product_reader, urls, storage_options)
    bad = {}
    for url in urls:
        try:
            [granule] = persisted.granules([url])
            for area in windows or [None]:
                window = product_reader.window_for(area)
                product_reader.open([granule], storage_options, window, variables).load()
        except GranuleError as e:
            bad[url] = e.reason
        except Exception as e:
            if transient(e):
                raise
            if any(isinstance(cause, FileNotFoundError) for cause in _causes(e)):
                bad[url] = "file does not exist"
            else:  # a codec, a size or a format error: the file's bytes are bad
                bad[url] = f"unreadable data ({type(e).__name__}: {e})"
    return {url: Unreadable(reason, persisted.versions(url)) for url, reason in bad.items()}


def transient(error: BaseException) -> bool:
    """Whether an error comes from the network or the server rather than from a file's bytes: an OSError
    other than a missing file anywhere in its chain (fsspec's reference filesystem wraps what the store
    raised in a RuntimeError)."""
    return any(isinstance(cause, OSError) and not isinstance(cause, FileNotFoundError)
               for cause in _causes(error))


def _causes(error: BaseException) -> list[BaseException]:
    """The error and the errors it was raised from or while handling, innermost last."""
    chain = [error]
    while (cause := chain[-1].__cause__ or chain[-1].__context__) is not None and cause not in chain:
        chain.append(cause)
    return chain


def reject_granules(archive_url: str, product: str, bad: dict[str, Unreadable],
                    storage_options: dict | None = None) -> None:
    """Mark the checked versions of granules (URL → `Unreadable`, from `unreadable_granules`) failed, so
    runs read them as missing: a rejection record per version. They stay failed until the file changes (a
    new size, ETag or time): `build_references` then references it anew. The index itself is not
    rewritten, so a build running meanwhile loses neither its rows nor the rejection."""
    archive = Archive(archive_url, storage_options)
    for url, unreadable in bad.items():
        if unreadable.versions:  # (a file neither listed nor indexed: no run reads it)
            archive.write_rejection(product, url.rsplit("/", 1)[-1], unreadable)


def build_references(archive_url: str, products: list[str] | None = None, storage_options: dict | None = None,
                     progress: bool = True) -> RefsReport:
    """Reference every granule of the archive, incrementally: new granules are referenced, changed ones
    re-referenced, unchanged ones reused; unreadable ones are reported (name → reason) and skipped. An
    archive with neither folders nor references of any of `products` is an error (nothing is written)."""
    archive = Archive(archive_url, storage_options)
    readers = [reader(product) for product in products or list(READERS)]  # unknown names fail before any work
    # a mistyped URL (or a product's folder) must not become an empty archive
    if not any(archive.holds(r.product) for r in readers):
        raise FileNotFoundError(
            f"{archive.url} holds no granules or references of {', '.join(r.product for r in readers)}: "
            "is it the archive's root?"
        )
    report = RefsReport(archive.url)
    for product_reader in readers:
        report.products[product_reader.product] = _update_product(archive, product_reader, progress)
    return report


def _update_product(archive: Archive, reader: Reader, progress: bool) -> ProductReport:
    product = reader.product
    listing = archive.list_granules(product)
    previous = archive.read_index(product)
    report = ProductReport(product, granules=len(listing), removed=sorted(set(previous) - set(listing)))
    rows: dict[str, dict] = {}
    fresh: dict[str, dict] = {}  # name → references made by this run
    for name, info in sorted(listing.items()):
        if name in previous and _unchanged(previous[name], info):
            rows[name] = previous[name]
            report.reused.append(name)
    todo = [name for name in sorted(listing) if name not in rows]
    with tqdm(total=len(todo), desc=f"referencing {product}", unit="granule", disable=not progress) as bar:
        for start in range(0, len(todo), BATCH):
            batch = todo[start : start + BATCH]
            made = dask.compute(*(dask.delayed(_reference_and_store)(archive, reader, listing[name])
                                  for name in batch))
            for name, (row, refs) in zip(batch, made, strict=True):
                rows[name] = row
                if refs is not None:
                    fresh[name] = refs
                    report.referenced.append(name)
            bar.update(len(batch))
    if reader.combines_along_time:
        report.combined = _combine(archive, reader, rows, fresh, {r["combined"] for r in previous.values()})
    archive.write_index(product, rows)
    report.failed = {name: row["reason"] for name, row in rows.items() if row["status"] != "ok"}
    _remove_unindexed(archive, product, rows)
    return report


def _reference_and_store(archive: Archive, reader: Reader, info: dict) -> tuple[dict, dict | None]:
    """The index row of a new or changed granule, and its references (stored as JSON), or None if the
    granule cannot be read (the row says why)."""
    name = info["name"].rsplit("/", 1)[-1]
    url = archive.fs.unstrip_protocol(info["name"])
    row = {"name": name, "url": url, "time": "", **signature(info), "version": reader.version(name),
           "status": "ok", "reason": "", "refs": "", "combined": ""}
    try:
        row["time"] = str(granules.parse(reader.product, name).time)
        refs = reference_granule(reader, url, archive.storage_options)
    except GranuleError as e:
        row.update(status="failed", reason=e.reason)
        return row, None
    except ValueError as e:  # the file name does not parse
        row.update(status="failed", reason=str(e))
        return row, None
    row["refs"] = f"granules/{name}.json"
    archive.put(f"{archive.refs_dir(reader.product)}/{row['refs']}", json.dumps(refs).encode())
    return row, refs


def _combine(archive: Archive, reader: Reader, rows: dict[str, dict], fresh: dict[str, dict],
             previous_sets: set[str]) -> str:
    """Stack the good granules along time into one reference set (unless the previous index already names
    the same set); granules that cannot join it (another layout, a time already taken) are marked failed.
    Returns its URL."""
    refs_dir = archive.refs_dir(reader.product)
    good = {name: row for name, row in rows.items() if row["status"] == "ok"}
    for row in rows.values():
        row["combined"] = ""
    if not good:
        return ""
    stored = archive.load_json([f"{refs_dir}/{row['refs']}" for n, row in good.items() if n not in fresh])
    candidates = [
        Granule(row["url"], granules.parse(reader.product, name),
                fresh.get(name) or stored[f"{refs_dir}/{row['refs']}"])
        for name, row in good.items()
    ]
    agreeing, odd = split_combinable(reader, candidates)
    for g in candidates:
        if g.url in odd:
            rows[g.name.name].update(status="failed", reason=odd[g.url], refs="")
    digest = hashlib.sha1("\n".join(
        " ".join(rows[g.name.name][k] for k in ("name", "size", "etag", "mtime")) for g in agreeing
    ).encode()).hexdigest()[:16]
    stem = f"combined-{digest}"
    name = next((n for n in (f"{stem}.json", f"{stem}.parq") if n in previous_sets), None)
    if name is None:
        combined = combine_along_time(reader, agreeing)
        if len(combined["refs"]) >= PARQUET_MIN_REFS:
            name = f"{stem}.parq"
            url = archive.refs_url(reader.product, name)
            refs_to_dataframe(combined, url, storage_options=archive.storage_options)
        else:
            name = f"{stem}.json"
            archive.put(f"{refs_dir}/{name}", json.dumps(combined).encode())
    for g in agreeing:
        rows[g.name.name]["combined"] = name
    return archive.refs_url(reader.product, name)


def _remove_unindexed(archive: Archive, product: str, rows: dict[str, dict]) -> None:
    """After the index is written: delete reference objects it does not name (removed or failed granules,
    superseded combined sets, rejections of versions of files it no longer holds, leftovers of interrupted
    runs) once they are `UNINDEXED_GRACE_S` old. A younger one may belong to a build running at the same
    time (the NRT run's, a `soilcube refs` by hand) whose index, written after this one, names it."""
    fs, refs_dir = archive.fs, archive.refs_dir(product)
    fs.invalidate_cache(refs_dir)
    keep = {f"{refs_dir}/{row['refs']}" for row in rows.values() if row["refs"]}
    keep |= {f"{refs_dir}/{row['combined']}" for row in rows.values() if row["combined"]}
    keep |= {path for path, rejection in archive.rejections(product).items()
             if rejection["name"] in rows and _rejected_version(rows[rejection["name"]], rejection)}
    folders = [f"{refs_dir}/granules", f"{refs_dir}/{REJECTED_DIR}"]
    keep |= {f"{refs_dir}/{INDEX_NAME}", *folders}
    unindexed = [info for info in fs.ls(refs_dir, detail=True) if info["name"].rstrip("/") not in keep]
    for folder in folders:
        fs.invalidate_cache(folder)  # fresh write times: an object written since the listings above is young
        if fs.exists(folder):
            unindexed += [info for info in fs.ls(folder, detail=True) if info["name"] not in keep]
    now = time.time()
    for info in unindexed:
        if now - _newest_write(fs, info) >= UNINDEXED_GRACE_S:
            try:
                fs.rm(info["name"], recursive=True)
            except FileNotFoundError:  # a concurrent build deleted it first
                pass


def _newest_write(fs, info: dict) -> float:
    """When an object (or the newest object of a folder, e.g. a parquet set) was last written, in seconds
    since the epoch; now where the filesystem does not say."""
    infos = list(fs.find(info["name"], detail=True).values()) if info["type"] == "directory" else [info]
    times = []
    for entry in infos:
        written = entry.get("mtime", entry.get("LastModified"))
        if written is None:
            return time.time()
        times.append(written.timestamp() if hasattr(written, "timestamp") else float(written))
    return max(times, default=time.time())


class PersistedReferences:
    """What an archive's index says about some granule URLs: the references to reuse for granules that
    have not changed since they were referenced. URLs outside the archive layout get none."""

    def __init__(self, reader: Reader, urls: list[str], storage_options: dict | None = None):
        self.reader = reader
        self.storage_options = storage_options or {}
        self.names: dict[str, granules.GranuleName] = {}
        self.rows: dict[str, dict] = {}  # url → index row of an unchanged granule
        self.listed: dict[str, dict] = {}  # url → signature of the file listed
        self.indexed: dict[str, dict] = {}  # url → signature of its index row
        self.archives: dict[str, Archive] = {}  # url → its archive
        for url in urls:
            try:
                self.names[url] = granules.parse(reader.product, url)
            except ValueError as e:
                raise GranuleError(url, str(e)) from None
        parents = {url.rsplit("/", 1)[0] for url in urls}
        for parent in parents:
            archive_url, folder = parent.rsplit("/", 1)
            archive = Archive(archive_url, self.storage_options)
            listing = archive.list_granules(folder)
            index = archive.read_index(reader.product) if folder == reader.product else {}
            for url in [u for u in urls if u.rsplit("/", 1)[0] == parent]:
                name = url.rsplit("/", 1)[1]
                if name in index:
                    self.indexed[url] = {k: index[name][k] for k in SIGNATURE_KEYS}
                if name in listing:
                    self.listed[url] = signature(listing[name])
                    if name in index and _unchanged(index[name], listing[name]):
                        self.rows[url], self.archives[url] = index[name], archive

    def versions(self, url: str) -> tuple[dict[str, str], ...]:
        """The versions of a granule's file that a check of it now covers (`Unreadable.versions`)."""
        found = [v for v in (self.listed.get(url), self.indexed.get(url)) if v is not None]
        return tuple(v for k, v in enumerate(found) if v not in found[:k])

    def combined(self, urls: list[str]) -> dict | str | None:
        """The persisted combined set holding all `urls` (a dict for JSON, the URL of a parquet set), if
        every one of them is unchanged and in it."""
        if not self.reader.combines_along_time or not all(url in self.rows for url in urls):
            return None
        sets = {(id(self.archives[url]), self.rows[url]["combined"]) for url in urls}
        if len(sets) != 1 or not self.rows[urls[0]]["combined"]:
            return None
        archive, name = self.archives[urls[0]], self.rows[urls[0]]["combined"]
        if name.endswith(".parq"):
            return archive.refs_url(self.reader.product, name)
        path = f"{archive.refs_dir(self.reader.product)}/{name}"
        return archive.load_json([path])[path]

    def granules(self, urls: list[str]) -> list[Granule]:
        """Granules with references: persisted ones where unchanged, made on the fly otherwise."""
        paths = {url: f"{self.archives[url].refs_dir(self.reader.product)}/{self.rows[url]['refs']}"
                 for url in urls if url in self.rows and self.rows[url]["status"] == "ok"}
        # one concurrent fetch: the URLs of one call share a filesystem
        loaded = next(iter(self.archives.values())).load_json(list(paths.values())) if paths else {}
        stored = {url: loaded[path] for url, path in paths.items()}
        out = []
        for url in urls:
            if url not in self.listed:
                raise GranuleError(url, "file does not exist")
            row = self.rows.get(url)
            if row is not None and row["status"] != "ok":
                raise GranuleError(url, row["reason"])
            refs = stored.get(url) or reference_granule(self.reader, url, self.storage_options)
            out.append(Granule(url, self.names[url], refs))
        return out
