"""Sources → clean, unique pairs in an Arrow file, mixed by weight and split by prompt.
"""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config.sources import DataSource
from .adapters import Pair
from .formats import ADAPTERS
from .report import DataReport
from .sources import iter_rows, open_rows

_WRITE_ROWS = 4096  # pairs per Arrow record batch while streaming


def prompt_key(pair: Pair) -> str:
    """A pair's prompt as canonical JSON: the grouping key of the split, and how pairs store prompts."""
    return json.dumps(pair["prompt"], sort_keys=True, ensure_ascii=False)


def key_hash(key: str) -> str:
    """The short stable hash of a :func:`prompt_key`."""
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def prompt_hash(pair: Pair) -> str:
    """A short stable hash of a pair's prompt (what a run records of the prompts it trained on)."""
    return key_hash(prompt_key(pair))


class Hygiene:
    """Drops (and counts) empty responses, identical chosen/rejected and exact duplicates. A duplicate is
    found by a 16-byte digest of (prompt, chosen, rejected), so memory grows by bytes, not texts, a pair."""

    def __init__(self, report: DataReport):
        self.report, self.dropped = report, 0
        self._seen: set[bytes] = set()

    def keep(self, pair: Pair, key: str) -> bool:
        """Whether ``pair`` (whose :func:`prompt_key` is ``key``) is kept; a drop is counted."""
        reason = None
        if not pair["chosen"].strip() or not pair["rejected"].strip():
            reason = "empty_field"
        elif pair["chosen"].strip() == pair["rejected"].strip():
            reason = "identical_responses"
        else:
            digest = hashlib.blake2b(json.dumps([key, pair["chosen"], pair["rejected"]]).encode(), digest_size=16).digest()
            if digest in self._seen:
                reason = "duplicate"
            self._seen.add(digest)
        if reason:
            self.report.drop(reason)
            self.dropped += 1
        return reason is None


def clean_pairs(pairs: list[Pair], report: DataReport) -> list[Pair]:
    """A list of pairs through :class:`Hygiene`."""
    hygiene = Hygiene(report)
    return [p for p in pairs if hygiene.keep(p, prompt_key(p))]


_PAIR_COLUMNS = ("prompt", "prompt_hash", "chosen", "rejected", "margin")


class PairFile:
    """Pairs streamed into an Arrow file a batch at a time, then memory-mapped as a ``datasets.Dataset``.
    The prompt is stored as its :func:`prompt_key`."""

    def __init__(self, path: Path):
        import pyarrow as pa

        self.path = path
        self.schema = pa.schema([(c, pa.float64() if c == "margin" else pa.string()) for c in _PAIR_COLUMNS])
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_stream(self._sink, self.schema)
        self._rows: dict[str, list[Any]] = {c: [] for c in _PAIR_COLUMNS}

    def add(self, pair: Pair, key: str) -> None:
        for column, value in zip(_PAIR_COLUMNS, (key, key_hash(key), pair["chosen"], pair["rejected"], pair.get("margin"))):
            self._rows[column].append(value)
        if len(self._rows["prompt"]) >= _WRITE_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._rows["prompt"]:
            self._writer.write_batch(pa.record_batch([self._rows[c] for c in _PAIR_COLUMNS], schema=self.schema))
            self._rows = {c: [] for c in _PAIR_COLUMNS}

    def close(self) -> Any:
        from datasets import Dataset

        self._flush()
        self._writer.close()
        self._sink.close()
        return Dataset.from_file(str(self.path))


def column(dataset: Any, name: str) -> Any:
    """One column of a dataset (its selected rows) as a ``pyarrow.ChunkedArray``: no Python objects."""
    return dataset.with_format("arrow")[name]


def pairs_of(dataset: Any | None) -> list[Pair]:
    """A (small) pair dataset back as a list of pair dicts."""
    if dataset is None:
        return []
    return [{"prompt": json.loads(row["prompt"]), "chosen": row["chosen"], "rejected": row["rejected"],
             "margin": row["margin"]} for row in iter_rows(dataset)]


def _read_source(source: DataSource, split: str, report: DataReport, work: Path) -> Any:
    """One split of a source through its adapter and :class:`Hygiene` into a :class:`PairFile`."""
    dropped_before = sum(report.dropped.values())
    hygiene, out, adapted = Hygiene(report), PairFile(work / f"pairs-{len(list(work.iterdir()))}.arrow"), 0
    for pair in ADAPTERS[source.format](iter_rows(open_rows(source, split)), source, report):
        adapted += 1
        key = prompt_key(pair)
        if hygiene.keep(pair, key):
            out.add(pair, key)
    pairs = out.close()
    candidates = adapted + sum(report.dropped.values()) - dropped_before - hygiene.dropped
    report.total += candidates
    report.per_source[f"{source.path}:{split}"] = {"candidates": candidates, "after_hygiene": len(pairs)}
    return pairs


def _apply_weight(pairs: Any, weight: float, rng: random.Random, report: DataReport) -> Any:
    """``weight`` < 1 keeps a seeded sample, > 1 repeats (the same rows ``random.sample`` of a list picks)."""
    if weight == 1.0:
        return pairs
    n = len(pairs)
    whole, frac = int(weight), weight - int(weight)
    indices = list(range(n)) * whole + (rng.sample(range(n), round(frac * n)) if frac else [])
    if len(indices) < n:
        report.drop("mixture_weight", n - len(indices))
    else:
        report.total += len(indices) - n  # repeated rows are extra candidates, kept
    return pairs.select(indices)


def eval_ranks(n_keys: int, size: float, seed: int) -> list[int]:
    """The split rule: positions, in sorted order of the distinct prompt keys, of the held-out prompts
    (a seeded shuffle of the sorted keys, its first ``size`` share)."""
    order = list(range(n_keys))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(n_keys * size)) if n_keys > 1 else 0
    return order[:n_eval]


def grouped_split(pairs: list[Pair], size: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Seeded split of a list of pairs by prompt: no prompt lands on both sides."""
    if size <= 0 or not pairs:
        return pairs, []
    keys = sorted({prompt_key(p) for p in pairs})
    eval_keys = {keys[r] for r in eval_ranks(len(keys), size, seed)}
    return [p for p in pairs if prompt_key(p) not in eval_keys], [p for p in pairs if prompt_key(p) in eval_keys]


def _where(mask: Any, value: bool) -> list[int]:
    import numpy as np

    return np.flatnonzero(np.asarray(mask) == value).tolist()


def split_by_prompt(pairs: Any, size: float, seed: int) -> tuple[Any, Any | None]:
    """:func:`grouped_split` on a pair dataset: the prompt keys are sorted as one Arrow array (UTF-8 byte
    order is code point order, so the split is the list version's)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if size <= 0 or len(pairs) == 0:
        return pairs, None
    prompts = column(pairs, "prompt")
    keys = pc.unique(prompts)
    ranks = pa.array(eval_ranks(len(keys), size, seed), pa.int64())
    held = pc.is_in(prompts, value_set=keys.take(pc.sort_indices(keys).take(ranks)))
    return pairs.select(_where(held, False)), pairs.select(_where(held, True))


def _concatenate(parts: list[Any]) -> Any | None:
    from datasets import concatenate_datasets

    return None if not parts else parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def collect_pair_sets(sources: Sequence[DataSource], report: DataReport, seed: int, eval_split_size: float,
                      work: Path) -> tuple[Any, Any | None]:
    """All sources → (train pairs, eval pairs or None) as pair datasets under ``work``, counted in ``report``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rng = random.Random(seed)
    train_parts, eval_parts = [], []
    for source in sources:
        train_parts.append(_apply_weight(_read_source(source, source.split, report, work), source.weight, rng, report))
        if source.eval_split:
            eval_parts.append(_read_source(source, source.eval_split, report, work))
    train = _concatenate(train_parts)
    if not any(s.eval_split for s in sources):
        return split_by_prompt(train, eval_split_size, seed)
    evals = _concatenate(eval_parts)
    trained = pc.unique(column(train, "prompt_hash")) if len(train) else pa.array([], pa.string())
    leaked = pc.is_in(column(evals, "prompt_hash"), value_set=trained)
    report.drop("prompt_in_train_and_eval", int(pc.sum(leaked).as_py() or 0))
    return train, evals.select(_where(leaked, False))


def collect_pairs(sources: Sequence[DataSource], report: DataReport, seed: int = 42, eval_split_size: float = 0.2
                  ) -> tuple[list[Pair], list[Pair]]:
    """:func:`collect_pair_sets` as lists of pairs, for the small sets read whole (``eval --data``)."""
    with tempfile.TemporaryDirectory(prefix="rewardkit-pairs-") as work:
        train, evals = collect_pair_sets(sources, report, seed, eval_split_size, Path(work))
        return pairs_of(train), pairs_of(evals)
