"""`ric bootstrap`: build an offline (prompt, response) dataset by sampling a policy.

RiC's offline stage needs responses whose rewards spread widely: the conditioning can only teach
reward levels the data shows. Each prompt gets ``samples`` sampled responses; optional system
``instructions`` (e.g. "Answer in one short sentence." / "Answer in detail.") are cycled over a
prompt's samples to widen the spread. The instruction only steers generation: the stored prompt
is the user's text alone, which is what the model is later trained and asked with.

Every row records whether its response ``finished`` (EOS or a stop string) or was cut by
``generation.max_new_tokens``: a cut response is no answer's end, and its length-type rewards
measure the budget; ``ric label`` leaves such rows out. With ``sentence_cuts``, each response
also gives its shorter versions, cut after each of its complete sentences (``sentences`` counts
the sentences a row keeps; 0 marks the response as generated): the same answer at every length
it can end at, so the data shows what each length looks like for the same content. A response
the budget cut still gives its complete sentences, so every answer in the data fits the budget.

Output directory: ``pairs.jsonl`` (prompt, response, finished, sentences, sample, instruction),
``config.yaml``.
Work is saved per shard of prompts in ``.bootstrap-parts/bootstrap-<key>/`` (``ShardCache``), the
key hashing the prompts, policy and sampling settings; a killed run, rerun with the same command,
keeps finished shards.
Shard k samples with seed ``generation.seed + k``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from ric import parallel
from ric.config import RicConfig, dump_config, require_setting
from ric.data.io import CONFIG_FILE, write_text_atomic
from ric.data.shards import ShardCache
from ric.data.sources import read_prompts

PAIRS_FILE = "pairs.jsonl"
PARTS_DIR = ".bootstrap-parts"
# A sentence ends at . ! or ? (optionally closed by a quote or bracket) before whitespace and a
# capital, digit, quote or bracket; not after a one-letter word or a common abbreviation.
SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?(?=\s+[A-Z0-9\"'(\[])")
ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "vs", "etc", "e.g", "i.e"})


def sentence_prefixes(text: str) -> list[str]:
    """``text`` cut after each of its sentences but the last: the shorter answers it contains,
    shortest first (empty for a single sentence)."""
    prefixes = []
    for match in SENTENCE_END.finditer(text):
        prefix = text[: match.end()]
        words = prefix.rstrip("\"')]").rstrip(".!?").lower().split()
        if words and len(words[-1].strip(".")) > 1 and words[-1] not in ABBREVIATIONS:
            prefixes.append(prefix.strip())
    return prefixes


def expand_rows(rows: list[dict[str, Any]], sentence_cuts: bool) -> list[dict[str, Any]]:
    """Each generated row (``sentences`` 0), followed, with ``sentence_cuts``, by its response's
    sentence prefixes (``sentences`` = how many sentences each keeps). Every prefix ends at a
    sentence end, so it is a finished answer, also when the budget cut the response itself."""
    expanded = []
    for row in rows:
        expanded.append({**row, "sentences": 0})
        if sentence_cuts:
            for count, prefix in enumerate(sentence_prefixes(row["response"]), start=1):
                expanded.append({**row, "response": prefix, "finished": True, "sentences": count})
    return expanded


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


def _run_settings(config: RicConfig, prompts: list[str]) -> dict[str, Any]:
    """Shards are reused only by a run with the same prompts, policy and sampling settings."""
    return {
        "prompts": prompts,
        "model": asdict(config.model),
        "generation": asdict(config.generation),
        "bootstrap": {k: v for k, v in asdict(config.bootstrap).items() if k != "output"},
    }


def run_bootstrap(config: RicConfig, show_progress: bool = True) -> Path:
    """Sample ``bootstrap.samples`` responses per prompt; return the output directory."""
    from ric.models import load_policy
    from ric.models.generation import generate_with_stats

    settings = config.bootstrap
    require_setting("bootstrap.output", settings.output, "output directory")
    prompts = read_prompts(settings.prompts, settings.prompt_column, settings.limit)
    output = Path(settings.output)
    model, tokenizer = load_policy(config.model)
    instructions = settings.instructions or [""]
    shards = range(0, len(prompts), settings.shard_size)
    cache = ShardCache.under(output / PARTS_DIR, "bootstrap", _run_settings(config, prompts))
    progress = tqdm(total=len(prompts), desc="bootstrap", unit="prompt", disable=not show_progress)
    lines = []
    for index, start in enumerate(shards):
        chunk = prompts[start : start + settings.shard_size]

        def sample(chunk: list[str] = chunk, index: int = index) -> pd.DataFrame:
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
            result = generate_with_stats(model, tokenizer, texts, generation)
            for row, response, finished in zip(rows, result.texts, result.finished, strict=True):
                row |= {"response": response, "finished": finished}
            return pd.DataFrame(expand_rows(rows, settings.sentence_cuts))

        shard, _ = cache.compute(index, sample)
        lines += [json.dumps(row, ensure_ascii=False) + "\n" for row in shard.to_dict("records")]
        progress.update(len(chunk))
    progress.close()

    def write_pairs() -> None:
        write_text_atomic(output / PAIRS_FILE, "".join(lines))
        write_text_atomic(output / CONFIG_FILE, dump_config(config))

    parallel.on_main(write_pairs)
    return output
