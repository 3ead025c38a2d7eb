"""Where the online stage meets evaluation: the offline model and every online iteration swept
on the same held-out prompts, in one report (`ric online --heldout`, `ric demo`)."""

from __future__ import annotations

from pathlib import Path

from ric.config import RicConfig
from ric.evaluation.compare import evaluate_models
from ric.runs import METRICS_FILE
from ric.training.online import iteration_folder


def compare_iterations(config: RicConfig, output: Path, show_progress: bool = True) -> Path:
    """Sweep the offline model and every finished iteration on the same held-out prompts
    (``evaluate.*``) into ``output``; return the comparison report."""
    models = {"offline": config.online.model}
    for iteration in range(1, config.online.iterations + 1):
        folder = iteration_folder(Path(config.online.output), iteration)
        if (folder / METRICS_FILE).is_file():
            models[f"online {iteration}"] = str(folder)
    return evaluate_models(models, config, output, show_progress)
