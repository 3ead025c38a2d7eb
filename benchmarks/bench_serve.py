"""`ric serve` under load, in two comparisons (``--compare``), each side by side in one run:

* ``batching`` (default): batching on vs ``serve.max_batch_size=1``, same run, same requests.
* ``engines``: `ric serve --model RUN` vs `transformers serve --continuous-batching` (a stock
  engine, transformers' ``serving`` extra) on ``ric export``'s folder of the same run, whose
  chat template maps each request's preference to ric's prompt (docs/deploy.md). Both servers
  run for the whole benchmark (an idle one takes no CPU: the script prints what each used while
  the other was measured); after a warm-up round each, their rounds alternate, ``--repeats``
  times; medians are printed.

Each server runs in its own process (as a deployment runs it, so the clients' threads do not
share its interpreter). ``--requests`` chat completions from ``--clients`` concurrent clients
(the official ``openai`` client), one preference per request spread over the simplex, no seed so
requests may share generate calls; it prints throughput (requests/s, completion tokens/s), p50/p95
latency, for `ric serve` the mean batch (sequences per generate call, from ``/health``), and the
ratio (batched/unbatched, or transformers-serve/ric-serve).

    python benchmarks/bench_serve.py runs/demo/train          # the target: SmolLM2 demo run
    python benchmarks/bench_serve.py tiny --requests 64        # quick smoke on a tiny run
    ric export --model embedded-ric --output /tmp/embedded-ric-hf
    python benchmarks/bench_serve.py embedded-ric --compare engines --exported /tmp/embedded-ric-hf

Arguments: ``run`` (a `ric train`/`ric online` output, ``embedded-ric``, or ``tiny``: a tiny
trained run built in a temporary folder from examples/qa_pairs.jsonl, about 20 s), ``--clients``
(32), ``--requests`` (96 for batching, 32 for engines), ``--max-tokens`` (32), ``--temperature``
(0.7), ``--max-batch-size`` (32: `ric serve`'s batched setting), ``--max-wait-ms`` (200: long
enough for answered clients to rejoin the next batch; docs/serving.md); for engines,
``--exported`` (`ric export`'s folder of ``run``; default: exported into a temporary folder),
``--repeats`` (3) and ``--cb-num-blocks`` (64 blocks of 256 tokens: the paged KV cache of
`transformers serve`, which on a CPU takes 60% of the machine's memory unless bounded). Needs the
``serve`` extra and ``openai``; engines also ``transformers[serving]`` (the ``deploy`` extra).
"""

from __future__ import annotations

import argparse
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

EXAMPLES = Path(__file__).parent.parent / "examples" / "qa_pairs.jsonl"
QUESTIONS = [
    "Why is the sky blue?",
    "How do plants make food from sunlight?",
    "What is a fox?",
    "Give me three tips for sleeping better.",
    "Explain what a neural network is to a child.",
    "Why do cats purr?",
]
START_TIMEOUT_S = 300


def tiny_run(root: Path) -> Path:
    """A tiny model trained 5 steps on the example pairs (verbosity, positivity)."""
    label = ["label", "--data", str(EXAMPLES), "--output", str(root / "label"), "--no-progress"]
    assert ric_main([*label, "--reward", "verbosity", "--reward", "positivity"]) == 0
    settings = ["train.max_steps=5", "lora.r=4", "lora.alpha=8", "train.mixed_precision=fp32"]
    train = ["train", "--data", str(root / "label"), "--output", str(root / "train")]
    overrides = [arg for setting in settings for arg in ("--set", setting)]
    assert ric_main([*train, "--model", "tiny", "--no-progress", *overrides]) == 0
    return root / "train"


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
def serving(name: str, command: list[str], port: int, steer: Callable) -> Iterator[Server]:
    """``command`` (a server listening on ``port``) in a child process; yields it once its
    ``/health`` answers, and stops it."""
    env = os.environ | {"HF_HUB_DISABLE_UPDATE_CHECK": "1"}  # transformers' CLI asks PyPI daily
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while server.poll() is None and time.monotonic() < deadline:
                try:
                    health(url)
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


def ric_serve(run: Path | str, serve: dict[str, Any]):
    """`ric serve` on ``run`` on a free port; the preference goes in the request's body."""
    port = free_port()
    settings = [arg for key, value in serve.items() for arg in ("--set", f"serve.{key}={value}")]
    command = [sys.executable, "-m", "ric", "serve", "--model", str(run), "--port", str(port)]
    return serving("ric serve", [*command, *settings], port, lambda w: {"preference": w})


def transformers_serve(folder: Path, cb_num_blocks: int):
    """`transformers serve --continuous-batching` on ``folder`` (`ric export`'s) on a free port;
    the preference goes to the folder's chat template in ``chat_template_kwargs``."""
    port = free_port()
    command = [
        *(sys.executable, "-m", "transformers.cli.transformers", "serve", "--continuous-batching"),
        *("--cb-num-blocks", str(cb_num_blocks), "--host", "127.0.0.1", "--port", str(port)),
        str(folder),
    ]
    return serving("transformers serve", command, port, in_chat_template_kwargs)


def in_chat_template_kwargs(preference: list[float]) -> dict[str, Any]:
    return {"chat_template_kwargs": {"preference": preference}}


def health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
        return json.load(response)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time the whole machine has spent busy, all cores (Linux /proc/stat; NaN elsewhere)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def measure(server: Server, args: argparse.Namespace, warm: bool = True) -> dict[str, float]:
    """``args.requests`` chat completions from ``args.clients`` concurrent clients, request i
    asking ``QUESTIONS[i % 6]`` at preference (w, 1 - w), w = i / (requests - 1)."""
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=600)
    model = client.models.list().data[0].id

    def ask(i: int) -> tuple[float, int]:
        w = i / max(args.requests - 1, 1)
        start = time.perf_counter()
        answer = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            extra_body=server.steer([w, 1 - w]),
        )
        return time.perf_counter() - start, answer.usage.completion_tokens

    if warm:
        # transformers serve's batcher takes its sampling settings from the first request
        ask(0)
    before = health(server.url)
    start = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        results = list(pool.map(ask, range(args.requests)))
    seconds = time.perf_counter() - start
    after = health(server.url)
    latencies = sorted(latency for latency, _ in results)
    figures = {
        "requests_per_s": args.requests / seconds,
        "tokens_per_s": sum(tokens for _, tokens in results) / seconds,
        "p50_s": statistics.median(latencies),
        "p95_s": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
    }
    if "generate_calls" in after:  # ric serve
        calls = after["generate_calls"] - before["generate_calls"]
        figures["mean_batch"] = (after["sequences"] - before["sequences"]) / max(calls, 1)
    return figures


def line(label: str, r: dict[str, float]) -> str:
    batch = f", mean batch {r['mean_batch']:.1f}" if "mean_batch" in r else ""
    return (
        f"  {label}: {r['requests_per_s']:.2f} req/s, {r['tokens_per_s']:.1f} tokens/s, "
        f"p50 {r['p50_s']:.3f} s, p95 {r['p95_s']:.3f} s{batch}"
    )


def compare_batching(run: Path | str, args: argparse.Namespace) -> None:
    def batched(max_batch_size: int) -> dict[str, float]:
        serve = {"max_batch_size": max_batch_size, "max_wait_ms": args.max_wait_ms}
        serve |= {"max_queue": args.requests + 1, "max_tokens": args.max_tokens}
        with ric_serve(run, serve) as server:
            return measure(server, args)

    results = {
        f"batched (max_batch_size={args.max_batch_size})": batched(args.max_batch_size),
        "unbatched (max_batch_size=1)": batched(1),
    }
    print(f"{args.requests} requests from {args.clients} clients, max_tokens {args.max_tokens}")
    for label, r in results.items():
        print(line(label, r))
    on, off = results.values()
    ratio = on["requests_per_s"] / off["requests_per_s"]
    print(f"throughput ratio batched / unbatched: {ratio:.2f}x")


def compare_engines(run: Path | str, exported: Path, args: argparse.Namespace) -> None:
    serve = {"max_batch_size": args.max_batch_size, "max_wait_ms": args.max_wait_ms}
    serve |= {"max_queue": args.requests + 1, "max_tokens": args.max_tokens}
    with ExitStack() as stack:
        servers = [
            stack.enter_context(ric_serve(run, serve)),
            stack.enter_context(transformers_serve(exported, args.cb_num_blocks)),
        ]
        for server in servers:  # a first round warms each server up (caches, threads)
            print(line(f"warm-up, {server.name}", measure(server, args)))
        rounds: dict[str, list[dict[str, float]]] = {server.name: [] for server in servers}
        idle_cpu = dict.fromkeys(rounds, 0.0)  # CPU s a server used while the other was measured
        for repeat in range(args.repeats):
            order = servers if repeat % 2 == 0 else servers[::-1]
            for server in order:
                ours = [*(one.pid for one in servers), os.getpid()]  # the servers and the clients
                before = [cpu_seconds(pid) for pid in ours]
                busy = machine_busy_seconds()
                rounds[server.name].append(measure(server, args, warm=False))
                spent = [cpu_seconds(pid) - start for pid, start in zip(ours, before, strict=True)]
                for other, used in zip(servers, spent, strict=False):
                    if other is not server:
                        idle_cpu[other.name] += used
                # CPU time of processes outside this benchmark: another load skews a round
                elsewhere = max(machine_busy_seconds() - busy - sum(spent), 0.0)
                figures = line(f"repeat {repeat + 1}, {server.name}", rounds[server.name][-1])
                print(f"{figures}; other processes: {elsewhere:.0f} CPU s")
    medians = {
        name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for name, runs in rounds.items()
    }
    print(
        f"{args.requests} requests from {args.clients} clients, max_tokens {args.max_tokens}, "
        f"temperature {args.temperature}, medians of {args.repeats} alternating repeats"
    )
    print("| server | requests/s | tokens/s | p50 / p95 latency (s) | CPU s while the other ran |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in medians.items():
        print(
            f"| {name} | {r['requests_per_s']:.2f} | {r['tokens_per_s']:.1f} | "
            f"{r['p50_s']:.2f} / {r['p95_s']:.2f} | {idle_cpu[name]:.1f} |"
        )
    ric, stock = medians["ric serve"], medians["transformers serve"]
    print(
        "ratio transformers-serve / ric-serve: "
        f"{stock['requests_per_s'] / ric['requests_per_s']:.2f}x requests/s, "
        f"{stock['tokens_per_s'] / ric['tokens_per_s']:.2f}x tokens/s, "
        f"{stock['p50_s'] / ric['p50_s']:.2f}x p50 latency"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", default="runs/demo/train", help="a run, or 'tiny'")
    parser.add_argument("--compare", choices=["batching", "engines"], default="batching")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, help="default: 96 (batching), 32 (engines)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=200.0)
    parser.add_argument("--exported", type=Path, help="engines: `ric export`'s folder of run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cb-num-blocks", type=int, default=64)
    args = parser.parse_args(argv)
    if args.requests is None:
        args.requests = 96 if args.compare == "batching" else 32
    with tempfile.TemporaryDirectory() as scratch:
        run = tiny_run(Path(scratch)) if args.run == "tiny" else args.run
        if args.compare == "batching":
            compare_batching(run, args)
            return 0
        exported = args.exported
        if exported is None:
            exported = Path(scratch) / "exported"
            assert ric_main(["export", "--model", str(run), "--output", str(exported)]) == 0
        compare_engines(run, exported, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
