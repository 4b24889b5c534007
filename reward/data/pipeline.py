"""Sources → pairs → hygiene → mixture → grouped split → tokens with the length policy, in bounded memory.

Ours rather than TRL's ``_prepare_dataset`` because that one drops every over-long pair without a
count. The datasets this returns are already tokenized (``chosen_ids``/``rejected_ids`` as TRL 1.x
names them, plus ``prompt_len`` for prompt sharing) and every row fits ``max_length``, so TRL's own
length filter has nothing left to drop; the trainer checks that it dropped nothing.

Scale: no step holds the data set as Python objects. Rows stream from the memory-mapped Arrow copy
``datasets`` makes of a source, through the adapter and hygiene, into an Arrow file of pairs;
duplicates are found by a 16-byte digest per pair, the split by the prompt column as one Arrow
array; tokenization is a batched ``datasets.map`` (``dataset_num_proc`` processes) writing int32
token ids to Arrow, read back a record batch at a time to count and keep rows, and the published
cache is memory-mapped by every process that trains on it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..config.sources import DataSource
from ..errors import DataError
from .collect import collect_pair_sets
from .report import DataReport
from .settings import DataSettings
from .tokenize import _LENGTHS, finish_lengths, tokenize_split, write_kept

FORMAT_VERSION = 4  # bump when tokenization or the cache layout changes, to invalidate caches


@dataclass
class PreparedData:
    train: Any  # datasets.Dataset
    eval: Any | None
    report: DataReport
    train_prompt_hashes: list[str] | None = None
    """``prompt_hash`` of every prompt the model trains on (sorted, unique): the run directory keeps
    them so ``rewardkit eval`` can leave out pairs the model has seen."""
    named: dict[str, Any] = field(default_factory=dict)
    """The recipe's ``eval_datasets``, by name: every pair of each (:func:`prepare_named_sets`)."""
    named_reports: dict[str, DataReport] = field(default_factory=dict)


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




def _published(root: Path) -> PreparedData:
    """A published cache, memory-mapped."""
    from datasets import Dataset

    report = DataReport.from_dict(json.loads((root / "report.json").read_text()))
    train, evals = (Dataset.from_file(str(root / f"{n}.arrow")) if (root / f"{n}.arrow").exists() else None
                    for n in ("train", "eval"))
    return PreparedData(train, evals, report, json.loads((root / "train_prompts.json").read_text()))


def prepare_data(sources: Sequence[DataSource], tokenizer: Any, settings: DataSettings) -> PreparedData:
    """The whole data path, cached on disk: each node's main process prepares it, the node's other
    processes wait for the published cache and memory-map it."""
    from accelerate import PartialState

    root = Path(settings.cache_dir or Path.home() / ".cache" / "rewardkit" / "data") / \
        _cache_key(sources, tokenizer, settings.cache_key())
    with PartialState().local_main_process_first():
        if not (root / "complete").exists():
            _prepare(sources, tokenizer, settings, root)
        return _published(root)


def prepare_named_sets(sources: dict[str, DataSource], tokenizer: Any,
                       settings: DataSettings) -> dict[str, PreparedData]:
    """Evaluation sets of which every pair is evaluated (no split), each prepared and cached on its own
    with the training data's length rule, at most ``max_eval_samples`` pairs each."""
    whole = replace(settings, eval_split_size=0.0, max_train_samples=settings.max_eval_samples)
    return {name: prepare_data([source], tokenizer, whole) for name, source in sources.items()}


def _prepare(sources: Sequence[DataSource], tokenizer: Any, settings: DataSettings, root: Path) -> None:
    """Prepare into a private folder next to ``root``, then publish it (:func:`_publish`)."""
    import shutil
    import socket

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.{socket.gethostname()}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "work").mkdir(parents=True)
    try:
        report = DataReport(max_length=settings.max_length, truncation=settings.truncation)
        splits = dict(zip(("train", "eval"), collect_pair_sets(sources, report, settings.seed, settings.eval_split_size,
                                                               tmp / "work")))
        lengths: dict[str, list[Any]] = {n: [] for n in _LENGTHS}
        hashes: list[str] = []
        for name, pairs in splits.items():
            cap = settings.max_train_samples if name == "train" else settings.max_eval_samples
            if pairs is not None and cap is not None and len(pairs) > cap:
                report.drop(f"max_{name}_samples", len(pairs) - cap)
                pairs = pairs.select(range(cap))
            if pairs is None or len(pairs) == 0:
                continue
            tokens = tokenize_split(pairs, tokenizer, settings, name, tmp / "work")
            kept_hashes = write_kept(tokens, report, name, lengths, tmp / f"{name}.arrow")
            if name == "train":
                hashes = sorted(kept_hashes)
        finish_lengths(report, lengths)
        report.check()
        if not report.kept:
            raise DataError(f"no pairs left after preparation:\n{report.summary()}")
        shutil.rmtree(tmp / "work")
        (tmp / "report.json").write_text(report.to_json())
        (tmp / "train_prompts.json").write_text(json.dumps(hashes))
        (tmp / "complete").write_text("")
        _publish(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, root: Path) -> None:
    """One atomic rename. Several nodes' main processes may prepare the same data on a shared filesystem
    at once: each writes its own folder and the first rename wins (the others' copies are identical)."""
    try:
        os.rename(tmp, root)
    except OSError:
        if not (root / "complete").exists():
            raise
