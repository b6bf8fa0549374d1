"""Checksum manifests: a file is trusted only if its bytes match what was written.

A manifest is a small JSON file beside the files it covers: ``{"algorithm": "sha256",
"files": {name: {"sha256": ..., "bytes": ...}}}``, written atomically *after* them, so a
crash never leaves a manifest that vouches for a half-written file. An index version has one
``manifest.json`` for its folder; an embeddings part ``part-X.parquet`` has its own
``part-X.parquet.manifest.json`` (parts are written one by one, so each carries its own).

Errors name the file by its name inside the folder and say why, never a server path.
"""

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .tables import atomic_path, write_text_atomic

MANIFEST = "manifest.json"
_CHUNK = 1 << 20


class IntegrityError(ValueError):
    """A file that does not match its manifest (or has none); ``file`` is a bare name."""

    def __init__(self, file: str, reason: str):
        super().__init__(f"{file}: {reason}")
        self.file = file
        self.reason = reason


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _entry(path: Path) -> dict:
    return {"sha256": file_sha256(path), "bytes": path.stat().st_size}


def write_manifest(folder: str | Path, names: Iterable[str], manifest: str = MANIFEST) -> Path:
    """Checksum ``names`` (files in ``folder``) into ``folder/manifest`` atomically."""
    folder = Path(folder)
    files = {name: _entry(folder / name) for name in sorted(names)}
    return write_text_atomic(json.dumps({"algorithm": "sha256", "files": files}, indent=1),
                             folder / manifest)


def verify_manifest(folder: str | Path, manifest: str = MANIFEST) -> dict[str, dict]:
    """Check every file the manifest lists; IntegrityError naming the first bad one."""
    folder = Path(folder)
    try:
        listed = json.loads((folder / manifest).read_text())["files"]
        if not isinstance(listed, dict) or not listed:
            raise ValueError
    except FileNotFoundError:
        raise IntegrityError(manifest, "missing (written before checksums, or damaged): "
                                       "re-run the pipeline to rebuild it") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise IntegrityError(manifest, "unreadable") from None
    for name, expected in listed.items():
        path = folder / name
        if "/" in name or "\\" in name or name.startswith(".") or not isinstance(expected, dict):
            raise IntegrityError(manifest, "lists an invalid entry")
        if not path.is_file():
            raise IntegrityError(name, "missing")
        size = path.stat().st_size
        if size != expected.get("bytes"):
            raise IntegrityError(name, f"size {size:,} bytes, manifest says {expected.get('bytes')}")
        if file_sha256(path) != expected.get("sha256"):
            raise IntegrityError(name, "checksum mismatch (the file was changed or damaged)")
    return listed


def part_manifest(part: str | Path) -> str:
    """The manifest name of one part file: ``part-X.parquet.manifest.json``."""
    return f"{Path(part).name}.{MANIFEST}"


def write_checked_table(table: pa.Table, path: str | Path) -> Path:
    """Write a parquet part atomically with its own manifest.

    The manifest goes in before the part is renamed into place: a crash in between leaves an
    orphan manifest (harmless), never a part without one."""
    path = Path(path)
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)
        entry = _entry(temporary)
        write_text_atomic(json.dumps({"algorithm": "sha256", "files": {path.name: entry}}),
                          path.parent / part_manifest(path))
    return path


def verify_part(part: str | Path) -> None:
    part = Path(part)
    verify_manifest(part.parent, part_manifest(part))


def check_parts(parts: Iterable[Path], root: Path) -> tuple[list[Path], dict[str, str]]:
    """Split parts into verified ones and damaged ones (path under ``root`` -> reason)."""
    good: list[Path] = []
    damaged: dict[str, str] = {}
    for part in parts:
        try:
            verify_part(part)
        except IntegrityError as error:
            damaged[part.relative_to(root).as_posix()] = error.reason
        else:
            good.append(part)
    return good, damaged
