"""A tiny causal language model and tokenizer built in code, for tests and `--smoke` runs.

docs/design.md §3: a Llama with hidden size 64, 2 layers and 4 heads, and a byte-level BPE tokenizer
trained in code on a few sentences (vocabulary ~400, because logits dominate the cost of such a
small model otherwise). It mirrors the embedded SmolLM2 where it matters to RiC: eos = pad =
``<|im_end|>`` and no automatic BOS. Building both takes a few hundredths of a second.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

EOS_TOKEN = "<|im_end|>"
SPECIAL_TOKENS = [EOS_TOKEN, "<|im_start|>"]
TRAINING_TEXT = [
    "### Input: What is a fox? <R1> 0.3 <R2> -1.2 ### Response: A fox is a small wild animal.",
    "The quick brown fox jumps over the lazy dog. Plants need water, light and good soil.",
    "Why is the sky blue? Sunlight scatters in the air, and blue light scatters the most.",
    "I am happy to help! What a wonderful question. Thank you, have a lovely day.",
    "0123456789 -0.1 1.5 -2.7 3.9 4.0 <R3> <R4> user assistant system",
]


def build_tiny_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``TRAINING_TEXT`` (any text still encodes)."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(TRAINING_TEXT, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN
    )


def build_tiny_model(
    tokenizer: PreTrainedTokenizerFast, seed: int = 0, hidden_size: int = 64
) -> LlamaForCausalLM:
    """A randomly initialized (seeded) 2-layer Llama sized to ``tokenizer``."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def build_tiny(seed: int = 0) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """The tiny model and its tokenizer."""
    tokenizer = build_tiny_tokenizer()
    return build_tiny_model(tokenizer, seed=seed), tokenizer
