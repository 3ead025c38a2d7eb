"""How a command is declared and turned into argparse: ``Flag``, ``Command``, the flags several
commands share, and ``add_commands``.

Each command is one ``Command`` entry of a table (``ric.cli.text_table.COMMANDS``,
``ric.cli.image.IMAGE_COMMANDS``): its flags, the config key each flag sets, and the function
it runs. The help a user reads and the config key a flag sets are written once, side by side.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ric.config import RicConfig


def parse_floats(text: str) -> list[float]:
    """'0.2,0.8' -> [0.2, 0.8]; 'inf' is accepted; a bad item is named in the error."""
    values = []
    for item in text.split(","):
        try:
            values.append(float(item))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{item.strip()!r} in {text!r} is not a number; expected comma-separated "
                "numbers like 0.2,0.8"
            ) from None
    return values


@dataclass(frozen=True)
class Flag:
    """One command-line flag. ``key``: the config key its value sets (None: the command reads
    it itself); ``to_config`` turns the flag's value into that key's value."""

    name: str
    help: str
    key: str | None = None
    type: Callable[[str], Any] | None = None
    action: str | None = None  # "store_true" or "append"
    choices: Sequence[str] | None = None
    required: bool = False
    default: Any = None
    to_config: Callable[[Any], Any] | None = None

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        options: dict[str, Any] = {"help": self.help}
        if self.action:
            options["action"] = self.action
        else:
            options |= {"type": self.type, "choices": self.choices, "default": self.default}
        if self.name.startswith("--"):
            options["required"] = self.required
        parser.add_argument(self.name, **options)

    def config_value(self, args: argparse.Namespace) -> Any:
        """The value the flag gives its config key, typed as argparse parsed it (``--p inf``
        is the float inf), or None when the flag was not used."""
        value = getattr(args, self.name.lstrip("-").replace("-", "_"))
        if value is None or value is False:
            return None
        return self.to_config(value) if self.to_config else value


@dataclass(frozen=True)
class Command:
    """One subcommand: its flags, the common options it takes, and the function it calls."""

    run: Callable[[argparse.Namespace, Any], None]
    help: str
    description: str | None = None
    flags: tuple[Flag, ...] = ()
    config_file: bool = True  # --config FILE
    overrides: bool = True  # --set KEY=VALUE
    progress: bool = True  # --no-progress
    builds_config: bool = True  # False: the command lays --set over its own task
    # The trained run whose recorded settings govern the command: a config key, or "--model".
    trained_run: str | None = None
    config_class: type = RicConfig  # ImageRicConfig for `ric image ...`
    # The sections a trained run's recording governs (None: the text runs' RUN_SETTINGS).
    run_sections: tuple[str, ...] | None = None
    # Refuses `accelerate launch`/`torchrun` with several processes: it would serve, or do all
    # the work and write, once per process.
    one_process: bool = False


# What --model accepts where a command uses a trained run: a run folder, or a shipped run's name.
TRAINED_RUN = (
    "a trained run (a `ric train`, `ric online` or `ric baseline` output) or embedded-ric, "
    "the shipped model"
)
RIC_RUN = "a RiC run (a `ric train` or `ric online` output) or embedded-ric, the shipped model"

OUTPUT = Flag("--output", "output directory")
NO_PROGRESS = Flag("--no-progress", "hide progress bars", action="store_true")
SMOKE = Flag("--smoke", "tiny in-code model and a data slice (< 1 minute)", action="store_true")
MODEL_SOURCE = Flag("--model", "smollm2, tiny, a local directory or a hub id", "model.source")
RESUME = Flag("--resume", "continue from the newest checkpoint in --output", action="store_true")
PREFERENCE = Flag("--preference", "e.g. 0.2,0.8 (mapped)", type=parse_floats)
EXPLICIT_REWARDS = Flag(
    "--rewards", "explicit desired rewards, standardized units", type=parse_floats
)
REWARDS_OBTAINED = Flag(
    "--rewards-obtained",
    "rewards to obtain, standardized (calibrated models): the desired rewards the model's "
    "calibration predicts produce them",
    type=parse_floats,
)
FIELDS = Flag("--fields", "list every field and its doc", action="store_true")


def add_commands(subparsers: Any, commands: dict[str, Command]) -> None:
    """One argparse subparser per command, with its flags and the common options it takes."""
    for name, command in commands.items():
        sub = subparsers.add_parser(name, help=command.help, description=command.description)
        for flag in command.flags:
            flag.add_to(sub)
        if command.config_file:
            sub.add_argument("--config", help="YAML config file (defaults apply where silent)")
        if command.progress:
            NO_PROGRESS.add_to(sub)
        if command.overrides:
            sub.add_argument(
                "--set",
                dest="overrides",
                action="append",
                default=[],
                metavar="KEY=VALUE",
                help="override a config key, e.g. --set label.shard_size=256 (repeatable)",
            )
