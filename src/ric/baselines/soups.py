"""Rewarded Soups (DESIGN §1.6): one model per reward, interpolated per preference.

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

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from transformers import PreTrainedModel

from ric.config import RicConfig
from ric.core import check_preference
from ric.data.io import STATS_FILE, load_stats
from ric.data.label import CONFIG_FILE
from ric.models.lora import quiet_peft
from ric.training.trained import read_method, write_method


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


def assemble_soup(output: Path, members: Sequence[str | Path]) -> Path:
    """Write a Rewarded Soups folder over finished RL runs, one per objective at its one-hot
    preference (``ric evaluate`` sweeps it: one soup per preference of the grid)."""
    runs = [Path(member) for member in members]
    methods = [read_method(run) for run in runs]
    for run, method in zip(runs, methods, strict=True):
        if method.name != "morlhf" or method.preference is None:
            raise ValueError(f"{str(run)!r} is not a finished `ric baseline morlhf` run")
    stats = load_stats(runs[0] / STATS_FILE)
    order = []
    for run, method in zip(runs, methods, strict=True):
        weights = np.asarray(method.preference)
        one_hot = sorted(weights.tolist()) == [0.0] * (len(runs) - 1) + [1.0]
        if len(weights) != len(runs) or not one_hot:
            raise ValueError(
                f"{str(run)!r} was trained for {method.preference}: a soup needs one run per "
                f"objective of {list(stats.names)}, each at a one-hot preference"
            )
        order.append(int(weights.argmax()))
    if sorted(order) != list(range(len(runs))):
        raise ValueError(f"two members were trained for the same objective: {order}")
    inits = {
        (run / method.init).resolve() if method.init else None
        for run, method in zip(runs, methods, strict=True)
    }
    if len(inits) != 1:
        raise ValueError(f"the members start from different models: {sorted(map(str, inits))}")
    ordered = [runs[order.index(i)] for i in range(len(runs))]
    output.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(runs[0] / STATS_FILE, output / STATS_FILE)
    shutil.copyfile(runs[0] / CONFIG_FILE, output / CONFIG_FILE)
    start = inits.pop()
    write_method(output, "soups", init=start, members=ordered)
    return output


def train_soup(config: RicConfig, output: Path, show_progress: bool = True) -> Path:
    """One RL run per objective (its one-hot preference) under ``output/members/``, then the
    soup's folder at ``output`` (resumable: finished members are kept)."""
    from ric.baselines.rl import preference_folder, run_rl

    num_objectives = len(
        load_stats(Path(config.baseline.data or config.train.data) / STATS_FILE).names
    )
    members = [
        run_rl(config, w, output / "members" / preference_folder(w), show_progress)
        for w in np.eye(num_objectives).tolist()
    ]
    return assemble_soup(output, members)
