"""What a re-index builds: nothing, the live version plus what changed, or a whole new version.

Every index version has a *record* beside it in the pipeline home: the uuids it holds and
how it was built (model, dimension, index settings). A re-index compares the train
embeddings it would index with the live version's record: the same documents built the same
way need no new version; a few added or removed make an incremental one (the live version
plus the new vectors, minus the removed); a changed model or index setting, too many
removals, or a request makes a full one.
"""

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import pyarrow as pa

from .tables import Location, read_table, write_table_atomic

# Removed items an incremental version still carries (faiss keeps them in the graph and
# excludes them from answers; Elasticsearch marks them deleted until a merge drops them),
# as a share of the documents it serves, beyond which the next version is built in full.
# Elasticsearch's merge policy lets deleted documents reach 20% of an index before it
# favours merging them away (``index.merge.policy.deletes_pct_allowed``: 20 is
# ``MergePolicyConfig.DEFAULT_DELETES_PCT_ALLOWED`` in current versions, 33 in older ones):
# past that, a clone carries more dead weight than the cluster itself would keep.
MAX_TOMBSTONE_SHARE = 0.20

_RECORD_KEY = b"imgsearch_version"


@dataclass(frozen=True)
class VersionRecord:
    """How a version was built, and the removed items it still carries."""

    build_key: dict  # model id, dimension, index settings: a change forces a full build
    tombstones: int = 0  # removed since the last full build, still in the structure
    base: str | None = None  # the version it extends (None: built in full)


@dataclass(frozen=True)
class IndexPlan:
    action: str  # "unchanged", "incremental" or "full"
    reason: str
    base: str | None = None
    added: frozenset[str] = field(default_factory=frozenset)
    removed: frozenset[str] = field(default_factory=frozenset)
    tombstones: int = 0  # the new version's, once built


def plan_index(
    wanted: Collection[str],
    build_key: Mapping,
    live: str | None,
    live_members: Collection[str] | None,
    live_record: VersionRecord | None,
    rebuild: bool = False,
) -> IndexPlan:
    """Compare the documents a version should hold (``wanted``) and how it should be built
    (``build_key``) with the live version's record (None: no record, or no live version)."""
    if rebuild:
        return IndexPlan("full", "a full rebuild was requested")
    if live is None:
        return IndexPlan("full", "no live version yet")
    if live_record is None or live_members is None:
        return IndexPlan("full", f"the live version {live} has no readable record")
    if dict(live_record.build_key) != dict(build_key):
        changed = sorted(k for k in {*build_key, *live_record.build_key}
                         if build_key.get(k) != live_record.build_key.get(k))
        return IndexPlan("full", f"changed since the live version {live}: {', '.join(changed)}")
    wanted, held = set(wanted), set(live_members)
    added, removed = frozenset(wanted - held), frozenset(held - wanted)
    if not added and not removed:
        return IndexPlan("unchanged", f"the live version {live} holds exactly the {len(held):,} "
                                      "train embeddings, built the same way: nothing to build",
                         base=live)
    tombstones = live_record.tombstones + len(removed)
    if wanted and tombstones > MAX_TOMBSTONE_SHARE * len(wanted):
        return IndexPlan("full", f"{tombstones:,} removed items would be carried, more than "
                                 f"{MAX_TOMBSTONE_SHARE:.0%} of {len(wanted):,} documents")
    if not wanted:
        return IndexPlan("full", "no train embeddings left")
    return IndexPlan("incremental", f"the live version {live} plus {len(added):,} new, minus "
                                    f"{len(removed):,} removed", base=live, added=added,
                     removed=removed, tombstones=tombstones)


def write_version_record(location: Location, members: Collection[str],
                         record: VersionRecord) -> None:
    """The version's uuids (one column) with the record in the schema's metadata."""
    table = pa.table({"uuid": pa.array(sorted(members), pa.string())})
    meta = json.dumps({"build_key": record.build_key, "tombstones": record.tombstones,
                       "base": record.base}).encode()
    write_table_atomic(table.replace_schema_metadata({_RECORD_KEY: meta}), location)


def read_version_record(location: Location) -> tuple[list[str], VersionRecord] | None:
    """(uuids, record) of a version; None when it has none or it cannot be read (the next
    version is then built in full, which needs no record)."""
    try:
        table = read_table(location)
        meta = json.loads(table.schema.metadata[_RECORD_KEY])
        record = VersionRecord(dict(meta["build_key"]), int(meta["tombstones"]), meta["base"])
    except (OSError, KeyError, TypeError, ValueError, pa.ArrowException):
        return None
    return table.column("uuid").to_pylist(), record
