"""`ric serve`'s engine (``ric.serve.engines``) on transformers' continuous batching, driven
directly on the tiny trained run: its answers are `ric generate`'s, requests with different
settings share its steps, stop strings end a sequence, a cancelled request leaves at once, a
seeded request reproduces."""

import asyncio
from dataclasses import replace

import pytest

from ric.config import GenerationConfig, ServeConfig
from ric.models.generation import clean_response, generate_with_stats
from ric.runs import load_trained
from ric.serve.engines import GREEDY_TOP_P, Row, RowText, TransformersEngine, request_sampling

PROMPTS = ["Hi", "Tell me all about the quick brown fox.", "Name a color."]
GREEDY = GenerationConfig(do_sample=False, max_new_tokens=10, min_new_tokens=0)


@pytest.fixture(scope="module")
def policy(tiny_offline):
    return load_trained(tiny_offline / "train", merged=True)


@pytest.fixture
def engine(policy):
    engine = TransformersEngine(
        policy.model, policy.tokenizer, ServeConfig(max_batch_size=8), GenerationConfig()
    )
    engine.start()
    yield engine
    engine.stop()
    assert engine.waiting == engine.running == 0


def ids_of(policy, prompts):
    return policy.tokenizer(prompts)["input_ids"]


def generate(engine, policy, prompts, settings, seeded=False, on_token=None):
    """The engine's rows for ``prompts`` (in its own event loop)."""
    return asyncio.run(
        engine.generate(prompts, ids_of(policy, prompts), settings, seeded, on_token)
    )


def offline(policy, prompts, settings):
    """`ric generate`'s rows for the same prompts and settings."""
    result = generate_with_stats(policy.model, policy.tokenizer, prompts, settings)
    return [
        Row(*row) for row in zip(result.texts, result.num_new_tokens, result.finished, strict=True)
    ]


def test_greedy_answers_are_ric_generates(engine, policy):
    rows = generate(engine, policy, PROMPTS, GREEDY)
    assert rows == offline(policy, PROMPTS, GREEDY)
    assert any(row.tokens for row in rows)


def test_requests_with_different_settings_share_steps(engine, policy):
    """A greedy, a sampled and a stop-string request generated together: the greedy one's
    answer is what it is alone, and they ran at the same time."""
    alone = generate(engine, policy, PROMPTS[1:2], GREEDY)[0]
    stop_at = alone.text[-2:]  # met before the end
    sampled = replace(GREEDY, do_sample=True, temperature=0.9, top_p=0.8, max_new_tokens=6)
    stopped = replace(GREEDY, stop_strings=[stop_at])

    async def together():
        return await asyncio.gather(
            engine.generate(PROMPTS[:1], ids_of(policy, PROMPTS[:1]), GREEDY, False),
            engine.generate(PROMPTS[1:2], ids_of(policy, PROMPTS[1:2]), sampled, False),
            engine.generate(PROMPTS[1:2], ids_of(policy, PROMPTS[1:2]), stopped, False),
        )

    greedy, sampled_rows, stopped_rows = asyncio.run(together())
    assert greedy == offline(policy, PROMPTS[:1], GREEDY)
    assert sampled_rows[0].tokens <= 6
    # Cut where the answer first holds the stop string (transformers' generate would also match
    # one that began in the prompt: "fox." + "." ends with "..").
    assert stopped_rows[0].text == clean_response(alone.text, [stop_at])
    assert stopped_rows[0].finished and stopped_rows[0].tokens < alone.tokens
    assert engine.peak_running >= 2


def test_a_cancelled_request_leaves_the_engine(engine, policy):
    long = replace(GREEDY, max_new_tokens=200)
    tokens: list[int] = []

    async def cancel_after_three():
        task = asyncio.create_task(
            engine.generate(PROMPTS[:1], ids_of(policy, PROMPTS[:1]), long, False, on_token)
        )
        while len(tokens) < 3:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        seen = len(tokens)
        await asyncio.sleep(0.3)  # many engine steps
        return seen

    def on_token(row, token):
        tokens.append(token)

    seen = asyncio.run(cancel_after_three())
    assert len(tokens) == seen < 200  # nothing generated for it after the cancel
    assert engine.waiting == engine.running == 0
    assert generate(engine, policy, PROMPTS[:1], GREEDY) == offline(policy, PROMPTS[:1], GREEDY)


def test_seeded_requests_reproduce_ric_generate(engine, policy):
    seeded = replace(GREEDY, do_sample=True, temperature=1.0, top_p=1.0, seed=7)
    first = generate(engine, policy, PROMPTS, seeded, seeded=True)
    assert first == generate(engine, policy, PROMPTS, seeded, seeded=True)
    assert first == offline(policy, PROMPTS, replace(seeded, batch_size=len(PROMPTS)))


def test_streamed_tokens_are_the_rows_tokens(engine, policy):
    tokens: dict[int, list[int]] = {0: [], 1: []}
    rows = generate(
        engine, policy, PROMPTS[:2], GREEDY, on_token=lambda row, token: tokens[row].append(token)
    )
    assert [len(tokens[0]), len(tokens[1])] == [row.tokens for row in rows]
    decoded = policy.tokenizer.batch_decode([tokens[0], tokens[1]], skip_special_tokens=True)
    assert [text.strip() for text in decoded] == [row.text for row in rows]


def test_row_text_ends_at_eos_or_a_stop_string(policy):
    tokenizer = policy.tokenizer
    words = tokenizer("red green blue").input_ids
    text = RowText(tokenizer, [tokenizer.eos_token_id], ["green"])
    ended = [text.add(token) for token in words]
    assert ended[-1] and text.row() == Row("red", len(words), True)
    plain = RowText(tokenizer, [tokenizer.eos_token_id], [])
    assert not any(plain.add(token) for token in words)
    assert plain.add(tokenizer.eos_token_id)
    assert plain.row() == Row("red green blue", len(words), True)


def test_greedy_is_a_top_p_that_keeps_one_token():
    assert request_sampling(GREEDY) == {"temperature": 1.0, "top_p": GREEDY_TOP_P}
    sampled = GenerationConfig(temperature=0.3, top_p=0.8)
    assert request_sampling(sampled) == {"temperature": 0.3, "top_p": 0.8}
