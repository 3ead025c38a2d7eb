"""Batched generation: padding, order, EOS, stop strings, seeds and response cleaning."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from helpers import SILENT, STOP, TAUGHT, greedy, train_to_answer

from ric.config import GenerationConfig
from ric.models.generation import (
    clean_response,
    generate_responses,
    generate_with_stats,
    left_pad,
    truncate_at_eos,
)
from ric.models.tiny import build_tiny

UNTAUGHT = ["Why?", "The quick brown fox jumps over", "### Input: What is a dog? <R1> 0.3"]


@pytest.fixture(scope="module")
def trained() -> tuple[Any, Any]:
    """The tiny model (float32) taught to answer TAUGHT and stop with EOS."""
    torch.manual_seed(0)
    model, tokenizer = build_tiny(seed=0)
    train_to_answer(model, tokenizer, TAUGHT)
    return model, tokenizer


@pytest.fixture(scope="module")
def untrained() -> tuple[Any, Any]:
    return build_tiny(seed=0)


@pytest.mark.slow
def test_trained_model_answers_and_stops_at_eos(trained: tuple[Any, Any]) -> None:
    model, tokenizer = trained
    prompts = [p for p in TAUGHT if p != SILENT]
    result = generate_with_stats(model, tokenizer, prompts, greedy(batch_size=4))
    assert result.texts == [TAUGHT[p] for p in prompts]
    # each row stopped at its own EOS although the batch ran on for longer answers
    expected = [len(tokenizer(TAUGHT[p], add_special_tokens=False)["input_ids"]) for p in prompts]
    assert result.num_new_tokens == expected
    assert max(expected) < 20


@pytest.mark.slow
def test_batched_greedy_equals_one_at_a_time_in_input_order(trained: tuple[Any, Any]) -> None:
    model, tokenizer = trained
    prompts = [*UNTAUGHT, *TAUGHT]  # unequal lengths, not sorted by length
    lengths = [len(tokenizer(p)["input_ids"]) for p in prompts]
    assert lengths != sorted(lengths, reverse=True) and len(set(lengths)) > 3
    batched = generate_with_stats(model, tokenizer, prompts, greedy(batch_size=4))
    single = [generate_with_stats(model, tokenizer, [p], greedy(batch_size=1)) for p in prompts]
    assert batched.texts == [r.texts[0] for r in single]
    assert batched.num_new_tokens == [r.num_new_tokens[0] for r in single]
    answers = dict(zip(prompts, batched.texts, strict=True))
    assert all(answers[p] == TAUGHT[p] for p in TAUGHT if p != SILENT)
    groups = [index % 3 for index in range(len(prompts))]  # batched apart, answered the same
    grouped = generate_with_stats(model, tokenizer, prompts, greedy(batch_size=4), groups=groups)
    assert grouped.texts == batched.texts
    with pytest.raises(ValueError, match="2 group labels for"):
        generate_with_stats(model, tokenizer, prompts, greedy(), groups=[0, 1])


@pytest.mark.slow
def test_generation_sees_exactly_the_prompt_ids_tokenized_alone(
    trained: tuple[Any, Any],
) -> None:
    model, tokenizer = trained
    prompts = UNTAUGHT
    seen: list[dict[str, torch.Tensor]] = []

    def record(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        if not seen:  # the first forward call holds the whole prompt
            seen.append({k: kwargs[k].clone() for k in ("input_ids", "attention_mask")})

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        generate_responses(model, tokenizer, prompts, greedy(batch_size=8, max_new_tokens=2))
    finally:
        handle.remove()
    input_ids, mask = seen[0]["input_ids"], seen[0]["attention_mask"]
    by_length = sorted(prompts, key=lambda p: len(tokenizer(p)["input_ids"]), reverse=True)
    for row, row_mask, prompt in zip(input_ids, mask, by_length, strict=True):
        assert row[row_mask.bool()].tolist() == tokenizer(prompt)["input_ids"]
        assert row_mask.tolist() == sorted(row_mask.tolist())  # padding on the left
    assert tokenizer.padding_side == "right"  # the shared tokenizer is left as it was


def test_left_pad_puts_padding_on_the_left() -> None:
    batch = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


@pytest.mark.slow
def test_stop_string_ends_generation_early_and_cuts_exactly(trained: tuple[Any, Any]) -> None:
    model, tokenizer = trained
    prompt = "### Input: Why is the sky blue? <R1> -1.2 ### Response: "
    full = generate_with_stats(model, tokenizer, [prompt], greedy())
    cut = generate_with_stats(model, tokenizer, [prompt], greedy(stop_strings=[STOP]))
    assert cut.texts == ["Light scatters."]
    assert cut.num_new_tokens[0] < full.num_new_tokens[0]  # stopped, not only cut afterwards


@pytest.mark.slow
def test_min_new_tokens_suppresses_eos_at_first_step(trained: tuple[Any, Any]) -> None:
    model, tokenizer = trained
    free = generate_with_stats(model, tokenizer, [SILENT], greedy(min_new_tokens=0))
    assert free.texts == [""] and free.num_new_tokens == [0]
    forced = generate_with_stats(model, tokenizer, [SILENT], greedy(min_new_tokens=1))
    assert forced.num_new_tokens[0] >= 1


@pytest.mark.slow
def test_max_new_tokens_is_respected(trained: tuple[Any, Any]) -> None:
    model, tokenizer = trained
    prompt = "### Input: Plants need what? <R1> 1.5 ### Response: "
    result = generate_with_stats(model, tokenizer, [prompt], greedy(max_new_tokens=3))
    answer_ids = tokenizer(TAUGHT[prompt], add_special_tokens=False)["input_ids"]
    assert result.num_new_tokens == [3]
    assert result.texts == [tokenizer.decode(answer_ids[:3]).strip()]
    assert result.finished == [False]  # cut by the budget: no answer's end


@pytest.mark.slow
def test_finished_records_eos_and_stop_strings(trained: tuple[Any, Any]) -> None:
    model, tokenizer = trained
    plants, sky = (
        f"### Input: {q} ### Response: "
        for q in ("Plants need what? <R1> 1.5", "Why is the sky blue? <R1> -1.2")
    )
    ended = generate_with_stats(model, tokenizer, [plants, sky], greedy(batch_size=2))
    assert ended.finished == [True, True]  # both reach EOS within 20 tokens
    stopped = generate_with_stats(model, tokenizer, [sky], greedy(stop_strings=[STOP]))
    assert stopped.finished == [True] and stopped.texts == ["Light scatters."]
    budget = len(tokenizer(TAUGHT[plants], add_special_tokens=False)["input_ids"])
    exact = generate_with_stats(model, tokenizer, [plants], greedy(max_new_tokens=budget))
    assert exact.finished == [False]  # the whole answer, but its EOS did not fit the budget


def test_seeded_sampling_is_reproducible(untrained: tuple[Any, Any]) -> None:
    model, tokenizer = untrained
    hot = {"temperature": 2.0, "top_p": 1.0, "max_new_tokens": 8, "batch_size": 2}
    first = generate_responses(model, tokenizer, UNTAUGHT, GenerationConfig(**hot, seed=1))
    again = generate_responses(model, tokenizer, UNTAUGHT, GenerationConfig(**hot, seed=1))
    other = generate_responses(model, tokenizer, UNTAUGHT, GenerationConfig(**hot, seed=2))
    assert first == again
    assert first != other


@pytest.mark.parametrize(("top_k", "at_least", "at_most"), [(0, 100, 400), (10, 2, 10)])
def test_top_k_zero_is_off_not_the_transformers_default(
    untrained: tuple[Any, Any], top_k: int, at_least: int, at_most: int
) -> None:
    # nearly uniform sampling over the 400-token vocabulary: 256 first tokens spread over ~190
    # values unless top-k (transformers' own default is 50) limits them
    model, tokenizer = untrained
    settings = GenerationConfig(
        temperature=1000.0, top_p=1.0, top_k=top_k, max_new_tokens=1, batch_size=256
    )
    firsts = generate_with_stats(model, tokenizer, ["Why?"] * 256, settings)
    assert firsts.num_new_tokens == [1] * 256
    assert at_least <= len(set(firsts.texts)) <= at_most


def test_min_equal_max_new_tokens_generates_exactly_that_many(
    untrained: tuple[Any, Any],
) -> None:
    model, tokenizer = untrained
    settings = GenerationConfig(max_new_tokens=5, min_new_tokens=5, top_k=3, batch_size=2)
    result = generate_with_stats(model, tokenizer, UNTAUGHT, settings)
    assert result.num_new_tokens == [5, 5, 5]


def test_train_mode_is_restored(untrained: tuple[Any, Any]) -> None:
    model, tokenizer = untrained
    model.train()
    generate_responses(model, tokenizer, ["Why?"], greedy(max_new_tokens=2))
    assert model.training
    model.eval()
    generate_responses(model, tokenizer, ["Why?"], greedy(max_new_tokens=2))
    assert not model.training


def test_no_prompts_and_empty_prompts(untrained: tuple[Any, Any]) -> None:
    model, tokenizer = untrained
    assert generate_responses(model, tokenizer, [], greedy()) == []
    with pytest.raises(ValueError, match=r"positions \[1\]"):
        generate_responses(model, tokenizer, ["Why?", ""], greedy())


def test_truncate_at_eos_drops_everything_after_the_first_eos() -> None:
    assert truncate_at_eos([5, 6, 0, 7, 8, 0], eos_ids={0}) == [5, 6]
    assert truncate_at_eos([5, 6, 9, 7], eos_ids={0, 9}) == [5, 6]
    assert truncate_at_eos([5, 6], eos_ids={0}) == [5, 6]
    assert truncate_at_eos([0, 5], eos_ids={0}) == []


@pytest.mark.parametrize(
    ("text", "stops", "expected"),
    [
        ("answer ends in s", [], "answer ends in s"),
        ("answer ends in s", ["</s>"], "answer ends in s"),
        ("foo###", [], "foo###"),
        ("Response: ends in e:", ["### Response:"], "Response: ends in e:"),
        ("a\n### Input: b", [STOP], "a"),
        ("a ### Input: b ### Response: c", ["### Response:", STOP], "a"),
        ("  padded answer \n\n", [], "padded answer"),
        ("### Input: at the start", [STOP], ""),
    ],
)
def test_clean_response(text: str, stops: list[str], expected: str) -> None:
    assert clean_response(text, stops) == expected


def test_clean_response_rejects_an_empty_stop_string() -> None:
    with pytest.raises(ValueError, match="empty string"):
        clean_response("text", ["", STOP])


def test_batches_break_at_each_group():
    from ric.models.generation import batches

    labels = [0, 0, 0, 1, 1, 2]
    assert batches([0, 1, 2, 3, 4, 5], labels, 2) == [[0, 1], [2], [3, 4], [5]]
    assert batches([0, 1, 2, 3, 4, 5], labels, 6) == [[0, 1, 2], [3, 4, 5]]  # half full: cut
    assert batches([5, 4, 3], labels, 8) == [[5, 4, 3]]  # groups smaller than half share one
