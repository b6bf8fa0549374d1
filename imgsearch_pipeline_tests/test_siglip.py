"""SigLIP as the real checkpoint is used: loaded from the Hub's file layout, and its vectors
compared with transformers' own reference (AutoProcessor + SiglipModel, L2-normalised).

The reference follows the model card: ``processor(images=...)`` and
``processor(text=..., padding="max_length", max_length=64)``, then ``get_image_features`` /
``get_text_features``. One preprocessing step is added on the reference side on purpose:
``ImageOps.exif_transpose``, because the project shows the model every picture upright
(core/images.py), which the processor alone does not do.
"""

import io
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from imgsearch_pipeline.api.service import SearchService, Timings
from imgsearch_pipeline.api.settings import ApiSettings
from imgsearch_pipeline.core.embedding import embed_in_batches
from imgsearch_pipeline.core.images import DEFAULT_MAX_PIXELS, load_rgb
from imgsearch_pipeline.resources.embedders import (
    MissingDependencyError,
    ModelUnavailableError,
    SiglipEmbedder,
)
from imgsearch_pipeline.resources.object_store import LocalObjectStore

from .tiny_models import (
    FULL_SIZE_TEXT,
    FULL_SIZE_VISION,
    HUB_FILES,
    SPECIAL_TOKENS_MAP,
    TOKENIZER_CONFIG,
    model_config,
)

COSINE = 0.99999
LONG_TEXT = " ".join(["a photo of a red circle and a blue square on a striped background"] * 8)
TEXTS = [
    "cat",
    "a photo of a dog",
    "A PHOTO OF A DOG",
    "Sunset, beach & friends!!! (summer)",
    "a red circle... on a BLUE square?",
    "über café naïve",  # outside the tiny vocabulary: unknown pieces
    "  lots   of    spaces  ",
    LONG_TEXT,  # over 64 tokens: truncated
    "x",
]


def _picture(size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    width, height = size
    base = rng.integers(0, 256, (1, 1, 3)) + np.linspace(0, 80, width)[None, :, None]
    array = np.clip(base + rng.normal(0, 25, (height, width, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(array, "RGB")
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 5, height // 5, width * 3 // 5, height * 4 // 5),
                 fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return image


def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown rotated 90 degrees clockwise
    return _encode(_picture((320, 200), 7), "JPEG", exif=exif.tobytes(), quality=95)


def _rgba() -> bytes:
    image = _picture((200, 160), 5).convert("RGBA")
    alpha = Image.new("L", image.size, 255)
    ImageDraw.Draw(alpha).rectangle((0, 0, 120, 80), fill=0)  # fully transparent corner
    ImageDraw.Draw(alpha).rectangle((120, 80, 200, 160), fill=100)  # half transparent
    image.putalpha(alpha)
    return _encode(image, "PNG")


def _palette() -> bytes:
    image = _picture((150, 100), 6).quantize(16)
    return _encode(image, "PNG", transparency=0)


IMAGES = {
    "rgb jpeg 640x480": lambda: _encode(_picture((640, 480), 1), "JPEG", quality=90),
    "large 2000x1500": lambda: _encode(_picture((2000, 1500), 2), "JPEG"),
    "huge 4200x3000 (API decodes it reduced)": lambda: _encode(_picture((4200, 3000), 10), "JPEG"),
    "tiny 9x7": lambda: _encode(_picture((9, 7), 3), "PNG"),
    "wide 1200x16": lambda: _encode(_picture((1200, 16), 4), "JPEG"),
    "tall 16x1200": lambda: _encode(_picture((16, 1200), 8), "PNG"),
    "grey L": lambda: _encode(_picture((300, 200), 9).convert("L"), "PNG"),
    "RGBA with transparency": _rgba,
    "palette P with transparency": _palette,
    "EXIF-rotated jpeg": _exif_rotated,
}


@pytest.fixture(scope="module")
def reference(tiny_siglip):
    """transformers' own processor and model for the fixture."""
    import torch
    from transformers import AutoProcessor, SiglipModel

    processor = AutoProcessor.from_pretrained(tiny_siglip)
    model = SiglipModel.from_pretrained(tiny_siglip).eval()

    def unit(output) -> np.ndarray:
        features = getattr(output, "pooler_output", output)
        return torch.nn.functional.normalize(features, dim=-1).numpy()

    def image(data: bytes) -> np.ndarray:
        upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
        with torch.no_grad():
            return unit(model.get_image_features(**processor(images=upright, return_tensors="pt")))[0]

    def text(value: str, **padding) -> np.ndarray:
        padding = padding or {"padding": "max_length", "max_length": 64}
        inputs = processor(text=[value], truncation=True, return_tensors="pt", **padding)
        with torch.no_grad():
            return unit(model.get_text_features(**inputs))[0]

    return image, text


@pytest.fixture(scope="module", params=["torch", "openvino"])
def model(request, tiny_siglip):
    """Each CPU runtime the embedder can take (torch: GPUs and the fallback; OpenVINO: a
    CPU's default), OpenVINO at f32 whatever this CPU has, as the reference computes."""
    from imgsearch_pipeline.resources.embedders import siglip_openvino
    from imgsearch_pipeline.resources.embedders.siglip import load_siglip

    load_siglip.cache_clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(siglip_openvino, "cpu_capabilities", lambda core: ["FP32"])
        yield SiglipEmbedder(model_name=str(tiny_siglip), device="cpu",
                             runtime=request.param).load()
    load_siglip.cache_clear()


def _api(model) -> SearchService:
    """The API's service with only what query embedding touches."""
    return SearchService(model, None, None, "v", 0, {}, None, ApiSettings())


def test_fixture_has_the_hub_layout_and_the_real_tokenizer(tiny_siglip, model):
    assert sorted(p.name for p in tiny_siglip.iterdir()) == sorted(HUB_FILES)
    assert json.loads((tiny_siglip / "tokenizer_config.json").read_text()) == TOKENIZER_CONFIG
    assert json.loads((tiny_siglip / "special_tokens_map.json").read_text()) == SPECIAL_TOKENS_MAP
    tokenizer = model._tokenizer
    assert type(tokenizer).__name__ == "SiglipTokenizer"
    assert tokenizer.eos_token == tokenizer.pad_token == "</s>"
    assert tokenizer.model_input_names == ["input_ids"]
    assert type(model._image_processor).__name__.startswith("SiglipImageProcessor")
    ids = model.tokenize(["A Dog", "a dog", LONG_TEXT])
    assert ids.shape == (3, 64)
    assert ids[0].tolist() == ids[1].tolist()  # lower-cased
    eos = tokenizer.eos_token_id
    short = ids[0].tolist()
    first_eos = short.index(eos)
    assert 0 < first_eos < 10 and set(short[first_eos:]) == {eos}  # </s> appended, then pad = </s>
    assert eos not in ids[2].tolist()[:63]  # over 64 tokens: cut, no room left for </s>


# google/siglip-base-patch16-512's config.json as published (Xenova's mirror, less its
# _name_or_path and transformers_version): every size not stated is SiglipConfig's default.
PUBLISHED_CONFIG = {"architectures": ["SiglipModel"], "initializer_factor": 1.0, "model_type": "siglip",
                    "text_config": {"model_type": "siglip_text_model"},
                    "vision_config": {"image_size": 512, "model_type": "siglip_vision_model"}}


def test_full_size_architecture_is_the_published_one():
    """The benchmark's full-size checkpoint has the real model's architecture."""
    from transformers import SiglipConfig

    published = SiglipConfig.from_dict(PUBLISHED_CONFIG)
    ours = SiglipConfig.from_dict(model_config(FULL_SIZE_VISION, FULL_SIZE_TEXT))
    assert ours.vision_config.to_dict() == published.vision_config.to_dict()
    assert ours.text_config.to_dict() == published.text_config.to_dict()
    vision, text = published.vision_config, published.text_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads, vision.image_size,
            vision.patch_size, vision.vision_use_head) == (768, 12, 12, 512, 16, True)
    assert (text.vocab_size, text.num_hidden_layers, text.max_position_embeddings) == (32000, 12, 64)


def test_image_vectors_equal_the_reference_through_pipeline_and_api(model, reference, tmp_path):
    reference_image, _ = reference
    store = LocalObjectStore(root=str(tmp_path / "objects"))
    names = list(IMAGES)
    blobs = {name: IMAGES[name]() for name in names}
    for name, data in blobs.items():
        store.put(name.replace(" ", "_"), data, "application/octet-stream")
    # The pipeline's path: object store -> load_rgb -> prepare in loader threads -> encode.
    batches = list(embed_in_batches(
        [n.replace(" ", "_") for n in names], lambda k: load_rgb(store.get(k), DEFAULT_MAX_PIXELS),
        model.prepare, model.encode, batch_size=4, workers=2))
    assert all(not b.failures for b in batches)
    pipeline = np.concatenate([b.vectors for b in batches])
    api = np.stack([_api(model).embed_image(blobs[n], Timings()) for n in names])
    expected = np.stack([reference_image(blobs[n]) for n in names])
    for path, vectors in (("pipeline", pipeline), ("api", api)):
        cosines = np.sum(vectors * expected, axis=1)
        worst = int(np.argmin(cosines))
        print(f"images via {path}: lowest cosine {cosines[worst]:.7f} ({names[worst]})")
        assert cosines.min() >= COSINE, dict(zip(names, cosines.round(6), strict=True))
    # A batch equals its items alone.
    alone = np.stack([model.encode_images([load_rgb(blobs[n])])[0] for n in names])
    assert np.min(np.sum(alone * pipeline, axis=1)) >= COSINE


def test_the_exif_transpose_is_what_the_reference_adds(model, reference):
    """The one deliberate difference from the bare processor: upright pictures."""
    reference_image, _ = reference
    data = _exif_rotated()
    ours = model.encode_images([load_rgb(data)])[0]
    assert float(ours @ reference_image(data)) >= COSINE
    sideways = Image.open(io.BytesIO(data)).convert("RGB")  # the processor alone: no transpose
    assert float(ours @ model.encode_images([sideways])[0]) < COSINE


def test_text_vectors_equal_the_reference_alone_in_a_batch_and_through_the_api(model, reference):
    _, reference_text = reference
    expected = np.stack([reference_text(t) for t in TEXTS])
    batch = model.encode_text(TEXTS)
    alone = np.stack([model.encode_text([t])[0] for t in TEXTS])
    reordered = model.encode_text(TEXTS[::-1])[::-1]
    api = np.stack([_api(model).embed_text(t, Timings()) for t in TEXTS])
    for path, vectors in (("batch", batch), ("alone", alone), ("reversed batch", reordered),
                          ("api", api)):
        cosines = np.sum(vectors * expected, axis=1)
        worst = int(np.argmin(cosines))
        print(f"texts {path}: lowest cosine {cosines[worst]:.7f} ({TEXTS[worst][:30]!r})")
        assert cosines.min() >= COSINE, dict(zip(TEXTS, cosines.round(6), strict=True))
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)


def test_the_fixture_can_tell_wrong_padding(model, reference):
    """Guard for the test above: with these weights, padding to the batch's longest text
    (what the project did before) gives other vectors, so the comparison can fail."""
    _, reference_text = reference
    for text in ("cat", "a photo of a dog"):
        wrong = reference_text(text, padding="longest")
        assert float(wrong @ model.encode_text([text])[0]) < 0.999


def test_missing_python_dependency_is_named_as_such(tiny_siglip, monkeypatch):
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # import sentencepiece -> ImportError
    with pytest.raises(MissingDependencyError) as error:
        SiglipEmbedder(model_name=str(tiny_siglip), device="cpu").load()
    message = str(error.value)
    assert "'sentencepiece'" in message and "pip install sentencepiece" in message
    assert "make setup" in message and not isinstance(error.value, ModelUnavailableError)


def test_folder_without_the_checkpoint_files_says_what_is_missing(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelUnavailableError) as error:
        SiglipEmbedder(model_name=str(tmp_path), device="cpu").load()
    message = str(error.value)
    assert "preprocessor_config.json" in message and "IMGSEARCH_MODEL" in message


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_no_local_copy_and_no_hub_fails_fast_with_the_remedy(tmp_path):
    """A fresh interpreter, because huggingface_hub reads HF_ENDPOINT and HF_HOME on import."""
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}",
           "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(Path(__file__).parents[1])}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("TRANSFORMERS_OFFLINE", None)
    script = textwrap.dedent("""
        import json, time
        from imgsearch_pipeline.resources.embedders import ModelUnavailableError, SiglipEmbedder
        import torch, transformers  # imported before the clock starts
        started = time.monotonic()
        try:
            SiglipEmbedder(model_name="google/siglip-base-patch16-512", device="cpu").load()
            outcome = "loaded"
        except ModelUnavailableError as error:
            outcome = str(error)
        print(json.dumps({"seconds": time.monotonic() - started, "outcome": outcome}))
    """)
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    message = result["outcome"]
    assert result["seconds"] < 10, result  # a generous bound: the failure is immediate
    assert "google/siglip-base-patch16-512" in message
    assert str(tmp_path / "hf" / "hub") in message  # where it looked: the cache
    assert env["HF_ENDPOINT"] in message  # and the Hub
    assert "IMGSEARCH_MODEL" in message and "hf download" in message
