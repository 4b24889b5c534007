"""Pairs → token ids in batched ``datasets.map`` processes; every drop counted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .collect import column
from .formatting import encode_pairs, fit_to_length
from .report import DataReport, length_stats
from .settings import PARALLEL_FROM, DataSettings

_MAP_BATCH = 512  # pairs per tokenizer call


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
