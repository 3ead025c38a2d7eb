"""`ric calibrate`: measure what a RiC model obtains when asked for desired rewards, fit the
calibration (``ric.core.calibration``) and write a run that steers with it.

The design: ``calibrate.levels`` desired values per objective, evenly over the range the run's
mapping spans; every combination of levels (or ``calibrate.max_points`` of them, drawn so that
each level of each objective appears equally often); ``calibrate.answers_per_point`` answers per
point, each to another prompt (the prompts are dealt out in a seeded order, so each is used
equally often). Answers are generated and scored in shards, as in the online stage, saved
under ``answers-<hash of the settings>/``: a killed run resumes at its last saved shard, and a
change of settings starts a new cache rather than mixing answers.

Output folder (a trained run that `ric generate`, `ric evaluate`, `ric serve`, `ric export` and
`ric online` take; it uses the model's weights, not a copy, see ``ric.runs``):

    calibration.json   the model it calibrates, the fitted calibration, the design and the fit
    config.yaml        the model's run config (rewards, template, model, training data), with
                       mapping.method calibrated, the generation settings it was measured with
                       and these settings
    stats.json         the model's stats (the standardization the calibration is in)
    samples.parquet    one row per answer: design point, prompt, desired rewards, answer,
                       whether it finished, raw and standardized rewards
    calibration.png    desired vs mean obtained per objective, the fit, and the identity line
    metrics.json       the fit's summary; written last, it marks the run finished
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ric import parallel
from ric.config import RicConfig, dump_config, load_config, require_setting
from ric.core import CALIBRATED, Calibration, design_levels, fit_calibration
from ric.data.io import CONFIG_FILE, STATS_FILE, write_atomic, write_text_atomic
from ric.data.label import restandardize, standardized_column
from ric.data.shards import ShardCache
from ric.data.sources import read_prompts
from ric.evaluation.plots import plot_calibration
from ric.runs import (
    CALIBRATION_FILE,
    METRICS_FILE,
    SHIPPED_RUNS,
    RunResult,
    finished_run,
    load_trained,
    run_folder,
    settings_of,
    weights_source,
)
from ric.steering import Steering
from ric.training.online import SECONDS_COLUMN, generate_and_score, target_column

PLOT_FILE = "calibration.png"
# An objective whose reach is narrower than this (sd) is one the model does not steer.
FLAT_REACH = 0.1
SAMPLES_FILE = "samples.parquet"
# What makes a calibration: a rerun with the same values reuses it, with others is refused.
SETTINGS = ("calibrate", "generation", "mapping")


def design_points(levels: int, objectives: int, max_points: int, seed: int) -> np.ndarray:
    """(K, N) level indices: every combination when there are at most ``max_points``, else
    ``max_points`` points in which each level of each objective appears equally often (up to
    one), paired across objectives at random (seeded): a Latin hypercube over the levels."""
    if levels**objectives <= max_points:
        return np.array(list(itertools.product(range(levels), repeat=objectives)))
    rng = np.random.default_rng(seed)
    balanced = np.arange(max_points) * levels // max_points
    return np.column_stack([rng.permutation(balanced) for _ in range(objectives)])


def calibration_plan(
    prompts: list[str],
    names: list[str],
    levels: np.ndarray,
    points: np.ndarray,
    answers_per_point: int,
    seed: int,
) -> pd.DataFrame:
    """One row per answer to generate: design point, prompt and desired rewards (standardized,
    ``target_column``), point by point. Prompts are dealt out cyclically in a seeded order, so a
    point's answers go to different prompts (when there are as many) and each prompt is used
    equally often (to within one)."""
    count = len(points) * answers_per_point
    deck = np.random.default_rng([seed, 1]).permutation(len(prompts))
    deck = deck[np.arange(count) % len(prompts)]
    plan = pd.DataFrame(
        {
            "point": np.repeat(np.arange(len(points)), answers_per_point),
            "prompt": [prompts[i] for i in deck],
        }
    )
    for i, name in enumerate(names):
        plan[target_column(name)] = np.repeat(levels[i, points[:, i]], answers_per_point)
    return plan


def weights_reference(model: str, output: Path) -> str:
    """How ``calibration.json`` names the weights' run: a shipped run by its name, any other
    folder relative to ``output`` (so the two folders move together)."""
    if model in SHIPPED_RUNS and not Path(model).exists():
        return model
    return os.path.relpath(Path(model).resolve(), output.resolve())


def run_calibrate(config: RicConfig, show_progress: bool = True) -> RunResult:
    """Generate at the design, fit, and write the calibrated run (module docstring)."""
    settings = config.calibrate
    require_setting("calibrate.model", settings.model, "model", hint=" to a RiC run")
    require_setting("calibrate.output", settings.output, "output directory")
    unseen = " to prompts the model was not evaluated on"
    require_setting("calibrate.prompts", settings.prompts, "prompts", hint=unseen)
    output = Path(settings.output)
    source = run_folder(settings.model)
    weights = weights_source(source) if (source / CALIBRATION_FILE).is_file() else None
    model = str(weights) if weights is not None else settings.model  # calibrate the weights
    if output.resolve() == run_folder(model).resolve():
        raise ValueError(f"--output {str(output)!r} is the model's own folder: choose another")
    config = replace(config, mapping=replace(config.mapping, method=CALIBRATED))
    requested = settings_of(config, SETTINGS)
    if finished_run(output, requested, "calibration"):
        return RunResult.recorded(output)
    policy = load_trained(model, merged=True, dtype=config.model.dtype, device=config.model.device)
    if not policy.method.conditioned:
        raise ValueError(
            f"{settings.model!r} is a {policy.method.name} baseline, which takes no rewards: "
            "only a RiC model can be calibrated"
        )
    steering = replace(Steering.for_run(policy, config.mapping), calibration=None)
    names = list(steering.names)
    prompts = read_prompts(settings.prompts, settings.prompt_column)
    levels = design_levels(steering.r_min, steering.r_max, settings.levels)
    points = design_points(settings.levels, len(names), settings.max_points, settings.seed)
    plan = calibration_plan(
        prompts, names, levels, points, settings.answers_per_point, settings.seed
    )
    shards = ShardCache.under(
        output,
        "answers",
        {
            "plan": plan.to_dict(orient="list"),
            "generation": asdict(config.generation),
            "model": str(run_folder(model).resolve()),
            "dtype": config.model.dtype,
        },
    )
    answers = generate_and_score(
        policy,
        steering,
        plan,
        config.generation,
        shards,
        settings.shard_size,
        config.generation.seed,
        "calibrate",
        show_progress,
    )
    seconds = float(answers[SECONDS_COLUMN].sum())
    answers = answers.drop(columns=SECONDS_COLUMN)
    answers = restandardize(answers, policy.stats)
    desired = answers[[target_column(name) for name in names]].to_numpy()
    obtained = answers[[standardized_column(name) for name in names]].to_numpy()
    calibration = fit_calibration(tuple(names), levels, desired, obtained)
    metrics = fit_summary(calibration, answers, seconds)
    record = {
        "model": weights_reference(model, output),
        "calibration": calibration.to_json(),
        "design": {
            "levels": settings.levels,
            "points": len(points),
            "answers_per_point": settings.answers_per_point,
            "prompts": settings.prompts,
            "seed": settings.seed,
        },
        "fit": metrics,
    }
    # The run it writes is the weights' run (rewards, template, model, training data) asked with
    # the calibrated mapping and the generation settings it was measured with.
    recorded = replace(
        load_config(run_folder(model) / CONFIG_FILE),
        mapping=config.mapping,
        generation=config.generation,
        calibrate=replace(settings, model=model),
    )

    def write_run() -> None:
        output.mkdir(parents=True, exist_ok=True)
        write_atomic(output / SAMPLES_FILE, lambda tmp: answers.to_parquet(tmp, index=False))
        shutil.copyfile(policy.folder / STATS_FILE, output / STATS_FILE)
        write_text_atomic(output / CALIBRATION_FILE, json.dumps(record, indent=1))
        write_text_atomic(output / CONFIG_FILE, dump_config(recorded))
        means = per_point_means(answers, names)
        plot_calibration(
            names,
            means[0],
            means[1],
            output / PLOT_FILE,
            f"Calibration of {settings.model}: {len(answers)} answers",
            (calibration.levels, calibration.curves),
        )
        write_text_atomic(output / METRICS_FILE, json.dumps(metrics, indent=1))

    parallel.on_main(write_run)
    return RunResult(output, metrics)


def per_point_means(answers: pd.DataFrame, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(desired, mean obtained), each (K, N) standardized, per design point."""
    columns = [target_column(n) for n in names] + [standardized_column(n) for n in names]
    means = answers.groupby("point")[columns].mean().to_numpy()
    return means[:, : len(names)], means[:, len(names) :]


def fit_summary(
    calibration: Calibration, answers: pd.DataFrame, seconds: float
) -> dict[str, object]:
    """What `ric calibrate` reports: per objective the reach, the slope of obtained on desired
    (1: the prompt value is met one for one) and the side effects; the fit's mean absolute error
    on the design points' means against the paper's assumption (obtained = desired)."""
    names = list(calibration.names)
    means = per_point_means(answers, names)
    lowest, highest = calibration.reach
    return {
        "answers": len(answers),
        "finished": float(answers["finished"].mean()),
        "seconds": seconds,
        "reach": {
            name: [float(low), float(high)]
            for name, low, high in zip(names, lowest, highest, strict=True)
        },
        "asked_range": {
            name: [float(low), float(high)]
            for name, low, high in zip(names, calibration.low, calibration.high, strict=True)
        },
        "side_effects": {
            name: {other: float(calibration.cross[j, i]) for i, other in enumerate(names) if i != j}
            for j, name in enumerate(names)
        },
        "unsteered": [
            name
            for name, low, high in zip(names, lowest, highest, strict=True)
            if high - low < FLAT_REACH
        ],
        "error_of_fit": float(np.mean(np.abs(calibration.predict(means[0]) - means[1]))),
        "error_if_uncalibrated": float(np.mean(np.abs(means[0] - means[1]))),
    }
