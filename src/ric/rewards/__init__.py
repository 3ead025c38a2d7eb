"""Reward scorers: the protocol, a registry of offline built-ins, HF reward models, user code.

    scorer = create_reward("relevance")                      # a built-in, by name
    scorer = create_reward("hf", {"model": "org/rm", "input": "pair"})
    scorer = create_reward("my_pkg.rewards:conciseness")     # your own function or class
    scores = scorer.score(prompts, responses)                # (B,) float64, raw units

Importing this package loads no model and no heavy library; each scorer does so when built.
"""

from ric.rewards.base import RewardFunction, score_split
from ric.rewards.builtin import DataColumn
from ric.rewards.hf import HFRewardModel
from ric.rewards.registry import available_rewards, create_reward, describe_rewards
from ric.rewards.user import load_user_function

__all__ = [
    "DataColumn",
    "HFRewardModel",
    "RewardFunction",
    "available_rewards",
    "create_reward",
    "describe_rewards",
    "load_user_function",
    "score_split",
]
