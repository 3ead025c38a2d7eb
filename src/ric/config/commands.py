"""The section of each command (label, train, evaluate, bootstrap, prepare, online, baseline,
serve), and ``RicConfig``, the whole config that gathers them with the shared sections.

Each of these sections is read by one command only; the shared ones are in
``ric.config.sections``. ``load_config`` and ``config_from_values`` live here because they
build a ``RicConfig`` unless told another class (``ric.image.config.ImageConfig``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ric.config.engine import (
    T,
    check_choice,
    doc_field,
    fill_default_sections,
    flatten,
    from_dict,
    read_values,
    with_overrides,
)
from ric.config.sections import (
    DataConfig,
    GenerationConfig,
    LoraConfig,
    MappingConfig,
    ModelConfig,
    RewardConfig,
    TemplateConfig,
)
from ric.core import TARGET_STRATEGIES, check_preference

OUTPUT_FORMATS = ("parquet", "jsonl")
LR_SCHEDULES = ("linear", "constant", "cosine")
MIXED_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
GRIDS = ("paper", "lattice", "explicit")
RL_ALGORITHMS = ("grpo", "rloo")
OUT_OF_BOUNDS = ("clamp", "refuse")
SERVE_ENGINES = ("transformers", "vllm")
# Settings that no longer exist, with why: a run that recorded one still loads (the key is
# dropped), a user who sets one is told.
RETIRED_KEYS = {
    "serve.max_wait_ms": "ric serve batches continuously: a request joins the running batch at "
    "the engine's next step, with no wait",
}


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
    obtained_targets: int = doc_field(
        0,
        "calibrated models: obtained-reward targets per objective asked directly "
        "(rewards_obtained) and checked; 3 gives a 3x3 lattice inside the reach (0: off)",
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
        if self.obtained_targets < 0:
            raise ValueError(
                f"evaluate.obtained_targets must be >= 0 (0: off), got {self.obtained_targets}"
            )
        if self.sensitivity_samples < 0:
            raise ValueError(
                "evaluate.sensitivity_samples must be >= 0 (0: off), "
                f"got {self.sensitivity_samples}"
            )


@dataclass
class CalibrateConfig:
    """`ric calibrate`: answers at a design of desired rewards, and the fitted calibration (see
    ric.evaluation.calibrate and ric.core.calibration)."""

    model: str = doc_field("", "a RiC run (`ric train` or `ric online` output) or embedded-ric")
    prompts: str = doc_field(
        "", "prompts to calibrate on: JSONL, Parquet, CSV or HF (not the ones you evaluate on)"
    )
    prompt_column: str = doc_field("prompt", "column of the prompts")
    output: str = doc_field("", "output folder: a run that uses the model's weights, calibrated")
    levels: int = doc_field(7, "desired values per objective, evenly over the mapping's range")
    max_points: int = doc_field(
        64, "design points: every combination of levels, or this many drawn (balanced)"
    )
    answers_per_point: int = doc_field(8, "answers per design point, each to another prompt")
    seed: int = doc_field(0, "seed of the design's draws and of the prompts' assignment")
    shard_size: int = doc_field(64, "answers generated and scored per saved shard (resume unit)")

    def __post_init__(self) -> None:
        for key in ("levels", "max_points", "answers_per_point", "shard_size"):
            minimum = 2 if key == "levels" else 1
            if getattr(self, key) < minimum:
                raise ValueError(f"calibrate.{key} must be >= {minimum}, got {getattr(self, key)}")


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
    """The online stage (docs/design.md §1.3): generate near the front, relabel, MORS, fine-tune
    again."""

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
    """The paper's baselines (docs/design.md §1.6): plain SFT, MORLHF and Rewarded Soups' members.

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
    engine: str = doc_field(
        "transformers",
        "the generation engine: transformers (its continuous batching; CPU or GPU) or vllm "
        "(vLLM's async engine; pip install vllm, CUDA)",
    )
    max_batch_size: int = doc_field(
        32, "most sequences (requests x n) the engine decodes together in one step"
    )
    kv_cache_tokens: int = doc_field(
        0,
        "tokens the transformers engine's paged KV cache holds (0: sized by the engine from free "
        "GPU memory; on a CPU, max_batch_size x 1024)",
    )
    max_queue: int = doc_field(
        256, "sequences (requests x n) waiting for their first token; beyond it: 429"
    )
    retry_after_s: int = doc_field(1, "the Retry-After header (seconds) of a 429 answer")
    max_body_bytes: int = doc_field(1_000_000, "largest request body; beyond it: 413")
    max_prompt_chars: int = doc_field(8000, "largest prompt (chat: the whole transcript), chars")
    max_tokens: int = doc_field(512, "largest max_tokens a request may ask for")
    max_n: int = doc_field(8, "most choices per request (completions: n x prompts)")
    preference_bounds: dict[str, list[float]] = doc_field(
        {}, "objective name -> [min, max] of its preference weight (absent: [0, 1])"
    )
    reward_bounds: dict[str, list[float]] = doc_field(
        {},
        "objective name -> [min, max] of its desired standardized reward (absent: the run's "
        "mapping range widened by serve.reward_margin)",
    )
    reward_margin: float = doc_field(
        0.5,
        "desired rewards allowed beyond the run's mapping range [r_min, r_max], in training "
        "standard deviations, for objectives without serve.reward_bounds (.inf: unbounded)",
    )
    out_of_bounds: str = doc_field(
        "clamp", "a request outside the bounds: clamp (said in the answer) or refuse (400)"
    )
    api_keys: list[str] = doc_field(
        [],
        "keys a request must send (Authorization: Bearer KEY), with those of the environment "
        "variable RIC_API_KEYS (comma-separated); none: the server is open",
    )
    cors_origins: list[str] = doc_field(
        [], "web origins (https://app.example.com) whose pages may call the API; '*': any"
    )
    log_prompts: bool = doc_field(
        False, "the per-request log line also carries the prompts and answers"
    )

    def __post_init__(self) -> None:
        check_choice("serve.out_of_bounds", self.out_of_bounds, OUT_OF_BOUNDS)
        check_choice("serve.engine", self.engine, SERVE_ENGINES)
        for origin in self.cors_origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(
                    f"serve.cors_origins: {origin!r} is not an origin; write scheme://host[:port] "
                    "with no path (https://app.example.com), or '*' for any"
                )
        if any(not key.strip() for key in self.api_keys):
            raise ValueError("serve.api_keys must not contain an empty key")
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
        if self.kv_cache_tokens < 0:
            raise ValueError(f"serve.kv_cache_tokens must be >= 0, got {self.kv_cache_tokens}")
        if not self.reward_margin >= 0:
            raise ValueError(f"serve.reward_margin must be >= 0, got {self.reward_margin}")
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
    calibrate: CalibrateConfig = doc_field(None, "calibrated steering (`ric calibrate`)")
    bootstrap: BootstrapConfig = doc_field(None, "offline dataset sampled from a policy")
    prepare: PrepareConfig = doc_field(None, "upstream datasets turned into pairs")
    online: OnlineConfig = doc_field(None, "online stage")
    baseline: BaselineConfig = doc_field(None, "RL baselines (MORLHF, Rewarded Soups)")
    serve: ServeConfig = doc_field(None, "OpenAI-compatible HTTP server")

    def __post_init__(self) -> None:
        fill_default_sections(self)


def load_config(
    path: str | Path | None = None, overrides: Sequence[str] = (), cls: type[T] = RicConfig
) -> T:
    """Read a YAML config (a run's recorded one, or a file; without one the defaults), apply
    overrides, return the typed config. Retired keys a run recorded are dropped."""
    values = read_values(path)
    for key in RETIRED_KEYS:
        *sections, leaf = key.split(".")
        section: Any = values
        for part in sections:
            section = section.get(part) if isinstance(section, dict) else None
        if isinstance(section, dict):
            section.pop(leaf, None)
    return config_from_values(values, overrides, cls)


def config_from_values(
    values: dict[str, Any], overrides: Sequence[str] = (), cls: type[T] = RicConfig
) -> T:
    """The typed config of an already-read YAML mapping, after ``overrides``; a retired key
    (``RETIRED_KEYS``) is an error that says why it went."""
    values = with_overrides(values, overrides)
    for key, reason in RETIRED_KEYS.items():
        if key in flatten(values):
            raise ValueError(f"{key} is no longer a setting: {reason}")
    return from_dict(cls, values)
