"""Skip a model's frozen lower layers from a sample's second visit on.

When only the top decoder layers are trained (``lora.top_layers``, or the demo's full fine-tune of
the top 10 of SmolLM2's 30 layers), every layer below the lowest trained one is frozen: for a
given sample it computes the same hidden states in every epoch. ``FrozenLayerCache`` keeps, per
sample, the hidden states that enter the lowest trained layer, captured during the sample's first
forward pass; a later pass feeds them back as the model's ``inputs_embeds`` with its decoder-layer
list cut to the trained layers, so it runs only those (a third of SmolLM2 for the demo).

The loss and gradients are the full model's: the first batch is computed both ways and compared,
and a model for which they differ (one that transforms its ``inputs_embeds`` before the layers,
or a stochastic frozen layer) does not use the cache. It costs tokens x hidden size x 4 bytes of
memory (the demo's 1,311 samples: about 200 MB), bounded by ``train.frozen_cache_gb``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import PreTrainedModel

from ric.models.samples import TokenizedSample, response_loss_sum

SAME_LOSS_RTOL = 1e-4  # relative: fp32 summation order only (bf16 autocast matches too)


@dataclass
class FrozenLayerCache:
    """Hidden states entering decoder layer ``first`` (the lowest trained one), per sample key."""

    parent: nn.Module  # the module that holds the decoder-layer list
    attribute: str  # that list's attribute name ("layers")
    layers: nn.ModuleList
    first: int
    note: str  # what is skipped, or why nothing is (for the run's metrics)
    checked: bool = False  # the first batch has been computed both ways and matched
    failed: bool = False  # ... and did not match: every batch runs the full model
    states: dict[int, torch.Tensor] = field(default_factory=dict)

    def loss_sum(
        self,
        model: nn.Module,
        batch: dict[str, torch.Tensor],
        keys: Sequence[int],
        samples: Sequence[TokenizedSample],
    ) -> torch.Tensor:
        """``response_loss_sum`` of ``batch`` (the ``pack`` or ``collate`` batch of ``samples``,
        whose keys are ``keys``): from the stored states where every sample has them, else from
        the full model, storing what enters the lowest trained layer. If the first batch shows
        that starting at that layer does not reproduce the full model, the cache turns itself
        off and every batch runs the full model."""
        if self.failed:
            return response_loss_sum(model, batch)
        if all(key in self.states for key in keys):
            hidden = self._batch_states(keys, batch)
            with self.trained_layers_only():
                return response_loss_sum(model, batch, inputs_embeds=hidden)
        devices = [batch["labels"].device] if batch["labels"].is_cuda else []
        before = _rng_states(devices)
        with self.capturing() as captured:
            loss = response_loss_sum(model, batch)
        entering = captured[0]
        if not self.checked:
            # The same random draws (a LoRA adapter's dropout above), then the stream as it was.
            with torch.random.fork_rng(devices), torch.no_grad(), self.trained_layers_only():
                _set_rng_states(devices, before)
                again = response_loss_sum(model, batch, inputs_embeds=entering)
            if not torch.allclose(again, loss.detach(), rtol=SAME_LOSS_RTOL):
                self.failed = True
                self.note = (
                    f"off (from layer {self.first} the loss is {again.item():.6g}, from the "
                    f"embeddings {loss.item():.6g})"
                )
                return loss
            self.checked = True
        lengths = [len(sample.input_ids) for sample in samples]
        if "position_ids" in batch:  # one packed row: the samples end to end
            parts = entering[0].split(lengths)
        else:
            parts = tuple(row[:length] for row, length in zip(entering, lengths, strict=True))
        for key, part in zip(keys, parts, strict=True):
            self.states[key] = part.clone()
        return loss

    def _batch_states(self, keys: Sequence[int], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The stored states laid out as ``batch`` is: end to end, or right-padded rows (the
        padding positions get zeros; the attention mask keeps every real token from them)."""
        parts = [self.states[key] for key in keys]
        if "position_ids" in batch:
            return torch.cat(parts)[None]
        padded = parts[0].new_zeros((len(parts), batch["input_ids"].shape[1], parts[0].shape[1]))
        for row, part in enumerate(parts):
            padded[row, : len(part)] = part
        return padded

    @contextmanager
    def capturing(self) -> Iterator[list[torch.Tensor]]:
        """Within the block, the hidden states entering the lowest trained layer are appended
        to the yielded list (detached: nothing below that layer is trained)."""
        captured: list[torch.Tensor] = []

        def keep(module: nn.Module, args: tuple, kwargs: dict) -> None:
            captured.append((args[0] if args else kwargs["hidden_states"]).detach())

        handle = self.layers[self.first].register_forward_pre_hook(keep, with_kwargs=True)
        try:
            yield captured
        finally:
            handle.remove()

    @contextmanager
    def trained_layers_only(self) -> Iterator[None]:
        """Within the block the model's decoder-layer list holds only the trained layers, so
        its ``inputs_embeds`` enter the lowest of them."""
        setattr(self.parent, self.attribute, nn.ModuleList(list(self.layers)[self.first :]))
        try:
            yield
        finally:
            setattr(self.parent, self.attribute, self.layers)


def frozen_layer_cache(
    model: nn.Module, samples: Sequence[TokenizedSample], budget_gb: float
) -> tuple[FrozenLayerCache | None, str]:
    """A cache for ``model`` (transformers, PEFT- or DDP-wrapped) and ``samples``, or None; with
    a short description of what is skipped, or of why nothing can be."""
    if budget_gb <= 0:
        return None, "off (train.frozen_cache_gb is 0)"
    inner = next(m for m in model.modules() if isinstance(m, PreTrainedModel))
    found = _decoder_layers(inner)
    if found is None:
        return None, "off (no decoder-layer list found)"
    name, layers = found
    trained = [i for i, layer in enumerate(layers) if _trainable(layer)]
    embeddings = inner.get_input_embeddings()
    if not trained or trained[0] == 0 or _trainable(embeddings):
        return None, "off (the lowest decoder layer or the embeddings are trained)"
    first = trained[0]
    if any(_stochastic(m) for m in [embeddings, *layers[:first]]) or _attention_dropout(inner):
        return None, "off (dropout below the trained layers)"
    width = getattr(inner.config, "hidden_size", None) or embeddings.weight.shape[1]
    element = next(inner.parameters()).element_size()
    needed = sum(len(s.input_ids) for s in samples) * width * element / 1e9
    if needed > budget_gb:
        return None, f"off ({needed:.2f} GB needed, train.frozen_cache_gb is {budget_gb:g})"
    parent, _, attribute = name.rpartition(".")
    note = f"layers 0-{first - 1} run once per sample ({needed * 1000:.3g} MB at most)"
    cache = FrozenLayerCache(inner.get_submodule(parent), attribute, layers, first, note)
    return cache, note


def _decoder_layers(inner: PreTrainedModel) -> tuple[str, nn.ModuleList] | None:
    """The qualified name of the model's list of decoder layers (``model.layers`` for
    Llama-like models) and the list, or None."""
    count = getattr(inner.config, "num_hidden_layers", None)
    for name, module in inner.named_modules():
        if name.endswith("layers") and isinstance(module, nn.ModuleList) and len(module) == count:
            return name, module
    return None


def _rng_states(devices: list[torch.device]) -> list[torch.Tensor]:
    return [torch.get_rng_state(), *(torch.cuda.get_rng_state(d) for d in devices)]


def _set_rng_states(devices: list[torch.device], states: list[torch.Tensor]) -> None:
    torch.set_rng_state(states[0])
    for device, state in zip(devices, states[1:], strict=True):
        torch.cuda.set_rng_state(state, device)


def _trainable(module: nn.Module) -> bool:
    return any(parameter.requires_grad for parameter in module.parameters())


def _stochastic(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Dropout) and m.p > 0 for m in module.modules())


def _attention_dropout(inner: PreTrainedModel) -> bool:
    return float(getattr(inner.config, "attention_dropout", 0.0) or 0.0) > 0
