"""Real SIGKILLs, three per command, in `ric bootstrap`, `ric baseline morlhf` and `ric compare
--smoke`: rerun to completion, each gives what an uninterrupted run gives (tables, logs, weights),
apart from wall-clock times and the flags that record a resume."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import EXAMPLES, TINY_RL, kill_when, overrides
from safetensors.torch import load_file

from ric.cli import main

# Every test here SIGKILLs processes that train or generate.
pytestmark = pytest.mark.slow

# Measured durations, and what is derived from them: they differ between any two runs.
WALL_CLOCK = {
    "seconds",
    "step_time",
    "train_runtime",
    "train_samples_per_second",
    "train_steps_per_second",
    "response_tokens_per_second",
    "relative_to_morlhf",
    "shard_seconds_per_row",
}
# A resumed run says so; the HF Trainer's end-of-call summary averages the loss of the steps
# that call ran (its runtime and speeds are wall clock).
RESUME_FLAGS = {"resumed", "resumed_from_step", "train_loss"}
# Lists saved from a set, in an order that varies between processes (string hashing).
UNORDERED = {"target_modules"}
# A shard cache's folder: <what>-<16 hex digits of its settings' hash>.
CACHE_KEY = re.compile(r"-[0-9a-f]{16}(?=/)")
OUTPUTS = (".parquet", ".csv", ".json", ".jsonl", ".yaml", ".safetensors")


@contextlib.contextmanager
def _one_thread():
    """Torch on one thread, as in the killed processes: the same kernels, the same numbers (and
    no thread contention on a busy machine, which slows the tiny models a hundredfold)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _uninterrupted(args):
    with _one_thread():
        assert main(args) == 0


def _kill_three_times_then_finish(args, kill_points, finished):
    """Run `ric *args` once per kill point, SIGKILLed when the point is reached (each kill must
    land before the run writes ``finished``), then once more to the end."""
    command = [sys.executable, "-m", "ric.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for number, ready in enumerate(kill_points, start=1):
        assert kill_when(command, ready, env), f"kill {number} came after the process ended"
        assert not finished.exists(), f"kill {number} came after the run had finished"
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)


def _complete_checkpoint(folder):
    """Ready once the HF Trainer checkpoint ``folder`` is completely written (its trainer state,
    the last file the trainer writes, parses)."""

    def ready():
        try:
            json.loads((folder / "trainer_state.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return False
        return True

    return ready


def _saved(folder, pattern, count):
    """Ready once ``count`` files matching ``pattern`` (hidden temporary files aside) are saved
    under ``folder``: the shards a run has finished."""

    def ready():
        return sum(not path.name.startswith(".") for path in folder.glob(pattern)) >= count

    return ready


def _outputs(root, suffixes):
    """The files a run leaves (checkpoints aside) by their path relative to ``root``, where a
    shard cache's folder is named without its key (which hashes paths under ``root``)."""
    return {
        CACHE_KEY.sub("-<key>", path.relative_to(root).as_posix()): path
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.suffix in suffixes and "checkpoints" not in path.parts
    }


def _without(value, keys):
    if isinstance(value, dict):
        return {
            k: sorted(v) if k in UNORDERED and isinstance(v, list) else _without(v, keys)
            for k, v in value.items()
            if k not in keys
        }
    if isinstance(value, list):
        return [_without(v, keys) for v in value]
    return value


def _assert_same_json(ours, theirs, where):
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and ours.keys() == theirs.keys(), where
        for key in theirs:
            _assert_same_json(ours[key], theirs[key], f"{where}.{key}")
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), where
        for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            _assert_same_json(a, b, f"{where}[{index}]")
    elif isinstance(theirs, float):
        assert ours == pytest.approx(theirs, rel=1e-6, abs=1e-6, nan_ok=True), where
    else:
        assert ours == theirs, where


def _assert_same_outputs(ours, theirs, suffixes, ignore=WALL_CLOCK | RESUME_FLAGS):
    """Every output file of ``suffixes`` under ``ours`` equals its twin under ``theirs``, the
    ``ignore`` keys and columns aside; paths inside them are compared relative to each root."""
    files = {root: _outputs(root, suffixes) for root in (ours, theirs)}
    assert files[theirs], f"no {suffixes} outputs under {theirs}"
    assert files[ours].keys() == files[theirs].keys()

    def text(root, name):
        return files[root][name].read_text().replace(str(root), "<output>")

    def documents(root, name):  # .json: one document; .jsonl: one a line
        lines = [text(root, name)] if name.endswith(".json") else text(root, name).splitlines()
        return [_without(json.loads(line), ignore) for line in lines]

    def frame(root, name):
        read = pd.read_parquet if name.endswith(".parquet") else pd.read_csv
        table = read(files[root][name])
        for column in table.columns:
            if pd.api.types.is_string_dtype(table[column]):
                table[column] = table[column].str.replace(str(root), "<output>", regex=False)
        return table.drop(columns=[c for c in table.columns if c in ignore])

    for name in files[theirs]:
        if name.endswith(".safetensors"):
            expected = load_file(str(files[theirs][name]))
            actual = load_file(str(files[ours][name]))
            assert actual.keys() == expected.keys(), name
            for key in expected:
                np.testing.assert_allclose(actual[key], expected[key], atol=1e-6, err_msg=key)
        elif name.endswith((".parquet", ".csv")):
            pd.testing.assert_frame_equal(frame(ours, name), frame(theirs, name), obj=name)
        elif name.endswith(".yaml"):
            assert text(ours, name) == text(theirs, name), name
        else:
            _assert_same_json(documents(ours, name), documents(theirs, name), name)


# ---------------------------------------------------------------------------------- bootstrap

BOOTSTRAP = [
    "--model",
    "tiny",
    "--no-progress",
    "--samples",
    "2",
    *overrides(
        "bootstrap.limit=48",
        "bootstrap.shard_size=1",  # 48 shards
        "generation.max_new_tokens=8",
        "bootstrap.instructions=[Be brief., Be detailed.]",
    ),
]


def test_bootstrap_killed_three_times_gives_the_uninterrupted_pairs(tmp_path):
    reference, out = tmp_path / "uninterrupted", tmp_path / "killed"
    args = ["bootstrap", "--prompts", str(EXAMPLES), *BOOTSTRAP]
    _uninterrupted([*args, "--output", str(reference)])
    # each rerun keeps the shards saved before it; 28 are still to come after the last kill
    kill_points = [_saved(out / ".bootstrap-parts", "*/*", count) for count in (2, 10, 20)]
    _kill_three_times_then_finish([*args, "--output", str(out)], kill_points, out / "pairs.jsonl")

    ours, theirs = (pd.read_json(folder / "pairs.jsonl", lines=True) for folder in (out, reference))
    assert len(theirs) == 48 * 2
    pd.testing.assert_frame_equal(ours, theirs)  # nothing lost, nothing twice, same texts
    _assert_same_outputs(out, reference, (".yaml",))


# --------------------------------------------------------------------------- baseline morlhf

MORLHF_SETTINGS = overrides(*TINY_RL, "baseline.max_steps=6")


def _morlhf_args(tiny_offline, output):
    return [
        "baseline",
        "morlhf",
        "--preference",
        "0.3,0.7",
        "--model",
        "tiny",
        "--data",
        str(tiny_offline / "label"),
        "--output",
        str(output),
        "--no-progress",
        *MORLHF_SETTINGS,
    ]


@pytest.fixture(scope="module")
def morlhf_runs(tiny_offline, tmp_path_factory):
    """An uninterrupted MORLHF run of 6 steps, and one killed as soon as its checkpoints 1, 2
    and 4 were complete (during the next step), then rerun."""
    root = tmp_path_factory.mktemp("morlhf")
    reference, out = root / "uninterrupted", root / "killed"
    _uninterrupted(_morlhf_args(tiny_offline, reference))
    checkpoints = out / "checkpoints"
    kill_points = [_complete_checkpoint(checkpoints / f"checkpoint-{k}") for k in (1, 2, 4)]
    _kill_three_times_then_finish(
        _morlhf_args(tiny_offline, out), kill_points, out / "metrics.json"
    )
    return out, reference


def test_morlhf_killed_three_times_gives_the_uninterrupted_outputs(morlhf_runs):
    out, reference = morlhf_runs
    # adapter weights, train_log.jsonl, metrics.json (reward windows too), config
    _assert_same_outputs(out, reference, OUTPUTS, WALL_CLOCK | RESUME_FLAGS)


# Loaded by the killed process at start-up (PYTHONPATH): a SIGKILL of its own, at a fixed point
# inside the HF Trainer's writing of checkpoint-2 (adapter saved, optimizer and state not yet).
DIE_WHILE_SAVING = """
import os
import signal

from transformers import Trainer

save = Trainer._save_optimizer_and_scheduler


def die_at_checkpoint_2(self, output_dir):
    if os.path.basename(output_dir) == "checkpoint-2":
        os.kill(os.getpid(), signal.SIGKILL)
    save(self, output_dir)


Trainer._save_optimizer_and_scheduler = die_at_checkpoint_2
"""


def test_morlhf_killed_while_writing_a_checkpoint_resumes(morlhf_runs, tiny_offline, tmp_path):
    reference = morlhf_runs[1]
    hook, out = tmp_path / "hook", tmp_path / "killed"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(DIE_WHILE_SAVING)
    command = [sys.executable, "-m", "ric.cli", *_morlhf_args(tiny_offline, out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    path = os.pathsep.join(p for p in (str(hook), env.get("PYTHONPATH")) if p)
    killed = subprocess.run(command, env={**env, "PYTHONPATH": path}, stdout=subprocess.DEVNULL)
    assert killed.returncode == -signal.SIGKILL
    assert _complete_checkpoint(out / "checkpoints" / "checkpoint-1")()
    assert not (out / "checkpoints" / "checkpoint-2" / "trainer_state.json").exists()

    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    _assert_same_outputs(out, reference, OUTPUTS, WALL_CLOCK | RESUME_FLAGS)


# ---------------------------------------------------------------------------- compare --smoke

COMPARE_SETTINGS = overrides("evaluate.grid=lattice", "evaluate.divisions=2")


@pytest.fixture(scope="module")
def compare_runs(tmp_path_factory):
    """An uninterrupted `ric compare --smoke`, and one killed while generating the online shards,
    during the second RL run (after its first checkpoint) and midway through the evaluations."""
    root = tmp_path_factory.mktemp("compare")
    reference, out = root / "uninterrupted", root / "killed"
    args = ["compare", "--smoke", "--no-progress", *COMPARE_SETTINGS]
    _uninterrupted([*args, "--output", str(reference)])
    kill_points = [
        _saved(out / "online" / "iter-01", "parts*/*", 1),
        _complete_checkpoint(out / "rl" / "w-0-1" / "checkpoints" / "checkpoint-1"),
        lambda: (out / "evaluate" / "MORLHF" / "w-1-0" / "metrics.json").exists(),
    ]
    finished = out / "evaluate" / "report.md"
    _kill_three_times_then_finish([*args, "--output", str(out)], kill_points, finished)
    return out, reference


def test_compare_killed_three_times_gives_the_uninterrupted_outputs(compare_runs):
    out, reference = compare_runs
    # comparison.csv, costs.csv (seconds aside), every model's weights, samples, summaries, logs
    # and metrics
    _assert_same_outputs(out, reference, OUTPUTS, WALL_CLOCK | RESUME_FLAGS)
