"""GPU verification in one device call: each accelerate config that fits one GPU trains the
quickstart model briefly, saves, reloads and must reproduce the trained model's rewards.

    python tests/gpu/run_all.py --out results.json        # needs CUDA (+ deepspeed, bitsandbytes)

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

ROOT = Path(__file__).resolve().parents[2]
RUNS = [  # (name, accelerate config, extra recipe overrides)
    ("single_gpu_fp16", "single_gpu_fp16", ["--fp16", "true", "--bf16", "false"]),
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
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to verify")
        return 0
    from reward.scoring import RewardModel

    rows = []
    for name, cfg, extra in RUNS:
        if a.only and name not in a.only:
            continue
        out = ROOT / "runs" / f"gpu-{name}"
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "accelerate_configs" / f"{cfg}.yaml"), "--num_processes", "1",
               str(ROOT / "launch" / "train.py"), str(ROOT / "recipes" / "quickstart.yaml"),
               "--max_steps", str(a.steps), "--output_dir", str(out), "--freeze_trainable_layers", "null",
               "--learning_rate", "2e-5", "--logging_steps", "5", *extra]
        t = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        row = {"config": name, "rc": proc.returncode, "seconds": round(time.time() - t, 1)}
        if proc.returncode != 0:
            row["error"] = proc.stderr[-1500:]
            rows.append(row)
            print(json.dumps(row), flush=True)
            continue
        logs = [json.loads(x) for x in (out / "logs" / "train_log.jsonl").read_text().splitlines()]
        losses = [x["loss"] for x in logs if "loss" in x]
        row["final_loss"] = losses[-1] if losses else None
        row["nan"] = any(not math.isfinite(x) for x in losses)
        ref = json.loads((out / "eval_report" / "rewards.json").read_text())
        rm = RewardModel.from_pretrained(str(out))
        got = rm.score_token_ids(ref["chosen_ids"] + ref["rejected_ids"])
        want = ref["chosen"] + ref["rejected"]
        row["max_abs_reward_diff"] = max(abs(x - y) for x, y in zip(got, want))
        row["reward_scale"] = max(abs(y) for y in want)
        # prompt-shared scoring (bf16 on GPU) against the padded rewards just computed
        packed = rm.score_sequence_groups(list(zip(ref["chosen_ids"], ref["rejected_ids"])))
        n = len(ref["chosen_ids"])
        row["packed_vs_padded_max_diff"] = max(abs(x - y) for x, y in zip([c for c, _ in packed] + [r for _, r in packed],
                                                                         got[:n] + got[n:]))
        row["packed_scoring_kept"] = rm._packing_ok is not False
        env = json.loads((out / "environment.json").read_text())
        row["gpu"] = env.get("gpu")
        metrics = json.loads((out / "metrics.json").read_text())
        row["train_runtime"] = metrics["train"].get("train_runtime")
        row["peak_memory_gb"] = metrics.get("peak_memory_gb")
        plan = subprocess.run([sys.executable, "-m", "reward.cli", "plan", str(ROOT / "recipes" / "quickstart.yaml"),
                               "--accelerate_config", cfg, "--num_gpus", "1", "--json", *extra,
                               "--freeze_trainable_layers", "null"], capture_output=True, text=True, cwd=ROOT)
        try:
            row["plan_total_gb"] = json.loads(plan.stdout)["total_gb"]
        except (json.JSONDecodeError, KeyError):
            row["plan_error"] = plan.stderr[-500:]
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(a.out).write_text(json.dumps(rows, indent=2))
    print(f"\n{'config':<18}{'rc':>3}{'s':>7}{'loss':>8}{'NaN':>5}{'max|Δr|':>10}{'peak GB':>9}{'plan GB':>9}")
    for r in rows:
        print(f"{r['config']:<18}{r['rc']:>3}{r['seconds']:>7.0f}{(r.get('final_loss') or float('nan')):>8.3f}"
              f"{str(r.get('nan', '-')):>5}{(r.get('max_abs_reward_diff') or float('nan')):>10.2e}"
              f"{(r.get('peak_memory_gb') or float('nan')):>9.2f}{(r.get('plan_total_gb') or float('nan')):>9.2f}")
    return 0 if all(r["rc"] == 0 and not r.get("nan") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
