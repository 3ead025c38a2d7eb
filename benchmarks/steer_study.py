"""Learning-curve study: when does a RiC model start to read its rewards, per candidate setting?

Each candidate is a list of config overrides laid over the embedded task (``demo.yaml``). For each
one the script trains the offline stage from scratch on a `ric label` output and, every
``--eval-every`` steps, measures on the same data and held-out prompts:

* the reward-sensitivity gap, per token and per sequence (``ric.evaluation.sensitivity``), on
  ``--sensitivity-samples`` training pairs;
* the behavioural probe (``ric.evaluation.probe``): each objective asked at the low and the high
  end of its range, the others in the middle, on ``--probe-prompts`` held-out questions; the move
  of each objective in training standard deviations.

Rows go to ``OUTPUT/curve.jsonl`` as they are measured (one per candidate and step), the probe's
answers to ``OUTPUT/answers.jsonl``. A scorer that cannot be built here (e.g. the relevance
encoder on a machine without its wheel) is left out and its rewards are NaN; ``--rescore`` fills
them in afterwards from the saved answers, on a machine that has it. ``--table`` prints the
curve as a Markdown table.

    python benchmarks/steer_study.py --label runs/label-task --output runs/study \\
        --candidate demo --candidate lr-1e-3 --steps 900 --eval-every 150
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from ric.config import RicConfig
from ric.data.label import read_labeled_frame, restandardize, standardized_column
from ric.data.sources import read_prompts
from ric.evaluation.probe import probe_differences, probe_generations
from ric.evaluation.sensitivity import reward_sensitivity
from ric.models.samples import tokenize_sample
from ric.recipes.demo import demo_config
from ric.rewards import create_reward
from ric.runs import Method, TrainedPolicy
from ric.steering import Steering
from ric.tasks import HELDOUT_QUESTIONS
from ric.training.offline import read_labeled
from ric.training.sft import train

# Candidate settings, each laid over demo.yaml. "demo" is the shipped demo's training.
CANDIDATES: dict[str, list[str]] = {
    "demo": [],
    "constant": ["train.lr_schedule=constant"],
    "lr-1e-3": ["train.lr_schedule=constant", "train.learning_rate=0.001"],
    "lr-2e-3": ["train.lr_schedule=constant", "train.learning_rate=0.002"],
    "all-modules": [
        "train.lr_schedule=constant",
        "lora.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]",
    ],
    "all-modules-1e-3": [
        "train.lr_schedule=constant",
        "train.learning_rate=0.001",
        "lora.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]",
    ],
    "all-layers": ["train.lr_schedule=constant", "lora.top_layers=0"],
    "all-layers-modules-1e-3": [
        "train.lr_schedule=constant",
        "train.learning_rate=0.001",
        "lora.top_layers=0",
        "lora.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]",
    ],
    "full": [
        "train.lr_schedule=constant",
        "train.learning_rate=0.0001",
        "lora.enabled=false",
        "lora.top_layers=0",
    ],
    "full-top10": [
        "train.lr_schedule=constant",
        "train.learning_rate=0.0001",
        "lora.enabled=false",
    ],
    "full-top10-3e-4": [
        "train.lr_schedule=constant",
        "train.learning_rate=0.0003",
        "lora.enabled=false",
    ],
    "full-2e-4": [
        "train.lr_schedule=constant",
        "train.learning_rate=0.0002",
        "lora.enabled=false",
        "lora.top_layers=0",
    ],
    "full-top15-2e-4": [
        "train.lr_schedule=constant",
        "train.learning_rate=0.0002",
        "lora.enabled=false",
        "lora.top_layers=15",
    ],
}


def make_scorers(config: RicConfig) -> list:
    """One scorer per objective, or None where this machine cannot build it."""
    scorers = []
    for reward in config.rewards:
        try:
            scorers.append(create_reward(reward.type, reward.options))
        except Exception as error:
            print(
                f"scorer {reward.resolved_name!r} unavailable here ({error}); NaN until --rescore"
            )
            scorers.append(None)
    return scorers


def score(scorers: list, prompts: list[str], responses: list[str]) -> np.ndarray:
    """(B, N) raw rewards; NaN columns for missing scorers."""
    return np.column_stack(
        [
            scorer.score(prompts, responses) if scorer else np.full(len(prompts), np.nan)
            for scorer in scorers
        ]
    )


def measure(
    policy: TrainedPolicy,
    config: RicConfig,
    scorers: list,
    questions: list[str],
    pairs: pd.DataFrame,
) -> tuple[dict, list[dict]]:
    """Gaps and probe of the model as it is now; the probe's answers as rows."""
    names = list(policy.stats.names)
    gaps = reward_sensitivity(
        policy,
        pairs["prompt"].tolist(),
        pairs["response"].tolist(),
        pairs[[standardized_column(n) for n in names]].to_numpy(),
    )
    steering = Steering.for_run(policy, config.mapping)
    targets, result = probe_generations(policy, steering, questions, config.generation)
    repeated = questions * len(targets)
    raw = score(scorers, repeated, result.texts)
    standardized = policy.stats.standardize(raw)
    shape = (len(names), 2, len(questions), len(names))
    moves = probe_differences(standardized.reshape(shape))
    answers = [
        {
            "target": target.tolist(),
            "prompt": prompt,
            "response": response,
            "finished": finished,
            "words": len(response.split()),
        }
        for target, prompt, response, finished in zip(
            np.repeat(targets, len(questions), axis=0),
            repeated,
            result.texts,
            result.finished,
            strict=True,
        )
    ]
    words = np.array([row["words"] for row in answers]).reshape(shape[:3])
    row = {
        **{f"token_gap_{n}": gaps[n]["gap"] for n in names},
        **{f"sequence_gap_{n}": gaps[n]["sequence_gap"] for n in names},
        **{f"probe_{n}": float(moves[i]) for i, n in enumerate(names)},
        # Mean words at each probe end of each objective: the plainest view of what it does.
        **{
            f"words_{n}_{end}": float(words[i, e].mean())
            for i, n in enumerate(names)
            for e, end in enumerate(("low", "high"))
        },
        "finished": float(np.mean(result.finished)),
    }
    return row, answers


def run_candidate(name: str, args: argparse.Namespace, scorers: list) -> None:
    from ric.models import attach_lora, load_policy, unfreeze_top_layers

    output = Path(args.output)
    overrides = [*CANDIDATES[name], *args.set, f"train.max_steps={args.steps}"]
    overrides += [f"train.seed={args.seed}", f"train.data={json.dumps(args.label)}"]
    config = demo_config(output / "runs" / name, overrides=overrides)
    settings = replace(
        config.train,
        output=str(output / "runs" / name),
        save_steps=args.eval_every,
        keep_checkpoints=1,
    )
    data = read_labeled(args.label, config.template.prompt_template())
    frame, stats, columns = read_labeled_frame(args.label)
    pairs = restandardize(frame.sample(n=args.sensitivity_samples, random_state=0), stats)
    pairs = pairs.rename(
        columns={columns.prompt_column: "prompt", columns.response_column: "response"}
    )
    questions = read_prompts(args.heldout, limit=args.probe_prompts)
    model, tokenizer = load_policy(config.model)
    samples = [
        sample
        for prompt, response in zip(data.prompts, data.responses, strict=True)
        if (sample := tokenize_sample(tokenizer, prompt, response, settings.max_length))
    ]
    import torch

    torch.manual_seed(settings.seed)
    model = (
        attach_lora(model, config.lora)
        if config.lora.enabled
        else unfreeze_top_layers(model, config.lora.top_layers)
    )
    policy = TrainedPolicy(
        model,
        tokenizer,
        config,
        stats,
        config.template.prompt_template(),
        Method(),
        Path(settings.output),
    )
    began = time.perf_counter()

    def record(step: int) -> None:
        row, answers = measure(policy, config, scorers, questions, pairs)
        row = {
            "candidate": name,
            "data": Path(args.label).name,
            "seed": args.seed,
            "step": step,
            **row,
        }
        row["train_seconds"] = time.perf_counter() - began
        print(json.dumps(row), flush=True)
        with (output / "curve.jsonl").open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        with (output / "answers.jsonl").open("a") as handle:
            for answer in answers:
                keys = {"candidate": name, "data": Path(args.label).name, "seed": args.seed}
                handle.write(json.dumps({**keys, "step": step, **answer}) + "\n")

    record(0)
    train(
        model,
        samples,
        settings,
        Path(settings.output),
        tokenizer.pad_token_id,
        show_progress=False,
        on_checkpoint=lambda folder: record(int(folder.name.split("-")[1])),
    )
    record(args.steps)


def rescore(args: argparse.Namespace) -> None:
    """Fill NaN probe moves from the saved answers with this machine's scorers."""
    output = Path(args.output)
    config = demo_config(output)
    _, stats, _ = read_labeled_frame(args.label)
    scorers = make_scorers(config)
    answers = pd.read_json(output / "answers.jsonl", lines=True)
    raw = score(scorers, answers["prompt"].tolist(), answers["response"].tolist())
    answers[[f"z_{n}" for n in stats.names]] = stats.standardize(raw)
    curve = pd.read_json(output / "curve.jsonl", lines=True)
    names = list(stats.names)
    for index, row in curve.iterrows():
        group = answers[
            (answers.candidate == row.candidate)
            & (answers.seed == row.seed)
            & (answers.step == row.step)
        ]
        values = group[[f"z_{n}" for n in names]].to_numpy()
        moves = probe_differences(values.reshape(len(names), 2, -1, len(names)))
        for i, n in enumerate(names):
            curve.loc[index, f"probe_{n}"] = float(moves[i])
    curve.to_json(output / "curve.jsonl", orient="records", lines=True)
    print(table(curve))


def table(curve: pd.DataFrame) -> str:
    names = [c.removeprefix("probe_") for c in curve.columns if c.startswith("probe_")]
    header = ["candidate", "seed", "step", "train s"]
    header += [f"seq gap {n}" for n in names] + [f"probe {n} (sd)" for n in names]
    header += [f"words low/high {names[-1]}"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in curve.itertuples():
        cells = [row.candidate, str(row.seed), str(row.step), f"{row.train_seconds:.0f}"]
        cells += [f"{getattr(row, f'sequence_gap_{n}'):+.3f}" for n in names]
        cells += [f"{getattr(row, f'probe_{n}'):+.2f}" for n in names]
        last = names[-1]
        cells += [
            f"{getattr(row, f'words_{last}_low'):.0f} / {getattr(row, f'words_{last}_high'):.0f}"
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", required=True, help="`ric label` output of the task's pairs")
    parser.add_argument("--output", required=True)
    parser.add_argument("--heldout", default=str(HELDOUT_QUESTIONS))
    parser.add_argument("--candidate", action="append", default=[], choices=sorted(CANDIDATES))
    parser.add_argument("--set", action="append", default=[], help="override for every candidate")
    parser.add_argument("--steps", type=int, default=900)
    parser.add_argument("--eval-every", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sensitivity-samples", type=int, default=64)
    parser.add_argument("--probe-prompts", type=int, default=48)
    parser.add_argument("--rescore", action="store_true", help="fill NaN probes, then --table")
    parser.add_argument("--table", action="store_true", help="print curve.jsonl as Markdown")
    args = parser.parse_args()
    Path(args.output).mkdir(parents=True, exist_ok=True)
    if args.rescore:
        return rescore(args)
    if args.table:
        return print(table(pd.read_json(Path(args.output) / "curve.jsonl", lines=True)))
    scorers = make_scorers(demo_config(Path(args.output)))
    for name in args.candidate or ["demo"]:
        run_candidate(name, args, scorers)


if __name__ == "__main__":
    main()
