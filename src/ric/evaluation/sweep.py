"""`ric evaluate`: sweep preferences over held-out prompts and measure the empirical front.

For each preference w of the grid: desired rewards R = mapping(w) (standardized units, from the
training stats), conditioned prompts, batched generation, scoring with the same reward models the
stats were computed with, and per-preference means. Baselines (see ``_generate``) are asked
without rewards: MORLHF at its own preference, Rewarded Soups over the grid, base and SFT once.
Output directory:

    samples.parquet  one row per (preference, prompt): w, desired R, prompt, response, whether
                     it finished (EOS or stop string, not the token budget), rewards
    probe_samples.parquet  the behavioural probe's answers, one row per (objective probed, low
                     or high end, prompt), with their rewards (RiC models; evaluate.probe)
    summary.csv      one row per preference: w, desired R, mean raw and standardized rewards
    front.png        the front, each point labeled with its preference (paper, Figure 4)
    metrics.json     hypervolume (with its reference point), steerability, their 95% intervals
                     over resampled prompts (ric.evaluation.metrics), reward sensitivity
                     (does the model read its rewards? see ric.evaluation.sensitivity), the
                     behavioural probe (asked for more of one objective, does it give more?
                     see ric.evaluation.probe), settings
    calibration.png  the steering card's calibration curves: per objective, what the mapping
                     promised against the mean obtained, with the identity line (RiC models)
    obtained_samples.parquet  the obtained-target check's answers (calibrated models, with
                     evaluate.obtained_targets)
    report.md        plot, tables, the steering card (ric.evaluation.card) and settings
    config.yaml      the resolved config
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from ric import parallel
from ric.config import RicConfig, dump_config, require_setting
from ric.core import RewardStats
from ric.data.io import CONFIG_FILE, write_atomic, write_text_atomic
from ric.data.label import (
    add_rewards,
    raw_column,
    read_labeled_frame,
    restandardize,
    standardized_column,
)
from ric.data.sources import read_prompts
from ric.evaluation.card import (
    CALIBRATION_PLOT,
    OBTAINED_SAMPLES,
    obtained_target_check,
    steering_card,
)
from ric.evaluation.grid import resolve_grid
from ric.evaluation.metrics import front_summary, resampled_intervals, steerability
from ric.evaluation.plots import plot_calibration, plot_fronts
from ric.evaluation.probe import ProbeResult, asks_the_same, behaviour_probe
from ric.evaluation.report import write_report
from ric.evaluation.sensitivity import reward_sensitivity
from ric.models.generation import GenerationResult, generate_with_stats
from ric.rewards import RewardFunction, create_reward, score_split
from ric.runs import RunResult, TrainedPolicy, load_trained
from ric.steering import Steering

FRONT_PLOT = "front.png"
PROBE_SAMPLES = "probe_samples.parquet"
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class SweepResult:
    stats: RewardStats  # of the trained model; names give the objectives' order
    prompts: list[str]  # the held-out prompts, in the order each point was asked them
    preferences: np.ndarray  # (K, N)
    desired: np.ndarray  # (K, N) standardized
    mean_raw: np.ndarray  # (K, N) raw reward units
    mean_standardized: np.ndarray  # (K, N)
    samples: pd.DataFrame
    probe: ProbeResult | None  # the behavioural probe; None for baselines or when it is off
    steering: Steering  # how the points were asked (mapping, range, method)

    @property
    def num_prompts(self) -> int:
        return len(self.prompts)


def per_prompt_rewards(samples: pd.DataFrame, names: list[str], preferences: int) -> np.ndarray:
    """Raw rewards (K, P, N) of a sweep's ``samples`` (preference-major rows): preference,
    prompt, objective."""
    raw = samples[[raw_column(name) for name in names]].to_numpy()
    return raw.reshape(preferences, len(raw) // preferences, len(names))


def sweep(
    config: RicConfig,
    policy: TrainedPolicy,
    show_progress: bool = True,
    earlier_probe: ProbeResult | None = None,
) -> SweepResult:
    """Generate and score over the preference grid (see the module docstring).
    ``earlier_probe``: a probe of the same weights with the same generation settings (see
    ``recorded_probe``), used instead of probing again when it asked what this probe asks."""
    settings = config.evaluate
    prompts = read_prompts(settings.prompts, settings.prompt_column, settings.num_prompts)
    stats = policy.stats
    steering = Steering.for_run(policy, config.mapping)
    preferences, desired, texts, generated = _generate(
        steering, policy, config, prompts, show_progress
    )
    responses = generated.texts
    repeated_prompts = prompts * len(preferences)
    scorers = [create_reward(reward.type, reward.options) for reward in policy.reward_configs()]
    raw = np.column_stack(
        [score_split(scorer, repeated_prompts, responses) for scorer in scorers]
    )  # (K * P, N)
    standardized = stats.standardize(raw)
    per_preference = (len(preferences), len(prompts), stats.num_objectives)
    samples = pd.DataFrame(
        {
            "preference_index": np.repeat(np.arange(len(preferences)), len(prompts)),
            "preference": [w.tolist() for w in np.repeat(preferences, len(prompts), axis=0)],
            "desired": [r.tolist() for r in np.repeat(desired, len(prompts), axis=0)],
            "prompt": repeated_prompts,
            "conditioned_prompt": texts,
            "response": responses,
            "finished": generated.finished,
        }
    )
    add_rewards(samples, stats, raw)
    return SweepResult(
        stats=stats,
        steering=steering,
        prompts=prompts,
        preferences=preferences,
        desired=desired,
        mean_raw=raw.reshape(per_preference).mean(axis=1),
        mean_standardized=standardized.reshape(per_preference).mean(axis=1),
        samples=samples,
        probe=(
            _probe(policy, steering, prompts, config, scorers, show_progress, earlier_probe)
            if settings.probe and steering.takes_rewards
            else None
        ),
    )


def _probe(
    policy: TrainedPolicy,
    steering: Steering,
    prompts: list[str],
    config: RicConfig,
    scorers: list[RewardFunction],
    show_progress: bool,
    earlier: ProbeResult | None,
) -> ProbeResult:
    """The behavioural probe: ``earlier`` when it asked the same, else a new one."""
    if earlier is not None and asks_the_same(earlier, steering, prompts):
        return earlier
    return behaviour_probe(policy, steering, prompts, config.generation, scorers, show_progress)


def recorded_probe(folder: Path) -> ProbeResult | None:
    """The probe of the evaluation in ``folder`` (its metrics and answers); None without one."""
    metrics, samples = folder / METRICS_FILE, folder / PROBE_SAMPLES
    if not metrics.is_file() or not samples.is_file():
        return None
    summary = json.loads(metrics.read_text()).get("probe")
    return ProbeResult(summary, pd.read_parquet(samples)) if summary else None


def _generate(
    steering: Steering,
    policy: TrainedPolicy,
    config: RicConfig,
    prompts: list[str],
    show_progress: bool,
) -> tuple[np.ndarray, np.ndarray, list[str], GenerationResult]:
    """Preferences (K, N), desired rewards (K, N; NaN for baselines, which are not asked),
    prompt texts and generations (K * P, preference-major). The steering picks the points
    (``Steering.sweep_preferences``); a model that answers every point itself (RiC, and the
    one point of base, SFT or MORLHF) generates them in one batch, a Rewarded Soups model
    once per point with its own interpolated weights."""
    grid = resolve_grid(
        steering.num_objectives,
        config.evaluate.grid,
        config.evaluate.divisions,
        config.evaluate.preferences,
    )
    preferences = steering.sweep_preferences(grid)
    desired = steering.map_preferences(preferences)
    generate = partial(
        generate_with_stats,
        tokenizer=policy.tokenizer,
        settings=config.generation,
        show_progress=show_progress,
    )
    if steering.method.name != "soups":
        texts = (
            steering.grid_prompts(prompts, desired)
            if steering.takes_rewards
            else steering.prompts(prompts) * len(preferences)
        )
        # One preference point per batch: a point asked for short answers ends its batch early.
        points = np.repeat(np.arange(len(preferences)), len(prompts)).tolist()
        return preferences, desired, texts, generate(policy.model, prompts=texts, groups=points)
    plain = steering.prompts(prompts)
    per_soup = [generate(steering.model_for(policy, w), prompts=plain) for w in preferences]
    return preferences, desired, plain * len(preferences), GenerationResult.concatenate(per_soup)


def summary_table(result: SweepResult, names: list[str]) -> pd.DataFrame:
    """One row per preference: w_i, desired_i (standardized), mean raw and standardized r_i."""
    return summary_frame(
        result.preferences, result.desired, result.mean_raw, result.mean_standardized, names
    )


def summary_frame(
    preferences: np.ndarray,
    desired: np.ndarray,
    mean_raw: np.ndarray,
    mean_standardized: np.ndarray,
    names: list[str],
) -> pd.DataFrame:
    """``summary_table`` from its (K, N) arrays (the image sweep has no SweepResult)."""
    blocks = {
        "w": preferences,
        "desired": desired,
        "mean": mean_raw,
        "mean_standardized": mean_standardized,
    }
    columns = {
        f"{prefix}_{name}": values[:, i]
        for prefix, values in blocks.items()
        for i, name in enumerate(names)
    }
    return pd.DataFrame(columns)


def _sensitivity(policy: TrainedPolicy, count: int) -> dict | None:
    """`reward_sensitivity` on ``count`` pairs drawn (seeded) from the model's training data;
    None when off (0), for baselines (no rewards in their prompts) or when that data is no
    longer where training read it."""
    training_data = Path(policy.config.train.data)
    if count == 0 or not policy.method.conditioned or not (training_data / CONFIG_FILE).is_file():
        return None
    frame, _, columns = read_labeled_frame(training_data)
    frame = restandardize(frame.sample(n=min(count, len(frame)), random_state=0), policy.stats)
    return reward_sensitivity(
        policy,
        frame[columns.prompt_column].tolist(),
        frame[columns.response_column].tolist(),
        frame[[standardized_column(name) for name in policy.stats.names]].to_numpy(),
    )


def reference_point(configured: list[float] | None, stats: RewardStats) -> np.ndarray:
    """The hypervolume reference point: ``evaluate.reference`` if set, else the default."""
    if configured is not None:
        return np.asarray(configured, dtype=float)
    return np.asarray(default_reference(stats))


def default_reference(stats: RewardStats) -> list[float]:
    """The hypervolume reference point when none is set: the labeled data's minimum of each
    objective, in raw units (every point a model reaches on average should dominate it)."""
    minimum = stats.unstandardize(np.array([row[0] for row in stats.quantiles]))
    return [float(v) for v in minimum]


def run_evaluate(
    config: RicConfig, show_progress: bool = True, earlier_probe: ProbeResult | None = None
) -> RunResult:
    """Run the sweep and write every artifact of the module docstring; return the directory and
    the metrics written there. ``earlier_probe``: see ``sweep``."""
    settings = config.evaluate
    require_setting("evaluate.output", settings.output, "output directory")
    require_setting("evaluate.model", settings.model, "model", hint=" to a `ric train` output")
    require_setting("evaluate.prompts", settings.prompts, "held-out prompts")
    policy = load_trained(
        settings.model, merged=True, dtype=config.model.dtype, device=config.model.device
    )
    result = sweep(config, policy, show_progress, earlier_probe)
    stats = result.stats
    names = list(stats.names)
    reference = reference_point(settings.reference, stats)
    metrics = {
        "model": settings.model,
        "objectives": names,
        "num_prompts": result.num_prompts,
        "num_preferences": len(result.preferences),
        "front": front_summary(result.mean_raw, reference),
        "steerability": steerability(
            result.preferences, result.desired, result.mean_standardized, names
        ),
        "intervals": (
            resampled_intervals(
                per_prompt_rewards(result.samples, names, len(result.preferences)),
                result.preferences,
                reference,
                names,
                settings.resamples,
            )
            if settings.resamples
            else None
        ),
        "mapping": result.steering.describe(),
        "reward_sensitivity": _sensitivity(policy, settings.sensitivity_samples),
        "probe": result.probe.summary if result.probe else None,
        "steering_card": None,
    }
    output = Path(settings.output)
    summary = summary_table(result, names)
    steering = result.steering
    check_samples = None
    if steering.takes_rewards:
        card = steering_card(
            steering,
            result.preferences,
            result.desired,
            result.mean_standardized,
            metrics["front"]["hypervolume"],  # type: ignore[index]
            result.probe.samples if result.probe else None,
        )
        if settings.obtained_targets and steering.calibration is not None:
            card["obtained_targets"], check_samples = obtained_target_check(
                policy,
                steering,
                result.prompts,
                config.generation,
                [create_reward(reward.type, reward.options) for reward in policy.reward_configs()],
                settings.obtained_targets,
                show_progress,
            )
        metrics["steering_card"] = card

    def write_evaluation() -> None:
        write_atomic(output / "samples.parquet", lambda tmp: result.samples.to_parquet(tmp))
        if result.probe:
            probe_samples = result.probe.samples
            write_atomic(output / PROBE_SAMPLES, lambda tmp: probe_samples.to_parquet(tmp))
        else:  # an earlier evaluation's answers in this folder would pass for this one's
            (output / PROBE_SAMPLES).unlink(missing_ok=True)
        if check_samples is not None:
            checked = check_samples
            write_atomic(output / OBTAINED_SAMPLES, lambda tmp: checked.to_parquet(tmp))
        else:
            (output / OBTAINED_SAMPLES).unlink(missing_ok=True)
        if metrics["steering_card"]:
            plot_calibration(
                names,
                np.asarray(metrics["steering_card"]["promised_rewards"]),
                result.mean_standardized,
                output / CALIBRATION_PLOT,
                f"Promised vs obtained, {result.num_prompts} held-out prompts "
                f"({steering.mapping.method})",
            )
        else:
            (output / CALIBRATION_PLOT).unlink(missing_ok=True)
        write_text_atomic(output / "summary.csv", summary.to_csv(index=False))
        title = f"Empirical front, {result.num_prompts} held-out prompts"
        plot_fronts(
            {policy.method.name.replace("ric", "RiC"): (result.preferences, result.mean_raw)},
            names,
            output / FRONT_PLOT,
            title,
        )
        write_text_atomic(output / METRICS_FILE, json.dumps(metrics, indent=1))
        write_text_atomic(output / CONFIG_FILE, dump_config(config))
        write_report(output, metrics, summary, config)

    parallel.on_main(write_evaluation)
    return RunResult(output, metrics)
