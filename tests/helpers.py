"""What several test files share: the example data, the settings that keep runs of the tiny model
tiny, and the functions more than one file calls. Imported as ``from helpers import ...``
(``tests/`` is on ``sys.path``: ``pythonpath`` in pyproject's pytest options). Test files import
this module, never each other (tests/test_architecture.py checks it); the shared fixtures are in
tests/conftest.py.

Heavy libraries (torch, ric.serve, uvicorn) are imported inside the functions that need them, so
importing this module costs nothing."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples" / "qa_pairs.jsonl"  # the README's example prompt-response pairs

# --- settings (`--set key=value`) --------------------------------------------------------------

# LoRA rank 4 on the tiny model, trained in float32 (the same numbers on every CPU).
TINY_LORA = ["lora.r=4", "lora.alpha=8", "train.mixed_precision=fp32"]
# The tiny model never emits EOS: a stop string ends some answers (finished), the token budget
# cuts the others (unfinished), so the online stage's selection sees both.
TINY_STOPPING = ["generation.max_new_tokens=12", "generation.stop_strings=[e]"]
# The RL baselines (MORLHF) on the tiny model: 2 prompts of 2 completions a step, a checkpoint
# after every step.
TINY_RL = [
    "model.source=tiny",
    *TINY_LORA,
    "generation.max_new_tokens=6",
    "baseline.num_generations=2",
    "baseline.prompts_per_step=2",
    "baseline.save_steps=1",
]


def overrides(*settings: str) -> list[str]:
    """``key=value`` settings as command-line flags: ``["--set", "key=value", ...]``."""
    return [arg for setting in settings for arg in ("--set", setting)]


def edited_run(run: Path, copy: Path, **sections: dict[str, Any]) -> Path:
    """A copy of the trained ``run`` at ``copy``, its config.yaml's ``sections`` updated with
    the values given (e.g. ``mapping={"method": "convex"}``): a run recorded otherwise."""
    import shutil

    import yaml

    shutil.copytree(run, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    for section, values in sections.items():
        config[section] |= values
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    return copy


def calibrated_copy(calibrated: Path, copy: Path, scale: float = 0.5) -> Path:
    """A copy of the `ric calibrate` output ``calibrated`` (the ``tiny_calibrated`` fixture)
    whose calibration is replaced by a known one: each objective obtains ``scale`` times what it
    is asked for over the design's range, no side effects. Its reference to the weights is
    rewritten for the new place."""
    import os
    import shutil

    import numpy as np

    from ric.core import Calibration

    shutil.copytree(calibrated, copy, ignore=shutil.ignore_patterns("answers-*"))
    record = json.loads((calibrated / "calibration.json").read_text())
    weights = (calibrated / record["model"]).resolve()
    fitted = Calibration.from_json(record["calibration"])
    known = Calibration(
        fitted.names,
        fitted.levels,
        fitted.levels * scale,
        np.zeros_like(fitted.cross),
        fitted.centre,
        fitted.samples,
    )
    record["model"] = os.path.relpath(weights, copy.resolve())
    record["calibration"] = known.to_json()
    (copy / "calibration.json").write_text(json.dumps(record))
    return copy


# --- processes ---------------------------------------------------------------------------------


def kill_when(command: list[str], ready: Callable[[], bool], env: dict[str, str]) -> bool:
    """Start ``command``, SIGKILL it once ``ready()`` is true; return whether it was killed."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline and not ready():
        time.sleep(0.01)
    killed = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    return killed


# --- generation on a tiny model taught a few answers -------------------------------------------

STOP = "### Input:"
TAUGHT = {  # conditioned prompt -> the response the trained tiny model learns (then EOS)
    "### Input: What is a fox? <R1> 0.3 ### Response: ": "A fox is small.",
    "### Input: Why is the sky blue? <R1> -1.2 ### Response: ": f"Light scatters. {STOP} more",
    "### Input: Hi <R1> 0.0 ### Response: ": "Thank you!",
    "### Input: Plants need what? <R1> 1.5 ### Response: ": "Plants need water and good soil.",
    "### Input: Say nothing <R1> 4.0 ### Response: ": "",
}
SILENT = "### Input: Say nothing <R1> 4.0 ### Response: "


def greedy(**settings: Any) -> Any:
    """A greedy ``GenerationConfig`` of at most 20 new tokens, with ``settings`` laid over."""
    from ric.config import GenerationConfig

    return GenerationConfig(**{"do_sample": False, "max_new_tokens": 20} | settings)


def train_to_answer(model: Any, tokenizer: Any, samples: dict[str, str], steps: int = 80) -> None:
    """Full-batch Adam on prompt + response + EOS, loss on the response and EOS only."""
    import torch

    rows, starts = [], []
    for prompt, response in samples.items():
        prompt_ids = tokenizer(prompt)["input_ids"]
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
        rows.append(prompt_ids + response_ids + [tokenizer.eos_token_id])
        starts.append(len(prompt_ids))
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    attention_mask = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, -100)
    for index, (row, start) in enumerate(zip(rows, starts, strict=True)):
        input_ids[index, : len(row)] = torch.tensor(row)
        attention_mask[index, : len(row)] = 1
        labels[index, start : len(row)] = torch.tensor(row[start:])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


# --- `ric serve` in this process -----------------------------------------------------------------

NAMES = ["verbosity", "positivity"]  # the objectives of the tiny run (conftest's tiny_offline)
CHAT = "/v1/chat/completions"


def serve_config(run: Path, **serve: Any) -> Any:
    """The config `ric serve` would use: the run's recorded settings under the user's."""
    from ric.runs import layered_config

    values = {"serve": serve, "generation": {"max_new_tokens": 6}}
    return layered_config(values, run).config


@contextmanager
def running(run: Path, **serve: Any) -> Iterator[str]:
    """A real uvicorn server for ``run`` on a free port (in a thread); yields its base URL."""
    import uvicorn

    from ric.serve import build_app

    app = build_app(run, serve_config(run, **serve))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive()


def request(
    url: str, path: str, body: Any = None, method: str = "POST"
) -> tuple[int, dict[str, str], Any]:
    """(status, headers by lowercase name, JSON) of one raw HTTP request; ``body`` bytes are
    sent as they are."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    payload = json.loads(response.read())
    connection.close()
    headers = {name.lower(): value for name, value in response.getheaders()}
    return response.status, headers, payload


# --- preference sweeps with a known truth ------------------------------------------------------
# For tests/test_intervals.py and benchmarks/interval_coverage.py: how often `ric evaluate`'s and
# `ric compare`'s intervals hold the noise-free hypervolume and Spearman.


def true_front(shape: str) -> tuple[Any, Any]:
    """(K, 2) preferences (w_1 = 0, 0.1, ..., 1) and (K, 2) noise-free mean rewards on a concave
    trade-off: relevance rises and conciseness falls with w_1, strictly, so the noise-free
    Spearman(w_1, mean) is +1 and -1. ``arc``: a quarter circle of radius 3 about (2, 2), whose
    adjacent means differ by 0.04 to 0.47; ``close``: relevance saturates (sin^0.3), so its top
    means differ by as little as 0.01; ``hump``: relevance rises then falls back (noise-free
    Spearman +0.55), the front no longer a trade-off at the top; ``point``: one preference
    (0.5, 0.5) at (3.5, 3.5), inside the arc, as a baseline without preferences (SFT)."""
    import numpy as np

    if shape == "point":
        return np.array([[0.5, 0.5]]), np.array([[3.5, 3.5]])
    w1 = np.linspace(0.0, 1.0, 11)
    angle = w1 * np.pi / 2
    relevance = {
        "arc": 2 + 3 * np.sin(angle),
        "close": 2 + 3 * np.sin(angle) ** 0.3,
        "hump": 2 + np.sin(0.8 * np.pi * w1),
    }[shape]
    return np.stack([w1, 1 - w1], axis=1), np.stack([relevance, 2 + 3 * np.cos(angle)], axis=1)


def synthetic_sweeps(
    fronts: list[Any], noise_sd: float, rng: Any, prompts: int = 48, prompt_sd: float = 0.5
) -> list[Any]:
    """Per front of noise-free means (K, N), raw rewards (K, P, N) of one sampled answer per
    (preference, prompt): the mean, plus the prompt's offset (how easy it is, per objective;
    shared by every preference and front, sd ``prompt_sd``), plus the answer's own noise (sd
    ``noise_sd``). The offsets average 0 over the prompt distribution, so the expected
    per-preference mean over it, the truth the intervals are for, is the front itself."""
    offsets = rng.normal(0.0, prompt_sd, size=(1, prompts, fronts[0].shape[1]))
    return [
        means[:, None, :]
        + offsets
        + rng.normal(0.0, noise_sd, size=(len(means), *offsets.shape[1:]))
        for means in fronts
    ]


def coverage(
    intervals: Callable[[list[Any], int], dict[str, Any]],
    truths: dict[str, float],
    fronts: list[Any],
    noise_sd: float,
    replications: int,
    seed: int = 0,
) -> dict[str, float]:
    """Per name of ``truths``, the share of ``replications`` synthetic sweeps of ``fronts``
    (``synthetic_sweeps``) whose interval, ``intervals(sweeps, replication)[name]`` ([low, high]
    or None: counted as a miss), holds the true value."""
    import numpy as np

    rng = np.random.default_rng(seed)
    hits = dict.fromkeys(truths, 0)
    for replication in range(replications):
        found = intervals(synthetic_sweeps(fronts, noise_sd, rng), replication)
        for name, truth in truths.items():
            interval = found[name]
            hits[name] += interval is not None and interval[0] - 1e-9 <= truth <= interval[1] + 1e-9
    return {name: count / replications for name, count in hits.items()}
