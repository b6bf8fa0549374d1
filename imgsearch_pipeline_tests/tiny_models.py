"""A small SigLIP with random weights saved to a folder, loadable offline through
sentence-transformers (tests use a tiny one; the benchmark a larger one)."""

from pathlib import Path

WORDS = (
    "a photo of red green blue yellow purple orange circle square triangle stripes "
    "rings dots on background to cat dog"
).split()  # noqa: SIM905


def save_tiny_siglip(folder: Path, image_size: int = 32, hidden: int = 32,
                     vision: dict | None = None) -> Path:
    """Save model + processor to ``folder``; ``vision`` overrides the vision tower's config."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        PreTrainedTokenizerFast,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        SiglipProcessor,
    )

    torch.manual_seed(0)
    vision_config = vision or {"image_size": image_size, "patch_size": 8, "hidden_size": hidden,
                               "intermediate_size": 2 * hidden, "num_hidden_layers": 2,
                               "num_attention_heads": 2}
    hidden = vision_config["hidden_size"]
    vocab = {"<pad>": 0, "<unk>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    config = SiglipConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": hidden,
                     "intermediate_size": 2 * hidden, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 16,
                     "pad_token_id": 0, "bos_token_id": None, "eos_token_id": 2},
        vision_config=vision_config,
    )
    SiglipModel(config).save_pretrained(folder)
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>",
                                   unk_token="<unk>", eos_token="</s>", model_max_length=16)
    size = vision_config["image_size"]
    processor = SiglipProcessor(
        image_processor=SiglipImageProcessor(size={"height": size, "width": size}),
        tokenizer=fast,
    )
    processor.save_pretrained(folder)
    return folder
