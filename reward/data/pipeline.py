"""Sources → pairs → hygiene → mixture → grouped split → tokens with the length policy.

Ours rather than TRL's ``_prepare_dataset`` because that one drops every over-long pair without a
count. The datasets this returns are already tokenized (``chosen_ids``/``rejected_ids`` as TRL 1.x
names them, plus ``prompt_len`` for prompt sharing) and every row fits ``max_length``, so TRL's own
length filter has nothing left to drop; the trainer checks that it dropped nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError
from .adapters import ADAPTERS, Pair
from .formatting import encode_pairs, fit_to_length
from .report import DataReport, length_stats
from .sources import DataSource, load_rows

logger = logging.getLogger(__name__)
FORMAT_VERSION = 3  # bump when tokenization or the cache layout changes, to invalidate caches


@dataclass
class PreparedData:
    train: Any  # datasets.Dataset
    eval: Any | None
    report: DataReport
    train_prompt_hashes: list[str] | None = None
    """``prompt_hash`` of every prompt the model trains on (sorted, unique): the run directory keeps
    them so ``rewardkit eval`` can leave out pairs the model has seen."""


def prompt_key(pair: Pair) -> str:
    return json.dumps(pair["prompt"], sort_keys=True, ensure_ascii=False)


def prompt_hash(pair: Pair) -> str:
    """A short stable hash of a pair's prompt (the grouping key of the split)."""
    return hashlib.sha1(prompt_key(pair).encode()).hexdigest()[:16]


def clean_pairs(pairs: list[Pair], report: DataReport) -> list[Pair]:
    """Drop (and count) empty responses, identical chosen/rejected and exact duplicates."""
    out, seen = [], set()
    for p in pairs:
        if not p["chosen"].strip() or not p["rejected"].strip():
            report.drop("empty_field")
            continue
        if p["chosen"].strip() == p["rejected"].strip():
            report.drop("identical_responses")
            continue
        key = (prompt_key(p), p["chosen"], p["rejected"])
        if key in seen:
            report.drop("duplicate")
            continue
        seen.add(key)
        out.append(p)
    return out


def _read_source(source: DataSource, split: str, report: DataReport) -> list[Pair]:
    dropped_before = sum(report.dropped.values())
    pairs = ADAPTERS[source.format](load_rows(source, split), source, report)
    candidates = len(pairs) + sum(report.dropped.values()) - dropped_before
    report.total += candidates
    pairs = clean_pairs(pairs, report)
    report.per_source[f"{source.path}:{split}"] = {"candidates": candidates, "after_hygiene": len(pairs)}
    return pairs


def _apply_weight(pairs: list[Pair], weight: float, rng: random.Random, report: DataReport) -> list[Pair]:
    if weight == 1.0:
        return pairs
    whole, frac = int(weight), weight - int(weight)
    extra = rng.sample(pairs, round(frac * len(pairs))) if frac else []
    out = pairs * whole + extra
    if len(out) < len(pairs):
        report.drop("mixture_weight", len(pairs) - len(out))
    else:
        report.total += len(out) - len(pairs)  # repeated rows are extra candidates, kept
    return out


def grouped_split(pairs: list[Pair], size: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Seeded split by prompt: no prompt lands on both sides."""
    if size <= 0 or not pairs:
        return pairs, []
    keys = sorted({prompt_key(p) for p in pairs})
    random.Random(seed).shuffle(keys)
    n_eval = max(1, round(len(keys) * size)) if len(keys) > 1 else 0
    eval_keys = set(keys[:n_eval])
    train = [p for p in pairs if prompt_key(p) not in eval_keys]
    evals = [p for p in pairs if prompt_key(p) in eval_keys]
    return train, evals


def collect_pairs(
    sources: Sequence[DataSource], report: DataReport, seed: int = 42, eval_split_size: float = 0.2
) -> tuple[list[Pair], list[Pair]]:
    """All sources → (train pairs, eval pairs), counted in ``report``."""
    rng = random.Random(seed)
    train: list[Pair] = []
    explicit_eval: list[Pair] = []
    for source in sources:
        train += _apply_weight(_read_source(source, source.split, report), source.weight, rng, report)
        if source.eval_split:
            explicit_eval += _read_source(source, source.eval_split, report)
    if any(s.eval_split for s in sources):
        train_keys = {prompt_key(p) for p in train}
        leaked = [p for p in explicit_eval if prompt_key(p) in train_keys]
        report.drop("prompt_in_train_and_eval", len(leaked))
        evals = [p for p in explicit_eval if prompt_key(p) not in train_keys]
        return train, evals
    return grouped_split(train, eval_split_size, seed)


def tokenize_pairs(
    pairs: list[Pair], tokenizer: Any, max_length: int | None, policy: str, report: DataReport, split: str,
    kept_hashes: set[str] | None = None,
) -> list[dict[str, Any]]:
    """Tokenize with the shared formatting function and apply the length policy (counted).

    ``kept_hashes`` collects the ``prompt_hash`` of every kept pair."""
    if not pairs:
        return []
    p_ids, r_ids = encode_pairs(tokenizer, [p["prompt"] for p in pairs], [[p["chosen"], p["rejected"]] for p in pairs])
    has_margin = any(p.get("margin") is not None for p in pairs)
    rows = []
    lengths = report.lengths.setdefault("_raw", {"prompt": [], "chosen": [], "rejected": []})
    for pair, prompt, (chosen, rejected) in zip(pairs, p_ids, r_ids):
        lengths["prompt"].append(len(prompt))
        lengths["chosen"].append(len(chosen))
        lengths["rejected"].append(len(rejected))
        fitted = fit_to_length(prompt, (chosen, rejected), max_length, policy)
        if fitted is None:
            report.drop("too_long")
            continue
        if fitted.prompt_cut:
            report.truncated += 1
            prompt = fitted.prompt
        row = {"chosen_ids": prompt + chosen, "rejected_ids": prompt + rejected, "prompt_len": len(prompt)}
        if has_margin:
            row["margin"] = float(pair.get("margin") or 0.0)
        rows.append(row)
        if kept_hashes is not None:
            kept_hashes.add(prompt_hash(pair))
    if split == "train":
        report.kept_train += len(rows)
    else:
        report.kept_eval += len(rows)
    return rows


def _finish_lengths(report: DataReport) -> None:
    raw = report.lengths.pop("_raw", None)
    if not raw:
        return
    report.lengths = {name: length_stats(v) for name, v in raw.items()}
    prompt_tokens = 2 * sum(raw["prompt"])
    total = prompt_tokens + sum(raw["chosen"]) + sum(raw["rejected"])
    report.prompt_token_share = prompt_tokens / total if total else None


def _cache_key(sources: Sequence[DataSource], tokenizer: Any, settings: dict[str, Any]) -> str:
    parts: list[Any] = [FORMAT_VERSION, settings, getattr(tokenizer, "name_or_path", ""), len(tokenizer),
                        getattr(tokenizer, "chat_template", None), tokenizer.pad_token, tokenizer.eos_token]
    for s in sources:
        parts.append(s.__dict__)
        for p in (s.path, s.eval_split):
            if p and Path(p).is_file():
                st = Path(p).stat()
                parts.append((st.st_size, st.st_mtime_ns))
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DataSettings:
    """What decides the prepared data (and its cache key), besides the sources and the tokenizer."""

    max_length: int | None
    truncation: str = "left"
    seed: int = 42
    eval_split_size: float = 0.2
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    cache_dir: str | None = None

    @classmethod
    def from_recipe(cls, recipe: Any) -> DataSettings:
        """A recipe's data keys, with TRL's ``max_length`` and ``seed``."""
        d, t = recipe.data, recipe.training
        return cls(t.max_length, d.truncation, t.seed, d.eval_split_size, d.max_train_samples, d.max_eval_samples,
                   d.cache_dir)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> DataSettings:
        """From a resolved recipe's flat mapping (``recipe.resolved.yaml``); absent keys take the defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{"max_length": None, **{k: v for k, v in values.items() if k in names}})


def prepare_data(sources: Sequence[DataSource], tokenizer: Any, settings: DataSettings) -> PreparedData:
    """The whole data path, cached on disk and computed by the main process of each node first."""
    from accelerate import PartialState
    from datasets import Dataset, load_from_disk

    key = {k: v for k, v in dataclasses.asdict(settings).items() if k != "cache_dir"}
    root = Path(settings.cache_dir or Path.home() / ".cache" / "rewardkit" / "data") / _cache_key(sources, tokenizer, key)
    max_length, truncation = settings.max_length, settings.truncation
    with PartialState().local_main_process_first():
        if (root / "complete").exists():
            report = DataReport(**_report_fields(json.loads((root / "report.json").read_text())))
            train = load_from_disk(str(root / "train")) if (root / "train").exists() else None
            evals = load_from_disk(str(root / "eval")) if (root / "eval").exists() else None
            hashes = json.loads((root / "train_prompts.json").read_text())
            return PreparedData(train, evals, report, hashes)
        report = DataReport(max_length=max_length, truncation=truncation)
        train_pairs, eval_pairs = collect_pairs(sources, report, settings.seed, settings.eval_split_size)
        for name, cap in (("train", settings.max_train_samples), ("eval", settings.max_eval_samples)):
            pairs = train_pairs if name == "train" else eval_pairs
            if cap is not None and len(pairs) > cap:
                report.drop(f"max_{name}_samples", len(pairs) - cap)
                pairs[:] = pairs[:cap]
        seen: set[str] = set()
        train_rows = tokenize_pairs(train_pairs, tokenizer, max_length, truncation, report, "train", seen)
        eval_rows = tokenize_pairs(eval_pairs, tokenizer, max_length, truncation, report, "eval")
        _finish_lengths(report)
        report.check()
        if not train_rows and not eval_rows:

            raise DataError(f"no pairs left after preparation:\n{report.summary()}")
        train = Dataset.from_list(train_rows) if train_rows else None
        evals = Dataset.from_list(eval_rows) if eval_rows else None
        hashes = sorted(seen)
        if PartialState().is_local_main_process:
            _save(root, train, evals, report, hashes)
        return PreparedData(train, evals, report, hashes)


def _report_fields(d: dict[str, Any]) -> dict[str, Any]:
    from collections import Counter

    return dict(total=d["total"], kept_train=d["kept_train"], kept_eval=d["kept_eval"],
                dropped=Counter(d["dropped"]), truncated=d["truncated"], repaired=Counter(d["repaired"]),
                per_source=d["per_source"], lengths=d["lengths"], prompt_token_share=d["prompt_token_share"],
                max_length=d["max_length"], truncation=d["truncation"])


def _save(root: Path, train: Any, evals: Any, report: DataReport, hashes: list[str]) -> None:
    """Write the cache into a private folder, then publish it with one atomic rename.

    Several nodes' main processes may prepare the same data on a shared filesystem at once: each
    writes its own folder and only the first rename wins (the others' copies are identical).
    """
    import os
    import shutil
    import socket

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.{socket.gethostname()}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        if train is not None:
            train.save_to_disk(str(tmp / "train"))
        if evals is not None:
            evals.save_to_disk(str(tmp / "eval"))
        (tmp / "report.json").write_text(report.to_json())
        (tmp / "train_prompts.json").write_text(json.dumps(hashes))
        (tmp / "complete").write_text("")
        os.rename(tmp, root)
    except OSError:
        if not (root / "complete").exists():
            logger.warning("could not publish the data cache at %s", root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
