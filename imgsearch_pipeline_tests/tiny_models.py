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


def save_full_size_siglip(folder: Path, image_size: int = 512) -> Path:
    """google/siglip-base-patch16-<image_size>'s architecture and sizes (224/256/384/512: the
    base sizes at that resolution), random weights (~0.8 GB). The vocabulary file is a small
    trained one: the embedding table keeps its real 32000 rows."""
    return save_hub_siglip(folder, {**FULL_SIZE_VISION, "image_size": image_size}, FULL_SIZE_TEXT,
                           train_spiece())


def _piece_count(spiece: bytes) -> int:
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_proto=spiece).get_piece_size()


# -- SigLIP 2, fixed resolution (google/siglip2-base-patch16-512 and its 224/256/384 siblings) --
#
# The published files (google/siglip2-base-patch16-512 @ a89f5c50, as mirrored):
# - config.json: no "architectures"; model_type "siglip", text_config {model_type, vocab_size
#   256000}, vision_config {image_size 512, model_type}: every other size is SiglipConfig's
#   default (base), i.e. SigLIP's architecture with Gemma's vocabulary;
# - preprocessor_config.json: SiglipImageProcessor, resample 2 (bilinear, not SigLIP's
#   bicubic), rescale 1/255, mean = std = 0.5, square resize, "do_convert_rgb": null;
# - the tokenizer: transformers' convert_siglip2_to_hf.py ``get_siglip2_tokenizer`` builds it
#   from google/gemma-7b's GemmaTokenizerFast with add_bos_token False, add_eos_token True,
#   padding_side "right" and model_input_names ["input_ids"] (tokenizer.json,
#   tokenizer_config.json, special_tokens_map.json; Gemma's ids: <pad> 0, <eos> 1, <bos> 2,
#   <unk> 3, <mask> 4, then the 256 byte-fallback pieces <0x00>..<0xFF>).
# The BPE vocabulary here is trained in the test, with Gemma's normaliser and pre-tokeniser.

SIGLIP2_HUB_FILES = ("config.json", "model.safetensors", "preprocessor_config.json",
                     "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json")
FULL_SIZE_SIGLIP2_TEXT = {**FULL_SIZE_TEXT, "vocab_size": 256000}
GEMMA_SPECIAL = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")

SIGLIP2_TOKENIZER_CONFIG = {
    "add_bos_token": False,
    "add_eos_token": True,
    "bos_token": "<bos>",
    "clean_up_tokenization_spaces": False,
    "eos_token": "<eos>",
    "mask_token": "<mask>",
    "model_input_names": ["input_ids"],
    "model_max_length": 64,
    "pad_token": "<pad>",
    "padding_side": "right",
    "processor_class": "SiglipProcessor",
    "spaces_between_special_tokens": False,
    "tokenizer_class": "GemmaTokenizer",
    "unk_token": "<unk>",
}
SIGLIP2_SPECIAL_TOKENS_MAP = {"bos_token": "<bos>", "eos_token": "<eos>", "mask_token": "<mask>",
                              "pad_token": "<pad>", "unk_token": "<unk>"}


def siglip2_preprocessor_config(image_size: int) -> dict:
    return {**preprocessor_config(image_size), "do_convert_rgb": None, "resample": 2}


def siglip2_model_config(vision: dict, text: dict) -> dict:
    """The published config.json's structure (no "architectures")."""
    config = model_config(vision, text)
    del config["architectures"]
    return config


def _captions(seed: int, count: int = 2000, words: tuple[str, ...] = _WORDS) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(count)]


def train_gemma_vocabulary(vocab_size: int = 400, seed: int = 0) -> tuple[dict, list]:
    """A BPE vocabulary with Gemma's special ids, byte fallback, normaliser and pre-tokeniser,
    trained on generated captions: (vocab, merges)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    special = [*GEMMA_SPECIAL, *(f"<0x{i:02X}>" for i in range(256))]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
    tokenizer.train_from_iterator(_captions(seed), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, show_progress=False))
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return model["vocab"], merges


def save_hub_siglip2(folder: Path, vision: dict, text: dict, vocabulary: tuple[dict, list],
                     seed: int = 0) -> Path:
    """A fixed-resolution SigLIP 2 with random weights in the Hub's layout (SIGLIP2_HUB_FILES)."""
    import torch
    from transformers import GemmaTokenizer, SiglipConfig, SiglipModel

    folder.mkdir(parents=True, exist_ok=True)
    config = siglip2_model_config(vision, text)
    torch.manual_seed(seed)
    SiglipModel(SiglipConfig.from_dict(config)).save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "preprocessor_config.json").write_text(
        json.dumps(siglip2_preprocessor_config(vision["image_size"]), indent=2) + "\n")
    vocab, merges = vocabulary
    tokenizer = GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=False, add_eos_token=True,
                               padding_side="right", model_input_names=["input_ids"])
    tokenizer.save_pretrained(folder)  # tokenizer.json (its post-processor appends <eos>)
    (folder / "tokenizer_config.json").write_text(json.dumps(SIGLIP2_TOKENIZER_CONFIG, indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(SIGLIP2_SPECIAL_TOKENS_MAP, indent=2) + "\n")
    extra = sorted(p.name for p in folder.iterdir() if p.name not in SIGLIP2_HUB_FILES)
    if extra:
        raise RuntimeError(f"unexpected files beside the Hub layout in {folder}: {extra}")
    return folder


def save_tiny_siglip2(folder: Path) -> Path:
    vocabulary = train_gemma_vocabulary()
    return save_hub_siglip2(folder, TINY_VISION, {**TINY_TEXT, "vocab_size": len(vocabulary[0])},
                            vocabulary)


def save_full_size_siglip2(folder: Path, image_size: int = 512) -> Path:
    """google/siglip2-base-patch16-<image_size>'s architecture (256,000-row embedding table),
    random weights, a small trained vocabulary."""
    return save_hub_siglip2(folder, {**FULL_SIZE_VISION, "image_size": image_size},
                            FULL_SIZE_SIGLIP2_TEXT, train_gemma_vocabulary())


# -- sentence-transformers' CLIP models (sentence-transformers/clip-ViT-B-32, clip-ViT-L-14) ----
#
# The Hub repositories hold what sentence-transformers 2.x saved: ``modules.json`` naming one
# module, ``{"idx": 0, "name": "0", "path": "0_CLIPModel", "type":
# "sentence_transformers.models.CLIPModel"}``, ``config_sentence_transformers.json``, and
# ``0_CLIPModel/`` with transformers' CLIPModel and CLIPProcessor files (config.json,
# pytorch_model.bin, preprocessor_config.json, merges.txt, vocab.json, tokenizer.json,
# tokenizer_config.json, special_tokens_map.json). OpenAI's preprocessing: shortest side to
# 224 (bicubic), centre crop 224, OpenAI's mean and std; text lower-cased, <|startoftext|> ...
# <|endoftext|>, at most 77 tokens. Current releases (5.4+) save a ``Transformer`` module
# instead: ``save_current_st_clip`` writes that layout with sentence-transformers' own save.

CLIP_B32 = {"vision": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                       "num_attention_heads": 12, "patch_size": 32, "image_size": 224},
            "text": {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
                     "num_attention_heads": 8, "vocab_size": 49408, "max_position_embeddings": 77},
            "projection_dim": 512}
CLIP_L14 = {"vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                       "num_attention_heads": 16, "patch_size": 14, "image_size": 224},
            "text": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                     "num_attention_heads": 12, "vocab_size": 49408, "max_position_embeddings": 77},
            "projection_dim": 768}
TINY_CLIP = {"vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                        "num_attention_heads": 2, "patch_size": 16, "image_size": 64},
             "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                      "num_attention_heads": 2, "max_position_embeddings": 77},
             "projection_dim": 24}
OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]
OLD_ST_CLIP_MODULES = [{"idx": 0, "name": "0", "path": "0_CLIPModel",
                        "type": "sentence_transformers.models.CLIPModel"}]
OLD_ST_VERSIONS = {"__version__": {"sentence_transformers": "2.0.0", "transformers": "4.7.0",
                                   "pytorch": "1.9.0+cu102"}}


def clip_preprocessor_config(image_size: int) -> dict:
    return {"crop_size": image_size, "do_center_crop": True, "do_normalize": True, "do_resize": True,
            "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": OPENAI_MEAN,
            "image_std": OPENAI_STD, "resample": 3, "size": image_size}


def train_clip_vocabulary(vocab_size: int = 600, seed: int = 0) -> tuple[dict, list]:
    """A byte-level BPE vocabulary with CLIP's normaliser, pre-tokeniser and ``</w>`` word
    ends, trained on generated captions: (vocab, merges)."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix="</w>"))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tokenizer.train_from_iterator(_captions(seed), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|startoftext|>", "<|endoftext|>"],
        initial_alphabet=alphabet + [c + "</w>" for c in alphabet], end_of_word_suffix="</w>",
        show_progress=False))
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    # As in CLIP's vocabulary, the two special tokens take the last ids (49406, 49407 there):
    # the 2021 configs pool the text at argmax(input_ids), i.e. at <|endoftext|>.
    special = ("<|startoftext|>", "<|endoftext|>")
    pieces = [t for t, _ in sorted(model["vocab"].items(), key=lambda item: item[1]) if t not in special]
    return {token: i for i, token in enumerate([*pieces, *special])}, merges


def save_clip_model(folder: Path, sizes: dict, vocabulary: tuple[dict, list], seed: int = 0) -> Path:
    """transformers' CLIPModel and CLIPProcessor files (what ``0_CLIPModel/`` holds), random
    weights, the weights as pytorch_model.bin as on the Hub."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = vocabulary
    # bos 0, pad 1, eos 2: the special ids of the 2021 configs (openai/clip-vit-base-patch32),
    # with which transformers pools at argmax(input_ids), the last id: <|endoftext|>.
    text = {"vocab_size": len(vocab), **sizes["text"], "bos_token_id": 0, "pad_token_id": 1,
            "eos_token_id": 2}
    config = CLIPConfig(text_config=text, vision_config=sizes["vision"],
                        projection_dim=sizes["projection_dim"])
    torch.manual_seed(seed)
    _save_bin(CLIPModel(config), folder)
    CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77).save_pretrained(folder)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>"}))
    (folder / "preprocessor_config.json").write_text(
        json.dumps(clip_preprocessor_config(sizes["vision"]["image_size"]), indent=2))
    return folder


def _save_bin(model, folder: Path) -> None:
    """config.json and pytorch_model.bin, as the 2021 repositories hold them (transformers 5
    saves safetensors only)."""
    import torch

    model.config.save_pretrained(folder)
    # Written beside and renamed: a model loaded from the old file may still map it.
    torch.save(model.state_dict(), folder / "pytorch_model.bin.partial")
    (folder / "pytorch_model.bin.partial").replace(folder / "pytorch_model.bin")


def save_old_st_clip(folder: Path, sizes: dict = TINY_CLIP, vocabulary: tuple[dict, list] | None = None
                     ) -> Path:
    """sentence-transformers/clip-ViT-*'s layout as sentence-transformers 2.x saved it."""
    folder.mkdir(parents=True, exist_ok=True)
    save_clip_model(folder / "0_CLIPModel", sizes, vocabulary or train_clip_vocabulary())
    (folder / "modules.json").write_text(json.dumps(OLD_ST_CLIP_MODULES, indent=2))
    (folder / "config_sentence_transformers.json").write_text(json.dumps(OLD_ST_VERSIONS, indent=2))
    return folder


def save_current_st_clip(folder: Path, old_layout: Path) -> Path:
    """The same model saved by the installed sentence-transformers (its current layout)."""
    from sentence_transformers import SentenceTransformer

    SentenceTransformer(str(old_layout), device="cpu").save(str(folder))
    return folder


# -- a multilingual text model aligned to a CLIP image model ---------------------------------
#
# sentence-transformers/clip-ViT-B-32-multilingual-v1 (commit d27719b): distilbert-base-
# multilingual-cased (config.json: DistilBertModel, 6 layers, dim 768, vocab 119547) at the
# root, ``1_Pooling/config.json`` (mean of the tokens), ``2_Dense/config.json``
# ``{"in_features": 768, "out_features": 512, "bias": false, "activation_function":
# "torch.nn.modules.linear.Identity"}``, ``sentence_bert_config.json`` (max_seq_length 128,
# cased), ``modules.json`` (Transformer "", Pooling, Dense), vocab.txt, tokenizer.json. It was
# made by multilingual knowledge distillation (Reimers & Gurevych 2020): the student learns to
# give a sentence and its translations the CLIP text tower's vector of the English sentence.

MULTILINGUAL_MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
]
MULTILINGUAL_FULL_SIZE = {"dim": 768, "hidden_dim": 3072, "n_layers": 6, "n_heads": 12,
                          "vocab_size": 119547, "max_position_embeddings": 512}
TINY_DISTILBERT = {"dim": 32, "hidden_dim": 64, "n_layers": 2, "n_heads": 2,
                   "max_position_embeddings": 512}
# English captions and their German and Spanish translations (the distillation pairs).
PARALLEL = [
    ("a red circle", "ein roter Kreis", "un círculo rojo"),
    ("a blue square", "ein blaues Quadrat", "un cuadrado azul"),
    ("a green triangle", "ein grünes Dreieck", "un triángulo verde"),
    ("a yellow sun over the beach", "eine gelbe Sonne über dem Strand", "un sol amarillo sobre la playa"),
    ("a dog in the garden", "ein Hund im Garten", "un perro en el jardín"),
    ("a cat on the street", "eine Katze auf der Straße", "un gato en la calle"),
    ("a boat on the lake", "ein Boot auf dem See", "un barco en el lago"),
    ("a house at night", "ein Haus bei Nacht", "una casa de noche"),
]


def train_wordpiece_vocabulary(seed: int = 0) -> list[str]:
    """A cased WordPiece vocabulary (BERT's specials first) trained on the parallel captions."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    corpus = [text for row in PARALLEL for text in row] * 20 + _captions(seed, 300)
    tokenizer.train_from_iterator(corpus, trainers.WordPieceTrainer(
        vocab_size=500, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        show_progress=False))
    vocab = json.loads(tokenizer.to_str())["model"]["vocab"]
    return [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]


def save_multilingual_text_model(folder: Path, out_features: int, sizes: dict = TINY_DISTILBERT,
                                 vocabulary: list[str] | None = None, seed: int = 0) -> Path:
    """clip-ViT-B-32-multilingual-v1's layout with random weights (``distill_multilingual``
    then aligns it to a CLIP)."""
    import torch
    from transformers import DistilBertConfig, DistilBertModel, DistilBertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocabulary = vocabulary or train_wordpiece_vocabulary()
    torch.manual_seed(seed)
    config = DistilBertConfig(**{"vocab_size": len(vocabulary), **sizes})
    _save_bin(DistilBertModel(config), folder)
    (folder / "vocab.txt").write_text("\n".join(vocabulary) + "\n")
    DistilBertTokenizer(vocab=str(folder / "vocab.txt"), do_lower_case=False,
                        model_max_length=512).save_pretrained(folder)
    (folder / "modules.json").write_text(json.dumps(MULTILINGUAL_MODULES, indent=2))
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 128, "do_lower_case": False}))
    (folder / "config_sentence_transformers.json").write_text(json.dumps(OLD_ST_VERSIONS, indent=2))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": sizes["dim"], "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False}, indent=2))
    (folder / "2_Dense").mkdir(exist_ok=True)
    (folder / "2_Dense" / "config.json").write_text(json.dumps({
        "in_features": sizes["dim"], "out_features": out_features, "bias": False,
        "activation_function": "torch.nn.modules.linear.Identity"}))
    dense = torch.nn.Linear(sizes["dim"], out_features, bias=False)
    torch.save({"linear.weight": dense.weight.detach().clone()},
               folder / "2_Dense" / "pytorch_model.bin")
    return folder


def distill_multilingual(student_folder: Path, teacher_folder: Path, steps: int = 120) -> None:
    """Multilingual knowledge distillation, as the real model was made: the student's vector
    of a caption and of its translations is trained towards the teacher CLIP's text vector
    of the English caption (MSE); saved back in place."""
    import torch
    from sentence_transformers import SentenceTransformer

    teacher = SentenceTransformer(str(teacher_folder), device="cpu")
    student = SentenceTransformer(str(student_folder), device="cpu")
    english = [row[0] for row in PARALLEL]
    with torch.no_grad():
        targets = teacher.encode(english, convert_to_tensor=True)
    texts = [text for row in PARALLEL for text in row]
    wanted = torch.cat([targets[i:i + 1].repeat(len(row), 1) for i, row in enumerate(PARALLEL)])
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(student.parameters(), lr=1e-2)
    student.train()
    for _ in range(steps):
        features = student.preprocess(texts)
        loss = torch.nn.functional.mse_loss(student(features)["sentence_embedding"], wanted)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    student.eval()
    # Written back into the files of the old layout (not re-saved by the installed release).
    _save_bin(student[0].auto_model, student_folder)
    dense = student_folder / "2_Dense" / "pytorch_model.bin"
    torch.save({"linear.weight": student[2].linear.weight.detach().clone()}, f"{dense}.partial")
    Path(f"{dense}.partial").replace(dense)
