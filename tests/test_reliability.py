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
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
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
