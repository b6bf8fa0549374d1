"""SigLIP checkpoints with random weights, saved exactly in the Hugging Face Hub's file layout
of ``google/siglip-base-patch16-512``, so that tests and benchmarks load them through the
same code path as the real model, offline.

The real repository holds ``config.json``, ``model.safetensors``, ``preprocessor_config.json``,
``special_tokens_map.json``, ``spiece.model`` and ``tokenizer_config.json`` (no
``tokenizer.json``). The file contents below are the real ones, from the published files:

- preprocessor_config.json: google/siglip-base-patch16-512 @ 0ffb506 ("Upload processor"):
  SiglipImageProcessor, resample 3 (bicubic), rescale 1/255, mean = std = 0.5, a square
  resize to the model's size and no centre crop.
- config.json: the 512 px checkpoint's config (as mirrored in Xenova/siglip-base-patch16-512,
  ``_name_or_path`` google/siglip-base-patch16-512) sets only ``model_type`` for the text tower
  and ``image_size: 512`` for the vision tower; every other size is SiglipConfig's default
  (base: hidden 768, 12 layers, 12 heads, patch 16, vocab 32000, 64 text positions,
  attention-pooling head), which is what transformers' convert_siglip_to_hf.py used.
- tokenizer_config.json / special_tokens_map.json: the google/siglip-base-patch16-* files:
  SiglipTokenizer, ``do_lower_case`` true, ``</s>`` as eos and pad, ``<unk>``,
  ``model_max_length`` 64, and input ids only (convert_siglip_to_hf.py builds the tokenizer
  with ``model_input_names=["input_ids"]``: the original model takes no attention mask).

``spiece.model`` is trained here with sentencepiece's own trainer on a small generated corpus
(pad 0, eos 1, unk 2 and no bos, as in the real vocabulary, whose ids 1 and 2 are ``</s>``
and ``<unk>``). The tiny checkpoint keeps every real value except the sizes.
"""

import io
import json
import random
from pathlib import Path

# The real google/siglip-base-patch16-512 sizes (SiglipConfig's defaults plus image_size 512).
FULL_SIZE_VISION = {"image_size": 512, "patch_size": 16, "hidden_size": 768, "intermediate_size": 3072,
                    "num_hidden_layers": 12, "num_attention_heads": 12}
FULL_SIZE_TEXT = {"vocab_size": 32000, "hidden_size": 768, "intermediate_size": 3072,
                  "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 64}

TINY_VISION = {"image_size": 64, "patch_size": 16, "hidden_size": 32, "intermediate_size": 64,
               "num_hidden_layers": 2, "num_attention_heads": 2}
TINY_TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 2, "max_position_embeddings": 64}

HUB_FILES = ("config.json", "model.safetensors", "preprocessor_config.json",
             "special_tokens_map.json", "spiece.model", "tokenizer_config.json")

_SPECIAL = {"lstrip": True, "normalized": False, "rstrip": True, "single_word": False}

TOKENIZER_CONFIG = {
    "added_tokens_decoder": {
        "1": {"content": "</s>", **_SPECIAL, "special": True},
        "2": {"content": "<unk>", **_SPECIAL, "special": True},
    },
    "additional_special_tokens": [],
    "clean_up_tokenization_spaces": True,
    "do_lower_case": True,
    "eos_token": "</s>",
    "model_input_names": ["input_ids"],
    "model_max_length": 64,
    "pad_token": "</s>",
    "processor_class": "SiglipProcessor",
    "sp_model_kwargs": {},
    "tokenizer_class": "SiglipTokenizer",
    "unk_token": "<unk>",
}

SPECIAL_TOKENS_MAP = {
    "eos_token": {"content": "</s>", **_SPECIAL},
    "pad_token": {"content": "</s>", **_SPECIAL},
    "unk_token": {"content": "<unk>", **_SPECIAL},
}


def preprocessor_config(image_size: int) -> dict:
    return {
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "SiglipImageProcessor",
        "image_std": [0.5, 0.5, 0.5],
        "processor_class": "SiglipProcessor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"height": image_size, "width": image_size},
    }


def model_config(vision: dict, text: dict) -> dict:
    """The real config.json's structure: SiglipModel with a text and a vision tower."""
    return {
        "architectures": ["SiglipModel"],
        "initializer_factor": 1.0,
        "model_type": "siglip",
        "text_config": {"model_type": "siglip_text_model", **text},
        "vision_config": {"model_type": "siglip_vision_model", **vision},
    }


_WORDS = ("a photo of the red green blue yellow purple orange circle square triangle stripes "
          "rings dots on in with and background cat dog house tree car street beach sunset "
          "mountain city night food coffee friends party dance summer winter flower garden sky "
          "water river lake boat bird horse people smile happy love day light black white").split()


def train_spiece(vocab_size: int = 80, seed: int = 0) -> bytes:
    """A unigram sentencepiece model trained on generated captions (fast: a fraction of a
    second), with the real SigLIP vocabulary's special ids: pad 0, eos 1, unk 2, no bos."""
    import sentencepiece as spm

    rng = random.Random(seed)
    sentences = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12))) for _ in range(2000)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, vocab_size=vocab_size,
        model_type="unigram", character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>", hard_vocab_limit=False,
        minloglevel=2, num_threads=1)
    return model.getvalue()


def save_hub_siglip(folder: Path, vision: dict, text: dict, spiece: bytes, seed: int = 0) -> Path:
    """Write a SigLIP with random weights to ``folder`` in the Hub's layout (``HUB_FILES``)."""
    import torch
    from transformers import SiglipConfig, SiglipModel

    folder.mkdir(parents=True, exist_ok=True)
    config = model_config(vision, text)
    torch.manual_seed(seed)
    SiglipModel(SiglipConfig.from_dict(config)).save_pretrained(folder)
    # save_pretrained writes every default into config.json; the Hub's file states only what
    # differs from the defaults, as written here.
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "preprocessor_config.json").write_text(
        json.dumps(preprocessor_config(vision["image_size"]), indent=2) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(SPECIAL_TOKENS_MAP, indent=2) + "\n")
    (folder / "spiece.model").write_bytes(spiece)
    extra = sorted(p.name for p in folder.iterdir() if p.name not in HUB_FILES)
    if extra:
        raise RuntimeError(f"unexpected files beside the Hub layout in {folder}: {extra}")
    return folder


def save_tiny_siglip(folder: Path, spiece: bytes | None = None) -> Path:
    """The tests' SigLIP: real files and values, tiny sizes (64 px, 2 layers, width 32)."""
    spiece = spiece if spiece is not None else train_spiece()
    text = {**TINY_TEXT, "vocab_size": _piece_count(spiece)}
    return save_hub_siglip(folder, TINY_VISION, text, spiece)


def save_full_size_siglip(folder: Path) -> Path:
    """google/siglip-base-patch16-512's architecture and sizes, random weights (~0.8 GB).
    The vocabulary file is a small trained one: the embedding table keeps its real 32000 rows."""
    return save_hub_siglip(folder, FULL_SIZE_VISION, FULL_SIZE_TEXT, train_spiece())


def _piece_count(spiece: bytes) -> int:
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_proto=spiece).get_piece_size()
