"""Behavioural probe: asked for more of one objective, does the model give more of it?

For each objective i, every other objective is asked at the middle of its desired range and
objective i at the low end of its range, then at the high end (r_min_i and r_max_i of the mapping
range, standardized units), on the held-out prompts. The obtained mean of objective i at both
ends and their difference in training standard deviations (the stats' std; the difference of
standardized means) say how far the model moves that objective when asked, one objective at a
time, whatever the mapping's trade-offs. A model that ignores its rewards moves nothing
(difference near 0); the demo's goal is at least 1 standard deviation per objective.

The move comes with its standard error over the prompts (each prompt is asked at both ends, so
the per-prompt differences are paired): one sampled answer per prompt and end makes the move a
noisy figure (on the embedded task's 48 questions, two sampling seeds moved it by up to 0.46 sd),
and the error says how far to trust one run's value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ric.config import GenerationConfig
from ric.core import RewardStats
from ric.data.label import add_rewards
from ric.models.generation import GenerationResult, generate_with_stats
from ric.rewards import RewardFunction, score_split
from ric.runs import TrainedPolicy
from ric.steering import Steering


@dataclass(frozen=True)
class ProbeResult:
    summary: dict[str, dict[str, float | None]]  # per objective: see ``probe_summary``
    samples: pd.DataFrame  # one row per (objective probed, end, prompt): what was answered


def probe_targets(r_min: np.ndarray, r_max: np.ndarray) -> np.ndarray:
    """Desired rewards (N, 2, N): for objective i, [i at r_min_i, i at r_max_i], the others at
    the middle of their ranges."""
    middle = (np.asarray(r_min, dtype=float) + np.asarray(r_max, dtype=float)) / 2
    targets = np.repeat(middle[None, None, :], 2, axis=1).repeat(len(middle), axis=0)
    for i in range(len(middle)):
        targets[i, 0, i], targets[i, 1, i] = r_min[i], r_max[i]
    return targets


def probe_differences(obtained: np.ndarray) -> np.ndarray:
    """(N,) high-end minus low-end mean of each probed objective from ``obtained`` (N, 2, P, N)
    standardized rewards: the move in training standard deviations."""
    means = obtained.mean(axis=2)  # (N, 2, N)
    index = np.arange(obtained.shape[0])
    return means[index, 1, index] - means[index, 0, index]


def probe_standard_errors(obtained: np.ndarray, per_prompt: int = 1) -> list[float | None]:
    """(N,) standard error of each move of ``probe_differences`` over the prompts: the sample
    standard deviation of the per-prompt differences (high minus low answer to the same prompt)
    over the square root of their number; None with fewer than 2 prompts. ``per_prompt``
    answers in a row per prompt (images of one caption) are one prompt's: their differences
    are averaged first, as answers to the same prompt are not independent."""
    count, _, answers, _ = obtained.shape
    prompts = answers // per_prompt
    if prompts < 2:
        return [None] * count
    index = np.arange(count)
    paired = obtained[index, 1, :, index] - obtained[index, 0, :, index]  # (N, P * per_prompt)
    per_prompt_means = paired.reshape(count, prompts, per_prompt).mean(axis=2)
    return [float(e) for e in per_prompt_means.std(axis=1, ddof=1) / np.sqrt(prompts)]


def probe_generations(
    policy: TrainedPolicy,
    steering: Steering,
    prompts: Sequence[str],
    generation: GenerationConfig,
    show_progress: bool = False,
) -> tuple[np.ndarray, GenerationResult]:
    """The probe's desired rewards (2N, N) over the steering's range, rows in ``probe_targets``
    order, and its generations (2N * P, target-major), all in one batched call."""
    targets = probe_targets(steering.r_min, steering.r_max).reshape(-1, steering.num_objectives)
    texts = steering.grid_prompts(prompts, targets)
    ends = np.repeat(np.arange(len(targets)), len(prompts)).tolist()  # one end per batch
    return targets, generate_with_stats(
        policy.model, policy.tokenizer, texts, generation, show_progress, groups=ends
    )


def asks_the_same(earlier: ProbeResult, steering: Steering, prompts: Sequence[str]) -> bool:
    """True when ``earlier`` asked exactly the targets and prompts that a probe of ``steering``
    on ``prompts`` asks. The probe asks desired rewards directly, not through the mapping: a
    probe of the same weights with the same generation settings (a calibrated run and the run
    it calibrates) then gives the same answers, and ``earlier`` can stand for it."""
    targets = probe_targets(steering.r_min, steering.r_max).reshape(-1, steering.num_objectives)
    samples = earlier.samples
    return (
        len(samples) == len(targets) * len(prompts)
        and samples["prompt"].tolist() == list(prompts) * len(targets)
        and np.array_equal(
            np.asarray(samples["desired"].tolist(), dtype=float),
            np.repeat(targets, len(prompts), axis=0),
        )
    )


def behaviour_probe(
    policy: TrainedPolicy,
    steering: Steering,
    prompts: Sequence[str],
    generation: GenerationConfig,
    scorers: Sequence[RewardFunction],
    show_progress: bool = False,
) -> ProbeResult:
    """The probe's summary (per objective: desired and obtained means, raw and standardized, at
    the low and high end, ``difference_sd``, the move in training standard deviations, and its
    standard error over the prompts, ``difference_se``) and the answers it was computed from."""
    prompts = list(prompts)
    targets, generated = probe_generations(policy, steering, prompts, generation, show_progress)
    repeated = prompts * len(targets)
    raw = np.column_stack([score_split(scorer, repeated, generated.texts) for scorer in scorers])
    names = policy.stats.names
    samples = pd.DataFrame(
        {
            "probed": np.repeat(names, 2 * len(prompts)),
            "end": np.tile(np.repeat(["low", "high"], len(prompts)), len(names)),
            "desired": [row.tolist() for row in np.repeat(targets, len(prompts), axis=0)],
            "prompt": repeated,
            "response": generated.texts,
            "finished": generated.finished,
        }
    )
    add_rewards(samples, policy.stats, raw)
    return ProbeResult(probe_summary(policy.stats, targets, raw), samples)


def probe_summary(
    stats: RewardStats, targets: np.ndarray, raw: np.ndarray, per_prompt: int = 1
) -> dict[str, dict[str, float]]:
    """The probe's numbers from its targets (2N, N) and the raw rewards (2N * P * per_prompt, N)
    of what was generated for them (target-major; ``per_prompt`` answers in a row per prompt),
    for text or images alike."""
    count = stats.num_objectives
    shape = (count, 2, len(raw) // (2 * count), count)
    raw, standardized = raw.reshape(shape), stats.standardize(raw).reshape(shape)
    differences = probe_differences(standardized)
    errors = probe_standard_errors(standardized, per_prompt)
    return {
        name: {
            "desired_low": float(targets[2 * i, i]),
            "desired_high": float(targets[2 * i + 1, i]),
            "obtained_low": float(standardized[i, 0, :, i].mean()),
            "obtained_high": float(standardized[i, 1, :, i].mean()),
            "obtained_low_raw": float(raw[i, 0, :, i].mean()),
            "obtained_high_raw": float(raw[i, 1, :, i].mean()),
            "difference_sd": float(differences[i]),
            "difference_se": errors[i],
        }
        for i, name in enumerate(stats.names)
    }
