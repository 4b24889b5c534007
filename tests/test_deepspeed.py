"""DeepSpeed ZeRO through a real `accelerate launch`: 2 CPU processes over gloo, fp32, the tiny model.

DeepSpeed's CPU accelerator (DS_ACCELERATOR=cpu, set by `rewardkit train --accelerate_config
zero*_cpu`) falls back to gloo without oneCCL and JIT-builds its ops with the machine's g++.
Every test checks what users lose on clusters: a saved model that is empty or does not reproduce
the rewards the trained model gave."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT
from tests.launcher import free_port, launch_env, run_all

pytestmark = [pytest.mark.deepspeed, pytest.mark.distributed]
deepspeed = pytest.importorskip("deepspeed", reason="DeepSpeed is part of the test setup (README: Tests)")


def _env(**extra: str) -> dict[str, str]:
    return launch_env(**extra)


def _port() -> str:
    return str(free_port())  # below the ephemeral range: see tests/launcher.py


def _train(recipe: Path, config: str, *overrides: str, env: dict[str, str] | None = None,
           timeout: int = 600) -> subprocess.CompletedProcess:
    """`rewardkit train RECIPE --accelerate_config CONFIG`: the command users run. A failure shows every
    rank's traceback; a hang is aborted with every process's stacks (tests/launcher.py)."""
    cmd = [sys.executable, "-m", "reward.cli", "train", str(recipe), "--accelerate_config", config, *overrides]
    return run_all([cmd], env or _env(MASTER_PORT=_port()), timeout=timeout, what=f"{config} run")[0]


def _reloaded_matches_trained(run: Path, tol: float = 1e-5) -> float:
    """The trained model's own rewards (its packed forward under DeepSpeed, at the end of training)
    against the saved model reloaded alone and scored padded."""
    from reward.inference import RewardModel

    ref = json.loads((run / "eval_report" / "rewards.json").read_text())
    rm = RewardModel.from_pretrained(str(run), device="cpu")
    got = rm.score_token_ids(ref["chosen_ids"] + ref["rejected_ids"], batch_size=8)
    worst = max(abs(a - b) for a, b in zip(got, ref["chosen"] + ref["rejected"]))
    assert worst <= tol, worst
    return worst


def _tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.fixture()
def ds_recipe(tiny_recipe):
    def make(**keys):
        base = dict(max_steps=4, eval_split_size=0.2, max_eval_samples=16, per_device_train_batch_size=4,
                    logging_steps=1, learning_rate=5e-3)
        return tiny_recipe(**{**base, **keys})

    return make


@pytest.mark.parametrize("config, debias, pairing, members", [("zero2_cpu", "odin", "pairwise", 1),
                                                               ("zero3_cpu", "corr_penalty", "listwise", 3),
                                                               ("zero3_cpu", "odin", "pairwise", 1)])
def test_zero_full_finetune_saves_a_real_model(ds_recipe, tmp_path, config, debias, pairing, members, tiny_policy_dir):
    """Each ZeRO stage saves a real model that reproduces the trained rewards, with length debiasing on
    (ODIN's two-output head is saved whole; its quality output is what scoring reads), and under
    ZeRO-3 an ensemble of 3 heads (each drawn on the gathered head) with listwise batches and the
    correlation penalty on each head. ZeRO-3 with a new head (ODIN, an ensemble) starts from a language
    model (no head yet), as users do."""
    base = {"model_name_or_path": str(tiny_policy_dir)} if config == "zero3_cpu" and (debias == "odin" or members > 1) \
        else {}
    proc = _train(ds_recipe(length_debias=debias, pairing=pairing, ensemble_heads=members, **base), config)
    run = tmp_path / "run"
    assert json.loads((run / "environment.json").read_text())["world_size"] == 2
    assert (run / "run_complete.json").exists() and "held-out accuracy" in proc.stdout
    weights = _tensors(run / "model.safetensors")
    assert weights["score.weight"].numel() > 0 and all(t.numel() > 0 for t in weights.values())  # not the empty save
    assert weights["score.weight"].shape[0] == (2 if debias == "odin" else members)
    if members > 1:  # each member drawn from its own seed on the gathered head (4 Adam steps of 5e-3 from it)
        from reward.modeling.heads import member_row

        rows = weights["score.weight"]
        drawn = torch.stack([member_row(0, m, rows.shape[1], 0.02) for m in range(members)])
        assert (rows - drawn).abs().max() < 0.025 < (rows[1:] - drawn[:-1]).abs().max()
    _reloaded_matches_trained(run)


def test_zero3_lora_adapter_holds_a_trained_head_and_exports(ds_recipe, tmp_path, tiny_model_dir):
    from reward.export import export_run
    from reward.inference import RewardModel

    _train(ds_recipe(use_peft=True, lora_r=4, lora_alpha=8, learning_rate=1e-2), "zero3_cpu")
    run = tmp_path / "run"
    adapter = _tensors(run / "adapter_model.safetensors")
    heads = [k for k in adapter if "score" in k]
    assert heads, list(adapter)[:5]
    initial = _tensors(tiny_model_dir / "model.safetensors")["score.weight"]
    head = adapter[heads[0]]
    assert head.abs().sum() > 0 and not head.equal(initial)  # trained, not the fresh or an empty head
    _reloaded_matches_trained(run)  # base + adapter
    out = export_run(run, tmp_path / "export")
    ref = json.loads((run / "eval_report" / "rewards.json").read_text())
    merged = RewardModel.from_pretrained(str(out), device="cpu").score_token_ids(ref["chosen_ids"] + ref["rejected_ids"])
    assert max(abs(a - b) for a, b in zip(merged, ref["chosen"] + ref["rejected"])) <= 1e-4


def test_zero3_resume_after_sigkill_matches_uninterrupted(ds_recipe, tmp_path):
    common = dict(save_strategy="steps", save_steps=2, eval_split_size=0.0, max_steps=6)
    straight_recipe = ds_recipe(output_dir=str(tmp_path / "straight"), **common)
    shutil.copy(straight_recipe, tmp_path / "straight.yaml")
    _train(tmp_path / "straight.yaml", "zero3_cpu")

    killed = ds_recipe(output_dir=str(tmp_path / "killed"), **common)
    cmd = [sys.executable, "-m", "reward.cli", "train", str(killed), "--accelerate_config", "zero3_cpu"]
    proc = subprocess.Popen(cmd, env=_env(MASTER_PORT=_port(), REWARDKIT_STEP_DELAY="2.0"), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    marker = tmp_path / "killed" / "checkpoint-2" / "trainer_state.json"
    deadline = time.time() + 400
    while time.time() < deadline and not marker.exists():
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks, as a node failure would
    proc.wait()
    assert marker.exists(), "no checkpoint before the kill"
    assert not (tmp_path / "killed" / "run_complete.json").exists()
    _train(killed, "zero3_cpu", "--resume_from_checkpoint", "true")
    a, b = _tensors(tmp_path / "straight" / "model.safetensors"), _tensors(tmp_path / "killed" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max() <= 1e-5, k


ZERO3_WITHOUT_16BIT_SAVE = """\
compute_environment: LOCAL_MACHINE
distributed_type: DEEPSPEED
deepspeed_config:
  gradient_accumulation_steps: auto
  gradient_clipping: auto
  offload_optimizer_device: none
  offload_param_device: none
  zero3_init_flag: true
  zero_stage: 3
mixed_precision: "no"
num_machines: 1
num_processes: 2
machine_rank: 0
rdzv_backend: static
same_network: true
use_cpu: false
"""


def test_zero3_config_without_16bit_save_cannot_save_empty_weights_and_shards_consolidate(ds_recipe, tmp_path):
    """A user's own ZeRO-3 config without `zero3_save_16bit_model`, launched with plain `accelerate
    launch`: rewardkit turns the key on with a warning naming it, the saved model is real; and a
    checkpoint holding only DeepSpeed shards becomes a plain model through `rewardkit export`."""
    config = tmp_path / "my_zero3.yaml"
    config.write_text(ZERO3_WITHOUT_16BIT_SAVE)
    recipe = ds_recipe(save_strategy="steps", save_steps=4)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--main_process_port",
           _port(), str(ROOT / "launch" / "train.py"), str(recipe)]
    proc = run_all([cmd], _env(DS_ACCELERATOR="cpu"), timeout=600, what="zero3 run without 16-bit save")[0]
    assert "zero3_save_16bit_model" in proc.stderr  # the warning names the key
    run = tmp_path / "run"
    assert all(t.numel() > 0 for t in _tensors(run / "model.safetensors").values())
    _reloaded_matches_trained(run)

    ckpt = run / "checkpoint-4"
    assert list(ckpt.glob("global_step*")), "precondition: DeepSpeed shards in the checkpoint"
    for f in ckpt.glob("model*.safetensors"):
        f.unlink()  # a checkpoint with DeepSpeed shards only
    out = tmp_path / "from_shards"
    proc = subprocess.run([sys.executable, "-m", "reward.cli", "export", str(ckpt), "--output_dir", str(out)],
                          capture_output=True, text=True, timeout=600, env=_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_pretrained(out)  # plain transformers reads it
    _reloaded_matches_trained_from(out, run)


def _reloaded_matches_trained_from(model_dir: Path, run: Path) -> None:
    from reward.inference import RewardModel

    ref = json.loads((run / "eval_report" / "rewards.json").read_text())
    got = RewardModel.from_pretrained(str(model_dir), device="cpu").score_token_ids(ref["chosen_ids"] + ref["rejected_ids"])
    assert max(abs(a - b) for a, b in zip(got, ref["chosen"] + ref["rejected"])) <= 1e-5


ZERO3_OFFLOAD_CPU = ZERO3_WITHOUT_16BIT_SAVE.replace("offload_optimizer_device: none", "offload_optimizer_device: cpu") \
    .replace("  zero_stage: 3", "  zero3_save_16bit_model: true\n  zero_stage: 3")


def test_zero3_optimizer_offload_trains_with_cpu_adam(ds_recipe, tmp_path):
    """ZeRO-3 with the optimizer offloaded: DeepSpeed refuses torch's AdamW there on GPUs, so rewardkit
    hands it DeepSpeed's CPU Adam (JIT-built with g++), which must take the same steps as AdamW."""
    config = tmp_path / "zero3_offload_cpu.yaml"
    config.write_text(ZERO3_OFFLOAD_CPU)
    proc = _train(ds_recipe(output_dir=str(tmp_path / "offload")), str(config))
    assert "DeepSpeedCPUAdam" in proc.stderr
    _train(ds_recipe(output_dir=str(tmp_path / "plain")), "zero3_cpu")

    def losses(run: Path) -> list[float]:
        logs = [json.loads(x) for x in (run / "logs" / "train_log.jsonl").read_text().splitlines()]
        return [x["loss"] for x in logs if "loss" in x]

    offloaded, plain = losses(tmp_path / "offload"), losses(tmp_path / "plain")
    assert len(offloaded) == 4 and offloaded == pytest.approx(plain, abs=1e-4)  # same optimisation, other device
    assert offloaded[1:] != offloaded[:1] * 3  # and it did move
    _reloaded_matches_trained(tmp_path / "offload")
