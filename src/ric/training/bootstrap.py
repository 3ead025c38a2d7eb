"""`ric bootstrap`: build an offline (prompt, response) dataset by sampling a policy.

RiC's offline stage needs responses whose rewards spread widely: the conditioning can only teach
reward levels the data shows. Each prompt gets ``samples`` sampled responses; optional system
``instructions`` (e.g. "Answer in one short sentence." / "Answer in detail.") are cycled over a
prompt's samples to widen the spread. The instruction only steers generation: the stored prompt
is the user's text alone, which is what the model is later trained and asked with.

Output directory: ``pairs.jsonl`` (prompt, response, sample, instruction), ``config.yaml``.
Work is saved per shard of prompts in ``.bootstrap-parts/<key>/``, the key hashing the prompts,
policy and sampling settings; a killed run, rerun with the same command, keeps finished shards.
Shard k samples with seed ``generation.seed + k``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ric.config import RicConfig, dump_config
from ric.data.io import write_text_atomic
from ric.data.label import CONFIG_FILE
from ric.data.sources import read_prompts

PAIRS_FILE = "pairs.jsonl"
PARTS_DIR = ".bootstrap-parts"


def render_prompt(tokenizer: Any, prompt: str, instruction: str, chat_template: bool) -> str:
    """The text the policy continues: its chat template when it has one (and it is wanted),
    else the instruction and prompt on their own lines."""
    if chat_template and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": instruction}] if instruction else []
        messages.append({"role": "user", "content": prompt})
        return str(
            tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        )
    return (f"{instruction}\n\n" if instruction else "") + f"{prompt}\n"


def _run_key(config: RicConfig, prompts: list[str]) -> str:
    """Shards are reused only by a run with the same prompts, policy and sampling settings."""
    settings = {
        "prompts": prompts,
        "model": asdict(config.model),
        "generation": asdict(config.generation),
        "bootstrap": {k: v for k, v in asdict(config.bootstrap).items() if k != "output"},
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def run_bootstrap(config: RicConfig, show_progress: bool = True) -> Path:
    """Sample ``bootstrap.samples`` responses per prompt; return the output directory."""
    from ric.models import load_policy
    from ric.training.generation import generate_responses

    settings = config.bootstrap
    if not settings.output:
        raise ValueError("no output directory: set bootstrap.output (or pass --output)")
    prompts = read_prompts(settings.prompts, settings.prompt_column, settings.limit)
    output = Path(settings.output)
    model, tokenizer = load_policy(config.model)
    instructions = settings.instructions or [""]
    shards = range(0, len(prompts), settings.shard_size)
    parts_dir = output / PARTS_DIR / _run_key(config, prompts)
    progress = tqdm(total=len(prompts), desc="bootstrap", unit="prompt", disable=not show_progress)
    for index, start in enumerate(shards):
        part = parts_dir / f"part-{index:05d}.jsonl"
        chunk = prompts[start : start + settings.shard_size]
        if not part.exists():
            rows = [
                {"prompt": prompt, "sample": k, "instruction": instructions[k % len(instructions)]}
                for prompt in chunk
                for k in range(settings.samples)
            ]
            texts = [
                render_prompt(tokenizer, row["prompt"], row["instruction"], settings.chat_template)
                for row in rows
            ]
            generation = replace(config.generation, seed=config.generation.seed + index)
            for row, response in zip(
                rows, generate_responses(model, tokenizer, texts, generation), strict=True
            ):
                row["response"] = response
            write_text_atomic(
                part, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            )
        progress.update(len(chunk))
    progress.close()
    parts = [parts_dir / f"part-{index:05d}.jsonl" for index in range(len(shards))]
    write_text_atomic(output / PAIRS_FILE, "".join(p.read_text(encoding="utf-8") for p in parts))
    write_text_atomic(output / CONFIG_FILE, dump_config(config))
    return output
