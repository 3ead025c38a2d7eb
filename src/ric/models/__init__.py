"""Policy models: loading (hub id, local dir, embedded SmolLM2, tiny in-code), LoRA."""

from ric.models.embedded import ensure_smollm2
from ric.models.loading import load_policy
from ric.models.lora import (
    attach_lora,
    load_adapter,
    load_layers,
    merge_adapter,
    save_adapter,
    save_layers,
    unfreeze_top_layers,
)
from ric.models.tiny import build_tiny

__all__ = [
    "attach_lora",
    "build_tiny",
    "ensure_smollm2",
    "load_adapter",
    "load_layers",
    "load_policy",
    "merge_adapter",
    "save_adapter",
    "save_layers",
    "unfreeze_top_layers",
]
