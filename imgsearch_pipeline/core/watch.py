"""Noticing new or changed parquet shards: a listing of fingerprints compared with a cursor."""

import hashlib
import json
from dataclasses import dataclass, field

from .shards import fingerprint, list_shard_files


def shard_fingerprints(location: str) -> dict[str, str]:
    """``{path: "size-mtime_ns"}`` for every ``.parquet`` file at the location.

    One directory listing (one LIST on S3); no file is opened, so a tick stays cheap.
    """
    _, files = list_shard_files(location)
    return {f.path: fingerprint(f) for f in files}


@dataclass(frozen=True)
class ShardChanges:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def any(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def summary(self) -> str:
        return f"{len(self.added)} new, {len(self.changed)} changed, {len(self.removed)} removed"


def compare(previous: dict[str, str], current: dict[str, str]) -> ShardChanges:
    return ShardChanges(
        added=sorted(set(current) - set(previous)),
        changed=sorted(p for p in current if p in previous and previous[p] != current[p]),
        removed=sorted(set(previous) - set(current)),
    )


def encode_cursor(fingerprints: dict[str, str]) -> str:
    return json.dumps(fingerprints, sort_keys=True, separators=(",", ":"))


def decode_cursor(cursor: str | None) -> dict[str, str] | None:
    """The listing saved by the last tick; None before the first tick or for a bad cursor."""
    if not cursor:
        return None
    try:
        value = json.loads(cursor)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def listing_digest(fingerprints: dict[str, str]) -> str:
    """A short id of one listing: the sensor's run key, so one listing is processed once."""
    return hashlib.sha256(encode_cursor(fingerprints).encode()).hexdigest()[:16]
