"""The RL-loop reward function against TRL's own model-path reward, on a GRPO-shaped batch, one run.

    python bench/reward_func.py                       # SmolLM2-135M (the bundled GGUF), fresh head, CPU
    python bench/reward_func.py --model exports/quickstart --rounds 5

Batch: 16 HH-RLHF prompts × 8 completions (each prompt's chosen and rejected answers plus six answers from
other conversations), conversational, as ``GRPOTrainer._calculate_rewards`` receives them.

- ``trl-model-path``: what TRL 1.x does with ``reward_funcs=["path"]`` (``GRPOTrainer._calculate_rewards``,
  replayed): the reward tokenizer's chat template over prompt + completion, one right-padded batch of all
  128 texts, ``logits[:, 0]``.
- ``rewardkit``: ``RewardModel.as_reward_func()``: each completion formatted as training formatted it, each
  prompt computed once for its 8 completions, packed without padding.

Both read the same model (an export: its chat template ends at the turn end, so the two agree); the
script prints seconds per batch, the ratio, the largest reward difference, and writes
bench/results/<date>-reward-func-<device>.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import write_result  # noqa: E402 (after the path insert)
from bench.serve import GGUF, build_model, grpo_groups  # noqa: E402


def trl_model_path_rewards(model, tok, prompts: list, completions: list) -> list[float]:
    """TRL's model-path reward for conversational prompts, as ``_calculate_rewards`` computes it."""
    import torch
    from trl.data_utils import apply_chat_template

    texts = [apply_chat_template({"messages": p + c}, tok)["text"] for p, c in zip(prompts, completions)]
    inputs = tok(text=texts, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False)
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    with torch.inference_mode():
        return model(**inputs).logits[:, 0].float().tolist()


def timed(fn, rounds: int) -> tuple[float, list[float]]:
    fn()  # warm-up
    walls, out = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn()
        walls.append(time.perf_counter() - t)
    return statistics.median(walls), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="export or model dir (default: SmolLM2-135M, fresh head)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.1-1800.jsonl.gz"))
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: bf16 on GPU, fp32 on CPU)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from reward.inference import RewardModel
    from reward.modeling import parse_dtype

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    dtype = parse_dtype(a.dtype, torch.bfloat16 if cuda else torch.float32)
    device_name = torch.cuda.get_device_name(0) if cuda else f"cpu-{os.cpu_count()}cores"
    groups = grpo_groups(Path(a.data), a.prompts, a.samples)
    prompts = [p for p, answers in groups for _ in answers]
    completions = [[{"role": "assistant", "content": c}] for _, answers in groups for c in answers]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(a.model) if a.model else build_model(Path(tmp) / "model")
        plain = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype).to(device).eval()
        plain_tok = AutoTokenizer.from_pretrained(path)
        trl_s, trl_r = timed(lambda: trl_model_path_rewards(plain, plain_tok, prompts, completions), a.rounds)
        func = RewardModel.from_pretrained(str(path), device=device, dtype=dtype).as_reward_func(device=device)
        rk_s, rk_r = timed(lambda: func(prompts=prompts, completions=completions), a.rounds)
    worst = max(abs(x - y) for x, y in zip(trl_r, rk_r))
    n = len(prompts)
    rows = [{"path": "trl-model-path", "seconds_per_batch": trl_s, "completions_per_s": n / trl_s},
            {"path": "rewardkit as_reward_func", "seconds_per_batch": rk_s, "completions_per_s": n / rk_s}]
    result = {"dtype": str(dtype).replace("torch.", ""), "model": a.model or f"SmolLM2-135M-Instruct ({GGUF}, fresh head)",
              "batch": f"{a.prompts} prompts x {a.samples} completions (conversational)", "rounds": a.rounds,
              "rows": rows, "speedup": trl_s / rk_s, "max_abs_reward_diff": worst}
    print(f"{'path':26} {'s/batch':>8} {'completions/s':>14}")
    for r in rows:
        print(f"{r['path']:26} {r['seconds_per_batch']:8.3f} {r['completions_per_s']:14.1f}")
    print(f"rewardkit / TRL model path: {trl_s / rk_s:.2f}x; max |Δreward| {worst:.2e}; device {device_name}")
    write_result("reward-func", device_name, result, a.out)


if __name__ == "__main__":
    main()
