"""`ric serve` under a mixed load, side by side in one run with the server it replaced and with
a stock engine alone, plus what an abandoned request costs the next one.

Three servers on the same run, each in its own process (as a deployment runs it):

* ``ric serve``: this tree, on transformers' continuous batching (``serve.engine``);
* ``ric serve (static batches)``: the last commit before the engine (``--baseline``, default
  8c4ce37), checked out into a temporary git worktree and run from there, with the settings
  docs/serving.md recommended for it (``serve.max_batch_size`` 32, ``serve.max_wait_ms`` 200);
* ``transformers serve --continuous-batching`` on ``ric export``'s folder of the run, whose chat
  template maps each request's preference (``chat_template_kwargs``) to ric's prompt.

**Mixed workload** (``--requests`` chat completions from ``--clients`` concurrent clients, the
official ``openai`` client, streamed): request i asks question i mod 6 with its own preference
(w, 1 - w), ``max_tokens`` spread over 8..128 and ``temperature`` over 0..1 (0: greedy), no seed.
Per server: requests/s, completion tokens/s (the answers' tokens counted with the run's
tokenizer, the same measure for every server), p50/p95 latency and p50/p95 time to first token
(the first chunk with text). `transformers serve` applies its first request's sampling settings
to every later request (per request it takes only ``max_tokens``); that first request asks for
the run's own (temperature 0.7, top_p 0.9), so it samples every step as ric serve does, but
answers each request at those settings, not its own. The rounds alternate between servers,
``--repeats`` times after a warm-up round each; medians are printed, with the CPU time each
server used while another was measured (an idle server should take none), and the ratios.

**Abandoned request** (both ``ric serve``): the latency of a 4-token greedy request on the idle
server (median of 3), then again right after a client gave up (``timeout`` 1 s) on a 256-token
request (temperature 1, seed 5): the ratio should stay near 1.

    ric export --model embedded-ric --output /tmp/embedded-ric-hf
    python benchmarks/bench_serve.py embedded-ric --exported /tmp/embedded-ric-hf

Needs the ``serve`` extra, ``openai``, ``transformers[serving]`` (the ``deploy`` extra) and git
(for the baseline's worktree). ``--cb-num-blocks`` (64 blocks of 256 tokens) bounds
`transformers serve`'s paged KV cache, which on a CPU takes 60% of the memory unless bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai

from ric.cli import main as ric_main
from ric.runs import load_trained, run_folder

REPOSITORY = Path(__file__).resolve().parent.parent
QUESTIONS = [
    "Why is the sky blue?",
    "How do plants make food from sunlight?",
    "What is a fox?",
    "Give me three tips for sleeping better.",
    "Explain what a neural network is to a child.",
    "Why do cats purr?",
]
START_TIMEOUT_S = 300
NEW, OLD, STOCK = "ric serve", "ric serve (static batches)", "transformers serve"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    """A server in its own process: its base URL, its process id, and how a request carries
    its preference there (the request's extra JSON fields)."""

    name: str
    url: str
    pid: int
    steer: Callable[[list[float]], dict[str, Any]]


@contextmanager
def serving(
    name: str, command: list[str], port: int, steer: Callable, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """``command`` (a server listening on ``port``) in a child process; yields it once its
    ``/v1/models`` answers, and stops it."""
    env = os.environ | {"HF_HUB_DISABLE_UPDATE_CHECK": "1"} | (env or {})
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while server.poll() is None and time.monotonic() < deadline:
                try:
                    urllib.request.urlopen(f"{url}/v1/models", timeout=10).close()
                    break
                except OSError:
                    time.sleep(0.2)
            else:
                log.seek(0)
                raise RuntimeError(f"{name} did not start: {log.read().decode()[-2000:]}")
            yield Server(name, url, server.pid, steer)
        finally:
            server.terminate()
            server.wait()


def ric_serve(name: str, run: str, settings: dict[str, Any], source: Path | None = None):
    """`ric serve` on ``run`` on a free port, from this tree or from ``source`` (another
    checkout's ``src``); the preference goes in the request's body."""
    port = free_port()
    flags = [arg for key, value in settings.items() for arg in ("--set", f"serve.{key}={value}")]
    command = [sys.executable, "-m", "ric", "serve", "--model", run, "--port", str(port), *flags]
    env = {"PYTHONPATH": str(source)} if source else None
    return serving(name, command, port, lambda w: {"preference": w}, env)


def transformers_serve(folder: Path, cb_num_blocks: int):
    """`transformers serve --continuous-batching` on ``folder`` (`ric export`'s) on a free port;
    the preference goes to the folder's chat template in ``chat_template_kwargs``."""
    port = free_port()
    command = [
        *(sys.executable, "-m", "transformers.cli.transformers", "serve", "--continuous-batching"),
        *("--cb-num-blocks", str(cb_num_blocks), "--host", "127.0.0.1", "--port", str(port)),
        str(folder),
    ]
    steer = lambda w: {"chat_template_kwargs": {"preference": w}}  # noqa: E731
    return serving(STOCK, command, port, steer)


@contextmanager
def worktree(commit: str) -> Iterator[Path]:
    """This repository at ``commit``, checked out in a temporary folder (removed after)."""
    with tempfile.TemporaryDirectory(prefix="ric-baseline-") as scratch:
        folder = Path(scratch) / "tree"
        git = ["git", "-C", str(REPOSITORY), "worktree"]
        subprocess.run([*git, "add", "--detach", str(folder), commit], check=True)
        try:
            yield folder
        finally:
            subprocess.run([*git, "remove", "--force", str(folder)], check=True)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def workload(count: int) -> list[dict[str, Any]]:
    """Request i: its own preference, max_tokens over 8..128, temperature over 0..1."""
    return [
        {
            "question": QUESTIONS[i % len(QUESTIONS)],
            "preference": [
                (i * 7 % count) / max(count - 1, 1),
                1 - (i * 7 % count) / max(count - 1, 1),
            ],
            "max_tokens": 8 + (i * 37) % 121,
            "temperature": round((i * 3 % 11) / 10, 1),
        }
        for i in range(count)
    ]


def ask(server: Server, client: openai.OpenAI, model: str, item: dict[str, Any]) -> tuple:
    """(latency, time to first text, answer) of one streamed chat completion."""
    start = time.perf_counter()
    first, parts = None, []
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": item["question"]}],
        max_tokens=item["max_tokens"],
        temperature=item["temperature"],
        stream=True,
        extra_body=server.steer(item["preference"]),
    )
    for chunk in stream:
        text = chunk.choices[0].delta.content if chunk.choices else None
        if text:
            first = first or time.perf_counter() - start
            parts.append(text)
    latency = time.perf_counter() - start
    return latency, first if first is not None else latency, "".join(parts)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure(server: Server, items: list[dict[str, Any]], clients: int, tokenizer: Any) -> dict:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=900)
    model = client.models.list().data[0].id
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda item: ask(server, client, model, item), items))
    seconds = time.perf_counter() - start
    latencies = [latency for latency, _, _ in results]
    firsts = [first for _, first, _ in results]
    tokens = sum(len(tokenizer(text)["input_ids"]) for _, _, text in results)
    return {
        "requests_per_s": len(items) / seconds,
        "tokens_per_s": tokens / seconds,
        "p50_s": statistics.median(latencies),
        "p95_s": percentile(latencies, 0.95),
        "ttft_p50_s": statistics.median(firsts),
        "ttft_p95_s": percentile(firsts, 0.95),
    }


def abandoned(server: Server) -> tuple[float, float, float]:
    """(how long a 256-token request takes when its client waits; the idle latency of a 4-token
    request, median of 3; its latency right after a client gave up on the 256-token request
    after 1 s)."""
    body = {"model": "x", "messages": [{"role": "user", "content": "What is a fox?"}]}
    model = json.load(urllib.request.urlopen(f"{server.url}/v1/models"))["data"][0]["id"]

    def post(fields: dict[str, Any], timeout: float) -> float:
        data = json.dumps(body | {"model": model} | fields).encode()
        started = time.perf_counter()
        headers = {"Content-Type": "application/json"}
        call = urllib.request.Request(f"{server.url}/v1/chat/completions", data, headers)
        with urllib.request.urlopen(call, timeout=timeout) as response:
            response.read()
        return time.perf_counter() - started

    short = {"max_tokens": 4, "temperature": 0}
    long = {"max_tokens": 256, "temperature": 1, "seed": 5} | server.steer([1.0, 0.0])
    whole = post(long, 600)
    idle = statistics.median(post(short, 600) for _ in range(3))
    with contextlib.suppress(OSError):  # the client gives up after 1 s and closes its connection
        post(long, timeout=1)
    return whole, idle, post(short, 600)


def line(name: str, r: dict[str, float]) -> str:
    return (
        f"| {name} | {r['requests_per_s']:.3f} | {r['tokens_per_s']:.1f} | "
        f"{r['p50_s']:.1f} / {r['p95_s']:.1f} | {r['ttft_p50_s']:.2f} / {r['ttft_p95_s']:.2f} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", default="embedded-ric")
    parser.add_argument("--exported", type=Path, help="`ric export`'s folder of run")
    parser.add_argument("--baseline", default="8c4ce37", help="the static batcher's commit")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cb-num-blocks", type=int, default=64)
    args = parser.parse_args(argv)
    tokenizer = load_trained(run_folder(args.run)).tokenizer
    items = workload(args.requests)
    with ExitStack() as stack:
        exported = args.exported
        if exported is None:
            exported = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "exported"
            assert ric_main(["export", "--model", args.run, "--output", str(exported)]) == 0
        baseline = stack.enter_context(worktree(args.baseline)) / "src"
        queue = {"max_queue": args.requests * 2, "max_tokens": 256}
        servers = [
            stack.enter_context(ric_serve(NEW, args.run, queue | {"max_batch_size": 32})),
            stack.enter_context(
                ric_serve(
                    OLD, args.run, queue | {"max_batch_size": 32, "max_wait_ms": 200}, baseline
                )
            ),
            stack.enter_context(transformers_serve(exported, args.cb_num_blocks)),
        ]
        for server in servers:  # a first round warms each server up (caches, threads)
            # transformers serve keeps its first request's sampling settings for every request
            # after it: that first one asks for the run's own (sampling at 0.7, top_p 0.9), so it
            # samples each step as ric serve does rather than decoding greedily for all.
            warm = {"temperature": 0.7, "max_tokens": 8, "question": QUESTIONS[0]}
            measure(server, [warm | {"preference": [0.5, 0.5]}], 1, tokenizer)
            print(f"warm-up {line(server.name, measure(server, items[:8], 8, tokenizer))}")
        rounds: dict[str, list[dict[str, float]]] = {server.name: [] for server in servers}
        idle_cpu = dict.fromkeys(rounds, 0.0)
        for repeat in range(args.repeats):
            order = servers[repeat % 3 :] + servers[: repeat % 3]
            for server in order:
                before = {other.name: cpu_seconds(other.pid) for other in servers}
                rounds[server.name].append(measure(server, items, args.clients, tokenizer))
                for other in servers:
                    if other is not server:
                        idle_cpu[other.name] += cpu_seconds(other.pid) - before[other.name]
                print(f"repeat {repeat + 1} {line(server.name, rounds[server.name][-1])}")
        gaps = {server.name: abandoned(server) for server in servers[:2]}
    medians = {
        name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for name, runs in rounds.items()
    }
    print(
        f"\n{args.requests} streamed chat completions from {args.clients} clients; max_tokens "
        f"8-128, temperature 0-1, a preference each; medians of {args.repeats} rotating repeats"
    )
    print("| server | requests/s | tokens/s | latency p50 / p95 (s) | TTFT p50 / p95 (s) |")
    print("| --- | --- | --- | --- | --- |")
    for name, figures in medians.items():
        print(line(name, figures))
    print(
        "CPU s each server used while another was measured: "
        + ", ".join(f"{name} {seconds:.1f}" for name, seconds in idle_cpu.items())
    )
    new, old, stock = medians[NEW], medians[OLD], medians[STOCK]
    for label, other in (("static batches", old), ("transformers serve", stock)):
        print(
            f"ratio ric serve / {label}: {new['requests_per_s'] / other['requests_per_s']:.2f}x "
            f"requests/s, {new['tokens_per_s'] / other['tokens_per_s']:.2f}x tokens/s, "
            f"{new['p50_s'] / other['p50_s']:.2f}x p50 latency"
        )
    print("\n| server | 4-token request, idle (s) | after an abandoned 256-token one (s) | ratio |")
    print("| --- | --- | --- | --- |")
    for name, (_, idle, after) in gaps.items():
        print(f"| {name} | {idle:.2f} | {after:.2f} | {after / idle:.2f}x |")
    print(
        "the 256-token request, waited for: "
        + ", ".join(f"{name} {whole:.1f} s" for name, (whole, _, _) in gaps.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
