"""Several models swept on the same prompts, grid, mapping and reference point, in one report.

Each model gets a full `ric evaluate` output in its own folder; then one plot holds every front
(the paper's Figure 4 for methods, or offline vs online iterations) and one table the
hypervolumes, all against the same reference point, so the numbers can be compared. A model's
folder is reused when it already holds an evaluation made with the same config (a rerun after a
crash only evaluates what is missing).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ric import parallel
from ric.config import RicConfig, dump_config, load_config
from ric.core import CALIBRATED
from ric.data.io import CONFIG_FILE, STATS_FILE, load_stats, write_text_atomic
from ric.evaluation.metrics import (
    basic_interval,
    front_summary,
    prompt_draws,
    resampled_hypervolumes,
    resampled_means,
    steerability,
)
from ric.evaluation.plots import plot_fronts
from ric.evaluation.probe import ProbeResult
from ric.evaluation.report import REPORT_FILE, markdown_table
from ric.evaluation.sweep import (
    METRICS_FILE,
    default_reference,
    per_prompt_rewards,
    recorded_probe,
    run_evaluate,
)
from ric.runs import RunResult, read_calibration, run_folder, weights_source
from ric.runtime import release_memory

COMPARISON_PLOT = "fronts.png"
COMPARISON_TABLE = "comparison.csv"
Interval = list[float] | None  # [low, high] of a 95% interval; None where none was computed


@dataclass(frozen=True)
class ComparedModel:
    """One row of a comparison: a model, or a group of models forming one front (MORLHF)."""

    label: str
    points: int  # points of its front: one per preference it was swept at (base, SFT: one)
    hypervolume: float  # of its front, raw reward units, against the comparison's reference
    # of its noise-free hypervolume, over resampled prompts (None: evaluate.resamples is 0)
    hypervolume_interval: Interval
    # its noise-free hypervolume minus the last model's, resampled on the same prompts: (0, 0)
    # for the last
    minus_last_interval: Interval
    # objective -> the behavioural probe's move (``difference_sd``, ``difference_se``; see
    # ric.evaluation.probe); None for a model that is not asked for rewards
    probe: dict[str, dict[str, Any]] | None


@dataclass(frozen=True)
class Comparison:
    """What ``evaluate_models`` wrote: the report, and its table's rows as data."""

    report: Path  # report.md, beside comparison.csv and fronts.png
    models: tuple[ComparedModel, ...]  # in the order given: the last is the gaps' reference


def folder_name(label: str) -> str:
    """A file-system-safe folder name for a model label ('iteration 1' -> 'iteration-1')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-") or "model"


def evaluate_models(
    models: Mapping[str, str | Path | Sequence[str | Path]],
    config: RicConfig,
    output: Path,
    show_progress: bool = True,
    appendix: str = "",
) -> Comparison:
    """Evaluate every ``label -> model directory`` and write the comparison; return the report
    and its rows.

    A label may name several directories (MORLHF: one model per preference): each is evaluated
    in its own sub-folder and their points form one front. ``appendix`` (markdown) ends the
    report, e.g. a cost table."""
    if not models:
        raise ValueError("no models to compare")
    groups = {
        label: [Path(m)] if isinstance(m, str | Path) else [Path(v) for v in m]
        for label, m in models.items()
    }
    empty = [label for label, members in groups.items() if not members]
    if empty:
        raise ValueError(f"no model directories for {empty[0]!r}")
    first = next(iter(groups.values()))[0]
    reference = config.evaluate.reference or default_reference(load_stats(first / STATS_FILE))
    compared, steerings, fronts, names, group_rewards = [], [], {}, None, []
    # weights -> their probe: a calibrated run and the run it calibrates are probed once
    probes_of_weights: dict[Path, ProbeResult] = {}
    for label, members in groups.items():
        folders = _member_folders(output, label, members)
        summaries, probes, rewards = [], [], []
        for model, folder in zip(members, folders, strict=True):
            weights = _weights(model)
            earlier = probes_of_weights.get(weights)
            metrics = _evaluation(model, folder, config, reference, show_progress, earlier)
            if earlier is None and (probe := recorded_probe(folder)) is not None:
                probes_of_weights[weights] = probe
            release_memory()  # the next model loads into what this one freed
            if names is not None and metrics["objectives"] != names:
                raise ValueError(
                    f"{label!r} has objectives {metrics['objectives']}, the others {names}: "
                    "only models trained on the same rewards can be compared"
                )
            names = metrics["objectives"]
            summaries.append(pd.read_csv(folder / "summary.csv"))
            probes.append(metrics.get("probe"))
            samples = pd.read_parquet(folder / "samples.parquet")
            rewards.append(per_prompt_rewards(samples, names, len(summaries[-1])))
        assert names is not None
        summary = pd.concat(summaries, ignore_index=True)
        preferences = summary[[f"w_{n}" for n in names]].to_numpy()
        means = summary[[f"mean_{n}" for n in names]].to_numpy()  # (K, N) raw units
        desired = summary[[f"desired_{n}" for n in names]].to_numpy()
        fronts[label] = (preferences, means)
        steerings.append(steerability(preferences, desired, means, names))
        hypervolume = front_summary(means, np.asarray(reference))["hypervolume"]
        compared.append(ComparedModel(label, len(summary), hypervolume, None, None, probes[0]))
        group_rewards.append(np.concatenate(rewards))
    assert names is not None
    resamples = config.evaluate.resamples
    if resamples:
        intervals = hypervolume_intervals(group_rewards, reference, resamples)
        compared = [
            replace(model, hypervolume_interval=interval, minus_last_interval=gap)
            for model, (interval, gap) in zip(compared, intervals, strict=True)
        ]
    table = pd.DataFrame(
        [
            _table_row(model, groups[model.label], steering, names, bool(resamples))
            for model, steering in zip(compared, steerings, strict=True)
        ]
    )
    path = output / REPORT_FILE

    def write_comparison() -> None:
        write_text_atomic(output / COMPARISON_TABLE, table.to_csv(index=False))
        title = f"Empirical fronts, {config.evaluate.num_prompts} held-out prompts"
        plot_fronts(fronts, names, output / COMPARISON_PLOT, title)
        links = [
            f"[{folder.relative_to(output)}]({folder.relative_to(output)}/{REPORT_FILE})"
            for label, members in groups.items()
            for folder in _member_folders(output, label, members)
        ]
        lines = [
            "# RiC comparison report",
            "",
            f"Every model swept on the same {config.evaluate.num_prompts} held-out prompts, grid "
            f"`{config.evaluate.grid}` and mapping `{config.mapping.method}`; hypervolume against "
            f"the reference point {[round(v, 4) for v in reference]} (raw reward units). RiC and "
            "Rewarded Soups give one point per preference of the grid, each MORLHF model one point "
            "at its own preference, base and SFT one point (no preference).",
            "",
            *(
                [
                    "`hypervolume_low` / `_high`: a 95% interval for its noise-free hypervolume "
                    "(that of its expected mean rewards, which one sampled answer per prompt "
                    "overstates, so the interval may sit below `hypervolume`), from "
                    f"{config.evaluate.resamples} resamples of the prompts; `minus_last_low` / "
                    "`_high`: the same for its noise-free hypervolume minus the last row's "
                    f"({table['label'].iloc[-1]}), resampled on the same prompts, so an interval "
                    "that leaves out 0 is a gap the prompts support. `spearman_w1_*` are the "
                    "sweeps' own values, which the answers' noise pulls toward 0 (each model's "
                    "report gives an interval for the noise-free value).",
                    "",
                ]
                if config.evaluate.resamples
                else []
            ),
            f"![fronts]({COMPARISON_PLOT})",
            "",
            markdown_table(table.drop(columns="model")),
            "",
            "Per-model reports: " + ", ".join(links),
            "",
            appendix,
        ]
        write_text_atomic(path, "\n".join(lines))

    parallel.on_main(write_comparison)
    return Comparison(path, tuple(compared))


def _table_row(
    model: ComparedModel,
    members: list[Path],
    steering: dict[str, dict],
    names: list[str],
    resampled: bool,
) -> dict[str, Any]:
    """``model``'s row of comparison.csv: the intervals only where resampled, and the probe's
    move (sd) and its standard error only for a model asked for rewards (RiC)."""
    low, high = model.hypervolume_interval or (None, None)
    gap_low, gap_high = model.minus_last_interval or (None, None)
    intervals = {
        "hypervolume_low": low,
        "hypervolume_high": high,
        "minus_last_low": gap_low,
        "minus_last_high": gap_high,
    }
    probe = model.probe
    return {
        "label": model.label,
        "model": ", ".join(str(m) for m in members),
        "points": model.points,
        "hypervolume": model.hypervolume,
        **(intervals if resampled else {}),
        **{f"spearman_w1_{n}": steering[n]["w1_vs_obtained"] for n in names},
        **{
            f"probe_{part}_{n}": probe[n].get(f"difference_{part}") if probe else None
            for n in names
            for part in ("sd", "se")
        },
    }


def hypervolume_intervals(
    rewards: list[np.ndarray], reference: Sequence[float], resamples: int
) -> list[tuple[Interval, Interval]]:
    """Per front (``rewards``: each group's raw rewards (K_g, P, N) on the same P prompts), the
    95% interval of its noise-free hypervolume and of its noise-free hypervolume minus the last
    front's (``basic_interval``: the answers' noise biases each hypervolume up, by more for some
    fronts than others, and the interval takes that off), over the same prompt draws for every
    front: the difference is resampled pairwise, so what the prompts share (how hard each one is)
    cancels and the interval says whether the gap is more than the prompts' and the sampling's
    noise."""
    draws = prompt_draws(rewards[0].shape[1], resamples)
    reference = np.asarray(reference)
    estimates = [front_summary(each.mean(axis=1), reference)["hypervolume"] for each in rewards]
    volumes = [resampled_hypervolumes(resampled_means(each, draws), reference) for each in rewards]
    return [
        (
            basic_interval(estimate, volume, floor=0.0),
            basic_interval(estimate - estimates[-1], volume - volumes[-1]),
        )
        for estimate, volume in zip(estimates, volumes, strict=True)
    ]


def _member_folders(output: Path, label: str, members: list[Path]) -> list[Path]:
    """Where each model of ``label`` is evaluated: its own folder, or one per member."""
    if len(members) == 1:
        return [output / folder_name(label)]
    return [output / folder_name(label) / folder_name(m.name) for m in members]


def _weights(model: Path) -> Path:
    """The folder holding ``model``'s weights: a calibrated run's are those of the run it
    calibrates."""
    folder = run_folder(model)
    return (weights_source(folder) or folder).resolve()


def _evaluation(
    model: Path,
    folder: Path,
    config: RicConfig,
    reference: list[float],
    show_progress: bool,
    earlier_probe: ProbeResult | None,
) -> dict:
    """The metrics of ``model`` evaluated into ``folder`` (reused when made with this config).
    Every model is asked with the comparison's mapping, except a calibrated run (`ric
    calibrate`), which is asked with its calibration: that mapping is what it is.
    ``earlier_probe``: a probe of the same weights, reused when it asked the same."""
    settings = replace(
        config.evaluate, model=str(model), output=str(folder), reference=list(reference)
    )
    run_config = replace(config, evaluate=settings)
    if read_calibration(run_folder(model)) is not None:
        recorded = load_config(run_folder(model) / CONFIG_FILE).mapping
        if recorded.method == CALIBRATED:
            run_config = replace(run_config, mapping=recorded)
    if _evaluated_with(folder, run_config):
        return RunResult.recorded(folder).metrics
    return run_evaluate(run_config, show_progress, earlier_probe).metrics


def _evaluated_with(folder: Path, config: RicConfig) -> bool:
    """True when ``folder`` holds a finished evaluation made with exactly ``config``."""
    if not (folder / METRICS_FILE).is_file() or not (folder / CONFIG_FILE).is_file():
        return False
    return (folder / CONFIG_FILE).read_text() == dump_config(config)
