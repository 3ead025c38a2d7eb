"""Where the online stage meets evaluation: the offline model and every online iteration swept
on the same held-out prompts, in one report (`ric online --heldout`, `ric demo`)."""

from __future__ import annotations

from pathlib import Path

from ric.config import RicConfig
from ric.evaluation.compare import Comparison, evaluate_models
from ric.training.online import OnlineResult


def compare_iterations(
    config: RicConfig, online: OnlineResult, output: Path, show_progress: bool = True
) -> Comparison:
    """Sweep the offline model (``online.model``) and every iteration of ``online`` on the same
    held-out prompts (``evaluate.*``) into ``output``; return the comparison."""
    iterations = {f"online {k}": folder for k, folder in enumerate(online.iterations, start=1)}
    return evaluate_models(
        {"offline": config.online.model, **iterations}, config, output, show_progress
    )
