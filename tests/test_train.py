"""Training runs end to end on CPU: run directory, LoRA head, checkpoints and resume."""

from __future__ import annotations

import gzip
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from reward.config import load_recipe
from reward.run import run_training
from reward.rundir import latest_checkpoint
from tests.conftest import ROOT


def test_full_run_writes_complete_run_directory(tiny_recipe, tmp_path):
    run = run_training(load_recipe(tiny_recipe(save_strategy="steps", save_steps=2, eval_split_size=0.25)))
    for name in ("model.safetensors", "config.json", "tokenizer.json", "recipe.resolved.yaml", "environment.json",
                 "metrics.json", "data_report.json", "logs/train.log", "logs/train_log.jsonl", "run_complete.json",
                 "eval_report/reward_histogram.png", "logs/training_curves.png"):
        assert (run / name).exists(), name
    env = json.loads((run / "environment.json").read_text())["versions"]
    assert {"torch", "transformers", "trl", "accelerate", "peft", "deepspeed"} <= set(env)
    metrics = json.loads((run / "metrics.json").read_text())
    # A seeded tiny run, pinned (as torchtune pins its recipes' losses): a change in data order, loss,
    # packing or a library upgrade that moves the numbers fails here, not in a user's run.
    assert metrics["eval"]["n_pairs"] == 17 and metrics["eval"]["accuracy"] == pytest.approx(13 / 17)
    assert metrics["train"]["train_loss"] == pytest.approx(0.69749, abs=2e-4)
    assert metrics["eval"]["bt_logloss"] == pytest.approx(0.69177, abs=2e-4)
    assert [p.name for p in (run.glob("checkpoint-*"))] and latest_checkpoint(run).name == "checkpoint-4"
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(run)
    assert cfg.pad_token_id is not None and cfg.num_labels == 1


@pytest.mark.skipif(torch.cuda.is_available() or not __import__("reward.seams").seams.cpu_has_native_bf16(),
                    reason="bf16 autocast on a CPU with AMX / AVX512-BF16")
def test_bf16_on_cpu_trains_close_to_fp32_and_saves_fp32(tiny_recipe):
    """The quickstart's path on CPUs that compute bf16 natively: autocast with fp32 master weights. The
    seeded run lands near the fp32 run pinned above (and not on it: autocast really ran)."""
    from safetensors.torch import load_file

    run = run_training(load_recipe(tiny_recipe(bf16=True, eval_split_size=0.25)))
    loss = json.loads((run / "metrics.json").read_text())["train"]["train_loss"]
    assert loss != pytest.approx(0.69749, abs=1e-6) and loss == pytest.approx(0.69749, abs=5e-3)
    assert {t.dtype for t in load_file(str(run / "model.safetensors")).values()} == {torch.float32}


def test_lora_trains_and_saves_the_head(tiny_recipe, tiny_model_dir):
    from safetensors.torch import load_file

    from reward.inference import RewardModel

    run = run_training(load_recipe(tiny_recipe(use_peft=True, lora_r=4, lora_alpha=8,
                                               lora_target_modules=["q_proj", "v_proj"],
                                               eval_split_size=0.0, max_steps=6)))
    weights = load_file(str(run / "adapter_model.safetensors"))
    head = [k for k in weights if "score" in k]
    assert head, list(weights)[:10]
    init = load_file(str(Path(tiny_model_dir) / "model.safetensors"))["score.weight"]
    trained = weights[head[0]]
    assert trained.abs().sum() > 0 and not torch.allclose(trained, init), "head saved untrained"
    rm = RewardModel.from_pretrained(str(run))
    pairs = [("How are you?", "Fine, thanks."), ("Tell me a joke", "No.")]
    first = rm.score_batch(pairs)
    again = RewardModel.from_pretrained(str(run)).score_batch(pairs)
    assert first == again  # reload reproduces rewards exactly


def test_lora_missing_target_lists_modules(tiny_recipe):
    from reward.errors import RecipeError

    with pytest.raises(RecipeError, match=r"\['qkv_proj'\] not found.*Linear modules it has: .*q_proj"):
        run_training(load_recipe(tiny_recipe(use_peft=True, lora_target_modules=["qkv_proj"])))


def test_half_written_checkpoint_is_never_latest(tmp_path):
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": 2}')
    (tmp_path / "checkpoint-4").mkdir()  # killed mid-save: no trainer_state.json
    (tmp_path / "checkpoint-4" / "model.safetensors").write_text("partial")
    (tmp_path / "checkpoint-6").mkdir()  # the disk filled while trainer_state.json was written
    (tmp_path / "checkpoint-6" / "trainer_state.json").write_text('{"global_st')
    assert latest_checkpoint(tmp_path).name == "checkpoint-2"


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "model.safetensors"))


@pytest.mark.parametrize("pairing, members", [("pairwise", 1), ("listwise", 1), ("pairwise", 3)])
def test_resume_after_sigkill_matches_uninterrupted(tiny_recipe, tmp_path, pairing, members):
    """Killed after its step-4 checkpoint and resumed: the weights and the logged losses of steps 5-8 are the
    uninterrupted run's (``listwise``: the group sampler's batches resume where they stopped too; an
    ensemble: each member's bootstrap weights are the same after the resume)."""
    common = dict(max_steps=8, save_strategy="steps", save_steps=2, eval_split_size=0.0, logging_steps=1,
                  pairing=pairing, ensemble_heads=members)
    straight = run_training(load_recipe(tiny_recipe(output_dir=str(tmp_path / "straight"), **common)))

    recipe = tiny_recipe(output_dir=str(tmp_path / "killed"), **common)
    env = dict(os.environ, REWARDKIT_STEP_DELAY="1.0")
    proc = subprocess.Popen([sys.executable, "-m", "reward.cli", "train", str(recipe)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not (tmp_path / "killed" / "checkpoint-4" / "trainer_state.json").exists():
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "killed" / "checkpoint-4" / "trainer_state.json").exists(), "no checkpoint before the kill"
    assert not (tmp_path / "killed" / "run_complete.json").exists()
    resumed = run_training(load_recipe(recipe, {"resume_from_checkpoint": True}))
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    # the steps after the checkpoint log the losses the uninterrupted run logged at the same steps
    def losses(run):
        rows = [json.loads(x) for x in (run / "logs" / "train_log.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in rows if "loss" in r}

    la, lb = losses(straight), losses(resumed)
    assert max(lb) == 8 and {5, 6, 7, 8} <= lb.keys()
    assert [lb[k] for k in (5, 6, 7, 8)] == pytest.approx([la[k] for k in (5, 6, 7, 8)], abs=1e-4)


def test_same_seed_same_model_from_an_lm_checkpoint(tiny_recipe, tiny_policy_dir, tmp_path):
    """A causal-LM checkpoint has no score head: the new head must come from the recipe's seed, so
    two runs of one recipe train the same model (and another seed a different one)."""
    from safetensors.torch import load_file

    def head(seed: int, name: str) -> torch.Tensor:
        run = run_training(load_recipe(tiny_recipe(model_name_or_path=str(tiny_policy_dir), seed=seed, max_steps=1,
                                                   eval_split_size=0.0, output_dir=str(tmp_path / name))))
        return load_file(run / "model.safetensors")["score.weight"]

    first, again, other = head(7, "a"), head(7, "b"), head(8, "c")
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_diverged_run_stops_with_an_error_and_is_not_complete(tiny_recipe, tmp_path):
    """A loss that turns NaN stops the run at the next log step: one error line, exit 2, no completion stamp."""
    recipe = tiny_recipe(learning_rate=1e30, max_grad_norm=0, max_steps=6, logging_steps=1)
    proc = subprocess.run([sys.executable, "-m", "reward.cli", "train", str(recipe)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if "error: " in line]  # tqdm may share the line
    assert len(errors) == 1 and "error: training diverged: the loss is nan" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    run = tmp_path / "run"
    assert not (run / "run_complete.json").exists()
    losses = [json.loads(x).get("loss") for x in (run / "logs" / "train_log.jsonl").read_text().splitlines()]
    assert losses and not all(x == x for x in losses if x is not None)  # the NaN that stopped it is in the log


def test_token_budget_epoch_sees_every_pair_once(tiny_recipe, tmp_path):
    """max_tokens_per_batch: one epoch of token-budget micro-batches computes exactly the train set's
    packed tokens (every pair once, none dropped), in fewer steps than pairs."""
    from reward.data import DataSettings, prepare_data
    from reward.modeling import load_tokenizer
    from reward.packing import packed_pair_lengths

    recipe = load_recipe(tiny_recipe(max_tokens_per_batch=700, max_steps=-1, num_train_epochs=1, logging_steps=1,
                                     eval_split_size=0.0))
    run = run_training(recipe)
    logs = [json.loads(x) for x in (run / "logs" / "train_log.jsonl").read_text().splitlines()]
    steps = [x for x in logs if "loss" in x]
    tok = load_tokenizer(recipe.model.model_name_or_path)
    data = prepare_data(recipe.sources, tok, DataSettings.from_recipe(recipe))
    lengths = packed_pair_lengths(data.train)
    assert sum(x["tokens"] for x in steps) == sum(lengths)
    assert 1 < len(steps) < len(lengths) / 2


def test_a_run_resolves_its_model_path_once(tiny_recipe, monkeypatch):
    """From the recipe to the model the Trainer gets, the model's path (``pypi:``, GGUF, remote code) is
    resolved once, and every loader reads that one ``ModelSource``."""
    from reward.modeling import source
    from reward.run import setup

    calls = []
    real = source.resolve_model_path
    monkeypatch.setattr(source, "resolve_model_path", lambda *a, **k: calls.append(a) or real(*a, **k))
    run = setup(load_recipe(tiny_recipe(use_peft=True, lora_target_modules=["q_proj"])))  # the LoRA preflight too
    assert len(calls) == 1 and run.model is not None and run.tokenizer is not None


def test_ctrl_c_names_the_last_checkpoint_and_exits_130_without_a_traceback(tiny_recipe, tmp_path):
    """Ctrl-C during `rewardkit train`: one line naming the last complete checkpoint (how to resume), exit
    130, no traceback, and the run is not stamped complete."""
    recipe = tiny_recipe(output_dir=str(tmp_path / "run"), max_steps=60, save_strategy="steps", save_steps=2,
                         eval_split_size=0.0, logging_steps=1)
    # A suite started in the background by a shell without job control ignores SIGINT, and a child inherits
    # an ignored signal (the run then trains on, exit 0); a handled one is reset to the default at exec.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "reward.cli", "train", str(recipe)], text=True,
                                env=dict(os.environ, REWARDKIT_STEP_DELAY="0.5"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    finally:
        signal.signal(signal.SIGINT, previous)
    marker = tmp_path / "run" / "checkpoint-2" / "trainer_state.json"
    deadline = time.time() + 240
    while time.time() < deadline and not marker.exists() and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    said = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert len(said) == 1 and "checkpoint-" in said[0] and "--resume_from_checkpoint latest" in said[0], said
    assert not (tmp_path / "run" / "run_complete.json").exists()


def test_max_length_past_the_models_context_is_cut_to_it_with_one_warning(tiny_recipe, tiny_model_dir, caplog):
    """A max_length longer than the model's positions (1024 here) is cut to them, once, with a warning:
    in training (before the data step) and in scoring (`score` / `serve` --max_length)."""
    from reward import RewardModel

    with caplog.at_level(logging.WARNING, logger="reward.modeling.heads"):
        run = run_training(load_recipe(tiny_recipe(max_length=100000, max_steps=1)))
    said = [r.message for r in caplog.records if "context" in r.message]
    assert len(said) == 1 and "1024" in said[0], said
    assert json.loads((run / "rewardkit_run.json").read_text())["max_length"] == 1024
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="reward.modeling.heads"):
        rm = RewardModel.from_pretrained(str(tiny_model_dir), max_length=100000)
    assert rm.max_length == 1024 and len([r for r in caplog.records if "context" in r.message]) == 1


def test_two_eval_datasets_are_evaluated_and_reported_by_name(tiny_recipe, hh_small, tmp_path):
    """`eval_datasets: {name: source}`: each set is evaluated at eval_steps and at the end, logged and reported
    under its name (metrics.json, train_log.jsonl, eval_report/NAME), the held-out split beside them."""
    llmbar = tmp_path / "llmbar.jsonl"
    with gzip.open(ROOT.parent / "shared" / "data" / "llmbar-rewardbench-schema.jsonl.gz", "rt") as fh:
        llmbar.write_text("".join(fh.readlines()[:12]))
    run = run_training(load_recipe(tiny_recipe(
        eval_split_size=0.25, eval_strategy="steps", eval_steps=2, max_steps=4, max_eval_samples=20,
        eval_datasets={"hh": {"path": str(hh_small), "format": "hh-rlhf"}, "llmbar": str(llmbar)})))
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["eval_datasets"]) == {"hh", "llmbar"} and "accuracy" in metrics["eval"]
    report = json.loads((run / "data_report.json").read_text())["eval_datasets"]
    assert report["hh"]["total"] == 80 and report["hh"]["kept"] <= 20  # max_eval_samples, then the length rule
    for name in ("hh", "llmbar"):
        assert metrics["eval_datasets"][name]["n_pairs"] == report[name]["kept"] > 0, name
    logged = [json.loads(x) for x in (run / "logs" / "train_log.jsonl").read_text().splitlines()]
    for name in ("held_out", "hh", "llmbar"):
        steps = [r["step"] for r in logged if f"eval_{name}_accuracy" in r]
        assert steps == [2, 4], (name, steps)
    assert (run / "eval_report" / "llmbar" / "report.md").is_file() and (run / "logs" / "training_curves.png").is_file()
