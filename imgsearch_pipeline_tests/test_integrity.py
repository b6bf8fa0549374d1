"""Checksum manifests (core, no Dagster): damaged bytes are found before anything trusts them."""

import hashlib
import json
import math
import os
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from imgsearch_pipeline.api.service import credible_score
from imgsearch_pipeline.core import integrity
from imgsearch_pipeline.core.integrity import (
    IntegrityError,
    part_manifest_name,
    verified_marker_name,
    verify_manifest,
    verify_part,
    write_checked_table,
    write_manifest,
)
from imgsearch_pipeline.core.vectors import (
    embedded_uuids,
    embedding_parts,
    read_vectors,
    set_aside_damaged_parts,
    vectors_table,
)


def _folder(tmp_path):
    (tmp_path / "a.bin").write_bytes(bytes(range(256)) * 64)
    (tmp_path / "b.txt").write_text("hello")
    write_manifest(tmp_path, ["a.bin", "b.txt"])
    return tmp_path


def test_manifest_records_sha256_and_size(tmp_path):
    folder = _folder(tmp_path)
    listed = json.loads((folder / "manifest.json").read_text())["files"]
    data = (folder / "a.bin").read_bytes()
    assert listed["a.bin"] == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert verify_manifest(folder) == listed
    assert not list(folder.glob(".*.tmp"))  # written through a temporary file, renamed


@pytest.mark.parametrize("damage, reason", [
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "size"),                    # truncated
    (lambda p: p.write_bytes(p.read_bytes()[:50] + b"\xff" * 16 + p.read_bytes()[66:]),
     "checksum mismatch"),                                                       # bytes overwritten
    (lambda p: p.unlink(), "missing"),
])
def test_damage_is_named_with_the_reason(tmp_path, damage, reason):
    folder = _folder(tmp_path)
    damage(folder / "a.bin")
    with pytest.raises(IntegrityError) as caught:
        verify_manifest(folder)
    assert caught.value.file == "a.bin" and reason in caught.value.reason
    assert str(tmp_path) not in str(caught.value)  # a bare name, never a server path


@pytest.mark.parametrize("manifest", [None, b"{not json", b'{"files": {}}',
                                      b'{"files": {"../a.bin": {"sha256": "0", "bytes": 1}}}'])
def test_missing_or_hostile_manifest_is_refused(tmp_path, manifest):
    folder = _folder(tmp_path)
    if manifest is None:
        (folder / "manifest.json").unlink()
    else:
        (folder / "manifest.json").write_bytes(manifest)
    with pytest.raises(IntegrityError) as caught:
        verify_manifest(folder)
    assert caught.value.file == "manifest.json"


def _settled(monkeypatch):
    """Files written before now count as settled (not "racily clean"), and the coarse clock
    that stamps ctime moves on before the next write (a tick is at most ~10 ms)."""
    monkeypatch.setattr(integrity, "RACY_NS", 0)
    time.sleep(0.05)


def _no_hashing(monkeypatch):
    def refuse(location):
        raise AssertionError(f"hashed {location} again")

    monkeypatch.setattr(integrity, "file_sha256", refuse)


def test_a_full_check_is_remembered_and_not_repeated(tmp_path, monkeypatch):
    folder = _folder(tmp_path)
    _settled(monkeypatch)
    listed = verify_manifest(folder, remember=True)
    assert (folder / verified_marker_name()).is_file()
    _no_hashing(monkeypatch)
    assert verify_manifest(folder, remember=True) == listed


@pytest.mark.parametrize("damage", [
    lambda p: p.write_bytes(p.read_bytes()[:50] + b"\xff" * 16 + p.read_bytes()[66:]),  # same size
    # the same size and mtime put back: ctime still moves (no program can set it)
    lambda p: (lambda st: (p.write_bytes(b"\0" * st.st_size),
                           os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))))(p.stat()),
    lambda p: (p.with_name("x").write_bytes(p.read_bytes()[::-1]), p.with_name("x").replace(p)),
])
def test_damage_after_a_remembered_check_is_still_found(tmp_path, monkeypatch, damage):
    folder = _folder(tmp_path)
    _settled(monkeypatch)
    verify_manifest(folder, remember=True)
    time.sleep(0.05)
    damage(folder / "a.bin")
    with pytest.raises(IntegrityError) as caught:
        verify_manifest(folder, remember=True)
    assert caught.value.file == "a.bin" and "checksum mismatch" in caught.value.reason


def test_files_changed_just_before_a_check_are_not_remembered(tmp_path):
    folder = _folder(tmp_path)  # written just now: a change in the same tick would not show
    verify_manifest(folder, remember=True)
    assert not (folder / verified_marker_name()).exists()


def test_a_marker_vouches_only_for_its_own_manifest(tmp_path, monkeypatch):
    folder = _folder(tmp_path)
    _settled(monkeypatch)
    verify_manifest(folder, remember=True)
    (folder / "b.txt").write_text("other")
    write_manifest(folder, ["a.bin", "b.txt"])  # a new manifest: the marker is not its own
    hashed = []
    real = integrity.file_sha256
    monkeypatch.setattr(integrity, "file_sha256", lambda p: hashed.append(p) or real(p))
    verify_manifest(folder, remember=True)
    assert len(hashed) == 2


def test_parts_are_remembered(tmp_path, monkeypatch):
    part, _ = _part(tmp_path, ["a", "b"])
    _settled(monkeypatch)
    verify_part(part)
    assert (tmp_path / verified_marker_name(part_manifest_name(part))).is_file()
    _no_hashing(monkeypatch)
    assert embedding_parts(tmp_path) == ([str(part)], {})
    time.sleep(0.05)
    part.write_bytes(part.read_bytes()[:-1] + b"\0")
    monkeypatch.undo()
    assert list(embedding_parts(tmp_path)[1]) == ["part-0.parquet"]


def test_a_file_that_starts_with_another_reuses_its_chunk_hashes(tmp_path, monkeypatch):
    """An incremental version's vectors: its base's bytes, then new rows. Only the chunks
    past the base's whole ones are hashed; the entry is the one a fresh hash gives, and a
    copy that went wrong is still found by the first check."""
    monkeypatch.setattr(integrity, "CHUNK_BYTES", 1000)
    base, grown = tmp_path / "base", tmp_path / "grown"
    base.mkdir(), grown.mkdir()
    data = np.random.default_rng(0).bytes(3500)
    (base / "v.f32").write_bytes(data)
    write_manifest(base, ["v.f32"], chunked={"v.f32": None})
    entry = integrity.manifest_entries(base)["v.f32"]
    assert entry["bytes"] == 3500 and len(entry["chunk_sha256"]) == 4
    assert entry["chunk_sha256"][1] == hashlib.sha256(data[1000:2000]).hexdigest()
    (grown / "v.f32").write_bytes(data + b"new rows" * 100)
    started = []
    real = integrity.chunk_sha256s
    monkeypatch.setattr(integrity, "chunk_sha256s",
                        lambda p, start=0, chunk_bytes=1000: started.append(start)
                        or real(p, start, chunk_bytes))
    write_manifest(grown, ["v.f32"], chunked={"v.f32": entry})
    assert started == [3]  # the base's 3 whole chunks reused, its last partial one hashed again
    fresh = integrity._chunked_entry(grown / "v.f32", None)
    assert integrity.manifest_entries(grown)["v.f32"] == fresh
    verify_manifest(grown)
    (grown / "v.f32").write_bytes(b"X" + data[1:] + b"new rows" * 100)  # a bad copy
    write_manifest(grown, ["v.f32"], chunked={"v.f32": entry})
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        verify_manifest(grown)


def _part(folder, uuids, seed=0):
    vectors = np.random.default_rng(seed).normal(size=(len(uuids), 4)).astype(np.float32)
    return write_checked_table(vectors_table(uuids, ["train"] * len(uuids), "m", vectors),
                               folder / f"part-{seed}.parquet"), vectors


def test_parts_carry_their_own_manifest(tmp_path):
    part, vectors = _part(tmp_path, ["a", "b"])
    assert (tmp_path / part_manifest_name(part)).is_file()
    verify_part(part)
    assert pq.read_table(part).num_rows == 2


def test_damaged_parts_are_never_read_and_are_set_aside(tmp_path):
    good, vectors = _part(tmp_path, ["a", "b"], seed=1)
    bad, _ = _part(tmp_path, ["c", "d"], seed=2)
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # truncated
    parts, damaged = embedding_parts(tmp_path)
    assert parts == [str(good)]
    assert list(damaged) == ["part-2.parquet"] and "size" in damaged["part-2.parquet"]
    ids, matrix = read_vectors(tmp_path)
    assert ids == ["a", "b"] and np.array_equal(matrix, vectors)
    assert embedded_uuids(tmp_path) == {"a", "b"}  # c, d count as not embedded: re-embedded
    assert set_aside_damaged_parts(tmp_path) == damaged
    assert (bad.parent / (bad.name + ".damaged")).is_file() and not bad.exists()
    assert embedding_parts(tmp_path) == ([str(good)], {})


def test_a_part_without_a_manifest_is_not_trusted(tmp_path):
    part, _ = _part(tmp_path, ["a"])
    (tmp_path / part_manifest_name(part)).unlink()
    assert embedding_parts(tmp_path)[0] == []


@pytest.mark.parametrize("score, expected", [
    (0.5, 0.5), (-1.0, -1.0), (1.0000004, 1.0), (-1.0002, -1.0),
    (5.8e37, None), (1.5, None), (-2.0, None), (math.nan, None), (math.inf, None),
])
def test_only_credible_cosine_scores_pass(score, expected):
    assert credible_score(score) == expected


def test_read_vectors_filters_and_keeps_the_first_copy_of_a_uuid(tmp_path):
    _, first = _part(tmp_path, ["a", "b", "c"], seed=1)
    _, second = _part(tmp_path, ["c", "d", "e"], seed=2)  # c again: the first part's c wins
    ids, matrix = read_vectors(tmp_path)
    assert ids == ["a", "b", "c", "d", "e"]
    np.testing.assert_array_equal(matrix, np.concatenate([first, second[1:]]))
    ids, matrix = read_vectors(tmp_path, only={"b", "e", "missing"})
    assert ids == ["b", "e"]
    np.testing.assert_array_equal(matrix, np.stack([first[1], second[2]]))
    assert read_vectors(tmp_path, only={"missing"})[1].shape == (0, 0)


def test_vector_groups_come_from_one_pass_with_the_rows_written(tmp_path, monkeypatch):
    from imgsearch_pipeline.core import vectors as vectors_module

    _, first = _part(tmp_path, ["a", "b", "c"], seed=1)
    _, second = _part(tmp_path, ["c", "d", "e"], seed=2)  # c again: the first part's c wins
    written = {"a": first[0], "b": first[1], "c": first[2], "d": second[1], "e": second[2]}
    train, test = {"a", "c", "e"}, {"b", "d", "missing"}
    reads = []
    real = vectors_module.read_table
    monkeypatch.setattr(vectors_module, "read_table",
                        lambda *a, **kw: reads.append((a[0], *kw["columns"])) or real(*a, **kw))
    together = vectors_module.read_vector_groups(tmp_path, [train, test, None])
    # each part's uuids once and its vectors once, for all three groups
    assert sorted(reads) == sorted((str(p), c) for p in tmp_path.glob("part-*.parquet")
                                   for c in ("uuid", "vector"))
    expected = [["a", "c", "e"], ["b", "d"], ["a", "b", "c", "d", "e"]]
    for (ids, matrix), names in zip(together, expected, strict=True):
        assert ids == names
        np.testing.assert_array_equal(matrix, np.stack([written[n] for n in names]))
    reads.clear()
    assert vectors_module.read_vector_groups(tmp_path, [{"missing"}])[0][1].shape == (0, 0)
    assert [c for _, c in reads] == ["uuid", "uuid"]  # no part holds one: no vectors decoded
    reads.clear()
    ids, matrix = vectors_module.read_vectors(tmp_path, only={"d", "e"})
    assert ids == ["d", "e"] and np.array_equal(matrix, second[1:])
    assert [c for _, c in reads] == ["uuid", "uuid", "vector"]  # only the part holding them
