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
import logging
import os
import random
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError
from .adapters import ADAPTERS, Pair
from .formatting import encode_pairs, fit_to_length
from .report import DataReport, length_stats
from .sources import DataSource, iter_rows, open_rows

logger = logging.getLogger(__name__)
FORMAT_VERSION = 4  # bump when tokenization or the cache layout changes, to invalidate caches
_WRITE_ROWS = 4096  # pairs per Arrow record batch while streaming
_MAP_BATCH = 512  # pairs per tokenizer call
MAX_DEFAULT_PROCS = 8
"""Default ceiling on tokenizing processes: each is forked from the preparing process and held about
0.7-0.9 GB (PSS) at 1M pairs on the 2-core machine, so a 64-core node must not start 64 unasked."""
PARALLEL_FROM = 20_000
"""Pairs below which tokenization stays in one process (starting workers costs more than it saves)."""


@dataclass
class PreparedData:
    train: Any  # datasets.Dataset
    eval: Any | None
    report: DataReport
    train_prompt_hashes: list[str] | None = None
    """``prompt_hash`` of every prompt the model trains on (sorted, unique): the run directory keeps
    them so ``rewardkit eval`` can leave out pairs the model has seen."""


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


_LENGTHS = ("prompt_tokens", "chosen_tokens", "rejected_tokens")
TRAINING_COLUMNS = ["chosen_ids", "rejected_ids", "prompt_len"]
"""A prepared split's columns (and ``margin`` when a source gives margins)."""


def encode_batch(batch: dict[str, list[Any]], tokenizer: Any, max_length: int | None, policy: str,
                 margin: bool) -> dict[str, list[Any]]:
    """A batch of pairs → token ids fitted to ``max_length`` (``datasets.map``), with what the report
    counts: raw lengths, ``fits`` (False: dropped as too long) and ``cut`` (prompt truncated)."""
    prompts = [json.loads(key) for key in batch["prompt"]]
    p_ids, r_ids = encode_pairs(tokenizer, prompts, [list(cr) for cr in zip(batch["chosen"], batch["rejected"])])
    out: dict[str, list[Any]] = {k: [] for k in ("chosen_ids", "rejected_ids", "prompt_len", *_LENGTHS, "fits", "cut")}
    for prompt, (chosen, rejected) in zip(p_ids, r_ids):
        for name, ids in zip(_LENGTHS, (prompt, chosen, rejected)):
            out[name].append(len(ids))
        fitted = fit_to_length(prompt, (chosen, rejected), max_length, policy)
        kept = fitted.prompt if fitted is not None else []
        out["fits"].append(fitted is not None)
        out["cut"].append(bool(fitted and fitted.prompt_cut))
        out["chosen_ids"].append(kept + chosen if fitted else [])
        out["rejected_ids"].append(kept + rejected if fitted else [])
        out["prompt_len"].append(len(kept))
    if margin:
        out["margin"] = [float(m or 0.0) for m in batch["margin"]]
    return out


def _token_features(margin: bool) -> Any:
    from datasets import Features, Sequence, Value

    ids = Sequence(Value("int32"))
    features = {"chosen_ids": ids, "rejected_ids": ids, "prompt_len": Value("int32"),
                **{n: Value("int32") for n in _LENGTHS}, "fits": Value("bool"), "cut": Value("bool"),
                "prompt_hash": Value("string")}
    return Features({**features, **({"margin": Value("float64")} if margin else {})})


def tokenize_split(pairs: Any, tokenizer: Any, settings: DataSettings, name: str, work: Path) -> Any:
    """A pair dataset → token rows (``datasets.map``, batched, in ``settings.num_proc`` processes for a
    large set), written under ``work``; counts are read from its columns by :func:`count_split`."""
    margin = column(pairs, "margin").null_count < len(pairs)
    procs = settings.processes() if len(pairs) >= PARALLEL_FROM else None
    return pairs.map(encode_batch, batched=True, batch_size=_MAP_BATCH, num_proc=procs,
                     fn_kwargs={"tokenizer": tokenizer, "max_length": settings.max_length,
                                "policy": settings.truncation, "margin": margin},
                     remove_columns=[c for c in pairs.column_names if c != "prompt_hash"],
                     features=_token_features(margin), cache_file_name=str(work / f"{name}-tokens.arrow"),
                     new_fingerprint=f"rewardkit-{name}-tokens", load_from_cache_file=False,
                     desc=f"tokenizing {name} pairs")


def write_kept(tokens: Any, report: DataReport, name: str, lengths: dict[str, list[Any]], path: Path) -> set[str]:
    """One pass over a tokenized split's Arrow files, a record batch at a time and read, not memory-mapped
    (this process's memory does not grow with the set): counts into ``report`` (kept, too long,
    truncated) and ``lengths``, the kept rows' training columns written to the Arrow file ``path``
    (not written when nothing is kept). Returns the kept rows' prompt hashes."""
    import numpy as np
    import pyarrow as pa

    keep = TRAINING_COLUMNS + (["margin"] if "margin" in tokens.column_names else [])
    hashes: set[str] = set()
    writer, sink = None, None
    try:
        for batch in _record_batches(tokens):
            fits = np.asarray(batch.column("fits"))
            report.drop("too_long", int((~fits).sum()))
            report.truncated += int(np.asarray(batch.column("cut"))[fits].sum())
            setattr(report, f"kept_{name}", getattr(report, f"kept_{name}") + int(fits.sum()))
            for n in _LENGTHS:  # a copy: a view would keep the whole record batch (its token ids) alive
                lengths[n].append(np.array(batch.column(n), dtype=np.int32))
            rows = batch.filter(pa.array(fits))
            hashes.update(rows.column("prompt_hash").to_pylist())
            kept = rows.select(keep).replace_schema_metadata(None)
            if kept.num_rows and writer is None:
                sink = pa.OSFile(str(path), "wb")
                writer = pa.ipc.new_stream(sink, kept.schema)
            if kept.num_rows:
                writer.write_batch(kept)
    finally:
        if writer is not None:
            writer.close()
            sink.close()
    return hashes


def _record_batches(dataset: Any) -> Iterator[Any]:
    """The record batches of a dataset's Arrow files, in row order (a fresh ``map`` output: no selection)."""
    import pyarrow as pa

    for f in dataset.cache_files:
        with pa.OSFile(f["filename"]) as source:
            yield from pa.ipc.open_stream(source)


def finish_lengths(report: DataReport, lengths: dict[str, list[Any]]) -> None:
    """Length statistics and the prompt's share of pair tokens, over every tokenized pair."""
    import numpy as np

    arrays = {n.split("_")[0]: np.concatenate(v) if v else np.zeros(0) for n, v in lengths.items()}
    if not any(len(a) for a in arrays.values()):
        return
    report.lengths = {name: length_stats(a) for name, a in arrays.items()}
    prompt_tokens = 2 * int(arrays["prompt"].sum())
    total = prompt_tokens + int(arrays["chosen"].sum()) + int(arrays["rejected"].sum())
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
    """What decides the prepared data (and its cache key), besides the sources and the tokenizer; the
    defaults are the recipe's (:class:`reward.recipe.DataArguments`), read from it, not restated."""

    max_length: int | None
    truncation: str
    seed: int
    eval_split_size: float
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    cache_dir: str | None = None
    num_proc: int | None = None
    """Tokenizing processes for a large set (TRL's ``dataset_num_proc``); None: :meth:`processes`."""

    @classmethod
    def from_recipe(cls, recipe: Any) -> DataSettings:
        """A recipe's data keys, with TRL's ``max_length``, ``seed`` and ``dataset_num_proc``."""
        d, t = recipe.data, recipe.training
        return cls(t.max_length, d.truncation, t.seed, d.eval_split_size, d.max_train_samples, d.max_eval_samples,
                   d.cache_dir, t.dataset_num_proc)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> DataSettings:
        """From a resolved recipe's flat mapping (``recipe.resolved.yaml``, where every key is written)."""
        return cls(values["max_length"], values["truncation"], values["seed"], values["eval_split_size"],
                   values.get("max_train_samples"), values.get("max_eval_samples"), values.get("cache_dir"),
                   values.get("dataset_num_proc"))

    def processes(self) -> int:
        """``num_proc``, or the cores this process may use, at most :data:`MAX_DEFAULT_PROCS`."""
        if self.num_proc:
            return self.num_proc
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return min(cores, MAX_DEFAULT_PROCS)

    def cache_key(self) -> dict[str, Any]:
        """The settings that change the prepared data (not where it is kept, nor how many processes make it)."""
        import dataclasses

        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("cache_dir", "num_proc")}


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
