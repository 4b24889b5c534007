"""What each RL client's request form does to a reward, through rewardkit and through plain transformers.

    python bench/client_forms.py --model exports/quickstart      # leaves out the pairs the run trained on

For every held-out HH-RLHF pair (chosen and rejected), each client's text is built as that client builds it
(the constructions ``tests/test_rl_clients.py`` replays from OpenRLHF, TRL and verl's code), then:

- through rewardkit: whether the token sequence rewardkit scores for it (``RewardModel.encode_texts``, the
  server's and the reward function's mapping) is the one ``rewardkit score`` scores for that (prompt,
  response), for every response; and on ``--check`` pairs the reward computed through that entry point
  against ``score``'s;
- through plain transformers (the export's own tokenizer and ``*ForSequenceClassification`` pooling):
  which texts tokenize to the scored sequence (those get exactly its reward), the rewards of the others
  computed with the plain model, and the pairwise accuracy of each form against the template form's.

Writes bench/results/<date>-client-forms-<device>.json and prints the table the README carries.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import write_result  # noqa: E402 (after the path insert)


def load_pairs(data: str, rm, max_pairs: int | None) -> list[dict]:
    from reward.config import DataSource
    from reward.data import DataReport, collect_pairs, prompt_hash

    pairs, _ = collect_pairs([DataSource.parse(0, {"path": data, "format": "hh-rlhf"})], DataReport(), eval_split_size=0.0)
    seen = rm.trained_prompt_hashes() or set()
    pairs = [p for p in pairs if prompt_hash(p) not in seen]
    return pairs[:max_pairs] if max_pairs else pairs


def forms(policy, plain, rm):
    """name → (build(prompt messages, reply) → (text, hint prompt or None), reference prompt for `score`)."""
    from reward.data import render_plain

    def policy_render(m, r):
        return policy.apply_chat_template(list(m) + [{"role": "assistant", "content": r}], tokenize=False)

    def gen(m):
        return policy.apply_chat_template(list(m), tokenize=False, add_generation_prompt=True)

    def openrlhf(m, r):
        prompt = gen(m)
        ids = policy(prompt, add_special_tokens=False)["input_ids"] + policy(r, add_special_tokens=False)["input_ids"]
        return policy.decode(ids + [policy.eos_token_id], skip_special_tokens=False), prompt

    def verl(tok):
        def build(m, r):
            text = tok.apply_chat_template(list(m) + [{"role": "assistant", "content": r}], add_generation_prompt=False,
                                           tokenize=False)
            if tok.bos_token is not None and text.startswith(tok.bos_token):
                text = text[len(tok.bos_token):]
            return text, None
        return build

    return {
        "OpenRLHF /get_reward (decode(prompt+response ids), ends at EOS)": (openrlhf, None),
        "chat template rendering, policy's template (ends `<|im_end|>\\n`)":
            (lambda m, r: (policy_render(m, r), None), None),
        "export's chat template (TRL model-path, conversational; verl with the export)": (verl(plain), None),
        "verl with the run's tokenizer (leading `<|im_start|>` stripped as BOS)": (verl(policy), None),
        "policy text decoded with skip_special_tokens=True (no EOS)": (lambda m, r: (gen(m) + r, gen(m)), None),
        "TRL plain-string prompt + completion (HH transcript, no template)":
            (lambda m, r: (render_plain(m) + " " + r, render_plain(m)), render_plain),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "exports" / "quickstart"), help="an export (rewardkit export RUN)")
    ap.add_argument("--run", default=None, help="the run it came from (default: rewardkit.json's source_run)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.1-1800.jsonl.gz"))
    ap.add_argument("--max_pairs", type=int, default=None)
    ap.add_argument("--check", type=int, default=48, help="pairs whose rewards are computed through each entry point")
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from reward.evaluation import compute_metrics
    from reward.inference import RewardModel
    from reward.modeling import load_tokenizer

    torch.manual_seed(0)
    rm = RewardModel.from_pretrained(a.model, device="cpu", dtype=torch.float32)
    run = a.run or json.loads((Path(a.model) / "rewardkit.json").read_text())["source_run"]
    policy = load_tokenizer(run)  # the tokenizer the model trained with: SmolLM2's own template
    plain_tok = AutoTokenizer.from_pretrained(a.model)
    plain = AutoModelForSequenceClassification.from_pretrained(a.model, dtype=torch.float32).eval()
    pairs = load_pairs(a.data, rm, a.max_pairs)
    prompts = [p["prompt"] for p in pairs]
    replies = [[p["chosen"], p["rejected"]] for p in pairs]
    canonical = rm.encode(prompts, replies)
    base = rm.score_sequence_groups(canonical.groups, progress=True)
    base_acc = compute_metrics([b[0] for b in base], [b[1] for b in base])["accuracy"]
    print(f"{len(pairs)} held-out pairs; template-form accuracy through rewardkit {base_acc:.4f}")

    rows = []
    for name, (build, ref_prompt) in forms(policy, plain_tok, rm).items():
        built = [[build(m, r) for r in rs] for m, rs in zip(prompts, replies)]
        # the reference: `score` of the prompt as this client passes it (messages, or TRL's string)
        # (TRL's completion of a transcript prompt starts with the space the policy generated after "Assistant:")
        spaced = [[" " + x for x in rs] for rs in replies]
        want_groups = canonical.groups if ref_prompt is None else rm.encode([ref_prompt(m) for m in prompts], spaced).groups
        texts = [t for g in built for t, _ in g]
        hints = [h for g in built for _, h in g]
        flat_want = [s for g in want_groups for s in g]
        index, enc = rm.encode_texts(texts, hints)
        ours = [None] * len(texts)
        for idx, seqs in zip(index, enc.groups):
            for i, s in zip(idx, seqs):
                ours[i] = s
        same_rk = sum(x == y for x, y in zip(ours, flat_want))
        # rewards through the entry point on the first pairs (the server's mapping / the reward function)
        n_check = 2 * min(a.check, len(pairs))
        if ref_prompt is not None:  # TRL's reward call, plain-string prompts
            got = rm.as_reward_func()(prompts=hints[:n_check], completions=[spaced[i // 2][i % 2] for i in range(n_check)])
            ref_rewards = [x for g in rm.score_sequence_groups(want_groups[:n_check // 2]) for x in g]
        else:
            got = rm.score_texts(texts[:n_check], hints[:n_check])
            ref_rewards = [x for g in base for x in g][:n_check]
        worst_rk = max(abs(x - y) for x, y in zip(got, ref_rewards))
        # plain transformers: its own tokenization and pooling
        plain_ids = plain_tok(texts, add_special_tokens=False)["input_ids"]
        canon_flat = [s for g in canonical.groups for s in g]
        rewards = [x for g in base for x in g]
        differ = [i for i, (x, y) in enumerate(zip(plain_ids, canon_flat)) if x != y]
        order = sorted(differ, key=lambda i: len(plain_ids[i]))
        for k in range(0, len(order), a.batch_size):
            idx = order[k:k + a.batch_size]
            batch = plain_tok.pad({"input_ids": [plain_ids[i] for i in idx]}, return_tensors="pt", padding_side="right")
            with torch.inference_mode():
                out = plain(**batch).logits[:, 0].tolist()
            for i, v in zip(idx, out):
                rewards[i] = v
        acc = compute_metrics(rewards[0::2], rewards[1::2])["accuracy"]
        row = {"form": name, "rewardkit_same_tokens": same_rk, "n": len(texts), "rewardkit_checked": n_check,
               "rewardkit_max_abs_diff": worst_rk, "plain_same_tokens": len(texts) - len(differ),
               "plain_accuracy": acc, "plain_accuracy_minus_template": acc - base_acc,
               "plain_max_abs_diff": max((abs(rewards[i] - [x for g in base for x in g][i]) for i in differ), default=0.0)}
        rows.append(row)
        print(json.dumps(row))
    result = {"model": a.model, "pairs": len(pairs), "template_accuracy": base_acc, "rows": rows}
    print(f"\n| form | rewardkit: scored tokens = `score`'s | max abs diff (on {2 * min(a.check, len(pairs))} checked) | "
          "plain transformers: same tokens | accuracy | vs template |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['form']} | {r['rewardkit_same_tokens']}/{r['n']} | {r['rewardkit_max_abs_diff']:.1e} | "
              f"{r['plain_same_tokens']}/{r['n']} | {r['plain_accuracy']:.3f} | "
              f"{100 * r['plain_accuracy_minus_template']:+.1f} |")
    write_result("client-forms", f"cpu-{os.cpu_count()}cores", result, a.out)


if __name__ == "__main__":
    main()
