"""Typed YAML config: defaults, overrides, unknown keys and bad types named, shipped configs."""

from pathlib import Path

import pytest

from ric.config import ModelConfig, RicConfig, dump_config, iter_field_docs, load_config, placed
from ric.recipes.demo import demo_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_defaults_without_file():
    config = load_config()
    assert config == RicConfig()
    assert config.mapping.method == "p_inf" and config.mapping.normal_samples == 50_000


def test_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  path: x.jsonl\nrewards:\n  - type: verbosity\n    name: length\n")
    config = load_config(path, ["label.shard_size=7", "mapping.p=inf", "mapping.lam=[1, 2]"])
    assert config.data.path == "x.jsonl"
    assert config.rewards[0].resolved_name == "length"
    assert config.label.shard_size == 7
    assert config.mapping.p == float("inf") and config.mapping.lam == [1.0, 2.0]


def test_exponent_floats_without_a_dot():
    # YAML 1.1 reads 1e-5 as a string; users write learning rates that way.
    config = load_config(None, ["train.learning_rate=5e-4", "online.learning_rate=1E-5"])
    assert config.train.learning_rate == 5e-4 and config.online.learning_rate == 1e-5


def test_resolved_config_round_trips(tmp_path):
    config = load_config(None, ["rewards=[{type: relevance, options: {batch_size: 8}}]"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("label.shardsize=3", "unknown config key label.shardsize; valid keys in label:"),
        ("colour=red", "unknown config key colour"),
        ("label.shard_size=abc", "label.shard_size: expected int, got 'abc'"),
        ("label.shard_size=0", "label.shard_size must be >= 1"),
        ("rewards=[{type: x, nam: y}]", "rewards[0].nam"),
        ("mapping.method=pinf", "mapping.method: 'pinf' is not valid"),
        ("data.format=xml", "data.format: 'xml' is not valid"),
        ("mapping.ordered=maybe", "mapping.ordered: expected bool"),
        ("label=3", "label: expected a mapping"),
        ("train.learning_rate=1e-", "train.learning_rate: expected float, got '1e-'"),
        ("online.targets=corner", "online.targets: 'corner' is not valid; choose one of front"),
        ("online.original_fraction=-1", "online.original_fraction must be >= 0"),
        ("lora.top_layers=-2", "lora.top_layers must be >= 0"),
        ("train.frozen_cache_gb=-1", "train.frozen_cache_gb must be >= 0, got -1.0"),
        ("evaluate.resamples=-1", "evaluate.resamples must be >= 0 (0: off), got -1"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ValueError) as error:
        load_config(None, [override])
    assert message in str(error.value)


def test_missing_file_named(tmp_path):
    with pytest.raises(ValueError, match=r"nope\.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_every_field_documented():
    rows = list(iter_field_docs(RicConfig))
    assert len(rows) > 20
    for key, _type, _default, doc in rows:
        assert doc, f"{key} has no doc"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load(path, tmp_path):
    if path.name.startswith("compare-"):  # laid over the embedded task by `ric compare`
        assert demo_config(tmp_path, layer=path) != demo_config(tmp_path), (
            f"{path.name} sets nothing"
        )
        return
    config = load_config(path)
    assert config != RicConfig(), f"{path.name} sets nothing"
    # Labeling configs name their rewards; later stages take them from the model's stats.
    assert config.rewards or config.online.model, f"{path.name} names no rewards and no model"


def test_the_instruct_config_conditions_in_the_chat_format():
    # Loading Qwen3 needs a network (the user's); the config itself is checked here.
    config = load_config(Path(__file__).parent.parent / "configs" / "instruct" / "qwen3-chat.yaml")
    template = config.template.prompt_template()
    assert template.is_chat and "{rewards}" in template.system
    assert config.model.source.startswith("Qwen/Qwen3")
    assert config.lora.enabled and config.rewards and config.train.data


def test_configs_are_shipped():
    assert CONFIGS, "configs/ holds no YAML file"


def test_a_base_file_is_read_first_and_laid_under(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "train: {max_steps: 10, batch_size: 4}\nrewards: [{type: verbosity}]\n"
    )
    (tmp_path / "exp.yaml").write_text(
        "base: base.yaml\ntrain: {max_steps: 20}\nrewards: [{type: positivity}]\n"
    )
    config = load_config(tmp_path / "exp.yaml", ["train.learning_rate=0.1"])
    assert (config.train.max_steps, config.train.batch_size) == (20, 4)  # merged per key
    assert [reward.type for reward in config.rewards] == ["positivity"]  # lists are replaced
    assert config.train.learning_rate == 0.1
    (tmp_path / "base.yaml").write_text("base: exp.yaml\n")
    with pytest.raises(ValueError, match="is its own base"):
        load_config(tmp_path / "exp.yaml")
    (tmp_path / "exp.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ValueError, match=r"missing.yaml' does not exist"):
        load_config(tmp_path / "exp.yaml")


ACCELERATE = Path(__file__).parent.parent / "configs" / "accelerate"


@pytest.mark.parametrize(
    ("name", "engine", "zero_stage"),
    [
        ("ddp.yaml", "MULTI_GPU", None),
        ("fsdp.yaml", "FSDP", None),
        ("deepspeed-zero2.yaml", "DEEPSPEED", 2),
        ("deepspeed-zero3.yaml", "DEEPSPEED", 3),
    ],
)
def test_accelerate_configs_load_with_accelerate(name, engine, zero_stage):
    """What `accelerate launch --config_file` reads: accelerate's own loader and types."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ACCELERATE / name))
    assert config.distributed_type.value == engine
    assert config.num_machines == 1 and config.num_processes > 1 and not config.use_cpu
    if zero_stage is not None:
        assert config.deepspeed_config["zero_stage"] == zero_stage
        assert config.deepspeed_config["gradient_accumulation_steps"] == 1
    if engine == "FSDP":
        assert config.fsdp_config["fsdp_version"] == 2


def test_every_accelerate_config_is_tested():
    names = {path.name for path in ACCELERATE.glob("*.yaml")}
    assert names == {"ddp.yaml", "fsdp.yaml", "deepspeed-zero2.yaml", "deepspeed-zero3.yaml"}


def test_placed_replaces_only_what_is_given():
    recorded = ModelConfig(source="tiny", dtype="bfloat16", device="cpu")
    assert placed(recorded, None, None) == recorded
    assert placed(recorded, "float32", None) == ModelConfig(source="tiny", device="cpu")
    assert placed(recorded, None, "meta").device == "meta"
    assert placed(recorded, None, "meta").dtype == "bfloat16"
    with pytest.raises(ValueError, match=r"model\.dtype"):
        placed(recorded, "float8", None)
