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
