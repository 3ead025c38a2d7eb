"""`ric prepare`: upstream datasets as the (prompt, response) pairs `ric label` reads.

One preparer per dataset (``PREPARERS``), each a pure function from the upstream rows (dicts, as
the Hub's files hold them) to a table and the count of rows it left out, and why:

* ``hh-rlhf`` (Anthropic/hh-rlhf; the paper's Helpful Assistant). Both the chosen and the
  rejected dialogue of every comparison become samples (``chosen`` says which, for the SFT
  baseline's ``baseline.sft_column``; ``pair`` numbers the comparison). The prompt is the
  dialogue before its last "\\n\\nAssistant:", the response what follows it, stripped. Departure
  from the authors' code, on purpose: they kept the marker in the prompt and later removed it with
  ``rstrip("\\n\\nAssistant:")``, a character-set strip that also ate the last letters of human
  turns ending in one of those characters. Here the marker belongs to the task's template
  (``configs/paper/hh.yaml``: ``{prompt} {rewards} \\n\\nAssistant:``, the paper's conditioned
  prompt exactly) and to the reward models' presets (``harmless``/``helpful`` read
  "{prompt} \\n\\nAssistant:", as the paper fed them). A dialogue without an assistant turn, or
  whose last answer is empty, is left out.
* ``summarize`` (openai/summarize_from_feedback, ``comparisons``, read from the Hub's Parquet
  files: the dataset's loading script no longer runs on current ``datasets``). The paper's
  filter: posts of more than 100 and fewer than 1,200 characters. The prompt is the post (line
  breaks as spaces), the response each of the two summaries (``chosen`` from the label's
  ``choice``). The paper's instruction, "Generate a one-sentence summary of this post.", is the
  task's template (``configs/paper/summary.yaml``), again the paper's prompt exactly.
* ``helpsteer2`` (nvidia/HelpSteer2): prompt, response and its five 0-4 ratings (helpfulness,
  correctness, coherence, complexity, verbosity), kept as columns for the ``column`` reward.
* ``ultrafeedback`` (openbmb/UltraFeedback): each instruction's completions, one row each, with
  the four aspect ratings (helpfulness, honesty, instruction_following, truthfulness, 1-5), the
  ``overall_score`` and the ``model``; a completion with an "N/A" rating is left out.

The paper's length filter, 8 to 512 tokens of prompt + response with the policy's tokenizer
(Llama-2), applies with ``prepare.tokenizer`` (``prepare.min_tokens``/``max_tokens``). The paper
also dropped pairs over 512 tokens of each reward model's tokenizer; here the reward models
truncate instead (``hf`` option ``max_length``).

Output: ``pairs.parquet``, ``prepare.json`` (rows read, written and left out per reason) and
``config.yaml``, written atomically, so a killed run leaves no partial table.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ric.config import RicConfig, dump_config, require_setting
from ric.data.io import CONFIG_FILE, write_atomic, write_text_atomic

PAIRS_FILE = "pairs.parquet"
REPORT_FILE = "prepare.json"
ASSISTANT = "\n\nAssistant:"
SUMMARY_POST_CHARACTERS = (100, 1200)  # exclusive bounds, the paper's filter
HELPSTEER2_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
ULTRAFEEDBACK_ASPECTS = ("helpfulness", "honesty", "instruction_following", "truthfulness")


@dataclass(frozen=True)
class Prepared:
    pairs: pd.DataFrame  # prompt, response and the dataset's own columns
    left_out: Counter[str]  # reason -> upstream samples not written


def _require(row: Mapping[str, Any], keys: Iterable[str], dataset: str, index: int) -> None:
    missing = [key for key in keys if key not in row]
    if missing:
        raise ValueError(
            f"row {index} is not in the {dataset} format: it has no {missing[0]!r} "
            f"(keys there: {', '.join(map(str, row))})"
        )


def split_dialogue(text: str) -> tuple[str, str] | None:
    """(the dialogue before its last assistant marker, the answer after it, stripped), or None
    without an assistant turn."""
    head, marker, answer = text.rpartition(ASSISTANT)
    if not marker:
        return None
    return head, answer.strip()


def prepare_hh_rlhf(rows: Iterable[Mapping[str, Any]]) -> Prepared:
    """Anthropic/hh-rlhf: chosen and rejected dialogues, split at their last assistant turn."""
    records, left_out = [], Counter[str]()
    for index, row in enumerate(rows):
        _require(row, ("chosen", "rejected"), "hh-rlhf", index)
        for column, chosen in (("chosen", True), ("rejected", False)):
            parts = split_dialogue(row[column])
            if parts is None:
                left_out["no assistant turn"] += 1
            elif not parts[1]:
                left_out["empty response"] += 1
            else:
                records.append(
                    {"prompt": parts[0], "response": parts[1], "chosen": chosen, "pair": index}
                )
    return Prepared(_frame(records, ["prompt", "response", "chosen", "pair"]), left_out)


def prepare_summarize(rows: Iterable[Mapping[str, Any]]) -> Prepared:
    """openai/summarize_from_feedback comparisons: both summaries of each post of 101-1,199
    characters."""
    records, left_out = [], Counter[str]()
    low, high = SUMMARY_POST_CHARACTERS
    for index, row in enumerate(rows):
        _require(row, ("info", "summaries", "choice"), "summarize", index)
        post = (row["info"] or {}).get("post")
        if post is None:
            left_out["no post"] += 2
            continue
        if not low < len(post) < high:
            left_out[f"post not within {low}-{high} characters"] += 2
            continue
        for choice, summary in enumerate(row["summaries"][:2]):
            response = summary["text"].replace("\n", " ").strip()
            if not response:
                left_out["empty response"] += 1
                continue
            records.append(
                {
                    "prompt": post.replace("\n", " "),
                    "response": response,
                    "chosen": choice == row["choice"],
                    "pair": index,
                }
            )
    return Prepared(_frame(records, ["prompt", "response", "chosen", "pair"]), left_out)


def prepare_helpsteer2(rows: Iterable[Mapping[str, Any]]) -> Prepared:
    """nvidia/HelpSteer2: prompt, response and the five 0-4 attribute ratings."""
    columns = ["prompt", "response", *HELPSTEER2_ATTRIBUTES]
    records, left_out = [], Counter[str]()
    for index, row in enumerate(rows):
        _require(row, columns, "helpsteer2", index)
        if not str(row["response"]).strip():
            left_out["empty response"] += 1
            continue
        records.append({key: row[key] for key in columns})
    return Prepared(_frame(records, columns), left_out)


def prepare_ultrafeedback(rows: Iterable[Mapping[str, Any]]) -> Prepared:
    """openbmb/UltraFeedback: one row per completion with its four aspect ratings."""
    columns = ["prompt", "response", *ULTRAFEEDBACK_ASPECTS, "overall_score", "model"]
    records, left_out = [], Counter[str]()
    for index, row in enumerate(rows):
        _require(row, ("instruction", "completions"), "ultrafeedback", index)
        for completion in row["completions"]:
            ratings = {
                aspect: _rating(completion["annotations"][aspect]["Rating"])
                for aspect in ULTRAFEEDBACK_ASPECTS
            }
            if None in ratings.values():
                left_out["an N/A rating"] += 1
            elif not completion["response"].strip():
                left_out["empty response"] += 1
            else:
                records.append(
                    {
                        "prompt": row["instruction"],
                        "response": completion["response"],
                        **ratings,
                        "overall_score": float(completion["overall_score"]),
                        "model": completion["model"],
                    }
                )
    return Prepared(_frame(records, columns), left_out)


def _rating(value: Any) -> float | None:
    """An UltraFeedback rating ("1".."5", sometimes "N/A") as a number, or None."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _frame(records: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(records, columns=columns)


@dataclass(frozen=True)
class Preparer:
    prepare: Callable[[Iterable[Mapping[str, Any]]], Prepared]
    hub_name: str  # where the paper (or the field) gets it
    hub_config: str | None = None  # the Hub dataset's configuration
    hub_revision: str | None = None  # "refs/convert/parquet": the Hub's Parquet copy


PREPARERS = {
    "hh-rlhf": Preparer(prepare_hh_rlhf, "Anthropic/hh-rlhf"),
    "summarize": Preparer(
        prepare_summarize,
        "openai/summarize_from_feedback",
        hub_config="comparisons",
        hub_revision="refs/convert/parquet",
    ),
    "helpsteer2": Preparer(prepare_helpsteer2, "nvidia/HelpSteer2"),
    "ultrafeedback": Preparer(prepare_ultrafeedback, "openbmb/UltraFeedback"),
}


READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    ".jsonl": lambda file: pd.read_json(file, lines=True, dtype=False),
    ".json": lambda file: pd.read_json(file, dtype=False),
    ".parquet": pd.read_parquet,
}


def read_upstream(source: str, preparer: Preparer, split: str, limit: int | None) -> list[dict]:
    """The upstream rows: a local JSONL, JSON or Parquet file (or a folder of them), else a Hub
    dataset name loaded with ``datasets``."""
    path = Path(source).expanduser()
    files = sorted(path.glob("*")) if path.is_dir() else [path]
    if path.exists():
        frames = [READERS[file.suffix](file) for file in files if file.suffix in READERS]
        if not frames:
            raise ValueError(
                f"no .jsonl, .json or .parquet files in {source!r}: give the upstream files"
            )
        rows: list[dict] = pd.concat(frames, ignore_index=True).to_dict("records")
        return rows[:limit] if limit is not None else rows
    from datasets import load_dataset

    part = f"{split}[:{limit}]" if limit is not None else split
    return list(
        load_dataset(source, preparer.hub_config, split=part, revision=preparer.hub_revision)
    )


def length_filter(
    pairs: pd.DataFrame, tokenizer: Any, min_tokens: int, max_tokens: int
) -> tuple[pd.DataFrame, int]:
    """The pairs whose prompt + response has ``min_tokens``..``max_tokens`` tokens (the paper's
    8..512 with Llama-2's tokenizer), and how many were left out."""
    texts = [f"{p} {r}" for p, r in zip(pairs["prompt"], pairs["response"], strict=True)]
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]] if texts else []
    keep = [min_tokens <= n <= max_tokens for n in lengths]
    return pairs[keep].reset_index(drop=True), len(keep) - sum(keep)


@dataclass(frozen=True)
class PrepareResult:
    """What `ric prepare` wrote: the pairs, and the report recorded beside them."""

    pairs_path: Path  # the (prompt, response) pairs that `ric label` reads
    # prepare.json's content: dataset, source, upstream_rows, pairs, left_out (reason -> rows
    # left out for it) and the pairs' columns
    report: dict[str, Any]


def run_prepare(config: RicConfig) -> PrepareResult:
    """Prepare ``config.prepare.data`` with the ``prepare.dataset`` preparer into
    ``prepare.output``; return the pairs' path and the report written beside them."""
    settings = config.prepare
    if settings.dataset not in PREPARERS:
        raise ValueError(
            f"unknown dataset {settings.dataset!r}; valid: {', '.join(sorted(PREPARERS))}"
        )
    require_setting("prepare.output", settings.output, "output directory")
    preparer = PREPARERS[settings.dataset]
    source = settings.data or preparer.hub_name
    rows = read_upstream(source, preparer, settings.split, settings.limit)
    prepared = preparer.prepare(rows)
    pairs, left_out = prepared.pairs, Counter(prepared.left_out)
    if settings.tokenizer:
        from ric.models.loading import load_tokenizer

        try:
            tokenizer = load_tokenizer(settings.tokenizer)
        except OSError as error:
            raise ValueError(
                f"prepare.tokenizer {settings.tokenizer!r} could not be loaded ({error}); set it "
                "to a local directory, or to '' to skip the length filter"
            ) from None
        pairs, too_long = length_filter(pairs, tokenizer, settings.min_tokens, settings.max_tokens)
        left_out[f"not {settings.min_tokens}-{settings.max_tokens} tokens"] += too_long
    if pairs.empty:
        raise ValueError(
            f"no pair left from {len(rows)} upstream rows of {source!r} "
            f"(left out: {dict(left_out) or 'none'}); nothing was written"
        )
    output = Path(settings.output)
    write_atomic(output / PAIRS_FILE, lambda tmp: pairs.to_parquet(tmp, index=False))
    report = {
        "dataset": settings.dataset,
        "source": source,
        "upstream_rows": len(rows),
        "pairs": len(pairs),
        "left_out": dict(left_out),
        "columns": list(pairs.columns),
    }
    write_text_atomic(output / REPORT_FILE, json.dumps(report, indent=1))
    write_text_atomic(output / CONFIG_FILE, dump_config(config))
    return PrepareResult(output / PAIRS_FILE, report)
