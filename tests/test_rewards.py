"""Built-in scorers (hand-checkable values), the registry and user-supplied reward code.

The HF reward-model adapter is tested in test_rewards_hf.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from ric.rewards import (
    RewardFunction,
    available_rewards,
    create_reward,
    describe_rewards,
    load_user_function,
)

BUILTINS = [
    "column",
    "conciseness",
    "fk_grade",
    "harmlessness",
    "hf",
    "positivity",
    "readability",
    "relevance",
    "verbosity",
]
SIMPLE = "The cat sat. The dog ran. We had fun."
COMPLEX = (
    "Notwithstanding considerable epistemological ambiguities, interdisciplinary methodologies "
    "facilitate comprehensive understanding of socioeconomic phenomena."
)
UNPUNCTUATED = " ".join(["international cooperation"] * 40)  # one 80-word "sentence"


@pytest.fixture(scope="module")
def relevance() -> RewardFunction:
    """The real all-MiniLM-L6-v2 shipped in a wheel, loaded once for the module."""
    return create_reward("relevance", {"device": "cpu"})


# --- built-in scorers --------------------------------------------------------------------------


def test_verbosity_counts_characters_or_words() -> None:
    responses = ["", "abc", "two words", "  spaced   out  "]

    characters = create_reward("verbosity").score(["p"] * 4, responses)
    words = create_reward("verbosity", {"unit": "words"}).score(["p"] * 4, responses)

    np.testing.assert_array_equal(characters, [0, 3, 9, 16])
    np.testing.assert_array_equal(words, [0, 1, 2, 2])
    assert characters.dtype == np.float64


def test_conciseness_is_minus_the_word_count() -> None:
    scores = create_reward("conciseness").score(["q", "q"], ["one two three", ""])
    np.testing.assert_array_equal(scores, [-3.0, 0.0])
    by_characters = create_reward("conciseness", {"unit": "characters"}).score(["q"], ["abc"])
    np.testing.assert_array_equal(by_characters, [-3.0])


def test_verbosity_rejects_unknown_unit() -> None:
    with pytest.raises(ValueError, match="unit: 'tokens' is not valid; choose one of characters"):
        create_reward("verbosity", {"unit": "tokens"})


def test_harmlessness_ranks_an_insult_below_a_friendly_reply() -> None:
    scores = create_reward("harmlessness").score(
        ["hi", "hi"], ["you are a stupid idiot, shut up", "have a lovely day, my friend"]
    )

    insult, friendly = scores
    assert 0.0 <= insult < 0.5 < friendly <= 1.0


def test_positivity_sign_follows_sentiment() -> None:
    scores = create_reward("positivity").score(
        ["q"] * 3, ["I love this, it is wonderful!", "This is terrible and I hate it.", ""]
    )

    assert scores[0] > 0.5
    assert scores[1] < -0.5
    assert scores[2] == 0.0


def test_readability_prefers_simple_text_and_clips_outliers() -> None:
    scorer = create_reward("readability")

    simple, complex_, tiny, unpunctuated, empty = scorer.score(
        ["q"] * 5, [SIMPLE, COMPLEX, "Hi.", UNPUNCTUATED, "   "]
    )

    assert simple > complex_
    assert tiny == 121.0  # the formula gives 121.22: clipped at the upper bound
    assert unpunctuated == -20.0  # hundreds below zero unclipped
    assert empty == -20.0  # no answer is not readable


def test_readability_range_is_configurable() -> None:
    scorer = create_reward("readability", {"minimum": 0.0, "maximum": 100.0})

    scores = scorer.score(["q"] * 3, ["Hi.", UNPUNCTUATED, ""])

    np.testing.assert_array_equal(scores, [100.0, 0.0, 0.0])


def test_readability_rejects_an_empty_range() -> None:
    with pytest.raises(ValueError, match="minimum must be below maximum"):
        create_reward("readability", {"minimum": 50.0, "maximum": 10.0})


def test_fk_grade_rates_complex_text_higher_and_clips() -> None:
    scores = create_reward("fk_grade").score(["q"] * 4, [SIMPLE, COMPLEX, "Hi.", UNPUNCTUATED])

    simple, complex_, tiny, unpunctuated = scores
    assert 0.0 <= simple < complex_ <= 20.0
    assert tiny == 0.0  # the formula gives -3.4
    assert unpunctuated == 20.0


def test_relevance_prefers_on_topic_answers(relevance: RewardFunction) -> None:
    prompt = "How do plants turn sunlight into energy?"
    on_topic = "Plants use photosynthesis: chlorophyll captures sunlight to make sugar."
    off_topic = "The stock market closed higher today after strong bank earnings."

    scores = relevance.score([prompt, prompt, prompt], [on_topic, off_topic, prompt])

    assert scores[0] > scores[1] + 0.2
    assert scores[2] == pytest.approx(1.0, abs=1e-5)
    assert np.all(np.abs(scores) <= 1.0 + 1e-6)


def test_relevance_with_repeated_texts_matches_pairwise_scores(relevance: RewardFunction) -> None:
    prompts = ["what is rain?", "what is rain?", "name a fruit", "what is rain?"]
    responses = ["water falling from clouds", "apples", "apples", "water falling from clouds"]

    batch = relevance.score(prompts, responses)
    one_by_one = [relevance.score([p], [r])[0] for p, r in zip(prompts, responses, strict=True)]

    np.testing.assert_allclose(batch, one_by_one, atol=1e-5)
    assert batch[0] == batch[3]
    assert batch[2] > batch[1]


@pytest.mark.parametrize("name", ["fk_grade", "harmlessness", "positivity", "readability"])
def test_builtins_return_one_float64_per_pair(name: str) -> None:
    scorer = create_reward(name)

    scores = scorer.score(["a", "b", "c"], [SIMPLE, COMPLEX, "ok"])
    empty = scorer.score([], [])

    assert scores.shape == (3,)
    assert scores.dtype == np.float64
    assert empty.shape == (0,)


@pytest.mark.parametrize("name", ["fk_grade", "harmlessness", "positivity", "verbosity"])
def test_builtins_reject_mismatched_lengths(name: str) -> None:
    with pytest.raises(ValueError, match="got 3 prompts but 2 responses"):
        create_reward(name).score(["a", "b", "c"], ["x", "y"])


def test_non_string_text_is_named() -> None:
    with pytest.raises(ValueError, match="response 1 is float, not str"):
        create_reward("verbosity").score(["a", "b"], ["x", float("nan")])


# --- registry ----------------------------------------------------------------------------------


def test_available_rewards_are_sorted_and_described() -> None:
    descriptions = describe_rewards()

    assert available_rewards() == BUILTINS
    assert list(descriptions) == BUILTINS
    for description in descriptions.values():
        assert description
        assert "\n" not in description


def test_unknown_reward_lists_the_valid_names() -> None:
    with pytest.raises(ValueError) as error:
        create_reward("helpfulness")

    message = str(error.value)
    assert message.startswith(
        "unknown reward 'helpfulness'; valid: column, conciseness, fk_grade, harmlessness,"
    )
    assert "'package.module:function'" in message


def test_unknown_option_is_named_with_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown option 'units'; valid options: unit"):
        create_reward("verbosity", {"units": "words"})


def test_option_free_builtin_rejects_options() -> None:
    with pytest.raises(ValueError, match="unknown option 'model'; valid options: none"):
        create_reward("positivity", {"model": "x"})


def test_missing_required_option_is_named_before_loading() -> None:
    with pytest.raises(ValueError, match=r"needs options: \{model: HUB_ID_OR_DIR\} or \{preset"):
        create_reward("hf")
    with pytest.raises(ValueError, match="preset: 'helpfull' is not valid; choose one of harmless"):
        create_reward("hf", {"preset": "helpfull"})
    with pytest.raises(ValueError, match="reward 'column': missing a required argument: 'column'"):
        create_reward("column")


def test_created_scorers_satisfy_the_protocol() -> None:
    assert isinstance(create_reward("verbosity"), RewardFunction)
    assert isinstance(create_reward("user_rewards:exclamations"), RewardFunction)


# --- user code ---------------------------------------------------------------------------------


def test_user_function_is_wrapped_and_converted_to_float64() -> None:
    scorer = create_reward("user_rewards:exclamations")

    scores = scorer.score(["q", "q"], ["wow!!", "calm"])

    np.testing.assert_array_equal(scores, [2.0, 0.0])
    assert scores.dtype == np.float64


def test_user_function_takes_keyword_options() -> None:
    scorer = create_reward("user_rewards:exclamations", {"weight": 0.5})

    np.testing.assert_array_equal(scorer.score(["q"], ["!!!!"]), [2.0])


def test_user_class_is_instantiated_with_options() -> None:
    scorer = load_user_function("user_rewards:KeywordBonus", {"keyword": "paris", "bonus": 3})

    np.testing.assert_array_equal(scorer.score(["q", "q"], ["paris!", "rome"]), [3.0, 0.0])


def test_user_scorer_object_is_used_as_is_and_takes_no_options() -> None:
    scorer = create_reward("user_rewards:PARIS_BONUS")

    np.testing.assert_array_equal(scorer.score(["q", "q"], ["paris", "rome"]), [2.0, 0.0])
    with pytest.raises(ValueError, match="is an object, not a class: it takes no options"):
        create_reward("user_rewards:PARIS_BONUS", {"bonus": 1.0})


@pytest.mark.parametrize(
    ("spec", "options", "message"),
    [
        ("user_rewards:KeywordBonus", {"keyword": "a", "bonsu": 2}, "unknown option 'bonsu'"),
        ("user_rewards:KeywordBonus", {}, "missing a required argument: 'keyword'"),
        ("user_rewards:exclamations", {"scale": 2}, "option 'scale'; valid options: weight"),
        ("user_rewards:NoScore", {}, "class NoScore has no score method"),
        ("user_rewards:NOT_CALLABLE", {}, "is of type int: expected a class, a function"),
        ("user_rewards:missing", {}, "module 'user_rewards' has no attribute 'missing'"),
        ("no_such_module_xyz:f", {}, "cannot import module 'no_such_module_xyz'"),
        ("user_rewards:a:b", {}, "expected the form 'package.module:function'"),
    ],
)
def test_user_code_errors_name_the_problem(spec: str, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_reward(spec, options)


def test_user_function_with_wrong_length_output_is_named() -> None:
    scorer = create_reward("user_rewards:one_short")

    with pytest.raises(
        ValueError, match=r"reward 'user_rewards:one_short' returned shape \(2,\) for 3"
    ):
        scorer.score(["a", "b", "c"], ["x", "y", "z"])


def test_user_function_with_non_numeric_output_is_named() -> None:
    with pytest.raises(ValueError, match="'user_rewards:not_numbers' returned values that are not"):
        create_reward("user_rewards:not_numbers").score(["a"], ["x"])


def test_user_function_is_not_called_with_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="got 1 prompts but 2 responses"):
        create_reward("user_rewards:exclamations").score(["a"], ["x", "y"])
