"""`ric serve` under load: batching on vs ``serve.max_batch_size=1``, same run, same requests.

Starts the real server (`ric serve` in its own process, as a deployment runs it, so the clients'
threads do not share its interpreter) once per setting, sends ``--requests`` chat completions
from ``--clients`` concurrent clients (the official ``openai`` client, one preference per request
spread over the simplex, no seed so requests may share generate calls), and prints throughput
(requests/s, completion tokens/s), p50/p95 latency, the mean batch (sequences per generate
call, from ``/health``) and the batched/unbatched throughput ratio.

    python benchmarks/bench_serve.py runs/demo/train          # the target: SmolLM2 demo run
    python benchmarks/bench_serve.py tiny --requests 64        # quick smoke on a tiny run

Arguments: ``run`` (a `ric train`/`ric online` output; ``tiny`` builds a tiny trained run in a
temporary folder from examples/qa_pairs.jsonl, about 20 s), ``--clients`` (32), ``--requests``
(96), ``--max-tokens`` (32), ``--max-batch-size`` (32: the batched setting), ``--max-wait-ms``
(200: long enough for answered clients to rejoin the next batch; docs/serving.md). Needs the
``serve`` extra and ``openai``.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
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


@contextmanager
def running(run: Path, serve: dict[str, Any]):
    """`ric serve` on ``run`` in a child process on a free port; yields its base URL."""
    port = free_port()
    settings = [arg for key, value in serve.items() for arg in ("--set", f"serve.{key}={value}")]
    command = [sys.executable, "-m", "ric", "serve", "--model", str(run), "--port", str(port)]
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen([*command, *settings], stdout=subprocess.DEVNULL, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            while server.poll() is None:
                try:
                    health(url)
                    break
                except OSError:
                    time.sleep(0.2)
            else:
                log.seek(0)
                raise RuntimeError(f"`ric serve` exited: {log.read().decode()[-2000:]}")
            yield url
        finally:
            server.terminate()
            server.wait()


def health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/health") as response:
        return json.load(response)


def measure(run: Path, args: argparse.Namespace, max_batch_size: int) -> dict[str, float]:
    serve = {"max_batch_size": max_batch_size, "max_wait_ms": args.max_wait_ms}
    serve |= {"max_queue": args.requests + 1, "max_tokens": args.max_tokens}
    with running(run, serve) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=600)
        model = client.models.list().data[0].id

        def ask(i: int) -> tuple[float, int]:
            w = i / max(args.requests - 1, 1)
            start = time.perf_counter()
            answer = client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                max_tokens=args.max_tokens,
                extra_body={"preference": [w, 1 - w]},
            )
            return time.perf_counter() - start, answer.usage.completion_tokens

        ask(0)  # warm-up
        before = health(url)
        start = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(ask, range(args.requests)))
        seconds = time.perf_counter() - start
        after = health(url)
    latencies = sorted(latency for latency, _ in results)
    calls = after["generate_calls"] - before["generate_calls"]
    return {
        "requests_per_s": args.requests / seconds,
        "tokens_per_s": sum(tokens for _, tokens in results) / seconds,
        "p50_s": statistics.median(latencies),
        "p95_s": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
        "mean_batch": (after["sequences"] - before["sequences"]) / max(calls, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", default="runs/demo/train", help="a run, or 'tiny'")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=200.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        run = tiny_run(Path(scratch)) if args.run == "tiny" else Path(args.run)
        results = {
            f"batched (max_batch_size={args.max_batch_size})": measure(
                run, args, args.max_batch_size
            ),
            "unbatched (max_batch_size=1)": measure(run, args, 1),
        }
    print(f"{args.requests} requests from {args.clients} clients, max_tokens {args.max_tokens}")
    for label, r in results.items():
        print(
            f"  {label}: {r['requests_per_s']:.2f} req/s, {r['tokens_per_s']:.1f} tokens/s, "
            f"p50 {r['p50_s']:.3f} s, p95 {r['p95_s']:.3f} s, mean batch {r['mean_batch']:.1f}"
        )
    batched, unbatched = results.values()
    ratio = batched["requests_per_s"] / unbatched["requests_per_s"]
    print(f"throughput ratio batched / unbatched: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
