"""A trained RiC policy loaded back from a `ric train` output, ready to be asked for rewards.

Everything inference needs comes from that directory, so serving and evaluation cannot drift
from training: the base model source and template (config.yaml), the stats (stats.json), the
adapter or full model, and the reward scorers (their identities are recorded in the stats).

Baseline outputs (`ric baseline ...`) have the same layout plus ``method.json``, which says what
the folder holds and how to rebuild it: the method (base, sft, morlhf, soups), the preference a
MORLHF model was trained for, the run it started from (``init``, whose adapter is merged into the
base weights before this folder's adapter goes on top) and a soup's member runs. A folder without
``method.json`` is a RiC model. Paths in it are relative to the folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ric.config import RewardConfig, RicConfig, load_config
from ric.core import PromptTemplate, RewardStats, build_plain_prompt, build_prompt
from ric.data.io import STATS_FILE, load_stats, write_text_atomic
from ric.data.label import CONFIG_FILE, stats_rewards
from ric.training.offline import ADAPTER_DIR, LAYERS_DIR, MODEL_DIR, template_of

METHOD_FILE = "method.json"
METHODS = ("ric", "base", "sft", "morlhf", "soups")


@dataclass(frozen=True)
class Method:
    """What a model folder holds (``method.json``; absent: a RiC model)."""

    name: str = "ric"
    preference: list[float] | None = None  # morlhf: the preference it was trained for
    init: str | None = None  # the run training started from, relative to the folder
    members: list[str] = field(default_factory=list)  # soups: one RL run per objective

    @property
    def conditioned(self) -> bool:
        """Whether prompts carry reward values (RiC) or not (every baseline)."""
        return self.name == "ric"


def read_method(folder: Path) -> Method:
    path = folder / METHOD_FILE
    if not path.is_file():
        return Method()
    method = Method(**json.loads(path.read_text()))
    if method.name not in METHODS:
        raise ValueError(f"{str(path)!r} names method {method.name!r}; valid: {METHODS}")
    return method


def write_method(
    folder: Path,
    name: str,
    preference: Sequence[float] | None = None,
    init: str | Path | None = None,
    members: Sequence[str | Path] = (),
) -> Method:
    """Write ``folder/method.json``; ``init`` and ``members`` are stored relative to it."""
    folder.mkdir(parents=True, exist_ok=True)
    method = Method(
        name=name,
        preference=None if preference is None else [float(v) for v in preference],
        init=None if init is None else os.path.relpath(Path(init).resolve(), folder.resolve()),
        members=[os.path.relpath(Path(m).resolve(), folder.resolve()) for m in members],
    )
    write_text_atomic(folder / METHOD_FILE, json.dumps(asdict(method), indent=1))
    return method


@dataclass
class TrainedPolicy:
    model: Any
    tokenizer: Any
    config: RicConfig  # the training run's resolved config
    stats: RewardStats
    template: PromptTemplate
    method: Method
    folder: Path

    def plain_prompts(self, prompts: Sequence[str]) -> list[str]:
        """The prompts in the template without reward values (what baselines are asked)."""
        return [build_plain_prompt(p, self.template) for p in prompts]

    def member_adapters(self) -> list[Path]:
        """A soup's member adapters, in objective order."""
        return [self.folder / member / ADAPTER_DIR for member in self.method.members]

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
        return stats_rewards(self.stats)


def load_trained(directory: str | Path, trainable: bool = False) -> TrainedPolicy:
    """Load a `ric train` or `ric baseline` output (adapter on its starting model, or the full
    model); with ``trainable`` the adapter's weights (or the full model's) can be fine-tuned
    further. A soup comes back as its starting model; ``soup_model`` mixes its members in."""
    from ric.models import load_adapter, load_layers, load_policy, unfreeze_top_layers

    folder = Path(directory)
    if not (folder / CONFIG_FILE).is_file():
        raise ValueError(f"{str(folder)!r} is not a `ric train` output (no {CONFIG_FILE})")
    config = load_config(folder / CONFIG_FILE)
    stats = load_stats(folder / STATS_FILE)
    method = read_method(folder)
    has_adapter = (folder / ADAPTER_DIR).is_dir()
    if (folder / MODEL_DIR).is_dir():
        config.model.source = str(folder / MODEL_DIR)
        model, tokenizer = load_policy(config.model)
        model.requires_grad_(False)
        if trainable:
            unfreeze_top_layers(model, config.lora.top_layers)
    elif (folder / LAYERS_DIR).is_dir():  # the top layers fine-tuned: laid over the start model
        model, tokenizer = load_start(config, folder / method.init if method.init else None)
        load_layers(model, folder / LAYERS_DIR).requires_grad_(False)
        if trainable:
            unfreeze_top_layers(model, config.lora.top_layers)
    elif has_adapter or method.name in ("base", "soups"):  # these two have no weights of their own
        model, tokenizer = load_start(config, folder / method.init if method.init else None)
        if has_adapter:
            model = load_adapter(model, folder / ADAPTER_DIR, trainable=trainable)
    else:
        raise ValueError(
            f"{str(folder)!r} holds none of {ADAPTER_DIR}/, {LAYERS_DIR}/ or {MODEL_DIR}/"
        )
    return TrainedPolicy(model, tokenizer, config, stats, template_of(config), method, folder)


def load_start(config: RicConfig, init: Path | None) -> tuple[Any, Any]:
    """The model a run starts from, as a plain transformers model: ``model.source``, or the
    ``init`` run with its adapter merged into the weights."""
    from peft import PeftModel

    from ric.models import load_policy, merge_adapter

    if init is None:
        return load_policy(config.model)
    start = load_trained(init)
    model = merge_adapter(start.model) if isinstance(start.model, PeftModel) else start.model
    return model, start.tokenizer
