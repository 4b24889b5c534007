"""``rewardkit demo``: best-of-n with a causal LM policy and a reward model, as the original project's
evaluation did: generate n answers per prompt, score them, print a ranked table and save a plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..modeling.source import ModelSource
from .model import RewardModel
from .scorefile import iter_prompts


def load_policy(source: ModelSource) -> tuple[Any, Any]:
    """A causal LM (Hub id, folder or GGUF) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    from ..modeling.source import load_pretrained, load_tokenizer

    return load_pretrained(AutoModelForCausalLM, source, dtype=torch.float32).eval(), load_tokenizer(source)


def generate(model: Any, tok: Any, prompt: str, n: int, max_new_tokens: int, seed: int) -> list[str]:
    import torch

    messages = [{"role": "user", "content": prompt}]
    if getattr(tok, "chat_template", None):
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = f"\n\nHuman: {prompt}\n\nAssistant:"
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(**ids, do_sample=True, temperature=0.9, top_p=0.95, max_new_tokens=max_new_tokens,
                             num_return_sequences=n, pad_token_id=tok.pad_token_id)
    return [tok.decode(o[ids["input_ids"].shape[1]:], skip_special_tokens=True).strip() for o in out]


def run_demo(policy: ModelSource, reward: str, prompts_path: str, n: int = 4, max_new_tokens: int = 48,
             out_dir: str = "demo_out", seed: int = 0) -> list[dict[str, Any]]:
    """Best-of-n: ``n`` sampled answers per prompt, ranked by the reward model (which may run its own code
    when the policy may); writes ``demo_results.json`` and ``demo_scores.png`` to ``out_dir``."""
    try:
        prompts = list(iter_prompts(prompts_path))
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"--prompts {prompts_path}: cannot read prompts ({type(exc).__name__}: {exc}); "
                        "give a text file with one prompt a line, or jsonl with a 'prompt' field.") from exc
    if not prompts:
        raise DataError(f"--prompts {prompts_path}: no prompts in the file.")
    if n < 1:
        raise DataError(f"-n {n}: need at least one answer per prompt.")
    rm = RewardModel.from_pretrained(reward, trust_remote_code=policy.trust_remote_code)
    model, tok = load_policy(policy)
    results = []
    for i, prompt in enumerate(prompts):
        ranked = rm.rank(prompt, generate(model, tok, prompt, n, max_new_tokens, seed + i))
        scores = [s for _, s in ranked]
        results.append({"prompt": prompt, "ranked": [{"response": r, "score": s} for r, s in ranked],
                        # what best-of-n buys over a random sample, in reward units
                        "best_minus_mean": scores[0] - sum(scores) / len(scores)})
        print(f"\n### {prompt}")
        print(f"{'rank':>4}  {'reward':>8}  response")
        for k, (r, s) in enumerate(ranked, 1):
            print(f"{k:>4}  {s:>8.3f}  {r[:100].replace(chr(10), ' ')}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from ..rundir import atomic_write_text

    atomic_write_text(out / "demo_results.json", json.dumps(results, indent=2, ensure_ascii=False))
    _plot(results, n, out / "demo_scores.png")
    gain = sum(r["best_minus_mean"] for r in results) / len(results)
    print(f"\nbest-of-{n} reward minus the mean of the {n} samples, averaged over {len(results)} prompts: {gain:.3f}")
    print(f"saved {out / 'demo_results.json'} and {out / 'demo_scores.png'}")
    return results


def _plot(results: list[dict[str, Any]], n: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.6 * len(results) + 2))
    for row, res in enumerate(results):
        scores = [x["score"] for x in res["ranked"]]
        ax.scatter(scores, [row] * len(scores), color="tab:blue", alpha=0.6)
        ax.scatter([scores[0]], [row], color="tab:green", s=80, label="best of n" if row == 0 else None)
    ax.set_yticks(range(len(results)), [r["prompt"][:40] + ("…" if len(r["prompt"]) > 40 else "") for r in results])
    ax.invert_yaxis()  # first prompt on top, as in the printed table
    ax.set_xlabel("reward")
    ax.set_title(f"Rewards of {n} sampled answers per prompt")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
