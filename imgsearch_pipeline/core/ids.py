"""Content-derived post ids and the deterministic train/test split."""

import hashlib
import re
import uuid

# Fixed namespace so that the same image bytes map to the same uuid on every machine.
IMAGE_NAMESPACE = uuid.UUID("6f1c3a52-4d0e-5b8a-9c47-2e5d8f0a1b63")
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_UUID_RE = re.compile(UUID_PATTERN.strip("^$"))
# Index version names become folder names: letters, digits, '.', '_', '-', no leading dot.
_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def image_uuid(image_bytes: bytes) -> str:
    """The id of a post: a uuid5 of the SHA-256 of its image bytes (same bytes, same id)."""
    digest = hashlib.sha256(image_bytes).hexdigest()
    return str(uuid.uuid5(IMAGE_NAMESPACE, digest))


def is_valid_uuid(value: str) -> bool:
    """True for a canonical lower-case uuid string; keeps ids safe to use in keys and paths."""
    return isinstance(value, str) and _UUID_RE.fullmatch(value) is not None


def require_uuid(value: str) -> str:
    if not is_valid_uuid(value):
        raise ValueError(f"not a canonical uuid: {value!r}")
    return value


def check_version(version: str) -> str:
    """An index version name that is safe as a folder name (no '/', '\\', '..', NUL)."""
    if not isinstance(version, str) or _VERSION_RE.fullmatch(version) is None or ".." in version:
        raise ValueError(f"invalid index version: {version!r}")
    return version


def split_of(post_uuid: str, test_fraction: float, seed: int) -> str:
    """'test' or 'train', decided by a seeded hash of the uuid alone.

    The assignment depends on nothing but the post itself, so a re-run or new shards
    never move an existing post to the other side.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    digest = hashlib.sha256(f"{seed}:{post_uuid}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    return "test" if position < test_fraction else "train"


def image_key(post_uuid: str, extension: str) -> str:
    """Object-store key of a post's image, e.g. ``images/3f/3f2a...-....jpg``."""
    require_uuid(post_uuid)
    if not re.fullmatch(r"\.[a-z0-9]{1,5}", extension):
        raise ValueError(f"bad file extension: {extension!r}")
    return f"images/{post_uuid[:2]}/{post_uuid}{extension}"
