"""The chat template of an exported RiC model: it turns a preference into the reward values.

A RiC model steers with nothing but its prompt, so any engine that renders a Hugging Face chat
template and passes per-request keyword arguments to it (``chat_template_kwargs`` in vLLM,
SGLang and ``transformers serve``) serves it, if the chat template writes the conditioned prompt
itself. ``steering_chat_template`` writes such a template (``tokenizer.chat_template``) for one
steering (the run's objectives, mapping, range and prompt template). From ``messages`` and the
keyword arguments it renders exactly ``steering.prompts([chat_prompt(messages)], desired)[0]``:

* ``preference``: N weights in objective order, or an object keyed by objective name (missing
  names 0), mapped by the run's mapping (``linear``, ``p_norm``, ``p_inf``; ``calibrated`` from
  a table, below) over its range;
* ``rewards``: the desired standardized rewards themselves, a list or an object (missing 0);
* neither: the default preference the template was written with; both: an error;
  ``rewards_obtained``: an error that says where to ask for it.

Bad input raises a template error (``raise_exception``) worded as ``ric.steering.Steering``
words it (the same message where Steering has one). The template always ends with the run's
response header, the generation prompt of a RiC prompt, so ``add_generation_prompt`` changes
nothing; a chat must end with a user message, as in ``ric serve``.

The template is a second expression of rules ``ric`` holds once in Python: chat messages to one
prompt (``ric.core.chat``), the neutralizer (``ric.core.template``, whose rule was chosen so that
Jinja can write it: literal strings replaced in a fixed order), Steering's checks and the
mappings (``ric.core.mapping``). Jinja cannot call Python, so they are written again below, the
mappings operation for operation in the same order (``(r_max - r_min) * z + r_min``, p_norm's sum
left to right), so that Jinja's arithmetic, which is Python's, gives the same floats and hence
the same one-decimal values. What can be is taken from Python rather than written twice: the
roles, the protected strings, the markers, the range, the default preference.
``tests/test_chat_template.py`` guards the equivalence on over a thousand random cases, text and
token ids; change one side and that test says where the other must follow. ``convex`` (a
numerical solver) cannot be written in Jinja and is refused.

``calibrated`` (``ric.core.calibration``) solves the paper's program on a fitted model of what the
model obtains, with a bounded least-squares inverse and a bisection: no Jinja either. It is baked
in as a table instead: ``Steering.map_preference`` at every preference of a lattice on the
simplex (``CALIBRATED_LATTICE``: step 1/1000 for 2 objectives, 1001 preferences; step 1/60 for 3,
1891), and, between lattice points, linear interpolation on the lattice simplex (a segment, a
triangle) that holds the preference. At a lattice point (every preference of 3 decimals for 2
objectives; every multiple of 0.05 and of 1/3 for 3) and at the default preference the template
writes ric's prompt exactly; elsewhere its desired rewards differ from ric's by the
interpolation error (docs/deploy.md has the measurements): on smooth calibrations 1e-5 sd with 2
objectives (1 one-decimal prompt in 2,000 differs from ric's), 0.002 sd with 3 (2 in 100); more
near the simplex's edges for p > 2, whose mapping is steep there, and up to a step's height
where the mapping jumps (a flat stretch of a calibration curve makes its inverse jump). Four
objectives and more are refused (a lattice fine enough would not fit in a template): ``ric
serve`` runs the mapping itself. ``rewards_obtained`` (what to obtain, which needs the
calibration's solver) is refused by every template, with a message that says where to get it.

A run in the chat format (``template.format: chat``) keeps its model's chat template: the
template is then a prelude of the same blocks (messages checked, request read, mapping, reward
block), which sets ``messages`` to ``ric.core.build_chat_messages``'s list (each text neutralized,
ric's system turn first, a chat's own leading system message merged into it) and
``add_generation_prompt`` to true, followed by the model's original template verbatim, which
renders them (``tests/test_chat_template.py`` checks this too, text and token ids).

Every tag strips the whitespace around it, so the template renders the same whether or not the
engine sets ``trim_blocks``/``lstrip_blocks``; the only output is the last expression.
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping, Sequence
from typing import Any

from ric.core import CALIBRATED, ROLES, PromptTemplate
from ric.core.mapping import SIMPLEX_TOLERANCE
from ric.core.template import neutralized
from ric.steering import Steering

# The mappings a chat template can hold: closed forms in + - * / and **, and a calibrated
# mapping's table (for as many objectives as CALIBRATED_LATTICE has a lattice for).
TEMPLATE_MAPPINGS = ("linear", "p_norm", "p_inf", CALIBRATED)
# Divisions of the calibrated table's lattice (step 1/divisions) by number of objectives: about
# a thousand preferences for 2 and 3 (1001, 1891), computed once at export (0.1 s on a smooth
# calibration, a minute or two where side effects need the least-squares solver); 1 objective
# has one preference. For 3, 60: every multiple of 0.05 and of 1/3 is on the lattice, and so are
# the p = inf mapping's kinks (w_i = 1/N), which interpolation then follows exactly.
CALIBRATED_LATTICE = {1: 1, 2: 1000, 3: 60}
# A lattice coordinate (w_i * divisions) this close to an integer is taken as that integer, so a
# preference typed on the lattice (0.57, whose 57.00000000000001 is a rounding) is looked up.
LATTICE_SNAP = 1e-9
# Characters written as they are inside a Jinja string literal; every other one is escaped, so no
# user-chosen text (a marker, an objective name) can end the literal or open a Jinja tag.
_PLAIN = frozenset(string.ascii_letters + string.digits + " _-.,:;!?()[]<>|/=+*&^$@~'`#%")


def steering_chat_template(
    steering: Steering,
    default_preference: Sequence[float] | Mapping[str, float],
    bos_token: bool = False,
    original: str | None = None,
) -> str:
    """A Jinja chat template that writes ``steering``'s conditioned prompt (module docstring).

    ``default_preference`` is used when a request gives neither ``preference`` nor ``rewards``.
    ``bos_token`` starts the text with ``{{ bos_token }}``: ric tokenizes its prompt with the
    tokenizer's default special tokens, engines tokenize a chat template's output without them,
    so a tokenizer that adds a BOS by itself needs it written. Raises ValueError for a mapping
    no template can hold (``convex``; ``calibrated`` for 4 objectives or more), a baseline (its
    prompts carry no rewards) or a default preference the model cannot take.

    A chat-format steering (``template.format: chat``) needs ``original``, the model's own chat
    template text: the result is a prelude that sets ``messages`` to the neutralized messages
    after ric's system turn (``ric.core.build_chat_messages``) and ``add_generation_prompt`` to
    true, followed by ``original`` verbatim, which renders them. ``steering`` must then be the
    one ``Steering.with_tokenizer`` gives (the tokenizer's special tokens protected); ``bos_token``
    writes BOS ahead of what ``original`` writes (for a tokenizer that adds BOS where the
    original does not write it).
    """
    chat = steering.template.is_chat
    if chat and not original:
        raise ValueError(
            "a chat-format run (template.format: chat) is exported with its model's own chat "
            "template, and its tokenizer has none"
        )
    if not steering.takes_rewards:
        raise ValueError(
            f"a {steering.method.name} baseline takes no rewards in its prompt: a steering chat "
            "template is for a RiC model"
        )
    method = steering.mapping.method
    if method not in TEMPLATE_MAPPINGS:
        raise ValueError(
            f"mapping {method!r} cannot be written in a chat template; the mappings that can: "
            f"{', '.join(TEMPLATE_MAPPINGS)}"
        )
    if method == CALIBRATED and steering.num_objectives not in CALIBRATED_LATTICE:
        raise ValueError(
            f"a calibrated mapping is written into a chat template as a table over a lattice of "
            f"preferences, for at most {max(CALIBRATED_LATTICE)} objectives; this model has "
            f"{steering.num_objectives} ({', '.join(steering.names)}), whose lattice would not "
            "fit: serve it with `ric serve`, or compute desired rewards with `ric map --model "
            "RUN --preference ...` and pass them as rewards"
        )
    steering.map_preference(default_preference)  # checks the default, p, lam and the range
    default = steering.check(default_preference).tolist()
    if chat:
        return "".join(
            [
                _header(steering),
                _chat_block(),
                _messages_block(steering.template),
                _request_block(steering, default),
                _mapping_block(steering, default),
                _values_block(steering),
                _system_block(steering, bos_token),
                original or "",
            ]
        )
    return "".join(
        [
            _header(steering),
            _chat_block(),
            _neutralizer_block(steering.template),
            _request_block(steering, default),
            _mapping_block(steering, default),
            _values_block(steering),
            _prompt_block(steering, bos_token),
        ]
    )


def lattice_preferences(count: int) -> list[list[float]]:
    """The preferences of the calibrated table's lattice for ``count`` objectives, in table
    order (first weight slowest): every point of ``count`` multiples of 1/divisions summing to 1
    (``CALIBRATED_LATTICE``), each weight i/divisions, the float a person types for it."""
    divisions = CALIBRATED_LATTICE[count]

    def points(prefix: tuple[int, ...]) -> list[tuple[int, ...]]:
        left = divisions - sum(prefix)
        if len(prefix) == count - 1:
            return [(*prefix, left)]
        return [point for i in range(left + 1) for point in points((*prefix, i))]

    return [[i / divisions for i in point] for point in points(())]


def obtained_refusal(steering: Steering) -> str:
    """Why a template takes no ``rewards_obtained``, and where to get what it asks for."""
    if steering.calibration is not None:
        return (
            "rewards_obtained needs the calibration's solver, which a chat template cannot run: "
            "ask `ric serve` for it, or compute the desired rewards with `ric map --model RUN "
            "--rewards-obtained ...` and pass them as rewards"
        )
    return (
        "rewards_obtained needs a calibrated model (`ric calibrate`), and this one is not: give "
        "preference or rewards"
    )


def jinja_literal(value: Any) -> str:
    """``value`` (a string, finite number, list or string-keyed dict) as a Jinja literal that
    evaluates to the same value: numbers as floats by ``repr`` (exact), strings with every
    character outside ``_PLAIN`` escaped (Jinja unescapes string literals as Python's
    unicode-escape does)."""
    if isinstance(value, str):
        return '"' + "".join(char if char in _PLAIN else _escape(char) for char in value) + '"'
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "none"}[value]
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"a chat template cannot hold the non-finite number {value!r}")
        return repr(float(value))
    if isinstance(value, Mapping):
        return (
            "{"
            + ", ".join(f"{jinja_literal(k)}: {jinja_literal(v)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, Sequence):
        return "[" + ", ".join(jinja_literal(item) for item in value) + "]"
    raise TypeError(f"no Jinja literal for {type(value).__name__}")


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _header(steering: Steering) -> str:
    """The comment that says what the template is, and the run's constants."""
    names = steering.names
    return (
        "{#- Rewards-in-Context: this template writes the model's conditioned prompt, reward\n"
        "    values in the text (written by ric, ric.export.chat_template). Per request\n"
        "    (chat_template_kwargs): preference, weights in objective order or keyed by objective\n"
        "    name, summing to 1; or rewards, the desired standardized values; neither: the\n"
        "    default preference. The prompt ends with the response header whatever\n"
        "    add_generation_prompt says. -#}\n"
        f"{{%- set ric_objectives = {jinja_literal(list(names))} -%}}\n"
        f"{{%- set ric_objectives_text = {jinja_literal(', '.join(names))} -%}}\n"
        f"{{%- set ric_r_min = {jinja_literal(steering.r_min.tolist())} -%}}\n"
        f"{{%- set ric_r_max = {jinja_literal(steering.r_max.tolist())} -%}}\n"
        f"{{%- set ric_roles = {jinja_literal(ROLES)} -%}}\n"
        "{%- set ric = namespace(turns=[], prompt='', param='', given=none, values=[], z=[], "
        "desired=[], texts=[], roles=[], messages=[], system='') -%}\n"
    )


def _chat_block() -> str:
    """``ric.core.chat.chat_prompt`` in Jinja: the messages become ``ric.prompt``."""
    roles = jinja_literal(f"; use one of {', '.join(ROLES)}")
    return f"""\
{{#- Chat messages to one prompt (ric.core.chat). -#}}
{{%- if messages is not defined or messages is string or messages is mapping
      or messages is not iterable or messages|length == 0 -%}}
  {{{{- raise_exception("messages must hold at least one message") -}}}}
{{%- endif -%}}
{{%- for message in messages -%}}
  {{%- set role = message["role"] -%}}
  {{%- if not (role is string and role in ric_roles) -%}}
    {{%- set shown = ("'" ~ role ~ "'") if role is string
                     else (role if role is defined else none)|string -%}}
    {{{{- raise_exception("messages[" ~ loop.index0 ~ "].role " ~ shown ~ " is not supported"
                          ~ {roles}) -}}}}
  {{%- endif -%}}
  {{%- set content = message["content"] -%}}
  {{%- if content is string -%}}
    {{%- set text = content -%}}
  {{%- elif content is defined and content is iterable and content is not mapping -%}}
    {{%- set parts = namespace(texts=[], bad=false) -%}}
    {{%- for part in content -%}}
      {{%- if part is mapping and part["type"] == "text" and part["text"] is string -%}}
        {{%- set parts.texts = parts.texts + [part["text"]] -%}}
      {{%- else -%}}
        {{%- set parts.bad = true -%}}
      {{%- endif -%}}
    {{%- endfor -%}}
    {{%- set text = none if parts.bad else parts.texts|join("\\n") -%}}
  {{%- else -%}}
    {{%- set text = none -%}}
  {{%- endif -%}}
  {{%- if text is none -%}}
    {{{{- raise_exception("messages[" ~ loop.index0 ~ "].content must be a string or a list of "
                          ~ "text parts") -}}}}
  {{%- endif -%}}
  {{%- set ric.turns = ric.turns + [[ric_roles[role], text]] -%}}
  {{%- set ric.roles = ric.roles + [role] -%}}
{{%- endfor -%}}
{{%- if ric.turns[-1][0] != "User" -%}}
  {{{{- raise_exception("the last message must come from the user") -}}}}
{{%- endif -%}}
{{%- if ric.turns|length == 1 -%}}
  {{%- set ric.prompt = ric.turns[0][1] -%}}
{{%- else -%}}
  {{%- set ric.prompt = ric.turns|map("join", ": ")|join("\\n") -%}}
{{%- endif -%}}
"""


def _neutralizer_block(template: PromptTemplate, target: str = "ric.prompt") -> str:
    """``ric.core.sanitize_prompt`` in Jinja, on the variable ``target``: the same replacements
    in the same order."""
    lines = ["{#- Marker and template text in user text neutralized (ric.core.template). -#}\n"]
    for protected in template.protected_strings:
        old, new = jinja_literal(protected), jinja_literal(neutralized(protected))
        lines.append(f"{{%- set {target} = {target}|replace({old}, {new}) -%}}\n")
    return "".join(lines)


def _messages_block(template: PromptTemplate) -> str:
    """``ric.core.build_chat_messages`` in Jinja, before the system turn: ``ric.messages``, each
    message's text neutralized, a ``developer`` message a ``system`` one."""
    return f"""\
{{#- Chat format: every message neutralized (ric.core.chat.build_chat_messages). -#}}
{{%- for turn in ric.turns -%}}
  {{%- set text = turn[1] -%}}
{_indent(_neutralizer_block(template, "text"))}\
  {{%- set role = ric.roles[loop.index0] -%}}
  {{%- set role = "system" if role == "developer" else role -%}}
  {{%- set ric.messages = ric.messages + [{{"role": role, "content": text}}] -%}}
{{%- endfor -%}}
"""


def _request_block(steering: Steering, default: list[float]) -> str:
    """``Steering.by_objective`` and ``Steering.check`` in Jinja: ``ric.values``, N floats, from
    the request's preference, its rewards or the default preference; ``ric.param`` names which."""
    count = steering.num_objectives
    return f"""\
{{#- The request: preference, rewards or the default preference (ric.steering). -#}}
{{%- if rewards_obtained is defined and rewards_obtained is not none -%}}
  {{{{- raise_exception({jinja_literal(obtained_refusal(steering))}) -}}}}
{{%- endif -%}}
{{%- set ric_has_preference = preference is defined and preference is not none -%}}
{{%- set ric_has_rewards = rewards is defined and rewards is not none -%}}
{{%- if ric_has_preference and ric_has_rewards -%}}
  {{{{- raise_exception("give preference or rewards, not both") -}}}}
{{%- elif ric_has_rewards -%}}
  {{%- set ric.param = "rewards" -%}}
  {{%- set ric.given = rewards -%}}
{{%- elif ric_has_preference -%}}
  {{%- set ric.param = "preference" -%}}
  {{%- set ric.given = preference -%}}
{{%- else -%}}
  {{%- set ric.param = "preference" -%}}
  {{%- set ric.given = {jinja_literal(default)} -%}}
{{%- endif -%}}
{{%- if ric.given is mapping -%}}
  {{%- set ric_unknown = ric.given|list|reject("in", ric_objectives)|sort|list -%}}
  {{%- if ric_unknown -%}}
    {{{{- raise_exception(ric.param ~ " names unknown objective '" ~ ric_unknown[0]
                          ~ "'; objectives: " ~ ric_objectives_text) -}}}}
  {{%- endif -%}}
  {{%- for name in ric_objectives -%}}
    {{%- set ric.values = ric.values + [ric.given[name] if name in ric.given else 0.0] -%}}
  {{%- endfor -%}}
{{%- elif ric.given is string or ric.given is not iterable -%}}
  {{{{- raise_exception(ric.param ~ " must be a list in objective order or an object keyed by "
                        ~ "objective name, got " ~ ric.given|string) -}}}}
{{%- else -%}}
  {{%- set ric.values = ric.given|list -%}}
  {{%- if ric.values|length != {count} -%}}
    {{{{- raise_exception(ric.param ~ " has " ~ ric.values|length ~ " values; the model has "
                          ~ "{count} objectives (" ~ ric_objectives_text ~ ")") -}}}}
  {{%- endif -%}}
{{%- endif -%}}
{{%- if ric.values|reject("number")|list -%}}
  {{{{- raise_exception(ric.param ~ " values must be numbers, got " ~ ric.values|string) -}}}}
{{%- endif -%}}
{{%- set ric.values = ric.values|map("float")|list -%}}
{{%- set ric_check = namespace(finite=true, negative=false, total=0.0) -%}}
{{%- for value in ric.values -%}}
  {{%- if not (value - value == 0.0) -%}}
    {{%- set ric_check.finite = false -%}}
  {{%- endif -%}}
  {{%- if value < 0 -%}}
    {{%- set ric_check.negative = true -%}}
  {{%- endif -%}}
  {{%- set ric_check.total = ric_check.total + value -%}}
{{%- endfor -%}}
{{%- if ric.param == "rewards" and not ric_check.finite -%}}
  {{{{- raise_exception("rewards must be finite, got " ~ ric.values|string) -}}}}
{{%- elif ric.param == "preference" and not ric_check.finite -%}}
  {{{{- raise_exception("preference weights must be finite, got " ~ ric.values|string) -}}}}
{{%- elif ric.param == "preference" and ric_check.negative -%}}
  {{{{- raise_exception("preference weights must be >= 0, got " ~ ric.values|string) -}}}}
{{%- elif ric.param == "preference" and (ric_check.total - 1.0)|abs > {SIMPLEX_TOLERANCE!r} -%}}
  {{{{- raise_exception("preference weights must sum to 1 (within {SIMPLEX_TOLERANCE!r}), got sum "
                        ~ ric_check.total|string ~ " for " ~ ric.values|string) -}}}}
{{%- endif -%}}
"""


def _mapping_block(steering: Steering, default: list[float]) -> str:
    """``ric.core.mapping`` in Jinja: ``ric.desired``, the desired rewards, from ``ric.values``
    (a preference, mapped to z in [0, 1]^N and then to the range; rewards, as they are)."""
    mapping, count = steering.mapping, steering.num_objectives
    if mapping.method == CALIBRATED:
        return _calibrated_block(steering, default)
    if mapping.method == "linear":
        z = "{%- set ric.z = ric.values -%}\n"
    elif mapping.method == "p_inf" and mapping.lam is not None:
        # The theorem's z_i = 1/lam_i with the given lam: the same for every preference.
        z = "".join(
            f"{{%- set ric.z = ric.z + [1.0 / {jinja_literal(float(v))}] -%}}\n"
            for v in mapping.lam
        )
    elif mapping.method == "p_inf":
        # The paper's lam_i = 1 if w_i >= 1/N else 1/(N w_i), then z_i = 1/lam_i; w_i = 0 gives
        # lam_i = inf and z_i = 0 in numpy, a division by zero in Jinja, so it is spelled out.
        z = f"""\
{{%- for w in ric.values -%}}
  {{%- if w >= 1.0 / {count} -%}}
    {{%- set ric.z = ric.z + [1.0 / 1.0] -%}}
  {{%- elif w == 0.0 -%}}
    {{%- set ric.z = ric.z + [0.0] -%}}
  {{%- else -%}}
    {{%- set ric.z = ric.z + [1.0 / (1.0 / ({count} * w))] -%}}
  {{%- endif -%}}
{{%- endfor -%}}
"""
    else:  # p_norm, the appendix's equation (10), as ric.core.mapping.p_norm_z computes it
        lam = [1.0] * count if mapping.lam is None else [float(v) for v in mapping.lam]
        z = f"""\
{{%- set ric_p = {jinja_literal(float(mapping.p))} -%}}
{{%- set ric_lam = {jinja_literal(lam)} -%}}
{{%- set ric_q = ric_p / (ric_p - 1.0) -%}}
{{%- set ric_norm = namespace(total=0.0) -%}}
{{%- for w in ric.values -%}}
  {{%- set ric_norm.total = ric_norm.total + (w / ric_lam[loop.index0]) ** ric_q -%}}
{{%- endfor -%}}
{{%- set ric_scale = ric_norm.total ** (-1.0 / ric_p) -%}}
{{%- for w in ric.values -%}}
  {{%- set scale = ric_lam[loop.index0] -%}}
  {{%- set ric.z = ric.z + [((w ** (1.0 / (ric_p - 1.0))) / (scale ** ric_q)) * ric_scale] -%}}
{{%- endfor -%}}
"""
    return f"""\
{{#- Desired rewards: as given, or a preference mapped ({mapping.method}, ric.core.mapping). -#}}
{{%- if ric.param == "rewards" -%}}
  {{%- set ric.desired = ric.values -%}}
{{%- else -%}}
{_indent(z)}\
  {{%- for z in ric.z -%}}
    {{%- set low, high = ric_r_min[loop.index0], ric_r_max[loop.index0] -%}}
    {{%- set ric.desired = ric.desired + [(high - low) * z + low] -%}}
  {{%- endfor -%}}
{{%- endif -%}}
"""


def _calibrated_block(steering: Steering, default: list[float]) -> str:
    """The calibrated mapping in Jinja (module docstring): ``ric.desired`` from the table of
    ``Steering.map_preference`` over the lattice, interpolated linearly on the lattice simplex
    that holds the preference; the default preference's own desired rewards exactly.

    The preference, scaled to the lattice (x = w / sum(w) * divisions), splits into integer
    parts b and fractions f; m = sum(f) is an integer. m = 0: x is the lattice point b. m = 1:
    x lies in the simplex with corners b + e_j, weights f_j; m = 2 (3 objectives): in the one
    with corners b + 1 - e_j, weights 1 - f_j (Freudenthal's triangulation). Entries are nested
    lists, indexed by the first N - 1 coordinates (the last is implied)."""
    count = steering.num_objectives
    divisions = CALIBRATED_LATTICE[count]
    entries = [steering.map_preference(w).tolist() for w in lattice_preferences(count)]
    index = "".join(f"[ric_corner.at[{k}]]" for k in range(count - 1))
    default_desired = steering.map_preference(default).tolist()
    return f"""\
{{#- Desired rewards: as given, or a preference mapped by the model's calibration
    (ric.core.calibration) as ric computed it at the {len(entries)} preferences of a lattice of
    step 1/{divisions}, interpolated linearly between them (ric.export.chat_template). -#}}
{{%- set ric_table = {jinja_literal(_nested(entries, count, divisions))} -%}}
{{%- if ric.param == "rewards" -%}}
  {{%- set ric.desired = ric.values -%}}
{{%- elif ric.values == {jinja_literal(default)} -%}}
  {{%- set ric.desired = {jinja_literal(default_desired)} -%}}
{{%- else -%}}
  {{%- set ric_cell = namespace(base=[], fraction=[], up=0.0, desired=none) -%}}
  {{%- for w in ric.values -%}}
    {{%- set x = w / ric_check.total * {divisions} -%}}
    {{%- set x = x|round if (x - x|round)|abs < {LATTICE_SNAP!r} else x -%}}
    {{%- set low = x|round(0, "floor")|int -%}}
    {{%- set ric_cell.base = ric_cell.base + [low] -%}}
    {{%- set ric_cell.fraction = ric_cell.fraction + [x - low] -%}}
    {{%- set ric_cell.up = ric_cell.up + (x - low) -%}}
  {{%- endfor -%}}
  {{%- set ric_up = ric_cell.up|round|int -%}}
  {{%- for corner in range({count} if ric_up else 1) -%}}
    {{%- if ric_up == 0 -%}}
      {{%- set weight, shift, step = 1.0, 0, 0 -%}}
    {{%- elif ric_up == 1 -%}}
      {{%- set weight, shift, step = ric_cell.fraction[corner], 0, 1 -%}}
    {{%- else -%}}
      {{%- set weight, shift, step = 1.0 - ric_cell.fraction[corner], 1, -1 -%}}
    {{%- endif -%}}
    {{%- set ric_corner = namespace(at=[]) -%}}
    {{%- for low in ric_cell.base -%}}
      {{%- set moved = step if loop.index0 == corner else 0 -%}}
      {{%- set ric_corner.at = ric_corner.at + [low + shift + moved] -%}}
    {{%- endfor -%}}
    {{%- if weight > 0 -%}}
      {{%- set ric_mix = namespace(values=[]) -%}}
      {{%- for value in ric_table{index} -%}}
        {{%- set part = weight * value -%}}
        {{%- set ric_mix.values = ric_mix.values + [part if ric_cell.desired is none
                                                    else ric_cell.desired[loop.index0] + part] -%}}
      {{%- endfor -%}}
      {{%- set ric_cell.desired = ric_mix.values -%}}
    {{%- endif -%}}
  {{%- endfor -%}}
  {{%- set ric.desired = ric_cell.desired -%}}
{{%- endif -%}}
"""


def _nested(entries: list[Any], count: int, divisions: int) -> Any:
    """The table in lattice order (``lattice_preferences``) as nested lists, one level per
    coordinate but the last: ``table[v_1]...[v_{N-1}]`` is the entry of the lattice point v."""
    if count == 1:
        return entries[0]
    rows, start = [], 0
    for first in range(divisions + 1):
        size = math.comb(divisions - first + count - 2, count - 2)
        rows.append(_nested(entries[start : start + size], count - 1, divisions - first))
        start += size
    return rows


def _values_block(steering: Steering) -> str:
    """``ric.core.rewards_block`` in Jinja: ``ric.texts``, each value written as
    ``format_reward`` writes it (one decimal, ``-0.0`` as ``0.0``) after its marker."""
    template = steering.template
    markers = [template.render_marker(i) for i in range(1, steering.num_objectives + 1)]
    return f"""\
{{#- The reward block (ric.core.template.rewards_block). -#}}
{{%- set ric_markers = {jinja_literal(markers)} -%}}
{{%- for value in ric.desired -%}}
  {{%- set written = '%.1f'|format(value) -%}}
  {{%- if written == '-0.0' -%}}
    {{%- set written = '0.0' -%}}
  {{%- endif -%}}
  {{%- set ric.texts = ric.texts + [ric_markers[loop.index0] ~ ' ' ~ written] -%}}
{{%- endfor -%}}
"""


def _prompt_block(steering: Steering, bos_token: bool) -> str:
    """``ric.core.build_prompt`` in Jinja: the reward block into the template's text."""
    template = steering.template
    text = f"{jinja_literal(template.head)} ~ ric.prompt ~ {jinja_literal(template.middle)}"
    text += f" ~ ric.texts|join(' ') ~ {jinja_literal(template.response_header)}"
    return f"""\
{{#- The conditioned prompt (ric.core.build_prompt). -#}}
{"{{- bos_token -}}" if bos_token else ""}\
{{{{- {text} -}}}}"""


def _system_block(steering: Steering, bos_token: bool) -> str:
    """Chat format: ric's system turn (``template.system`` with the reward block) ahead of
    ``ric.messages``, a chat's own leading system message merged after it (a blank line
    between), set as ``messages`` for the model's own template, which follows. The last tag
    strips no whitespace after it, so the original template's text starts as it was written."""
    head, tail = steering.template.system.split("{rewards}")
    return f"""\
{{#- The system turn, then the model's own chat template (ric.core.build_chat_messages). -#}}
{{%- set ric.system = {jinja_literal(head)} ~ ric.texts|join(' ') ~ {jinja_literal(tail)} -%}}
{{%- if ric.messages[0]["role"] == "system" -%}}
  {{%- set ric.system = ric.system ~ "\\n\\n" ~ ric.messages[0]["content"] -%}}
  {{%- set ric.messages = ric.messages[1:] -%}}
{{%- endif -%}}
{{%- set add_generation_prompt = true -%}}
{"{{- bos_token -}}" if bos_token else ""}\
{{%- set messages = [{{"role": "system", "content": ric.system}}] + ric.messages %}}"""


def _indent(block: str) -> str:
    return "".join(f"  {line}" for line in block.splitlines(keepends=True))
