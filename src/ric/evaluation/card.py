"""The steering card: how well a model does what it is asked, in one table, for every `ric
evaluate` of a RiC model (metrics.json ``steering_card``, report.md, one CLI line).

* **Calibration error**: per grid point and objective, the mean obtained reward against what the
  mapping promised (``Steering.promised``: the calibration's prediction under ``mapping.method:
  calibrated``, else the desired rewards themselves, as the paper's mappings assume obtained =
  desired), the mean absolute difference in training standard deviations; drawn per objective
  with the identity line (``calibration.png``).
* **Side effects**: from the probe's answers, how far asking objective i at its low and then its
  high end (the others in the middle) moves each objective j, in sd; the diagonal is the probe.
* **Order along the grid**: Spearman's rho and Kendall's tau of w_1 against each objective's mean;
  how many grid points ask for distinct desired rewards, as a whole and per objective (the
  paper's p_inf asks for an objective's top value at every w_i >= 1/N: ties that cap the rank
  correlations).
* The hypervolume, and, for a calibrated model with ``evaluate.obtained_targets``, the
  **obtained-target check**: targets inside the model's reach asked for directly
  (``rewards_obtained``), and how far the answers land from them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import kendalltau

from ric.config import GenerationConfig
from ric.core import calibration_error
from ric.core.calibration import REACH_TOLERANCE
from ric.data.label import add_rewards, standardized_column
from ric.evaluation.metrics import rank_correlation
from ric.models.generation import generate_with_stats
from ric.rewards import RewardFunction, score_split
from ric.runs import TrainedPolicy
from ric.steering import Steering

CALIBRATION_PLOT = "calibration.png"
OBTAINED_SAMPLES = "obtained_samples.parquet"


def kendall(asked: np.ndarray, obtained: np.ndarray) -> float | None:
    """Kendall's tau-b of two (K,) vectors; None where undefined (a constant or unknown one)."""
    if not np.all(np.isfinite(asked)) or np.ptp(asked) == 0 or np.ptp(obtained) == 0:
        return None
    return float(kendalltau(asked, obtained).statistic)


def side_effects(probe_samples: pd.DataFrame, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """probed objective -> objective -> mean standardized reward at the high end minus at the low
    end of the probe (sd): how far asking for more of one objective moves each of them."""
    effects: dict[str, dict[str, float]] = {}
    for probed in names:
        rows = probe_samples[probe_samples["probed"] == probed]
        means = rows.groupby("end")[[standardized_column(n) for n in names]].mean()
        effects[probed] = {
            name: float(means.loc["high", standardized_column(name)])
            - float(means.loc["low", standardized_column(name)])
            for name in names
        }
    return effects


def distinct_points(desired: np.ndarray) -> int:
    """How many rows of ``desired`` (K, N) differ, at the 2 decimals a prompt shows them."""
    return len({tuple(np.round(row, 2)) for row in desired})


def steering_card(
    steering: Steering,
    preferences: np.ndarray,
    desired: np.ndarray,
    obtained: np.ndarray,
    hypervolume: float,
    probe_samples: pd.DataFrame | None,
) -> dict[str, object]:
    """The card (module docstring) of a sweep: ``preferences``, ``desired`` and mean standardized
    ``obtained`` rewards, each (K, N)."""
    names = list(steering.names)
    promised = steering.promised(desired)
    errors = np.abs(obtained - promised)
    return {
        "mapping": steering.mapping.method,
        "promise": (
            "the calibration's prediction"
            if steering.mapping.method == "calibrated"
            else "the desired rewards (obtained = desired, the paper's assumption)"
        ),
        "calibration_error_sd": calibration_error(promised, obtained),
        "calibration_error_by_objective": {
            name: float(errors[:, i].mean()) for i, name in enumerate(names)
        },
        "promised_rewards": promised.tolist(),
        "side_effects": None if probe_samples is None else side_effects(probe_samples, names),
        "along_grid": {
            name: {
                "spearman": rank_correlation(preferences[:, 0], obtained[:, i]),
                "kendall": kendall(preferences[:, 0], obtained[:, i]),
            }
            for i, name in enumerate(names)
        },
        "distinct_points": distinct_points(desired),
        "distinct_by_objective": {
            name: distinct_points(desired[:, [i]]) for i, name in enumerate(names)
        },
        "points": len(desired),
        "hypervolume": hypervolume,
        "plot": CALIBRATION_PLOT,
    }


def obtained_targets(steering: Steering, per_objective: int) -> np.ndarray:
    """(T, N) obtained-reward targets inside a calibrated model's reach: every combination of
    ``per_objective`` values evenly inside each objective's reach (a fifth in from its ends),
    kept where the model reaches them jointly."""
    calibration = steering.fitted()
    lowest, highest = calibration.reach
    inner = np.linspace(0.2, 0.8, per_objective) if per_objective > 1 else np.array([0.5])
    axes = [low + inner * (high - low) for low, high in zip(lowest, highest, strict=True)]
    grid = np.array(np.meshgrid(*axes, indexing="ij")).reshape(len(axes), -1).T
    return np.array([t for t in grid if calibration.solve(t)[1] <= REACH_TOLERANCE])


def obtained_target_check(
    policy: TrainedPolicy,
    steering: Steering,
    prompts: Sequence[str],
    generation: GenerationConfig,
    scorers: Sequence[RewardFunction],
    per_objective: int,
    show_progress: bool = False,
) -> tuple[dict[str, object], pd.DataFrame]:
    """Ask for each of ``obtained_targets`` on every prompt; the targets, the desired rewards
    they became, the mean obtained (standardized) and the mean absolute miss (sd), with the
    answers."""
    targets = obtained_targets(steering, per_objective)
    desired = np.array([steering.for_obtained(target) for target in targets])
    texts = steering.grid_prompts(prompts, desired)
    asked = np.repeat(np.arange(len(targets)), len(prompts)).tolist()  # one target per batch
    generated = generate_with_stats(
        policy.model, policy.tokenizer, texts, generation, show_progress, groups=asked
    )
    repeated = list(prompts) * len(targets)
    raw = np.column_stack([score_split(scorer, repeated, generated.texts) for scorer in scorers])
    samples = pd.DataFrame(
        {
            "target_index": np.repeat(np.arange(len(targets)), len(prompts)),
            "target": [row.tolist() for row in np.repeat(targets, len(prompts), axis=0)],
            "desired": [row.tolist() for row in np.repeat(desired, len(prompts), axis=0)],
            "prompt": repeated,
            "response": generated.texts,
            "finished": generated.finished,
        }
    )
    add_rewards(samples, policy.stats, raw)
    names = list(steering.names)
    obtained = (
        samples.groupby("target_index")[[standardized_column(n) for n in names]].mean().to_numpy()
    )
    return {
        "targets": targets.tolist(),
        "desired": desired.tolist(),
        "obtained": obtained.tolist(),
        "error_sd": float(np.mean(np.abs(obtained - targets))),
        "error_by_objective": {
            name: float(np.mean(np.abs(obtained[:, i] - targets[:, i])))
            for i, name in enumerate(names)
        },
    }, samples


def describe_card(card: dict) -> str:
    """The card in one CLI line."""
    order = ", ".join(
        f"{name} rho {values['spearman']:+.2f} tau {values['kendall']:+.2f}"
        if values["spearman"] is not None and values["kendall"] is not None
        else f"{name} n/a"
        for name, values in card["along_grid"].items()
    )
    text = (
        f"steering card ({card['mapping']}): calibration error {card['calibration_error_sd']:.2f}"
        f" sd; along w_1: {order}; distinct values of {card['points']} points: "
        + ", ".join(f"{name} {count}" for name, count in card["distinct_by_objective"].items())
    )
    effects = card.get("side_effects")
    if effects:
        moves = "; ".join(
            f"{probed} up moves "
            + ", ".join(f"{name} {move:+.2f}" for name, move in row.items() if name != probed)
            for probed, row in effects.items()
        )
        text += f"; side effects (sd): {moves}"
    check = card.get("obtained_targets")
    if check:
        text += f"; obtained targets missed by {check['error_sd']:.2f} sd"
    return text


def card_lines(card: dict, names: Sequence[str]) -> list[str]:
    """The card as a report.md section."""
    grid_rows = [
        f"| {name} | {_signed(v['spearman'])} | {_signed(v['kendall'])} "
        f"| {card['calibration_error_by_objective'][name]:.2f} |"
        for name, v in card["along_grid"].items()
    ]
    lines = [
        "## Steering card",
        "",
        f"Mapping `{card['mapping']}`; what it promises: {card['promise']}. Mean absolute "
        f"calibration error (mean obtained against promised, over the grid): "
        f"**{card['calibration_error_sd']:.2f} sd**. {card['distinct_points']} of "
        f"{card['points']} grid points ask for distinct desired rewards; distinct values per "
        "objective: "
        + ", ".join(f"{name} {count}" for name, count in card["distinct_by_objective"].items())
        + ".",
        "",
        f"![calibration]({card['plot']})",
        "",
        "| objective | Spearman(w_1, mean) | Kendall(w_1, mean) | calibration error (sd) |",
        "| --- | --- | --- | --- |",
        *grid_rows,
        "",
    ]
    effects = card.get("side_effects")
    if effects:
        lines += [
            "Side effects: asking for one objective's low, then high end (the others in the "
            "middle) moves each objective by (sd; the diagonal is the probe):",
            "",
            "| asked for more of | " + " | ".join(names) + " |",
            "| --- | " + " | ".join("---" for _ in names) + " |",
            *(
                f"| {probed} | " + " | ".join(f"{row[name]:+.2f}" for name in names) + " |"
                for probed, row in effects.items()
            ),
            "",
        ]
    check = card.get("obtained_targets")
    if check:
        lines += [
            f"Obtained targets asked directly (`rewards_obtained`): mean miss "
            f"**{check['error_sd']:.2f} sd**.",
            "",
            "| target (sd) | desired asked | obtained (sd) |",
            "| --- | --- | --- |",
            *(
                f"| {_vector(t)} | {_vector(d)} | {_vector(o)} |"
                for t, d, o in zip(
                    check["targets"], check["desired"], check["obtained"], strict=True
                )
            ),
            "",
        ]
    return lines


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def _vector(values: Sequence[float]) -> str:
    return ", ".join(f"{v:+.2f}" for v in values)
