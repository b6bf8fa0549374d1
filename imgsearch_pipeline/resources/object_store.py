"""Object storage for post images: a local folder by default, S3 in production."""

from abc import ABC, abstractmethod
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg

from ..core.tables import atomic_path


def check_key(key: str) -> str:
    """Reject keys that could escape the store's root (absolute, '..', backslashes)."""
    parts = key.split("/")
    if (
        not key
        or key.startswith("/")
        or "\\" in key
        or "\x00" in key
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise ValueError(f"invalid object key: {key!r}")
    return key


class ObjectStore(dg.ConfigurableResource, ABC):
    """Where image objects live. Keys are relative, '/'-separated, validated."""

    @abstractmethod
    def put(self, key: str, data: bytes, content_type: str) -> None: ...

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def iter_keys(self, prefix: str = "") -> Iterator[str]: ...

    @abstractmethod
    def url(self, key: str) -> str | None:
        """A URL a browser can fetch, or None if the API must serve the bytes itself."""

    def put_many(self, items: list[tuple[str, bytes, str]], max_workers: int = 8) -> int:
        """Store (key, data, content type) objects on a bounded pool; returns the count."""
        with ThreadPoolExecutor(max_workers=max_workers) as pool:
            for _ in pool.map(lambda item: self.put(*item), items):
                pass
        return len(items)


class LocalObjectStore(ObjectStore):
    """A folder on disk; each object is written atomically."""

    root: str = "var/objects"

    def _path(self, key: str) -> Path:
        return Path(self.root) / check_key(key)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        # The content type is carried by the key's extension (see core.ids.image_key).
        with atomic_path(self._path(key)) as temporary:
            temporary.write_bytes(data)

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        root = Path(self.root)
        if not root.is_dir():
            return
        for path in root.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                key = path.relative_to(root).as_posix()
                if key.startswith(prefix):
                    yield key

    def url(self, key: str) -> str | None:
        return None
