"""Small helpers every module that runs a Hugging Face model shares (rewards and policies)."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

# Optional dependencies: the module, the extra that installs it, and what needs it.
OPTIONAL = {
    "trl": ("rl", "the RL baselines (`ric baseline morlhf|soups`, `ric compare`)"),
    "fastapi": ("serve", "the HTTP server (`ric serve`)"),
    "uvicorn": ("serve", "the HTTP server (`ric serve`)"),
    "vllm": (
        "vllm",
        "generations on vLLM (`generation.backend: vllm`, `serve.engine: vllm`; CUDA GPUs only)",
    ),
}


def import_optional(module: str) -> ModuleType:
    """Import an optional dependency, or raise a ValueError (the CLI's one-line error) that
    says what needs it and the command that installs it."""
    extra, purpose = OPTIONAL[module]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(
            f"{purpose} need the optional dependency {module!r}, which is not installed: "
            f'python -m pip install "ric[{extra}]" (from a checkout: -e ".[{extra}]")'
        ) from None


def quiet_transformers() -> None:
    """Hide transformers' own progress bars ("Loading weights") and info lines, so a command
    shows only ric's bars and lines; downloads from the Hub keep their bars."""
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging

    hub_bars = not are_progress_bars_disabled()
    logging.disable_progress_bar()  # also switches the Hub's bars off...
    logging.set_verbosity_error()
    hub_logging.set_verbosity_error()  # its retry warnings; a failure still raises
    if hub_bars:
        enable_progress_bars()  # ...which downloads of large models still want


def default_device() -> str:
    """CUDA when available, else CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def set_pad_token(model: Any, tokenizer: Any) -> None:
    """Make tokenizer and model agree on a pad token (eos when the tokenizer has none).

    Decoder classifiers locate the last token as the last id != config.pad_token_id, and refuse
    batches when it is None; generation and training pad too, so the model must know the id the
    tokenizer pads with.
    """
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token to pad batches with")
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id


def describe_device() -> str:
    """The device a run used, for cost tables: the GPU's name, or the CPU and its core count."""
    import os

    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return f"cpu: {len(os.sched_getaffinity(0))} cores"


# CPU flags of native bfloat16 arithmetic (Linux's /proc/cpuinfo names).
BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def native_bfloat16(device: str, cpu_flags: str | None = None) -> bool:
    """Whether ``device`` computes in bfloat16 natively: a CUDA GPU that supports it, or a CPU
    with AVX512-BF16 or AMX (``cpu_flags``: /proc/cpuinfo's text; read when None). Elsewhere
    bfloat16 is emulated, and slower than float32."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if cpu_flags is None:
        try:
            with open("/proc/cpuinfo") as cpuinfo:
                cpu_flags = cpuinfo.read()
        except OSError:  # not Linux: no flags to read, so no claim of native support
            return False
    words = set(cpu_flags.split())
    return any(flag in words for flag in BFLOAT16_CPU_FLAGS)


def release_memory() -> None:
    """Hand the memory a finished stage freed back to the system. glibc keeps freed heap memory
    for the process, and a later stage (other models, other tensor shapes) often cannot reuse
    those holes, so each stage grew the peak (`ric demo` in one process: 8.2 GB without this,
    6.5 GB with it; its training alone peaks at 4.4 GB). Collect garbage, then ``malloc_trim``;
    where the C library is not glibc, only the collection."""
    import ctypes
    import gc

    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, Windows, musl)
        return
    libc.malloc_trim(0)
