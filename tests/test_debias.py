"""Length-debiased training (``length_debias: odin | corr_penalty``) on data with a planted length bias."""

from __future__ import annotations

import json
import random

import pytest

from reward.config import load_recipe
from reward.errors import RecipeError
from reward.evaluation import evaluate_file
from reward.inference import RewardModel
from reward.run import run_training
from tests.conftest import write_recipe


def _pairs(n: int, p_longer: float, p_marker: float, seed: int) -> list[dict]:
    """Chosen ends in "good", rejected in "bad" (with probability ``p_marker``, else swapped: a noisy
    quality signal); the chosen answer is the longer one with probability ``p_longer``."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        long_, short = rng.randint(12, 20), rng.randint(1, 4)
        c_len, r_len = (long_, short) if rng.random() < p_longer else (short, long_)
        c_mark, r_mark = ("good", "bad") if rng.random() < p_marker else ("bad", "good")
        rows.append({"prompt": f"Question {i}: which answer?", "chosen": " ".join(["so"] * c_len) + " " + c_mark,
                     "rejected": " ".join(["so"] * r_len) + " " + r_mark})
    return rows


@pytest.fixture(scope="module")
def biased(tmp_path_factory):
    root = tmp_path_factory.mktemp("biased")
    train, held = root / "train.jsonl", root / "held.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in _pairs(320, 0.85, 0.85, 1)))
    held.write_text("".join(json.dumps(r) + "\n" for r in _pairs(200, 0.5, 1.0, 2)))  # length says nothing here
    return train, held


def _train_and_eval(tiny_model_dir, tmp_path, train, held, **keys):
    recipe = dict(model_name_or_path=str(tiny_model_dir), datasets=[{"path": str(train)}], max_length=64,
                  per_device_train_batch_size=8, max_steps=60, learning_rate=3e-3, logging_steps=20,
                  save_strategy="no", eval_strategy="no", seed=0, eval_split_size=0.0, report_to="none",
                  output_dir=str(tmp_path / f"run-{keys.get('length_debias', 'none')}"),
                  cache_dir=str(tmp_path / "cache"), length_debias_coef=1.0)
    recipe.update(keys)
    run = run_training(load_recipe(write_recipe(tmp_path / "recipe.yaml", **recipe)))
    rm = RewardModel.from_pretrained(str(run))
    m = evaluate_file(rm, str(held), exclude_seen=False).metrics
    return run, m["accuracy"], m["length_bias"]["reward_length_corr"]


def test_debiasing_removes_a_planted_length_bias(tiny_model_dir, tmp_path, biased):
    """Plain Bradley-Terry learns length (the cleaner signal in this data); both options learn the
    marker instead: on held-out pairs where length says nothing, the correlation falls and accuracy rises."""
    train, held = biased
    _, acc_none, corr_none = _train_and_eval(tiny_model_dir, tmp_path, train, held)
    assert corr_none > 0.7 and acc_none < 0.6  # seeded: 0.89 and 0.49 on this machine
    _, acc_pen, corr_pen = _train_and_eval(tiny_model_dir, tmp_path, train, held, length_debias="corr_penalty")
    assert abs(corr_pen) < 0.2 and acc_pen > acc_none + 0.3  # 0.005 and 1.0
    run, acc_odin, corr_odin = _train_and_eval(tiny_model_dir, tmp_path, train, held, length_debias="odin",
                                               max_steps=120)
    assert abs(corr_odin) < 0.2 and acc_odin > acc_none + 0.3  # -0.05 and 1.0
    assert json.loads((run / "rewardkit_run.json").read_text())["length_debias"] == "odin"


def test_odin_with_lora_exports_the_quality_head_only(tiny_model_dir, tmp_path, biased):
    """LoRA + packing + ODIN: the run trains a two-output head; scoring reads the quality output, and the
    export is a plain one-output reward model whose rewards equal the run's quality rewards."""
    from reward.export import export_run

    train, held = biased
    run, _, _ = _train_and_eval(tiny_model_dir, tmp_path, train, held, length_debias="odin", max_steps=8,
                                use_peft=True, lora_r=4, lora_target_modules=["q_proj", "v_proj"])
    rm = RewardModel.from_pretrained(str(run))
    base = rm.model.get_base_model()
    assert base.config.num_labels == 2
    out = export_run(run, tmp_path / "export")
    exported = RewardModel.from_pretrained(str(out))
    assert exported.model.config.num_labels == 1 and exported.model.score.out_features == 1
    texts = [("Question 1: which answer?", "so so good"), ("Question 2: which answer?", "so bad")]
    assert exported.score_batch(texts) == pytest.approx(rm.score_batch(texts), abs=1e-4)


def test_length_debias_keys_are_checked(tiny_recipe):
    with pytest.raises(RecipeError, match="length_debias"):
        load_recipe(tiny_recipe(length_debias="odn"))
    with pytest.raises(RecipeError, match="packing: true"):
        load_recipe(tiny_recipe(length_debias="odin", packing=False))
    with pytest.raises(RecipeError, match="length_debias_coef"):
        load_recipe(tiny_recipe(length_debias="odin", length_debias_coef=-1))
