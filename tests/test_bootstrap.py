"""`ric bootstrap` on the tiny model: K samples per prompt, instructions cycled, resumable."""

import json

import pytest
from helpers import EXAMPLES, overrides

from ric.cli import main
from ric.models.tiny import build_tiny
from ric.training import bootstrap

FLAGS = [
    *("--model", "tiny", "--no-progress", "--samples", "3"),
    *overrides(
        "bootstrap.limit=5",
        "bootstrap.shard_size=2",
        "generation.max_new_tokens=6",
        "bootstrap.instructions=[Be brief., Be detailed.]",
    ),
]


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_bootstrap_samples_each_prompt_k_times(tmp_path, capsys):
    out = tmp_path / "boot"
    assert main(["bootstrap", "--prompts", str(EXAMPLES), "--output", str(out), *FLAGS]) == 0
    rows = _rows(out / "pairs.jsonl")
    assert len(rows) == 5 * 3
    prompts = [json.loads(line)["prompt"] for line in EXAMPLES.read_text().splitlines()][:5]
    assert [r["prompt"] for r in rows] == [p for p in prompts for _ in range(3)]
    assert [r["sample"] for r in rows[:3]] == [0, 1, 2]
    assert [r["instruction"] for r in rows[:3]] == ["Be brief.", "Be detailed.", "Be brief."]
    assert all(isinstance(r["response"], str) for r in rows)
    # 6 new tokens from an untrained model: every response is cut by the budget, and says so
    assert [r["finished"] for r in rows] == [False] * 15
    assert [r["sentences"] for r in rows] == [0] * 15
    assert "pairs.jsonl" in capsys.readouterr().out
    assert (out / "config.yaml").exists()


def test_bootstrap_reuses_finished_shards(tmp_path, monkeypatch):
    out = tmp_path / "boot"
    args = ["bootstrap", "--prompts", str(EXAMPLES), "--output", str(out), *FLAGS]
    assert main(args) == 0
    first = (out / "pairs.jsonl").read_text()
    parts = sorted((out / ".bootstrap-parts").glob("*/shard-*.parquet"))
    assert len(parts) == 3  # 5 prompts in shards of 2
    parts[1].unlink()  # as if the run had been killed while generating shard 1

    from ric.models import generation

    calls = []
    original = generation.generate_with_stats

    def counting(model, tokenizer, prompts, settings, show_progress=False):
        calls.append(len(prompts))
        return original(model, tokenizer, prompts, settings, show_progress)

    monkeypatch.setattr(generation, "generate_with_stats", counting)
    assert main(args) == 0
    assert calls == [2 * 3]  # only the missing shard was generated again
    assert (out / "pairs.jsonl").read_text() == first  # same seed per shard: same texts


def test_render_prompt_uses_chat_template_when_present():
    _, tokenizer = build_tiny()
    assert bootstrap.render_prompt(tokenizer, "Why?", "Be brief.", True) == "Be brief.\n\nWhy?\n"
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    text = bootstrap.render_prompt(tokenizer, "Why?", "Be brief.", True)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhy?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert bootstrap.render_prompt(tokenizer, "Why?", "", False) == "Why?\n"


def test_bootstrap_needs_output(capsys):
    assert main(["bootstrap", "--prompts", str(EXAMPLES), "--model", "tiny"]) == 2
    assert "bootstrap.output" in capsys.readouterr().err


@pytest.mark.parametrize("setting", ["bootstrap.samples=0", "bootstrap.shard_size=0"])
def test_bad_counts_rejected(setting, capsys):
    assert main(["bootstrap", "--set", setting]) == 2
    assert setting.split("=")[0] in capsys.readouterr().err


def test_sentence_prefixes_cut_at_sentence_ends_only():
    text = 'Money is a medium. It is used e.g. in trade. Dr. Smith said "Hi." Then it ends!'
    assert bootstrap.sentence_prefixes(text) == [
        "Money is a medium.",
        "Money is a medium. It is used e.g. in trade.",
        'Money is a medium. It is used e.g. in trade. Dr. Smith said "Hi."',
    ]
    assert bootstrap.sentence_prefixes("One sentence only.") == []
    assert bootstrap.sentence_prefixes("The U.S. is big. Yes, very.") == ["The U.S. is big."]
    assert bootstrap.sentence_prefixes("! A start. Then more.") == ["! A start."]


def test_expand_rows_adds_the_complete_sentences_of_every_response():
    rows = [
        {"prompt": "Why?", "response": "Because. It is so.", "finished": True},
        {"prompt": "How?", "response": "Like this. Then that. And then", "finished": False},
    ]
    expanded = bootstrap.expand_rows(rows, sentence_cuts=True)
    assert [(r["response"], r["sentences"], r["finished"]) for r in expanded] == [
        ("Because. It is so.", 0, True),
        ("Because.", 1, True),
        ("Like this. Then that. And then", 0, False),  # cut by the budget: left out by label
        ("Like this.", 1, True),
        ("Like this. Then that.", 2, True),
    ]
    assert bootstrap.expand_rows(rows, sentence_cuts=False) == [
        {**row, "sentences": 0} for row in rows
    ]
