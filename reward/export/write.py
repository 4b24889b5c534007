"""``rewardkit export``: verify, then write the folder under a temporary name and rename it.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..data.formatting import chat_format, consumer_tokenizer
from ..errors import ExportError
from ..modeling.heads import fit_embeddings
from ..rundir import ENSEMBLE_HEADS, EXPORT_INFO, RUN_COMPLETE, TRAIN_PROMPTS, RunInfo, atomic_write_text, set_default_modes
from .card import model_card
from .hub import push_export
from .options import ExportOptions, VerifiedExport
from .verify import PROBES, verify_export

logger = logging.getLogger(__name__)


def export_run(run: str | Path, output_dir: str | Path, options: ExportOptions | None = None) -> Path:
    """Merge (LoRA) or copy (full), verify, write model + tokenizer + card, then optionally push."""
    options = options or ExportOptions()
    run, out = Path(run), Path(output_dir)
    check_output_dir(run, out)
    done = _read_export_info(out)
    source = {"run": str(run.resolve()), "stamp": _completion_stamp(run),
              "options": {"dtype": options.dtype, "verify_pairs": options.verify_pairs, "tolerance": options.tolerance}}
    if done and done.source == source and source["stamp"] is not None:
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


def _read_export_info(folder: Path) -> RunInfo | None:
    """An export's ``rewardkit.json`` (its completeness and ownership mark), or None (also when unreadable)."""
    if not (folder / EXPORT_INFO).is_file():
        return None
    try:
        info = RunInfo.read(folder)
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return info if info is not None and info.exported else None


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
        if verified.members is not None:
            from safetensors.torch import save_file

            # the members as trained (fp32): the export's head is their mean, rounded once to its dtype
            save_file({k: v.float().contiguous().cpu() for k, v in verified.members.items()},
                      str(tmp / ENSEMBLE_HEADS), metadata={"members": str(verified.members["weight"].shape[0])})
        readable_by_older_transformers(tmp)
        verification["plain_forms"] = check_plain_forms(tmp, tokenizer)
        if (run / TRAIN_PROMPTS).is_file():  # lets `rewardkit eval` on the export leave out training pairs
            shutil.copy(run / TRAIN_PROMPTS, tmp / TRAIN_PROMPTS)
        export_info = RunInfo(
            source_run=str(run.resolve()), source=source, model_name_or_path=info.model_name_or_path,
            gguf_file=info.gguf_file, max_length=info.max_length, truncation=info.truncation,
            reward_mean=stats["reward_mean"], reward_std=stats["reward_std"],
            reward_read_at=chat_format(tokenizer).turn_end, verification=verification, exported=True,
            ensemble_heads=int(verified.members["weight"].shape[0]) if verified.members is not None else 1)
        (tmp / "README.md").write_text(model_card(run, export_info, stats["metrics"], tokenizer))
        set_default_modes(tmp)
        export_info.write(tmp)  # written last: the completeness mark
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

    from ..data.formatting import as_messages, chat_format, encode_pairs

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
