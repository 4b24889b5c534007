"""Each private or version-dependent library detail rewardkit relies on (``reward/seams.py``), pinned
against the installed TRL / transformers / peft: an upgrade that moves one fails here first."""

from __future__ import annotations

import dataclasses
import inspect
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from reward import seams


def test_trainer_still_asks_the_signature_hook_which_columns_to_keep():
    from transformers import Trainer

    from reward.training import RewardkitTrainer

    assert hasattr(Trainer, seams.TRAINER_SIGNATURE_HOOK)
    # the column filter consults the hook, so overriding it decides what reaches our collator
    assert seams.TRAINER_SIGNATURE_HOOK in inspect.getsource(Trainer._remove_unused_columns)
    assert RewardkitTrainer._set_signature_columns_if_needed is not Trainer._set_signature_columns_if_needed


def test_trl_reward_trainer_prepares_datasets_through_the_hook():
    """TRL's RewardTrainer sends each dataset through the private hook; a prepared set passes as it is
    (same object, no per-row filter), and a row over max_length is refused, not dropped."""
    from datasets import Dataset
    from trl import RewardTrainer

    from reward.errors import RecipeError
    from reward.training import RewardkitTrainer

    assert f"self.{seams.TRAINER_DATASET_HOOK}(train_dataset" in inspect.getsource(RewardTrainer.__init__)
    trainer = RewardkitTrainer.__new__(RewardkitTrainer)
    rows = Dataset.from_list([{"chosen_ids": [1, 2, 3], "rejected_ids": [1, 2], "prompt_len": 1}])
    args = SimpleNamespace(max_length=3)
    assert trainer._prepare_dataset(rows, None, args, "train") is rows
    args.max_length = 2
    with pytest.raises(RecipeError, match="3-token row"):
        trainer._prepare_dataset(rows, None, args, "train")


def test_trl_collator_stacks_chosen_then_rejected():
    from trl.trainer.reward_trainer import DataCollatorForPreference

    batch = DataCollatorForPreference(pad_token_id=0)([{"chosen_ids": [1, 2, 3], "rejected_ids": [4]},
                                                       {"chosen_ids": [5], "rejected_ids": [6, 7]}])
    assert batch["input_ids"][:, 0].tolist() == [1, 5, 4, 6]  # both chosen first, then both rejected


def test_trl_suppress_seqcls_warning_silences_the_new_head_warning(tiny_model_dir, caplog):
    from transformers import AutoModelForSequenceClassification

    with caplog.at_level(logging.WARNING), seams.suppress_seqcls_warning():
        AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=1)
    assert not [r for r in caplog.records if "newly initialized" in r.getMessage()]


def test_attn_implementation_reads_the_config_through_wrappers(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=1)
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager" and seams.attn_implementation(model) == "eager"

    class Wrapper(torch.nn.Module):  # DDP / DeepSpeed keep the model under .module
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert seams.attn_implementation(Wrapper(Wrapper(model))) == "eager"


def test_quantizer_has_remove_quantization_config():
    from transformers.quantizers.base import HfQuantizer

    assert callable(getattr(HfQuantizer, "remove_quantization_config", None))

    class Fake:  # drop_quantizer calls exactly that method, with the model
        called = None

        def remove_quantization_config(self, model):
            Fake.called = model

    model = torch.nn.Linear(1, 1)
    model.hf_quantizer = Fake()
    seams.drop_quantizer(model)
    assert Fake.called is model


def test_score_head_runs_on_every_token_before_pooling(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    from reward.packing import ScoreCapture

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=1).eval()
    capture = ScoreCapture.for_model(model)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        pooled = model(input_ids=ids).logits
    per_token = capture.pop()
    capture.remove()
    assert per_token.shape == (1, 5, 1)
    assert pooled[0, 0].item() == pytest.approx(per_token[0, -1, 0].item(), abs=1e-6)  # pooled = the last token's


def test_checkpointing_switch_is_read_under_either_name():
    from trl import RewardConfig

    fields = {f.name for f in dataclasses.fields(RewardConfig)}
    key = seams.checkpointing_key(fields)
    assert key in fields
    on = RewardConfig(output_dir="/tmp/rk-seams", bf16=False, use_cpu=True, **{key: True})
    off = RewardConfig(output_dir="/tmp/rk-seams", bf16=False, use_cpu=True, **{key: False})
    assert seams.checkpointing_enabled(on) and not seams.checkpointing_enabled(off)


def test_plan_and_recipe_agree_on_checkpointing(tmp_path):
    from reward.config import load_recipe
    from reward.training import plan_from_recipe

    path = tmp_path / "r.yaml"
    path.write_text("model_name_or_path: Qwen/Qwen2.5-1.5B-Instruct\ndatasets: [{path: x.jsonl}]\nmax_length: 1024\n"
                    "per_device_train_batch_size: 8\ngradient_checkpointing: true\n")
    recipe = load_recipe(path)
    assert seams.checkpointing_enabled(recipe.training)
    assert "gradient checkpointing on" in plan_from_recipe(recipe, "single_gpu_bf16", 1, 1, 80.0).render()


def test_trl_refuses_two_outputs_unless_the_seam_says_one(tiny_model_dir, tmp_path):
    """An ODIN head has two outputs; TRL's RewardTrainer checks num_labels == 1 at init."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=2,
                                                               ignore_mismatched_sizes=True)
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    data = Dataset.from_list([{"chosen_ids": [1, 2, 3], "rejected_ids": [1, 2]}] * 2)
    args = RewardConfig(output_dir=str(tmp_path), bf16=False, use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match="num_labels"):
        RewardTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
    with seams.reward_trainer_accepts_outputs(model):
        RewardTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
    assert model.config.num_labels == 2


def test_cpu_bf16_probe_exists_and_answers():
    """torch keeps its CPU bf16 capability checks private: at least one of the names the probe reads
    must exist, or the probe would silently say "no" everywhere and the quickstart would run in fp32."""
    import torch

    from reward.seams import cpu_has_native_bf16

    assert any(hasattr(torch.cpu, n) for n in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    flags = Path("/proc/cpuinfo")
    if not flags.is_file():
        pytest.skip("no /proc/cpuinfo to check the probe against")
    words = set(flags.read_text().split())
    # the kernel's own word for the same hardware: AMX tiles or AVX512-BF16
    assert cpu_has_native_bf16() == bool(words & {"amx_tile", "avx512_bf16"})


def test_open_progress_bars_are_found_and_closed(capsys):
    from tqdm import tqdm

    from reward.seams import close_progress_bars

    bar = tqdm(total=3)
    bar.update(1)
    assert bar in tqdm._instances
    close_progress_bars()
    assert bar not in tqdm._instances and capsys.readouterr().err.endswith("\n")


def test_model_eager_attention_is_the_familys_own(tiny_model_dir):
    """``eager_attention_forward`` is a module-level name of each family's modeling file: Gemma 2's computes
    the softcap, gpt-oss's the sinks (the packed forward calls it for those layers)."""
    import inspect

    from transformers.models.gemma2 import modeling_gemma2
    from transformers.models.llama import modeling_llama

    from reward import seams

    attn = modeling_gemma2.Gemma2Attention
    assert seams.model_eager_attention(attn.__new__(attn)) is modeling_gemma2.eager_attention_forward
    assert "softcap" in inspect.signature(modeling_gemma2.eager_attention_forward).parameters
    llama = modeling_llama.LlamaAttention
    assert seams.model_eager_attention(llama.__new__(llama)) is modeling_llama.eager_attention_forward


def test_router_logits_source_and_family_loss():
    """transformers records MoE router logits from ``_can_record_outputs['router_logits']``
    (``OutputRecorder(router class, index)``); each MoE family's file has ``load_balancing_loss_func``."""
    from transformers.models.llama import modeling_llama
    from transformers.models.mixtral import modeling_mixtral

    from reward import seams

    cls, index = seams.router_logits_source(modeling_mixtral.MixtralForSequenceClassification)
    assert cls is modeling_mixtral.MixtralTopKRouter and index == 0
    assert seams.family_load_balancing_loss(cls) is modeling_mixtral.load_balancing_loss_func
    assert seams.router_logits_source(modeling_llama.LlamaForSequenceClassification) is None


def test_exit_handlers_run_before_a_process_ends_with_os_exit(tmp_path):
    """``seams.run_exit_handlers`` (CPython's ``atexit._run_exitfuncs``) runs the handlers a process
    registered, so ``reward.training.launching.exit_rank`` can end a rank with ``os._exit`` and still clean up."""
    import subprocess
    import sys

    marker = tmp_path / "ran"
    code = ("import atexit, os, pathlib\n"
            f"atexit.register(pathlib.Path({str(marker)!r}).write_text, 'yes')\n"
            "from reward.seams import run_exit_handlers\nrun_exit_handlers()\nos._exit(3)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent, timeout=60)
    assert proc.returncode == 3 and marker.read_text() == "yes"
