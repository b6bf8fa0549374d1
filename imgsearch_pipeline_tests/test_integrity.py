"""Checksum manifests (core, no Dagster): damaged bytes are found before anything trusts them."""

import hashlib
import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from imgsearch_pipeline.api.service import credible_score
from imgsearch_pipeline.core.integrity import (
    IntegrityError,
    part_manifest_name,
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
                        lambda *a, **kw: reads.append(a[0]) or real(*a, **kw))
    together = vectors_module.read_vector_groups(tmp_path, [train, test, None])
    assert len(reads) == 2  # each part once, for all three groups
    expected = [["a", "c", "e"], ["b", "d"], ["a", "b", "c", "d", "e"]]
    for (ids, matrix), names in zip(together, expected, strict=True):
        assert ids == names
        np.testing.assert_array_equal(matrix, np.stack([written[n] for n in names]))
    assert vectors_module.read_vector_groups(tmp_path, [{"missing"}])[0][1].shape == (0, 0)
