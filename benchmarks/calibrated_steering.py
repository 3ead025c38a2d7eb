"""Calibrated steering against the paper's mapping, side by side on the same held-out prompts.

Takes two `ric evaluate` folders of one model on the same prompts and grid, one with the
paper's mapping (e.g. p_inf) and one calibrated (`ric calibrate`), and prints the issue's
figures for both, plus the paired difference of their hypervolumes (the same prompt draws for
both, ``ric.evaluation.compare``'s bias-corrected interval):

    python benchmarks/calibrated_steering.py EVAL_P_INF EVAL_CALIBRATED

made, for `embedded-ric`, with (8-10 min each on 2 CPU cores):

    ric evaluate --model embedded-ric --set mapping.method=p_inf --output runs/eval-p_inf \
        --prompts src/ric/tasks/data/questions_heldout.jsonl --set evaluate.num_prompts=48 \
        --set "evaluate.reference=[-0.05313751532892641,-57.0]" --set evaluate.probe=false
    ric evaluate --model embedded-ric --output runs/eval-calibrated \
        --prompts src/ric/tasks/data/questions_heldout.jsonl --set evaluate.num_prompts=48 \
        --set "evaluate.reference=[-0.05313751532892641,-57.0]" --set evaluate.obtained_targets=2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ric.evaluation.compare import hypervolume_intervals
from ric.evaluation.sweep import per_prompt_rewards


def load(folder: Path) -> tuple[dict, np.ndarray]:
    """An evaluation's metrics and its raw rewards (K, P, N)."""
    metrics = json.loads((folder / "metrics.json").read_text())
    samples = pd.read_parquet(folder / "samples.parquet")
    return metrics, per_prompt_rewards(samples, metrics["objectives"], metrics["num_preferences"])


def row(label: str, metrics: dict) -> str:
    card = metrics["steering_card"]
    grid = card["along_grid"]
    names = metrics["objectives"]
    order = " / ".join(f"{grid[n]['spearman']:+.2f}" for n in names)
    kendall = " / ".join(f"{grid[n]['kendall']:+.2f}" for n in names)
    distinct = " / ".join(str(card["distinct_by_objective"][n]) for n in names)
    probe = (  # the probe does not depend on the mapping: one of the two sweeps may skip it
        " / ".join(f"{metrics['probe'][n]['difference_sd']:+.2f}" for n in names)
        if metrics["probe"]
        else "-"
    )
    check = card.get("obtained_targets")
    missed = f"{check['error_sd']:.2f}" if check else "-"
    return (
        f"| {label} | {metrics['front']['hypervolume']:.2f} | {order} | {kendall} | {distinct} "
        f"| {card['calibration_error_sd']:.2f} | {probe} | {missed} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("uncalibrated", type=Path)
    parser.add_argument("calibrated", type=Path)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    (plain, plain_rewards), (fitted, fitted_rewards) = (
        load(args.uncalibrated),
        load(args.calibrated),
    )
    if plain_rewards.shape[1:] != fitted_rewards.shape[1:]:
        raise SystemExit("the two evaluations must be on the same prompts and objectives")
    names = plain["objectives"]
    print(
        "| mapping | hypervolume | Spearman(w_1, r) "
        + " / ".join(names)
        + " | Kendall | distinct desired values | calibration error (sd) | probe (sd) "
        "| obtained-target miss (sd) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(row(plain["mapping"]["method"], plain))
    print(row(fitted["mapping"]["method"], fitted))
    reference = plain["front"]["reference"]
    intervals = hypervolume_intervals([fitted_rewards, plain_rewards], reference, args.resamples)
    gap = fitted["front"]["hypervolume"] - plain["front"]["hypervolume"]
    low, high = intervals[0][1]
    print(
        f"\nhypervolume, calibrated minus {plain['mapping']['method']}: {gap:+.2f} "
        f"(95% interval {low:+.2f} to {high:+.2f}, paired over {args.resamples} prompt draws)"
    )
    ratio = (
        fitted["steering_card"]["calibration_error_sd"]
        / plain["steering_card"]["calibration_error_sd"]
    )
    print(f"calibration error, calibrated / {plain['mapping']['method']}: {ratio:.2f}")


if __name__ == "__main__":
    main()
