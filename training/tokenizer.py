"""Byte-level BPE tokenizer trained with `tokenizers` on local text, wrapped for transformers.

    llmops model bootstrap   # trains this tokenizer, then pre-trains the base model
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>"]


def python_reference_text() -> list[str]:
    """Python's own reference text (stdlib `pydoc_data.topics`, ~465k characters), one string a topic."""
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: Path | None = None,
                    model_max_length: int = 512):
    """Train a byte-level BPE on `texts` and return a `PreTrainedTokenizerFast` (saved to out_dir if given)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    # Without model_input_names, generate() fails on token_type_ids (ENVIRONMENT.md).
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|pad|>", bos_token="<|bos|>", eos_token="<|eos|>",
        unk_token="<|unk|>", model_input_names=["input_ids", "attention_mask"],
        model_max_length=model_max_length,
    )
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast
