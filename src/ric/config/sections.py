"""The sections several commands share: what the objectives, data, prompt template, mapping,
model, adapter and sampling are.

These describe the task and the policy rather than one command, so labeling, training,
evaluation and serving all read them, and ``ric.image.config`` reuses the reward, template and
mapping sections as they are. The sections that belong to one command each are in
``ric.config.commands``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ric.config.engine import T, check_choice, doc_field
from ric.core import (
    MAPPING_METHODS,
    TEMPLATE_FORMATS,
    PromptTemplate,
)

DATA_FORMATS = ("auto", "jsonl", "parquet", "csv", "hf")
RANGE_SOURCES = ("normal", "quantile")
DTYPES = ("float32", "bfloat16", "float16")
GENERATION_BACKENDS = ("hf", "vllm")


@dataclass
class RewardConfig:
    """One objective: which scorer computes it and what it is called."""

    type: str = doc_field("", "registry name (see `ric rewards`) or 'package.module:function'")
    name: str = doc_field("", "column and display name of the objective; defaults to the type")
    options: dict[str, Any] = doc_field({}, "keyword arguments for the scorer")

    @property
    def resolved_name(self) -> str:
        return self.name or self.type.replace(":", ".")


@dataclass
class DataConfig:
    """Where the (prompt, response) pairs come from."""

    path: str = doc_field("", "JSONL, Parquet or CSV file, a saved HF dataset dir, or a hub name")
    format: str = doc_field("auto", "auto, jsonl, parquet, csv or hf (auto: from the suffix)")
    split: str = doc_field("train", "split to read from a Hugging Face dataset")
    prompt_column: str = doc_field("prompt", "column holding the prompt text")
    response_column: str = doc_field("response", "column holding the response text")
    limit: int | None = doc_field(None, "read only the first LIMIT rows (None: all)")
    finished_column: str = doc_field(
        "finished",
        "true/false column; rows whose response was cut by a generation budget (false) are "
        "left out of labeling and training (ignored when the data has no such column)",
    )

    def __post_init__(self) -> None:
        check_choice("data.format", self.format, DATA_FORMATS)
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"data.limit must be >= 1 or null, got {self.limit}")


@dataclass
class TemplateConfig:
    """How reward values are written into the prompt (see ric.core.template)."""

    text: str = doc_field(
        "### Input: {prompt} {rewards} ### Response: ",
        "conditioned prompt with {prompt} and then {rewards}; the response follows it",
    )
    marker: str = doc_field("<R{i}>", "reward marker; {i} is the 1-based objective index")
    protected: list[str] = doc_field([], "extra strings neutralized in user prompts")
    format: str = doc_field(
        "plain",
        "plain (the prompt is `text`, the paper's) or chat (the model's own chat template, the "
        "rewards in a system turn: for instruct models; `text` is then unused)",
    )
    system: str = doc_field(
        "{rewards}", "chat format: the system turn's text, with {rewards} (the reward markers) once"
    )

    def __post_init__(self) -> None:
        check_choice("template.format", self.format, TEMPLATE_FORMATS)
        if self.system.count("{rewards}") != 1:
            raise ValueError(
                f"template.system must contain {{rewards}} exactly once, got {self.system!r}"
            )

    def prompt_template(self) -> PromptTemplate:
        """The template as ``ric.core`` uses it."""
        return PromptTemplate(
            self.text, self.marker, tuple(self.protected), self.format, self.system
        )


@dataclass
class MappingConfig:
    """How a preference becomes desired rewards (see ric.core.mapping; ``ric.steering`` applies
    these settings)."""

    method: str = doc_field(
        "p_inf", "linear, p_norm, p_inf, convex, or calibrated (a `ric calibrate` output's)"
    )
    p: float = doc_field(
        2.0, "norm exponent for p_norm, convex and calibrated (the last two also take inf)"
    )
    lam: list[float] | None = doc_field(None, "per-objective reweighting, each >= 1 (None: ones)")
    ordered: bool = doc_field(True, "convex only: keep desired rewards ordered like the weights")
    range_source: str = doc_field("normal", "r_min/r_max from 'normal' draws or data 'quantile's")
    normal_samples: int = doc_field(50_000, "standard-normal draws per objective (paper: 50,000)")
    seed: int = doc_field(0, "seed of the normal draws")
    lower_quantile: float = doc_field(0.0, "quantile for r_min when range_source is quantile")
    upper_quantile: float = doc_field(1.0, "quantile for r_max when range_source is quantile")

    def __post_init__(self) -> None:
        check_choice("mapping.method", self.method, MAPPING_METHODS)
        check_choice("mapping.range_source", self.range_source, RANGE_SOURCES)


@dataclass
class ModelConfig:
    """The policy model (see ric.models)."""

    source: str = doc_field(
        "smollm2", "'smollm2' (embedded), 'tiny' (built in code), a local dir or a hub id"
    )
    dtype: str = doc_field("float32", "weights dtype: float32, bfloat16 or float16")
    device: str | None = doc_field(None, "torch device (None: cuda if available, else cpu)")
    load_in_8bit: bool = doc_field(False, "8-bit base weights (needs bitsandbytes and CUDA)")

    def __post_init__(self) -> None:
        check_choice("model.dtype", self.dtype, DTYPES)


def placed(model: T, dtype: str | None, device: str | None) -> T:
    """A run's model settings (``ModelConfig`` or the image one) with the ``dtype`` and
    ``device`` to load it in, where given: how a run is loaded, not what it is."""
    given = {"dtype": dtype, "device": device}
    return dataclasses.replace(model, **{k: v for k, v in given.items() if v is not None})


@dataclass
class LoraConfig:
    """LoRA adapter settings (paper: r 64, alpha 128, dropout 0.05)."""

    enabled: bool = doc_field(True, "train a LoRA adapter (false: full fine-tuning)")
    r: int = doc_field(64, "adapter rank")
    alpha: float = doc_field(128.0, "scaling numerator (scale = alpha / r)")
    dropout: float = doc_field(0.05, "dropout on the adapter input")
    target_modules: list[str] = doc_field(
        ["q_proj", "v_proj"], "names of the linear layers that get adapters"
    )
    top_layers: int = doc_field(
        0,
        "adapt only the top N decoder layers (0: all; with enabled false, fine-tune only "
        "their weights); backprop then stops below them",
    )

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"lora.r must be >= 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ValueError("lora.target_modules must name at least one module")
        if self.top_layers < 0:
            raise ValueError(f"lora.top_layers must be >= 0 (0: all layers), got {self.top_layers}")


@dataclass
class GenerationConfig:
    """Sampling settings, recorded in every output that holds generations."""

    max_new_tokens: int = doc_field(128, "most tokens generated per response")
    do_sample: bool = doc_field(True, "sample (false: greedy decoding)")
    temperature: float = doc_field(0.7, "softmax temperature when sampling")
    top_p: float = doc_field(0.9, "nucleus sampling mass (1.0: off)")
    top_k: int = doc_field(0, "keep only the k most likely tokens (0: off)")
    stop_strings: list[str] = doc_field([], "cut a response at the first of these strings")
    min_new_tokens: int = doc_field(1, "suppress EOS for the first tokens (paper: 1)")
    batch_size: int = doc_field(16, "prompts generated together (left-padded)")
    seed: int = doc_field(0, "sampling seed")
    backend: str = doc_field(
        "hf", "hf (transformers generate; always works) or vllm (pip install vllm; CUDA only)"
    )
    vllm_gpu_memory: float = doc_field(
        0.5,
        "share of GPU memory the vLLM engine may take (its gpu_memory_utilization); the model "
        "being trained stays on the GPU beside it",
    )

    def __post_init__(self) -> None:
        check_choice("generation.backend", self.backend, GENERATION_BACKENDS)
        if not 0.0 < self.vllm_gpu_memory <= 1.0:
            raise ValueError(
                f"generation.vllm_gpu_memory must be in (0, 1], got {self.vllm_gpu_memory}"
            )
        if self.max_new_tokens < 1:
            raise ValueError(f"generation.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise ValueError(f"generation.batch_size must be >= 1, got {self.batch_size}")
        if self.do_sample and self.temperature <= 0:
            raise ValueError(
                f"generation.temperature must be > 0 when sampling, got {self.temperature} "
                "(for greedy decoding set generation.do_sample=false)"
            )
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"generation.top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"generation.top_k must be >= 0, got {self.top_k}")
