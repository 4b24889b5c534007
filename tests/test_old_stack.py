"""Exports in RewardBench's own stack (transformers 4.51 and the released ``rewardbench`` 0.1.4, in a second
venv: ``.ci/run`` builds ``.venv-rb``), and ``eval --suite`` against RewardBench's released arithmetic.

The interpreter is ``$REWARDKIT_OLD_STACK_PYTHON``, else ``.venv-rb/bin/python``; without one the tests
skip, except under CI, where they fail. The model has SmolLM2's RoPE base (100000), which transformers
4.x silently replaces by its default (10000) when ``config.json`` carries only ``rope_parameters``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, make_tiny_model, train_tiny_run

LLMBAR = ROOT.parent / "shared" / "data" / "llmbar-rewardbench-schema.jsonl.gz"


def old_python() -> str:
    path = os.environ.get("REWARDKIT_OLD_STACK_PYTHON") or str(ROOT / ".venv-rb" / "bin" / "python")
    if not Path(path).is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: .ci/run builds the transformers 4.51 + rewardbench 0.1.4 venv")
        pytest.skip(f"no old-stack interpreter at {path} (.ci/run builds it)")
    return path


def in_old_stack(model: Path, rows: list[dict], subset_accuracy: dict | None = None) -> dict:
    job = json.dumps({"model": str(model), "rows": rows, "subset_accuracy": subset_accuracy or {}})
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)} | {"HF_HUB_OFFLINE": "1"}
    done = subprocess.run([old_python(), str(ROOT / "tests" / "old_stack_check.py")], input=job, text=True,
                          capture_output=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def export(tokenizer_dir, tmp_path_factory):
    """A tiny run with SmolLM2's RoPE base and a 4096-token context, exported."""
    from reward.export import export_run

    tmp = tmp_path_factory.mktemp("old-stack")
    model = make_tiny_model(tmp / "model", tokenizer_dir, rope_parameters={"rope_type": "default", "rope_theta": 1e5},
                            max_position_embeddings=4096)
    return export_run(train_tiny_run(model, tmp), tmp / "export")


@pytest.fixture(scope="module")
def rm(export):
    from reward.inference import RewardModel

    return RewardModel.from_pretrained(str(export), device="cpu")


def test_export_config_readable_by_transformers_4(export):
    config = json.loads((export / "config.json").read_text())
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"] == 1e5
    assert json.loads((export / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_export_rewards_equal_under_transformers_4_51(export, rm):
    """The same rows through the export in transformers 4.51 (as RewardBench scores them) and in rewardkit."""
    rows = [{"prompt": [{"role": "user", "content": "How do I boil an egg?"}], "response": "Nine minutes in boiling water."},
            {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
             "response": "Paris."},
            {"prompt": [{"role": "user", "content": "Tell me a joke."}], "response": "A cat walks into a bar.\n\nEnd."}]
    old = in_old_stack(export, rows)
    assert old["transformers"] == "4.51.0" and old["rope_theta"] == 1e5
    want = [rm.score(r["prompt"], r["response"]) for r in rows]
    assert old["rewards"] == pytest.approx(want, abs=1e-4)


def _xstest_rows() -> list[dict]:
    """A RewardBench-schema file with XSTest and MT-Bench subsets: long and short responses."""
    rows, k = [], 0
    for subset in ("xstest-should-refuse", "xstest-should-respond", "mt-bench-hard", "donotanswer"):
        for i in range(6):
            long = " ".join(f"step {j}: keep going, then check the result again." for j in range(60 * (i % 3)))
            rows.append({"id": k, "subset": subset, "prompt": f"Question {k}: how do I do thing {i}?",
                         "chosen": f"Here is how, case {i}. {long}", "rejected": f"I won't help with {i}." + long[:200]})
            k += 1
    return rows


@pytest.mark.parametrize("name", ["llmbar", "xstest"])
def test_eval_suite_equals_rewardbench_0_1_4(name, export, rm, tmp_path):
    """Per-row rewards equal plain transformers 4.51 on the whole text (no cut at the training max_length,
    256 here), and per-subset accuracies and sections equal what rewardbench 0.1.4's
    ``calculate_scores_per_section`` gives for those rewards (×100, as upstream reports them)."""
    from reward.evaluation import read_suite, score_suite, suite_metrics

    path = LLMBAR
    if name == "xstest":
        path = tmp_path / "xstest.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in _xstest_rows()))
    suite = read_suite(str(path))
    rewards = score_suite(rm, suite)
    ours = suite_metrics(suite, rewards)
    lengths = [len(rm.tokenizer(c[0] if isinstance(c, list) else c)["input_ids"]) for _, c, _, _ in suite.items]
    assert max(lengths) > 256  # responses the training max_length would have cut
    rows = [{"prompt": [{"role": "user", "content": p}], "response": r}
            for p, chosen, rejected, _ in suite.items for r in (chosen[0], rejected[0])]
    old = in_old_stack(export, rows)
    flat = [x for c, r in rewards for x in (c[0], r[0])]
    assert old["rewards"] == pytest.approx(flat, abs=1e-4)
    per: dict[str, list[int]] = {}
    for (_, _, _, row), c, r in zip(suite.items, old["rewards"][0::2], old["rewards"][1::2]):
        per.setdefault(row["subset"], []).append(int(c > r))  # upstream: 1 if chosen > rejected else 0
    accuracy = {s: sum(v) / len(v) for s, v in per.items()}
    assert {s: m["accuracy"] for s, m in ours["subsets"].items()} == pytest.approx(accuracy)
    upstream = in_old_stack(export, [], accuracy)["sections"]
    assert ours["sections"] == pytest.approx({k: 100 * v for k, v in upstream.items()})


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
