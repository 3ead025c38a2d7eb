"""Generation on vLLM (``generation.backend: vllm``): the new token ids of each prompt, which
``ric.models.generation`` turns into responses exactly as it does for the ``hf`` backend.

vLLM (``pip install "ric[vllm]"``; CUDA builds only) schedules requests with continuous batching
and a paged KV cache. The contract is the ``hf`` backend's: the same prompt token ids (vLLM gets
them as ``TokensPrompt``, never the text), EOS suppressed for ``min_new_tokens`` tokens, every
EOS id of the tokenizer and the model a stop token, stop strings end a response, and the caller
cuts, decodes and cleans the tokens with the same code. What differs:

* weights: vLLM cannot run the model object in memory, so the weights it needs are written to a
  temporary folder and an engine is built on them. A LoRA model's base weights are written
  (adapter layers stripped) and its adapter, a few MB, is saved again at every call and served
  as a new ``LoRARequest``; a plain model (full or top-layer fine-tuning) is written whole. The
  engine is kept for the next call while the weights it was built from are unchanged (names,
  shapes and float64 sums compared), so the shards of an online iteration or an evaluation
  sweep reuse it, and weights changed by fine-tuning build a new one (the old one is released
  first: one engine per process). The base is written from memory rather than loaded from
  ``config._name_or_path``, which can name other weights: a run started from another run
  (``train.init``) has that run's adapter merged into its base in memory only, and the tiny
  model has no folder at all.
* sampling: vLLM draws its own random numbers, so sampled texts differ from the ``hf``
  backend's for the same seed; each prompt gets its own seed (from ``generation.seed`` and its
  position), so the same call gives the same texts and repeated prompts still differ. Greedy
  texts agree with ``hf`` up to numerics (``tests/test_vllm_backend.py``, where vLLM exists).
* stop strings are checked only after ``min_new_tokens`` tokens (transformers checks them from
  the first token; with the default ``min_new_tokens: 1`` only a stop string completed by the
  very first token is treated differently).
* precision: the engine runs in the model's dtype, except that a float32 LoRA model is served
  in bfloat16 (vLLM's LoRA kernels take 16-bit weights only; merge the adapter, or load the
  model in bfloat16, to compare greedy texts with ``hf``).
* memory: the engine takes ``generation.vllm_gpu_memory`` of the GPU (weights, KV cache) beside
  the model being trained. Several processes (``accelerate launch``) each build an engine on
  their share of the prompts; that is untested.
"""

from __future__ import annotations

import gc
import itertools
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ric.config import GenerationConfig
from ric.models.lora import save_adapter
from ric.runtime import import_optional

__all__ = ["base_weights", "generate_token_ids", "release_engine", "sampling_params"]

# The adapter ranks vLLM's LoRA kernels are built for: max_lora_rank must be one of them.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
_adapter_ids = itertools.count(1)  # vLLM caches adapters by id: each saved adapter gets a new one


@dataclass
class _Engine:
    """A vLLM engine and what it was built from."""

    key: tuple[Any, ...]  # engine options and the fingerprint of the weights it loaded
    llm: Any  # vllm.LLM
    folder: tempfile.TemporaryDirectory[str]  # those weights and the tokenizer


_engine: _Engine | None = None  # one per process: each engine holds its own share of GPU memory


def generate_token_ids(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    eos_ids: Sequence[int],
    settings: GenerationConfig,
    show_progress: bool = False,
) -> tuple[list[list[int]], list[bool]]:
    """The new token ids of each prompt (ending with the EOS id when one was generated) and
    whether each ended by EOS or a stop string rather than ``max_new_tokens``, in input order.
    ``model``: a transformers causal LM or a PEFT model with one LoRA adapter."""
    vllm = import_optional("vllm")
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest

    rank = _adapter_rank(model)  # None: no adapter
    llm = _engine_for(
        vllm, model if rank is None else model.get_base_model(), tokenizer, settings, rank
    )
    seeds = np.random.SeedSequence(settings.seed % 2**63).generate_state(len(prompt_ids))
    params = [sampling_params(vllm, settings, eos_ids, int(seed)) for seed in seeds]
    prompts = [TokensPrompt(prompt_token_ids=list(ids)) for ids in prompt_ids]
    with tempfile.TemporaryDirectory(prefix="ric-adapter-") as folder:
        request = None
        if rank is not None:
            save_adapter(model, folder)
            number = next(_adapter_ids)
            request = LoRARequest(f"ric-{number}", number, folder)
        outputs = llm.generate(prompts, params, use_tqdm=show_progress, lora_request=request)
    completions = [output.outputs[0] for output in outputs]
    new_ids = [list(completion.token_ids) for completion in completions]
    # finish_reason: "stop" for EOS, a stop token or a stop string; "length" for max_tokens.
    return new_ids, [completion.finish_reason == "stop" for completion in completions]


def sampling_params(
    vllm: Any, settings: GenerationConfig, eos_ids: Sequence[int], seed: int | None
) -> Any:
    """vLLM's ``SamplingParams`` for one prompt; temperature 0 is vLLM's greedy decoding, seed
    None draws from vLLM's own generator."""
    sampling = (
        {
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "top_k": settings.top_k,  # 0 is "off" in vLLM too
            "seed": seed,
        }
        if settings.do_sample
        else {"temperature": 0.0}
    )
    return vllm.SamplingParams(
        max_tokens=settings.max_new_tokens,
        min_tokens=min(settings.min_new_tokens, settings.max_new_tokens),
        stop=list(settings.stop_strings),
        stop_token_ids=list(eos_ids),
        **sampling,
    )


def _adapter_rank(model: Any) -> int | None:
    """The LoRA rank of a PEFT model (None for a plain transformers model), checked servable."""
    from peft import LoraConfig, PeftModel

    if not isinstance(model, PeftModel):
        return None
    configs = list(model.peft_config.values())
    if len(configs) != 1 or not isinstance(configs[0], LoraConfig):
        kinds = ", ".join(f"{name} ({c.peft_type})" for name, c in model.peft_config.items())
        raise ValueError(
            f"generation.backend=vllm serves one LoRA adapter; the model has {kinds}: merge "
            "them into the weights first or use generation.backend=hf"
        )
    config = configs[0]
    if config.modules_to_save:
        raise ValueError(
            "generation.backend=vllm serves LoRA weights only, and this adapter also saves whole "
            f"modules ({', '.join(config.modules_to_save)}): merge it into the weights first "
            "(ric.models.merge_adapter) or use generation.backend=hf"
        )
    rank: int = max([config.r, *(config.rank_pattern or {}).values()])
    if rank > VLLM_LORA_RANKS[-1]:
        raise ValueError(
            f"vLLM serves LoRA ranks up to {VLLM_LORA_RANKS[-1]}, this adapter has rank {rank}: "
            "use generation.backend=hf"
        )
    return rank


def _engine_for(
    vllm: Any, model: Any, tokenizer: Any, settings: GenerationConfig, rank: int | None
) -> Any:
    """The kept engine if it was built from these weights with these options, else a new one
    built on ``model``'s weights (LoRA layers stripped) and ``tokenizer``."""
    global _engine
    weights = base_weights(model)
    dtype = str(model.dtype).removeprefix("torch.")  # vLLM's "auto" runs float32 in float16
    if rank is not None and dtype == "float32":
        dtype = "bfloat16"  # vLLM's LoRA kernels take 16-bit weights only
    options: dict[str, Any] = {"dtype": dtype, "gpu_memory_utilization": settings.vllm_gpu_memory}
    if rank is not None:
        max_rank = next(size for size in VLLM_LORA_RANKS if size >= rank)
        options |= {"enable_lora": True, "max_lora_rank": max_rank, "max_loras": 1}
    key = (sorted(options.items()), _fingerprint(weights))
    if _engine is not None and _engine.key == key:
        return _engine.llm
    release_engine()
    folder = tempfile.TemporaryDirectory(prefix="ric-vllm-")
    model.save_pretrained(folder.name, state_dict=weights)
    tokenizer.save_pretrained(folder.name)  # vLLM detokenizes (stop strings) with ric's tokenizer
    _engine = _Engine(key, vllm.LLM(model=folder.name, tokenizer=folder.name, **options), folder)
    return _engine.llm


def release_engine() -> None:
    """Drop the kept engine, if any; vLLM frees its GPU memory when the engine is collected."""
    global _engine
    if _engine is None:
        return
    folder, _engine = _engine.folder, None
    gc.collect()
    folder.cleanup()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def base_weights(model: Any) -> dict[str, torch.Tensor]:
    """``model``'s state dict without LoRA layers: ``q_proj.base_layer.weight`` becomes
    ``q_proj.weight`` and the ``lora_A``/``lora_B`` weights are left out (a plain model's state
    dict comes back unchanged)."""
    return {
        name.replace(".base_layer.", "."): tensor
        for name, tensor in model.state_dict().items()
        if ".lora_" not in name
    }


def _fingerprint(weights: dict[str, torch.Tensor]) -> list[tuple[str, tuple[int, ...], float]]:
    """Name, shape and float64 sum of every tensor: the same weights give the same list, and a
    training step changes some sum."""
    with torch.no_grad():
        return [
            (name, tuple(tensor.shape), float(tensor.sum(dtype=torch.float64)))
            for name, tensor in weights.items()
        ]
