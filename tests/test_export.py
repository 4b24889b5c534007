"""Export: LoRA merge and full copy reload with plain transformers and score identically; push."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from reward.config import load_recipe
from reward.errors import ExportError
from reward.export import ExportOptions, export_run
from reward.inference import RewardModel
from reward.run import run_training
from tests.fake_hub import FakeHub

PAIRS = [("How do I boil an egg?", "Nine minutes in boiling water."), ("Hi", "Go away."), ("Hi", "Hello, how can I help?")]


def _plain_transformers_scores(path, rm: RewardModel) -> list[float]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.pad_token_id == tok.pad_token_id is not None and tok.chat_template
    out = []
    for p, r in PAIRS:
        ids = rm.encode([p], [[r]]).groups[0][0]
        with torch.no_grad():
            out.append(float(model(torch.tensor([ids])).logits[0, 0]))
    return out


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir):
    from tests.conftest import SAMPLE, write_recipe

    tmp = tmp_path_factory.mktemp("lora")
    import gzip

    (tmp / "hh.jsonl").write_text("".join(gzip.open(SAMPLE, "rt").readlines()[:60]))
    recipe = write_recipe(tmp / "r.yaml", model_name_or_path=str(tiny_model_dir),
                          datasets=[{"path": str(tmp / "hh.jsonl"), "format": "hh-rlhf"}],
                          max_length=128, per_device_train_batch_size=4, max_steps=4, learning_rate=1e-2, use_peft=True,
                          lora_r=4, lora_alpha=8, eval_split_size=0.2, output_dir=str(tmp / "run"), cache_dir=str(tmp / "c"),
                          save_strategy="no", report_to="none")
    return run_training(load_recipe(recipe))


def test_lora_export_merges_head_and_scores_identically(lora_run, tmp_path, umask_022):
    out = export_run(lora_run, tmp_path / "export")
    # published like a plain mkdir/open would: a team on a shared filesystem can read it
    assert (out.stat().st_mode & 0o777, (out / "rewardkit.json").stat().st_mode & 0o777) == (0o755, 0o644)
    info = json.loads((out / "rewardkit.json").read_text())
    assert info["verification"]["max_abs_diff"] <= 1e-4 and info["verification"]["on"] == "held-out pairs"
    assert info["reward_mean"] is not None and info["reward_std"] is not None
    assert any(out.glob("*.safetensors")) and not (out / "adapter_config.json").exists()
    run_scores = RewardModel.from_pretrained(str(lora_run)).score_batch(PAIRS)  # base + adapter, unmerged
    plain = _plain_transformers_scores(out, RewardModel.from_pretrained(str(out)))
    assert plain == pytest.approx(run_scores, abs=1e-4)
    card = (out / "README.md").read_text()
    assert "## Usage with transformers" in card and "accuracy" in card and "License" in card


def test_full_export_scores_identically(tiny_recipe, tmp_path):
    run = run_training(load_recipe(tiny_recipe(eval_split_size=0.2)))
    out = export_run(run, tmp_path / "export_full")
    plain = _plain_transformers_scores(out, RewardModel.from_pretrained(str(out)))
    assert plain == pytest.approx(RewardModel.from_pretrained(str(run)).score_batch(PAIRS), abs=1e-5)


def test_bf16_export_within_stated_tolerance(lora_run, tmp_path):
    out = export_run(lora_run, tmp_path / "export_bf16", ExportOptions(dtype="bf16"))
    info = json.loads((out / "rewardkit.json").read_text())["verification"]
    assert info["dtype"] == "bf16" and info["max_abs_diff"] <= info["tolerance"]
    assert info["tolerance"] == pytest.approx(0.25 * info["reward_std"]) and info["flipped_pairs"] == 0


def test_compare_rewards_counts_flips_beyond_ties():
    """Pairs: chosen first half, rejected second. Pair 0 flips with a run margin of 1.0 (counted); pair 1
    flips with a margin of 0.05, under the tolerance (a tie at that precision, not counted); pair 2 keeps
    its order."""
    from reward.export import compare_rewards

    ref = [1.0, 0.05, 2.0, 0.0, 0.0, 1.0]
    got = [0.2, -0.01, 2.1, 0.5, 0.02, 0.9]
    check = compare_rewards(ref, got, paired=True, tolerance=0.1)
    assert check == {"max_abs_diff": pytest.approx(0.8), "flipped_pairs": 1, "pairs": 3}
    assert compare_rewards(ref, got, paired=False, tolerance=0.1)["flipped_pairs"] == 0


def test_corrupted_or_missing_adapter_is_a_clear_error(lora_run, tmp_path):
    broken = shutil.copytree(lora_run, tmp_path / "broken")
    (broken / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="adapter could not be loaded"):
        export_run(broken, tmp_path / "x")
    (broken / "adapter_model.safetensors").unlink()
    with pytest.raises(ExportError, match="no model weights"):
        export_run(broken, tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_push_to_local_hub_never_leaks_the_token(lora_run, tmp_path, monkeypatch, capfd):
    secret = "hf_SECRETtoken1234567890"
    monkeypatch.setenv("HF_TOKEN", secret)
    with FakeHub(fail_commits=1) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        import huggingface_hub.constants as c

        monkeypatch.setattr(c, "ENDPOINT", hub.url)
        monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
        out = tmp_path / "pushed"
        with pytest.raises(ExportError, match="local export .* is\\s+complete: re-run"):
            export_run(lora_run, out, ExportOptions(push_to_hub="org/rm"))
        assert (out / "rewardkit.json").exists()  # the failed upload left the export complete
        export_run(lora_run, out, ExportOptions(push_to_hub="org/rm"))  # re-run resumes: no re-export, upload succeeds
        files = hub.repos["org/rm"]
        assert "config.json" in files and "rewardkit.json" in files and any(k.endswith(".safetensors") for k in files)
        assert any(secret in h for h in hub.auth_headers)  # the token did reach the Hub...
    captured = capfd.readouterr()
    assert secret not in captured.out + captured.err  # ...and nowhere else
    for f in list(out.rglob("*")) + list(lora_run.rglob("*")):
        if f.is_file() and f.stat().st_size < 5_000_000:
            assert secret.encode() not in f.read_bytes(), f


def test_push_to_hub_in_the_recipe_exports_verifies_and_pushes_at_the_end(tiny_recipe, tmp_path, monkeypatch):
    """`push_to_hub: true` pushes the verified export (not raw checkpoints) once training is done."""
    secret = "hf_RECIPEsecret0987654321"
    monkeypatch.setenv("HF_TOKEN", secret)
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        import huggingface_hub.constants as c

        monkeypatch.setattr(c, "ENDPOINT", hub.url)
        monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
        run = run_training(load_recipe(tiny_recipe(eval_split_size=0.2, push_to_hub=True, hub_model_id="org/rm2")))
        files = hub.repos["org/rm2"]
    assert {"config.json", "rewardkit.json", "README.md"} <= set(files)
    # the prompt hashes stay local (membership of a private prompt must not be testable on the Hub)
    assert "train_prompt_hashes.json" not in files and (run / "export" / "train_prompt_hashes.json").is_file()
    assert not any(k.startswith("checkpoint-") for k in files)
    assert json.loads(files["rewardkit.json"])["verification"]["max_abs_diff"] <= 1e-5
    assert (run / "export" / "rewardkit.json").is_file()
    for f in run.rglob("*"):
        if f.is_file() and f.stat().st_size < 5_000_000:
            assert secret.encode() not in f.read_bytes(), f


def _tree(path):
    return sorted((str(p.relative_to(path)), p.stat().st_size) for p in path.rglob("*"))


@pytest.mark.parametrize("where", ["user_folder", "run_parent", "run_itself", "a_file"])
def test_export_never_replaces_what_it_does_not_own(lora_run, tmp_path, where):
    """Only an empty folder or a rewardkit export is replaced; anything else is refused before any
    work, one error line and exit 2, every file left as it was."""
    import subprocess
    import sys

    if where == "user_folder":
        out = tmp_path / "notes"
        out.mkdir()
        (out / "notes.txt").write_text("my notes")
    elif where == "run_parent":
        out = lora_run.parent
    elif where == "run_itself":
        out = lora_run
    else:
        out = tmp_path / "file.txt"
        out.write_text("keep me")
    watched = out if out.is_dir() else out.parent
    before = _tree(watched)
    proc = subprocess.run([sys.executable, "-m", "reward.cli", "export", str(lora_run), "--output_dir", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-1500:]
    assert proc.stderr.strip().startswith("error: --output_dir") and "Traceback" not in proc.stderr
    assert _tree(watched) == before  # nothing deleted, moved or half-written
    with pytest.raises(ExportError):
        export_run(lora_run, out)


def test_reexport_with_another_dtype_replaces_its_own_export(lora_run, tmp_path):
    out = tmp_path / "export"
    export_run(lora_run, out)
    export_run(lora_run, out, ExportOptions(dtype="bf16"))  # was: "export already complete", float32 files kept
    info = json.loads((out / "rewardkit.json").read_text())
    assert info["verification"]["dtype"] == "bf16"
    from safetensors import safe_open

    with safe_open(str(next(out.glob("*.safetensors"))), "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.bfloat16
    assert not list(tmp_path.glob(".export*"))  # no partial or old folder left beside it


def test_hub_token_in_the_recipe_reaches_the_hub_and_no_file(tiny_recipe, tmp_path, monkeypatch, capfd):
    """A recipe's `hub_token` used to be pickled into training_args.bin (checkpoints and the run);
    now it authenticates the push and appears in no file, log or card."""
    secret = "hf_INRECIPEsecret1122334455"
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        import huggingface_hub.constants as c

        monkeypatch.setattr(c, "ENDPOINT", hub.url)
        monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
        run = run_training(load_recipe(tiny_recipe(eval_split_size=0.2, push_to_hub=True, hub_model_id="org/rm3",
                                                   hub_token=secret, save_strategy="steps", save_steps=2)))
        assert "rewardkit.json" in hub.repos["org/rm3"]
        assert any(secret in h for h in hub.auth_headers)
    assert list(run.glob("checkpoint-*/training_args.bin"))  # the pickles that used to carry it exist
    captured = capfd.readouterr()
    assert secret not in captured.out + captured.err
    for f in run.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f


def test_reexport_after_retraining_takes_the_new_weights(tiny_recipe, tmp_path):
    """"Already complete" depends on the run's completion stamp: a retrained run is exported again."""
    run = run_training(load_recipe(tiny_recipe(eval_split_size=0.2, seed=1)))
    out = export_run(run, tmp_path / "export")
    first = (out / "model.safetensors").read_bytes()
    export_run(run, out)  # unchanged run, same options: kept
    assert (out / "model.safetensors").read_bytes() == first
    run_training(load_recipe(tiny_recipe(eval_split_size=0.2, seed=2)))  # retrain into the same run directory
    export_run(run, out)
    assert (out / "model.safetensors").read_bytes() != first
    info = json.loads((out / "rewardkit.json").read_text())
    assert info["source"]["stamp"] == json.loads((run / "run_complete.json").read_text())
