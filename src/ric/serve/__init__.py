"""`ric serve`: one trained RiC run behind an OpenAI-compatible HTTP API, where every request
carries its own preference (or desired rewards).

``ric.serve.guardrails`` turns a request into desired rewards (through ``ric.steering``, bounds
included) and a chat into a prompt, ``ric.serve.engines`` generates on a maintained engine's
continuous batching (transformers', or vLLM's), ``ric.serve.deployment`` holds the run served,
``ric.serve.wire`` speaks OpenAI's format, ``ric.serve.access`` checks API keys and CORS,
``ric.serve.observability`` keeps Prometheus metrics and logs each request, and
``ric.serve.app`` is the FastAPI application's routes. Baseline runs (SFT, MORLHF,
Rewarded Soups) are refused at startup: their prompts carry no rewards, so there is nothing to
steer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ric.config import RicConfig
from ric.runs import load_trained, read_method, run_folder
from ric.runtime import import_optional


def build_app(run: str | Path, config: RicConfig) -> Any:
    """The FastAPI application serving the RiC run ``run``; its id is the folder's name."""
    import_optional("fastapi")
    if config.serve.engine == "vllm":
        import_optional("vllm")  # before the model loads
    from ric.serve.app import create_app

    folder = run_folder(run)
    method = read_method(folder)
    if not method.conditioned:
        raise ValueError(
            f"{str(run)!r} is a {method.name} baseline: its prompts carry no rewards, so it "
            "cannot be steered per request; `ric serve` serves RiC runs (`ric train`, "
            "`ric online`)"
        )
    policy = load_trained(folder, merged=True, dtype=config.model.dtype, device=config.model.device)
    return create_app(policy, config, folder.resolve().name)


def serve(run: str | Path, config: RicConfig) -> None:
    """Serve ``run`` on ``serve.host``:``serve.port`` until interrupted; one JSON line per
    request on stderr (``ric.serve.observability``)."""
    uvicorn = import_optional("uvicorn")
    app = build_app(run, config)
    requests = logging.getLogger("ric.serve.requests")
    if not requests.handlers:
        requests.addHandler(logging.StreamHandler())
        requests.setLevel(logging.INFO)
        requests.propagate = False  # once, not again through the root logger
    uvicorn.run(app, host=config.serve.host, port=config.serve.port)
