"""`ric label`: sources, scoring, stats, resume after a real kill, and the error paths."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ric.cli import main
from ric.config import load_config
from ric.data.io import load_stats
from ric.data.label import label_dataset

TESTS = Path(__file__).parent
ROWS = [{"prompt": f"question {i}?", "response": "word " * (i % 7 + 1), "id": i} for i in range(40)]


def _write(path: Path, rows=ROWS):
    frame = pd.DataFrame(rows)
    if path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif path.suffix == ".parquet":
        frame.to_parquet(path)
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    return path


def _config(data, output, rewards=None, **label):
    rewards = rewards or [
        {"type": "label_rewards:WordCount", "name": "words"},
        {"type": "verbosity", "name": "chars"},
    ]
    return load_config(
        None,
        [
            f"data.path={json.dumps(str(data))}",
            f"label.output={json.dumps(str(output))}",
            f"rewards={json.dumps(rewards)}",
            *[f"label.{k}={json.dumps(v)}" for k, v in label.items()],
        ],
    )


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv"])
def test_label_formats_values_and_stats(tmp_path, suffix):
    data = _write(tmp_path / f"in{suffix}")
    result = label_dataset(_config(data, tmp_path / "out", shard_size=16), show_progress=False)
    scored = pd.read_parquet(result.scored_path)
    words = np.array([i % 7 + 1 for i in range(40)], dtype=float)
    np.testing.assert_array_equal(scored["reward_words"], words)
    np.testing.assert_array_equal(scored["reward_chars"], words * 5)
    np.testing.assert_allclose(scored["standardized_words"], (words - words.mean()) / words.std())
    assert list(scored["prompt"]) == [row["prompt"] for row in ROWS]
    assert "id" in scored.columns  # the input's other columns are kept
    stats = load_stats(tmp_path / "out")
    assert stats.names == ("words", "chars") and stats.count == 40
    assert stats.mean[0] == pytest.approx(words.mean())
    assert stats.reward_ids[1].startswith("verbosity")
    resolved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert resolved["label"]["shard_size"] == 16
    assert (result.shards_scored, result.shards_reused) == (6, 0)  # 3 shards x 2 rewards


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_unfinished_responses_are_left_out(tmp_path, suffix):
    # CSV gives the strings "True"/"False"; "False" must not count as finished.
    rows = [{**row, "finished": row["id"] % 4 != 0} for row in ROWS]
    data = _write(tmp_path / f"in{suffix}", rows)
    result = label_dataset(_config(data, tmp_path / "out"), show_progress=False)
    scored = pd.read_parquet(result.scored_path)
    assert list(scored["id"].astype(int)) == [i for i in range(40) if i % 4 != 0]
    assert result.stats.count == 30  # the stats describe the finished responses only


def test_finished_column_must_be_boolean(tmp_path):
    rows = [{**row, "finished": "maybe" if row["id"] == 3 else "yes"} for row in ROWS]
    data = _write(tmp_path / "in.csv", rows)
    with pytest.raises(ValueError, match=r"'finished'.*true/false.*rows \[3\].*'maybe'"):
        label_dataset(_config(data, tmp_path / "out"), show_progress=False)
    assert not (tmp_path / "out").exists()


def test_label_hf_dataset_dir_and_jsonl_output(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "hf"))
    config = _config(tmp_path / "hf", tmp_path / "out", output_format="jsonl")
    result = label_dataset(config, show_progress=False)
    scored = pd.read_json(result.scored_path, lines=True)
    assert len(scored) == 40 and scored["reward_words"].iloc[3] == 4


def test_rerun_reuses_shards_and_new_reward_scores_only_itself(tmp_path):
    data = _write(tmp_path / "in.jsonl")
    first = label_dataset(_config(data, tmp_path / "out", shard_size=10), show_progress=False)
    again = label_dataset(_config(data, tmp_path / "out", shard_size=10), show_progress=False)
    assert (again.shards_scored, again.shards_reused) == (0, 8)
    assert again.stats == first.stats
    rewards = [
        {"type": "label_rewards:WordCount", "name": "words"},
        {"type": "verbosity", "name": "chars"},
        {"type": "verbosity", "name": "word_total", "options": {"unit": "words"}},
    ]
    more = label_dataset(_config(data, tmp_path / "out", rewards, shard_size=10), False)
    assert (more.shards_scored, more.shards_reused) == (4, 8)
    fresh = _config(data, tmp_path / "out", rewards, shard_size=10, reuse_scores=False)
    assert label_dataset(fresh, False).shards_scored == 12


@pytest.mark.slow
def test_resume_after_kill_does_not_rescore_finished_shards(tmp_path):
    data = _write(tmp_path / "in.jsonl")
    log = tmp_path / "calls.log"
    config_path = tmp_path / "config.yaml"
    reward = {
        "type": "label_rewards:CountingLength",
        "name": "length",
        "options": {"log": str(log), "delay": 0.4},
    }
    config_path.write_text(
        yaml.safe_dump(
            {
                "data": {"path": str(data)},
                "rewards": [reward],
                "label": {"output": str(tmp_path / "out"), "shard_size": 4},
            }
        )
    )
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [
        sys.executable,
        "-m",
        "ric.cli",
        "label",
        "--config",
        str(config_path),
        "--no-progress",
    ]
    process = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if log.exists() and len(log.read_text().split()) >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    calls_before = len(log.read_text().split())
    assert 3 <= calls_before < 10, "the kill should land mid-run"
    assert not (tmp_path / "out" / "scored.parquet").exists()

    subprocess.run(command, env=env, check=True)
    calls_after = len(log.read_text().split()) - calls_before
    # Shards finished before the kill are loaded; at most the one being scored is redone.
    assert calls_before + calls_after <= 10 + 1
    assert calls_after <= 10 - calls_before + 1
    scored = pd.read_parquet(tmp_path / "out" / "scored.parquet")
    np.testing.assert_array_equal(scored["reward_length"], [len(r["response"]) for r in ROWS])


def test_missing_column_named_and_nothing_written(tmp_path):
    data = _write(tmp_path / "in.jsonl", [{"question": "q", "response": "r"}] * 3)
    with pytest.raises(ValueError, match=r"column 'prompt' not found.*question, response"):
        label_dataset(_config(data, tmp_path / "out"), show_progress=False)
    assert not (tmp_path / "out").exists()


def test_empty_input_rejected(tmp_path):
    data = tmp_path / "empty.csv"
    data.write_text("prompt,response\n")
    with pytest.raises(ValueError, match="holds no rows"):
        label_dataset(_config(data, tmp_path / "out"), show_progress=False)
    assert not (tmp_path / "out").exists()


def test_non_text_rows_named(tmp_path):
    rows = [{"prompt": "q", "response": "r"}, {"prompt": None, "response": "r"}]
    data = _write(tmp_path / "in.jsonl", rows)
    with pytest.raises(ValueError, match=r"'prompt' must hold text; rows \[1\]"):
        label_dataset(_config(data, tmp_path / "out"), show_progress=False)


def test_nan_scores_name_rows_and_write_no_output(tmp_path):
    data = _write(tmp_path / "in.jsonl")
    bad = [ROWS[5]["response"]]  # "word " * 6 appears at rows 5, 12, 19, 26, 33
    rewards = [{"type": "label_rewards:NaNAt", "name": "broken", "options": {"bad_responses": bad}}]
    with pytest.raises(ValueError, match=r"'broken' gave non-finite scores .* rows \[5, 12, 19"):
        label_dataset(_config(data, tmp_path / "out", rewards, shard_size=100), False)
    assert not (tmp_path / "out" / "scored.parquet").exists()
    assert not (tmp_path / "out" / "stats.json").exists()


def test_cli_label_errors_are_clear(tmp_path, capsys):
    code = main(
        [
            "label",
            "--data",
            str(tmp_path / "nope.jsonl"),
            "--output",
            str(tmp_path / "o"),
            "--reward",
            "verbosity",
        ]
    )
    assert code == 2
    assert "nope.jsonl" in capsys.readouterr().err
    data = _write(tmp_path / "in.jsonl")
    assert main(["label", "--data", str(data), "--output", str(tmp_path / "o")]) == 2
    assert "no rewards configured" in capsys.readouterr().err
    assert (
        main(
            ["label", "--data", str(data), "--output", str(tmp_path / "o"), "--reward", "nonsense"]
        )
        == 2
    )
    assert "unknown reward 'nonsense'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_label_writes_outputs(tmp_path, capsys):
    data = _write(tmp_path / "in.jsonl")
    code = main(
        [
            "label",
            "--data",
            str(data),
            "--output",
            str(tmp_path / "o"),
            "--reward",
            "verbosity",
            "--reward",
            "label_rewards:WordCount",
            "--no-progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "scored 40 samples" in out
    assert {p.name for p in (tmp_path / "o").iterdir()} >= {
        "scored.parquet",
        "stats.json",
        "config.yaml",
    }


def test_reward_identity_round_trips():
    from ric.config import RewardConfig
    from ric.data.io import reward_from_identity, reward_identity

    reward = RewardConfig(type="hf", name="helpful", options={"model": "org/rm", "logit": 1})
    assert reward_from_identity("helpful", reward_identity(reward)) == reward


def test_only_our_own_progress_is_shown(tmp_path, capfd):
    """transformers' "Loading weights" bar (the MiniLM encoder of relevance) stays hidden."""
    data = _write(tmp_path / "in.jsonl")
    args = ["label", "--data", str(data), "--output", str(tmp_path / "out")]
    assert main([*args, "--reward", "relevance", "--reward", "verbosity"]) == 0
    err = capfd.readouterr().err
    assert "label:" in err  # our bar
    assert "Loading weights" not in err and "it/s]" not in err.replace("score/s]", "")


def test_contrast_pairs_give_each_prompt_responses_of_other_prompts():
    from ric.config import DataConfig
    from ric.data.label import CONTRAST_COLUMN, with_contrast_pairs

    frame = pd.DataFrame(
        {
            "prompt": ["a?", "a?", "b?", "c?", "c?"],
            "response": ["a1", "a2", "b1", "c1", "c2"],
            "source": ["ra1", "ra2", "rb1", "rc1", "rc2"],  # describes the response
        }
    )
    paired = with_contrast_pairs(frame, DataConfig(), per_row=2, seed=3)
    assert len(paired) == 3 * len(frame)
    original, added = paired[~paired[CONTRAST_COLUMN]], paired[paired[CONTRAST_COLUMN]]
    pd.testing.assert_frame_equal(original.drop(columns=CONTRAST_COLUMN), frame)
    assert added["prompt"].tolist() == frame["prompt"].tolist() * 2  # every prompt, per row
    donors = frame.set_index("response")
    for _, row in added.iterrows():
        assert donors.loc[row["response"], "prompt"] != row["prompt"]  # another prompt's answer
        assert donors.loc[row["response"], "source"] == row["source"]  # its row's columns
    again = with_contrast_pairs(frame, DataConfig(), per_row=2, seed=3)
    pd.testing.assert_frame_equal(again, paired)  # seeded
    with pytest.raises(ValueError, match="at least 2 distinct prompts"):
        with_contrast_pairs(frame.assign(prompt="same?"), DataConfig(), per_row=1)
    # A fraction adds one pair to that share of the rows (drawn), on top of the whole pairs.
    partial = with_contrast_pairs(frame, DataConfig(), per_row=1.4, seed=3)
    added = partial[partial[CONTRAST_COLUMN]]
    assert len(added) == len(frame) + 2
    assert added["prompt"].iloc[:5].tolist() == frame["prompt"].tolist()
    assert set(added["prompt"].iloc[5:]) <= set(frame["prompt"])
    for _, row in added.iterrows():
        assert donors.loc[row["response"], "prompt"] != row["prompt"]
    assert len(with_contrast_pairs(frame, DataConfig(), per_row=0.2)) == len(frame) + 1


def test_label_scores_the_contrast_rows_as_pairs(tmp_path):
    topics = ["cats", "dogs", "owls", "bees", "moles"]
    rows = [
        {"prompt": f"tell me about {topic}", "response": f"{topic} are " + "nice " * length}
        for topic in topics
        for length in (1, 4)
    ]
    data = _write(tmp_path / "pairs.jsonl", rows)
    rewards = [{"type": "verbosity"}, {"type": "label_rewards:SharedWords", "name": "shared"}]
    result = label_dataset(_config(data, tmp_path / "out", rewards, contrast_pairs=1), False)
    scored = pd.read_parquet(result.scored_path)
    assert len(scored) == 2 * len(rows) and result.stats.count == 2 * len(rows)
    own, contrast = scored[~scored["contrast"]], scored[scored["contrast"]]
    # The prompt-dependent reward sees the other prompt (the topic is no longer shared); the
    # response-only one scores the response as on its own row.
    assert (own["reward_shared"] == 1).all() and (contrast["reward_shared"] == 0).all()
    by_response = own.set_index("response")["reward_verbosity"]
    assert np.allclose(contrast["reward_verbosity"], by_response[contrast["response"]].to_numpy())
