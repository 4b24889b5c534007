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
    from reward.inference import RewardModel

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


def _inspect(tmp_path: Path, tiny_model_dir: Path, data: Path, fmt: str) -> subprocess.CompletedProcess:
    return cli("data", "inspect", str(_recipe(tmp_path, tiny_model_dir)), "--data", str(data), "--format", fmt)


def test_data_errors_name_the_problem(tmp_path, tiny_model_dir):
    one_error(cli("data", "inspect", str(_recipe(tmp_path, tiny_model_dir)), "--format", "nope"),
              "unknown format 'nope'")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    one_error(_inspect(tmp_path, tiny_model_dir, empty, "pairs"), "the file is empty")
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\n")
    one_error(_inspect(tmp_path, tiny_model_dir, blank, "pairs"), "no rows")
    broken = tmp_path / "broken.jsonl"
    good = json.dumps({"prompt": "Hi", "chosen": "Hello", "rejected": "Go away"})
    broken.write_text("\n".join([good] * 5 + ['{"prompt": "Hi", "chosen": "Hel'] + [good] * 3) + "\n")
    one_error(_inspect(tmp_path, tiny_model_dir, broken, "pairs"), "broken.jsonl:6:", "not valid JSON")
    not_object = tmp_path / "list.jsonl"
    not_object.write_text(good + "\n[1, 2]\n")
    one_error(_inspect(tmp_path, tiny_model_dir, not_object, "pairs"), "list.jsonl:2:", "JSON object")
    csv = tmp_path / "ranked.csv"
    csv.write_text("question,reply,score\nHi,Hello,1\nHi,Go away,2\n")
    one_error(_inspect(tmp_path, tiny_model_dir, csv, "ranked-csv"), "missing 'prompt', 'answer', 'rank'",
              "columns: question, reply, score")


def test_pairs_without_a_prompt_column_are_kept(tmp_path, tiny_model_dir):
    """Prompts are optional (README): such pairs are formatted with an empty user turn, not a crash."""
    path = tmp_path / "noprompt.jsonl"
    path.write_text("".join(json.dumps({"chosen": f"good answer {i}", "rejected": f"bad {i}"}) + "\n" for i in range(10)))
    proc = cli("data", "inspect", str(_recipe(tmp_path, tiny_model_dir)), "--data", str(path), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["total"] == 10 and report["kept"] == 10


@pytest.mark.parametrize("damage", ["missing", "no_weights", "truncated", "garbage"])
def test_unloadable_models_are_named(tiny_model_dir, tmp_path, damage):
    model = tmp_path / "model"
    if damage != "missing":
        shutil.copytree(tiny_model_dir, model)
        weights = model / "model.safetensors"
        if damage == "no_weights":
            weights.unlink()
        elif damage == "truncated":
            weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        else:
            weights.write_bytes(b"\x00" * 64)
    rows = tmp_path / "in.jsonl"
    rows.write_text(json.dumps({"prompt": "Hi", "response": "Hello"}) + "\n")
    proc = cli("score", str(model), str(rows), "--out", str(tmp_path / "o.jsonl"))
    needle = {"missing": "no such model", "no_weights": "no model weights", "truncated": "truncated or corrupt",
              "garbage": "truncated or corrupt"}[damage]
    one_error(proc, str(model), needle)
    assert not (tmp_path / "o.jsonl").exists()


def test_scoring_input_and_output_checked_before_the_model_loads(tiny_model_dir, tmp_path):
    rows = tmp_path / "in.jsonl"
    rows.write_text(json.dumps({"prompt": [{"role": "user", "content": "Hi"}, {"content": "no role"}],
                                "response": "Hello"}) + "\n")
    one_error(cli("score", str(tmp_path / "no-model-needed"), str(rows), "--out", str(tmp_path / "o.jsonl")),
              "in.jsonl:1", "prompt[1]")
    rows.write_text(json.dumps({"response": "Hello"}) + "\n")  # no prompt: allowed, scored with an empty turn
    (tmp_path / "outdir").mkdir()
    one_error(cli("score", str(tmp_path / "no-model-needed"), str(rows), "--out", str(tmp_path / "outdir")),
              "is a directory")
    proc = cli("score", str(tiny_model_dir), str(rows), "--out", str(tmp_path / "o.jsonl"), "--no_progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    from reward.inference import RewardModel

    # no prompt: scored as the reply to one empty user turn
    want = RewardModel.from_pretrained(str(tiny_model_dir), device="cpu").score("", "Hello")
    assert json.loads((tmp_path / "o.jsonl").read_text())["score"] == pytest.approx(want, abs=1e-4)


def test_sigterm_during_score_leaves_nothing_behind(tiny_model_dir, tmp_path):
    import os
    import signal
    import time

    rows = tmp_path / "in.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"Question {i}?", "responses": ["a " * 60, "b " * 60]}) + "\n"
                            for i in range(4000)))
    out = tmp_path / "o.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "reward.cli", "score", str(tiny_model_dir), str(rows), "--out",
                             str(out), "--no_progress", "--pack_tokens", "0", "--batch_size", "2"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".o.jsonl.partial-*")):
        time.sleep(0.1)
    assert list(tmp_path.glob(".o.jsonl.partial-*")), "scoring never started"
    os.kill(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]  # no output, no hidden partial file


def test_published_model_files_follow_the_umask(tiny_recipe, umask_022):
    from reward.config import load_recipe
    from reward.run import run_training

    run = run_training(load_recipe(tiny_recipe(eval_split_size=0.0, max_steps=2)))
    assert (run / "model.safetensors").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("where", ["optimizer", "weights", "trainer_state"])
def test_disk_full_while_saving_a_checkpoint(where, tiny_recipe, monkeypatch, capsys):
    """A full disk during the second checkpoint's save (an OSError, safetensors' own error type, or a
    truncated trainer_state.json): one `error:` line naming the path, the half-written checkpoint removed,
    and resuming picks the complete one."""
    import errno

    from safetensors import SafetensorError
    from transformers import Trainer
    from transformers.trainer_callback import TrainerState

    from reward.cli import main
    from reward.rundir import complete_checkpoints, latest_checkpoint

    recipe = tiny_recipe(save_strategy="steps", save_steps=2, max_steps=4)
    run = recipe.parent / "run"
    calls = {"n": 0}

    def full(real, on_second):
        def wrapped(self, output_dir, *a, **kw):
            calls["n"] += 1
            if calls["n"] == on_second:
                if where == "weights":
                    Path(output_dir).mkdir(parents=True, exist_ok=True)
                    (Path(output_dir) / "model.safetensors").write_bytes(b"\0" * 64)  # cut off mid-write
                    raise SafetensorError('Error while serializing: I/O error: No space left on device (os error 28)')
                if where == "trainer_state":
                    Path(output_dir).write_text('{"global_st')  # the write stopped mid-file
                    raise OSError(errno.ENOSPC, "No space left on device", str(output_dir))
                raise OSError(errno.ENOSPC, "No space left on device", str(Path(output_dir) / "optimizer.pt"))
            return real(self, output_dir, *a, **kw)
        return wrapped

    if where == "optimizer":
        monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", full(Trainer._save_optimizer_and_scheduler, 2))
    elif where == "weights":
        monkeypatch.setattr(Trainer, "_save", full(Trainer._save, 2))
    else:
        monkeypatch.setattr(TrainerState, "save_to_json", full(TrainerState.save_to_json, 2))
    assert main(["train", str(recipe)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "checkpoint-4" in err[0] and ("No space left" in err[0]) and "Traceback" not in err[0]
    assert [p.name for p in complete_checkpoints(run)] == ["checkpoint-2"] and latest_checkpoint(run).name == "checkpoint-2"
    assert not (run / "checkpoint-4").exists()


def test_not_a_reward_model_is_refused(tiny_model_dir, tmp_path, capsys):
    """A 2-label classifier (a sentiment model, say) is not scored silently on its first logit."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from reward.cli import main

    two = tmp_path / "two"
    AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2,
                                                       ignore_mismatched_sizes=True).save_pretrained(two)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(two)
    (tmp_path / "in.jsonl").write_text('{"prompt": "Hi", "response": "Hello"}\n')
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "Hi", "chosen": "Hello", "rejected": "Go away"}\n')
    for argv in (["score", str(two), str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "o.jsonl")],
                 ["eval", str(two), "--data", str(pairs)], ["serve", str(two), "--port", "1"],
                 ["export", str(two), "--output_dir", str(tmp_path / "export")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error:") and "num_labels is 2" in err[-1], err


def test_version():
    import reward

    done = subprocess.run([sys.executable, "-m", "reward.cli", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith(f"rewardkit {reward.__version__} (torch ")
    assert reward.__version__ not in ("", "0+unknown")
