"""Bad input, swept across the commands (docs/bad-input.md). Every row is a mistake a user
can make; each must end with one line ``ric: error: ...`` that names the bad value and what
would be valid, exit status 2, no traceback, and no half-written artifact."""

import errno
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
from helpers import EXAMPLES, TINY_STOPPING, edited_run

from ric.cli import main


@dataclass(frozen=True)
class Paths:
    label: Path  # a `ric label` output (verbosity, positivity)
    train: Path  # a `ric train` output on it (tiny model)
    tmp: Path  # this case's own folder
    out: Path  # where the command would write: must not appear

    def write(self, name: str, text: str) -> str:
        path = self.tmp / name
        path.write_text(text)
        return str(path)


@dataclass(frozen=True)
class Case:
    name: str  # the bad input, as docs/bad-input.md's table lists it
    argv: Callable[[Paths], list[str]]
    expected: list[str]  # substrings of the error line
    setup: Callable[[Paths, pytest.MonkeyPatch], None] = field(default=lambda paths, mp: None)
    slow: bool = False  # the setup trains a model


def label(paths: Paths, *extra: str) -> list[str]:
    return ["label", "--data", str(EXAMPLES), "--output", str(paths.out), "--no-progress", *extra]


# A finished online iteration of the tiny model (answers end at a stop string).
ONLINE = ["online.samples=4", "online.max_steps=1", *TINY_STOPPING]


def generate(paths: Paths, *extra: str) -> list[str]:
    return ["generate", "--model", str(paths.train), "--prompt", "Why?", *extra]


def evaluate(paths: Paths, *extra: str) -> list[str]:
    return [
        "evaluate",
        *("--model", str(paths.train), "--prompts", str(EXAMPLES), "--output", str(paths.out)),
        *("--no-progress", *extra),
    ]


def calibrate(paths: Paths, model: Path, *extra: str) -> list[str]:
    return [
        *("calibrate", "--model", str(model), "--prompts", str(EXAMPLES), "--no-progress"),
        *(*extra, "--output", str(paths.out)),
    ]


def train(paths: Paths, *extra: str) -> list[str]:
    return [
        "train",
        *("--data", str(paths.label), "--output", str(paths.out), "--model", "tiny"),
        *("--no-progress", "--set", "train.max_steps=1", *extra),
    ]


def online(paths: Paths, *extra: str) -> list[str]:
    return ["online", "--model", str(paths.train), "--output", str(paths.out), *extra]


def _rescaled_copy(run: Path, copy: Path) -> None:
    """``run`` copied with its first reward's standard deviation doubled."""
    shutil.copytree(run, copy)
    stats = json.loads((copy / "stats.json").read_text())
    stats["std"][0] *= 2
    (copy / "stats.json").write_text(json.dumps(stats))


def label_data(paths: Paths, data: str) -> list[str]:
    return ["label", "--data", data, "--output", str(paths.out), "--reward", "verbosity"]


def pairs_file(paths: Paths, rows: list[dict], name: str = "pairs.jsonl") -> str:
    return paths.write(name, "".join(json.dumps(row) + "\n" for row in rows))


def mixed_label(paths: Paths, mp: pytest.MonkeyPatch) -> None:
    """A labeled folder whose table comes from another labeling run than its stats."""
    shutil.copytree(paths.label, paths.tmp / "mixed")
    other = paths.tmp / "other"
    rows = [
        {"prompt": "q", "response": "A great, lovely answer."},
        {"prompt": "p", "response": "An awful one."},
    ]
    argv = ["label", "--data", pairs_file(paths, rows), "--output", str(other), "--no-progress"]
    assert main([*argv, "--reward", "verbosity", "--reward", "positivity"]) == 0
    shutil.copyfile(other / "stats.json", paths.tmp / "mixed" / "stats.json")


def finished_online(paths: Paths, mp: pytest.MonkeyPatch) -> None:
    """A finished online iteration at ``out`` that continued another model."""
    other = paths.tmp / "other-train"
    shutil.copytree(paths.train, other)
    settings = [*ONLINE, "online.iterations=1"]
    argv = ["online", "--model", str(other), "--output", str(paths.out), "--no-progress"]
    assert main([*argv, *(f"--set={s}" for s in settings)]) == 0


def disk_full(paths: Paths, mp: pytest.MonkeyPatch) -> None:
    """The disk fills up while a table is being written: part of it lands, then ENOSPC."""

    def no_space(frame, path, *args, **kwargs):
        Path(path).write_bytes(b"PAR1 half a table")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    mp.setattr(pd.DataFrame, "to_parquet", no_space)


def not_a_run(paths: Paths, mp: pytest.MonkeyPatch) -> None:
    (paths.tmp / "folder").mkdir()
    (paths.tmp / "folder" / "notes.txt").write_text("hello")


def weightless_run(paths: Paths, mp: pytest.MonkeyPatch) -> None:
    shutil.copytree(paths.train, paths.tmp / "weightless", ignore=shutil.ignore_patterns("adapter"))


def export(paths: Paths, run: Path | None = None, *extra: str) -> list[str]:
    return ["export", "--model", str(run or paths.train), "--output", str(paths.out), *extra]


def baseline_run(paths: Paths, mp: pytest.MonkeyPatch) -> None:
    from ric.runs import write_method

    write_method(edited_run(paths.train, paths.tmp / "sft"), "sft")


def taken_output(paths: Paths, mp: pytest.MonkeyPatch) -> None:
    paths.out.mkdir()
    (paths.out / "notes.txt").write_text("mine")


def image_folder(paths: Paths, mp: pytest.MonkeyPatch, missing: bool = False) -> None:
    """``images/``: two PNGs and their metadata.jsonl; with ``missing`` the second is gone."""
    from PIL import Image

    folder = paths.tmp / "images"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8), (200, 30, 30)).save(folder / name)
    rows = [{"file_name": "a.png", "caption": "a red"}, {"file_name": "b.png", "caption": "b"}]
    (folder / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    if missing:
        (folder / "b.png").unlink()


def image_label(paths: Paths, *extra: str) -> list[str]:
    data = str(paths.tmp / "images")
    return ["image", "label", "--data", data, "--output", str(paths.out), "--no-progress", *extra]


def unknown_key(paths: Paths) -> list[str]:
    return label(paths, "--config", paths.write("c.yaml", "trian:\n  max_steps: 5\n"))


CASES = [
    Case("an unknown top-level key in the YAML file", unknown_key, ["unknown config key trian"]),
    Case(
        "an unknown key inside a section",
        lambda p: label(p, "--set", "label.shard_sise=4"),
        ["unknown config key label.shard_sise", "shard_size"],
    ),
    Case(
        "a value of the wrong type",
        lambda p: label(p, "--set", "label.shard_size=many"),
        ["label.shard_size: expected int, got 'many'"],
    ),
    Case(
        "a YAML file that is not a mapping",
        lambda p: label(p, "--config", p.write("c.yaml", "- a\n- b\n")),
        ["must hold a mapping at the top level"],
    ),
    Case(
        "a YAML file with a syntax error",
        lambda p: label(p, "--config", p.write("c.yaml", "label: [shard_size\n")),
        ["is not valid YAML"],
    ),
    Case(
        "a config file that does not exist",
        lambda p: label(p, "--config", str(p.tmp / "nope.yaml")),
        ["nope.yaml", "does not exist"],
    ),
    Case(
        "a malformed --set",
        lambda p: label(p, "--set", "label.shard_size"),
        ["'label.shard_size' must look like key.sub=value"],
    ),
    Case(
        "a choice that does not exist",
        lambda p: label(p, "--set", "label.output_format=xml"),
        ["label.output_format: 'xml' is not valid", "parquet, jsonl"],
    ),
    Case("an unknown reward", lambda p: label(p, "--reward", "helpfulnes"), ["helpfulnes"]),
    Case(
        "two rewards with the same name",
        lambda p: label(p, "--reward", "verbosity", "--reward", "verbosity"),
        ["must be unique", "verbosity"],
    ),
    Case(
        "a user scorer that returns NaN",
        lambda p: label(
            p,
            "--set",
            "rewards=[{type: 'label_rewards:NaNAt', options: {bad_responses: ["
            "'Sunlight scatters off air molecules, and blue light scatters the most.']}}]",
        ),
        ["non-finite scores", "rows"],
    ),
    Case(
        "a data file with no rows",
        lambda p: label_data(p, p.write("e.csv", "prompt,response\n")),
        ["e.csv' holds no rows"],
    ),
    Case(
        "a missing prompt column",
        lambda p: label_data(p, pairs_file(p, [{"question": "q", "response": "r"}])),
        ["column 'prompt' not found", "question, response"],
    ),
    Case(
        "a row with no response (mismatched data)",
        lambda p: label_data(p, pairs_file(p, [{"prompt": "q", "response": None}])),
        ["column 'response' must hold text; rows [0] do not"],
    ),
    Case(
        "a finished column that is not true/false",
        lambda p: label_data(
            p, pairs_file(p, [{"prompt": "q", "response": "r", "finished": "maybe"}])
        ),
        ["column 'finished'", "true/false", "'maybe'"],
    ),
    Case(
        "a preference with the wrong number of values",
        lambda p: generate(p, "--preference", "0.2,0.3,0.5"),
        ["--preference has 3 values", "2 objectives (verbosity, positivity)"],
    ),
    Case(
        "explicit rewards with the wrong number of values",
        lambda p: generate(p, "--rewards", "1.0"),
        ["--rewards has 1 values", "2 objectives"],
    ),
    Case("a NaN in a preference", lambda p: generate(p, "--preference", "nan,1"), ["nan"]),
    Case(
        "a negative preference",
        lambda p: generate(p, "--preference=-0.5,1.5"),
        ["must be >= 0, got [-0.5, 1.5]"],
    ),
    Case(
        "a preference that does not sum to 1",
        lambda p: generate(p, "--preference", "0.5,0.9"),
        ["sum to 1"],
    ),
    Case(
        "both --preference and --rewards",
        lambda p: generate(p, "--preference", "0.5,0.5", "--rewards", "0,0"),
        ["exactly one of --preference"],
    ),
    Case("generate with no prompt", lambda p: generate(p)[:3], ["no prompts"]),
    Case(
        "the vLLM backend where vLLM is not installed",
        lambda p: generate(p, "--preference", "0.5,0.5", "--set", "generation.backend=vllm"),
        ["generation.backend: vllm", 'python -m pip install "ric[vllm]"'],
        lambda paths, mp: mp.setitem(sys.modules, "vllm", None),  # what `import vllm` then sees
    ),
    Case(
        "a model folder that is not a run",
        lambda p: [*evaluate(p)[:1], "--model", str(p.tmp / "folder"), *evaluate(p)[3:]],
        ["is not a trained run", "config.yaml"],
        not_a_run,
    ),
    Case(
        "a run folder without its weights",
        lambda p: [
            "generate",
            "--model",
            str(p.tmp / "weightless"),
            "--prompt",
            "q",
            "--rewards=0,0",
        ],
        ["holds none of adapter/, layers/ or model/"],
        weightless_run,
    ),
    Case(
        "evaluate without held-out prompts",
        lambda p: ["evaluate", "--model", str(p.train), "--output", str(p.out)],
        ["no held-out prompts", "--prompts"],
    ),
    Case(
        "an explicit grid with the wrong number of objectives",
        lambda p: evaluate(
            p, "--set=evaluate.grid=explicit", "--set=evaluate.preferences=[[1, 0, 0]]"
        ),
        ["preference has 3 weights but there are 2 objectives"],
    ),
    Case(
        "train on a folder that is not a `ric label` output",
        lambda p: ["train", "--data", str(p.tmp), "--output", str(p.out), "--model", "tiny"],
        ["no scored.parquet or scored.jsonl"],
    ),
    Case(
        "a labeled folder whose table and stats come from different runs",
        lambda p: [
            "train",
            "--data",
            str(p.tmp / "mixed"),
            "--output",
            str(p.out),
            "--model",
            "tiny",
        ],
        ["come from different data", "fingerprints"],
        mixed_label,
    ),
    Case(
        "a LoRA rank of 0",
        lambda p: train(p, "--set", "lora.r=0"),
        ["lora.r", "0"],
    ),
    Case(
        "an online run pointed at another model",
        lambda p: online(p, *(f"--set={s}" for s in ONLINE), "--set=online.iterations=1"),
        ["finished online iteration 1 made with other settings (online.model: "],
        finished_online,
        slow=True,
    ),
    Case(
        "an online quantile outside (0, 1)",
        lambda p: online(p, "--set", "online.mors_quantile=1.5"),
        ["online.mors_quantile must be in (0, 1), got 1.5"],
    ),
    Case(
        "morlhf without a preference",
        lambda p: ["baseline", "morlhf", "--data", str(p.label), "--output", str(p.out)],
        ["pass --preference"],
    ),
    Case(
        "map with ranges of another length than the preference",
        lambda p: ["map", "--preference", "0.5,0.5", "--r-min=-1,-1,-1", "--r-max", "1,1,1"],
        ["r_min", "3", "2"],
    ),
    Case(
        "a stats file that does not exist",
        lambda p: ["map", "--preference", "0.5,0.5", "--stats", str(p.tmp / "stats.json")],
        ["stats.json", "does not exist"],
    ),
    Case(
        "export-lora of a folder that is not a trained run",
        lambda p: ["export-lora", "--model", str(p.label), "--output", str(p.out)],
        ["is not a finished trained run (no metrics.json)"],
    ),
    Case(
        "contrast pairs with a reward read from a data column",
        lambda p: [
            *label(p, "--set", "label.contrast_pairs=1"),
            *("--set", "rewards=[{type: column, options: {column: score}}]"),
        ],
        ["label.contrast_pairs", "reward 'column' reads one", "label.contrast_pairs: 0"],
    ),
    Case(
        "train.init that is not a trained run",
        lambda p: train(p, "--init", str(p.label)),
        ["train.init", "is not a finished trained run (no metrics.json)", "embedded-ric"],
    ),
    Case(
        "export-lora with an unknown dtype",
        lambda p: [
            *("export-lora", "--model", str(p.train), "--output", str(p.out)),
            *("--dtype", "float8"),
        ],
        ["'float8'", "float16, bfloat16, float32"],
    ),
    Case(
        "soup weights that do not sum to 1",
        lambda p: [
            *("export-lora", "--model", str(p.train), "--model", str(p.train)),
            *("--weights", "0.5,0.6", "--output", str(p.out)),
        ],
        ["soup weights must sum to 1", "[0.5, 0.6]"],
    ),
    Case(
        "a soup of runs on different reward scales",
        lambda p: [
            *("export-lora", "--model", str(p.train), "--model", str(p.tmp / "rescaled")),
            *("--output", str(p.out)),
        ],
        ["cannot average", "rescaled", "their stats.json differ"],
        lambda p, mp: _rescaled_copy(p.train, p.tmp / "rescaled"),
    ),
    Case(
        "export of a folder that is not a trained run",
        lambda p: export(p, p.label),
        ["is not a finished trained run (no metrics.json or config.yaml)", "embedded-ric"],
    ),
    Case(
        "export into a folder that is not empty",
        export,
        ["exists and is not empty: choose another --output"],
        taken_output,
    ),
    Case(
        "export with an unknown dtype",
        lambda p: export(p, None, "--dtype", "float8"),
        ["'float8'", "float16, bfloat16, float32"],
    ),
    Case(
        "export --rank without --adapter",
        lambda p: export(p, None, "--rank", "8"),
        ["rank 8 is for an adapter (--adapter)"],
    ),
    Case(
        "export of a run whose mapping a chat template cannot hold",
        lambda p: export(p, p.tmp / "convex"),
        ["mapping 'convex' cannot be written in a chat template", "linear, p_norm, p_inf"],
        lambda p, mp: edited_run(p.train, p.tmp / "convex", mapping={"method": "convex"}),
    ),
    Case(
        "export --adapter of a run whose base model is built in code",
        lambda p: export(p, None, "--adapter"),
        ["base model 'tiny'", "is built in code", "without --adapter"],
    ),
    Case(
        "export --adapter of a run whose base model folder is gone",
        lambda p: export(p, p.tmp / "moved", "--adapter"),
        ["no longer exists", "without --adapter"],
        lambda p, mp: edited_run(p.train, p.tmp / "moved", model={"source": str(p.tmp / "gone")}),
    ),
    Case(
        "export of a baseline, which takes no preference",
        lambda p: export(p, p.tmp / "sft"),
        ["is a sft baseline, which takes no preference: there is nothing to steer"],
        baseline_run,
    ),
    Case(
        "an unknown image reward",
        lambda p: image_label(p, "--reward", "beauty"),
        ["unknown image reward 'beauty'", "compressibility", "sharpness"],
        image_folder,
    ),
    Case(
        "an image the captions file names that does not exist",
        lambda p: image_label(p, "--reward", "compressibility"),
        ["b.png"],
        lambda paths, mp: image_folder(paths, mp, missing=True),
    ),
    Case(
        "an image folder without a captions file",
        lambda p: image_label(p, "--reward", "compressibility"),
        ["metadata.jsonl", "captions.jsonl", "captions.csv"],
        lambda paths, mp: (paths.tmp / "images").mkdir(),
    ),
    Case(
        "image train on a folder that is not a `ric image label` output",
        lambda p: ["image", "train", "--data", str(p.label), "--output", str(p.out)],
        ["is not a `ric image label` output: its scored.parquet has no row, image and caption"],
    ),
    Case(
        "LoRA on the embedded image model",
        lambda p: [
            *("image", "train", "--data", str(p.label), "--output", str(p.out)),
            *("--set", "lora.enabled=true"),
        ],
        ["lora.enabled needs a pretrained model.source"],
    ),
    Case(
        "a caption dropout of 1 or more",
        lambda p: image_label(p, "--set", "train.caption_dropout=1.5"),
        ["train.caption_dropout must be in [0, 1), got 1.5"],
    ),
    Case(
        "image generate with a folder that is not an image run",
        lambda p: [
            *("image", "generate", "--model", str(p.train), "--caption", "a red circle"),
            *("--preference", "0.5,0.5", "--output", str(p.out)),
        ],
        ["is not a `ric image train` output"],
    ),
    Case(
        "a calibration design with fewer than 2 levels",
        lambda p: calibrate(p, p.train, "--set", "calibrate.levels=1"),
        ["calibrate.levels must be >= 2, got 1"],
    ),
    Case(
        "a calibration without prompts",
        lambda p: ["calibrate", "--model", str(p.train), "--output", str(p.out)],
        ["no prompts: set calibrate.prompts (or pass --prompts)"],
    ),
    Case(
        "a calibration of a baseline, which takes no rewards",
        lambda p: calibrate(p, p.tmp / "sft"),
        ["is a sft baseline, which takes no rewards: only a RiC model can be calibrated"],
        baseline_run,
    ),
    Case(
        "a calibration written into the model's own folder",
        lambda p: [*calibrate(p, p.train)[:-2], "--output", str(p.train)],
        ["is the model's own folder: choose another"],
    ),
    Case(
        "rewards to obtain from a model that is not calibrated",
        lambda p: generate(p, "--rewards-obtained", "0,0"),
        ["this model is not calibrated, so it cannot take --rewards-obtained", "ric calibrate"],
    ),
    Case(
        "the calibrated mapping on a model without a calibration",
        lambda p: generate(p, "--preference", "0.5,0.5", "--set", "mapping.method=calibrated"),
        ["has no calibration (calibration.json)", "ric calibrate --model RUN --output DIR"],
    ),
    Case(
        "map rewards to obtain without a calibrated run",
        lambda p: ["map", "--rewards-obtained", "0,0"],
        ["--rewards-obtained needs --model, a calibrated run"],
    ),
    Case(
        "a negative number of obtained targets to check",
        lambda p: evaluate(p, "--set", "evaluate.obtained_targets=-1"),
        ["evaluate.obtained_targets must be >= 0 (0: off), got -1"],
    ),
    Case(
        "a full disk while writing the labeled data",
        lambda p: label(p, "--reward", "verbosity"),
        ["No space left on device; could not write ", "shard-00000.parquet"],
        disk_full,
    ),
]


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(case, id=case.name, marks=[pytest.mark.slow] if case.slow else [])
        for case in CASES
    ],
)
def test_bad_input_is_one_clear_error_and_leaves_nothing(case, tiny_offline, tmp_path, capsys):
    paths = Paths(tiny_offline / "label", tiny_offline / "train", tmp_path, tmp_path / "out")
    with pytest.MonkeyPatch.context() as mp:
        case.setup(paths, mp)
        capsys.readouterr()
        before = _files(paths.out)
        assert main(case.argv(paths)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ric: error: "), err
    assert "Traceback" not in "\n".join(err)
    for expected in case.expected:
        assert expected in err[-1], f"{expected!r} not in {err[-1]!r}"
    assert _files(paths.out) == before, "the failed command wrote or changed files"
    assert not list(tmp_path.rglob("*.tmp")), "a temporary file was left behind"


def _files(folder: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}


def test_the_sweep_covers_at_least_30_bad_inputs():
    assert len(CASES) >= 30
    assert len({case.name for case in CASES}) == len(CASES)


def test_the_docs_list_every_case():
    table = (Path(__file__).parent.parent / "docs" / "bad-input.md").read_text()
    missing = [case.name for case in CASES if f"| {case.name} |" not in table]
    assert not missing, f"add to docs/bad-input.md's table: {missing}"
