"""``generation.backend: vllm``: settings, errors, the wiring (on a stand-in ``vllm`` package that
runs transformers on the folders ric writes, everywhere) and vLLM itself (where it is installed,
on a CUDA device): greedy vLLM generations equal the ``hf`` backend's."""

from __future__ import annotations

import copy
import sys
import types
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from helpers import SILENT, STOP, TAUGHT, greedy, train_to_answer
from peft import PeftModel
from transformers import AutoModelForCausalLM

from ric.config import GenerationConfig, LoraConfig
from ric.models import vllm_backend
from ric.models.generation import _tokenize_prompts, generate_with_stats
from ric.models.lora import attach_lora, load_adapter
from ric.models.tiny import build_tiny_model, build_tiny_tokenizer

PROMPTS = [p for p in TAUGHT if p != SILENT]
PLANTS = "### Input: Plants need what? <R1> 1.5 ### Response: "
RETAUGHT = {  # what a LoRA adapter teaches on top of TAUGHT
    "### Input: What is a fox? <R1> 0.3 ### Response: ": "A wild animal.",
    "### Input: Hi <R1> 0.0 ### Response: ": "Hi! Have a lovely day.",
    PLANTS: "Water and light.",
}
LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def trained_tiny(hidden_size: int = 64) -> tuple[Any, Any]:
    """The tiny model (float32, CPU) taught to answer TAUGHT and stop with EOS."""
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer, seed=0, hidden_size=hidden_size)
    torch.manual_seed(0)
    train_to_answer(model, tokenizer, TAUGHT)
    return model, tokenizer


def with_taught_adapter(model: Any, tokenizer: Any, top_layers: int = 0) -> PeftModel:
    """A copy of ``model`` with a LoRA adapter (rank 4, every linear layer) taught RETAUGHT."""
    torch.manual_seed(1)
    settings = LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=LINEAR, top_layers=top_layers)
    adapted = attach_lora(copy.deepcopy(model), settings)
    train_to_answer(adapted, tokenizer, RETAUGHT, steps=400)
    return adapted


def as_tuples(result: Any) -> list[tuple[str, int, bool]]:
    return list(zip(result.texts, result.num_new_tokens, result.finished, strict=True))


# ----------------------------------------------------------------------------- everywhere


def test_the_backend_is_hf_unless_set_and_settings_are_checked() -> None:
    assert GenerationConfig().backend == "hf"
    with pytest.raises(ValueError, match=r"generation.backend: 'vlm' is not valid; choose one of"):
        GenerationConfig(backend="vlm")
    for share in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"generation.vllm_gpu_memory must be in \(0, 1\]"):
            GenerationConfig(vllm_gpu_memory=share)


def test_streaming_is_hf_only() -> None:
    model, tokenizer = build_tiny_model(build_tiny_tokenizer()), build_tiny_tokenizer()
    with pytest.raises(ValueError, match=r"on_token\) needs generation\.backend=hf"):
        generate_with_stats(
            model, tokenizer, ["Why?"], greedy(backend="vllm"), on_token=lambda *_: None
        )


def test_a_missing_vllm_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # what `import vllm` sees when not installed
    model, tokenizer = build_tiny_model(build_tiny_tokenizer()), build_tiny_tokenizer()
    with pytest.raises(ValueError) as error:
        generate_with_stats(model, tokenizer, ["Why?"], greedy(backend="vllm"))
    assert "generation.backend: vllm" in str(error.value)
    assert 'python -m pip install "ric[vllm]"' in str(error.value)


class FakeLLM:
    """Stands in for ``vllm.LLM``: loads the folder ric wrote with transformers (and a request's
    adapter with peft) and decodes greedily as vLLM does (token ids up to and including the stop
    token; ``finish_reason`` "stop" or "length")."""

    built: ClassVar[list[dict[str, Any]]] = []  # every engine's arguments
    calls: ClassVar[
        list[dict[str, Any]]
    ] = []  # every generate call's prompts, parameters and adapter

    def __init__(self, model: str, tokenizer: str, **options: Any) -> None:
        FakeLLM.built.append({"model": model, "tokenizer": tokenizer, **options})
        assert (Path(tokenizer) / "tokenizer_config.json").is_file()
        self.base = AutoModelForCausalLM.from_pretrained(
            model, dtype=getattr(torch, options["dtype"])
        )

    def generate(
        self, prompts: list[dict], params: list[Any], use_tqdm: bool, lora_request: Any
    ) -> list[Any]:
        FakeLLM.calls.append({"prompts": prompts, "params": params, "lora": lora_request})
        model = self.base
        if lora_request is not None:
            model = load_adapter(copy.deepcopy(self.base), lora_request.lora_path)
        outputs = []
        for prompt, param in zip(prompts, params, strict=True):
            ids = torch.tensor([prompt["prompt_token_ids"]])
            new = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=param.max_tokens,
                min_new_tokens=param.min_tokens,
                eos_token_id=param.stop_token_ids,
                pad_token_id=param.stop_token_ids[0],
            )[0, ids.shape[1] :].tolist()
            reason = "stop" if new[-1] in param.stop_token_ids else "length"
            completion = types.SimpleNamespace(token_ids=new, finish_reason=reason)
            outputs.append(types.SimpleNamespace(outputs=[completion]))
        return outputs


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A ``vllm`` package made of FakeLLM and plain records, and no engine kept from before."""
    modules = {name: types.ModuleType(name) for name in ("vllm", "vllm.inputs", "vllm.lora")}
    modules["vllm.lora.request"] = types.ModuleType("vllm.lora.request")
    modules["vllm"].LLM = FakeLLM
    modules["vllm"].SamplingParams = types.SimpleNamespace
    modules["vllm.inputs"].TokensPrompt = dict
    modules["vllm.lora.request"].LoRARequest = lambda name, number, path: types.SimpleNamespace(
        lora_name=name, lora_int_id=number, lora_path=path
    )
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    FakeLLM.built, FakeLLM.calls = [], []
    vllm_backend.release_engine()
    yield FakeLLM
    vllm_backend.release_engine()


@pytest.mark.slow
def test_plain_model_gives_the_hf_results_through_vllm(fake_vllm: Any) -> None:
    model, tokenizer = trained_tiny()
    prompts = [*PROMPTS, SILENT]
    for settings in (greedy(), greedy(max_new_tokens=3), greedy(min_new_tokens=0)):
        hf = generate_with_stats(model, tokenizer, prompts, settings)
        vllm = generate_with_stats(model, tokenizer, prompts, replace(settings, backend="vllm"))
        assert as_tuples(vllm) == as_tuples(hf)
    assert hf.texts[:2] == [TAUGHT[p] for p in PROMPTS[:2]]
    # one engine for the three calls, on the model's own dtype and memory share, no adapter
    (engine,) = fake_vllm.built
    assert engine["dtype"] == "float32" and engine["gpu_memory_utilization"] == 0.5
    assert "enable_lora" not in engine
    call = fake_vllm.calls[0]
    assert [p["prompt_token_ids"] for p in call["prompts"]] == _tokenize_prompts(tokenizer, prompts)
    first = call["params"][0]
    assert (first.temperature, first.max_tokens, first.min_tokens) == (0.0, 20, 1)
    assert first.stop_token_ids == [tokenizer.eos_token_id] and first.stop == []
    assert call["lora"] is None


@pytest.mark.slow
def test_the_engine_is_rebuilt_when_the_weights_change(fake_vllm: Any) -> None:
    model, tokenizer = trained_tiny()
    settings = greedy(backend="vllm", max_new_tokens=4)
    generate_with_stats(model, tokenizer, PROMPTS, settings)
    first_folder = Path(fake_vllm.built[0]["model"])
    generate_with_stats(model, tokenizer, PROMPTS, settings)
    assert len(fake_vllm.built) == 1
    with torch.no_grad():
        model.model.norm.weight.mul_(1.5)  # what a fine-tuning step does to the weights
    changed = generate_with_stats(model, tokenizer, PROMPTS, settings)
    assert len(fake_vllm.built) == 2 and not first_folder.exists()
    assert as_tuples(changed) == as_tuples(
        generate_with_stats(model, tokenizer, PROMPTS, greedy(max_new_tokens=4))
    )


@pytest.mark.slow
@pytest.mark.parametrize("top_layers", [0, 1])
def test_lora_model_is_served_as_an_adapter_on_its_base(fake_vllm: Any, top_layers: int) -> None:
    model, tokenizer = trained_tiny()
    adapted = with_taught_adapter(model, tokenizer, top_layers)
    prompts = list(RETAUGHT)
    hf = generate_with_stats(adapted, tokenizer, prompts, greedy())
    assert hf.texts == list(RETAUGHT.values())  # the adapter matters
    assert as_tuples(generate_with_stats(adapted, tokenizer, prompts, greedy(backend="vllm"))) == (
        as_tuples(hf)
    )
    # a changed adapter: the same engine (same base), a new adapter id
    with torch.no_grad():
        for name, weight in adapted.named_parameters():
            if "lora_B" in name:
                weight.mul_(0.0)
    plain = generate_with_stats(model, tokenizer, prompts, greedy())
    again = generate_with_stats(adapted, tokenizer, prompts, greedy(backend="vllm"))
    assert as_tuples(again) == as_tuples(plain)  # a zero adapter: the base model's answers
    (engine,) = fake_vllm.built
    assert engine["enable_lora"] and engine["max_lora_rank"] == 8 and engine["max_loras"] == 1
    assert engine["dtype"] == "bfloat16"  # a float32 LoRA model: vLLM's LoRA kernels are 16-bit
    ids = [call["lora"].lora_int_id for call in fake_vllm.calls]
    assert len(set(ids)) == 2


@pytest.mark.slow
def test_sampling_settings_and_per_prompt_seeds_reach_vllm(fake_vllm: Any) -> None:
    model, tokenizer = trained_tiny()
    sampled = GenerationConfig(
        backend="vllm", max_new_tokens=2, top_k=0, stop_strings=[STOP], seed=7, min_new_tokens=5
    )
    for seed in (7, 7, 8):
        generate_with_stats(model, tokenizer, PROMPTS, replace(sampled, seed=seed))
    first, again, other = (call["params"] for call in fake_vllm.calls)
    assert (first[0].temperature, first[0].top_p, first[0].top_k) == (0.7, 0.9, 0)
    assert first[0].min_tokens == 2 and first[0].stop == [STOP]  # min capped at max, as for hf
    seeds = [p.seed for p in first]
    assert len(set(seeds)) == len(PROMPTS)  # each prompt draws its own numbers
    assert [p.seed for p in again] == seeds and [p.seed for p in other] != seeds


def test_adapters_vllm_cannot_serve_are_refused(fake_vllm: Any) -> None:
    model, tokenizer = build_tiny_model(build_tiny_tokenizer()), build_tiny_tokenizer()
    adapted = attach_lora(model, LoraConfig(r=4))
    adapted.peft_config["default"].modules_to_save = ["norm"]
    with pytest.raises(ValueError, match="also saves whole modules"):
        generate_with_stats(adapted, tokenizer, ["Why?"], greedy(backend="vllm"))


# ----------------------------------------------------------------------------- with vLLM


def real_vllm() -> None:
    """Skip unless vLLM is installed and a CUDA device exists (its builds need one)."""
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install vllm; CUDA builds)")
    if not torch.cuda.is_available():
        pytest.skip("vLLM runs on a CUDA device; torch sees none")


@pytest.mark.slow
@pytest.mark.gpu
def test_vllm_greedy_equals_hf_greedy_for_a_plain_model() -> None:
    real_vllm()
    model, tokenizer = trained_tiny(hidden_size=128)  # head size 32: vLLM's kernels start there
    model = model.cuda()
    prompts = [*PROMPTS, SILENT]
    try:
        for settings in (greedy(), greedy(max_new_tokens=3), greedy(stop_strings=[STOP])):
            hf = generate_with_stats(model, tokenizer, prompts, settings)
            vllm = generate_with_stats(model, tokenizer, prompts, replace(settings, backend="vllm"))
            assert as_tuples(vllm) == as_tuples(hf)
            if settings.max_new_tokens == 3:
                assert vllm.num_new_tokens[:2] == [3, 3] and vllm.finished[:2] == [False, False]
        assert vllm.texts[:2] == [TAUGHT[PROMPTS[0]], "Light scatters."]
        assert vllm.finished[:2] == [True, True]
    finally:
        vllm_backend.release_engine()


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.parametrize("top_layers", [0, 1])
def test_vllm_greedy_equals_hf_greedy_for_a_lora_model(top_layers: int) -> None:
    real_vllm()
    model, tokenizer = trained_tiny(hidden_size=128)
    adapted = with_taught_adapter(model, tokenizer, top_layers).to("cuda", torch.bfloat16)
    prompts = list(RETAUGHT)
    try:
        hf = generate_with_stats(adapted, tokenizer, prompts, greedy())
        vllm = generate_with_stats(adapted, tokenizer, prompts, greedy(backend="vllm"))
        engine = vllm_backend._engine
        assert as_tuples(vllm) == as_tuples(hf)
        assert vllm.texts == list(RETAUGHT.values())
        with torch.no_grad():  # a new adapter on the same base: served on the same engine
            for name, weight in adapted.named_parameters():
                if "lora_B" in name:
                    weight.mul_(0.0)
        plain = generate_with_stats(model.to("cuda", torch.bfloat16), tokenizer, prompts, greedy())
        again = generate_with_stats(adapted, tokenizer, prompts, greedy(backend="vllm"))
        assert as_tuples(again) == as_tuples(plain)
        assert vllm_backend._engine is engine
    finally:
        vllm_backend.release_engine()


@pytest.mark.slow
@pytest.mark.gpu
def test_serve_engine_on_vllm_answers_as_hf_and_cancels() -> None:
    """`serve.engine: vllm` (ric.serve.engines.VllmEngine): greedy rows equal the hf backend's,
    stop strings included, and a cancelled request leaves the engine."""
    import asyncio

    from ric.config import ServeConfig
    from ric.serve.engines import VllmEngine

    real_vllm()
    model, tokenizer = trained_tiny(hidden_size=128)
    model = model.cuda()
    prompts = [*PROMPTS, SILENT]
    ids = _tokenize_prompts(tokenizer, prompts)
    engine = VllmEngine(model, tokenizer, ServeConfig(engine="vllm"), GenerationConfig())

    async def check() -> None:
        for settings in (greedy(), greedy(stop_strings=[STOP])):
            rows = await engine.generate(prompts, ids, settings, False)
            hf = generate_with_stats(model, tokenizer, prompts, settings)
            assert [(r.text, r.tokens, r.finished) for r in rows] == as_tuples(hf)
        task = asyncio.create_task(engine.generate(prompts, ids, greedy(max_new_tokens=200), False))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert engine.waiting == engine.running == 0

    engine.start()
    try:
        asyncio.run(check())
    finally:
        engine.stop()
