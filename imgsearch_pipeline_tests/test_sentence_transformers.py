"""sentence-transformers models through the ``sentence-transformers`` embedder, from the layouts
sentence-transformers saves, compared with two references each:

- ``SentenceTransformer(folder).encode(...)`` as its documentation shows (images as PIL
  images, texts as strings), L2-normalised;
- the underlying transformers ``CLIPModel`` with its ``CLIPProcessor`` as OpenAI trained it:
  ``get_image_features`` of the processed picture, ``get_text_features`` of the text padded
  to 77 tokens (sentence-transformers pads to the batch's longest: the same vectors, since
  CLIP's text tower is causal and pools at ``<|endoftext|>``).

The CLIP fixtures have sentence-transformers/clip-ViT-B-32's layout as sentence-transformers
2.x wrote it, and the same model as the installed release saves it; the multilingual fixture
has clip-ViT-B-32-multilingual-v1's layout and is distilled onto the tiny CLIP's text tower
in the test, as the real one was made. As in test_siglip.py, the references add
``ImageOps.exif_transpose`` and RGB conversion (transformers' ``convert_to_rgb``), which the
project does for every picture before the model.
"""

import io
import json

import numpy as np
import pytest
from PIL import Image, ImageOps

from imgsearch_pipeline.core.embedding import embed_in_batches
from imgsearch_pipeline.core.images import DEFAULT_MAX_PIXELS, load_rgb
from imgsearch_pipeline.resources.embedders import (
    DEFAULT_ST_MODEL,
    ModelUnavailableError,
    SentenceTransformerEmbedder,
)
from imgsearch_pipeline.resources.embedders.sentence_transformers import load_sentence_transformer
from imgsearch_pipeline.resources.object_store import LocalObjectStore

from .test_siglip import COSINE, IMAGES, TEXTS, Timings, _api
from .tiny_models import (
    CLIP_B32,
    CLIP_L14,
    OLD_ST_CLIP_MODULES,
    PARALLEL,
    distill_multilingual,
    save_current_st_clip,
    save_multilingual_text_model,
    save_old_st_clip,
)

CLIP_TEXTS = [*TEXTS, " ".join(["a photo of a red circle"] * 30)]  # over 77 tokens: truncated


@pytest.fixture(scope="module")
def st_models(tmp_path_factory):
    """The tiny CLIP in both layouts and the multilingual text model aligned to it."""
    root = tmp_path_factory.mktemp("st")
    old = save_old_st_clip(root / "clip-old")
    current = save_current_st_clip(root / "clip-current", old)
    multilingual = save_multilingual_text_model(root / "multilingual", out_features=24)
    distill_multilingual(multilingual, old, steps=80)
    load_sentence_transformer.cache_clear()
    yield {"old": old, "current": current, "multilingual": multilingual}
    load_sentence_transformer.cache_clear()


def _picture(data: bytes) -> Image.Image:
    from transformers.image_transforms import convert_to_rgb

    return convert_to_rgb(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))


def _unit(vectors) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def clip_reference(st_models):
    """transformers' CLIPModel and CLIPProcessor from 0_CLIPModel/ (the old layout's files)."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    folder = st_models["old"] / "0_CLIPModel"
    processor = CLIPProcessor.from_pretrained(folder)
    model = CLIPModel.from_pretrained(folder).eval()

    def features(output):
        return getattr(output, "pooler_output", output)

    def image(data: bytes) -> np.ndarray:
        with torch.no_grad():
            inputs = processor(images=_picture(data), return_tensors="pt")
            return _unit(features(model.get_image_features(**inputs)).numpy())[0]

    def text(value: str) -> np.ndarray:
        with torch.no_grad():
            inputs = processor(text=[value], padding="max_length", max_length=77, truncation=True,
                               return_tensors="pt")
            return _unit(features(model.get_text_features(**inputs)).numpy())[0]

    return image, text


@pytest.fixture(scope="module", params=["old", "current"])
def layout(request, st_models):
    """(the layout's folder, our model, sentence-transformers' own model)."""
    from sentence_transformers import SentenceTransformer

    folder = st_models[request.param]
    ours = SentenceTransformerEmbedder(model_name=str(folder), device="cpu").load()
    return request.param, ours, SentenceTransformer(str(folder), device="cpu")


def test_fixtures_have_the_hub_layouts(st_models):
    old = st_models["old"]
    assert json.loads((old / "modules.json").read_text()) == OLD_ST_CLIP_MODULES
    assert sorted(p.name for p in (old / "0_CLIPModel").iterdir()) == sorted([
        "config.json", "merges.txt", "preprocessor_config.json", "pytorch_model.bin",
        "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.json"])
    current = json.loads((st_models["current"] / "modules.json").read_text())
    assert current[0]["path"] == "" and current[0]["type"] != OLD_ST_CLIP_MODULES[0]["type"]
    multilingual = st_models["multilingual"]
    assert [m["type"].rsplit(".", 1)[-1] for m in json.loads((multilingual / "modules.json").read_text())] \
        == ["Transformer", "Pooling", "Dense"]
    assert json.loads((multilingual / "2_Dense" / "config.json").read_text())["bias"] is False


def test_full_size_architectures_are_the_published_ones():
    """clip-ViT-B-32 is transformers' CLIPConfig default (openai/clip-vit-base-patch32);
    clip-ViT-L-14 has 24 vision layers of width 1024 on 14 px patches, projected to 768."""
    from transformers import CLIPConfig

    default = CLIPConfig()
    for key, value in CLIP_B32["vision"].items():
        assert getattr(default.vision_config, key) == value, key
    for key, value in CLIP_B32["text"].items():
        assert getattr(default.text_config, key) == value, key
    assert default.projection_dim == CLIP_B32["projection_dim"]
    assert (CLIP_L14["vision"]["patch_size"], CLIP_L14["vision"]["hidden_size"],
            CLIP_L14["projection_dim"]) == (14, 1024, 768)


def test_image_vectors_equal_both_references_through_pipeline_and_api(layout, clip_reference, tmp_path):
    name, ours, st = layout
    reference_image, _ = clip_reference
    store = LocalObjectStore(root=str(tmp_path / "objects"))
    names = list(IMAGES)
    blobs = {n: IMAGES[n]() for n in names}
    for n, data in blobs.items():
        store.put(n.replace(" ", "_"), data, "application/octet-stream")
    batches = list(embed_in_batches(
        [n.replace(" ", "_") for n in names], lambda k: load_rgb(store.get(k), DEFAULT_MAX_PIXELS),
        ours.prepare, ours.encode, batch_size=4, workers=2))
    pipeline = np.concatenate([b.vectors for b in batches])
    api = np.stack([_api(ours).embed_image(blobs[n], Timings()) for n in names])
    documented = st.encode([_picture(blobs[n]) for n in names], normalize_embeddings=True)
    clip = np.stack([reference_image(blobs[n]) for n in names])
    for reference, expected in (("SentenceTransformer.encode", documented), ("CLIPModel", clip)):
        for path, vectors in (("pipeline", pipeline), ("api", api)):
            cosines = np.sum(vectors * expected, axis=1)
            print(f"{name} layout, images via {path} vs {reference}: lowest cosine {cosines.min():.7f}")
            assert cosines.min() >= COSINE, dict(zip(names, cosines.round(6), strict=True))


def test_text_vectors_equal_both_references(layout, clip_reference):
    name, ours, st = layout
    _, reference_text = clip_reference
    documented = st.encode(CLIP_TEXTS, normalize_embeddings=True)
    clip = np.stack([reference_text(t) for t in CLIP_TEXTS])
    api = np.stack([_api(ours).embed_text(t, Timings()) for t in CLIP_TEXTS])
    batch = ours.encode_text(CLIP_TEXTS)
    for reference, expected in (("SentenceTransformer.encode", documented), ("CLIPModel", clip)):
        for path, vectors in (("api", api), ("batch", batch)):
            cosines = np.sum(vectors * expected, axis=1)
            print(f"{name} layout, texts via {path} vs {reference}: lowest cosine {cosines.min():.7f}")
            assert cosines.min() >= COSINE, dict(zip(CLIP_TEXTS, cosines.round(6), strict=True))


def test_a_non_english_query_reaches_the_image_space(st_models):
    """With the multilingual text model, a German or Spanish query gives the vector that the
    image model's own text tower gives its English original: the image space. The embedder's
    text vectors are the text model's own (SentenceTransformer.encode), its image vectors
    the image model's."""
    from sentence_transformers import SentenceTransformer

    ours = SentenceTransformerEmbedder(model_name=str(st_models["old"]),
                                       text_model_name=str(st_models["multilingual"]),
                                       device="cpu").load()
    assert ours.model_id == str(st_models["old"])  # the vectors stored are the image model's
    student = SentenceTransformer(str(st_models["multilingual"]), device="cpu")
    clip = SentenceTransformer(str(st_models["old"]), device="cpu")
    english = clip.encode([row[0] for row in PARALLEL], normalize_embeddings=True)
    translations = [text for row in PARALLEL for text in row[1:]]
    vectors = np.stack([_api(ours).embed_text(t, Timings()) for t in translations])
    expected = student.encode(translations, normalize_embeddings=True)
    assert np.min(np.sum(vectors * expected, axis=1)) >= COSINE
    assert vectors.shape[1] == ours.dim == english.shape[1]
    nearest = np.argmax(vectors @ english.T, axis=1)
    assert nearest.tolist() == [i for i, row in enumerate(PARALLEL) for _ in row[1:]]
    closeness = np.sum(vectors * english[nearest], axis=1)
    print(f"translated queries vs their English caption through CLIP: lowest cosine {closeness.min():.4f}")
    picture = load_rgb(IMAGES["rgb jpeg 640x480"]())
    image = clip.encode([picture], normalize_embeddings=True)[0]
    assert float(ours.encode_images([picture])[0] @ image) >= COSINE


def test_siglip_through_sentence_transformers_is_padded_as_trained(tiny_siglip, tmp_path):
    """sentence-transformers pads a SigLIP's texts to the batch's longest; the embedder sets
    the trained padding (64) on the module: the vectors equal transformers' reference."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoProcessor, SiglipModel

    folder = tmp_path / "siglip-st"
    SentenceTransformer(str(tiny_siglip), device="cpu").save(str(folder))
    ours = SentenceTransformerEmbedder(model_name=str(folder), device="cpu").load()
    processor = AutoProcessor.from_pretrained(tiny_siglip)
    model = SiglipModel.from_pretrained(tiny_siglip).eval()
    texts = ["cat", "a photo of a dog"]
    with torch.no_grad():
        inputs = processor(text=texts, padding="max_length", max_length=64, return_tensors="pt")
        output = model.get_text_features(**inputs)
    expected = _unit(getattr(output, "pooler_output", output).numpy())
    assert np.min(np.sum(ours.encode_text(texts) * expected, axis=1)) >= COSINE
    bare = SentenceTransformer(str(folder), device="cpu").encode(texts, normalize_embeddings=True)
    assert np.sum(bare[0] * expected[0]) < COSINE  # what the fix is for


def test_wrong_models_fail_naming_what_was_expected(st_models, tmp_path):
    load_sentence_transformer.cache_clear()
    with pytest.raises(ModelUnavailableError, match="not images"):
        SentenceTransformerEmbedder(model_name=str(st_models["multilingual"]), device="cpu").load()
    other = save_multilingual_text_model(tmp_path / "other-dim", out_features=16)
    with pytest.raises(ModelUnavailableError, match="16-dimensional") as error:
        SentenceTransformerEmbedder(model_name=str(st_models["old"]), text_model_name=str(other),
                                    device="cpu").load()
    assert "24" in str(error.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailableError, match="modules.json"):
        SentenceTransformerEmbedder(model_name=str(tmp_path / "empty"), device="cpu").load()


def test_settings_choose_the_embedder():
    from imgsearch_pipeline.resources.profiles import make_embedder
    from imgsearch_pipeline.settings import Settings

    unset = make_embedder(Settings.read({"IMGSEARCH_EMBEDDER": "sentence-transformers"}))
    assert isinstance(unset, SentenceTransformerEmbedder) and unset.model_id == DEFAULT_ST_MODEL
    chosen = make_embedder(Settings.read({
        "IMGSEARCH_EMBEDDER": "sentence-transformers", "IMGSEARCH_MODEL": "some/clip",
        "IMGSEARCH_TEXT_MODEL": "some/multilingual"}))
    assert (chosen.model_id, chosen.text_model_name) == ("some/clip", "some/multilingual")
