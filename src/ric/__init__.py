"""ric: multi-objective alignment of foundation models with Rewards-in-Context (arXiv 2402.10207).

The top level re-exports the pure math of ``ric.core``; scorers live in ``ric.rewards`` and data
labeling in ``ric.data``.
"""

from ric.core import (
    DEFAULT_TEMPLATE,
    MAPPING_METHODS,
    PromptTemplate,
    RewardStats,
    build_prompt,
    check_preference,
    format_reward,
    hypervolume,
    mors_mask,
    normal_reward_range,
    pareto_front,
    pareto_mask,
    parse_prompt,
    preference_to_rewards,
    preference_to_z,
    quantile_thresholds,
    sanitize_prompt,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TEMPLATE",
    "MAPPING_METHODS",
    "PromptTemplate",
    "RewardStats",
    "__version__",
    "build_prompt",
    "check_preference",
    "format_reward",
    "hypervolume",
    "mors_mask",
    "normal_reward_range",
    "pareto_front",
    "pareto_mask",
    "parse_prompt",
    "preference_to_rewards",
    "preference_to_z",
    "quantile_thresholds",
    "sanitize_prompt",
]
