"""Rewarded Soups' weight interpolation (docs/design.md §1.6): one model per reward, mixed per
preference.

theta(w) = sum_i w_i theta_i. With LoRA, every theta_i = theta_0 + Delta_i where
Delta_i = (alpha / r) B_i A_i is the adapter's merged weight delta, so (w on the simplex)

    theta(w) = theta_0 + sum_i w_i Delta_i,

which is what interpolating the dense merged models gives. Interpolating the A and B matrices
separately would not: (sum_i w_i B_i)(sum_j w_j A_j) has cross terms B_i A_j that none of the
models contains. The deltas come from peft's own ``get_delta_weight`` (scaling, fan-in/fan-out
layouts and any future LoRA variant handled by peft), and the soup is written into the base
weights, leaving a plain transformers model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from transformers import PreTrainedModel

from ric.core import check_preference
from ric.models.lora import quiet_peft


def soup_model(
    base_model: PreTrainedModel, adapters: Sequence[str | Path], preference: Sequence[float]
) -> PreTrainedModel:
    """``base_model`` with theta_0 + sum_i w_i Delta_i written into its weights (in place);
    ``adapters[i]`` is the LoRA adapter directory of the model trained for objective i."""
    weights = check_preference(np.asarray(preference, dtype=float), len(adapters))
    names = [f"objective_{i}" for i in range(len(adapters))]
    with quiet_peft():
        model = PeftModel.from_pretrained(base_model, Path(adapters[0]), adapter_name=names[0])
        for name, folder in zip(names[1:], adapters[1:], strict=True):
            model.load_adapter(Path(folder), adapter_name=name)
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, LoraLayer):
                continue
            present = [(w, n) for w, n in zip(weights, names, strict=True) if n in module.lora_A]
            if not present:
                continue
            base = module.get_base_layer().weight
            delta = sum(float(w) * module.get_delta_weight(n) for w, n in present)
            base += delta.to(base.dtype)
    return model.unload()  # the base model with the soup in its weights, no adapter layers
