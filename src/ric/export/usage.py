"""How to steer an exported folder from each tool: the model card's "Use it" section.

Every tool steers the same way: the request carries ``chat_template_kwargs`` (``preference``
or ``rewards``) and the folder's chat template turns them into ric's conditioned prompt. What
differs is how each tool loads the folder: a merged model is served as it is; an adapter needs
its base, and the chat template passed explicitly (the base's tokenizer has its own); an adapter
that stores weights whole (PEFT ``modules_to_save``) goes beyond what serving engines' LoRA
support covers (linear layers), so the card says to serve the merged export instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

EXAMPLE_QUESTION = "What is a fox?"
# The ranks vLLM accepts for --max-lora-rank (vllm/config/lora.py).
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def usage_section(
    name: str,
    names: Sequence[str],
    adapter_base: str | None = None,
    rank: int | None = None,
    whole_modules: bool = False,
) -> str:
    """The card's "Use it" section for the folder ``name`` with objectives ``names``: a merged
    model, or (``adapter_base``: where its base is) a LoRA adapter of ``rank``, which with
    ``whole_modules`` also stores weights whole."""
    preference = one_hot(len(names), 0)
    rewards = [1.0] + [-1.0] * (len(names) - 1)
    text = f"""## Use it

Each example asks for `{preference}`: all the weight on `{names[0]}`. In place of
`"preference"`, `"rewards": {rewards}` asks for explicit desired rewards (standardized units).

### transformers

```python
{transformers_code(name, preference, adapter=adapter_base is not None)}
```"""
    if adapter_base is None:
        servers = _merged_servers(name, preference)
    elif whole_modules:
        servers = """### vLLM, SGLang, `transformers serve`

Their LoRA support covers linear layers only, and this adapter also stores some weights whole
(its fine-tuned layers' norm scales, PEFT `modules_to_save`). Serve the merged export instead
(`ric export` without `--adapter`), or merge this one with `model.merge_and_unload()` and
`save_pretrained`."""
    else:
        servers = _adapter_servers(name, preference, adapter_base, rank or 0)
    return f"{text}\n\n{servers}"


def transformers_code(name: str, preference: list[float], adapter: bool = False) -> str:
    """Plain transformers (PEFT for an adapter): load the folder, steer, generate."""
    if adapter:
        loading = f"""from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{name}")
model = AutoPeftModelForCausalLM.from_pretrained("{name}")  # its base, then this adapter"""
    else:
        loading = f"""from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{name}")
model = AutoModelForCausalLM.from_pretrained("{name}")"""
    return f"""{loading}

messages = [{{"role": "user", "content": "{EXAMPLE_QUESTION}"}}]
inputs = tokenizer.apply_chat_template(
    messages, preference={preference}, add_generation_prompt=True, return_dict=True,
    return_tensors="pt",
)
# generation_config.json holds the run's sampling settings; tokenizer= serves its stop strings
output = model.generate(**inputs, tokenizer=tokenizer)
print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))"""


def _client(model: str, preference: list[float], port: int) -> str:
    """The ``openai`` client asking the server on ``port`` for ``preference``."""
    kwargs = json.dumps({"preference": preference})
    return f"""```python
from openai import OpenAI

client = OpenAI(base_url="http://localhost:{port}/v1", api_key="none")
answer = client.chat.completions.create(
    model="{model}",
    messages=[{{"role": "user", "content": "{EXAMPLE_QUESTION}"}}],
    extra_body={{"chat_template_kwargs": {kwargs}}},
)
print(answer.choices[0].message.content)
```"""


def _merged_servers(name: str, preference: list[float]) -> str:
    kwargs = json.dumps({"preference": preference})
    return f"""### vLLM

```bash
vllm serve {name}
```

{_client(name, preference, 8000)}

### SGLang

```bash
python -m sglang.launch_server --model-path {name} --port 30000
```

The client above, with port 30000: the same `extra_body`.

### `transformers serve` (CPU or GPU)

```bash
transformers serve --continuous-batching {name}  # on a CPU add: --device cpu --cb-num-blocks 64
```

The client above (port 8000); `--chat-template-kwargs '{kwargs}'` sets the server's default for
requests that give none. transformers 5.25 samples each request with its own temperature and
top-p (5.24's `--continuous-batching` keeps the first request's for the server's life); on a
CPU, `--cb-num-blocks` bounds the KV cache, which otherwise takes most of the machine's memory."""


def _adapter_servers(name: str, preference: list[float], base: str, rank: int) -> str:
    max_rank = next((r for r in VLLM_LORA_RANKS if r >= rank), rank)
    return f"""### vLLM

The base model, this adapter by name, and this folder's chat template (the base's own knows no
preference):

```bash
vllm serve {base} --enable-lora --lora-modules {name}={name} --max-lora-rank {max_rank} \\
    --chat-template {name}/chat_template.jinja
```

{_client(name, preference, 8000)}

### SGLang

```bash
python -m sglang.launch_server --model-path {base} --lora-paths {name}={name} \\
    --max-lora-rank {max_rank} --chat-template {name}/chat_template.jinja --port 30000
```

The client above, with port 30000: the same `extra_body`. `transformers serve` takes no
adapters: serve the merged export (`ric export` without `--adapter`)."""


def one_hot(count: int, index: int) -> list[float]:
    """The preference that puts all the weight on objective ``index`` of ``count``."""
    return [1.0 if i == index else 0.0 for i in range(count)]
