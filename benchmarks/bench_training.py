"""Training throughput: ric's conditional-SFT loop, packed and padded, vs TRL's SFTTrainer, with
and without its packing; the same data, model, trainable weights and batch.

Contestants (each trains the same model for the same number of optimizer steps, fp32, loss on the
response tokens only):

* ``ric packed``: ``train.packing: true`` (the default): a micro-batch's samples end to end in one
  padding-free row, per-sample position ids, output layer only where a response token is predicted;
  its first epoch also keeps, per sample, what enters the lowest trained layer;
* ``ric padded``: ``train.packing: false`` and ``train.frozen_cache_gb: 0``, the loop before
  packing: right-padded rows of samples grouped by length;
* ``TRL``: SFTTrainer's defaults for prompt-completion data (rows padded to the longest of a random
  batch of 8);
* ``TRL packed``: SFTTrainer with ``packing=True`` (best-fit decreasing into rows of
  ``8 x the mean sample length`` tokens, so a step holds about 8 samples as in the others;
  padding-free, position ids per sample).

Tasks: ``--task demo`` is the embedded demo's training: SmolLM2's pairs.jsonl (1,311 answers at
every sentence length), prompts with two reward values, the top 10 layers fully trained,
max_length 100. The values come from two cheap rewards (verbosity, positivity) rather than the
demo's relevance model, so labeling is instant; the prompts have the demo's format and length.
``--task lora`` is the paper's adapter (LoRA r 64 on q/v) on examples/qa_pairs.jsonl.

The figure is response tokens per second: response tokens (EOS included) per optimizer step,
expected over the data (8 x the mean; for TRL packed, the mean per packed row), times the steps,
over the wall-clock time of the training call. Repeats cycle through the contestants so that a
noisy machine slows all alike; medians are reported.

Later epochs: the frozen layers below the trained ones run once per sample
(``train.frozen_cache_gb``), so from the second epoch on a step runs only the trained layers. The
second part trains ric's loops for two epochs of ``steps x 8`` samples drawn from the task's
data and times the second epoch alone (from the training log): packed with that cache (the
default), packed without it, and padded (the loop before). From these and the first part it
projects the demo's own training (600 steps, 164 per epoch).

    python benchmarks/bench_training.py --task demo --steps 20 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ric.config import LoraConfig, ModelConfig, TrainConfig, load_config
from ric.data.label import label_dataset
from ric.models import attach_lora, load_policy, unfreeze_top_layers
from ric.models.samples import tokenize_sample
from ric.training.checkpoints import LOG_FILE
from ric.training.offline import read_labeled
from ric.training.sft import train

ROOT = Path(__file__).parent.parent
BATCH = 8
DEMO_STEPS = 600  # the demo's training (src/ric/recipes/demo.yaml), for the projection


@dataclass(frozen=True)
class Task:
    data: Path
    max_length: int
    lora: LoraConfig  # lora.enabled false: the top lora.top_layers layers are trained in full


TASKS = {
    "demo": Task(
        ROOT / "src" / "ric" / "tasks" / "data" / "pairs.jsonl",
        100,
        LoraConfig(enabled=False, top_layers=10),
    ),
    "lora": Task(ROOT / "examples" / "qa_pairs.jsonl", 256, LoraConfig()),
}


def conditioned_pairs(task: Task, workdir: Path) -> tuple[list[str], list[str]]:
    """Label the task's data with two cheap rewards; return conditioned pairs."""
    config = load_config(
        None,
        [
            f"data.path={task.data}",
            f"label.output={workdir / 'label'}",
            "rewards=[{type: verbosity}, {type: positivity}]",
        ],
    )
    label_dataset(config, show_progress=False)
    data = read_labeled(workdir / "label", config.template.prompt_template())
    return data.prompts, data.responses


def trainable_model(source: str, task: Task) -> tuple[Any, Any]:
    model, tokenizer = load_policy(ModelConfig(source=source))
    torch.manual_seed(0)
    if task.lora.enabled:
        return attach_lora(model, task.lora), tokenizer
    return unfreeze_top_layers(model, task.lora.top_layers), tokenizer


def tokenized(tokenizer: Any, task: Task, pairs) -> list[Any]:
    """The samples ric trains on (those whose prompt fits max_length)."""
    samples = [
        tokenize_sample(tokenizer, p, r, task.max_length) for p, r in zip(*pairs, strict=True)
    ]
    return [sample for sample in samples if sample is not None]


def ric_settings(steps: int, packing: bool, cache: bool, log_steps: int = 0) -> TrainConfig:
    return TrainConfig(
        max_steps=steps,
        batch_size=BATCH,
        learning_rate=1.41e-4,
        mixed_precision="fp32",
        save_steps=0,
        log_steps=log_steps,
        packing=packing,
        frozen_cache_gb=TrainConfig.frozen_cache_gb if cache else 0.0,
    )


def time_ric(source: str, task: Task, pairs, steps: int, workdir: Path, packing: bool) -> float:
    """Seconds of ric's first ``steps`` steps on the task's data (padded: the loop before)."""
    model, tokenizer = trainable_model(source, task)
    samples = tokenized(tokenizer, task, pairs)
    settings = ric_settings(steps, packing, cache=packing)
    start = time.perf_counter()
    train(model, samples, settings, workdir / "ric", tokenizer.pad_token_id, show_progress=False)
    return time.perf_counter() - start


def time_second_epoch(
    source: str, task: Task, pairs, subset: list[int], workdir: Path, packing: bool, cache: bool
) -> float:
    """Seconds of the second of two epochs over the samples ``subset`` indexes (one epoch is
    ``len(subset) / 8`` steps), read from the training log."""
    model, tokenizer = trainable_model(source, task)
    samples = tokenized(tokenizer, task, pairs)
    steps = len(subset) // BATCH
    settings = ric_settings(2 * steps, packing, cache, log_steps=steps)
    output = workdir / "epochs"
    shutil.rmtree(output, ignore_errors=True)
    chosen = [samples[i] for i in subset]
    train(model, chosen, settings, output, tokenizer.pad_token_id, show_progress=False)
    logged = [json.loads(line) for line in (output / LOG_FILE).read_text().splitlines()]
    return logged[1]["seconds"] - logged[0]["seconds"]


def trl_trainer(source: str, task: Task, pairs, steps: int, workdir: Path, packing_row: int):
    """SFTTrainer on the pairs; ``packing_row`` > 0: packed into rows of that many tokens."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = trainable_model(source, task)
    dataset = Dataset.from_list(
        [{"prompt": p, "completion": r} for p, r in zip(*pairs, strict=True)]
    )
    arguments = SFTConfig(
        output_dir=str(workdir / "trl"),
        max_steps=steps,
        per_device_train_batch_size=1 if packing_row else BATCH,
        learning_rate=1.41e-4,
        lr_scheduler_type="linear",
        max_length=packing_row or task.max_length,
        packing=bool(packing_row),
        gradient_checkpointing=False,  # off for small models (docs/design.md §3), as ric does
        bf16=False,
        use_cpu=not torch.cuda.is_available(),
        save_strategy="no",
        report_to=[],
        logging_steps=steps,
        seed=0,
        disable_tqdm=True,
    )
    return SFTTrainer(
        model=model, args=arguments, train_dataset=dataset, processing_class=tokenizer
    )


def time_trl(trainer: Any) -> float:
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def response_tokens_per_row(trainer: Any) -> float:
    """The mean response tokens (loss tokens) of a row of TRL's (packed) training set."""
    labels = trainer.train_dataset["labels"]
    return statistics.mean(sum(label != -100 for label in row) for row in labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="smollm2 or tiny")
    parser.add_argument("--task", default="demo", choices=sorted(TASKS))
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per contestant")
    parser.add_argument(
        "--parts",
        default="first,epochs",
        help="first (the first steps, with TRL), epochs (a second epoch, ric only), or both",
    )
    args = parser.parse_args()
    task = TASKS[args.task]

    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        pairs = conditioned_pairs(task, workdir)
        _, tokenizer = load_policy(ModelConfig(source=args.model))
        samples = tokenized(tokenizer, task, pairs)
        response = statistics.mean(sample.trained_tokens for sample in samples)
        length = statistics.mean(len(sample.input_ids) for sample in samples)
        packing_row = round(BATCH * length)
        print(
            f"model {args.model}, task {args.task}: {len(samples)} samples, {length:.0f} tokens "
            f"each on average ({response:.0f} response); TRL packs rows of {packing_row} tokens; "
            f"{torch.get_num_threads()} threads"
        )
        times: dict[str, list[float]] = {}
        per_step = {"ric packed": BATCH * response, "ric padded": BATCH * response}
        per_step["TRL"] = BATCH * response
        for repeat in range(args.repeats if "first" in args.parts else 0):
            for packing in (True, False):
                name = "ric packed" if packing else "ric padded"
                seconds = time_ric(args.model, task, pairs, args.steps, workdir, packing)
                times.setdefault(name, []).append(seconds)
            for name, row in (("TRL", 0), ("TRL packed", packing_row)):
                trainer = trl_trainer(args.model, task, pairs, args.steps, workdir, row)
                if row:
                    per_step[name] = response_tokens_per_row(trainer)
                times.setdefault(name, []).append(time_trl(trainer))
            print(
                f"repeat {repeat + 1}: "
                + ", ".join(f"{name} {values[-1]:.1f} s" for name, values in times.items())
                + f" for {args.steps} steps"
            )
        subset = random.Random(0).sample(range(len(samples)), args.steps * BATCH)
        epoch_tokens = sum(samples[i].trained_tokens for i in subset)
        later: dict[str, list[float]] = {}
        contestants = {
            "packed + cache": (True, True),
            "packed": (True, False),
            "padded": (False, False),
        }
        for repeat in range(args.repeats if "epochs" in args.parts else 0):
            for name, (packing, cache) in contestants.items():
                seconds = time_second_epoch(
                    args.model, task, pairs, subset, workdir, packing, cache
                )
                later.setdefault(name, []).append(seconds)
            print(
                f"second epoch, repeat {repeat + 1}: "
                + ", ".join(f"{name} {values[-1]:.1f} s" for name, values in later.items())
                + f" for {args.steps} steps"
            )
    if times:
        report_first_steps(times, per_step, args)
    if later:
        report_later_epochs(later, epoch_tokens, len(subset), args.repeats)
    if times and later:
        report_projection(times, later, len(samples), args.steps)


def report_later_epochs(
    later: dict[str, list[float]], epoch_tokens: int, samples: int, repeats: int
) -> None:
    rates = {name: epoch_tokens / statistics.median(values) for name, values in later.items()}
    print(f"second epoch of {samples} samples, response tokens/s, median of {repeats}:")
    for name, rate in rates.items():
        print(f"  ric {name:<15} {rate:7.0f}")
    cached = rates["packed + cache"]
    print(
        f"later epochs: packed + cache / padded: {cached / rates['padded']:.2f}x; "
        f"packed + cache / packed: {cached / rates['packed']:.2f}x"
    )


def report_projection(
    times: dict[str, list[float]], later: dict[str, list[float]], samples: int, steps: int
) -> None:
    """The demo's training time from the measured step times: its first epoch at the first
    steps' rate (every sample new), the rest at the second epoch's."""
    first_step = statistics.median(times["ric packed"]) / steps
    later_step = statistics.median(later["packed + cache"]) / steps
    padded_run = DEMO_STEPS * statistics.median(times["ric padded"]) / steps
    per_epoch = math.ceil(samples / BATCH)
    cached_run = min(per_epoch, DEMO_STEPS) * first_step
    cached_run += max(DEMO_STEPS - per_epoch, 0) * later_step
    print(
        f"projected {DEMO_STEPS} steps on all {samples} samples ({per_epoch} steps per epoch): "
        f"packed + cache {cached_run / 60:.1f} min, padded {padded_run / 60:.1f} min: "
        f"{padded_run / cached_run:.2f}x"
    )


def report_first_steps(times: dict[str, list[float]], per_step: dict[str, float], args) -> None:
    rates = {
        name: per_step[name] * args.steps / statistics.median(values)
        for name, values in times.items()
    }
    print(f"first {args.steps} steps, response tokens/s, median of {args.repeats}:")
    for name, rate in rates.items():
        print(f"  {name:<11} {rate:7.0f}  ({per_step[name]:.0f} response tokens per step)")
    packed = rates["ric packed"]
    print(
        f"ric packed / ric padded: {packed / rates['ric padded']:.2f}x; "
        f"ric packed / TRL packed: {packed / rates['TRL packed']:.2f}x; "
        f"ric packed / TRL: {packed / rates['TRL']:.2f}x"
    )


if __name__ == "__main__":
    main()
