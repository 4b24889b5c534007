"""Recipe validation: every bad case fails before heavy work, naming the key and the fix."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest

from reward.config import load_recipe, parse_overrides
from reward.errors import RecipeError

BASE = {"model_name_or_path": "some/model", "datasets": [{"path": "pairs.jsonl"}]}


def test_unknown_key_names_it_and_the_closest():
    with pytest.raises(RecipeError, match=r"unknown recipe key 'learning_rat'.*Did you mean 'learning_rate'"):
        load_recipe(None, {**BASE, "learning_rat": 1e-5})


def test_string_number_is_read_as_number():
    r = load_recipe(None, {**BASE, "learning_rate": "1e-5", "num_train_epochs": "2", "max_length": "256"})
    assert r.training.learning_rate == pytest.approx(1e-5)
    assert r.training.num_train_epochs == 2.0
    assert r.training.max_length == 256


def test_cli_overrides_win_over_yaml(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model_name_or_path: a/b\ndatasets: [x.jsonl]\nlearning_rate: 1.0e-3\nmax_steps: 3\n")
    r = load_recipe(path, ["--learning_rate", "2e-4", "--max_steps=7", "--packing", "false"])
    assert r.training.learning_rate == pytest.approx(2e-4)
    assert r.training.max_steps == 7
    assert r.training.packing is False
    assert r.sources[0].path == "x.jsonl"


def test_wrong_type_names_key():
    with pytest.raises(RecipeError, match=r"'per_device_train_batch_size': expected int"):
        load_recipe(None, {**BASE, "per_device_train_batch_size": "eight"})
    with pytest.raises(RecipeError, match=r"'num_train_epochs'.*list"):
        load_recipe(None, {**BASE, "num_train_epochs": [1, 2]})


def test_fp16_and_bf16_together():
    with pytest.raises(RecipeError, match="'fp16' and 'bf16' are both true"):
        load_recipe(None, {**BASE, "fp16": True, "bf16": True})


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-CUDA fallback")
def test_fp16_without_cuda_falls_back_with_one_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="reward.config.recipe"):
        r = load_recipe(None, {**BASE, "fp16": True})
    assert r.training.fp16 is False and r.training.bf16 is False
    warnings = [rec for rec in caplog.records if "fp16" in rec.getMessage()]
    assert len(warnings) == 1 and "fp32" in warnings[0].getMessage()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-CUDA paths")
@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_cpu_only_where_the_cpu_computes_it(monkeypatch, caplog, native):
    """bf16 autocast on a CPU with AMX / AVX512-BF16 (several times faster than fp32 there); elsewhere
    it would be emulated and slower: fp32 with one warning."""
    import reward.config.recipe

    monkeypatch.setattr(reward.config.recipe, "cpu_has_native_bf16", lambda: native)
    with caplog.at_level(logging.WARNING, logger="reward.config.recipe"):
        r = load_recipe(None, {**BASE, "bf16": True})
    assert r.training.bf16 is native and r.training.use_cpu is native
    if native:  # `use_cpu: false` cannot leave transformers to refuse bf16 later, with a traceback
        assert load_recipe(None, {**BASE, "bf16": True, "use_cpu": False}).training.use_cpu is True
    warnings = [rec.getMessage() for rec in caplog.records if "bf16" in rec.getMessage()]
    assert len(warnings) == (0 if native else 1)
    # without the key, a CPU run stays fp32 wherever it runs (pinned losses, reproducible scores)
    assert load_recipe(None, BASE).training.bf16 is False


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-CUDA error")
def test_4bit_without_cuda_is_a_clear_error():
    with pytest.raises(RecipeError, match=r"'load_in_4bit'.*needs a CUDA GPU"):
        load_recipe(None, {**BASE, "use_peft": True, "load_in_4bit": True})


def test_4bit_needs_peft():
    # the PEFT check comes before the machine check: this message on any machine
    with pytest.raises(RecipeError, match=r"'load_in_4bit' needs 'use_peft: true'"):
        load_recipe(None, {**BASE, "load_in_4bit": True})


def test_dataset_source_errors():
    with pytest.raises(RecipeError, match=r"datasets\[0\].format: unknown format 'hh_rlhf'.*Did you mean 'hh-rlhf'"):
        load_recipe(None, {**BASE, "datasets": [{"path": "x", "format": "hh_rlhf"}]})
    with pytest.raises(RecipeError, match=r"datasets\[0\]: unknown key 'colums'.*'columns'"):
        load_recipe(None, {**BASE, "datasets": [{"path": "x", "colums": {}}]})
    with pytest.raises(RecipeError, match="needs at least one source"):
        load_recipe(None, {"model_name_or_path": "a/b"})


def test_missing_model_and_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="model_name_or_path"):
        load_recipe(None, {"datasets": ["x"]})
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_lora_task_type_other_than_seq_cls_is_refused():
    with pytest.raises(RecipeError, match="reward head untrained"):
        load_recipe(None, {**BASE, "use_peft": True, "lora_task_type": "CAUSAL_LM"})


def test_parse_overrides_bare_flag():
    assert parse_overrides(["--use_peft", "--lora_r", "8"]) == {"use_peft": True, "lora_r": 8}


def test_shipped_recipes_validate():
    from pathlib import Path

    for path in sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml")):
        raw = path.read_text()
        if "load_in_4bit: true" in raw and not __import__("torch").cuda.is_available():
            with pytest.raises(RecipeError, match="CUDA"):
                load_recipe(path)
            continue
        r = load_recipe(path)
        # every source of the file became a validated DataSource, in order
        declared = __import__("yaml").safe_load(raw)["datasets"]
        assert [s.path for s in r.sources] == [d["path"] if isinstance(d, dict) else d for d in declared], path
        assert all(s.format in __import__("reward.config.sources").config.sources.FORMATS for s in r.sources), path


@pytest.mark.parametrize("args,needle", [
    (["--learning_rat", "1e-5"], "learning_rate"),
    (["--fp16", "true", "--bf16", "true"], "fp16"),
    (["--datasets", "[{path: x, format: nope}]"], "format"),
])
def test_cli_reports_bad_recipe_with_one_error_line(tmp_path, args, needle):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model_name_or_path: a/b\ndatasets: [x.jsonl]\n")
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "reward.cli", "train", str(recipe), *args],
                          capture_output=True, text=True, timeout=120)
    elapsed = time.time() - start
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error:") and needle in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    print(f"bad recipe {args} rejected in {elapsed:.2f}s")  # speed is measured for the README, not asserted


def test_cached_key_table_matches_the_libraries(tmp_path, monkeypatch):
    """The cached key/type table is exactly what TRL's and transformers' dataclasses say today."""
    from reward.config import recipe as rec

    monkeypatch.setenv("REWARDKIT_CACHE", str(tmp_path))
    fresh = rec._table_from_classes()
    assert rec.key_table() == fresh  # cold: computed and written
    assert list(tmp_path.glob("recipe_keys/*.json"))
    assert rec.key_table() == fresh  # warm: read back
    assert fresh["learning_rate"] == {"group": "training", "type": [["float", "float"]]}
    assert fresh["gguf_file"]["group"] == "model" and fresh["lora_r"]["group"] == "model"
    assert fresh["truncation"]["group"] == "data" and fresh["length_debias_coef"]["group"] == "training"


@pytest.fixture(scope="module")
def warm_key_cache(tmp_path_factory):
    """A key-table cache filled once (this import of TRL is what the cache saves later runs)."""
    cache = tmp_path_factory.mktemp("keycache")
    env = dict(os.environ, REWARDKIT_CACHE=str(cache))
    subprocess.run([sys.executable, "-c", "from reward.config.recipe import key_table; key_table()"], env=env, check=True,
                   timeout=120)
    return env


@pytest.mark.parametrize("text,needle", [
    ("learning_rat: 1e-5", "Did you mean 'learning_rate'"),
    ("num_train_epochs: many", "num_train_epochs"),
    ("truncation: middle", "'truncation': 'middle'"),
    ("use_peft: true\nfreeze_trainable_layers: 2", "exclude each other"),
    ("datasets: [{path: x.jsonl, format: hh_rlhf}]", "Did you mean 'hh-rlhf'"),
])
def test_bad_recipe_fails_before_importing_torch(tmp_path, warm_key_cache, text, needle):
    """With the key table cached, rejecting a bad key, or a bad model or data value, imports neither torch
    nor TRL's trainer (seconds each): only the training keys are checked by RewardConfig's subclass."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model_name_or_path: a/b\n{text}\n" + ("" if "datasets" in text else "datasets: [x.jsonl]\n"))
    code = ("import sys\nfrom reward.errors import RecipeError\nfrom reward.config import load_recipe\n"
            f"try:\n    load_recipe({str(recipe)!r})\nexcept RecipeError as e:\n    print('ERR', e)\n"
            "print('HEAVY', sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers'}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=warm_key_cache,
                         timeout=120).stdout
    assert "ERR" in out and needle in out, out
    assert "HEAVY []" in out, out


def test_type_errors_name_each_keys_own_type():
    """eval_strategy and save_strategy share a shape (str enum or str) but not a type name."""
    base = {"model_name_or_path": "a/b", "datasets": ["x.jsonl"]}
    for key, name in (("eval_strategy", "IntervalStrategy"), ("save_strategy", "SaveStrategy")):
        with pytest.raises(RecipeError, match=f"'{key}': expected {name} or str, got a list"):
            load_recipe(None, {**base, key: [1]})


def test_packed_attention_and_token_budget_keys():
    r = load_recipe(None, {**BASE, "packed_attention": "varlen", "max_tokens_per_batch": "8192"})
    assert r.training.packed_attention == "varlen" and r.training.max_tokens_per_batch == 8192
    with pytest.raises(RecipeError, match=r"'packed_attention': 'varlne'.*Did you mean 'varlen'"):
        load_recipe(None, {**BASE, "packed_attention": "varlne"})
    with pytest.raises(RecipeError, match=r"'max_tokens_per_batch': 0 must be a positive"):
        load_recipe(None, {**BASE, "max_tokens_per_batch": 0})
    with pytest.raises(RecipeError, match=r"'max_tokens_per_batch' needs 'packing: true'"):
        load_recipe(None, {**BASE, "max_tokens_per_batch": 4096, "packing": False})
