"""Post ids, the train/test split, and keys and names that must not escape their folders."""

import hashlib
import random
from pathlib import Path

import pytest

from imgsearch_pipeline.core.ids import (
    check_version,
    image_key,
    image_uuid,
    is_valid_uuid,
    require_uuid,
    split_of,
)
from imgsearch_pipeline.resources.object_store import LocalObjectStore, check_key
from imgsearch_pipeline.resources.vector_index import FaissHnswIndex

HOSTILE = ["../../etc/passwd", "/etc/passwd", "images/../../secret", "images\\..\\x",
           "images/a\x00b", "", ".", "images//x", "images/./x", "C:\\windows"]


def _payloads(n: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(32) for _ in range(n)]


def test_same_bytes_same_id_and_other_bytes_other_id():
    data = b"\xff\xd8 some jpeg bytes"
    assert image_uuid(data) == image_uuid(bytes(data))
    assert image_uuid(data) != image_uuid(data + b"\x00")
    assert is_valid_uuid(image_uuid(data))
    # The id hashes the SHA-256 digest: fixed namespace, so the value is stable across machines.
    assert image_uuid(b"") == image_uuid(hashlib.sha256(b"").digest()[:0])


def test_split_is_stable_when_data_is_added():
    first = [image_uuid(p) for p in _payloads(500, seed=1)]
    before = {u: split_of(u, 0.2, 42) for u in first}
    more = first + [image_uuid(p) for p in _payloads(500, seed=2)]
    after = {u: split_of(u, 0.2, 42) for u in more}
    assert all(after[u] == before[u] for u in first)
    reseeded = {u: split_of(u, 0.2, 7) for u in first}
    assert reseeded != before  # the seed re-deals


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.3, 0.5])
def test_split_fraction_is_close_to_configured(fraction):
    ids = [image_uuid(p) for p in _payloads(20_000, seed=3)]
    share = sum(split_of(u, fraction, 42) == "test" for u in ids) / len(ids)
    # binomial standard deviation at n=20000 is <= 0.0036; 5 sigma
    assert abs(share - fraction) < 0.018, share


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_fraction_outside_open_interval_is_rejected(fraction):
    with pytest.raises(ValueError, match="test_fraction must be in"):
        split_of(image_uuid(b"x"), fraction, 42)


@pytest.mark.parametrize("value", ["../../etc/passwd", "", "6F1C3A52-4D0E-5B8A-9C47-2E5D8F0A1B63",
                                   image_uuid(b"a") + "\n", image_uuid(b"a") + "/..",
                                   "../" + image_uuid(b"a")[3:], None, 12])
def test_require_uuid_rejects_anything_but_canonical(value):
    assert not is_valid_uuid(value)
    with pytest.raises(ValueError, match="not a canonical uuid"):
        require_uuid(value)


def test_image_key_is_derived_from_a_valid_uuid_only():
    post = image_uuid(b"a")
    assert image_key(post, ".jpg") == f"images/{post[:2]}/{post}.jpg"
    for bad_ext in ("/../x", ".jp/g", "", ".JPEG\x00"):
        with pytest.raises(ValueError, match="bad file extension"):
            image_key(post, bad_ext)
    with pytest.raises(ValueError):
        image_key("../../etc/passwd", ".jpg")


@pytest.mark.parametrize("key", HOSTILE)
def test_object_keys_cannot_escape_the_store(key, tmp_path):
    with pytest.raises(ValueError, match="invalid object key"):
        check_key(key)
    store = LocalObjectStore(root=str(tmp_path / "objects"))
    with pytest.raises(ValueError):
        store.put(key, b"x", "image/jpeg")
    with pytest.raises(ValueError):
        store.get(key)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


@pytest.mark.parametrize("version", ["../x", "..", ".hidden", "a/b", "a\\b", "a\x00b", "",
                                     "/abs", "x" * 200, "v..1"])
def test_index_versions_cannot_escape_the_index_folder(version, tmp_path):
    with pytest.raises(ValueError, match="invalid index version"):
        check_version(version)
    index = FaissHnswIndex(root=str(tmp_path / "index"))
    with pytest.raises(ValueError):
        index.delete_version(version)
    with pytest.raises(ValueError):
        index.publish(version)
    assert check_version("20261124t101500-1a2b3c4d") == "20261124t101500-1a2b3c4d"
    assert Path(tmp_path).exists()
