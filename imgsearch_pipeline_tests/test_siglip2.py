"""SigLIP 2 (fixed resolution) and SigLIP's other sizes through the ``siglip`` embedder, from
the Hub's file layout, compared with transformers' own reference.

The reference follows transformers' documentation and source for SigLIP 2: the checkpoint's
processor for images (``processor(images=...)``, SiglipImageProcessor, bilinear) and, for
texts, ``Siglip2Tokenizer`` (transformers' tokenizer that "enforces SigLIP2's training-time
defaults": Gemma's vocabulary, lower-cased) with ``padding="max_length", max_length=64``, then
``get_image_features`` / ``get_text_features``. As in test_siglip.py, the reference adds
``ImageOps.exif_transpose`` because the project shows the model every picture upright, and
transformers' ``convert_to_rgb`` because SigLIP 2's processor config turns it off.
"""

import io
import json

import numpy as np
import pytest
from PIL import Image, ImageOps

from imgsearch_pipeline.core.embedding import embed_in_batches
from imgsearch_pipeline.core.images import DEFAULT_MAX_PIXELS, load_rgb
from imgsearch_pipeline.resources.embedders import ModelUnavailableError, SiglipEmbedder
from imgsearch_pipeline.resources.object_store import LocalObjectStore

from .test_siglip import COSINE, IMAGES, TEXTS, Timings, _api
from .tiny_models import (
    FULL_SIZE_SIGLIP2_TEXT,
    FULL_SIZE_TEXT,
    FULL_SIZE_VISION,
    SIGLIP2_HUB_FILES,
    SIGLIP2_TOKENIZER_CONFIG,
    TINY_TEXT,
    model_config,
    save_hub_siglip,
    save_tiny_siglip2,
    siglip2_model_config,
)

# google/siglip2-base-patch16-512's config.json as published (less transformers_version).
PUBLISHED_SIGLIP2_CONFIG = {"initializer_factor": 1.0, "model_type": "siglip",
                            "text_config": {"model_type": "siglip_text_model", "vocab_size": 256000},
                            "vision_config": {"image_size": 512, "model_type": "siglip_vision_model"}}
# google/siglip-base-patch16-224's config.json as published (its 256/384 siblings state
# only image_size, like the 512 one).
PUBLISHED_SIGLIP_224_CONFIG = {
    "architectures": ["SiglipModel"], "initializer_factor": 1.0, "model_type": "siglip",
    "text_config": {"hidden_size": 768, "intermediate_size": 3072, "model_type": "siglip_text_model",
                    "num_attention_heads": 12, "vocab_size": 32000},
    "vision_config": {"model_type": "siglip_vision_model", "patch_size": 16}}


@pytest.fixture(scope="module")
def tiny_siglip2(tmp_path_factory):
    return save_tiny_siglip2(tmp_path_factory.mktemp("tiny-siglip2"))


@pytest.fixture(scope="module")
def reference(tiny_siglip2):
    import torch
    from transformers import AutoImageProcessor, Siglip2Tokenizer, SiglipModel
    from transformers.image_transforms import convert_to_rgb

    images = AutoImageProcessor.from_pretrained(tiny_siglip2)
    tokenizer = Siglip2Tokenizer.from_pretrained(tiny_siglip2)
    model = SiglipModel.from_pretrained(tiny_siglip2).eval()

    def unit(output) -> np.ndarray:
        features = getattr(output, "pooler_output", output)
        return torch.nn.functional.normalize(features, dim=-1).numpy()

    def image(data: bytes) -> np.ndarray:
        # SigLIP 2's preprocessor_config.json says "do_convert_rgb": null, so its processor
        # leaves grey and RGBA pictures as they are (and fails on them); the reference
        # converts as SigLIP's processor does, with transformers' own convert_to_rgb.
        upright = convert_to_rgb(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
        with torch.no_grad():
            return unit(model.get_image_features(**images(images=upright, return_tensors="pt")))[0]

    def text(value: str, lower: bool = True) -> np.ndarray:
        ids = tokenizer([value], padding="max_length", max_length=64, truncation=True,
                        return_tensors="pt")["input_ids"]
        if not lower:  # the Hub's GemmaTokenizer alone, for the guard test
            from transformers import AutoTokenizer

            ids = AutoTokenizer.from_pretrained(tiny_siglip2)(
                [value], padding="max_length", max_length=64, truncation=True,
                return_tensors="pt")["input_ids"]
        with torch.no_grad():
            return unit(model.get_text_features(input_ids=ids))[0]

    return image, text, tokenizer


@pytest.fixture(scope="module", params=["torch", "openvino"])
def model(request, tiny_siglip2):
    from imgsearch_pipeline.resources.embedders import siglip_openvino
    from imgsearch_pipeline.resources.embedders.siglip import load_siglip

    load_siglip.cache_clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(siglip_openvino, "cpu_capabilities", lambda core: ["FP32"])
        yield SiglipEmbedder(model_name=str(tiny_siglip2), device="cpu",
                             runtime=request.param).load()
    load_siglip.cache_clear()


def test_fixture_has_the_hub_layout_and_gemmas_tokenizer(tiny_siglip2, model, reference):
    _, _, siglip2_tokenizer = reference
    assert sorted(p.name for p in tiny_siglip2.iterdir()) == sorted(SIGLIP2_HUB_FILES)
    assert json.loads((tiny_siglip2 / "tokenizer_config.json").read_text()) == SIGLIP2_TOKENIZER_CONFIG
    assert type(model._tokenizer).__name__ == "GemmaTokenizer"
    assert model.text_length == 64
    ids = model.tokenize(["A Dog", "a dog", "über café"])
    assert ids.shape == (3, 64) and ids[0].tolist() == ids[1].tolist()  # lower-cased
    tokenizer = model._tokenizer
    short = ids[0].tolist()
    eos = short.index(tokenizer.eos_token_id)  # <eos> appended, no <bos>, then <pad> = 0
    assert tokenizer.bos_token_id not in short and set(short[eos + 1:]) == {0}
    # the same ids as transformers' own Siglip2Tokenizer
    expected = siglip2_tokenizer(["A Dog", "a dog", "über café"], padding="max_length",
                                 max_length=64)["input_ids"]
    assert np.asarray(ids).tolist() == expected


def test_full_size_architecture_is_the_published_one():
    from transformers import SiglipConfig

    published = SiglipConfig.from_dict(PUBLISHED_SIGLIP2_CONFIG)
    ours = SiglipConfig.from_dict(siglip2_model_config(FULL_SIZE_VISION, FULL_SIZE_SIGLIP2_TEXT))
    assert ours.vision_config.to_dict() == published.vision_config.to_dict()
    assert ours.text_config.to_dict() == published.text_config.to_dict()
    assert published.text_config.vocab_size == 256000 and published.vision_config.image_size == 512
    published = SiglipConfig.from_dict(PUBLISHED_SIGLIP_224_CONFIG)
    ours = SiglipConfig.from_dict(model_config({**FULL_SIZE_VISION, "image_size": 224}, FULL_SIZE_TEXT))
    assert ours.vision_config.to_dict() == published.vision_config.to_dict()
    assert ours.text_config.to_dict() == published.text_config.to_dict()


def test_image_vectors_equal_the_reference_through_pipeline_and_api(model, reference, tmp_path):
    reference_image, _, _ = reference
    store = LocalObjectStore(root=str(tmp_path / "objects"))
    names = list(IMAGES)
    blobs = {name: IMAGES[name]() for name in names}
    for name, data in blobs.items():
        store.put(name.replace(" ", "_"), data, "application/octet-stream")
    batches = list(embed_in_batches(
        [n.replace(" ", "_") for n in names], lambda k: load_rgb(store.get(k), DEFAULT_MAX_PIXELS),
        model.prepare, model.encode, batch_size=4, workers=2))
    pipeline = np.concatenate([b.vectors for b in batches])
    api = np.stack([_api(model).embed_image(blobs[n], Timings()) for n in names])
    expected = np.stack([reference_image(blobs[n]) for n in names])
    for path, vectors in (("pipeline", pipeline), ("api", api)):
        cosines = np.sum(vectors * expected, axis=1)
        print(f"SigLIP 2 images via {path}: lowest cosine {cosines.min():.7f}")
        assert cosines.min() >= COSINE, dict(zip(names, cosines.round(6), strict=True))


def test_text_vectors_equal_the_reference_through_the_api(model, reference):
    _, reference_text, _ = reference
    expected = np.stack([reference_text(t) for t in TEXTS])
    batch = model.encode_text(TEXTS)
    api = np.stack([_api(model).embed_text(t, Timings()) for t in TEXTS])
    for path, vectors in (("batch", batch), ("api", api)):
        cosines = np.sum(vectors * expected, axis=1)
        print(f"SigLIP 2 texts {path}: lowest cosine {cosines.min():.7f}")
        assert cosines.min() >= COSINE, dict(zip(TEXTS, cosines.round(6), strict=True))


def test_the_fixture_can_tell_a_text_not_lower_cased(model, reference):
    """Guard: the Hub's GemmaTokenizer alone does not lower-case; with these weights that
    gives other vectors, so the comparison above (at COSINE) can fail."""
    _, reference_text, _ = reference
    for text in ("A PHOTO OF A DOG", "Sunset Beach"):
        assert float(reference_text(text, lower=False) @ model.encode_text([text])[0]) < COSINE


def test_another_resolution_equals_the_reference(tmp_path, spiece_model):
    """SigLIP's other sizes differ only in image_size (224/256/384/512): one at another
    resolution, through the embedder, against transformers."""
    import torch
    from transformers import AutoProcessor, SiglipModel

    from imgsearch_pipeline.resources.embedders.siglip import load_siglip

    from .tiny_models import TINY_VISION, _piece_count

    folder = save_hub_siglip(tmp_path / "siglip-48", {**TINY_VISION, "image_size": 48},
                             {**TINY_TEXT, "vocab_size": _piece_count(spiece_model)}, spiece_model)
    load_siglip.cache_clear()
    ours = SiglipEmbedder(model_name=str(folder), device="cpu", runtime="torch").load()
    processor = AutoProcessor.from_pretrained(folder)
    reference = SiglipModel.from_pretrained(folder).eval()
    picture = load_rgb(IMAGES["rgb jpeg 640x480"]())
    with torch.no_grad():
        inputs = processor(images=picture, return_tensors="pt")
        assert inputs["pixel_values"].shape[-1] == 48
        output = reference.get_image_features(**inputs)
    expected = torch.nn.functional.normalize(getattr(output, "pooler_output", output), dim=-1)[0]
    assert float(ours.encode_images([picture])[0] @ expected.numpy()) >= COSINE
    load_siglip.cache_clear()


def test_another_family_fails_naming_what_was_expected(tmp_path, tiny_siglip2):
    import shutil

    naflex = tmp_path / "naflex"
    shutil.copytree(tiny_siglip2, naflex)
    config = json.loads((naflex / "config.json").read_text())
    (naflex / "config.json").write_text(json.dumps({**config, "model_type": "siglip2"}))
    with pytest.raises(ModelUnavailableError, match="NaFlex") as error:
        SiglipEmbedder(model_name=str(naflex), device="cpu").load()
    assert "google/siglip2-base-patch16-512" in str(error.value)

    clip = tmp_path / "clip"
    shutil.copytree(tiny_siglip2, clip)
    (clip / "config.json").write_text(json.dumps({**config, "model_type": "clip"}))
    with pytest.raises(ModelUnavailableError, match="model_type 'siglip'"):
        SiglipEmbedder(model_name=str(clip), device="cpu").load()

    no_vocabulary = tmp_path / "no-vocabulary"
    shutil.copytree(tiny_siglip2, no_vocabulary)
    (no_vocabulary / "tokenizer.json").unlink()
    with pytest.raises(ModelUnavailableError, match="spiece.model or tokenizer.json"):
        SiglipEmbedder(model_name=str(no_vocabulary), device="cpu").load()
