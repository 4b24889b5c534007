"""RewardModel scoring and `rewardkit eval` reports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from reward.scoring import RewardModel, RewardModelEvaluator, score_jsonl

PAIRS = [("How do I boil an egg?", "Boil it for nine minutes."),
         ("Hi", "Hello! How can I help you today? I can answer questions about many topics."),
         ([{"role": "user", "content": "Name a fruit"}, {"role": "assistant", "content": "Apple"},
           {"role": "user", "content": "Another?"}], "Banana"),
         ("Tell me a long story", "Once upon a time " * 20)]


@pytest.fixture()
def rm(tiny_model_dir):
    return RewardModel.from_pretrained(str(tiny_model_dir))


def test_score_is_batch_and_padding_invariant(rm):
    alone = [rm.score(p, r) for p, r in PAIRS]
    for batch_size in (2, 4):
        assert rm.score_batch(PAIRS, batch_size=batch_size) == pytest.approx(alone, abs=1e-5)
    rm.tokenizer.padding_side = "left"
    assert rm.score_batch(PAIRS, batch_size=4) == pytest.approx(alone, abs=1e-5)
    rm.tokenizer.padding_side = "right"


def test_rank_and_original_names(rm, tiny_model_dir):
    ranked = rm.rank("Hi", ["a", "b b b", "c c"])
    assert sorted(s for _, s in ranked)[::-1] == [s for _, s in ranked] and len(ranked) == 3
    ev = RewardModelEvaluator(str(tiny_model_dir))
    s = ev.get_reward_score("Hi", "Hello")
    cmp = ev.compare_responses("Hi", "Hello", "Go away")
    assert cmp["score_a"] == pytest.approx(s, abs=1e-6) and cmp["preferred"] in ("a", "b", "tie")
    turns = ev.evaluate_conversation([("Hi", "Hello"), ("How are you?", "Fine")])
    assert len(turns) == 2 and turns[0] == pytest.approx(s, abs=1e-5)


def test_score_jsonl_rows_and_rankings(rm, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "Hi", "response": "Hello"}) + "\n"
                   + json.dumps({"prompt": "Hi", "responses": ["a", "bb", "ccc"]}) + "\n")
    out = tmp_path / "out.jsonl"
    assert score_jsonl(rm, str(src), str(out), progress=False) == 2
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert isinstance(rows[0]["score"], float)
    assert len(rows[1]["scores"]) == 3 and sorted(rows[1]["ranking"]) == [0, 1, 2]
    assert rows[1]["scores"][rows[1]["ranking"][0]] == max(rows[1]["scores"])


def test_eval_cli_json_and_report(tiny_model_dir, hh_small, tmp_path):
    report = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "reward.cli", "eval", str(tiny_model_dir), "--data", str(hh_small),
                           "--format", "hh-rlhf", "--json", "--report", str(report), "--max_length", "128"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout)
    assert {"accuracy", "n_pairs", "mean_margin", "ece", "length_bias", "bt_logloss", "reward_mean", "reward_std"} <= set(m)
    assert m["n_pairs"] == 80
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert pngs == ["reliability_diagram.png", "reward_histogram.png", "reward_vs_length.png"]
    assert (report / "report.md").read_text().startswith("# Evaluation")


def test_metrics_ties_are_not_wins():
    from reward.evaluation import compute_metrics

    m = compute_metrics([1.0, 0.5, 2.0, 0.0], [0.0, 0.5, 3.0, 0.0], [1, 2, 3, 4], [2, 2, 2, 2])
    assert m["accuracy"] == 0.25 and m["ties"] == 2 and m["accuracy_excluding_ties"] == 0.5
    assert m["length_bias"]["n_chosen_shorter"] == 1


def test_ece_is_zero_for_perfect_calibration_and_high_when_overconfident():
    import numpy as np

    from reward.evaluation import expected_calibration_error

    rng = np.random.default_rng(0)
    margins = rng.normal(0, 2, 20000)
    p = 1 / (1 + np.exp(-margins))
    wins = rng.random(20000) < p  # chosen truly wins with probability p
    calibrated = np.where(wins, margins, -margins)  # relabel so chosen is the winner
    assert expected_calibration_error(calibrated)[0] < 0.02
    assert expected_calibration_error(calibrated * 10)[0] > 0.1
