"""Generation backends on the online stage's workload, side by side in one run.

Workload: the demo's online iteration: ``--prompts`` conditioned questions (the held-out questions
with targets drawn near the front), sampled at temperature 0.7 / top-p 0.9, ``--max-new-tokens``
each (EOS suppressed until then, so every backend generates the same number of tokens and tokens/s
compare fairly), batch ``--batch-size``. Model: the embedded SmolLM2-135M (or ``--model tiny``).

Backends:

* ``hf batched``: ric's ``generate_with_stats`` (length-sorted, left-padded ``model.generate``
  batches, dynamic KV cache): today's path, the reference;
* ``hf bfloat16``: ``hf batched`` on a bfloat16 copy of the weights (``model.dtype: bfloat16``):
  half the bytes read per decoding step, and native bfloat16 multiply-adds where the hardware has
  them (AVX512-BF16 or AMX on a CPU, any recent GPU);
* ``hf int8``: ``hf batched`` on a copy whose decoder linear layers are torch's dynamically
  quantized ones (int8 weights per output channel, activations quantized per call, int8 matrix
  products; the output layer stays float32). Not a ric setting: measured, not adopted
  (docs/results.md);
* ``hf static``: the same batches with a static KV cache (``cache_implementation="static"``);
* ``hf static+compile``: and ``torch.compile`` of the decoding step (``CompileConfig``);
* ``continuous``: transformers' continuous batching (``model.generate_batch``: paged KV cache, a
  finished row's slot refilled at once);
* ``vllm``: ``generate_with_stats`` with ``generation.backend: vllm`` (only where vLLM is
  installed, on a CUDA device; building the engine is part of its warm-up).

Repeats cycle through the backends; medians are reported, and each backend's ratio to ``hf
batched``. The first call of each backend (compilation, warm-up) is timed apart and left out.

    python benchmarks/bench_generation_backends.py --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import CompileConfig
from transformers import GenerationConfig as HFGenerationConfig
from transformers.utils import logging as transformers_logging

from ric.config import GenerationConfig, ModelConfig
from ric.core import build_prompt, front_targets
from ric.models.generation import generate_with_stats, left_pad

HELD_OUT = (
    Path(__file__).parent.parent / "src" / "ric" / "tasks" / "data" / "questions_heldout.jsonl"
)


def online_prompts(count: int) -> list[str]:
    """``count`` held-out questions (cycled) with two targets drawn near the front."""
    questions = [json.loads(line)["prompt"] for line in HELD_OUT.read_text().splitlines()]
    targets = front_targets(np.random.default_rng(0), count, np.full(2, -1.7), np.full(2, 2.2))
    return [
        build_prompt(questions[i % len(questions)], targets[i].round(1).tolist())
        for i in range(count)
    ]


def hf_batched(model: Any, tokenizer: Any, prompts: list[str], settings: GenerationConfig) -> int:
    result = generate_with_stats(model, tokenizer, prompts, settings)
    return sum(result.num_new_tokens)


def hf_bfloat16() -> Callable[..., int]:
    """``hf batched`` on a bfloat16 copy of the model, made on the first call."""
    copies: dict[int, Any] = {}

    def generate(model: Any, tokenizer: Any, prompts: list[str], settings: GenerationConfig) -> int:
        if id(model) not in copies:
            copies[id(model)] = copy.deepcopy(model).to(torch.bfloat16)
        return hf_batched(copies[id(model)], tokenizer, prompts, settings)

    return generate


def hf_int8() -> Callable[..., int]:
    """``hf batched`` on an int8 copy of the model (``torch.ao``'s dynamic quantization of every
    linear layer but the output one), made on the first call."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    copies: dict[int, Any] = {}

    def generate(model: Any, tokenizer: Any, prompts: list[str], settings: GenerationConfig) -> int:
        if id(model) not in copies:
            quantized = copy.deepcopy(model)
            output = quantized.get_output_embeddings()
            layers = {
                name: per_channel_dynamic_qconfig
                for name, module in quantized.named_modules()
                if isinstance(module, torch.nn.Linear) and module is not output
            }
            copies[id(model)] = quantize_dynamic(quantized, layers, dtype=torch.qint8)
        return hf_batched(copies[id(model)], tokenizer, prompts, settings)

    return generate


def sampling(settings: GenerationConfig, tokenizer: Any) -> dict[str, Any]:
    return {
        "max_new_tokens": settings.max_new_tokens,
        "min_new_tokens": settings.min_new_tokens,
        "do_sample": True,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "top_k": 0,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def hf_static(compiled: bool) -> Callable[..., int]:
    """Batches as ``hf batched`` builds them, each generated with a static KV cache, the decoding
    step compiled or not (transformers compiles on CUDA by default; told to on any device)."""
    compile_config = None
    if compiled:
        compile_config = CompileConfig(fullgraph=False, dynamic=False)
        compile_config._compile_all_devices = True  # the switch transformers reads off CUDA

    def generate(model: Any, tokenizer: Any, prompts: list[str], settings: GenerationConfig) -> int:
        rows = tokenizer(prompts)["input_ids"]
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]), reverse=True)
        options = sampling(settings, tokenizer) | {
            "cache_implementation": "static",
            "compile_config": compile_config,
        }
        generated = 0
        torch.manual_seed(settings.seed)
        for start in range(0, len(order), settings.batch_size):
            batch = left_pad([rows[i] for i in order[start : start + settings.batch_size]], 0)
            with torch.inference_mode():
                output = model.generate(**batch, **options)
            generated += (output.shape[1] - batch["input_ids"].shape[1]) * output.shape[0]
        return generated

    return generate


def continuous(model: Any, tokenizer: Any, prompts: list[str], settings: GenerationConfig) -> int:
    config = HFGenerationConfig(**sampling(settings, tokenizer))
    torch.manual_seed(settings.seed)
    outputs = model.generate_batch(
        inputs=tokenizer(prompts)["input_ids"], generation_config=config, progress_bar=False
    )
    return sum(len(output.generated_tokens) for output in outputs.values())


def vllm(model: Any, tokenizer: Any, prompts: list[str], settings: GenerationConfig) -> int:
    return hf_batched(model, tokenizer, prompts, replace(settings, backend="vllm"))


HAS_VLLM = importlib.util.find_spec("vllm") is not None
BACKENDS: dict[str, Callable[..., int]] = {
    "hf batched": hf_batched,
    "hf bfloat16": hf_bfloat16(),
    "hf int8": hf_int8(),
    "hf static": hf_static(compiled=False),
    "hf static+compile": hf_static(compiled=True),
    "continuous": continuous,
    **({"vllm": vllm} if HAS_VLLM else {}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--prompts", type=int, default=96, help="the demo's online samples")
    parser.add_argument("--batch-size", type=int, default=48, help="the demo's batch")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="the demo's budget")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", action="append", choices=sorted(BACKENDS), default=None)
    args = parser.parse_args()

    from ric.models import load_policy

    transformers_logging.set_verbosity_error()
    model, tokenizer = load_policy(ModelConfig(source=args.model))
    model.eval()
    prompts = online_prompts(args.prompts)
    settings = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        min_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
    )
    names = args.backend or list(BACKENDS)
    if not HAS_VLLM and args.backend is None:
        print("vLLM is not installed (pip install vllm; CUDA builds only): its row is skipped")
    print(
        f"model {args.model} on {model.device}, {torch.get_num_threads()} threads; "
        f"{len(prompts)} prompts x {args.max_new_tokens} new tokens, batch {args.batch_size}"
    )
    for name in names:  # warm-up: compilation, caches
        start = time.perf_counter()
        BACKENDS[name](model, tokenizer, prompts[: args.batch_size], settings)
        print(f"warm-up {name}: {time.perf_counter() - start:.1f} s", flush=True)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    tokens: dict[str, int] = {}
    for repeat in range(args.repeats):
        for name in names:
            start = time.perf_counter()
            tokens[name] = BACKENDS[name](model, tokenizer, prompts, settings)
            seconds[name].append(time.perf_counter() - start)
        print(
            f"repeat {repeat + 1}: "
            + ", ".join(f"{name} {values[-1]:.1f} s" for name, values in seconds.items()),
            flush=True,
        )
    reference = tokens[names[0]] / statistics.median(seconds[names[0]])
    print(f"generated tokens/s, median of {args.repeats}:")
    for name in names:
        rate = tokens[name] / statistics.median(seconds[name])
        print(f"  {name:<18} {rate:7.0f}  {rate / reference:.2f}x  ({tokens[name]} tokens)")


if __name__ == "__main__":
    main()
