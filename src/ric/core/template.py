"""The conditioned prompt: reward values written into the context (docs/design.md §1.1).

``build_prompt("What is a fox?", [0.3, -1.2])`` gives, with the paper's template,
``"### Input: What is a fox? <R1> 0.3 <R2> -1.2 ### Response: "``; ``parse_prompt`` inverts it.

Values are written with one decimal, and ``-0.0`` is written ``0.0``, so a value has exactly one
spelling and training and inference prompts agree token for token.

Neutralization rule (so user text can never inject or shift reward values): inside the user's
prompt, every occurrence of a *protected string* gets a zero-width space (U+200B) inserted after
its first character. The protected strings (``PromptTemplate.protected_strings``) are

* each line of the template's literal text (``### Input:``, ``### Response:``, or the lines of a
  chat template such as ``<|im_end|>``) and of each extra ``protected`` string (a tokenizer's
  special tokens, say), stripped, when at least 2 characters long;
* the marker's opening text, the part of ``marker`` before ``{i}`` (``<R``; the part after it
  when nothing but spaces comes before), in its own spelling, in lower case and in upper case.

They are applied longest first (ties in code-point order), each by a plain
``text.replace(s, s[0] + "\u200b" + s[1:])`` over the whole prompt. Inserting a character never
creates a new occurrence of a string that holds no U+200B, so afterwards none of them is left:
no marker (``<R1>``, ``<r1>``) and no template line can come from the user. The user's words
stay readable (the inserted character is invisible). Prompts without protected strings pass
through unchanged, which is what makes the round trip exact.

The chat format (``template.format: chat``, for instruct models): the conditioned prompt is the
model's own chat template rendered over the user's messages, with the reward block written into a
system turn (``template.system``, default ``{rewards}``): ``ric.core.chat.build_chat_messages``
builds the messages, ``ric.steering`` renders them with the tokenizer. The protected strings are
then the system text's lines, the ``protected`` strings (the tokenizer's special tokens, added
when a run's steering is built) and the marker's opening; ``text`` is unused.

Why this rule and not a pattern: until issue 31 the strings were matched by a regular expression,
case-insensitively and with optional whitespace inside (``< r 7 >`` was neutralized too). The
exported model's chat template (``ric.export.chat_template``) must build this very prompt inside
Jinja, which has ``replace``, ``lower`` and ``upper`` but no regular expressions, so the rule is
now one that Jinja writes exactly as Python does: literal strings, a fixed order, plain
replacement. What it gives up is the neutralization of text that is not a marker to
``parse_prompt`` anyway (``< r 7 >``, ``<rEward1>`` for a marker ``<reward{i}>``, ``### input:``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

ZERO_WIDTH_SPACE = "\u200b"
PROMPT_FIELD = "{prompt}"
REWARDS_FIELD = "{rewards}"
INDEX_FIELD = "{i}"
# Where the conditioned prompt is written: the template's own text (the paper's), or the model's
# own chat template with the rewards in a system turn (``ric.core.chat.build_chat_messages``).
TEMPLATE_FORMATS = ("plain", "chat")
# One decimal, an optional minus sign: the only spelling format_reward produces.
_VALUE_PATTERN = r"-?\d+\.\d"


def format_reward(value: float) -> str:
    """Write a reward with one decimal; ``-0.0`` (e.g. from -0.04) becomes ``0.0``."""
    if not math.isfinite(value):
        raise ValueError(f"reward value must be finite, got {value!r}")
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text


@dataclass(frozen=True)
class PromptTemplate:
    """Where the prompt and the reward values go, and how a reward marker is spelled.

    ``text`` must contain ``{prompt}`` once and then ``{rewards}`` once; whatever follows
    ``{rewards}`` is the response header the model continues from. ``marker`` must contain
    ``{i}`` (the 1-based objective index). ``protected`` lists extra strings to neutralize in user
    text, for example a tokenizer's special tokens.

    ``format`` ``"chat"`` writes the prompt with the model's own chat template instead of
    ``text``: the rewards go into a system turn whose text is ``system`` (``{rewards}`` once),
    see ``ric.core.chat.build_chat_messages``; ``text`` is then unused.
    """

    text: str = "### Input: {prompt} {rewards} ### Response: "
    marker: str = "<R{i}>"
    protected: tuple[str, ...] = field(default_factory=tuple)
    format: str = "plain"
    system: str = REWARDS_FIELD

    def __post_init__(self) -> None:
        for placeholder in (PROMPT_FIELD, REWARDS_FIELD):
            if self.text.count(placeholder) != 1:
                raise ValueError(
                    f"template text must contain {placeholder} exactly once, got {self.text!r}"
                )
        if self.text.index(PROMPT_FIELD) > self.text.index(REWARDS_FIELD):
            raise ValueError(f"template text must put {{prompt}} before {{rewards}}: {self.text!r}")
        if self.marker.count(INDEX_FIELD) != 1:
            raise ValueError(f"marker must contain {{i}} exactly once, got {self.marker!r}")
        if not self.marker.replace(INDEX_FIELD, "").strip():
            raise ValueError(f"marker needs text besides {{i}}, got {self.marker!r}")
        if self.format not in TEMPLATE_FORMATS:
            raise ValueError(
                f"template format must be one of {', '.join(TEMPLATE_FORMATS)}, got {self.format!r}"
            )
        if self.system.count(REWARDS_FIELD) != 1:
            raise ValueError(
                f"template system text must contain {REWARDS_FIELD} exactly once, "
                f"got {self.system!r}"
            )
        if ZERO_WIDTH_SPACE in self.text + self.marker + self.system + "".join(self.protected):
            raise ValueError("template text must not contain U+200B, the neutralizing character")

    @property
    def head(self) -> str:
        """Literal text before the prompt."""
        return self.text.split(PROMPT_FIELD)[0]

    @property
    def middle(self) -> str:
        """Literal text between the prompt and the reward values."""
        return self.text.split(PROMPT_FIELD)[1].split(REWARDS_FIELD)[0]

    @property
    def is_chat(self) -> bool:
        """Whether the prompt is the model's chat template with the rewards in a system turn."""
        return self.format == "chat"

    def system_text(self, rewards_block: str) -> str:
        """Chat format: the system turn's text with ``rewards_block`` written in."""
        return self.system.replace(REWARDS_FIELD, rewards_block)

    @property
    def response_header(self) -> str:
        """Literal text after the reward values; the response follows it."""
        return self.text.split(REWARDS_FIELD)[1]

    def render_marker(self, index: int) -> str:
        return self.marker.replace(INDEX_FIELD, str(index))

    @property
    def marker_opening(self) -> str:
        """The marker's text before ``{i}`` (after it when only spaces come before), stripped:
        the text every marker holds beside its index, so neutralizing it defuses markers of any
        index."""
        before, after = self.marker.split(INDEX_FIELD)
        return before.strip() or after.strip()

    @cached_property
    def protected_strings(self) -> tuple[str, ...]:
        """The strings neutralized in user text, in the order they are (module docstring). In
        the chat format the literal text is the system text's (``text`` is unused there)."""
        if self.is_chat:
            pieces: tuple[str, ...] = (*self.system.split(REWARDS_FIELD), *self.protected)
        else:
            pieces = (self.head, self.middle, self.response_header, *self.protected)
        lines = {line.strip() for piece in pieces for line in piece.splitlines()}
        opening = self.marker_opening
        strings = {line for line in lines if len(line) >= 2}
        strings |= {opening, opening.lower(), opening.upper()}
        # Longest first, so a long literal is neutralized whole rather than by a shorter prefix.
        return tuple(sorted(strings, key=lambda text: (-len(text), text)))

    @cached_property
    def _parse_regex(self) -> re.Pattern[str]:
        before, after = (re.escape(part) for part in self.marker.split(INDEX_FIELD))
        # The block starts at objective 1 and the prompt match is lazy: a sanitized prompt holds no
        # marker, so the first "<R1> value" after it is the block.
        first = rf"{before}1{after} {_VALUE_PATTERN}"
        rest = rf"{before}\d+{after} {_VALUE_PATTERN}"
        rewards = rf"(?P<rewards>{first}(?: {rest})*)"
        return re.compile(
            re.escape(self.head)
            + r"(?P<prompt>.*?)"
            + re.escape(self.middle)
            + rewards
            + re.escape(self.response_header),
            re.DOTALL,
        )

    @cached_property
    def _pair_regex(self) -> re.Pattern[str]:
        before, after = (re.escape(part) for part in self.marker.split(INDEX_FIELD))
        return re.compile(rf"{before}(\d+){after} ({_VALUE_PATTERN})")


DEFAULT_TEMPLATE = PromptTemplate()


def sanitize_prompt(prompt: str, template: PromptTemplate = DEFAULT_TEMPLATE) -> str:
    """Neutralize marker and template text inside user text (rule in the module docstring)."""
    for protected in template.protected_strings:
        prompt = prompt.replace(protected, neutralized(protected))
    return prompt


def neutralized(protected: str) -> str:
    """``protected`` with a zero-width space after its first character."""
    return protected[0] + ZERO_WIDTH_SPACE + protected[1:]


def build_prompt(
    prompt: str, rewards: Sequence[float], template: PromptTemplate = DEFAULT_TEMPLATE
) -> str:
    """The conditioned prompt: sanitized user prompt plus one marker and value per objective."""
    _plain_only(template)
    values = rewards_block(rewards, template)
    return (
        template.head
        + sanitize_prompt(prompt, template)
        + template.middle
        + values
        + template.response_header
    )


def rewards_block(rewards: Sequence[float], template: PromptTemplate = DEFAULT_TEMPLATE) -> str:
    """The markers and values, ``<R1> 0.3 <R2> -1.2``: what both formats write."""
    if len(rewards) == 0:
        raise ValueError("build_prompt needs at least one reward value")
    return " ".join(
        f"{template.render_marker(i)} {format_reward(float(v))}"
        for i, v in enumerate(rewards, start=1)
    )


def build_plain_prompt(prompt: str, template: PromptTemplate = DEFAULT_TEMPLATE) -> str:
    """The unconditioned prompt of the baselines (base, SFT, RL): the same template and
    sanitizing, with the reward block and the text between prompt and rewards left out, e.g.
    ``"### Input: What is a fox? ### Response: "``."""
    _plain_only(template)
    return template.head + sanitize_prompt(prompt, template) + template.response_header


def _plain_only(template: PromptTemplate) -> None:
    if template.is_chat:
        raise ValueError(
            "a chat-format template (template.format: chat) is written by the model's chat "
            "template: build the prompt through ric.steering with the model's tokenizer"
        )


def parse_prompt(text: str, template: PromptTemplate = DEFAULT_TEMPLATE) -> tuple[str, list[float]]:
    """Invert ``build_prompt``: return the (sanitized) prompt and the reward values.

    Raises ValueError when ``text`` does not follow the template or the markers are not
    numbered 1..N in order.
    """
    match = template._parse_regex.fullmatch(text)
    if match is None:
        raise ValueError(f"text does not follow the template {template.text!r}: {text[:200]!r}")
    pairs = template._pair_regex.findall(match.group("rewards"))
    indices = [int(index) for index, _ in pairs]
    if indices != list(range(1, len(pairs) + 1)):
        raise ValueError(f"reward markers must be numbered 1..{len(pairs)} in order, got {indices}")
    return match.group("prompt"), [float(value) for _, value in pairs]
