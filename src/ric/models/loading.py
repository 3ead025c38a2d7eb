"""Load the policy model and its tokenizer from one ``model.source`` setting.

Sources, tried in this order:

* ``"tiny"``: the 2-layer Llama built in code (tests, ``--smoke``), see ``ric.models.tiny``;
* ``"smollm2"``: the embedded SmolLM2-135M-Instruct, converted once to the user cache;
* an existing local directory written by ``save_pretrained``;
* otherwise a model hub id (``org/name``), for users with a network.

Every source comes back the same way: on ``settings.device`` (None: CUDA when available), in
``settings.dtype``, in eval mode (what ``from_pretrained`` gives; the training loop switches to
train mode), with a pad token (eos when the tokenizer has none, so batches can be padded).
``load_in_8bit`` (the paper's 8-bit base) needs bitsandbytes and a CUDA device; without them it
is an error rather than a silent float32 load, since memory use would differ by 4x.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ric.config import ModelConfig
from ric.models.embedded import ensure_smollm2
from ric.models.tiny import build_tiny
from ric.runtime import default_device, quiet_transformers, set_pad_token

__all__ = ["load_policy"]

VALID_SOURCES = "'smollm2' (embedded), 'tiny' (built in code), a local model directory or a hub id"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def load_policy(settings: ModelConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The causal LM and tokenizer named by ``settings.source``, ready for training or sampling."""
    quiet_transformers()
    device = settings.device or default_device()
    if settings.load_in_8bit:
        _check_8bit(device)
    if settings.source == "tiny":
        if settings.load_in_8bit:
            raise ValueError("model.load_in_8bit needs pretrained weights, not the tiny model")
        model, tokenizer = build_tiny()
        model = model.to(device=device, dtype=getattr(torch, settings.dtype)).eval()
    else:
        model, tokenizer = _load_pretrained(_resolve(settings.source), settings, device)
    set_pad_token(model, tokenizer)
    return model, tokenizer


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """The tokenizer alone of ``source`` (smollm2, tiny, a directory or a hub id), e.g. to count
    tokens without loading weights."""
    if source == "tiny":
        return build_tiny()[1]
    quiet_transformers()
    return AutoTokenizer.from_pretrained(_resolve(source))


def _resolve(source: str) -> str:
    """A local directory path or hub id for ``source`` ("smollm2" is converted first)."""
    if source == "smollm2":
        return str(ensure_smollm2())
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"model.source {source!r} is a directory without config.json (not written by "
                f"save_pretrained); valid sources: {VALID_SOURCES}"
            )
        return str(path)
    if not HUB_ID.fullmatch(source):
        raise ValueError(
            f"model.source {source!r} is neither an existing directory nor a hub id (org/name); "
            f"valid sources: {VALID_SOURCES}"
        )
    return source


def _load_pretrained(
    source: str, settings: ModelConfig, device: str
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``from_pretrained`` for a local directory or hub id, with the dtype and device settings."""
    options: dict[str, Any] = {"dtype": getattr(torch, settings.dtype)}
    if settings.load_in_8bit:
        from transformers import BitsAndBytesConfig

        # Quantized weights cannot be moved after loading: place them while loading.
        options |= {
            "quantization_config": BitsAndBytesConfig(load_in_8bit=True),
            "device_map": {"": device},
        }
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, **options)
    except (OSError, ValueError) as error:  # not on the hub, no network, files missing
        raise ValueError(
            f"could not load model.source {source!r}: {error}\nvalid sources: {VALID_SOURCES}"
        ) from error
    if not settings.load_in_8bit:
        model = model.to(device)
    return model, tokenizer


def _check_8bit(device: str) -> None:
    """Raise ValueError naming what 8-bit loading lacks here (bitsandbytes, CUDA)."""
    missing = []
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("the bitsandbytes package (pip install bitsandbytes)")
    if not torch.cuda.is_available():
        missing.append("a CUDA device (torch sees none)")
    elif not device.startswith("cuda"):
        missing.append(f"a CUDA model.device (got {device!r})")
    if missing:
        raise ValueError(f"model.load_in_8bit needs {' and '.join(missing)}; or set it to false")
