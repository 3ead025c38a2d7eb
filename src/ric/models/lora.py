"""LoRA adapters with plain ``peft``: attach, save, load, merge; and full fine-tuning of the
top decoder layers, whose weights alone are saved (``save_layers``/``load_layers``).

The paper fine-tunes Llama-2 7B with LoRA (r 64, alpha 128, dropout 0.05 on q_proj and v_proj);
those are the defaults of ``ric.config.LoraConfig``. Adapters are saved in peft's own format
(``adapter_config.json`` + ``adapter_model.safetensors``), so ``peft.PeftModel.from_pretrained``
loads them without ric.

Departures from peft: target modules that match nothing are an error that lists the linear
layers the model does have, before peft is called (peft's own message does not list them, and a
model family with other layer names, e.g. GPT-2's ``c_attn``, is the usual cause). And peft 0.21
reads ``model.is_gradient_checkpointing``, which transformers 5 deprecates with a FutureWarning
on every wrap; users cannot act on it, so that one warning is silenced around peft's calls.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, TaskType, get_peft_model
from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from ric.config import LoraConfig

ADAPTER_CONFIG = "adapter_config.json"
LAYER_WEIGHTS = "weights.safetensors"


def attach_lora(model: PreTrainedModel, settings: LoraConfig) -> PeftModel:
    """Wrap ``model`` with fresh LoRA adapters; only the adapters are trainable.

    The model is changed in place (adapter layers are injected into it). Adapter A matrices are
    drawn from torch's global generator: seed it first for a reproducible start.
    """
    with quiet_peft():
        return get_peft_model(model, peft_lora_config(model, settings))  # type: ignore[return-value]


def peft_lora_config(model: PreTrainedModel, settings: LoraConfig) -> PeftLoraConfig:
    """peft's config for ``settings`` on ``model`` (checked against its layers), for code that
    lets a trainer attach the adapter itself (the RL baselines)."""
    _check_targets(model, settings.target_modules)
    return PeftLoraConfig(
        layers_to_transform=_top_layers(model, settings.top_layers),
        task_type=TaskType.CAUSAL_LM,
        r=settings.r,
        lora_alpha=settings.alpha,  # type: ignore[arg-type]  # peft annotates int; floats work
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
    )


def unfreeze_top_layers(model: PreTrainedModel, count: int) -> PreTrainedModel:
    """Full fine-tuning of the top ``count`` decoder layers (0: of every weight): the other
    weights are frozen, so backpropagation stops below those layers and the optimizer holds
    only their state. Returns ``model``, changed in place."""
    layers = _top_layers(model, count)
    if layers is None:
        return model.requires_grad_(True)
    model.requires_grad_(False)
    for name, parameter in model.named_parameters():
        index = re.search(r"\.layers\.(\d+)\.", name)
        if index is not None and int(index.group(1)) in layers:
            parameter.requires_grad_(True)
    return model


def save_layers(model: PreTrainedModel, directory: str | Path) -> Path:
    """Write the trainable weights of ``model`` (the fine-tuned top layers) to
    ``directory/weights.safetensors``: a few layers' worth, not a copy of the whole model."""
    from safetensors.torch import save_file

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    trained = {
        name: parameter.detach().cpu().contiguous()
        for name, parameter in model.named_parameters()
        if parameter.requires_grad
    }
    save_file(trained, str(folder / LAYER_WEIGHTS))
    return folder


def load_layers(model: PreTrainedModel, directory: str | Path) -> PreTrainedModel:
    """Copy the weights ``save_layers`` wrote into ``model`` (its base model, freshly loaded)."""
    import torch
    from safetensors.torch import load_file

    weights = load_file(str(Path(directory) / LAYER_WEIGHTS))
    parameters = dict(model.named_parameters())
    unknown = sorted(set(weights) - set(parameters))
    if unknown:
        raise ValueError(
            f"{str(directory)!r} does not fit the model: unknown weights {unknown[:3]}"
        )
    with torch.no_grad():
        for name, value in weights.items():
            parameters[name].copy_(value)
    return model


def _top_layers(model: PreTrainedModel, count: int) -> list[int] | None:
    """Indices of the top ``count`` decoder layers, or None (all) for 0."""
    if count == 0:
        return None
    total = model.config.num_hidden_layers
    if count > total:
        raise ValueError(f"lora.top_layers={count}, but the model has {total} decoder layers")
    return list(range(total - count, total))


def save_adapter(model: PeftModel, directory: str | Path) -> Path:
    """Write the adapter weights and config (not the base model) to ``directory``; return it."""
    _check_peft(model, "save_adapter")
    folder = Path(directory)
    model.save_pretrained(folder)
    return folder


def load_adapter(
    base_model: PreTrainedModel, directory: str | Path, trainable: bool = False
) -> PeftModel:
    """``base_model`` with the adapter saved in ``directory`` (frozen unless ``trainable``)."""
    folder = Path(directory)
    if not (folder / ADAPTER_CONFIG).is_file():
        raise ValueError(f"{str(folder)!r} holds no LoRA adapter (no {ADAPTER_CONFIG})")
    with quiet_peft():
        return PeftModel.from_pretrained(base_model, folder, is_trainable=trainable)


def merge_adapter(model: PeftModel) -> PreTrainedModel:
    """Fold the adapter into the base weights and return the plain model (no peft at inference)."""
    _check_peft(model, "merge_adapter")
    return model.merge_and_unload()  # type: ignore[no-any-return]


def _check_targets(model: nn.Module, targets: list[str]) -> None:
    """Raise ValueError when a target matches no linear layer (peft matches name suffixes)."""
    linear = (nn.Linear, Conv1D)  # Conv1D: the GPT-2 family's linear layers
    layers = [name for name, module in model.named_modules() if isinstance(module, linear)]
    missing = [
        target
        for target in targets
        if not any(name == target or name.endswith(f".{target}") for name in layers)
    ]
    if missing:
        available = sorted({name.rsplit(".", 1)[-1] for name in layers})
        raise ValueError(
            f"lora.target_modules {missing} match no linear layer of {type(model).__name__}; "
            f"its linear layers are: {', '.join(available)}"
        )


def _check_peft(model: object, action: str) -> None:
    if not isinstance(model, PeftModel):
        raise ValueError(f"{action} needs a model with a LoRA adapter (see attach_lora)")


@contextmanager
def quiet_peft() -> Iterator[None]:
    """Silence transformers' deprecation of the attribute peft 0.21 reads (see module doc)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield
