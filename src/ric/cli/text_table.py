"""The text commands' table, ``COMMANDS``: each command's help, flags (with the config key
each sets) and the ``run_*`` function of ``ric.cli.text`` it calls."""

from ric.cli.table import (
    EXPLICIT_REWARDS,
    FIELDS,
    MODEL_SOURCE,
    OUTPUT,
    PREFERENCE,
    RESUME,
    REWARDS_OBTAINED,
    RIC_RUN,
    SMOKE,
    TRAINED_RUN,
    Command,
    Flag,
    parse_floats,
)
from ric.cli.text import (
    run_baseline,
    run_bootstrap,
    run_calibrate,
    run_compare,
    run_config,
    run_demo,
    run_evaluate,
    run_export,
    run_export_lora,
    run_generate,
    run_label,
    run_map,
    run_online,
    run_prepare,
    run_rewards,
    run_serve,
    run_train,
)
from ric.core import MAPPING_METHODS

# The two exports: several --model runs average with these weights, into a new folder.
SOUP_WEIGHTS = Flag(
    "--weights",
    "soup weights, one per --model, summing to 1, e.g. 0.5,0.5 (default: equal)",
    type=parse_floats,
)
NEW_OUTPUT = Flag("--output", "output directory (must not exist or be empty)", required=True)

COMMANDS: dict[str, Command] = {
    "map": Command(
        run_map,
        "map a preference to desired rewards",
        "Print the desired rewards for a preference; the last line is JSON.",
        (
            Flag("--preference", "e.g. 0.2,0.8", type=parse_floats),
            REWARDS_OBTAINED,
            Flag(
                "--model",
                "a trained or calibrated run: its stats, mapping settings and calibration",
            ),
            Flag("--method", "default: p_inf", "mapping.method", choices=MAPPING_METHODS),
            Flag("--p", "norm exponent for p_norm / convex", "mapping.p", type=float),
            Flag("--lam", "per-objective lambda, each >= 1", "mapping.lam", type=parse_floats),
            Flag("--r-min", "per-objective r_min, e.g. -4,-4", type=parse_floats),
            Flag("--r-max", "per-objective r_max, e.g. 4,4", type=parse_floats),
            Flag("--stats", "stats.json (or a `ric label` output dir) for the ranges"),
            Flag("--prompt", "also print the conditioned prompt for this text"),
        ),
        progress=False,
        trained_run="--model",
    ),
    "label": Command(
        run_label,
        "score (prompt, response) data with rewards",
        "Score data with the configured rewards; write scored data + stats.json.",
        (
            Flag("--data", "JSONL, Parquet, CSV, a saved HF dataset or a hub name", "data.path"),
            Flag("--output", "output directory", "label.output"),
            Flag(
                "--reward",
                "reward type (repeatable); replaces the config's",
                "rewards",
                action="append",
                to_config=lambda types: [{"type": kind} for kind in types],
            ),
        ),
    ),
    "train": Command(
        run_train,
        "offline stage: multi-reward conditional SFT",
        "Fine-tune the policy on a `ric label` output with rewards in the prompt.",
        (
            Flag("--data", "a `ric label` output directory", "train.data"),
            Flag("--output", "output directory", "train.output"),
            MODEL_SOURCE,
            Flag("--init", "a RiC run to continue on this data, e.g. embedded-ric", "train.init"),
            RESUME,
        ),
    ),
    "generate": Command(
        run_generate,
        "generate with a trained model for a preference or explicit rewards",
        "Print one JSON line per prompt (settings recorded in each). Mapping, generation, "
        "model.dtype and model.device settings are the run's own unless you set them.",
        (
            Flag("--model", TRAINED_RUN, required=True),
            Flag("--prompt", "a prompt (repeatable)", action="append"),
            Flag("--prompts", "a file of prompts (JSONL, Parquet, CSV)"),
            PREFERENCE,
            EXPLICIT_REWARDS,
            REWARDS_OBTAINED,
            Flag("--output", "also write the JSON lines to this file"),
        ),
        progress=False,
        trained_run="--model",
    ),
    "evaluate": Command(
        run_evaluate,
        "sweep preferences on held-out prompts: front, hypervolume, steerability, report",
        "Mapping, generation, model.dtype and model.device settings are the run's own unless "
        "you set them.",
        (
            Flag("--model", TRAINED_RUN, "evaluate.model"),
            Flag("--prompts", "held-out prompts (JSONL, Parquet, CSV, HF)", "evaluate.prompts"),
            Flag("--output", "output directory", "evaluate.output"),
        ),
        trained_run="evaluate.model",
    ),
    "calibrate": Command(
        run_calibrate,
        "measure what a RiC model obtains when asked, and write a run that steers calibrated",
        "Generate at a design of desired rewards, score, fit per objective a monotone map from "
        "desired to obtained (with side effects), and write a run that uses the model's weights "
        "with mapping.method calibrated. Generation and mapping settings are the run's own "
        "unless you set them; a rerun resumes.",
        (
            Flag("--model", RIC_RUN, "calibrate.model"),
            Flag(
                "--prompts",
                "prompts to calibrate on (JSONL, Parquet, CSV, HF): not the ones you evaluate on",
                "calibrate.prompts",
            ),
            Flag("--output", "output directory: the calibrated run", "calibrate.output"),
        ),
        trained_run="calibrate.model",
    ),
    "bootstrap": Command(
        run_bootstrap,
        "build an offline dataset: K sampled responses per prompt from a policy",
        flags=(
            Flag("--prompts", "prompts file (JSONL, Parquet, CSV, HF)", "bootstrap.prompts"),
            Flag("--output", "output directory", "bootstrap.output"),
            Flag("--samples", "responses per prompt (default 4)", "bootstrap.samples", type=int),
            MODEL_SOURCE,
        ),
    ),
    "prepare": Command(
        run_prepare,
        "turn an upstream dataset into (prompt, response) pairs that `ric label` reads",
        "Preparers: hh-rlhf, summarize, helpsteer2, ultrafeedback. --data: a Hub dataset name "
        "(default: the dataset's own) or local files in the upstream format.",
        (
            Flag(
                "dataset",
                "the preparer (hh-rlhf, summarize, helpsteer2, ultrafeedback)",
                "prepare.dataset",
            ),
            Flag("--data", "Hub dataset name or local .jsonl/.json/.parquet files", "prepare.data"),
            Flag("--output", "output directory", "prepare.output"),
            Flag("--split", "split of a Hub dataset (default train)", "prepare.split"),
            Flag("--limit", "read only the first N upstream rows", "prepare.limit", type=int),
            Flag(
                "--tokenizer",
                "the paper's 8-512 token filter with this tokenizer",
                "prepare.tokenizer",
            ),
        ),
        progress=False,
    ),
    "online": Command(
        run_online,
        "online stage: generate near the front, relabel, MORS, fine-tune; k iterations",
        "Continue a `ric train` output with online iterations (resumable: rerun the same "
        "command after a crash). Mapping, generation and train.max_length are the run's own "
        "unless you set them.",
        (
            Flag(
                "--model",
                f"the run to continue: {RIC_RUN} (which records no data: set online.data)",
                "online.model",
            ),
            Flag("--output", "output directory (one iter-K/ per iteration)", "online.output"),
            Flag("--iterations", "online iterations (default 2)", "online.iterations", type=int),
            Flag(
                "--no-mors",
                "ablation: keep every sample",
                "online.mors",
                action="store_true",
                to_config=lambda _: False,
            ),
            Flag(
                "--no-original",
                "ablation: mix in no original samples",
                "online.original_fraction",
                action="store_true",
                to_config=lambda _: 0.0,
            ),
            Flag(
                "--heldout",
                "held-out prompts: then evaluate offline and every iteration",
                "evaluate.prompts",
            ),
        ),
        trained_run="online.model",
    ),
    "demo": Command(
        run_demo,
        "label -> offline training -> evaluation on the embedded default task",
        "Run the whole pipeline on the embedded task and print the report.",
        (Flag("--output", "output directory (runs/demo)", default="runs/demo"), SMOKE),
        config_file=False,
        builds_config=False,
    ),
    "baseline": Command(
        run_baseline,
        "the paper's baselines: sft, morlhf (one model per preference), soups",
        "sft: plain SFT on the labeled responses, prompts without rewards. morlhf: RL (TRL "
        "GRPO/RLOO) on w^T z(r) with a KL penalty to the starting model. soups: one RL model "
        "per reward, interpolated per preference at evaluation. Every output loads with "
        "`ric evaluate` and `ric generate`; reruns resume.",
        (
            Flag("baseline", "which baseline", choices=("sft", "morlhf", "soups")),
            Flag("--data", "a `ric label` output directory", "train.data"),
            OUTPUT,
            Flag("--model", "the base model: smollm2, tiny, a directory, a hub id", "model.source"),
            Flag(
                "--init",
                "morlhf, soups: a `ric baseline sft` output to start from",
                "baseline.init",
            ),
            Flag("--preference", "morlhf: the preference, e.g. 0.5,0.5", type=parse_floats),
            Flag("--resume", "sft: continue from a checkpoint", action="store_true"),
        ),
    ),
    "compare": Command(
        run_compare,
        "RiC against base, SFT, MORLHF and Rewarded Soups: fronts, hypervolumes, costs",
        "Train everything the comparison needs under --output (resumable) and evaluate it on "
        "the same prompts, rewards, stats and reference point. Without --config: the embedded "
        "default task sized for 2 CPU cores; --config lays a file over it "
        "(configs/compare-gpu.yaml).",
        (Flag("--output", "output (runs/compare)", default="runs/compare"), SMOKE),
        builds_config=False,
    ),
    "serve": Command(
        run_serve,
        "serve a trained model over an OpenAI-compatible HTTP API, steered per request",
        "Each request sets its own preference (or desired rewards) in the body. Mapping, "
        "generation, model.dtype and model.device settings are the run's own unless you set "
        "them; serve.* holds the engine (continuous batching), API keys, CORS and guardrails.",
        (
            Flag("--model", RIC_RUN, required=True),
            Flag("--host", "address to listen on (default 127.0.0.1)", "serve.host"),
            Flag("--port", "port to listen on (default 8000)", "serve.port", type=int),
        ),
        progress=False,
        trained_run="--model",
        one_process=True,
    ),
    "export": Command(
        run_export,
        "a RiC run as a Hugging Face model folder that vLLM, SGLang, transformers serve and "
        "plain transformers steer, with no ric installed",
        "Writes the weights merged into the base model (safetensors; --adapter: a PEFT LoRA "
        "naming the real base), the tokenizer with a chat template that maps a `preference` "
        "(or `rewards`) chat_template_kwarg to the run's conditioned prompt, "
        "generation_config.json from the run's generation settings, ric_steering.json and a "
        "model card (README.md). Given --model more than once, it exports the runs' weighted "
        "average (a model soup). Not `ric export-lora`, which writes a ric run folder.",
        (
            Flag(
                "--model",
                f"{RIC_RUN}; repeat it to average several",
                action="append",
                required=True,
            ),
            SOUP_WEIGHTS,
            NEW_OUTPUT,
            Flag("--dtype", "float32, bfloat16 or float16 (default: the run's model.dtype)"),
            Flag(
                "--adapter",
                "a PEFT LoRA adapter on the run's base model instead of merged weights",
                action="store_true",
            ),
            Flag(
                "--rank",
                "--adapter: LoRA rank (default: a LoRA run's own, exact; 32 for layers/)",
                type=int,
            ),
            Flag("--evaluation", "a `ric evaluate` output of the run, quoted in the card"),
        ),
        config_file=False,
        overrides=False,
        progress=False,
        builds_config=False,
        one_process=True,
    ),
    "export-lora": Command(
        run_export_lora,
        "turn a fine-tuned run (top layers or a LoRA adapter) into a LoRA run of a few MB",
        "Each weight change becomes its best rank-r approximation (truncated SVD); norm "
        "scales are kept whole. The output is a ric run folder, not a Hugging Face model folder "
        "(that is `ric export`): it loads with `ric generate/evaluate/online/serve` and with "
        "plain peft. metrics.json says how much of each change the rank kept. Given "
        "--model more than once, it exports the runs' weighted average (a model soup) of runs "
        "that share base model, template and stats.json, such as successive online iterations.",
        (
            Flag(
                "--model",
                "a trained run with layers/ or adapter/ (e.g. a `ric train` output, or "
                "embedded-ric, the shipped model); repeat it to average several",
                action="append",
                required=True,
            ),
            SOUP_WEIGHTS,
            NEW_OUTPUT,
            Flag("--rank", "LoRA rank (default 32)", type=int, default=32),
            Flag("--dtype", "float16 (default), bfloat16 or float32", default="float16"),
            Flag(
                "--portable",
                "record none of this machine's paths (data, outputs): a run to hand to others",
                action="store_true",
            ),
        ),
        config_file=False,
        overrides=False,
        progress=False,
        builds_config=False,
        one_process=True,
    ),
    "rewards": Command(
        run_rewards,
        "list the available reward scorers",
        config_file=False,
        overrides=False,
        progress=False,
        builds_config=False,
    ),
    "config": Command(
        run_config,
        "print the resolved config, or every field with its doc",
        flags=(FIELDS,),
        progress=False,
    ),
}
