"""Reading only the shards that changed: each shard's scan result is kept under the pipeline
home, keyed by the shard's path, its fingerprint and the scan settings, and the posts table
is the merge of those results in shard order, exactly as a full read makes it.

    <folder>/<path id>-<version id>.rejects.parquet   the shard's rejects (written first)
    <folder>/<path id>-<version id>.posts.parquet     its posts, de-duplicated within the
                                                      shard, the scan's counts in the footer

An entry is complete when both files are there: each is written whole or not at all and the
posts file last, so a crash leaves at most a rejects file, which the next run rewrites. A
shard that broke part way is never cached (it is read again next run), an entry that cannot
be read is scanned again, and entries of shards that are gone (or of an older fingerprint, or
other settings) are deleted once the new posts table is written. Shards that could not even
be opened this run (``keep_paths``) keep their entries for when they can again.

The posts and rejects tables carry, in their footers, a digest of the entries they were
merged from: a run whose entries are all the same rewrites nothing and reads no entry.
"""

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.fs as pafs

from .filesystems import open_location
from .posts import (
    PostsScan,
    ScanParams,
    ShardScan,
    merge_scans,
    posts_table,
    reason_counts,
    rejects_table,
    rows_table,
    scan_shard,
)
from .tables import join, read_schema, read_table, write_table_atomic

# Part of every entry's key: bump it when the same bytes would scan differently (the image
# checks, the uuid, the split or the columns of a post change), so old entries are not used.
CACHE_FORMAT = 1
METADATA_KEY = b"imgsearch.posts"
POSTS_SUFFIX, REJECTS_SUFFIX = ".posts.parquet", ".rejects.parquet"

REUSED, NEW, CHANGED, DAMAGED = "reused", "new", "changed", "damaged"


def path_id(path: str) -> str:
    return hashlib.sha256(path.encode()).hexdigest()[:16]


def entry_name(shard: dict, params: ScanParams) -> str:
    """``<path id>-<version id>``: the version covers the fingerprint, the settings and the
    cache format, so a changed shard or setting never finds an old entry."""
    version = json.dumps([CACHE_FORMAT, shard["fingerprint"], asdict(params)], sort_keys=True)
    return f"{path_id(shard['path'])}-{hashlib.sha256(version.encode()).hexdigest()[:16]}"


@dataclass(frozen=True)
class CachePlan:
    """What a run does with each shard, in shard order (``REUSED``, or scanned as ``NEW``,
    ``CHANGED`` or ``DAMAGED``), and the cached files no current shard uses (deleted after
    the tables are written)."""

    params: ScanParams
    shards: list[dict]
    names: list[str]
    status: list[str]
    stale: list[str] = field(default_factory=list)
    removed: int = 0  # shards whose entries are all stale: gone from the dataset

    @property
    def to_scan(self) -> list[dict]:
        return [s for s, status in zip(self.shards, self.status, strict=True) if status != REUSED]

    @property
    def rows_to_scan(self) -> int:
        return sum(s["rows"] for s in self.to_scan)

    def entries_digest(self) -> str:
        """Names the set of entries a posts table is merged from (shard order included)."""
        return hashlib.sha256(json.dumps(self.names).encode()).hexdigest()[:32]


def plan_cache(shards: Sequence[dict], params: ScanParams, listing: Iterable[str],
               keep_paths: Iterable[str] = ()) -> CachePlan:
    """Compare the shards (``{"path", "rows", "fingerprint"}``) with the names of the files
    in the cache folder: a shard whose two files are there is reused, one with half an
    entry (a crash between its two writes) is damaged, one with files of another version
    has changed, one with none is new. Files of ``keep_paths`` (shards that could not be
    opened this run) are kept for when they can again."""
    listing = set(listing)
    names = [entry_name(shard, params) for shard in shards]
    cached = {name.split(".", 1)[0] for name in listing}
    cached_ids = {name.split("-", 1)[0] for name in cached}
    status = [REUSED if {n + POSTS_SUFFIX, n + REJECTS_SUFFIX} <= listing
              else DAMAGED if n in cached
              else CHANGED if path_id(s["path"]) in cached_ids else NEW
              for s, n in zip(shards, names, strict=True)]
    files = {n + suffix for n in names for suffix in (POSTS_SUFFIX, REJECTS_SUFFIX)}
    keep_ids = {path_id(p) for p in keep_paths}
    stale = sorted(n for n in listing if n not in files and n.split("-", 1)[0] not in keep_ids)
    gone = {n.split("-", 1)[0] for n in stale} - {path_id(s["path"]) for s in shards}
    return CachePlan(params, list(shards), names, status, stale, len(gone))


def list_entries(folder: str) -> list[str]:
    """The names of the cache's entry files (one listing); none when there is no folder."""
    filesystem, path = open_location(folder)
    infos = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(info.base_name for info in infos if info.type == pafs.FileType.File
                  and not info.base_name.startswith(".")
                  and info.base_name.endswith((POSTS_SUFFIX, REJECTS_SUFFIX)))


def delete_entries(folder: str, names: Iterable[str]) -> None:
    filesystem, path = open_location(folder)
    for name in names:
        with contextlib.suppress(FileNotFoundError):  # another run's sweep was first
            filesystem.delete_file(f"{path.rstrip('/')}/{name}")


def write_entry(folder: str, name: str, shard: dict, scan: ShardScan) -> None:
    """The rejects first, the posts (whose footer makes the entry) last."""
    write_table_atomic(rejects_table(scan.rejects), join(folder, name + REJECTS_SUFFIX))
    footer = {"format": CACHE_FORMAT, "shard": shard["path"],
              "fingerprint": shard["fingerprint"], "rows_read": scan.rows_read,
              "duplicates": scan.duplicates}
    table = rows_table(scan.posts).replace_schema_metadata(
        {METADATA_KEY: json.dumps(footer).encode()})
    write_table_atomic(table, join(folder, name + POSTS_SUFFIX))


def read_entry(folder: str, name: str, shard: dict) -> ShardScan | None:
    """The cached scan of a shard; None when the entry is missing, damaged or not this
    shard's (then the shard is scanned again)."""
    try:
        posts = read_table(join(folder, name + POSTS_SUFFIX))
        footer = json.loads((posts.schema.metadata or {})[METADATA_KEY])
        if (footer["format"], footer["shard"], footer["fingerprint"], footer["rows_read"]) != (
                CACHE_FORMAT, shard["path"], shard["fingerprint"], shard["rows"]):
            return None
        rejects = read_table(join(folder, name + REJECTS_SUFFIX))
        return ShardScan(shard["path"], posts.to_pylist(), rejects.to_pylist(),
                         int(footer["duplicates"]), int(footer["rows_read"]))
    except (OSError, pa.ArrowException, ValueError, KeyError, TypeError):
        return None


class _Digest:
    """A write-only file that hashes what is written to it (an IPC stream, not kept)."""

    closed = False

    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def write(self, data) -> int:
        self.hash.update(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True


def table_digest(*tables: pa.Table) -> str:
    """A digest of the tables' content (schema and values, not their footers)."""
    digest = _Digest()
    with pa.PythonFile(digest, mode="w") as sink:
        for table in tables:
            table = table.replace_schema_metadata(None).combine_chunks()  # chunking aside
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
    return digest.hash.hexdigest()[:32]


@dataclass
class Refresh:
    """What one run did: the posts table's figures, its data version, the shards scanned
    (by why), reused and removed, and the shards that broke part way."""

    figures: dict[str, int]
    reasons: dict[str, int]
    data_version: str
    read_failures: dict[str, str] = field(default_factory=dict)
    scanned: dict[str, list[str]] = field(default_factory=dict)  # NEW/CHANGED/DAMAGED -> paths
    reused: int = 0
    removed: int = 0
    rows_scanned: int = 0
    rewritten: bool = True  # False: the tables were already these entries' merge

    def summary(self) -> str:
        scanned = sum(len(paths) for paths in self.scanned.values())
        why = ", ".join(f"{len(paths)} {kind}" for kind, paths in self.scanned.items() if paths)
        return (f"{scanned} shard{'s' * (scanned != 1)} scanned" + (f" ({why})" if why else "")
                + f", {self.reused} reused, {self.removed} removed; "
                + f"{self.rows_scanned:,} rows scanned"
                + ("" if self.rewritten else "; the posts table is unchanged"))

    def metadata(self) -> dict[str, int]:
        return {"shards_scanned": sum(len(paths) for paths in self.scanned.values()),
                **{f"shards_{kind}": len(paths) for kind, paths in self.scanned.items()},
                "shards_reused": self.reused, "shards_removed": self.removed,
                "rows_scanned": self.rows_scanned}


def _footer(location: str) -> dict | None:
    try:
        return json.loads((read_schema(location).metadata or {})[METADATA_KEY])
    except (OSError, pa.ArrowException, ValueError, KeyError, TypeError):
        return None


def _unchanged(plan: CachePlan, posts_location: str, rejects_location: str) -> dict | None:
    """The posts table's footer when it and the rejects table are already the merge of
    exactly the plan's entries (so nothing needs reading or writing)."""
    if plan.to_scan:
        return None
    posts, rejects = _footer(posts_location), _footer(rejects_location)
    expected = plan.entries_digest()
    if (posts is None or rejects is None or posts.get("entries") != expected
            or rejects.get("entries") != expected
            or rejects.get("data_version") != posts.get("data_version")):
        return None
    return posts


def refresh_posts(
    plan: CachePlan,
    folder: str,
    batches: Callable[[str], Iterable[pa.RecordBatch]],
    posts_location: str,
    rejects_location: str,
    workers: int,
    on_rows: Callable[[int], None] = lambda n: None,
    on_error: Callable[[str], None] = lambda message: None,
) -> Refresh:
    """Scan the plan's new and changed shards (caching each complete one), merge every
    shard's result in shard order and write the posts and rejects tables: the same tables a
    full read (``scan_shards``) makes. Stale entries are deleted after the tables are written."""
    refresh = Refresh({}, {}, "", scanned={NEW: [], CHANGED: [], DAMAGED: []},
                      removed=plan.removed)
    done = _unchanged(plan, posts_location, rejects_location)
    if done is not None:
        refresh.figures, refresh.reasons = done["figures"], done["reasons"]
        refresh.data_version, refresh.reused, refresh.rewritten = (
            done["data_version"], len(plan.shards), False)
        delete_entries(folder, plan.stale)
        return refresh

    def results(pool) -> Iterator[ShardScan]:
        for shard, name, status in zip(plan.shards, plan.names, plan.status, strict=True):
            if status == REUSED:
                cached = read_entry(folder, name, shard)
                if cached is not None:
                    refresh.reused += 1
                    yield cached
                    continue
                status = DAMAGED  # unreadable, or not this shard's: scanned again
            scan = scan_shard(shard, batches, plan.params, pool, on_rows, on_error)
            refresh.scanned[status].append(shard["path"])
            refresh.rows_scanned += scan.rows_read
            if scan.failure is None and scan.rows_read == shard["rows"]:
                write_entry(folder, name, shard, scan)
            yield scan

    with ThreadPoolExecutor(max_workers=workers) as pool:
        merged: PostsScan = merge_scans(results(pool))
    posts, rejects = posts_table(merged.posts), rejects_table(merged.rejects)
    refresh.figures, refresh.reasons = merged.figures(), reason_counts(merged.rejects)
    refresh.read_failures = merged.read_failures
    refresh.data_version = table_digest(posts, rejects)
    # A table holding a shard that broke part way is no entry's merge: never reused as is.
    entries = None if merged.read_failures else plan.entries_digest()
    footer = {"entries": entries, "data_version": refresh.data_version}
    write_table_atomic(rejects.replace_schema_metadata(
        {METADATA_KEY: json.dumps(footer).encode()}), rejects_location)
    footer |= {"figures": refresh.figures, "reasons": refresh.reasons}
    write_table_atomic(posts.replace_schema_metadata(
        {METADATA_KEY: json.dumps(footer).encode()}), posts_location)
    delete_entries(folder, plan.stale)
    return refresh
