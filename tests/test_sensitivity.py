"""The reward-sensitivity check: a model trained where the reward decides the response reads
it (shuffling the reward raises the loss); an untrained one does not; the loss per response token
and per response, computed by hand. And the behavioural probe: asked low and high, the trained
model moves the objective; its targets and arithmetic, checked by hand."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from ric.cli import main
from ric.evaluation.probe import (
    behaviour_probe,
    probe_differences,
    probe_standard_errors,
    probe_targets,
)
from ric.evaluation.sensitivity import response_loss, reward_sensitivity
from ric.runs import load_trained
from ric.steering import Steering

TINY = [
    "--model",
    "tiny",
    "--no-progress",
    "--set",
    "lora.enabled=false",
    "--set",
    "train.mixed_precision=fp32",
    "--set",
    "train.learning_rate=0.01",
    "--set",
    "train.batch_size=16",
]
SHORT, LONG = "Yes.", "No, not at all, the answer is never the same."


@pytest.fixture(scope="module")
def decided_by_reward(tmp_path_factory):
    """Pairs whose response is decided by its verbosity reward, labeled; a model trained on
    them for 1 step at a negligible learning rate (untrained) and one trained for 100 steps."""
    root = tmp_path_factory.mktemp("sensitivity")
    rows = [
        {"prompt": f"Question number {i}?", "response": response}
        for i in range(24)
        for response in (SHORT, LONG)
    ]
    (root / "pairs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    label = root / "label"
    flags = ["--reward", "verbosity", "--output", str(label), "--no-progress"]
    assert main(["label", "--data", str(root / "pairs.jsonl"), *flags]) == 0
    base = ["train", "--data", str(label), *TINY]
    untrained = ["--output", str(root / "untrained"), "--set", "train.learning_rate=1e-9"]
    assert main([*base, *untrained, "--set", "train.max_steps=1"]) == 0
    assert main([*base, "--output", str(root / "trained"), "--set", "train.max_steps=100"]) == 0
    return root


def _sensitivity(model_dir, label):
    policy = load_trained(model_dir)
    frame = pd.read_parquet(label / "scored.parquet")
    values = frame[["standardized_verbosity"]].to_numpy()
    return reward_sensitivity(policy, frame["prompt"].tolist(), frame["response"].tolist(), values)[
        "verbosity"
    ]


@pytest.mark.slow
def test_trained_model_reads_the_reward_and_untrained_does_not(decided_by_reward):
    untrained = _sensitivity(decided_by_reward / "untrained", decided_by_reward / "label")
    trained = _sensitivity(decided_by_reward / "trained", decided_by_reward / "label")
    assert abs(untrained["gap"]) < 0.02
    # Only the reward tells the two responses of a prompt apart: a model that fits the pairs
    # (loss near 0) must read it, and shuffling it then costs a lot.
    assert trained["loss_true"] < 0.1
    assert trained["gap"] > 0.05 and trained["loss_shuffled"] > 3 * trained["loss_true"]
    # per response: about (tokens per response) times the per-token gap, never diluted
    assert trained["sequence_gap"] > 3 * trained["gap"]
    assert abs(untrained["sequence_gap"]) < 0.2


@pytest.mark.slow
def test_response_loss_is_the_mean_nll_per_response_token(decided_by_reward):
    policy = load_trained(decided_by_reward / "untrained")
    prompts, responses = ["Why?", "What is it?"], [SHORT, LONG]
    values = np.array([[1.0], [-1.0]])
    expected_total, expected_tokens = 0.0, 0
    for prompt, response in zip(
        Steering.for_run(policy).prompts(prompts, values), responses, strict=True
    ):
        prompt_ids = policy.tokenizer(prompt)["input_ids"]
        response_ids = policy.tokenizer(response, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + response_ids + [policy.tokenizer.eos_token_id]])
        with torch.no_grad():
            log_probs = torch.log_softmax(policy.model(ids).logits[0, :-1], dim=-1)
        targets = ids[0, 1:]
        nll = -log_probs[torch.arange(len(targets)), targets][len(prompt_ids) - 1 :]
        expected_total += float(nll.sum())
        expected_tokens += len(nll)
    loss = response_loss(policy, prompts, responses, values)
    assert loss.per_token == pytest.approx(expected_total / expected_tokens, rel=1e-5)
    assert loss.per_sequence == pytest.approx(expected_total / 2, rel=1e-5)


def test_probe_targets_and_moves_by_hand():
    targets = probe_targets(np.array([-2.0, -1.0]), np.array([2.0, 3.0]))  # (N, 2, N)
    np.testing.assert_array_equal(targets, [[[-2.0, 1.0], [2.0, 1.0]], [[0.0, -1.0], [0.0, 3.0]]])
    obtained = np.zeros((2, 2, 3, 2))  # (objective probed, end, prompt, objective scored)
    obtained[0, 1, :, 0] = [1.0, 2.0, 3.0]  # objective 0 asked high: mean 2
    obtained[1, 0, :, 1] = [-1.0, -1.0, -1.0]  # objective 1 asked low: mean -1
    obtained[0, 1, :, 1] = 9.0  # other objectives' values do not count
    np.testing.assert_allclose(probe_differences(obtained), [2.0, 1.0])
    # paired per-prompt differences: objective 0 [1, 2, 3] (sd 1), objective 1 [1, 1, 1] (sd 0)
    np.testing.assert_allclose(probe_standard_errors(obtained), [1 / np.sqrt(3), 0.0])
    assert probe_standard_errors(obtained[:, :, :1]) == [None, None]  # one prompt: unknown
    # several answers per prompt (images of one caption) are averaged per prompt first: objective
    # 0's [1, 2, 3, 1, 2, 3] is 2 prompts of mean 2 (3 answers each; no spread) or 3 prompts of
    # means [1.5, 2, 2.5] (2 answers each), not 6 independent answers
    doubled = np.zeros((2, 2, 6, 2))
    doubled[0, 1, :, 0] = [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]
    np.testing.assert_allclose(
        probe_standard_errors(doubled, per_prompt=3)[0], np.std([2.0, 2.0], ddof=1) / np.sqrt(2)
    )
    np.testing.assert_allclose(
        probe_standard_errors(doubled, per_prompt=2)[0],
        np.std([1.5, 2.0, 2.5], ddof=1) / np.sqrt(3),
    )


@pytest.mark.slow
def test_probe_finds_the_trained_model_moves_its_objective(decided_by_reward):
    from ric.config import GenerationConfig, MappingConfig
    from ric.rewards import create_reward

    policy = load_trained(decided_by_reward / "trained")
    stats = policy.stats
    steering = Steering.for_run(policy, MappingConfig(range_source="quantile"))
    r_min, r_max = stats.reward_range("quantile")
    greedy = GenerationConfig(do_sample=False, max_new_tokens=64)
    prompts = [f"Question number {i}?" for i in range(100, 104)]  # unseen
    result = behaviour_probe(policy, steering, prompts, greedy, [create_reward("verbosity", {})])
    probe = result.summary["verbosity"]
    assert probe["obtained_low_raw"] == len(SHORT) and probe["obtained_high_raw"] == len(LONG)
    assert probe["difference_sd"] == pytest.approx((len(LONG) - len(SHORT)) / stats.std[0])
    assert probe["difference_se"] == pytest.approx(0.0, abs=1e-9)  # every prompt moves alike
    # the answers it measured, one row per (objective probed, end, prompt)
    answers = result.samples
    assert list(answers["end"]) == ["low"] * 4 + ["high"] * 4
    assert list(answers["prompt"]) == prompts * 2 and set(answers["probed"]) == {"verbosity"}
    assert list(answers["response"]) == [SHORT] * 4 + [LONG] * 4
    assert list(answers["reward_verbosity"]) == [len(SHORT)] * 4 + [len(LONG)] * 4
    assert answers["desired"][0] == [r_min[0]] and answers["desired"][4] == [r_max[0]]
