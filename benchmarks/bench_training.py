"""Training throughput: ric's conditional-SFT loop vs TRL's SFTTrainer, same data and model.

Both fine-tune the same LoRA (the paper's r 64, alpha 128, dropout 0.05 on q_proj/v_proj) on the
same conditioned (prompt, response) samples, batch 8, fp32, the same number of optimizer steps,
loss on the response tokens only. TRL runs with its defaults for prompt-completion data (padding
to the longest sample of a randomly drawn batch); ric groups samples of similar length into a
batch. The figure is response tokens per second: the mean response length (tokens, EOS included)
times the samples seen, over the wall-clock time of the training call. Repeats alternate between
the two so that a noisy machine slows both alike; medians are reported.

    python benchmarks/bench_training.py --model smollm2 --steps 12 --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ric.config import LoraConfig, ModelConfig, TrainConfig, load_config
from ric.data import label_dataset
from ric.models import attach_lora, load_policy
from ric.models.samples import tokenize_sample
from ric.training.offline import read_labeled
from ric.training.sft import train

EXAMPLES = Path(__file__).parent.parent / "examples" / "qa_pairs.jsonl"
LORA = LoraConfig()  # the paper's adapter
MAX_LENGTH = 256


def conditioned_pairs(workdir: Path) -> tuple[list[str], list[str]]:
    """Label the shipped example data with two cheap rewards; return conditioned pairs."""
    config = load_config(
        None,
        [
            f"data.path={EXAMPLES}",
            f"label.output={workdir / 'label'}",
            "rewards=[{type: verbosity}, {type: positivity}]",
        ],
    )
    label_dataset(config, show_progress=False)
    data = read_labeled(workdir / "label", config.template.prompt_template())
    return data.prompts, data.responses


def time_ric(source: str, prompts, responses, steps: int, workdir: Path) -> float:
    model, tokenizer = load_policy(ModelConfig(source=source))
    samples = [
        tokenize_sample(tokenizer, p, r, MAX_LENGTH)
        for p, r in zip(prompts, responses, strict=True)
    ]
    torch.manual_seed(0)
    model = attach_lora(model, LORA)
    settings = TrainConfig(
        max_steps=steps,
        batch_size=8,
        learning_rate=1.41e-4,
        mixed_precision="fp32",
        save_steps=0,
        log_steps=0,
    )
    start = time.perf_counter()
    train(model, samples, settings, workdir / "ric", tokenizer.pad_token_id, show_progress=False)
    return time.perf_counter() - start


def time_trl(source: str, prompts, responses, steps: int, workdir: Path) -> float:
    from datasets import Dataset
    from peft import LoraConfig as PeftLoraConfig
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = load_policy(ModelConfig(source=source))
    dataset = Dataset.from_list(
        [{"prompt": p, "completion": r} for p, r in zip(prompts, responses, strict=True)]
    )
    arguments = SFTConfig(
        output_dir=str(workdir / "trl"),
        max_steps=steps,
        per_device_train_batch_size=8,
        learning_rate=1.41e-4,
        lr_scheduler_type="linear",
        max_length=MAX_LENGTH,
        gradient_checkpointing=False,  # off for small models (DESIGN §3), as ric does
        bf16=False,
        use_cpu=not torch.cuda.is_available(),
        save_strategy="no",
        report_to=[],
        logging_steps=steps,
        seed=0,
        disable_tqdm=True,
    )
    peft_config = PeftLoraConfig(
        r=LORA.r,
        lora_alpha=LORA.alpha,
        lora_dropout=LORA.dropout,
        target_modules=LORA.target_modules,
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(
        model=model,
        args=arguments,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="smollm2 or tiny")
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per run")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per method")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        prompts, responses = conditioned_pairs(workdir)
        _, tokenizer = load_policy(ModelConfig(source=args.model))
        response_tokens = [
            len(tokenizer(r, add_special_tokens=False)["input_ids"]) + 1 for r in responses
        ]
        tokens_per_step = 8 * statistics.mean(response_tokens)  # expected, any batch order
        print(
            f"model {args.model}; {len(prompts)} samples; response tokens per sample "
            f"{min(response_tokens)}-{max(response_tokens)} (mean "
            f"{statistics.mean(response_tokens):.0f}); {torch.get_num_threads()} threads"
        )
        ric_times, trl_times = [], []
        for repeat in range(args.repeats):
            ric_times.append(time_ric(args.model, prompts, responses, args.steps, workdir))
            trl_times.append(time_trl(args.model, prompts, responses, args.steps, workdir))
            print(
                f"repeat {repeat + 1}: ric {ric_times[-1]:.1f} s, TRL {trl_times[-1]:.1f} s "
                f"for {args.steps} steps"
            )
    ric_rate = tokens_per_step * args.steps / statistics.median(ric_times)
    trl_rate = tokens_per_step * args.steps / statistics.median(trl_times)
    print(
        f"ric: {ric_rate:.0f} response tokens/s; TRL SFTTrainer: {trl_rate:.0f} response tokens/s"
    )
    print(f"ratio ric/TRL: {ric_rate / trl_rate:.2f}x (median of {args.repeats})")


if __name__ == "__main__":
    main()
