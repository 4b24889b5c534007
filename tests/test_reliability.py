"""Reliability: a model's own code never runs uninvited, no secret reaches a file, bad input is one
`error:` line and exit 2 (the issue-13 cases; export's output-dir safety is in test_export.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

CUSTOM_MODEL = '''
from transformers import LlamaForSequenceClassification
open({marker!r}, "w").write("the model's own code ran")


class RkTestForSequenceClassification(LlamaForSequenceClassification):
    pass
'''


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reward.cli", *args], capture_output=True, text=True, input=stdin,
                          timeout=300, cwd=ROOT)


def one_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    # ours: "error: ..."; argparse's: "rewardkit CMD: error: ..." (after a usage line)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ") or ": error: " in line]
    assert len(errors) == 1, proc.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture()
def remote_code_model(tiny_model_dir, tmp_path) -> Path:
    """The tiny model, but its config maps to a Python file in the folder that leaves a mark when run."""
    out = shutil.copytree(tiny_model_dir, tmp_path / "custom")
    (out / "modeling_rk.py").write_text(CUSTOM_MODEL.format(marker=str(tmp_path / "ran.marker")))
    cfg = json.loads((out / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForSequenceClassification": "modeling_rk.RkTestForSequenceClassification"}
    (out / "config.json").write_text(json.dumps(cfg))
    return out


@pytest.mark.parametrize("command", ["score", "eval", "export"])
def test_model_code_never_runs_uninvited(remote_code_model, tmp_path, command):
    """A 'y' on stdin used to run the folder's code (and an open pipe hung): now refused, never prompted."""
    rows = tmp_path / "in.jsonl"
    rows.write_text(json.dumps({"prompt": "Hi", "response": "Hello"}) + "\n")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "Hi", "chosen": "Hello", "rejected": "Go away"}) + "\n")
    args = {"score": ["score", str(remote_code_model), str(rows), "--out", str(tmp_path / "o.jsonl")],
            "eval": ["eval", str(remote_code_model), "--data", str(pairs)],
            "export": ["export", str(remote_code_model), "--output_dir", str(tmp_path / "exp")]}[command]
    proc = cli(*args, stdin="y\ny\n")
    one_error(proc, "ships its own Python code", "--trust_remote_code")
    assert not (tmp_path / "ran.marker").exists()
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "exp").exists()


def test_model_code_runs_when_allowed(remote_code_model, tmp_path):
    from reward.scoring import RewardModel

    rm = RewardModel.from_pretrained(str(remote_code_model), trust_remote_code=True)
    assert type(rm.model).__name__ == "RkTestForSequenceClassification"
    assert isinstance(rm.score("Hi", "Hello"), float) and (tmp_path / "ran.marker").exists()


def _recipe(tmp_path: Path, tiny_model_dir: Path, **keys) -> Path:
    from tests.conftest import SAMPLE, write_recipe

    base = dict(model_name_or_path=str(tiny_model_dir), datasets=[{"path": str(SAMPLE), "format": "hh-rlhf"}],
                max_length=128, max_steps=2, output_dir=str(tmp_path / "run"), report_to="none")
    return write_recipe(tmp_path / "r.yaml", **{**base, **keys})


@pytest.mark.parametrize("keys, needles", [
    ({"output_dir": ["a", "b"]}, ["'output_dir'", "got a list"]),
    ({"learning_rate": -1e-5}, ["'learning_rate'"]),
    ({"learning_rate": 0}, ["'learning_rate'"]),
    ({"learning_rate": float("nan")}, ["'learning_rate'"]),
    ({"per_device_train_batch_size": 0}, ["'per_device_train_batch_size'", "at least 1"]),
    ({"gradient_accumulation_steps": 0}, ["'gradient_accumulation_steps'"]),
    ({"max_steps": 0, "num_train_epochs": 0}, ["leave nothing to train"]),
    ({"lora_task_type": "CAUSAL_LM", "use_peft": True}, ["'lora_task_type'", "SEQ_CLS"]),
    ({"use_peft": True, "lora_target_modules": ["qkv_proj"]}, ["['qkv_proj'] not found", "q_proj"]),
])
def test_bad_recipe_values_fail_before_anything_is_written(tmp_path, tiny_model_dir, keys, needles):
    proc = cli("train", str(_recipe(tmp_path, tiny_model_dir, **keys)))
    one_error(proc, *needles)
    assert not (tmp_path / "run").exists() and not (tmp_path / "a").exists()  # no half-made run directory


def test_recipe_not_utf8_and_output_dir_a_file(tmp_path, tiny_model_dir):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("model_name_or_path: caf\xe9\n".encode("latin-1"))
    one_error(cli("train", str(bad)), "not UTF-8")
    (tmp_path / "taken").write_text("a file")
    one_error(cli("train", str(_recipe(tmp_path, tiny_model_dir, output_dir=str(tmp_path / "taken")))),
              "'output_dir'", "existing file")
    assert (tmp_path / "taken").read_text() == "a file"


@pytest.mark.parametrize("args, needle", [
    (["--num_gpus", "0"], "--num_gpus"),
    (["--num_gpus", "-2"], "--num_gpus"),
    (["--num_machines", "0"], "--num_machines"),
    (["--gpu_memory_gb", "-80"], "--gpu_memory_gb"),
])
def test_plan_rejects_impossible_machines(args, needle):
    one_error(cli("plan", str(ROOT / "recipes" / "quickstart.yaml"), *args), needle)


@pytest.mark.parametrize("args, needle", [
    (["eval", "M", "--data", "d.jsonl", "--max_pairs", "0"], "--max_pairs"),
    (["eval", "M", "--data", "d.jsonl", "--max_pairs", "-1"], "--max_pairs"),
    (["eval", "M", "--data", "d.jsonl", "--batch_size", "0"], "--batch_size"),
    (["score", "M", "in.jsonl", "--out", "o.jsonl", "--batch_size", "0"], "--batch_size"),
    (["export", "RUN", "--output_dir", "x", "--verify_pairs", "0"], "--verify_pairs"),
    (["export", "RUN", "--output_dir", "x", "--tolerance", "-1"], "--tolerance"),
    (["demo", "--reward", "R", "--prompts", "p.txt", "-n", "0"], "-n"),
])
def test_impossible_numbers_are_refused_by_the_parser(args, needle):
    one_error(cli(*args), needle)
