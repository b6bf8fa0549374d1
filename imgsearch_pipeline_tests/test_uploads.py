"""Uploading the missing images, without Dagster or a store: which objects are missing,
batches of uploads, and a shard that breaks part way."""

import pyarrow as pa
import pytest

from imgsearch_pipeline.core.shards import ShardError
from imgsearch_pipeline.core.uploads import missing_objects, upload_missing, upload_shard


def batch(first: int, count: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {"image": [{"bytes": f"img{first + i}".encode(), "path": None} for i in range(count)]})


def test_only_objects_not_stored_are_wanted_by_shard_and_row():
    wanted = missing_objects(["k1", "k2", "k3"], ["image/png", "image/jpeg", "image/png"],
                             ["a", "a", "b"], [0, 5, 2], existing={"k2"})
    assert wanted == {"a": {0: ("k1", "image/png")}, "b": {2: ("k3", "image/png")}}
    with pytest.raises(ValueError):  # columns of different lengths are a bug, not a skip
        missing_objects(["k1"], [], ["a"], [0], set())


def test_a_shard_is_uploaded_in_batches_and_read_only_as_far_as_needed():
    read: list[int] = []

    def batches():
        for first in range(0, 100, 4):
            read.append(first)
            yield batch(first, 4)

    rows = {r: (f"k{r}", "image/png") for r in (1, 2, 5, 6, 9)}
    uploads: list[list] = []
    found, failure = upload_shard(batches(), rows, upload_batch=2, upload=uploads.append)
    assert (found, failure) == (5, None)
    assert read == [0, 4, 8]  # stopped once row 9 was found
    assert uploads == [[("k1", b"img1", "image/png"), ("k2", b"img2", "image/png")],
                       [("k5", b"img5", "image/png"), ("k6", b"img6", "image/png")],
                       [("k9", b"img9", "image/png")]]


def test_a_broken_shard_still_uploads_what_was_read_and_says_why():
    def broken(shard: str):
        yield batch(0, 4)
        raise ShardError(f"{shard}: read failed (truncated)")

    def whole(shard: str):
        yield batch(0, 4)

    wanted = {"bad": {r: (f"bad{r}", "t") for r in (1, 6)}, "good": {3: ("good3", "t")}}
    uploads: list[list] = []
    errors: list[str] = []
    failed = upload_missing(wanted, lambda s: broken(s) if s == "bad" else whole(s),
                            upload_batch=10, upload=uploads.append, on_error=errors.append)
    assert failed == {"bad": "bad: read failed (truncated)"}
    assert errors == ["bad: read failed (truncated); 1 images of this shard not uploaded"]
    assert uploads == [[("bad1", b"img1", "t")], [("good3", b"img3", "t")]]
