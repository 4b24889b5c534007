"""Data preparation at scale: wall time, peak RSS and on-disk size for 10k, 100k and 1M pairs.

The pairs are distinct variants of the shared HH-RLHF file (``../shared/data``): row k is row
``k mod 1800`` with ``[variant k // 1800]`` written into its first Human turn on both sides, so every
prompt and pair is new and nothing is dropped as a duplicate. Each size is prepared twice, each time
from nothing (a fresh rewardkit cache and a fresh ``datasets`` cache):

- ``inspect``: ``rewardkit data inspect recipes/quickstart.yaml --data FILE --format hh-rlhf --json``;
- ``train``: ``rewardkit train recipes/quickstart.yaml`` on the file for ``--steps`` steps; the
  preparation time is until the run directory's ``data_report.json`` appears, and the step time is
  the trainer's own ``train_runtime / max_steps`` (a 1M-pair set must step as fast as a 10k one).

The baseline is rewardkit before the streaming pipeline (``--baseline_rev``, a git revision run from a
worktree), ``inspect`` only, at the sizes up to ``--baseline_max`` (its Python lists need ~29 KB a
pair: 1M pairs would not fit this machine). Memory is sampled every 0.2 s from /proc: the peak RSS of
the command's largest process, and the peak PSS summed over its process tree (tokenizing workers
included, the pages they share with their parent counted once).

    python bench/data_scale.py                       # 10k, 100k, 1M
    python bench/data_scale.py --sizes 10000 100000  # quicker
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_HH = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.1-1800.jsonl.gz"
RECIPE = ROOT / "recipes" / "quickstart.yaml"


def write_variants(n: int, path: Path) -> None:
    """``n`` distinct pairs made from the shared file (see the module docstring)."""
    base = [json.loads(line) for line in gzip.open(SHARED_HH, "rt", encoding="utf-8") if line.strip()]
    with path.open("w", encoding="utf-8") as fh:
        for k in range(n):
            row, tag = base[k % len(base)], f"\n\nHuman: [variant {k // len(base)}] "
            fh.write(json.dumps({side: row[side].replace("\n\nHuman: ", tag, 1) for side in ("chosen", "rejected")})
                     + "\n")


def _memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in bytes, from /proc (PSS splits shared pages among the processes that map them)."""
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
    return rss, pss


def measure(cmd: list[str], env: dict[str, str], cwd: Path, until: Path | None = None) -> dict:
    """Run ``cmd``: wall seconds; peak RSS of its largest process and peak PSS summed over its process
    tree (GB); its stdout; and the seconds until ``until`` exists (when given)."""
    start = time.time()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak_rss = peak_pss = 0
    reached = None
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [_memory(p.pid) for p in [root, *root.children(recursive=True)]]
        except (psutil.Error, OSError):
            tree = []
        peak_rss = max([peak_rss] + [rss for rss, _ in tree])
        peak_pss = max(peak_pss, sum(pss for _, pss in tree))
        if until is not None and reached is None and until.exists():
            reached = time.time() - start
        time.sleep(0.2)
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode:
        raise SystemExit(f"error: {' '.join(cmd[:4])} … exited {proc.returncode}")
    return {"seconds": round(time.time() - start, 1), "peak_rss_gb": round(peak_rss / 2**30, 2),
            "peak_tree_pss_gb": round(peak_pss / 2**30, 2), "stdout": out,
            "until_seconds": round(reached, 1) if reached is not None else None}


def du(path: Path) -> float:
    """GB under ``path``."""
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**30, 3)


def fresh_env(tmp: Path, name: str) -> dict[str, str]:
    """An environment whose rewardkit and ``datasets`` caches start empty."""
    env = dict(os.environ, HF_DATASETS_CACHE=str(tmp / f"hf-{name}"), TOKENIZERS_PARALLELISM="false",
               HF_DATASETS_DISABLE_PROGRESS_BARS="1")
    shutil.rmtree(tmp / f"hf-{name}", ignore_errors=True)
    shutil.rmtree(tmp / f"rk-{name}", ignore_errors=True)
    return env


def run_inspect(exe: list[str], cwd: Path, data: Path, tmp: Path, name: str) -> dict:
    env = fresh_env(tmp, name)
    r = measure([*exe, "data", "inspect", str(RECIPE), "--data", str(data), "--format", "hh-rlhf", "--json",
                 "--cache_dir", str(tmp / f"rk-{name}")], env, cwd)
    report = json.loads(r.pop("stdout"))
    assert report["kept"] + sum(report["dropped"].values()) == report["total"], report
    r["counts"] = {k: report[k] for k in ("total", "kept", "kept_train", "kept_eval", "dropped", "truncated")}
    r["disk_gb"] = {"prepared": du(tmp / f"rk-{name}"), "datasets_arrow": du(tmp / f"hf-{name}")}
    return r


def run_train(data: Path, tmp: Path, name: str, steps: int, fresh: bool = True) -> dict:
    env = fresh_env(tmp, name) if fresh else dict(os.environ, TOKENIZERS_PARALLELISM="false")
    out = tmp / f"run-{name}"
    shutil.rmtree(out, ignore_errors=True)
    datasets = json.dumps([{"path": str(data), "format": "hh-rlhf"}])
    r = measure([sys.executable, "-m", "reward.cli", "train", str(RECIPE), "--datasets", datasets, "--max_steps", str(steps),
                 "--output_dir", str(out), "--cache_dir", str(tmp / f"rk-{name}"), "--eval_max_pairs", "64"],
                env, ROOT, until=out / "data_report.json")
    r.pop("stdout")
    metrics = json.loads((out / "metrics.json").read_text())
    r["prepare_seconds"] = r.pop("until_seconds")
    r["seconds_per_step"] = round(metrics["train"]["train_runtime"] / steps, 3)
    logged = [json.loads(line) for line in (out / "logs" / "train_log.jsonl").read_text().splitlines()]
    r["tokens_per_second"] = round(sum(x.get("tokens", 0) for x in logged) / metrics["train"]["train_runtime"], 1)
    shutil.rmtree(out, ignore_errors=True)
    return r


def baseline_exe(rev: str, tmp: Path) -> tuple[list[str], Path]:
    """The CLI of ``rev``, from a git worktree, run with this interpreter."""
    tree = tmp / f"baseline-{rev}"
    if not tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(tree), rev], check=True,
                       capture_output=True)
    return [sys.executable, "-c", "import sys; from reward.cli import main; sys.exit(main())"], tree


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--baseline_rev", default="517a160", help="rewardkit before the streaming pipeline")
    ap.add_argument("--baseline_max", type=int, default=100_000)
    ap.add_argument("--skip_train", action="store_true")
    ap.add_argument("--speed_only", action="store_true",
                    help="only train --steps steps on each size's cache left by an earlier run (same --tmp): "
                         "seconds a step and tokens a second, with preparation out of the way")
    ap.add_argument("--tmp", default=None, help="work folder (default: a new temporary folder)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    tmp = Path(a.tmp or tempfile.mkdtemp(prefix="rk-data-scale-"))
    tmp.mkdir(parents=True, exist_ok=True)
    if a.speed_only:
        rows = [{"pairs": n, **run_train(tmp / f"hh-{n}.jsonl", tmp, f"t{n}", a.steps, fresh=False)} for n in a.sizes]
        for r in rows:
            print(f"{r['pairs']:>9,} pairs: {r['seconds_per_step']} s a step, {r['tokens_per_second']} tokens/s "
                  f"(preparation from the cache: {r['prepare_seconds']} s)")
        write_result("data-scale-steps", "cpu", {"sizes": a.sizes, "steps": a.steps, "rows": rows}, a.out)
        return
    rows = []
    for n in a.sizes:
        data = tmp / f"hh-{n}.jsonl"
        if not data.exists():
            write_variants(n, data)
        row = {"pairs": n, "file_gb": round(data.stat().st_size / 2**30, 3),
               "inspect": run_inspect([sys.executable, "-m", "reward.cli"], ROOT, data, tmp, f"i{n}")}
        if n <= a.baseline_max and a.baseline_rev:
            exe, tree = baseline_exe(a.baseline_rev, tmp)
            row["baseline_inspect"] = run_inspect(exe, tree, data, tmp, f"b{n}")
            row["speedup"] = round(row["baseline_inspect"]["seconds"] / row["inspect"]["seconds"], 2)
            assert row["baseline_inspect"]["counts"] == row["inspect"]["counts"], "the counts changed"
        if not a.skip_train:
            row["train"] = run_train(data, tmp, f"t{n}", a.steps)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print_table(rows)
    write_result("data-scale", "cpu", {"sizes": a.sizes, "steps": a.steps, "baseline_rev": a.baseline_rev,
                                       "cpus": os.cpu_count(), "rows": rows}, a.out)


def print_table(rows: list[dict]) -> None:
    print("| pairs | inspect s | peak RSS / tree PSS GB | prepared GB (+ datasets' Arrow copy) | baseline s, RSS GB | "
          "train: prepare s | train peak RSS / tree PSS GB | s / step |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        i, b, t = r["inspect"], r.get("baseline_inspect"), r.get("train") or {}
        base = f"{b['seconds']}, {b['peak_rss_gb']} ({r['speedup']}×)" if b else "—"
        train_mem = f"{t['peak_rss_gb']} / {t['peak_tree_pss_gb']}" if t else "—"
        print(f"| {r['pairs']:,} | {i['seconds']} | {i['peak_rss_gb']} / {i['peak_tree_pss_gb']} | "
              f"{i['disk_gb']['prepared']} (+{i['disk_gb']['datasets_arrow']}) | {base} | "
              f"{t.get('prepare_seconds', '—')} | {train_mem} | {t.get('seconds_per_step', '—')} |")
    for a, b in zip(rows, rows[1:]):
        slope = (b["inspect"]["seconds"] - a["inspect"]["seconds"]) / (b["pairs"] - a["pairs"]) * 1e6
        print(f"slope {a['pairs']:,} → {b['pairs']:,}: {slope:.0f} µs a pair (inspect); time ratio "
              f"{b['inspect']['seconds'] / a['inspect']['seconds']:.1f}× for {b['pairs'] / a['pairs']:.0f}× the pairs")


if __name__ == "__main__":
    main()
