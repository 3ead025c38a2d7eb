"""A trained RiC policy loaded back from a `ric train` output, ready to be asked for rewards.

Everything inference needs comes from that directory, so serving and evaluation cannot drift
from training: the base model source and template (config.yaml), the stats (stats.json), the
adapter or full model, and the reward scorers (their identities are recorded in the stats).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ric.config import RewardConfig, RicConfig, load_config
from ric.core import PromptTemplate, RewardStats, build_prompt
from ric.data.io import STATS_FILE, load_stats
from ric.data.label import CONFIG_FILE, reward_from_identity
from ric.training.offline import ADAPTER_DIR, MODEL_DIR, template_of


@dataclass
class TrainedPolicy:
    model: Any
    tokenizer: Any
    config: RicConfig  # the training run's resolved config
    stats: RewardStats
    template: PromptTemplate

    def conditioned_prompts(self, prompts: Sequence[str], desired: np.ndarray) -> list[str]:
        """Prompts with desired rewards (N,) or (B, N), standardized units, written in."""
        rows = np.broadcast_to(
            np.asarray(desired, dtype=float), (len(prompts), len(self.stats.names))
        )
        return [
            build_prompt(p, row.tolist(), self.template)
            for p, row in zip(prompts, rows, strict=True)
        ]

    def reward_configs(self) -> list[RewardConfig]:
        """The scorers the stats were computed with (identity = 'type {options json}')."""
        return [
            reward_from_identity(name, identity)
            for name, identity in zip(self.stats.names, self.stats.reward_ids, strict=True)
        ]


def load_trained(directory: str | Path, trainable: bool = False) -> TrainedPolicy:
    """Load a `ric train` output (adapter on its base model, or the full model); with
    ``trainable`` the adapter's weights (or the full model's) can be fine-tuned further."""
    from ric.models import load_adapter, load_policy

    folder = Path(directory)
    if not (folder / CONFIG_FILE).is_file():
        raise ValueError(f"{str(folder)!r} is not a `ric train` output (no {CONFIG_FILE})")
    config = load_config(folder / CONFIG_FILE)
    stats = load_stats(folder / STATS_FILE)
    if (folder / ADAPTER_DIR).is_dir():
        model, tokenizer = load_policy(config.model)
        model = load_adapter(model, folder / ADAPTER_DIR, trainable=trainable)
    elif (folder / MODEL_DIR).is_dir():
        config.model.source = str(folder / MODEL_DIR)
        model, tokenizer = load_policy(config.model)
        model.requires_grad_(trainable)
    else:
        raise ValueError(f"{str(folder)!r} holds neither {ADAPTER_DIR}/ nor {MODEL_DIR}/")
    return TrainedPolicy(model, tokenizer, config, stats, template_of(config))
