"""`ric compare`: RiC against the paper's baselines on one task (paper, Figure 4 and Table 2).

Trains, under one output folder, everything the comparison needs and evaluates it all on the
same held-out prompts, reward models, stats, grid and reference point:

    label/          the scored data and stats every method shares
    train/          RiC, offline stage            online/iter-KK/  RiC, online iterations
    sft/            plain SFT, prompts without rewards (where the RL baselines start)
    base/           the untrained model
    rl/w-.../       one MORLHF model per preference (baseline.preferences), RL from sft/
    soups/          Rewarded Soups over the one-hot RL runs (shared with MORLHF)
    evaluate/       one report: every front in one plot, hypervolumes, and the cost table

The cost table gives, per method, the wall-clock seconds of the training needed to obtain its
models from the base model, and the device each ran on. RL methods include the SFT model they
start from; a run that serves two methods (a one-hot RL run is a MORLHF model and a soup member,
as the paper trains them too) counts in both. Labeling, shared by all, is left out. Seconds are
read from each run's metrics, so a rerun (which resumes and skips finished runs) reports the
same table.

The default task is the demo's (``ric/recipes/demo.yaml``, whose ``baseline`` section sizes the
RL runs for a 2-core CPU); ``--config FILE`` lays a file over it (``configs/compare-gpu.yaml``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ric import parallel
from ric.baselines.base import write_base
from ric.baselines.rl import default_preferences, preference_folder, run_rl
from ric.baselines.soups import assemble_soup
from ric.config import RicConfig
from ric.data.io import write_text_atomic
from ric.data.label import label_dataset
from ric.evaluation.compare import Comparison, evaluate_models
from ric.evaluation.report import markdown_table
from ric.recipes.demo import demo_config
from ric.runs import METRICS_FILE
from ric.runtime import import_optional
from ric.training.offline import run_train
from ric.training.online import run_online

COST_TABLE = "costs.csv"
SMOKE_OVERRIDES = [
    "baseline.max_steps=2",
    "baseline.save_steps=1",
    "baseline.num_generations=2",
]


@dataclass(frozen=True)
class MethodComparison:
    """What `ric compare` reports: every method's front in one comparison, and the cost table
    (also written to ``evaluate/costs.csv``)."""

    comparison: Comparison
    # one row per method: method, runs, seconds, device, relative_to_morlhf (see cost_table)
    costs: pd.DataFrame


def run_compare(
    output: Path,
    smoke: bool = False,
    overrides: list[str] | None = None,
    layer: Path | None = None,
    show_progress: bool = True,
) -> MethodComparison:
    """Train what is missing, evaluate everything; return the comparison and the costs."""
    import_optional("trl")  # the RL baselines need it: say so before hours of RiC training
    extra = [*(SMOKE_OVERRIDES if smoke else []), *(overrides or [])]
    config = demo_config(output, smoke, extra, layer)

    def stage(message: str) -> None:
        if show_progress:
            print(f"ric compare: {message}", file=sys.stderr, flush=True)

    stage("labeling the data")
    label_dataset(config, show_progress)
    stage("RiC, offline stage")
    run_train(config, resume=True, show_progress=show_progress)
    stage("RiC, online stage")
    online = list(run_online(config, show_progress).iterations)

    stage("SFT baseline")
    sft = output / "sft"
    run_train(_with_train_output(config, sft), True, show_progress, conditioned=False)
    base = write_base(config, output / "base")

    baseline = replace(config.baseline, init=str(sft), data=config.train.data)
    rl_config = replace(config, baseline=baseline)
    num_objectives = len(config.rewards)
    preferences = baseline.preferences or default_preferences(num_objectives)
    one_hot = np.eye(num_objectives).tolist()
    runs = {}
    for w in [*preferences, *(w for w in one_hot if w not in preferences)]:
        stage(f"RL (MORLHF / Rewarded Soups member) at preference {w}")
        folder = output / "rl" / preference_folder(w)
        runs[tuple(w)] = run_rl(rl_config, w, folder, show_progress).output
    soups = assemble_soup(output / "soups", [runs[tuple(w)] for w in one_hot])

    models: dict[str, Path | list[Path]] = {
        "base": base,
        "SFT": sft,
        "MORLHF": [runs[tuple(w)] for w in preferences],
        "Rewarded Soups": soups,
        "RiC offline": Path(config.train.output),
        **{f"RiC online {k}": folder for k, folder in enumerate(online, start=1)},
    }
    costs = cost_table(
        sft=sft,
        morlhf=[runs[tuple(w)] for w in preferences],
        soup_members=[runs[tuple(w)] for w in one_hot],
        offline=Path(config.train.output),
        online=online,
    )
    stage("evaluating every model")
    evaluation = output / "evaluate"
    parallel.on_main(lambda: write_text_atomic(evaluation / COST_TABLE, costs.to_csv(index=False)))
    appendix = "\n".join(
        [
            "## Cost (the paper's Table 2)",
            "",
            "Wall-clock seconds of the training each method needs, from the base model: RL "
            "methods include the SFT model they start from; a one-hot RL run counts for both "
            "MORLHF and Rewarded Soups; labeling (shared) is left out.",
            "",
            markdown_table(costs),
            "",
        ]
    )
    comparison = evaluate_models(models, config, evaluation, show_progress, appendix)
    return MethodComparison(comparison, costs)


def _with_train_output(config: RicConfig, output: Path) -> RicConfig:
    return replace(config, train=replace(config.train, output=str(output)))


def _seconds(run: Path) -> tuple[float, str]:
    """A finished run's training seconds (a sum for online phases) and its device."""
    metrics = json.loads((run / METRICS_FILE).read_text())
    seconds = metrics["seconds"]
    total = sum(seconds.values()) if isinstance(seconds, dict) else seconds
    return float(total), metrics.get("device", "unknown")


def cost_table(
    sft: Path, morlhf: list[Path], soup_members: list[Path], offline: Path, online: list[Path]
) -> pd.DataFrame:
    """One row per method: runs, seconds, devices, and cost relative to MORLHF."""
    methods = {
        "SFT": [sft],
        f"MORLHF ({len(morlhf)} preferences)": [sft, *morlhf],
        f"Rewarded Soups ({len(soup_members)} rewards)": [sft, *soup_members],
        "RiC offline": [offline],
        **{f"RiC + {k} online": [offline, *online[:k]] for k in range(1, len(online) + 1)},
    }
    rows = []
    for method, runs in methods.items():
        measured = [_seconds(run) for run in runs]
        rows.append(
            {
                "method": method,
                "runs": len(runs),
                "seconds": sum(seconds for seconds, _ in measured),
                "device": ", ".join(sorted({device for _, device in measured})),
            }
        )
    table = pd.DataFrame(rows)
    morlhf_seconds = table.loc[table["method"].str.startswith("MORLHF"), "seconds"].item()
    table["relative_to_morlhf"] = table["seconds"] / morlhf_seconds
    return table
