"""`ric export` of a calibrated run (`ric calibrate`): its chat template holds the calibrated
mapping as a table of ric's desired rewards over a lattice of preferences, interpolated linearly
between lattice points (ric.export.chat_template).

What is checked, and what is measured: at every lattice preference and at the default the
template writes ric's prompt exactly, text and token ids; between lattice points its desired
rewards are the linear interpolation of ric's at the lattice points around (to the last bits),
and differ from ric's own by the interpolation error, bounded here for the calibrations tested
(the bounds are what was measured, with a margin). The one-decimal prompt then differs from
ric's only where ric's value lies within that error of a rounding boundary. Four objectives and
``rewards_obtained`` are refused with a reason."""

import json
import math
import re
import shutil

import jinja2
import numpy as np
import pytest
import yaml
from helpers import TINY_LORA, calibrated_copy, overrides
from jinja2.sandbox import ImmutableSandboxedEnvironment
from transformers import AutoTokenizer

from ric.cli import main
from ric.config import MappingConfig
from ric.core import (
    DEFAULT_TEMPLATE,
    Calibration,
    PromptTemplate,
    design_levels,
    normal_reward_range,
)
from ric.export import export_model
from ric.export.chat_template import (
    CALIBRATED_LATTICE,
    lattice_preferences,
    steering_chat_template,
)
from ric.models.tiny import build_tiny, build_tiny_tokenizer
from ric.runs import load_trained
from ric.steering import Steering

QUESTION = "What is a fox?"
MESSAGES = [{"role": "user", "content": QUESTION}]
# The values block writes one decimal; the same template writing every bit shows the template's
# own desired rewards, unrounded (`value|string` is Python's repr of the float).
ONE_DECIMAL = "'%.1f'|format(value)"


@pytest.fixture(scope="module")
def exported(tiny_calibrated, tmp_path_factory):
    """(the calibrated run, ric's Steering of it, the export's folder): a copy of the tiny
    calibrated run with a known, smooth calibration (each objective obtains half of what it is
    asked), exported merged."""
    root = tmp_path_factory.mktemp("calibrated-export")
    run = calibrated_copy(tiny_calibrated, root / "cal")
    steering = Steering.for_run(load_trained(run))
    return run, steering, export_model([run], root / "hf").output


def raise_template_error(message):
    raise jinja2.TemplateError(message)


def compiled(chat_template, full=False):
    """The template as vLLM and SGLang compile it; ``full``: writing values unrounded."""
    environment = ImmutableSandboxedEnvironment()
    environment.globals["raise_exception"] = raise_template_error
    if full:
        assert chat_template.count(ONE_DECIMAL) == 1
        chat_template = chat_template.replace(ONE_DECIMAL, "value|string")
    return environment.from_string(chat_template)


def template_desired(full_template, **request):
    """The desired rewards the template computes for ``request``, every bit."""
    text = full_template.render(messages=MESSAGES, **request)
    return np.array([float(value) for value in re.findall(r"<R\d+> (\S+)", text)])


def interpolated(steering, w):
    """The interpolation the template's docstring states: ric's desired rewards at the corners
    of the lattice simplex holding ``w`` (Freudenthal's triangulation), weighted linearly."""
    count = steering.num_objectives
    divisions = CALIBRATED_LATTICE[count]
    x = np.asarray(w) / sum(w) * divisions
    x = np.where(np.abs(x - np.round(x)) < 1e-9, np.round(x), x)
    base = np.floor(x).astype(int)
    fraction = x - base
    up = round(float(fraction.sum()))
    if up == 0:
        return steering.map_preference(base / divisions)
    corners = np.eye(count, dtype=int) if up == 1 else 1 - np.eye(count, dtype=int)
    weights = fraction if up == 1 else 1 - fraction
    return sum(
        weight * steering.map_preference((base + corner) / divisions)
        for weight, corner in zip(weights, corners, strict=True)
        if weight > 0
    )


def compare_between(steering, chat_template, samples, seed):
    """Random preferences: check the template interpolates as stated, and return the largest
    difference from ric's desired rewards and the share of prompts that differ from ric's."""
    full, short = compiled(chat_template, full=True), compiled(chat_template)
    rng = np.random.default_rng(seed)
    largest, differ = 0.0, 0
    for _ in range(samples):
        w = rng.dirichlet(np.ones(steering.num_objectives)).tolist()
        got, exact = template_desired(full, preference=w), steering.map_preference(w)
        np.testing.assert_allclose(got, interpolated(steering, w), rtol=0, atol=1e-12)
        written = short.render(messages=MESSAGES, preference=w)
        assert written == steering.prompts([QUESTION], got)[0]  # it writes what it computed
        largest = max(largest, float(np.max(np.abs(got - exact))))
        differ += written != steering.prompts([QUESTION], exact)[0]
    return largest, differ / samples


# --- an exported calibrated run: 2 objectives ---------------------------------------------------


def test_at_lattice_preferences_the_export_writes_rics_prompt(exported):
    _, steering, folder = exported
    tokenizer = AutoTokenizer.from_pretrained(folder)
    lattice = lattice_preferences(2)
    assert len(lattice) == 1001 and lattice[370] == [0.37, 0.63]  # as people type them
    mismatches = []
    for i, preference in enumerate(lattice):
        expected = steering.prompts([QUESTION], steering.desired(preference=preference))[0]
        kwargs = {"preference": preference, "add_generation_prompt": True}
        text = tokenizer.apply_chat_template(MESSAGES, tokenize=False, **kwargs)
        if text != expected:
            mismatches.append((preference, text, expected))
        if i % 10 == 0:  # token ids at every multiple of 0.01
            ids = tokenizer.apply_chat_template(MESSAGES, return_dict=False, **kwargs)
            assert ids == tokenizer(expected)["input_ids"], preference
    assert not mismatches, mismatches[:3]
    for kwargs, request in [
        ({}, {"preference": [0.5, 0.5]}),  # the default
        ({"preference": {"verbosity": 0.25, "positivity": 0.75}}, None),
        ({"preference": {"positivity": 1.0}}, None),
        ({"rewards": [0.5, -1.0]}, None),  # explicit rewards, as before
    ]:
        desired = steering.desired(**(request or kwargs))
        expected = steering.prompts([QUESTION], desired)[0]
        assert tokenizer.apply_chat_template(MESSAGES, tokenize=False, **kwargs) == expected


def test_between_lattice_preferences_it_interpolates_within_the_stated_error(exported):
    _, steering, folder = exported
    chat_template = AutoTokenizer.from_pretrained(folder).chat_template
    largest, differ = compare_between(steering, chat_template, samples=1000, seed=3)
    # Measured: 4.3e-06 sd at most, and 1 prompt in 2,000 differs (by 0.1 in one value).
    assert largest < 1e-5 and differ <= 0.005, (largest, differ)


def test_the_export_records_and_explains_the_calibration(exported):
    _, steering, folder = exported
    record = json.loads((folder / "ric_steering.json").read_text())
    calibration = steering.fitted()
    assert record["mapping"]["method"] == "calibrated"
    assert record["calibration"]["fit"] == calibration.to_json()
    assert record["calibration"]["reach_low"] == steering.describe()["reach_low"]
    assert record["calibration"]["reach_high"] == steering.describe()["reach_high"]
    assert record["calibration"]["chat_template_table"]["divisions"] == 1000
    assert record["calibration"]["chat_template_table"]["preferences"] == 1001
    assert "ric serve" in record["chat_template_kwargs"]["rewards_obtained"]
    card = " ".join((folder / "README.md").read_text().split())  # lines unwrapped
    lowest, highest = calibration.reach
    for text in [
        "**calibrated** steering",
        f"| `verbosity` | {lowest[0]:+.2f} to {highest[0]:+.2f} |",
        "**reach**",
        "1,001 preferences of a lattice of step 1/1000",
        "`ric map --model RUN --rewards-obtained ...`",
        steering.prompts([QUESTION], steering.map_preference([0.5, 0.5]))[0].strip(),
    ]:
        assert text in card, text


def test_rewards_obtained_is_refused_with_where_to_get_it(exported):
    _, steering, folder = exported
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with pytest.raises(jinja2.TemplateError) as refused:
        tokenizer.apply_chat_template(MESSAGES, tokenize=False, rewards_obtained=[0.1, 0.2])
    assert "rewards_obtained needs the calibration's solver" in str(refused.value)
    assert "`ric serve`" in str(refused.value) and "--rewards-obtained" in str(refused.value)
    steering.desired(rewards_obtained=[0.1, 0.2])  # which ric itself answers
    # A model without a calibration is told so, rather than answered at its default.
    plain = Steering(("a", "b"), MappingConfig(), np.array([-2.0, -2.0]), np.array([2.0, 2.0]))
    with pytest.raises(jinja2.TemplateError, match="needs a calibrated model"):
        compiled(steering_chat_template(plain, [0.5, 0.5])).render(
            messages=MESSAGES, rewards_obtained=[0.1, 0.2]
        )


def test_a_soup_steered_by_a_calibration_is_refused(exported, tiny_offline, tmp_path):
    run, _, _ = exported
    with pytest.raises(ValueError, match="steers with its calibration"):
        export_model([run, tiny_offline / "train"], tmp_path / "soup")
    assert not (tmp_path / "soup").exists()


@pytest.mark.slow
def test_an_adapter_export_takes_the_weights_of_the_calibrated_run(
    labeled, tiny_calibrated, tmp_path
):
    """A calibrated run holds no weights: ``--adapter`` factors those of the run it uses (here a
    LoRA run on a saved base, which an adapter can name)."""
    model, tokenizer = build_tiny()
    base = tmp_path / "tiny-base"
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    trained = tmp_path / "train"
    argv = ["train", "--data", str(labeled), "--output", str(trained), "--model", str(base)]
    assert main([*argv, "--no-progress", *overrides("train.max_steps=2", *TINY_LORA)]) == 0
    run = calibrated_copy(tiny_calibrated, tmp_path / "cal")
    record = json.loads((run / "calibration.json").read_text())
    (run / "calibration.json").write_text(json.dumps(record | {"model": "../train"}))
    shutil.copyfile(trained / "stats.json", run / "stats.json")
    config = yaml.safe_load((trained / "config.yaml").read_text())
    config["mapping"]["method"] = "calibrated"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    result = export_model([run], tmp_path / "hf", adapter=True)
    assert result.kind == "adapter" and result.rank == 4  # the LoRA run's own
    assert "adapter_model.safetensors" in result.files
    steering = json.loads((result.output / "ric_steering.json").read_text())
    assert steering["calibration"]["fit"] == record["calibration"]


# --- hand-built calibrated steerings: 3 objectives, 4, the checks -------------------------------


def calibrated_steering(count, template=DEFAULT_TEMPLATE, names=None):
    """A steering over ``count`` objectives whose calibration obtains half of what it is asked
    (3 levels over the paper's normal range), no side effects: the helper's calibrated_copy,
    for any number of objectives."""
    names = names or tuple(f"objective {i}" for i in range(1, count + 1))
    low, high = normal_reward_range(count, samples=50_000, seed=0)
    levels = design_levels(low, high, 3)
    none = np.zeros((count, count))
    calibration = Calibration(names, levels, levels * 0.5, none, levels.mean(axis=1), 9)
    mapping = MappingConfig(method="calibrated")
    return Steering(names, mapping, low, high, template, calibration=calibration)


def test_three_objectives_exact_on_the_lattice_and_interpolated_between():
    steering = calibrated_steering(3)
    chat_template = steering_chat_template(steering, [0.2, 0.3, 0.5])
    short = compiled(chat_template)
    lattice = lattice_preferences(3)
    assert len(lattice) == 1891 and CALIBRATED_LATTICE[3] == 60
    typed = [[a / 20, b / 20, (20 - a - b) / 20] for a in range(21) for b in range(21 - a)]
    for preference in [*typed, [1 / 3, 1 / 3, 1 / 3], [0.1, 0.2, 0.7], *lattice[::97]]:
        expected = steering.prompts([QUESTION], steering.map_preference(preference))[0]
        assert short.render(messages=MESSAGES, preference=preference) == expected, preference
    largest, differ = compare_between(steering, chat_template, samples=400, seed=4)
    # Measured over 2,000: 0.0020 sd at most, 1.85 % of prompts differ (by 0.1 in one value).
    assert largest < 0.003 and differ <= 0.04, (largest, differ)


def test_the_default_preference_is_exact_off_the_lattice():
    steering = calibrated_steering(3)
    default = [0.33, 0.33, 0.34]  # not a multiple of 1/60
    short = compiled(steering_chat_template(steering, default))
    expected = steering.prompts([QUESTION], steering.map_preference(default))[0]
    assert short.render(messages=MESSAGES) == expected
    assert short.render(messages=MESSAGES, preference=default) == expected


def test_the_chat_format_looks_the_table_up_too():
    chatml = (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
        "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = chatml
    template = PromptTemplate(format="chat", system="Rewards: {rewards}")
    steering = calibrated_steering(2, template=template).with_tokenizer(tokenizer)
    chat_template = steering_chat_template(steering, [0.5, 0.5], original=chatml)
    for preference, desired in [
        ([0.3, 0.7], steering.map_preference([0.3, 0.7])),  # on the lattice: ric's
        ([0.31415, 0.68585], interpolated(steering, [0.31415, 0.68585])),  # between
    ]:
        text = tokenizer.apply_chat_template(
            MESSAGES, chat_template=chat_template, tokenize=False, preference=preference
        )
        assert text == steering.chat_prompts([MESSAGES], desired)[0], preference
        assert text.startswith("<|im_start|>system\nRewards: <R1> ")


def test_four_objectives_are_refused_with_what_to_use_instead():
    steering = calibrated_steering(4)
    with pytest.raises(ValueError) as refused:
        steering_chat_template(steering, [0.25] * 4)
    message = str(refused.value)
    assert "at most 3 objectives" in message and "this model has 4" in message
    assert "`ric serve`" in message and "`ric map --model RUN --preference ...`" in message


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"preference": [0.5, 0.3, 0.2]},
        {"preference": [-0.5, 1.5]},
        {"preference": [math.nan, 0.5]},
        {"preference": [0.5, 0.6]},
        {"preference": {"speed": 1.0}},
        {"rewards": [1.0, -math.inf]},
    ],
)
def test_a_bad_request_is_named_as_steering_names_it(request_kwargs):
    steering = calibrated_steering(2, names=("relevance", "conciseness"))
    with pytest.raises(ValueError) as python_error:
        steering.desired(**request_kwargs)
    with pytest.raises(jinja2.TemplateError) as template_error:
        compiled(steering_chat_template(steering, [0.5, 0.5])).render(
            messages=MESSAGES, **request_kwargs
        )
    assert str(template_error.value) == str(python_error.value)
