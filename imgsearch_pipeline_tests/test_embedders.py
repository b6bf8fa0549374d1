"""Embedders: the weight-free descriptor, the missing-model message, and the overlapped loop
(SigLIP against its reference: test_siglip.py)."""

import numpy as np
import pytest
from PIL import Image, ImageOps

from imgsearch_pipeline.core.embedding import embed_in_batches
from imgsearch_pipeline.core.images import ImageRejected
from imgsearch_pipeline.resources.embedders import (
    ColorTextureEmbedder,
    ModelUnavailableError,
    SiglipEmbedder,
    TextNotSupportedError,
)
from imgsearch_pipeline.sample_data import generate_rows


def _pictures(n: int) -> list[Image.Image]:
    import io

    rows = generate_rows(n, size=64, seed=1, group_size=2, exact_duplicates=0)
    return [Image.open(io.BytesIO(r["image"]["bytes"])).convert("RGB") for r in rows]


def test_color_texture_vectors_are_unit_and_mirror_invariant():
    model = ColorTextureEmbedder().load()
    pictures = _pictures(6)
    vectors = model.encode_images(pictures)
    assert vectors.shape == (6, model.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    mirrored = model.encode_images([ImageOps.mirror(p) for p in pictures])
    assert np.min(np.sum(vectors * mirrored, axis=1)) > 0.999
    with pytest.raises(TextNotSupportedError):
        model.encode_text(["a red circle"])


def test_missing_model_error_names_model_and_remedy(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = "example-org/model-that-is-not-here"
    with pytest.raises(ModelUnavailableError) as error:
        SiglipEmbedder(model_name=missing, device="cpu").load()
    message = str(error.value)
    assert missing in message and "IMGSEARCH_MODEL" in message and "cache" in message


def test_embed_loop_keeps_order_and_reports_failures():
    pictures = {f"id{i}": p for i, p in enumerate(_pictures(10))}

    def load(item: str) -> Image.Image:
        if item == "id3":
            raise ImageRejected("corrupt image data")
        if item == "id7":
            raise KeyError(item)
        return pictures[item]

    model = ColorTextureEmbedder().load()
    batches = list(embed_in_batches(list(pictures), load, model.prepare, model.encode,
                                    batch_size=3, workers=2))
    ids = [i for b in batches for i in b.ids]
    failures = dict(f for b in batches for f in b.failures)
    assert ids == [i for i in pictures if i not in ("id3", "id7")]
    assert failures["id3"] == "corrupt image data" and "could not read" in failures["id7"]
    vectors = np.concatenate([b.vectors for b in batches if b.ids])
    np.testing.assert_allclose(vectors, model.encode_images([pictures[i] for i in ids]),
                               atol=1e-6)


def test_the_api_refuses_a_live_version_of_another_model(tmp_path):
    """One model per index: the live version's record names the model it was built from; an
    API configured with another model refuses to serve it (503 with both ids), before
    loading its own model, instead of embedding queries into another model's space."""
    from imgsearch_pipeline.api.service import ServiceUnavailable, load_service
    from imgsearch_pipeline.core.index_plan import VersionRecord, write_version_record
    from imgsearch_pipeline.core.layout import Layout
    from imgsearch_pipeline.resources.vector_index import FaissHnswIndex, IndexBatch
    from imgsearch_pipeline.settings import Settings

    settings = Settings.read({"IMGSEARCH_EMBEDDER": "color-texture", "IMGSEARCH_HOME": str(tmp_path)})
    layout = Layout.at(str(tmp_path))
    index = FaissHnswIndex(root=layout.index)
    vectors = np.eye(4, dtype=np.float32)
    index.build("v1", 4, [IndexBatch(ids=[f"u{i}" for i in range(4)], vectors=vectors)])
    index.publish("v1")
    built_with = "google/siglip2-base-patch16-512"
    write_version_record(layout.index_record("v1"), [f"u{i}" for i in range(4)],
                         VersionRecord({"model_id": built_with, "dim": 4}))
    with pytest.raises(ServiceUnavailable) as error:
        load_service(settings, settings.api)
    message = str(error.value)
    assert built_with in message and ColorTextureEmbedder().model_id in message
    assert "v1" in message and "IMGSEARCH_MODEL" in message


def test_model_names_in_answers_show_no_server_paths():
    from imgsearch_pipeline.api.service import ServiceUnavailable, check_same_model

    with pytest.raises(ServiceUnavailable) as error:
        check_same_model("v1", "/srv/models/clip-ViT-B-32", "sentence-transformers/clip-ViT-L-14")
    assert "'clip-ViT-B-32'" in str(error.value) and "/srv" not in str(error.value)
    assert "sentence-transformers/clip-ViT-L-14" in str(error.value)
    check_same_model("v1", None, "any")  # a version without a record: nothing to compare
    check_same_model("v1", "same/model", "same/model")
