"""Where a command's config comes from: ``resolve_config``, the one rule every command follows."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ric.cli.table import Command
from ric.config import config_from_values, flatten, read_values, set_value


def resolve_config(command: Command, args: argparse.Namespace) -> Any:
    """The config of ``command`` (``command.config_class``), each source laid over the ones
    before it:

        defaults < a trained run's recorded settings < --config file < --set < flags

    * the defaults of every field;
    * for a command that uses a trained run (``command.trained_run``: --model, or the config
      key naming it), the settings that run recorded (``ric.runs.RUN_SETTINGS``: mapping,
      generation, train.max_length, model.dtype, model.device; or ``command.run_sections``),
      because a run is read the way it was trained unless the user says otherwise;
    * the --config file, then each --set KEY=VALUE in order;
    * the command's flags last: a flag names one key outright. Their values go in as argparse
      typed them (``--p inf`` is the float inf), never written out as text and parsed back.

    The run's settings and the user's that replace them are printed on stderr, so that neither
    applies silently. The run is read from the user's values before any config is built: a
    missing or invalid run is left for the command to explain when it loads it.
    """
    values = read_values(getattr(args, "config", None), getattr(args, "overrides", ()))
    for flag in command.flags:
        if flag.key and (value := flag.config_value(args)) is not None:
            set_value(values, flag.key, value)
    cls = command.config_class
    if command.trained_run is None:
        return config_from_values(values, cls=cls)
    from ric.runs import RUN_SETTINGS, layered_config

    if command.trained_run == "--model":
        run = args.model
    else:
        run = flatten(values).get(command.trained_run)
    layered = layered_config(values, run or None, cls, command.run_sections or RUN_SETTINGS)
    if layered.from_run:
        shown = ", ".join(f"{key}={value}" for key, value in layered.from_run.items())
        print(f"ric: settings recorded by the run {run}: {shown}", file=sys.stderr)
    if layered.from_user:
        shown = ", ".join(f"{key}={value}" for key, value in layered.from_user.items())
        print(f"ric: settings you set: {shown}", file=sys.stderr)
    return layered.config
