"""Test-wide settings (never reach the model hub, keep tokenizers and torch single-threaded and
quiet) and the shared fixtures: the labeled example pairs and the tiny pipeline trained on them.
The shared constants and functions are in tests/helpers.py."""

import os

import pytest
from helpers import EXAMPLES, TINY_LORA, overrides

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# Torch on one thread (here and in the processes tests start), unless set otherwise: the tiny
# models gain nothing from more, and on a busy machine threads that wait for each other slow
# them tenfold (measured on 2 shared cores: the fast subset in 27 s instead of 81 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def labeled(tmp_path_factory):
    """`ric label` of the example pairs, scored by verbosity and positivity (``<root>/label``,
    next to tiny_offline's ``train``). Tests only read this folder."""
    from ric.cli import main

    label = tmp_path_factory.mktemp("tiny-offline") / "label"
    flags = ["--reward", "verbosity", "--reward", "positivity", "--no-progress"]
    assert main(["label", "--data", str(EXAMPLES), "--output", str(label), *flags]) == 0
    return label


@pytest.fixture(scope="session")
def tiny_offline(labeled):
    """``label/``: the labeled example pairs (the ``labeled`` fixture); ``train/``: a tiny model
    trained on them for 5 steps (LoRA r 4), once per session, about a second. Tests only read
    these folders."""
    from ric.cli import main

    root = labeled.parent
    train = ["train", "--data", str(labeled), "--output", str(root / "train"), "--model", "tiny"]
    assert main([*train, "--no-progress", *overrides("train.max_steps=5", *TINY_LORA)]) == 0
    return root


# `ric calibrate`'s design at its smallest: 3 levels per objective, 9 points, 2 answers each.
TINY_CALIBRATION = [
    "calibrate.levels=3",
    "calibrate.answers_per_point=2",
    "calibrate.shard_size=6",
    "generation.max_new_tokens=6",
    "generation.stop_strings=[' ']",
]


@pytest.fixture(scope="session")
def tiny_calibrated(tiny_offline):
    """``calibrated/``: `ric calibrate` of tiny_offline's ``train`` run on the example prompts
    (18 answers, a few seconds): a run that uses train's weights with mapping.method
    calibrated. Tests only read this folder."""
    from ric.cli import main

    output = tiny_offline / "calibrated"
    command = ["calibrate", "--model", str(tiny_offline / "train"), "--output", str(output)]
    prompts = ["--prompts", str(EXAMPLES), "--no-progress"]
    assert main([*command, *prompts, *overrides(*TINY_CALIBRATION)]) == 0
    return output
