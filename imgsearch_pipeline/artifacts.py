"""The small values assets hand to each other: where a table is and what it holds."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ShardInventory:
    """Readable shards (path, rows, fingerprint) and the unreadable ones with reasons."""

    location: str
    shards: list[dict] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(s["rows"] for s in self.shards)


@dataclass(frozen=True)
class PostsTable:
    path: str
    rejects_path: str
    posts: int
    train: int
    test: int
    duplicates: int
    rejected: int


@dataclass(frozen=True)
class ImageObjects:
    stored: int
    uploaded: int
    already_there: int


@dataclass(frozen=True)
class EmbeddingSet:
    folder: str
    model_id: str
    dim: int
    count: int
    train: int
    test: int


@dataclass(frozen=True)
class IndexBuild:
    version: str
    backend: str
    count: int
    dim: int
    params: dict


@dataclass(frozen=True)
class GroundTruth:
    path: str
    k: int
    queries: int
    corpus: int
