"""Listwise vs pairwise at the same budget: ``recipes/qa-feedback-listwise.yaml`` as it is and with
``pairing: pairwise``, the same prompt-grouped split of the shared qa-feedback questions, the same
epochs, one run after the other (nothing else should run), for each seed.

    python bench/listwise_quality.py --seeds 42 43 44
    python bench/listwise_quality.py --seeds 42 --eval_split_size 0.5    # more held-out questions, less training
    python bench/listwise_quality.py --seeds 43 44 --pairings listwise --learning_rate 4e-4   # overrides, one pairing
    python bench/listwise_quality.py --seeds 43 44 --pairings pairwise --num_train_epochs 0.232   # listwise's time
    python bench/listwise_quality.py --seeds 43 44 --pairings listwise --listwise_max_comparisons 2   # sub-groups
    python bench/listwise_quality.py --seeds 43 44 --pairings pairwise --max_tokens_per_batch 8192   # half the updates
    python bench/listwise_quality.py --compare A.json B.json:pairwise   # pair the runs of two results files

Reports, per run, the held-out pairwise accuracy (every comparison of the held-out questions) with its
95% interval, and the training wall time; writes ``bench/results/<date>-listwise-quality-cpu.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import bad_input, write_result  # noqa: E402

RECIPE = ROOT / "recipes" / "qa-feedback-listwise.yaml"


def train(pairing: str, seed: int, out: Path, extra: list[str]) -> dict:
    """One ``rewardkit train`` of the recipe; its held-out metrics and wall times."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "reward.cli", "train", str(RECIPE), "--pairing", pairing, "--seed", str(seed),
           "--output_dir", str(out), *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"error: {' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    ev = metrics["eval"]
    pairs = [json.loads(x) for x in (out / "eval_report" / "pair_rewards.jsonl").read_text().splitlines()]
    return {"pairs": [(p["chosen_len"], p["rejected_len"], p["chosen"] > p["rejected"]) for p in pairs],
            "pairing": pairing, "seed": seed, "accuracy": ev["accuracy"], "accuracy_ci95": ev["accuracy_ci95"],
            "comparisons": ev["n_pairs"], "train_seconds": metrics["train_seconds"],
            "train_runtime": metrics["train"].get("train_runtime"), "wall_seconds": time.perf_counter() - start,
            "train_loss": metrics["train"].get("train_loss")}


def paired_difference(a: list[tuple], b: list[tuple]) -> dict | None:
    """Accuracy of ``a`` minus ``b`` on the same held-out comparisons, and the standard error of that paired
    difference (per comparison: right in one run and not the other); None unless both runs list the same
    comparisons in the same order (their response lengths agree)."""
    if [x[:2] for x in a] != [x[:2] for x in b] or not a:
        return None
    d = [float(x[2]) - float(y[2]) for x, y in zip(a, b)]
    mean = sum(d) / len(d)
    var = sum((x - mean) ** 2 for x in d) / max(len(d) - 1, 1)
    return {"difference": mean, "se": (var / len(d)) ** 0.5, "comparisons": len(d),
            "only_first_right": sum(x > 0 for x in d), "only_second_right": sum(x < 0 for x in d)}


def pooled(diffs: list[dict]) -> dict:
    """The mean of per-seed paired differences (each seed its own split, so independent) and its standard error."""
    n = len(diffs)
    return {"difference": sum(d["difference"] for d in diffs) / n,
            "se": sum(d["se"] ** 2 for d in diffs) ** 0.5 / n, "seeds": n}


def compare_files(first: str, second: str) -> dict:
    """Paired differences, ``first`` minus ``second``, between the runs of two results files of this bench
    (``FILE`` or ``FILE:PAIRING`` where a file holds both pairings): per seed both ran, from each run's
    per-comparison outcomes, and pooled over those seeds. A seed whose runs held out other comparisons
    (another ``split`` fingerprint, or where a file predates it another count) is not paired: None."""
    rows = []
    for spec in (first, second):
        path, _, pairing = spec.rpartition(":") if spec.endswith((":listwise", ":pairwise")) else (spec, "", "")
        try:
            runs = json.loads(Path(path).read_text())["rows"]
        except (OSError, ValueError, KeyError) as e:
            bad_input(f"{path} is not a results file of this bench ({type(e).__name__}: {e})")
        runs = [r for r in runs if "right" in r and pairing in ("", r["pairing"])]
        if len({r["seed"] for r in runs}) < len(runs):
            bad_input(f"{path} ran both pairings of a seed: name one, {path}:listwise or {path}:pairwise")
        rows.append({r["seed"]: r for r in runs})
    out = {}
    for seed in sorted(set(rows[0]) & set(rows[1])):
        x, y = rows[0][seed], rows[1][seed]
        if x.get("split", y.get("split")) != y.get("split", x.get("split")):
            out[str(seed)] = None
            continue
        a, b = ([(0, i, c == "1") for i, c in enumerate(r["right"])] for r in (x, y))
        out[str(seed)] = paired_difference(a, b)
    if out and all(out.values()):
        out["pooled"] = pooled(list(out.values()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[42])
    ap.add_argument("--pairings", nargs="+", default=["listwise", "pairwise"], choices=["listwise", "pairwise"])
    ap.add_argument("--out", default=None)
    ap.add_argument("--compare", nargs=2, metavar=("FIRST", "SECOND"), help="pair the runs of two results files")
    a, extra = ap.parse_known_args()  # the rest: recipe overrides for both runs (--key value)
    a.extra = extra
    if a.compare:
        print(json.dumps(compare_files(*a.compare), indent=1))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="listwise-quality-") as tmp:
        for seed in a.seeds:
            for pairing in a.pairings:
                rows.append(train(pairing, seed, Path(tmp) / f"{pairing}-{seed}", a.extra))
                r = rows[-1]
                print(f"seed {seed} {pairing:9s} held-out accuracy {r['accuracy']:.4f} on {r['comparisons']} "
                      f"comparisons, training {r['train_runtime']:.0f} s (run {r['wall_seconds']:.0f} s)", flush=True)
    mean = {p: {k: sum(r[k] for r in rows if r["pairing"] == p) / len(a.seeds) for k in ("accuracy", "train_runtime")}
            for p in a.pairings}
    paired = {}
    for seed in a.seeds if len(a.pairings) == 2 else ():
        runs = {r["pairing"]: r["pairs"] for r in rows if r["seed"] == seed}
        paired[str(seed)] = paired_difference(runs["listwise"], runs["pairwise"])
        if paired[str(seed)]:
            d = paired[str(seed)]
            print(f"seed {seed} listwise − pairwise on the same comparisons: {100 * d['difference']:+.1f} ± "
                  f"{100 * d['se']:.1f} points (only listwise right {d['only_first_right']}, only pairwise right "
                  f"{d['only_second_right']})", flush=True)
    for r in rows:  # kept compact: a fingerprint of the response lengths names the split, a bit each outcome
        pairs = r.pop("pairs")
        r["split"] = hashlib.sha256(repr([x[:2] for x in pairs]).encode()).hexdigest()[:16]
        r["right"] = "".join("1" if x[2] else "0" for x in pairs)
    if paired and all(paired.values()):
        paired["pooled"] = pooled(list(paired.values()))
        d = paired["pooled"]
        print(f"pooled over {len(a.seeds)} seeds: listwise − pairwise {100 * d['difference']:+.1f} ± "
              f"{100 * d['se']:.1f} points", flush=True)
    write_result("listwise-quality", "cpu", {"recipe": str(RECIPE.relative_to(ROOT)), "overrides": extra,
                                             "seeds": a.seeds, "rows": rows, "mean": mean,
                                             "listwise_minus_pairwise": paired}, a.out)
    if len(mean) < 2:
        return
    gap = 100 * (mean["listwise"]["accuracy"] - mean["pairwise"]["accuracy"])
    speed = mean["pairwise"]["train_runtime"] / mean["listwise"]["train_runtime"]
    print(f"listwise vs pairwise: {gap:+.1f} accuracy points, {speed:.2f}× faster training "
          f"({len(a.seeds)} seed{'s' if len(a.seeds) > 1 else ''})")


if __name__ == "__main__":
    main()
