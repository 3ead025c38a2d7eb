"""Text-to-image RiC on tiny models built in code: caption conditioning, caption dropout, the
denoising loss falling, exact resume, LoRA on a latent (Stable-Diffusion-layout) pipeline, the
sweep's artifacts, `ric image generate|evaluate|demo` and their errors, the shipped configs."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from ric.cli import main
from ric.config import load_config
from ric.core import parse_prompt
from ric.image.config import ImageRicConfig
from ric.image.label import label_images, read_image_labels
from ric.image.pipeline import (
    build_embedded,
    build_embedded_tokenizer,
    caption_vocabulary,
    fit_caption,
    load_pipeline,
    sample_images,
    save_pipeline,
    to_images,
    to_pixels,
)
from ric.image.train import (
    MODEL_DIR,
    batch_indices,
    drop_captions,
    load_trained_image_model,
    train_image_model,
)
from ric.recipes.image_demo import IMAGE_DEMO_CONFIG, image_demo_config
from ric.tasks.shapes import HELDOUT_FILE, build_shapes

ROOT = Path(__file__).parent.parent
TINY_TRAIN = [
    "train.batch_size=4",
    "train.log_steps=1",
    "train.lr_schedule=constant",
    "train.warmup_steps=0",
    "generation.steps=2",
    "generation.batch_size=8",
]


def image_config(root: Path, *overrides: str) -> ImageRicConfig:
    return load_config(
        IMAGE_DEMO_CONFIG,
        [
            f"data.path={root / 'images'}",
            f"label.output={root / 'label'}",
            f"train.data={root / 'label'}",
            f"train.output={root / 'train'}",
            *TINY_TRAIN,
            *overrides,
        ],
        cls=ImageRicConfig,
    )


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """The demo's shapes, 2 per caption (96 images), labeled by the demo's rewards."""
    root = tmp_path_factory.mktemp("shapes")
    build_shapes(root / "images", images_per_caption=2)
    label_images(image_config(root), show_progress=False)
    return root


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory):
    """The embedded model trained 4 steps on the shapes."""
    output = tmp_path_factory.mktemp("trained") / "train"
    config = image_config(shapes, f"train.output={output}", "train.max_steps=4")
    train_image_model(config, show_progress=False)
    return output


def test_conditioned_caption_round_trip_and_fit_keeps_the_rewards():
    template = ImageRicConfig().template.prompt_template()
    from ric.core import build_prompt

    text = build_prompt("a red circle on a grey background", [0.34, -1.26], template)
    assert text == "a red circle on a grey background <R1> 0.3 <R2> -1.3"
    assert parse_prompt(text, template) == ("a red circle on a grey background", [0.3, -1.3])
    pipeline = build_embedded(["a red circle on a grey background"], 2, seed=0)
    pipeline.tokenizer.model_max_length = 16  # [BOS] + 13 reward pieces + [EOS] leave 1 word
    fitted = fit_caption(
        pipeline,
        "a red circle on a grey background",
        lambda c: build_prompt(c, [0.34, -1.26], template),
    )
    assert fitted == "a <R1> 0.3 <R2> -1.3"
    pipeline.tokenizer.model_max_length = 10
    with pytest.raises(ValueError, match="reward values alone"):
        fit_caption(pipeline, "a red circle", lambda c: build_prompt(c, [0.3, -1.3], template))


def test_embedded_tokenizer_reads_every_reward_piece():
    tokenizer = build_embedded_tokenizer(caption_vocabulary(["A Red circle"], 2))
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("a red circle <R1> -0.3 <R2> 1.5").input_ids)
    assert "[UNK]" not in tokens
    assert tokens[:4] == ["[BOS]", "a", "red", "circle"] and tokens[-1] == "[EOS]"
    assert tokenizer.convert_ids_to_tokens(tokenizer("a blue box").input_ids)[2:4] == [
        "[UNK]",
        "[UNK]",
    ]


def test_caption_dropout_rate_and_determinism():
    captions = ["a caption"] * 20_000
    dropped = drop_captions(captions, 0.05, torch.Generator().manual_seed(0))
    assert 0.045 < dropped.count("") / len(captions) < 0.055
    again = drop_captions(captions, 0.05, torch.Generator().manual_seed(0))
    assert again == dropped
    assert "" not in drop_captions(captions[:100], 0.0, torch.Generator().manual_seed(0))


def test_batch_indices_cover_each_epoch_once():
    steps = [batch_indices(10, 4, seed=3, step=s) for s in range(5)]  # 20 rows: 2 epochs
    flat = np.concatenate(steps)
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert np.array_equal(batch_indices(10, 4, seed=3, step=2), steps[2])  # no replay needed
    assert not np.array_equal(
        flat[:10], np.concatenate([batch_indices(10, 4, seed=4, step=s) for s in range(3)])[:10]
    )


def test_pixels_round_trip():
    image = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3) * 5)
    pixels = to_pixels([image], 4)
    assert pixels.shape == (1, 3, 4, 4) and pixels.min() >= -1 and pixels.max() <= 1
    assert np.array_equal(np.asarray(to_images(pixels)[0]), np.asarray(image))


@pytest.mark.slow
def test_loss_falls_and_the_model_saves_whole(shapes, tmp_path):
    config = image_config(
        shapes,
        f"train.output={tmp_path / 'train'}",
        "train.max_steps=30",
        "train.learning_rate=0.002",
    )
    result = train_image_model(config, show_progress=False)
    log = [json.loads(line) for line in (tmp_path / "train" / "train_log.jsonl").open()]
    losses = [entry["loss"] for entry in log]
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert result.final_loss == losses[-1]
    for part in ("unet", "text_encoder", "tokenizer", "scheduler"):
        assert (tmp_path / "train" / MODEL_DIR / part).is_dir()
    assert (tmp_path / "train" / "stats.json").is_file()


@pytest.mark.slow
def test_resume_after_a_kill_equals_the_uninterrupted_run(shapes, tmp_path, monkeypatch):
    import ric.image.train as train_module

    settings = ["train.max_steps=6", "train.save_steps=3", "train.caption_dropout=0.3"]
    straight = image_config(shapes, f"train.output={tmp_path / 'straight'}", *settings)
    train_image_model(straight, show_progress=False)

    real_save = train_module.save_checkpoint

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt  # the process is killed right after its first checkpoint

    killed = image_config(shapes, f"train.output={tmp_path / 'killed'}", *settings)
    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_image_model(killed, show_progress=False)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    with pytest.raises(ValueError, match="--resume"):
        train_image_model(killed, show_progress=False)
    result = train_image_model(killed, resume=True, show_progress=False)
    assert result.resumed_from == 3

    def losses(run):
        return [json.loads(line)["loss"] for line in (tmp_path / run / "train_log.jsonl").open()]

    assert losses("killed") == pytest.approx(losses("straight"), rel=1e-5)
    a = load_trained_image_model(tmp_path / "straight").pipeline
    b = load_trained_image_model(tmp_path / "killed").pipeline
    for x, y in zip(a.unet.parameters(), b.unet.parameters(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6)
    # A finished run is kept, not trained again.
    again = train_image_model(killed, resume=True, show_progress=False)
    assert again.resumed_from == again.steps == 6


def tiny_latent_pipeline(folder: Path) -> Path:
    """A Stable-Diffusion-layout folder (unet/ on 4 latent channels, vae/, text_encoder/,
    tokenizer/, scheduler/) of tiny random parts, as a user's local SD copy would be laid out."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    pipeline = build_embedded(["a red circle on a grey background"], 2, seed=0)
    pipeline.unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=64,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    pipeline.vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(16, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8,
        sample_size=16,
    )
    pipeline.resolution, pipeline.source = 16, str(folder)
    save_pipeline(pipeline, folder, ["unet", "vae", "text_encoder", "tokenizer", "scheduler"])
    (folder / "ric_pipeline.json").unlink()  # a plain diffusers folder knows nothing of ric
    return folder


@pytest.mark.slow
def test_lora_on_a_latent_pipeline_trains_saves_only_the_adapter_and_loads(shapes, tmp_path):
    source = tiny_latent_pipeline(tmp_path / "sd")
    loaded = load_pipeline(str(source))
    assert loaded.vae is not None and loaded.resolution == 16
    assert loaded.sample_shape == (4, 8, 8)
    config = image_config(
        shapes,
        f"train.output={tmp_path / 'lora'}",
        f"model.source={source}",
        "lora.enabled=true",
        "lora.r=4",
        "train.max_steps=3",
        "train.learning_rate=0.01",
        "train.train_text_encoder=false",
    )
    train_image_model(config, show_progress=False)
    model = tmp_path / "lora" / MODEL_DIR
    assert (model / "unet_lora" / "adapter.safetensors").is_file()
    assert not (model / "unet").exists() and not (model / "vae").exists()
    trained = load_trained_image_model(tmp_path / "lora")
    lora_b = [p for name, p in trained.pipeline.unet.named_parameters() if "lora_B" in name]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # the adapter moved from its init
    base = load_pipeline(str(source))
    image_trained, image_base = (
        sample_images(p, ["a red circle"], [7], steps=2, guidance_scale=2.0)[0]
        for p in (trained.pipeline, base)
    )
    assert image_trained.size == (16, 16)
    assert not np.array_equal(np.asarray(image_trained), np.asarray(image_base))


@pytest.mark.slow
def test_gradient_accumulation_counts_every_micro_batch(shapes, tmp_path):
    settings = ["train.max_steps=2", "train.batch_size=2", "train.gradient_accumulation_steps=3"]
    result = train_image_model(
        image_config(shapes, f"train.output={tmp_path / 'acc'}", *settings), show_progress=False
    )
    metrics = json.loads((tmp_path / "acc" / "metrics.json").read_text())
    assert metrics["images_seen"] == 2 * 2 * 3 and np.isfinite(result.final_loss)


def test_lora_on_the_embedded_model_is_refused(shapes, tmp_path):
    config = image_config(shapes, f"train.output={tmp_path / 'x'}", "lora.enabled=true")
    with pytest.raises(ValueError, match=r"lora\.enabled needs a pretrained"):
        train_image_model(config, show_progress=False)
    assert not (tmp_path / "x").exists()


def test_the_sweep_gives_each_caption_and_image_the_same_noise_under_every_target(shapes, tmp_path):
    """`ric image evaluate`'s generation and scoring, on the embedded model untrained (the sweep
    of a trained one is the slow tests'): targets outermost, then captions, then images, and
    image j of caption i drawn from the same seed under every target."""
    from ric.image.evaluate import caption_seeds, draw_image_grid, generate_for_targets, score_all
    from ric.image.train import TrainedImageModel

    labels = read_image_labels(shapes / "label")
    config = image_config(shapes)
    captions = ["a red circle on a grey background", "a blue square on a white background"]
    model = TrainedImageModel(build_embedded(captions, 2, seed=0), labels.stats, config)
    assert caption_seeds(2, 3, seed=10).tolist() == [10, 11, 12, 13, 14, 15]
    same = np.array([[0.5, -0.5], [0.5, -0.5]])  # one target twice: the same images twice
    texts, images = generate_for_targets(model, config, captions, same, 2, False, "sweep")
    assert len(texts) == len(images) == 8 and texts[:4] == texts[4:]
    assert texts[0] == texts[1] == "a red circle on a grey background <R1> 0.5 <R2> -0.5"
    assert texts[2].startswith("a blue square")
    pixels = [np.asarray(image) for image in images]
    assert all(np.array_equal(a, b) for a, b in zip(pixels[:4], pixels[4:], strict=True))
    assert not np.array_equal(pixels[0], pixels[1])  # image 0 and 1 of a caption: other noise
    scores = score_all(labels.stats, [captions[0]] * 2 + [captions[1]] * 2, images[:4])
    expected = [label_scores(labels, image, captions[i // 2]) for i, image in enumerate(images[:4])]
    np.testing.assert_allclose(scores, expected, rtol=1e-9)
    grid = draw_image_grid(
        images[:4], captions, np.array([[0.2, 0.8], [0.9, 0.1]]), tmp_path / "g.png"
    )
    assert Image.open(grid).format == "PNG"


@pytest.mark.slow
def test_sampling_is_seeded_per_image(trained):
    pipeline = load_trained_image_model(trained).pipeline
    batch = sample_images(pipeline, ["a red circle", "a blue square"], [5, 6], 2, 3.0)
    alone = sample_images(pipeline, ["a blue square"], [6], 2, 3.0)
    assert np.array_equal(np.asarray(batch[1]), np.asarray(alone[0]))
    other = sample_images(pipeline, ["a blue square"], [7], 2, 3.0)
    assert not np.array_equal(np.asarray(other[0]), np.asarray(alone[0]))


@pytest.mark.slow
def test_a_trained_image_run_loads_in_the_dtype_asked(trained):
    assert load_trained_image_model(trained).pipeline.unet.dtype == torch.float32  # the run's
    half = load_trained_image_model(trained, dtype="bfloat16").pipeline
    assert half.unet.dtype == torch.bfloat16 and half.text_encoder.dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"model\.dtype: 'int8' is not valid"):
        load_trained_image_model(trained, dtype="int8")


@pytest.mark.slow
def test_generate_cli_writes_images_and_records(trained, tmp_path, capsys):
    args = [
        "image",
        "generate",
        "--model",
        str(trained),
        "--caption",
        "a red circle on a grey background",
        "--preference",
        "0.8,0.2",
        "--num-images",
        "2",
        "--output",
        str(tmp_path / "out"),
        "--no-progress",
    ]
    assert main(args) == 0
    records = [json.loads(line) for line in (tmp_path / "out" / "generations.jsonl").open()]
    assert [r["seed"] for r in records] == [0, 1]
    assert records[0]["conditioned_caption"].startswith("a red circle on a grey background <R1>")
    assert Image.open(records[1]["file"]).size == (32, 32)
    assert main([*args[:-3], "--output", str(tmp_path / "again"), "--no-progress"]) == 0
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "out" / "000-0.png")),
        np.asarray(Image.open(tmp_path / "again" / "000-0.png")),
    )
    capsys.readouterr()
    assert main([*args[:6], "--preference", "0.2,0.3,0.5", "--output", str(tmp_path / "bad")]) == 2
    error = capsys.readouterr().err
    assert "--preference has 3 values; the model has 2 objectives" in error
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_evaluate_cli_writes_the_sweep(trained, shapes, tmp_path, capsys):
    output = tmp_path / "eval"
    args = [
        "image",
        "evaluate",
        "--model",
        str(trained),
        "--prompts",
        str(shapes / "images" / HELDOUT_FILE),
        "--output",
        str(output),
        "--no-progress",
        "--set",
        "evaluate.num_prompts=2",
        "--set",
        "evaluate.images_per_prompt=1",
        "--set",
        "evaluate.grid_captions=2",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((output / "metrics.json").read_text())
    low, high = metrics["intervals"]["hypervolume"]  # over resampled captions
    assert low <= high and f"(95% interval {low:.4g} to {high:.4g})" in printed
    assert metrics["num_preferences"] == 11 and set(metrics["probe"]) == {
        "compressibility",
        "sharpness",
    }
    samples = pd.read_parquet(output / "samples.parquet")
    assert len(samples) == 22 and len(list((output / "images").glob("*.png"))) == 22
    # The same caption and image index start from the same noise under every preference.
    assert samples.groupby("preference_index")["seed"].apply(list).map(tuple).nunique() == 1
    labels = read_image_labels(shapes / "label")
    first = samples.iloc[0]
    rescored = label_scores(labels, Image.open(output / first["file"]), first["caption"])
    assert rescored == pytest.approx(
        [first["reward_compressibility"], first["reward_sharpness"]], rel=1e-9
    )
    report = (output / "report.md").read_text()
    assert "![images](image_grid.png)" in report
    assert Image.open(output / "image_grid.png").size[0] > 11 * 32


def label_scores(labels, image, caption):
    from ric.data.io import stats_rewards
    from ric.image.rewards import create_image_reward

    return [
        float(create_image_reward(r.type, r.options).score([caption], [image])[0])
        for r in stats_rewards(labels.stats)
    ]


@pytest.mark.slow
def test_label_and_train_through_the_cli(shapes, tmp_path, capsys):
    label = ["image", "label", "--data", str(shapes / "images"), "--output", str(tmp_path / "l")]
    rewards = ["--reward", "compressibility", "--reward", "colourfulness", "--no-progress"]
    assert main([*label, *rewards]) == 0
    out = capsys.readouterr().out
    assert "scored 96 images with compressibility, colourfulness" in out
    train = ["image", "train", "--data", str(tmp_path / "l"), "--output", str(tmp_path / "t")]
    settings = ["train.max_steps=2", "train.batch_size=2", "train.save_steps=1"]
    assert main([*train, "--no-progress", *(f"--set={s}" for s in settings)]) == 0
    assert "trained 2 steps (from step 0)" in capsys.readouterr().out
    assert load_trained_image_model(tmp_path / "t").stats.names == (
        "compressibility",
        "colourfulness",
    )


def test_label_reuses_its_shards_and_refuses_mixed_folders(shapes, tmp_path):
    import shutil

    copy = tmp_path / "label"
    shutil.copytree(shapes / "label", copy)
    cache = sorted((copy / ".label-cache").rglob("shard-*.parquet"))
    stamps = [path.stat().st_mtime_ns for path in cache]
    label_images(image_config(shapes, f"label.output={copy}"), show_progress=False)
    assert [path.stat().st_mtime_ns for path in cache] == stamps
    frame = pd.read_parquet(copy / "scored.parquet")
    frame.iloc[:3].to_parquet(copy / "scored.parquet")
    with pytest.raises(ValueError, match="different data"):
        read_image_labels(copy)


def test_label_refuses_non_finite_scores_and_writes_nothing(shapes, tmp_path):
    config = image_config(shapes, f"label.output={tmp_path / 'label'}")
    config.rewards[1].type, config.rewards[1].options = "image_user_rewards:nan_at_third", {}
    with pytest.raises(ValueError, match="nan"):
        label_images(config, show_progress=False)
    assert not (tmp_path / "label" / "scored.parquet").exists()


@pytest.mark.slow
def test_image_demo_smoke_runs_end_to_end(tmp_path, capsys):
    assert (
        main(["image", "demo", "--smoke", "--output", str(tmp_path / "demo"), "--no-progress"]) == 0
    )
    out = capsys.readouterr().out
    assert f"report: {tmp_path / 'demo' / 'evaluate' / 'report.md'}" in out
    assert "Spearman(w1, mean)" in out
    timing = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert timing["smoke"] is True and set(timing["seconds"]) >= {"train", "evaluate"}


def test_every_shipped_image_config_loads(tmp_path):
    configs = [IMAGE_DEMO_CONFIG, *sorted((ROOT / "configs" / "image").glob("*.yaml"))]
    assert len(configs) >= 2
    for path in configs:
        config = load_config(path, cls=ImageRicConfig)
        assert config.rewards, path
    demo = image_demo_config(tmp_path)
    assert demo.evaluate.prompts == str(tmp_path / "images" / HELDOUT_FILE)
    assert demo.model.source == "embedded"
