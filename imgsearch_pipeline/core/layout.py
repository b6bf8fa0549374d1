"""Where the pipeline's own files live: the one owner of the layout under its home.

    <home>/tables/posts.parquet                         one row per post (uuid, split, key, ...)
    <home>/tables/rejected_posts.parquet                rows that did not become posts, with why
    <home>/tables/shard_scans/<id>.{posts,rejects}.parquet  each shard's scan, reused until
                                                        the shard or the scan settings change
    <home>/tables/embeddings/<model>/part-<hex>.parquet  vectors of one model id, part by part
    <home>/tables/ground_truth.parquet                  exact top-k of every test query
    <home>/tables/ground_truth_corpus.parquet           the corpus it was computed against
                                                        (named by core/ground_truth.py)
    <home>/tables/index_versions/<v>.parquet            uuids an index version holds, how built
    <home>/tables/reports/                              recall report: .md, .json, per query, png
    <home>/objects/                                     the embedded object store (image bytes)
    <home>/index/                                       the embedded index: versions/<v>/, LIVE
    <home>/values/                                      small values handed between assets

Every asset, check, the API and the benchmarks ask a ``Layout`` for a location; nothing else
joins these names. Locations are strings: the root is an absolute local folder (the
embedded profile) or a URI (``s3://bucket/prefix``, the production profile's default), read
and written through pyarrow filesystems (``core/tables.py``); the layout only joins names
with ``/`` and never touches the disk itself. In the production profile ``objects/`` and
``index/`` are not used (the bucket's ``images/`` and Elasticsearch hold those).
"""

import os
import re
from dataclasses import dataclass


def model_slug(model_id: str) -> str:
    """A folder name for a model id (``google/siglip-...`` -> ``google_siglip-...``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("._") or "model"


def is_uri(location: str) -> bool:
    return "://" in location


@dataclass(frozen=True)
class Layout:
    """The locations of the pipeline's tables, reports and index folders under ``root``."""

    root: str

    @classmethod
    def at(cls, home: str | os.PathLike) -> "Layout":
        """The layout under ``home``: a URI as given, a local folder made absolute (so that
        values naming these locations read the same from any working directory)."""
        home = os.fspath(home).strip()
        if not home:
            raise ValueError("the pipeline home must not be empty")
        return cls(home.rstrip("/") if is_uri(home) else os.path.abspath(os.path.expanduser(home)))

    def _join(self, *names: str) -> str:
        return "/".join((self.root, *names))

    @property
    def posts(self) -> str:
        return self._join("tables", "posts.parquet")

    @property
    def rejects(self) -> str:
        return self._join("tables", "rejected_posts.parquet")

    @property
    def shard_scans(self) -> str:
        """The folder of per-shard scan results that ``posts`` merges (``core/post_cache.py``)."""
        return self._join("tables", "shard_scans")

    def embeddings(self, model_id: str) -> str:
        return self._join("tables", "embeddings", model_slug(model_id))

    @property
    def ground_truth(self) -> str:
        return self._join("tables", "ground_truth.parquet")

    def report(self, name: str) -> str:
        """A file of the recall report: ``recall_report.md``, ``.json``, ``latency.png``..."""
        return self._join("tables", "reports", name)

    def index_record(self, version: str) -> str:
        """What an index version holds and how it was built (``core/index_plan.py``)."""
        return self._join("tables", "index_versions", f"{version}.parquet")

    @property
    def objects(self) -> str:
        return self._join("objects")

    @property
    def index(self) -> str:
        return self._join("index")

    @property
    def values(self) -> str:
        return self._join("values")
