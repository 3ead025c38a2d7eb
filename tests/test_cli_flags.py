"""Every flag that names a config key sets that key to its value, typed as argparse parsed it,
and the sources of a command's config are laid in one order (``ric.cli.resolve``)."""

import dataclasses
import re
from functools import reduce

import pytest

from ric.cli import build_parser
from ric.cli.image import IMAGE_COMMANDS
from ric.cli.resolve import resolve_config
from ric.cli.table import Flag, parse_floats
from ric.cli.text_table import COMMANDS

FLAGS = [
    (prefix, name, command, flag)
    for prefix, commands in (((), COMMANDS), (("image",), IMAGE_COMMANDS))
    for name, command in commands.items()
    for flag in command.flags
    if flag.key
]


def sample(flag: Flag) -> list[str]:
    """Command-line words that give ``flag`` a valid value."""
    if flag.action == "store_true":
        return [flag.name]
    if flag.choices:
        value = flag.choices[-1]
    elif flag.type is int:
        value = "3"
    elif flag.type is float:
        value = "2.5"
    elif flag.type is parse_floats:
        value = "1.5,2"
    else:
        value = "relevance" if flag.action == "append" else "somewhere/else"
    return [value] if not flag.name.startswith("--") else [flag.name, value]


def resolved(words: list[str]):
    args = build_parser().parse_args(words)
    commands = IMAGE_COMMANDS if args.command == "image" else COMMANDS
    command = commands[getattr(args, "image_command", None) or args.command]
    return args, resolve_config(command, args)


@pytest.mark.parametrize(
    ("prefix", "name", "command", "flag"),
    FLAGS,
    ids=[" ".join([*prefix, name, flag.name]) for prefix, name, _, flag in FLAGS],
)
def test_each_flag_reaches_its_config_key_with_its_type(prefix, name, command, flag):
    others = [
        word
        for other in command.flags
        if other is not flag and (other.required or not other.name.startswith("--"))
        for word in sample(other)
    ]
    args, config = resolved([*prefix, name, *others, *sample(flag)])
    expected = flag.config_value(args)
    value = reduce(getattr, flag.key.split("."), config)
    if isinstance(value, list) and dataclasses.is_dataclass(value[0]):
        value = [dataclasses.asdict(item) for item in value]  # --reward: a list of sections
        expected = [{**item, "name": "", "options": {}} for item in expected]
    assert value == expected and type(value) is type(expected)


def test_iterations_is_an_int_and_p_inf_a_float():
    _, config = resolved(["online", "--iterations", "3"])
    assert config.online.iterations == 3 and type(config.online.iterations) is int
    _, config = resolved(["map", "--preference", "0.5,0.5", "--p", "inf"])
    assert config.mapping.p == float("inf")


def test_file_then_set_then_flags(tmp_path):
    """defaults < --config file < --set < flags (a trained run's settings, below the file, are
    tested with real runs in test_generate_evaluate_cli)."""
    file = tmp_path / "config.yaml"
    file.write_text("online:\n  iterations: 4\n  samples: 5\n  shard_size: 7\n")
    words = ["online", "--config", str(file), "--set", "online.samples=6", "--iterations", "3"]
    _, config = resolved([*words, "--set", "online.iterations=9"])
    assert (config.online.iterations, config.online.samples) == (3, 6)  # the flag, then --set
    assert config.online.shard_size == 7 and config.online.mors is True  # the file, a default


@pytest.mark.parametrize(
    "command", ["generate", "evaluate", "online", "serve", "export", "export-lora"]
)
def test_model_help_names_the_shipped_run(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    shown = re.sub(r"-\s+", "-", capsys.readouterr().out)  # argparse may wrap at a hyphen
    assert "embedded-ric" in shown
