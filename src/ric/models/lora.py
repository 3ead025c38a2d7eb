"""LoRA adapters with plain ``peft``: attach, save, load, merge; and full fine-tuning of the
top decoder layers, whose weights alone are saved (``save_layers``/``load_layers``).

The paper fine-tunes Llama-2 7B with LoRA (r 64, alpha 128, dropout 0.05 on q_proj and v_proj);
those are the defaults of ``ric.config.LoraConfig``. Adapters are saved in peft's own format
(``adapter_config.json`` + ``adapter_model.safetensors``), so ``peft.PeftModel.from_pretrained``
loads them without ric.

``lora_from_tuned_layers`` goes the other way: it turns top layers that were fully fine-tuned into
a LoRA adapter, each weight change replaced by its best rank-r approximation (truncated SVD,
Eckart-Young), so a model trained the way that steers soonest ships as a few-MB adapter.

Departures from peft: target modules that match nothing are an error that lists the linear
layers the model does have, before peft is called (peft's own message does not list them, and a
model family with other layer names, e.g. GPT-2's ``c_attn``, is the usual cause). And peft 0.21
reads ``model.is_gradient_checkpointing``, which transformers 5 deprecates with a FutureWarning
on every wrap; users cannot act on it, so that one warning is silenced around peft's calls.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
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
        if _layer_index(name) in layers:
            parameter.requires_grad_(True)
    return model


def _layer_index(name: str) -> int | None:
    """The decoder layer a parameter or module name belongs to (``model.layers.7.mlp`` -> 7)."""
    found = re.search(r"\.layers\.(\d+)\.", f"{name}.")
    return int(found.group(1)) if found else None


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


def low_rank_factors(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(B, A, kept)`` with ``B @ A`` the best rank-``rank`` approximation of ``delta``
    (out x in) in Frobenius norm: B = U_r sqrt(S_r), A = sqrt(S_r) V_r^T, both padded with zeros
    to ``rank`` when the matrix has lower rank. ``kept``: sum(S_r^2) / sum(S^2)."""
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    used = min(rank, s.numel())
    root = s[:used].sqrt()
    b = torch.zeros(delta.shape[0], rank, dtype=torch.float64)
    a = torch.zeros(rank, delta.shape[1], dtype=torch.float64)
    b[:, :used] = u[:, :used] * root
    a[:used] = root[:, None] * vh[:used]
    total = float((s**2).sum())
    kept = float((s[:used] ** 2).sum()) / total if total > 0 else 1.0
    return b, a, kept


def lora_from_tuned_layers(
    base: PreTrainedModel, tuned: Mapping[str, torch.Tensor], rank: int
) -> tuple[PeftModel, dict[str, float]]:
    """``base`` with a LoRA adapter (alpha = r, so scale 1; no dropout) that reproduces the
    fine-tuned weights ``tuned`` (name -> tensor, as ``save_layers`` wrote them): every linear
    weight's change as rank-``rank`` factors; any other tuned weight (RMSNorm scales) is stored
    whole through peft's ``modules_to_save``. Loads with plain ``PeftModel.from_pretrained``.
    Also returns, per linear weight, the fraction of its change's squared Frobenius norm that
    the rank kept (1.0: exact)."""
    modules = dict(base.named_modules())
    parameters = dict(base.named_parameters())
    unknown = sorted(set(tuned) - set(parameters))
    if unknown:
        raise ValueError(f"the tuned weights do not fit the model: unknown {unknown[:3]}")
    linear, whole = {}, {}
    for name, value in tuned.items():
        module_name, _, kind = name.rpartition(".")
        if isinstance(modules[module_name], nn.Linear) and kind == "weight":
            linear[module_name] = value
        elif isinstance(modules[module_name], nn.Linear):
            raise ValueError(f"{name}: a tuned linear bias cannot go into a LoRA adapter")
        else:
            whole[module_name] = value
    indices = {name: _layer_index(name) for name in linear}
    outside = sorted(name for name, index in indices.items() if index is None)
    if not linear or outside:
        raise ValueError(
            "only linear weights of decoder layers can go into a LoRA adapter; "
            f"got {outside[:3] or 'none'}"
        )
    layers = sorted({index for index in indices.values() if index is not None})
    config = PeftLoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=rank,
        lora_alpha=rank,
        lora_dropout=0.0,
        target_modules=sorted({name.rsplit(".", 1)[-1] for name in linear}),
        layers_to_transform=layers,
        modules_to_save=sorted(whole) or None,
    )
    with quiet_peft():
        adapted = get_peft_model(base, config)
    inner = adapted.base_model.model
    kept = {}
    with torch.no_grad():
        for module_name, value in linear.items():
            delta = value.double() - parameters[f"{module_name}.weight"].double()
            b, a, kept[f"{module_name}.weight"] = low_rank_factors(delta, rank)
            layer = inner.get_submodule(module_name)
            layer.lora_A["default"].weight.copy_(a)
            layer.lora_B["default"].weight.copy_(b)
        for module_name, value in whole.items():
            wrapper = inner.get_submodule(module_name)
            wrapper.modules_to_save["default"].weight.copy_(value)
    return adapted, kept


def changed_weights(base: nn.Module, tuned: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters of ``tuned`` (name -> tensor) that differ from ``base``'s of the same
    name: what fine-tuning changed, in the layout ``save_layers`` writes."""
    reference = dict(base.named_parameters())
    return {
        name: parameter.detach()
        for name, parameter in tuned.named_parameters()
        if not torch.equal(parameter, reference[name])
    }


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
    # No embedding layers are ever adapted; "auto" would look the base model up (on the Hub,
    # when its recorded name is not a local folder) only to find that out.
    model.save_pretrained(folder, save_embedding_layers=False)
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
