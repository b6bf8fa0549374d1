"""Checksum manifests: a file is trusted only if its bytes match what was written.

A manifest is a small JSON file beside the files it covers: ``{"algorithm": "sha256",
"files": {name: {"sha256": ..., "bytes": ...}}}``, written atomically *after* them, so a
crash never leaves a manifest that vouches for a half-written file. An index version has one
``manifest.json`` for its folder; an embeddings part ``part-X.parquet`` has its own
``part-X.parquet.manifest.json`` (parts are written one by one, so each carries its own).

Errors name the file by its name inside the folder and say why, never a server path.

Many processes check the same files: each run, each ``dagster asset materialize`` of a
step, the API. Each used to hash the same bytes again (an index version is ~4 GB at 1M
vectors: seconds each time). A local
folder verified in full therefore gets a marker (``.<manifest>.verified``) recording each
file's size, mtime, ctime, inode and device as they were hashed; a later verification that
finds all of them unchanged trusts the earlier hash (see ``verify_manifest``).
"""

import contextlib
import hashlib
import json
import os
import posixpath
import time
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from .filesystems import open_location
from .layout import is_uri
from .tables import (
    Location,
    atomic_path,
    base_name,
    file_size,
    join,
    open_input,
    read_text,
    write_text_atomic,
)

MANIFEST = "manifest.json"
_CHUNK = 1 << 20


class IntegrityError(ValueError):
    """A file that does not match its manifest (or has none); ``file`` is a bare name."""

    def __init__(self, file: str, reason: str):
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason


def file_sha256(location: Location) -> str:
    """The SHA-256 of a file's bytes, local or on the object store (read in chunks)."""
    digest = hashlib.sha256()
    with open_input(location) as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _entry(location: Location) -> dict:
    return {"sha256": file_sha256(location), "bytes": file_size(location)}


# A file that later versions share or extend (an index version's float vectors: hard-linked
# by the next, or merged into a longer file that starts with its bytes) is checksummed in
# chunks of this size, each recorded, so that a version starting with it reuses the hashes of
# its whole chunks (3.1 GB: 2.3 s of SHA-256 from the page cache here, measured) and
# hashes only what it added.
CHUNK_BYTES = 64 << 20


def chunk_sha256s(location: Location, start_chunk: int = 0,
                  chunk_bytes: int = CHUNK_BYTES) -> list[str]:
    """The SHA-256 of each ``chunk_bytes`` of a file (the last may be shorter), from chunk
    ``start_chunk`` on."""
    hashes = []
    filesystem, path = open_location(os.fspath(location))
    with filesystem.open_input_file(path) as handle:
        handle.seek(start_chunk * chunk_bytes)
        while True:
            digest, left = hashlib.sha256(), chunk_bytes
            while left and (data := handle.read(min(_CHUNK, left))):
                digest.update(data)
                left -= len(data)
            if left == chunk_bytes:
                return hashes
            hashes.append(digest.hexdigest())


def _chunked_entry(location: Location, prefix: dict | None) -> dict:
    """A chunked entry; ``prefix``: the entry of a file whose bytes this one starts with (the
    caller copied them from that verified file), whose whole chunks are not hashed again.
    Any copy that went wrong is still found: the first check hashes every chunk."""
    size, step = file_size(location) or 0, CHUNK_BYTES
    known: list[str] = []
    if prefix and prefix.get("chunk_bytes") == step and "chunk_sha256" in prefix:
        known = list(prefix["chunk_sha256"][: min(int(prefix["bytes"]), size) // step])
    return {"chunk_sha256": known + chunk_sha256s(location, len(known), step),
            "chunk_bytes": step, "bytes": size}


def write_manifest(folder: Location, names: Iterable[str], manifest: str = MANIFEST,
                   chunked: dict[str, dict | None] | None = None) -> Location:
    """Checksum ``names`` (files in ``folder``) into ``folder/manifest`` atomically; those in
    ``chunked`` chunk by chunk (``_chunked_entry``: the value is the entry of the file it
    starts with, or None)."""
    chunked = chunked or {}
    files = {name: _chunked_entry(join(folder, name), chunked[name]) if name in chunked
             else _entry(join(folder, name)) for name in sorted(names)}
    return write_text_atomic(json.dumps({"algorithm": "sha256", "files": files}, indent=1),
                             join(folder, manifest))


def manifest_entries(folder: Location, manifest: str = MANIFEST) -> dict[str, dict]:
    """The entries a manifest lists, unchecked (see ``verify_manifest``)."""
    return json.loads(read_text(join(folder, manifest)))["files"]


def verify_manifest(folder: Location, manifest: str = MANIFEST,
                    remember: bool = False) -> dict[str, dict]:
    """Check every file the manifest lists; IntegrityError naming the first bad one.

    With ``remember`` (local folders only), a full check records its files' stat in a marker
    and a later check whose files all still match it hashes nothing (``_remembered``)."""
    try:
        text = read_text(join(folder, manifest))
        listed = json.loads(text)["files"]
        if not isinstance(listed, dict) or not listed:
            raise ValueError
    except FileNotFoundError:
        raise IntegrityError(manifest, "missing (written before checksums, or damaged): "
                                       "re-run the pipeline to rebuild it") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise IntegrityError(manifest, "unreadable") from None
    for name, expected in listed.items():
        if "/" in name or "\\" in name or name.startswith(".") or not isinstance(expected, dict):
            raise IntegrityError(manifest, "lists an invalid entry")
    remember = remember and not is_uri(os.fspath(folder))
    if remember and _remembered(folder, manifest, text, listed):
        return listed
    started_ns = time.time_ns()
    seen: dict[str, list[int]] = {}
    for name, expected in listed.items():
        path = join(folder, name)
        if remember:
            seen[name] = _stat(path) or []
        size = file_size(path)
        if size is None:
            raise IntegrityError(name, "missing")
        if size != expected.get("bytes"):
            raise IntegrityError(name, f"size {size:,} bytes, manifest says {expected.get('bytes')}")
        if "chunk_sha256" in expected:
            step = expected.get("chunk_bytes")
            matches = (isinstance(step, int) and step > 0
                       and chunk_sha256s(path, chunk_bytes=step) == expected["chunk_sha256"])
        else:
            matches = file_sha256(path) == expected.get("sha256")
        if not matches:
            raise IntegrityError(name, "checksum mismatch (the file was changed or damaged)")
    if remember:
        _remember(folder, manifest, text, seen, started_ns)
    return listed


# A file changed within this long before its hash began is not remembered: a write in the
# same timestamp tick as the stat taken (ext4 without nanosecond inodes: 1 s; otherwise the
# kernel's coarse clock, a few ms) would leave its stat unchanged ("racily clean", as git
# calls it); such a file is hashed again next time.
RACY_NS = 2 * 10**9


def verified_marker_name(manifest: str = MANIFEST) -> str:
    return f".{manifest}.verified"


def _stat(path: str) -> list[int] | None:
    """What any write, truncation, replacement or ``utime`` through the file system changes
    (ctime cannot be set back by a program); None when there is no file."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return [found.st_size, found.st_mtime_ns, found.st_ctime_ns, found.st_ino, found.st_dev]


def _remember(folder: Location, manifest: str, text: str, seen: dict[str, list[int]],
              started_ns: int) -> None:
    """Record the files just hashed, unless one changed while (or just before) it was."""
    for name, before in seen.items():
        if _stat(join(folder, name)) != before or before[2] > started_ns - RACY_NS:
            return
    record = {"manifest_sha256": hashlib.sha256(text.encode()).hexdigest(), "files": seen}
    # a read-only folder: verified all the same, hashed again next time
    with contextlib.suppress(OSError):
        write_text_atomic(json.dumps(record), join(folder, verified_marker_name(manifest)))


def _remembered(folder: Location, manifest: str, text: str, listed: dict) -> bool:
    """Whether a marker vouches for exactly this manifest and every file it lists is as it
    was hashed. What this cannot see: bytes changed beneath the file system (media errors,
    writes to the raw device) after the first full check, and a clock set back across a
    write; a process that loaded the bytes earlier would not see those either."""
    try:
        record = json.loads(read_text(join(folder, verified_marker_name(manifest))))
        if record["manifest_sha256"] != hashlib.sha256(text.encode()).hexdigest():
            return False
        files = record["files"]
        return set(files) == set(listed) and all(
            _stat(join(folder, name)) == files[name] for name in listed)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def part_manifest_name(part: Location) -> str:
    """The manifest name of one part file: ``part-X.parquet.manifest.json``."""
    return f"{base_name(part)}.{MANIFEST}"


def _parent(location: Location) -> str:
    """The folder of a file, local or a URI (``.`` for a bare name)."""
    return posixpath.dirname(os.fspath(location).rstrip("/")) or "."


def part_manifest_path(part: Location) -> str:
    """Where one part's manifest lies: beside it, ``part-X.parquet.manifest.json``."""
    return f"{os.fspath(part).rstrip('/')}.{MANIFEST}"


def write_checked_table(table: pa.Table, location: Location) -> Location:
    """Write a parquet part atomically with its own manifest.

    The manifest goes in before the part is put in place (renamed, or uploaded): a crash in
    between leaves an orphan manifest (harmless), never a part without one."""
    # Dictionary pages for the text columns only: vector floats never repeat, and the
    # dictionary their first pages get anyway halves their read speed (0.50 -> 0.25 s for a
    # 50,000 x 768 part, measured).
    text = [f.name for f in table.schema if pa.types.is_string(f.type)]
    with atomic_path(location) as temporary:
        pq.write_table(table, temporary, use_dictionary=text)
        entry = _entry(temporary)
        write_text_atomic(json.dumps({"algorithm": "sha256", "files": {base_name(location): entry}}),
                          part_manifest_path(location))
    return location


def verify_part(part: Location) -> dict[str, dict]:
    """The part's manifest entry, once its bytes are checked against it (remembered: every
    step reads the same parts)."""
    return verify_manifest(_parent(part), part_manifest_name(part), remember=True)


def check_parts(parts: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    """Split parts into verified ones and damaged ones (file name -> reason)."""
    good: list[str] = []
    damaged: dict[str, str] = {}
    for part in parts:
        try:
            verify_part(part)
        except IntegrityError as error:
            damaged[base_name(part)] = error.reason
        else:
            good.append(part)
    return good, damaged
