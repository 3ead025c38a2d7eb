"""Several processes (torch.distributed's launcher, gloo on CPU) against one, on the tiny model:
training follows the same global batch to the same losses and weights, the online buffer holds
exactly the same rows, labeling gives the same scores, only the main process writes, and a run
whose worker was killed resumes to the uninterrupted result.

Tolerance: a K-process step sums the same per-token losses in another order (each process sums
its share, gloo sums the gradients), so losses and weights agree to float32 rounding: relative
1e-5 on logged losses, absolute 1e-6 on weights (measured: 1e-7 and 8e-8 after 8 steps). LoRA
dropout is off: with it, each process draws its own masks and the runs agree only in distribution.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import psutil
import pytest
import torch
from helpers import EXAMPLES, TINY_LORA, TINY_RL, TINY_STOPPING, overrides
from safetensors.torch import load_file

from ric import parallel
from ric.cli import main

TINY = [*TINY_LORA, "lora.dropout=0"]
# An odd micro-batch (one process takes 3 samples, the other 2) and accumulation over 2.
TRAIN = [
    *TINY,
    "train.batch_size=5",
    "train.gradient_accumulation_steps=2",
    "train.learning_rate=0.003",
    "train.log_steps=2",
    "train.max_steps=8",
]
ONLINE = [
    *TINY,
    *TINY_STOPPING,
    "online.samples=12",
    "online.shard_size=5",
    "online.max_steps=3",
    "online.iterations=2",
]


def _launch(arguments, processes=2):
    """The command that runs `ric <arguments>` in ``processes`` processes."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*launcher, f"--nproc_per_node={processes}", "-m", "ric", *arguments]


def _run(command):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def _losses(run):
    return [json.loads(line)["loss"] for line in (run / "train_log.jsonl").read_text().splitlines()]


def _weights(run):
    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


def _assert_same_training(ours, theirs):
    assert _losses(ours) == pytest.approx(_losses(theirs), rel=1e-5)
    mine, reference = _weights(ours), _weights(theirs)
    assert mine.keys() == reference.keys()
    # Two processes sum the gradients in another order than one: the weights agree to rounding
    # (up to 1.1e-6 seen on a 2-core AMX machine), far below one update (lr x grad, ~1e-3).
    for name, value in mine.items():
        torch.testing.assert_close(value, reference[name], rtol=0, atol=5e-6)


def _train_args(data, out, *extra):
    arguments = ["train", "--data", str(data), "--output", str(out), "--model", "tiny"]
    return [*arguments, "--no-progress", *overrides(*TRAIN, *extra)]


def test_one_process_helpers_are_identity():
    assert parallel.num_processes() == 1 and parallel.is_main_process()
    assert parallel.own_share([3, 1, 2]) == [3, 1, 2]
    assert parallel.map_rows(["a", "b"], lambda rows: [row * 2 for row in rows]) == ["aa", "bb"]


SPLIT_SCRIPT = """
import json
import sys
from pathlib import Path

from ric import parallel

# Each row records which process worked on it; the gathered list must be in input order.
rows = parallel.map_rows(
    list(range(7)), lambda share: [[i, parallel.process_index()] for i in share]
)
report = {"rank": parallel.process_index(), "rows": rows}
Path(sys.argv[1], f"rank-{parallel.process_index()}.json").write_text(json.dumps(report))
"""


@pytest.mark.slow
def test_rows_are_split_between_processes_and_gathered_in_input_order(tmp_path):
    script = tmp_path / "split.py"
    script.write_text(SPLIT_SCRIPT)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    result = _run([*launcher, "--nproc_per_node=2", str(script), str(tmp_path)])
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("rank-*.json"))]
    assert [report["rank"] for report in reports] == [0, 1]
    expected = [[i, i % 2] for i in range(7)]  # every 2nd row on each process, in order again
    assert all(report["rows"] == expected for report in reports)  # every process gets all


@pytest.mark.slow
@pytest.mark.parametrize("command", ["serve", "image train"])
def test_one_process_commands_refuse_a_launch_of_several_once(command, tmp_path):
    output = tmp_path / "out"
    arguments = {"serve": ["--model", str(tmp_path)], "image train": ["--output", str(output)]}
    result = _run(_launch([*command.split(), *arguments[command]]))
    assert result.returncode != 0
    message = f"`ric {command}` runs as one process, but it was launched as 2"
    assert result.stderr.count(message) == 1, result.stderr[-3000:]  # from the main process only
    assert not output.exists()


def test_engines_that_shard_parameters_or_step_per_backward_are_refused():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from ric.config import TrainConfig
    from ric.training.sft import _check_engine

    def accelerator(kind, stage=0):
        plugin = SimpleNamespace(zero_stage=stage)
        return SimpleNamespace(
            distributed_type=kind, state=SimpleNamespace(deepspeed_plugin=plugin)
        )

    settings = TrainConfig()
    with pytest.raises(ValueError, match="not FSDP"):
        _check_engine(accelerator(DistributedType.FSDP), settings)
    with pytest.raises(ValueError, match="not ZeRO-3"):
        _check_engine(accelerator(DistributedType.DEEPSPEED, 3), settings)
    with pytest.raises(ValueError, match="gradient_accumulation_steps to 1 \\(got 2\\)"):
        _check_engine(
            accelerator(DistributedType.DEEPSPEED, 2), TrainConfig(gradient_accumulation_steps=2)
        )
    _check_engine(accelerator(DistributedType.DEEPSPEED, 2), settings)  # ZeRO-2: accepted
    _check_engine(accelerator(DistributedType.MULTI_GPU), settings)


def test_an_rl_batch_that_does_not_split_over_the_processes_is_refused(monkeypatch):
    from ric.baselines.rl import _per_process_batch

    monkeypatch.setattr(parallel, "num_processes", lambda: 3)
    with pytest.raises(ValueError, match=r"= 4 completions per step do not split evenly over 3"):
        _per_process_batch(4)
    assert _per_process_batch(6) == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "frozen_cache"),
    [
        ([], "off (the lowest decoder layer or the embeddings are trained)"),
        # The adapter on the top layer only: from the second epoch (48 samples, 10 per step)
        # each process starts its share at that layer, from the states it kept.
        (["lora.top_layers=1"], "layers 0-0 run once per sample"),
    ],
)
def test_two_process_training_matches_one_process(labeled, tmp_path, extra, frozen_cache):
    one = tmp_path / "one"
    assert main(_train_args(labeled, one, *extra)) == 0
    two = tmp_path / "two"
    result = _run(_launch(_train_args(labeled, two, *extra)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("output:") == 1  # only the main process prints
    assert ("frozen layers: layers 0-0 run once per sample" in result.stdout) == bool(extra)
    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["frozen_cache"].startswith(frozen_cache)
    assert len(_losses(two)) == 4  # written once, not once per process
    _assert_same_training(two, one)


@pytest.mark.slow
def test_two_process_online_buffer_has_exactly_the_one_process_rows(tiny_offline, tmp_path):
    model = tiny_offline / "train"
    arguments = ["online", "--model", str(model), "--no-progress", *overrides(*ONLINE)]
    assert main([*arguments, "--output", str(tmp_path / "one")]) == 0
    result = _run(_launch([*arguments, "--output", str(tmp_path / "two")]))
    assert result.returncode == 0, result.stderr[-3000:]
    planned = ["prompt", "target_verbosity", "target_positivity", "iteration"]
    for iteration in ("iter-01", "iter-02"):
        one = pd.read_parquet(tmp_path / "one" / iteration / "buffer.parquet")
        two = pd.read_parquet(tmp_path / "two" / iteration / "buffer.parquet")
        # The same planned rows in the same order: none lost, none duplicated. (The sampled
        # responses differ: each process draws with its own seed.)
        pd.testing.assert_frame_equal(two[planned], one[planned])
        assert two["response"].map(type).eq(str).all()
    metrics = json.loads((tmp_path / "two" / "iter-02" / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["generated"] == 12 and metrics["buffer"] == 24


@pytest.mark.slow
def test_two_process_label_gives_the_one_process_scores(labeled, tmp_path):
    flags = ["--reward", "verbosity", "--reward", "positivity", "--no-progress"]
    arguments = ["label", "--data", str(EXAMPLES), "--output", str(tmp_path / "two"), *flags]
    result = _run(_launch([*arguments, "--set", "label.shard_size=7"]))
    assert result.returncode == 0, result.stderr[-3000:]
    ours = pd.read_parquet(tmp_path / "two" / "scored.parquet")
    pd.testing.assert_frame_equal(ours, pd.read_parquet(labeled / "scored.parquet"))
    assert (tmp_path / "two" / "stats.json").read_text() == (labeled / "stats.json").read_text()


def _worker(launcher, rank):
    """The worker process of ``rank`` under the launcher."""
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank):
                return child
        except psutil.Error:
            continue
    return None


def _kill_after_checkpoint(arguments, checkpoints, pattern, rank):
    """Launch `ric <arguments>` in 2 processes and SIGKILL the one of ``rank`` as soon as the
    folder ``checkpoints`` holds a path matching ``pattern``; the launcher then stops the other."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = _launch(arguments)
    launcher = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while launcher.poll() is None and time.monotonic() < deadline:
        if any(checkpoints.glob(pattern)):
            break
        time.sleep(0.01)
    worker = _worker(launcher, rank)
    assert worker is not None and launcher.poll() is None, "the run ended before the kill"
    worker.send_signal(signal.SIGKILL)
    launcher.communicate(timeout=120)
    assert launcher.returncode != 0  # the launcher stops the others when one dies


KILLED = ["train.save_steps=3", "train.max_steps=9", "train.log_steps=1"]


@pytest.fixture(scope="module")
def straight(labeled, tmp_path_factory):
    """The 2-process run of ``KILLED`` that no kill interrupted."""
    out = tmp_path_factory.mktemp("straight")
    assert _run(_launch(_train_args(labeled, out, *KILLED))).returncode == 0
    return out


@pytest.mark.slow
@pytest.mark.parametrize("rank", [0, 1], ids=["main", "worker"])
def test_a_run_with_a_killed_process_resumes_to_the_uninterrupted_result(
    labeled, straight, tmp_path, rank
):
    out = tmp_path / "killed"
    # The main process may die while it writes (checkpoints are written aside, then renamed).
    _kill_after_checkpoint(_train_args(labeled, out, *KILLED), out / "checkpoints", "step-*", rank)
    assert not (out / "metrics.json").exists()

    resumed = _run(_launch([*_train_args(labeled, out, *KILLED), "--resume"]))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_step"] in (3, 6)
    _assert_same_training(out, straight)


RL = [*TINY_RL, "lora.dropout=0"]


def _rl_args(data, out, *extra):
    arguments = ["baseline", "morlhf", "--data", str(data), "--output", str(out)]
    flags = ["--model", "tiny", "--preference", "0.5,0.5", "--no-progress"]
    return [*arguments, *flags, *overrides(*RL, *extra)]


def _progress(run, step):
    import numpy as np

    return np.load(run / "checkpoints" / f"checkpoint-{step}" / "ric_progress.npz")


def _log_steps(run):
    return [json.loads(line)["step"] for line in (run / "train_log.jsonl").open()]


@pytest.mark.slow
def test_two_process_rl_scores_the_global_batch_and_writes_once(labeled, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(_rl_args(labeled, one, "baseline.max_steps=3")) == 0
    result = _run(_launch(_rl_args(labeled, two, "baseline.max_steps=3")))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("MORLHF model for") == 1  # only the main process prints
    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["steps"] == 3
    # Every step scored the configured 2 prompts x 2 completions, gathered from both processes:
    # the reward history of one process's run, not half of it.
    assert _progress(two, 3)["lengths"].tolist() == _progress(one, 3)["lengths"].tolist() == [4] * 3
    assert metrics["reward_start"]["batches"] == 3
    assert _log_steps(two) == _log_steps(one) == [1, 2, 3, 3]  # the last: TRL's run summary
    assert _weights(two).keys() == _weights(one).keys()
    assert any(
        float(value.abs().max()) > 0 for name, value in _weights(two).items() if "lora_B" in name
    )


@pytest.mark.slow
def test_a_killed_rl_worker_resumes_from_the_last_checkpoint(labeled, tmp_path):
    out = tmp_path / "killed"
    arguments = _rl_args(labeled, out, "baseline.max_steps=40")
    _kill_after_checkpoint(arguments, out / "checkpoints", "checkpoint-*/ric_progress.npz", rank=1)
    assert not (out / "metrics.json").exists()

    resumed = _run(_launch(_rl_args(labeled, out, "baseline.max_steps=40")))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed"] is True and metrics["steps"] == 40 and metrics["processes"] == 2
    # The history saved with the checkpoint was carried on: one global batch per step.
    assert _progress(out, 40)["lengths"].tolist() == [4] * 40
    assert _log_steps(out) == [*range(1, 41), 40]
