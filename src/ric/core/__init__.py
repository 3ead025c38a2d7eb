"""Pure RiC math: conditioning template, chat messages to one prompt, normalization stats,
preference mappings, calibrated steering, online targets, MORS, Pareto.

No file or network I/O and no model loading happens in this package.
"""

from ric.core.calibration import (
    CALIBRATED,
    Calibration,
    calibration_error,
    design_levels,
    fit_calibration,
)
from ric.core.chat import ROLES, ChatError, build_chat_messages, chat_prompt
from ric.core.mapping import (
    MAPPING_METHODS,
    check_preference,
    preference_to_rewards,
    preference_to_z,
)
from ric.core.pareto import hypervolume, pareto_front, pareto_mask
from ric.core.selection import mors_mask, quantile_thresholds
from ric.core.stats import RewardStats, normal_reward_range
from ric.core.targets import TARGET_STRATEGIES, draw_targets, front_targets, uniform_targets
from ric.core.template import (
    DEFAULT_TEMPLATE,
    TEMPLATE_FORMATS,
    PromptTemplate,
    build_plain_prompt,
    build_prompt,
    format_reward,
    parse_prompt,
    rewards_block,
    sanitize_prompt,
)

__all__ = [
    "CALIBRATED",
    "DEFAULT_TEMPLATE",
    "MAPPING_METHODS",
    "ROLES",
    "TARGET_STRATEGIES",
    "TEMPLATE_FORMATS",
    "Calibration",
    "ChatError",
    "PromptTemplate",
    "RewardStats",
    "build_chat_messages",
    "build_plain_prompt",
    "build_prompt",
    "calibration_error",
    "chat_prompt",
    "check_preference",
    "design_levels",
    "draw_targets",
    "fit_calibration",
    "format_reward",
    "front_targets",
    "hypervolume",
    "mors_mask",
    "normal_reward_range",
    "pareto_front",
    "pareto_mask",
    "parse_prompt",
    "preference_to_rewards",
    "preference_to_z",
    "quantile_thresholds",
    "rewards_block",
    "sanitize_prompt",
    "uniform_targets",
]
