"""Several models swept on the same prompts, grid, mapping and reference point, in one report.

Each model gets a full `ric evaluate` output in its own folder; then one plot holds every front
(the paper's Figure 4 for methods, or offline vs online iterations) and one table the
hypervolumes, all against the same reference point, so the numbers can be compared. A model's
folder is reused when it already holds an evaluation made with the same config (a rerun after a
crash only evaluates what is missing).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pandas as pd

from ric.config import RicConfig, dump_config
from ric.data.io import STATS_FILE, load_stats, write_text_atomic
from ric.data.label import CONFIG_FILE
from ric.evaluation.plots import plot_fronts
from ric.evaluation.report import REPORT_FILE, markdown_table
from ric.evaluation.sweep import METRICS_FILE, default_reference, run_evaluate

COMPARISON_PLOT = "fronts.png"
COMPARISON_TABLE = "comparison.csv"


def folder_name(label: str) -> str:
    """A file-system-safe folder name for a model label ('iteration 1' -> 'iteration-1')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-") or "model"


def evaluate_models(
    models: Mapping[str, str | Path],
    config: RicConfig,
    output: Path,
    show_progress: bool = True,
) -> Path:
    """Evaluate every ``label -> model directory`` and write the comparison; return report.md."""
    if not models:
        raise ValueError("no models to compare")
    first = Path(next(iter(models.values())))
    reference = config.evaluate.reference or default_reference(load_stats(first / STATS_FILE))
    rows, fronts, names = [], {}, None
    for label, model in models.items():
        folder = output / folder_name(label)
        settings = replace(
            config.evaluate, model=str(model), output=str(folder), reference=list(reference)
        )
        run_config = replace(config, evaluate=settings)
        if not _evaluated_with(folder, run_config):
            run_evaluate(run_config, show_progress)
        metrics = json.loads((folder / METRICS_FILE).read_text())
        summary = pd.read_csv(folder / "summary.csv")
        if names is not None and metrics["objectives"] != names:
            raise ValueError(
                f"{label!r} has objectives {metrics['objectives']}, the others {names}: "
                "only models trained on the same rewards can be compared"
            )
        names = metrics["objectives"]
        preferences = summary[[f"w_{n}" for n in names]].to_numpy()
        means = summary[[f"mean_{n}" for n in names]].to_numpy()  # (K, N) raw units
        fronts[label] = (preferences, means)
        steering = {f"spearman_w1_{n}": metrics["steerability"][n]["w1_vs_obtained"] for n in names}
        rows.append(
            {
                "label": label,
                "model": str(model),
                "hypervolume": metrics["front"]["hypervolume"],
                **steering,
            }
        )
    assert names is not None
    table = pd.DataFrame(rows)
    write_text_atomic(output / COMPARISON_TABLE, table.to_csv(index=False))
    title = f"Empirical fronts, {config.evaluate.num_prompts} held-out prompts"
    plot_fronts(fronts, names, output / COMPARISON_PLOT, title)
    lines = [
        "# RiC comparison report",
        "",
        f"Every model swept on the same {config.evaluate.num_prompts} held-out prompts, grid "
        f"`{config.evaluate.grid}` and mapping `{config.mapping.method}`; hypervolume against "
        f"the reference point {[round(v, 4) for v in reference]} (raw reward units).",
        "",
        f"![fronts]({COMPARISON_PLOT})",
        "",
        markdown_table(table),
        "",
        "Per-model reports: "
        + ", ".join(f"[{label}]({folder_name(label)}/{REPORT_FILE})" for label in models),
        "",
    ]
    path = output / REPORT_FILE
    write_text_atomic(path, "\n".join(lines))
    return path


def _evaluated_with(folder: Path, config: RicConfig) -> bool:
    """True when ``folder`` holds a finished evaluation made with exactly ``config``."""
    if not (folder / METRICS_FILE).is_file() or not (folder / CONFIG_FILE).is_file():
        return False
    return (folder / CONFIG_FILE).read_text() == dump_config(config)
