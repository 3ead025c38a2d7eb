"""Batched vs one-at-a-time generation with ``generate_with_stats``, same model and prompts.

The authors' code generated responses one example at a time (docs/design.md §2);
``generate_with_stats`` sorts prompts by length into left-padded batches. This script measures
what that buys.

Model: the embedded SmolLM2-135M-Instruct (``ric.models.load_policy``, converted and cached on
first use, about 30 s; set RIC_CACHE_DIR to share a cache), or ``--model tiny`` (the 2-layer test
model). Prompts: ``--prompts`` questions from a fixed list, conditioned with ``build_prompt`` on
two reward values, so their lengths differ as in the online stage. Sampling uses the paper's
settings (temperature 0.7, top-p 0.9) or greedy decoding with ``--greedy``; EOS is suppressed for
all ``--max-new-tokens`` steps (min_new_tokens = max_new_tokens), so both settings generate the
same number of tokens and tokens/s compare fairly. Repeats alternate between the two settings so
that drift of a noisy machine hits both alike; medians are reported (docs/design.md §3).

    RIC_CACHE_DIR=/tmp/ric-cache python benchmarks/bench_generation.py --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from transformers.utils import logging as transformers_logging

from ric.config import GenerationConfig, ModelConfig
from ric.core import build_prompt
from ric.models.generation import GenerationResult, generate_with_stats

QUESTIONS = [
    "Why is the sky blue?",
    "How do plants make food from sunlight?",
    "What is a fox?",
    "Give me three tips for sleeping better.",
    "Explain what a neural network is to a child.",
    "What should I cook tonight with rice, eggs and spinach?",
    "Why do cats purr?",
    "How can I learn to play the guitar on my own, and how long does it usually take?",
    "What is the difference between weather and climate?",
    "Write a short poem about the sea.",
    "How does a bicycle stay upright?",
    "What are the benefits of drinking water?",
    "Summarize the story of Romeo and Juliet in two sentences.",
    "Is it better to rent or to buy a house?",
    "How do vaccines work?",
    "Why do leaves change colour in autumn?",
]
REWARD_ROWS = [(0.3, -1.2), (2.5, 0.0), (-0.7, 1.9), (4.0, 4.0)]  # standardized units


def make_prompts(count: int) -> list[str]:
    """``count`` conditioned prompts: each question with each reward row in turn."""
    return [
        build_prompt(
            QUESTIONS[i % len(QUESTIONS)], REWARD_ROWS[i // len(QUESTIONS) % len(REWARD_ROWS)]
        )
        for i in range(count)
    ]


def time_generation(
    model: Any, tokenizer: Any, prompts: list[str], settings: GenerationConfig
) -> tuple[float, GenerationResult]:
    """Seconds one ``generate_with_stats`` call takes, and its result."""
    start = time.perf_counter()
    result = generate_with_stats(model, tokenizer, prompts, settings)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--prompts", type=int, default=32, help="number of conditioned prompts")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of the fast path")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="tokens per response")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per setting")
    parser.add_argument("--greedy", action="store_true", help="greedy decoding, not sampling")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    args = parser.parse_args()

    from ric.models import load_policy

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    model, tokenizer = load_policy(ModelConfig(source=args.model, device=args.device))
    prompts = make_prompts(args.prompts)
    lengths = [len(tokenizer(prompt)["input_ids"]) for prompt in prompts]
    common = {
        "do_sample": not args.greedy,
        "max_new_tokens": args.max_new_tokens,
        "min_new_tokens": args.max_new_tokens,
    }
    batched = GenerationConfig(**common, batch_size=args.batch_size)
    single = GenerationConfig(**common, batch_size=1)
    print(
        f"model: {args.model}, {model.num_parameters() / 1e6:.1f}M parameters, "
        f"{model.dtype}, {model.device}, {torch.get_num_threads()} torch threads"
    )
    print(
        f"prompts: {len(prompts)}, {min(lengths)}-{max(lengths)} tokens; "
        f"{args.max_new_tokens} new tokens each, {'greedy' if args.greedy else 'sampled'}"
    )

    time_generation(model, tokenizer, prompts[:2], GenerationConfig(**common, batch_size=2))
    batched_times, single_times = [], []
    for repeat in range(args.repeats):
        seconds, batched_result = time_generation(model, tokenizer, prompts, batched)
        batched_times.append(seconds)
        seconds, single_result = time_generation(model, tokenizer, prompts, single)
        single_times.append(seconds)
        print(
            f"repeat {repeat + 1}: batched {batched_times[-1]:.1f} s, "
            f"one at a time {single_times[-1]:.1f} s",
            flush=True,
        )
    tokens = sum(batched_result.num_new_tokens)
    if tokens != sum(single_result.num_new_tokens):
        raise RuntimeError("the two settings generated different numbers of tokens")
    if args.greedy:
        same = sum(a == b for a, b in zip(batched_result.texts, single_result.texts, strict=True))
        print(f"identical greedy responses: {same}/{len(prompts)}")

    batched_median = statistics.median(batched_times)
    single_median = statistics.median(single_times)
    print(f"batched (batch {args.batch_size}): {tokens / batched_median:.0f} tokens/s")
    print(f"one at a time: {tokens / single_median:.0f} tokens/s")
    print(
        f"ratio batched/one-at-a-time: {single_median / batched_median:.1f}x "
        f"(median of {args.repeats})"
    )


if __name__ == "__main__":
    main()
