"""User-defined reward classes for the labeling tests, loaded as 'label_rewards:Name'."""

import time

import numpy as np


class CountingLength:
    """Response length in characters; logs each batch size to ``log`` and sleeps ``delay``."""

    def __init__(self, log: str, delay: float = 0.0):
        self.log = log
        self.delay = delay

    def score(self, prompts, responses):
        time.sleep(self.delay)
        with open(self.log, "a") as handle:
            handle.write(f"{len(responses)}\n")
        return np.array([len(r) for r in responses], dtype=float)


class WordCount:
    def score(self, prompts, responses):
        return np.array([len(r.split()) for r in responses], dtype=float)


class NaNAt:
    """Word count, but NaN at the given global positions of the texts (matched by content)."""

    def __init__(self, bad_responses: list[str]):
        self.bad = set(bad_responses)

    def score(self, prompts, responses):
        return np.array([np.nan if r in self.bad else len(r) for r in responses], dtype=float)


class SharedWords:
    """Words the response shares with its prompt: a reward that depends on the prompt."""

    def score(self, prompts, responses):
        pairs = zip(prompts, responses, strict=True)
        return np.array([len(set(p.split()) & set(r.split())) for p, r in pairs], dtype=float)
