"""Embedding into checked parts and counting what a model's folder holds, without Dagster:
a fake encoder, a local folder."""

import numpy as np
import pytest
from PIL import Image

from imgsearch_pipeline.core.embedding import embed_into_parts, embedding_figures
from imgsearch_pipeline.core.tables import read_table
from imgsearch_pipeline.core.vectors import embedding_parts, stored_embeddings, vectors_in_order

COLORS = {f"u{i}": (10 * i + 5, 200 - 20 * i, 7 * i) for i in range(7)}


class MeanColour:
    """Each image's mean colour, unit length: distinct colours, distinct vectors."""

    model_id = "fake/mean-colour"
    numerics = "numpy-fp32"

    def prepare(self, images: list[Image.Image]) -> np.ndarray:
        return np.stack([np.asarray(im, dtype=np.float32).mean(axis=(0, 1)) for im in images])

    def encode(self, prepared: np.ndarray) -> np.ndarray:
        return prepared / np.linalg.norm(prepared, axis=1, keepdims=True)


def load(item: str) -> Image.Image:
    if item == "gone":
        raise OSError("no such object")
    return Image.new("RGB", (8, 8), COLORS[item])


def expected(item: str) -> np.ndarray:
    colour = np.asarray(COLORS[item], dtype=np.float32)
    return colour / np.linalg.norm(colour)


def test_parts_hold_every_loadable_item_once_and_the_counts_say_so(tmp_path):
    folder = str(tmp_path / "fake")
    todo = ["u0", "u1", "gone", "u2", "u3", "u4", "u5"]
    split_of = {u: ("test" if u in ("u1", "u4") else "train") for u in [*COLORS, "gone"]}
    done: list[int] = []
    failures = embed_into_parts(todo, folder, split_of, load, MeanColour(), batch_size=2,
                                workers=2, part_rows=3, on_done=done.append)
    assert failures == [("gone", "could not read image: no such object")]
    assert sum(done) == len(todo)
    parts, damaged = embedding_parts(folder)
    assert not damaged
    # batches of 2 (u0 u1 | gone u2 | u3 u4 | u5): a part is written once 3 rows wait
    assert sorted(read_table(p).num_rows for p in parts) == [3, 3]
    rows = [r for p in parts for r in read_table(p, columns=["uuid", "split", "model_id"]).to_pylist()]
    assert sorted(r["uuid"] for r in rows) == ["u0", "u1", "u2", "u3", "u4", "u5"]
    assert all(r["split"] == split_of[r["uuid"]] and r["model_id"] == "fake/mean-colour"
               for r in rows)

    order = ["u5", "u0", "u3"]
    assert np.allclose(vectors_in_order(folder, order), [expected(u) for u in order], atol=1e-6)
    with pytest.raises(KeyError):
        vectors_in_order(folder, ["gone"])

    # u6 is a current post never embedded; u5's post went away (its vector is stale)
    current = {u: s for u, s in split_of.items() if u not in ("u5", "gone")}
    stored = stored_embeddings(folder, current)
    assert (stored.dim, stored.present, stored.train, stored.test, stored.stale) == (3, 5, 3, 2, 1)
    assert stored.numerics == {"numpy-fp32": 6}
    assert embedding_figures(stored, posts=len(current), todo=len(todo), failed=1) == {
        "numerics": "numpy-fp32: 6 rows", "dim": 3, "total": 5, "train": 3, "test": 2,
        "embedded_now": 6, "reused": -1, "not_embedded": 1, "missing": 1, "stale": 1}


def test_an_empty_folder_holds_nothing(tmp_path):
    stored = stored_embeddings(str(tmp_path / "none"), {"u0": "train"})
    assert (stored.dim, stored.present, stored.train, stored.stale) == (0, 0, 0, 0)
    assert embedding_figures(stored, posts=1, todo=1, failed=1)["missing"] == 1
