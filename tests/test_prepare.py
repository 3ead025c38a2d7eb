"""`ric prepare` on small files in each upstream format (awkward rows included), the `column`
reward, the paper's reward-model presets on tiny in-code classifiers, and the paper's configs."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from ric.cli import main
from ric.config import load_config
from ric.core import build_prompt
from ric.data.prepare import PREPARERS, length_filter, split_dialogue
from ric.models.tiny import build_tiny
from ric.rewards.hf import PRESETS, HFRewardModel, preset_options

FIXTURES = Path(__file__).parent / "data" / "prepare"
CONFIGS = Path(__file__).parent.parent / "configs"


def prepare(name, source=None, *extra, tmp):
    out = tmp / name
    data = str(source or next(FIXTURES.glob(f"{name.replace('-', '_')}.*")))
    assert main(["prepare", name, "--data", data, "--output", str(out), *extra]) == 0
    return pd.read_parquet(out / "pairs.parquet"), json.loads((out / "prepare.json").read_text())


def test_hh_rlhf_splits_at_the_last_assistant_turn(tmp_path):
    pairs, report = prepare("hh-rlhf", tmp=tmp_path)
    assert pairs.to_dict("records") == [
        {
            "prompt": "\n\nHuman: What is a fox?",
            "response": "A small wild canine.",
            "chosen": True,
            "pair": 0,
        },
        {
            "prompt": "\n\nHuman: What is a fox?",
            "response": "I don't know.",
            "chosen": False,
            "pair": 0,
        },
        {
            "prompt": "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me a joke "
            "about cats",
            "response": "Why did the cat sit on the computer? To keep an eye on the mouse.",
            "chosen": True,
            "pair": 1,
        },
    ]
    # the rejected answer of pair 1 is empty; pair 2 has no assistant turn at all
    assert report["left_out"] == {"empty response": 1, "no assistant turn": 2}
    assert report["upstream_rows"] == 3 and report["pairs"] == 3


def test_hh_conditioned_prompt_is_the_papers(tmp_path):
    """The task's template puts the rewards before the assistant marker, as the paper did."""
    config = load_config(CONFIGS / "paper" / "hh-harmless-helpful.yaml")
    prompt, _ = split_dialogue("\n\nHuman: Why is the sky blue?\n\nAssistant: Rayleigh.")
    text = build_prompt(prompt, [0.3, -1.2], config.template.prompt_template())
    assert text == "\n\nHuman: Why is the sky blue? <rm1_score> 0.3 <rm2_score> -1.2 \n\nAssistant:"


def test_summarize_keeps_posts_of_101_to_1199_characters(tmp_path):
    pairs, report = prepare("summarize", tmp=tmp_path)
    post = (
        "I moved to a new city last month and I still do not know anyone here. How do people "
        "make friends as adults? Any advice is welcome."
    )
    assert pairs.to_dict("records") == [
        {"prompt": post, "response": "New in town, no friends.", "chosen": False, "pair": 0},
        {
            "prompt": post,
            "response": "How to make friends as an adult in a new city?",
            "chosen": True,
            "pair": 0,
        },
        {"prompt": "z" * 101, "response": "zzz", "chosen": True, "pair": 3},
    ]
    assert report["left_out"] == {
        "post not within 100-1200 characters": 4,  # exactly 100 and exactly 1,200: both out
        "empty response": 1,
        "no post": 2,
    }
    # the Hub's Parquet files give the same pairs
    upstream = pd.read_json(FIXTURES / "summarize.jsonl", lines=True, dtype=False)
    upstream.drop(columns="extra").to_parquet(tmp_path / "comparisons.parquet")  # {} has no type
    from_parquet, _ = prepare("summarize", tmp_path / "comparisons.parquet", tmp=tmp_path / "p")
    pd.testing.assert_frame_equal(from_parquet, pairs)


def test_helpsteer2_and_ultrafeedback_keep_their_ratings(tmp_path):
    steer, report = prepare("helpsteer2", tmp=tmp_path)
    assert steer["response"].tolist() == ["4.", "It is four, because two and two make four."]
    assert steer[["helpfulness", "verbosity"]].to_numpy().tolist() == [[4, 0], [3, 2]]
    assert report["left_out"] == {"empty response": 1}

    feedback, report = prepare("ultrafeedback", tmp=tmp_path)
    assert feedback.to_dict("records") == [
        {
            "prompt": "Name a prime number.",
            "response": "7",
            "helpfulness": 4.0,
            "honesty": 5.0,
            "instruction_following": 5.0,
            "truthfulness": 5.0,
            "overall_score": 8.5,
            "model": "m1",
        },
        {
            "prompt": "Name a prime number.",
            "response": "Nine is prime.",
            "helpfulness": 1.0,
            "honesty": 2.0,
            "instruction_following": 3.0,
            "truthfulness": 1.0,
            "overall_score": 2.0,
            "model": "m2",
        },
    ]
    assert report["left_out"] == {"an N/A rating": 1}


def test_the_length_filter_counts_prompt_and_response_tokens():
    _, tokenizer = build_tiny()
    pairs = pd.DataFrame({"prompt": ["a", "hello there"], "response": ["b", "general kenobi"]})
    lengths = [len(tokenizer(f"{p} {r}")["input_ids"]) for p, r in pairs.to_numpy()]
    kept, dropped = length_filter(pairs, tokenizer, lengths[0] + 1, 10_000)
    assert kept["prompt"].tolist() == ["hello there"] and dropped == 1
    assert length_filter(pairs, tokenizer, 0, max(lengths))[1] == 0


def test_prepare_with_a_tokenizer_filters_and_says_so(tmp_path):
    _, report = prepare(
        "helpsteer2", None, "--tokenizer", "tiny", "--set=prepare.min_tokens=12", tmp=tmp_path
    )
    assert report["pairs"] == 1 and report["left_out"]["not 12-512 tokens"] == 1


def test_prepare_errors(tmp_path, capsys):
    assert main(["prepare", "hh-rlhff", "--data", str(FIXTURES), "--output", str(tmp_path)]) == 2
    assert (
        "unknown dataset 'hh-rlhff'; valid: helpsteer2, hh-rlhf, summarize"
        in capsys.readouterr().err
    )
    wrong = ["prepare", "hh-rlhf", "--data", str(FIXTURES / "helpsteer2.jsonl")]
    assert main([*wrong, "--output", str(tmp_path / "o")]) == 2
    assert "row 0 is not in the hh-rlhf format: it has no 'chosen'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_column_rewards_label_without_a_model_and_mix_with_scorers(tmp_path):
    steer, _ = prepare("helpsteer2", tmp=tmp_path)
    pairs = tmp_path / "helpsteer2" / "pairs.parquet"
    rewards = (
        "rewards=[{type: column, name: helpful, options: {column: helpfulness}}, {type: verbosity}]"
    )
    out = tmp_path / "label"
    assert main(["label", "--data", str(pairs), "--output", str(out), "--set", rewards]) == 0
    scored = pd.read_parquet(out / "scored.parquet")
    np.testing.assert_array_equal(scored["reward_helpful"], steer["helpfulness"].astype(float))
    stats = json.loads((out / "stats.json").read_text())
    assert stats["mean"][0] == pytest.approx(3.5)
    # a column has no value for generated text: the scorer says so instead of guessing
    from ric.rewards import create_reward

    with pytest.raises(ValueError, match="is a column of the labeled data"):
        create_reward("column", {"column": "helpfulness"}).score(["q"], ["a"])
    bad = "rewards=[{type: column, options: {column: helpfulnes}}]"
    assert main(["label", "--data", str(pairs), "--output", str(tmp_path / "x"), "--set", bad]) == 2


@pytest.fixture(scope="module")
def classifier():
    """A tiny GPT-2 classifier (2 labels) on the tiny model's tokenizer."""
    _, tokenizer = build_tiny()
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2, n_positions=256, num_labels=2
    )
    return GPT2ForSequenceClassification(config).eval(), tokenizer


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_preset_feeds_its_model_what_the_papers_code_fed_it(preset, classifier):
    model, tokenizer = classifier
    options = preset_options(preset)
    assert options["model"] == PRESETS[preset]["model"]
    del options["model"]
    scorer = HFRewardModel.from_model(model, tokenizer, **options)
    prompt, response = "the post or dialogue", "the answer"
    expected = {
        "harmless": (f"{prompt} \n\nAssistant:", response),
        "helpful": (f"{prompt} \n\nAssistant:", response),
        "humor": (response,),
        "summary": (f"{response} <|endoftext|> {prompt}",),
        "deberta": (
            f"### Instruction: Generate a one-sentence summary of this post. ### Input: {prompt} "
            "### Response: ",
            response,
        ),
        "faithful": (response, prompt),
    }[preset]
    encoded = scorer._tokenize([prompt], [response])
    assert encoded["input_ids"][0] == tokenizer(*expected, truncation=True)["input_ids"]
    logit = {"humor": 1, "faithful": 1}.get(preset, 0)
    with torch.no_grad():
        direct = model(torch.tensor([encoded["input_ids"][0]])).logits[0, logit].item()
    assert scorer.score([prompt], [response])[0] == pytest.approx(direct, abs=1e-5)


def test_an_explicit_option_overrides_the_preset():
    assert preset_options("humor", logit=0)["logit"] == 0
    assert preset_options("harmless", model="my/copy")["model"] == "my/copy"


@pytest.mark.parametrize("config", sorted((CONFIGS / "paper").glob("*.yaml")), ids=lambda p: p.name)
def test_the_papers_configs_load_with_the_papers_settings(config):
    loaded = load_config(config)
    if config.name in ("hh.yaml", "summary.yaml"):  # the bases the experiments build on
        return
    assert loaded.model.source == "meta-llama/Llama-2-7b-hf" and loaded.model.load_in_8bit
    assert (loaded.lora.r, loaded.lora.alpha, loaded.lora.dropout) == (64, 128, 0.05)
    assert loaded.train.max_steps == 20_000 and loaded.train.learning_rate == 1.41e-4
    assert (loaded.online.samples, loaded.online.max_steps) == (20_000, 4_000)
    assert loaded.online.iterations == 2 and loaded.online.learning_rate == 1e-5
    assert loaded.mapping.method == "p_inf"
    assert loaded.prepare.dataset in PREPARERS
    assert all(
        reward.type == "hf" and reward.options["preset"] in PRESETS for reward in loaded.rewards
    )
