"""Multi-process runs on CPU through `accelerate launch` (gloo): DDP training and 2-machine rendezvous."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.launcher import RENDEZVOUS_TIMEOUT_S, ROOT, accelerate_cmd, free_port, launch_env, run_all

pytestmark = pytest.mark.distributed
MULTI_CPU = ROOT / "accelerate_configs" / "multi_cpu.yaml"


def test_two_process_train_save_reload(tiny_recipe, tmp_path):
    """DDP on 2 processes; the eval logged during training counts each eval pair exactly once
    (the sampler repeats pairs to even out the last batch) and agrees with the end-of-run report."""
    from reward.inference import RewardModel

    recipe = tiny_recipe(eval_split_size=0.2, max_steps=3, eval_strategy="steps", eval_steps=3,
                         per_device_eval_batch_size=5, ddp_timeout=RENDEZVOUS_TIMEOUT_S)
    cmd = accelerate_cmd(MULTI_CPU, free_port(), str(ROOT / "launch" / "train.py"), str(recipe))
    proc = run_all([cmd], launch_env(), timeout=300, what="2-process run")[0]
    run = tmp_path / "run"
    env = json.loads((run / "environment.json").read_text())
    assert env["world_size"] == 2
    assert (run / "run_complete.json").exists() and "held-out accuracy" in proc.stdout
    final = json.loads((run / "metrics.json").read_text())["eval"]
    assert final["n_pairs"] % 10, "precondition: the eval set must not fill whole 2×5 batches"
    logged = [json.loads(x) for x in (run / "logs" / "train_log.jsonl").read_text().splitlines()]
    evals = [x for x in logged if "eval_accuracy" in x]
    assert len(evals) == 1 and evals[0]["step"] == 3
    assert evals[0]["eval_pairs"] == final["n_pairs"]
    assert evals[0]["eval_accuracy"] == pytest.approx(final["accuracy"], abs=1e-9)
    # the saved model reproduces the rewards the trained (DDP-wrapped) model gave its held-out pairs
    ref = json.loads((run / "eval_report" / "rewards.json").read_text())
    got = RewardModel.from_pretrained(str(run)).score_token_ids(ref["chosen_ids"] + ref["rejected_ids"])
    assert got == pytest.approx(ref["chosen"] + ref["rejected"], abs=1e-4)


WORKER = r'''
import os, sys, torch
from accelerate import Accelerator
from reward.config import load_recipe
from reward.run import run_training
# A different seed per rank: separate processes would then take different batches and end with
# different weights; only DDP's all-reduce makes them equal.
recipe = load_recipe(sys.argv[1], {"output_dir": sys.argv[2], "max_steps": 1, "eval_split_size": 0.0,
                                   "learning_rate": 0.05, "seed": 1 + int(os.environ["RANK"]),
                                   "ddp_timeout": int(os.environ["RK_TIMEOUT"])})
run_training(recipe)
'''


def test_two_machines_rendezvous_and_allreduce(tiny_recipe, tmp_path):
    """2 "machines" × 1 process on 127.0.0.1, each with its own seed: after one step both ranks hold
    identical weights (and they differ from the start), which only the gradient all-reduce can produce."""
    recipe = tiny_recipe()
    script = tmp_path / "worker.py"
    script.write_text(WORKER + r'''
from accelerate import PartialState
state = PartialState()
import torch.distributed as dist
assert dist.is_initialized() and state.num_processes == 2, (state.distributed_type, state.num_processes)
from transformers import AutoModelForSequenceClassification
m = AutoModelForSequenceClassification.from_pretrained(sys.argv[2])
flat = torch.cat([p.detach().flatten() for p in m.parameters()])
out = [torch.zeros_like(flat) for _ in range(2)]
dist.all_gather(out, flat)
if state.is_main_process:
    init = AutoModelForSequenceClassification.from_pretrained(sys.argv[3])
    base = torch.cat([p.detach().flatten() for p in init.parameters()])
    print("SAME", torch.equal(out[0], out[1]), "MOVED", not torch.allclose(out[0], base))
# every rank ends as `rewardkit train` ends it
from reward.training import exit_rank
exit_rank(0)
''')
    port = free_port()
    import yaml

    model_dir = yaml.safe_load(Path(recipe).read_text())["model_name_or_path"]
    cmds = [accelerate_cmd(MULTI_CPU, port, "--num_machines", "2", "--machine_rank", str(rank), "--num_processes", "2",
                           "--main_process_ip", "127.0.0.1", str(script), str(recipe), str(tmp_path / "run2"), model_dir)
            for rank in (0, 1)]
    outs = run_all(cmds, launch_env(RK_TIMEOUT=str(RENDEZVOUS_TIMEOUT_S)), timeout=300, what="2-machine run")
    assert "SAME True MOVED True" in outs[0].stdout, outs[0].stdout[-2000:]


def test_two_process_listwise_with_groups_split_over_rows(tiny_recipe, tmp_path):
    """DDP with listwise batches whose questions exceed the token budget: each group spans several packed
    rows, one forward each, and DDP allows one forward per backward (without ``no_sync`` on the rows
    before the last, this run hung). Both ranks finish and the run is complete."""
    import gzip

    from tests.test_listwise import QA_FEEDBACK

    data = tmp_path / "qa.json"
    data.write_text(json.dumps(json.loads(gzip.open(QA_FEEDBACK).read())[:12]))
    recipe = tiny_recipe(datasets=[{"path": str(data), "format": "qa-feedback"}], max_length=1024, pairing="listwise",
                         max_tokens_per_batch=700, max_steps=3, eval_split_size=0.0, logging_steps=1,
                         ddp_timeout=RENDEZVOUS_TIMEOUT_S)
    cmd = accelerate_cmd(MULTI_CPU, free_port(), str(ROOT / "launch" / "train.py"), str(recipe))
    run_all([cmd], launch_env(), timeout=300, what="2-process listwise run")
    run = tmp_path / "run"
    assert json.loads((run / "environment.json").read_text())["world_size"] == 2
    assert (run / "run_complete.json").exists()
    logged = [json.loads(x) for x in (run / "logs" / "train_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in logged if "loss" in x] == [1, 2, 3]
