"""The `ric` command line: each subcommand is a thin call into one library function.

This module builds the parser and runs ``main`` (the `ric` entry point); ``table`` declares how
a command and its flags are written, ``text_table`` and ``image`` hold the commands, ``text``
and ``image`` their ``run_*`` functions, and ``resolve`` the one rule by which a command's
config is assembled from defaults, a trained run, the --config file, --set and flags.

Errors a user can fix (bad values, missing files or columns) are printed as one line,
``ric: error: ...``, with exit status 2 and no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ric import parallel
from ric.cli.image import IMAGE_COMMANDS
from ric.cli.resolve import resolve_config
from ric.cli.table import Command, add_commands
from ric.cli.text_table import COMMANDS

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ric", description="Multi-objective alignment with Rewards-in-Context (RiC)."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_commands(subparsers, COMMANDS)
    image = subparsers.add_parser(
        "image",
        help="text-to-image RiC: label, train, generate, evaluate, demo",
        description="Rewards-in-Context for diffusion models (docs/design.md §1.7), on `ric image` "
        "configs (`ric image config --fields`).",
    )
    add_commands(image.add_subparsers(dest="image_command", required=True), IMAGE_COMMANDS)
    return parser


def chosen_command(args: argparse.Namespace) -> Command:
    if args.command == "image":
        return IMAGE_COMMANDS[args.image_command]
    return COMMANDS[args.command]


def main(argv: Sequence[str] | None = None) -> int:
    # User rewards ("my_rewards:score") resolve from the working directory, as `python -m` would.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    args = build_parser().parse_args(argv)
    command = chosen_command(args)
    if parallel.launched() and command.one_process:
        if parallel.is_main_process():  # one message, not one per process
            name = " ".join(filter(None, (args.command, getattr(args, "image_command", None))))
            print(
                f"ric: error: `ric {name}` runs as one process, but it was launched as "
                f"{parallel.num_processes()}; run it without accelerate launch or torchrun",
                file=sys.stderr,
            )
        parallel.wait_for_everyone()  # a first exit gets the others killed: let the main say why
        return 2
    if parallel.launched() and not parallel.is_main_process():
        # One of several processes (accelerate launch): the main one prints and shows progress.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the rest of the process)
        args.no_progress = True
    try:
        config = resolve_config(command, args) if command.builds_config else None
        command.run(args, config)
    except (ValueError, OSError) as error:  # OSError: a full disk, no network, no permission
        print(f"ric: error: {' '.join(str(error).split())}", file=sys.stderr)  # one line
        return 2
    return 0
