"""Typed configuration: YAML files mapped onto dataclasses, with command-line overrides.

Every field has a type, a default and a one-line ``doc`` (shown by ``ric config --help-fields``).
Unknown keys and wrongly typed values are errors that name the key path (``label.shard_size``),
so a typo never silently falls back to a default. The resolved config is written beside every
output so that a run describes itself.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import yaml

from ric.core import (
    MAPPING_METHODS,
    TARGET_STRATEGIES,
    PromptTemplate,
    RewardStats,
    check_preference,
    normal_reward_range,
    preference_to_rewards,
)

T = TypeVar("T")
DATA_FORMATS = ("auto", "jsonl", "parquet", "csv", "hf")
OUTPUT_FORMATS = ("parquet", "jsonl")
RANGE_SOURCES = ("normal", "quantile")
DTYPES = ("float32", "bfloat16", "float16")
LR_SCHEDULES = ("linear", "constant", "cosine")
MIXED_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
GRIDS = ("paper", "lattice", "explicit")
GENERATION_BACKENDS = ("hf", "vllm")
RL_ALGORITHMS = ("grpo", "rloo")
OUT_OF_BOUNDS = ("clamp", "refuse")
_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def check_choice(key: str, value: str, valid: Sequence[str]) -> None:
    """Raise ValueError naming ``key`` when ``value`` is not one of ``valid``."""
    if value not in valid:
        raise ValueError(f"{key}: {value!r} is not valid; choose one of {', '.join(valid)}")


def doc_field(default: Any, doc: str) -> Any:
    """A dataclass field with a default (copied for mutable values) and a one-line doc."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


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
class LabelConfig:
    """How `ric label` scores and writes the data."""

    output: str = doc_field("", "output directory for scored data, stats and resolved config")
    shard_size: int = doc_field(1024, "rows scored and saved per shard (the unit of resume)")
    output_format: str = doc_field("parquet", "scored data format: parquet or jsonl")
    reuse_scores: bool = doc_field(True, "load shards scored by earlier runs (false: rescore all)")
    contrast_pairs: float = doc_field(
        0.0,
        "rows added per row that pair its prompt with another prompt's response (an off-topic "
        "answer, scored like any row), so prompt-dependent rewards such as relevance vary at "
        "every length and a model learns to follow them alone (0: none; a fraction such as "
        "0.25 adds one to that share of the rows)",
    )

    def __post_init__(self) -> None:
        check_choice("label.output_format", self.output_format, OUTPUT_FORMATS)
        if self.shard_size < 1:
            raise ValueError(f"label.shard_size must be >= 1, got {self.shard_size}")
        if self.contrast_pairs < 0:
            raise ValueError(
                f"label.contrast_pairs must be >= 0 (0: none), got {self.contrast_pairs}"
            )


@dataclass
class TemplateConfig:
    """How reward values are written into the prompt (see ric.core.template)."""

    text: str = doc_field(
        "### Input: {prompt} {rewards} ### Response: ",
        "conditioned prompt with {prompt} and then {rewards}; the response follows it",
    )
    marker: str = doc_field("<R{i}>", "reward marker; {i} is the 1-based objective index")
    protected: list[str] = doc_field([], "extra strings neutralized in user prompts")

    def prompt_template(self) -> PromptTemplate:
        """The template as ``ric.core`` uses it."""
        return PromptTemplate(self.text, self.marker, tuple(self.protected))


@dataclass
class MappingConfig:
    """How a preference becomes desired rewards (see ric.core.mapping)."""

    method: str = doc_field("p_inf", "linear, p_norm, p_inf or convex")
    p: float = doc_field(2.0, "norm exponent for p_norm and convex (convex also takes inf)")
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

    def reward_range(
        self, stats: RewardStats | None, num_objectives: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(r_min, r_max) in standardized units; data quantiles need the stats."""
        if stats is not None:
            return stats.reward_range(
                self.range_source,  # type: ignore[arg-type]
                samples=self.normal_samples,
                seed=self.seed,
                lower=self.lower_quantile,
                upper=self.upper_quantile,
            )
        if self.range_source == "quantile":
            raise ValueError("mapping.range_source 'quantile' needs a stats file (--stats)")
        return normal_reward_range(num_objectives, samples=self.normal_samples, seed=self.seed)

    def desired_rewards(
        self, preference: Sequence[float], r_min: np.ndarray, r_max: np.ndarray
    ) -> np.ndarray:
        """Map a preference to desired (standardized) rewards with these settings."""
        return preference_to_rewards(
            preference,
            r_min,
            r_max,
            method=self.method,
            p=self.p,
            lam=self.lam,
            ordered=self.ordered,
        )


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


@dataclass
class TrainConfig:
    """Conditional SFT (offline stage; the online stage continues with the same loop)."""

    data: str = doc_field("", "a `ric label` output directory (scored data + stats.json)")
    output: str = doc_field("", "output directory: adapter or model, checkpoints, log, config")
    init: str = doc_field(
        "",
        "a RiC run to continue on this data (its weights, model, lora and template settings; "
        "empty: a new adapter or new layers on model.source)",
    )
    max_steps: int = doc_field(200, "optimizer steps (paper: 20,000 on Llama-2 7B)")
    batch_size: int = doc_field(8, "samples per micro-batch (paper: 8)")
    gradient_accumulation_steps: int = doc_field(1, "micro-batches per optimizer step")
    learning_rate: float = doc_field(1.41e-4, "peak learning rate (paper: 1.41e-4)")
    lr_schedule: str = doc_field("linear", "linear (decay to 0), constant or cosine")
    warmup_steps: int = doc_field(0, "linear warm-up steps")
    weight_decay: float = doc_field(0.0, "AdamW weight decay")
    max_grad_norm: float = doc_field(1.0, "gradient clipping norm (0: off)")
    max_length: int = doc_field(256, "most tokens per sample (prompt + response + EOS)")
    mixed_precision: str = doc_field(
        "auto", "auto (bf16 on a bf16 GPU or an AMX CPU), fp32, bf16 or fp16"
    )
    save_steps: int = doc_field(
        50, "save a resumable checkpoint every N steps (0: none; a killed run starts over)"
    )
    keep_checkpoints: int = doc_field(2, "checkpoints kept on disk (older ones are deleted)")
    log_steps: int = doc_field(10, "log the mean loss every N steps")
    seed: int = doc_field(0, "seed of data order, dropout and adapter initialization")
    packing: bool = doc_field(
        True,
        "padding-free micro-batches: samples end to end, per-sample attention, output layer only "
        "at response tokens (the same loss; false: right-padded rows)",
    )
    frozen_cache_gb: float = doc_field(
        2.0,
        "memory for the hidden states entering the lowest trained layer, kept per sample so "
        "that later epochs run only the trained layers (when lora.top_layers freezes those "
        "below; the same loss; 0: off)",
    )

    def __post_init__(self) -> None:
        for key in (
            "max_steps",
            "batch_size",
            "gradient_accumulation_steps",
            "max_length",
            "keep_checkpoints",
        ):
            if getattr(self, key) < 1:
                raise ValueError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("save_steps", "warmup_steps", "log_steps"):
            if getattr(self, key) < 0:
                raise ValueError(f"train.{key} must be >= 0, got {getattr(self, key)}")
        if self.learning_rate <= 0:
            raise ValueError(f"train.learning_rate must be > 0, got {self.learning_rate}")
        if self.frozen_cache_gb < 0:
            raise ValueError(f"train.frozen_cache_gb must be >= 0, got {self.frozen_cache_gb}")
        check_choice("train.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_choice("train.mixed_precision", self.mixed_precision, MIXED_PRECISIONS)


@dataclass
class EvaluateConfig:
    """Preference sweep of a trained model (see ric.evaluation)."""

    model: str = doc_field("", "a `ric train` output directory")
    prompts: str = doc_field("", "held-out prompts: JSONL, Parquet, CSV or HF dataset")
    prompt_column: str = doc_field("prompt", "column of the held-out prompts")
    num_prompts: int = doc_field(32, "held-out prompts used (the first N; paper: 2,000)")
    output: str = doc_field("", "output directory for tables, plot, metrics and report")
    grid: str = doc_field("paper", "paper (11 points / 13 vectors), lattice, or explicit")
    divisions: int = doc_field(10, "lattice divisions per objective when grid is lattice")
    preferences: list[list[float]] = doc_field([], "the preferences when grid is explicit")
    reference: list[float] | None = doc_field(
        None, "hypervolume reference point, raw units (None: the labeled data's minimum)"
    )
    sensitivity_samples: int = doc_field(
        64, "training pairs for the true-vs-shuffled-rewards loss check (0: off)"
    )
    probe: bool = doc_field(
        True, "behavioural probe: each objective asked low and high (2N more generations/prompt)"
    )
    resamples: int = doc_field(
        1000,
        "resamples of the held-out prompts for the 95% intervals of the hypervolume and of "
        "Spearman(w_1, mean r_i) (0: off)",
    )

    def __post_init__(self) -> None:
        check_choice("evaluate.grid", self.grid, GRIDS)
        if self.num_prompts < 1:
            raise ValueError(f"evaluate.num_prompts must be >= 1, got {self.num_prompts}")
        if self.resamples < 0:
            raise ValueError(f"evaluate.resamples must be >= 0 (0: off), got {self.resamples}")
        if self.sensitivity_samples < 0:
            raise ValueError(
                "evaluate.sensitivity_samples must be >= 0 (0: off), "
                f"got {self.sensitivity_samples}"
            )


@dataclass
class BootstrapConfig:
    """`ric bootstrap`: sample K responses per prompt from a policy to build an offline dataset."""

    prompts: str = doc_field("", "prompts: JSONL, Parquet, CSV or HF dataset")
    prompt_column: str = doc_field("prompt", "column of the prompts")
    limit: int | None = doc_field(None, "use only the first LIMIT prompts (None: all)")
    output: str = doc_field("", "output directory (pairs.jsonl + config.yaml)")
    samples: int = doc_field(4, "responses sampled per prompt")
    instructions: list[str] = doc_field(
        [], "system instructions cycled over a prompt's samples, to spread the rewards"
    )
    chat_template: bool = doc_field(True, "wrap prompts in the tokenizer's chat template if any")
    sentence_cuts: bool = doc_field(
        False,
        "also store each response cut after each of its complete sentences (the same answer "
        "at every length it can end at)",
    )
    shard_size: int = doc_field(32, "prompts generated and saved per shard (the unit of resume)")

    def __post_init__(self) -> None:
        for key in ("samples", "shard_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"bootstrap.{key} must be >= 1, got {getattr(self, key)}")


@dataclass
class PrepareConfig:
    """`ric prepare`: a dataset in its upstream format turned into (prompt, response) pairs."""

    dataset: str = doc_field("", "the preparer: hh-rlhf, summarize, helpsteer2 or ultrafeedback")
    data: str = doc_field("", "a Hub dataset name, or local files in the upstream format")
    split: str = doc_field("train", "split of a Hub dataset (summarize: train or validation)")
    limit: int | None = doc_field(None, "read only the first LIMIT upstream rows (None: all)")
    output: str = doc_field("", "output directory (pairs.parquet, prepare.json, config.yaml)")
    tokenizer: str = doc_field(
        "", "the paper's length filter: keep pairs of min..max tokens of this tokenizer ('': off)"
    )
    min_tokens: int = doc_field(8, "the length filter's minimum (prompt + response tokens)")
    max_tokens: int = doc_field(512, "the length filter's maximum (prompt + response tokens)")

    def __post_init__(self) -> None:
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise ValueError(
                f"prepare.min_tokens and max_tokens must satisfy 0 <= min <= max, got "
                f"{self.min_tokens} and {self.max_tokens}"
            )


@dataclass
class OnlineConfig:
    """The online stage (DESIGN §1.3): generate near the front, relabel, MORS, fine-tune again."""

    model: str = doc_field("", "the `ric train` output to continue (the offline stage)")
    output: str = doc_field("", "output directory: one iter-K/ folder per iteration")
    data: str = doc_field("", "`ric label` output for original samples (empty: the offline data)")
    prompts: str = doc_field("", "prompts to generate for (empty: the original data's prompts)")
    prompt_column: str = doc_field("prompt", "column of the prompts file")
    iterations: int = doc_field(2, "online iterations (paper: 2)")
    samples: int = doc_field(256, "generations per iteration (paper: 20,000)")
    targets: str = doc_field("front", "target rewards: front (paper's rule) or uniform")
    mors: bool = doc_field(True, "multi-objective rejection sampling (false: keep every sample)")
    mors_quantile: float = doc_field(0.7, "MORS threshold: this quantile of each objective")
    original_fraction: float = doc_field(
        0.5, "MORS-filtered original samples mixed in, per kept online sample (0: none)"
    )
    max_steps: int = doc_field(100, "fine-tuning steps per iteration (paper: 4,000)")
    learning_rate: float = doc_field(1e-5, "learning rate of the online fine-tuning (paper: 1e-5)")
    lr_schedule: str = doc_field("constant", "linear, constant (paper) or cosine")
    shard_size: int = doc_field(32, "generations made, scored and saved together (unit of resume)")
    seed: int = doc_field(0, "seed of prompt sampling, targets and original-sample mixing")

    def __post_init__(self) -> None:
        for key in ("iterations", "samples", "max_steps", "shard_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"online.{key} must be >= 1, got {getattr(self, key)}")
        if not 0.0 < self.mors_quantile < 1.0:
            raise ValueError(f"online.mors_quantile must be in (0, 1), got {self.mors_quantile}")
        if self.original_fraction < 0:
            raise ValueError(
                f"online.original_fraction must be >= 0 (0: none), got {self.original_fraction}"
            )
        if self.learning_rate <= 0:
            raise ValueError(f"online.learning_rate must be > 0, got {self.learning_rate}")
        check_choice("online.targets", self.targets, TARGET_STRATEGIES)
        check_choice("online.lr_schedule", self.lr_schedule, LR_SCHEDULES)


@dataclass
class BaselineConfig:
    """The paper's baselines (DESIGN §1.6): plain SFT, MORLHF and Rewarded Soups' members.

    SFT runs the offline loop (``train.*``) on prompts without rewards. The RL runs fine-tune
    a LoRA adapter with a maintained TRL trainer on the scalarized standardized reward
    w^T z(r), with a KL penalty to the model they start from. Sampling (length, temperature,
    top-p) follows ``generation.*``; the adapter follows ``lora.*``.
    """

    sft_column: str = doc_field(
        "", "SFT: a true/false data column marking the preferred responses (empty: all)"
    )
    algorithm: str = doc_field("grpo", "TRL trainer: grpo (GRPOTrainer) or rloo (RLOOTrainer)")
    init: str = doc_field(
        "", "a `ric baseline sft` output to start from and stay near (KL) (empty: model.source)"
    )
    data: str = doc_field("", "`ric label` output: RL prompts and reward stats (empty: train.data)")
    preferences: list[list[float]] = doc_field(
        [], "MORLHF preferences, one model each (empty: every one-hot vector and the uniform one)"
    )
    max_steps: int = doc_field(30, "optimizer steps per RL run")
    learning_rate: float = doc_field(1e-4, "learning rate of the RL adapter")
    beta: float = doc_field(0.05, "KL penalty coefficient to the starting model")
    num_generations: int = doc_field(4, "completions sampled per prompt (the group of GRPO/RLOO)")
    prompts_per_step: int = doc_field(2, "prompts per optimizer step")
    save_steps: int = doc_field(10, "save a resumable checkpoint every N steps")
    seed: int = doc_field(0, "seed of prompt order, sampling and adapter initialization")

    def __post_init__(self) -> None:
        check_choice("baseline.algorithm", self.algorithm, RL_ALGORITHMS)
        for key in ("max_steps", "prompts_per_step", "save_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"baseline.{key} must be >= 1, got {getattr(self, key)}")
        if self.num_generations < 2:
            raise ValueError(
                "baseline.num_generations must be >= 2 (GRPO and RLOO compare completions of "
                f"the same prompt), got {self.num_generations}"
            )
        if self.learning_rate <= 0:
            raise ValueError(f"baseline.learning_rate must be > 0, got {self.learning_rate}")
        if self.beta < 0:
            raise ValueError(f"baseline.beta must be >= 0, got {self.beta}")


@dataclass
class ServeConfig:
    """`ric serve`: the OpenAI-compatible HTTP server, its batching and its guardrails."""

    host: str = doc_field("127.0.0.1", "address the server listens on")
    port: int = doc_field(8000, "TCP port the server listens on")
    default_preference: list[float] = doc_field(
        [], "preference of a request that sets neither preference nor rewards (empty: uniform)"
    )
    max_batch_size: int = doc_field(8, "most sequences (requests x n) generated in one call")
    max_wait_ms: float = doc_field(
        10.0,
        "how long the first queued request waits for others (under steady load on a CPU, 200 "
        "lets answered clients rejoin the next batch: README 'Serve')",
    )
    max_queue: int = doc_field(64, "requests waiting for generation; beyond it: 429")
    retry_after_s: int = doc_field(1, "the Retry-After header (seconds) of a 429 answer")
    max_body_bytes: int = doc_field(1_000_000, "largest request body; beyond it: 413")
    max_prompt_chars: int = doc_field(8000, "largest prompt (chat: the whole transcript), chars")
    max_tokens: int = doc_field(512, "largest max_tokens a request may ask for")
    max_n: int = doc_field(8, "most choices per request (completions: n x prompts)")
    preference_bounds: dict[str, list[float]] = doc_field(
        {}, "objective name -> [min, max] of its preference weight (absent: [0, 1])"
    )
    reward_bounds: dict[str, list[float]] = doc_field(
        {}, "objective name -> [min, max] of its desired standardized reward (absent: none)"
    )
    out_of_bounds: str = doc_field(
        "clamp", "a request outside the bounds: clamp (said in the answer) or refuse (400)"
    )

    def __post_init__(self) -> None:
        check_choice("serve.out_of_bounds", self.out_of_bounds, OUT_OF_BOUNDS)
        for key in (
            "max_batch_size",
            "max_queue",
            "retry_after_s",
            "max_body_bytes",
            "max_prompt_chars",
            "max_tokens",
            "max_n",
        ):
            if getattr(self, key) < 1:
                raise ValueError(f"serve.{key} must be >= 1, got {getattr(self, key)}")
        if not 0 <= self.max_wait_ms < float("inf"):
            raise ValueError(f"serve.max_wait_ms must be finite and >= 0, got {self.max_wait_ms}")
        if not 0 < self.port < 65536:
            raise ValueError(f"serve.port must be in 1..65535, got {self.port}")
        if self.default_preference:
            try:
                check_preference(self.default_preference)
            except ValueError as error:
                raise ValueError(f"serve.default_preference: {error}") from None
        for key in ("preference_bounds", "reward_bounds"):
            for name, bounds in getattr(self, key).items():
                if (
                    not isinstance(bounds, list)
                    or len(bounds) != 2
                    or not all(isinstance(v, int | float) and np.isfinite(v) for v in bounds)
                    or bounds[0] > bounds[1]
                ):
                    raise ValueError(
                        f"serve.{key}.{name} must be [min, max] with finite min <= max, "
                        f"got {bounds!r}"
                    )
        for name, (low, high) in self.preference_bounds.items():
            if low < 0 or high > 1:
                raise ValueError(
                    f"serve.preference_bounds.{name} must lie within [0, 1], got {[low, high]}"
                )


@dataclass
class RicConfig:
    """Everything one run needs; each command reads the sections it uses."""

    data: DataConfig = doc_field(None, "input data")
    rewards: list[RewardConfig] = doc_field([], "objectives, in order (R1, R2, ...)")
    label: LabelConfig = doc_field(None, "labeling settings")
    template: TemplateConfig = doc_field(None, "conditioned-prompt template")
    mapping: MappingConfig = doc_field(None, "preference-to-reward mapping")
    model: ModelConfig = doc_field(None, "policy model")
    lora: LoraConfig = doc_field(None, "LoRA adapter")
    generation: GenerationConfig = doc_field(None, "sampling settings")
    train: TrainConfig = doc_field(None, "conditional SFT")
    evaluate: EvaluateConfig = doc_field(None, "preference sweep")
    bootstrap: BootstrapConfig = doc_field(None, "offline dataset sampled from a policy")
    prepare: PrepareConfig = doc_field(None, "upstream datasets turned into pairs")
    online: OnlineConfig = doc_field(None, "online stage")
    baseline: BaselineConfig = doc_field(None, "RL baselines (MORLHF, Rewarded Soups)")
    serve: ServeConfig = doc_field(None, "OpenAI-compatible HTTP server")

    def __post_init__(self) -> None:
        fill_default_sections(self)


def fill_default_sections(config: Any) -> None:
    """Give every section left at None its own defaults (doc_field(None) keeps the docs in one
    place)."""
    for name, annotation in typing.get_type_hints(type(config)).items():
        if getattr(config, name) is None and dataclasses.is_dataclass(annotation):
            setattr(config, name, annotation())


def _describe(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _convert(value: Any, annotation: Any, path: str) -> Any:
    """Check and convert a YAML value to ``annotation``; errors name ``path``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, path)
            except ValueError as error:
                errors.append(str(error))
        raise ValueError(errors[0])
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected a mapping, got {value!r}")
        return from_dict(annotation, value, path)  # type: ignore[arg-type]
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{path}: expected a list, got {value!r}")
        return [_convert(item, args[0], f"{path}[{i}]") for i, item in enumerate(value)]
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is Any:
        return value
    if annotation is float:
        if isinstance(value, str) and value.strip().lower() in ("inf", "+inf", ".inf"):
            return float("inf")
        if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-5 (no dot) as a string
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif (annotation is bool or annotation is str) and isinstance(value, annotation):
        return value
    raise ValueError(f"{path}: expected {_describe(annotation)}, got {value!r}")


def from_dict(cls: type[T], values: dict[str, Any], path: str = "") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys and bad types name their path."""
    fields = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown config key {path + '.' if path else ''}{unknown[0]}; "
            f"valid keys{' in ' + path if path else ''}: {', '.join(fields)}"
        )
    kwargs = {
        name: _convert(value, fields[name], f"{path}.{name}" if path else name)
        for name, value in values.items()
    }
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def apply_override(values: dict[str, Any], override: str) -> None:
    """Apply ``key.sub=value`` (value parsed as YAML) to a nested mapping, in place."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {override!r} must look like key.sub=value")
    parts = key.strip().split(".")
    target = values
    for part in parts[:-1]:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise ValueError(f"override {override!r}: {part} is not a section")
    target[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""


def read_values(path: str | Path | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The raw mapping of a YAML config file (empty without one) with ``overrides`` applied:
    exactly what the user set, before defaults. A file's top-level ``base: other.yaml`` (a path
    relative to the file) is read first and the file laid over it, section by section."""
    values = _read_file(Path(path), ()) if path is not None else {}
    return with_overrides(values, overrides)


def _read_file(file: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    if file.resolve() in chain:
        raise ValueError(f"config file {str(file)!r} is its own base (a cycle of base: keys)")
    if not file.is_file():
        raise ValueError(f"config file {str(file)!r} does not exist")
    try:
        loaded = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ValueError(f"config file {str(file)!r} is not valid YAML{where}: {problem}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"config file {str(file)!r} must hold a mapping at the top level")
    base = loaded.pop("base", None)
    if base is None:
        return loaded
    if not isinstance(base, str):
        raise ValueError(f"base in {str(file)!r} must be a path to a YAML file, got {base!r}")
    return _merge(_read_file(file.parent / base, (*chain, file.resolve())), loaded)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid onto ``base``: mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if both else value
    return merged


def with_overrides(values: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``values`` with every ``key.sub=value`` override applied."""
    values = copy.deepcopy(values)
    for override in overrides:
        apply_override(values, override)
    return values


def load_config(
    path: str | Path | None = None, overrides: Sequence[str] = (), cls: type[T] = RicConfig
) -> T:
    """Read a YAML config (or start from defaults), apply overrides, return the typed config."""
    return from_dict(cls, read_values(path, overrides))


def config_from_values(
    values: dict[str, Any], overrides: Sequence[str] = (), cls: type[T] = RicConfig
) -> T:
    """The typed config of an already-read YAML mapping, after ``overrides``."""
    return from_dict(cls, with_overrides(values, overrides))


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: nested sections as dotted keys (lists are values)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def dump_config(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True)


def iter_field_docs(cls: type, prefix: str = "") -> Iterator[tuple[str, str, Any, str]]:
    """(key path, type, default, doc) for every field, depth first; used by `ric config`."""
    instance = cls()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        key, annotation = f"{prefix}{f.name}", hints[f.name]
        if dataclasses.is_dataclass(annotation):
            yield from iter_field_docs(annotation, f"{key}.")  # type: ignore[arg-type]
            continue
        yield key, _describe(annotation), getattr(instance, f.name), f.metadata.get("doc", "")
        item = typing.get_args(annotation)[0] if typing.get_origin(annotation) is list else None
        if dataclasses.is_dataclass(item):
            yield from iter_field_docs(item, f"{key}[].")  # type: ignore[arg-type]
