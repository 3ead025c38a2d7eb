"""User-defined scorers for the registry tests, loaded as 'user_rewards:name'."""

import numpy as np


def exclamations(prompts, responses, weight=1.0):
    """A plain function: weight x number of '!' in each response, returned as a list of ints."""
    return [weight * response.count("!") for response in responses]


def one_short(prompts, responses):
    """Broken on purpose: one score fewer than responses."""
    return np.zeros(len(responses) - 1)


def not_numbers(prompts, responses):
    """Broken on purpose: strings instead of scores."""
    return ["high" for _ in responses]


class KeywordBonus:
    """A class with options: ``bonus`` when the response mentions ``keyword``, else 0."""

    def __init__(self, keyword, bonus=1.0):
        self.keyword = keyword
        self.bonus = bonus

    def score(self, prompts, responses):
        return np.array([self.bonus if self.keyword in r else 0.0 for r in responses])


class NoScore:
    """Broken on purpose: no score method."""


NOT_CALLABLE = 42


PARIS_BONUS = KeywordBonus("paris", bonus=2.0)  # an already configured scorer object
