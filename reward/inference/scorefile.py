"""``rewardkit score``: JSON Lines in, the same rows with rewards out (``score``, or ``scores`` and a
``ranking`` for rows with several ``responses``; an ensemble adds ``std`` / ``stds``, the members'
standard deviation, its ``score`` being their mean), through :class:`reward.inference.RewardModel`'s public
methods. Every row is checked before the model loads; the output is written to a temporary name and
renamed into place, so a crash never leaves a partial file under the output name."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..rundir import atomic_file
from .batches import Batching, Prompt, progress_bar
from .ensemble import RewardStats, summarize
from .model import RewardModel


def _scoring_items(row: Any, line_no: int, input_path: str) -> list[tuple[Prompt, str]]:
    """The (prompt, response) items of one input row, or a DataError naming the line."""

    if not isinstance(row, dict):
        raise DataError(f"{input_path}:{line_no}: expected a JSON object, got {type(row).__name__}.")
    prompt = row.get("prompt", "")
    if prompt is None:
        prompt = ""
    if not isinstance(prompt, (str, list)):
        raise DataError(f"{input_path}:{line_no}: 'prompt' must be text or a list of chat messages.")
    if isinstance(prompt, list):
        for j, m in enumerate(prompt):
            if not (isinstance(m, dict) and isinstance(m.get("content"), str)
                    and m.get("role") in ("system", "user", "assistant")):
                raise DataError(f"{input_path}:{line_no}: prompt[{j}]: a chat message needs 'role' (system, user or "
                                "assistant) and text 'content'.")
    if isinstance(row.get("responses"), list):
        if not row["responses"]:
            raise DataError(f"{input_path}:{line_no}: 'responses' is empty.")
        for j, r in enumerate(row["responses"]):
            if not isinstance(r, str):
                raise DataError(f"{input_path}:{line_no}: responses[{j}]: expected text.")
        return [(prompt, r) for r in row["responses"]]
    if isinstance(row.get("response"), str):
        return [(prompt, row["response"])]
    raise DataError(f"{input_path}:{line_no}: neither a text 'response' nor a 'responses' list.")


def check_output_file(path: str) -> None:
    """An output file name that can be written, checked before any model loads."""

    out = Path(path)
    if out.is_dir():
        raise DataError(f"--out {path} is a directory; give a file name (e.g. {out / 'scored.jsonl'}).")
    parent = next((p for p in [out.parent, *out.parent.parents] if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise DataError(f"--out {path}: {parent} is a file, not a folder.")


def read_scoring_rows(input_path: str) -> list[tuple[int, dict[str, Any]]]:
    """Every row, checked before any scoring: a bad line fails in seconds, not after hours of work."""
    from ..data.sources import iter_jsonl

    if not Path(input_path).is_file():
        raise DataError(f"{input_path}: no such input file.")
    rows = []
    for line_no, row in iter_jsonl(input_path):
        _scoring_items(row, line_no, input_path)
        rows.append((line_no, row))
    return rows


def score_jsonl(rm: RewardModel, input_path: str, output_path: str, batching: Batching | None = None,
                normalize: bool = False, top_k: int | None = None, rows: list[tuple[int, dict[str, Any]]] | None = None,
                chunk_rows: int = 2048) -> int:
    """Add ``score`` to rows with ``prompt``+``response``, or ``scores`` and ``ranking`` (indices, best
    first) to rows with ``prompt``+``responses``; ``top_k`` keeps only the best k responses of each
    row (best-of-n filtering), in rank order. Rows are scored ``chunk_rows`` at a time and streamed
    to a temporary file that is renamed into place once complete: memory stays bounded and a crash
    never leaves a partial file under the output name. ``rows``: :func:`read_scoring_rows` output,
    when the caller checked the file before loading the model. A row's prompt is computed once for
    all its responses when ``batching`` packs (:meth:`RewardModel.score_sequence_groups`)."""
    batching = batching or Batching()
    if top_k is not None and top_k < 1:
        raise DataError(f"top_k must be at least 1 (got {top_k}).")
    rows = read_scoring_rows(input_path) if rows is None else rows
    norm = rm.normalizer(normalize)
    out = Path(output_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with progress_bar(batching.progress, len(rows), "scoring", "row") as bar, atomic_file(out) as fh:
        for start in range(0, len(rows), chunk_rows):
            chunk = rows[start:start + chunk_rows]
            items = [_scoring_items(row, n, input_path) for n, row in chunk]
            # one group per row: a row's n responses share its prompt
            groups = rm.encode([its[0][0] for its in items], [[r for _, r in its] for its in items]).groups
            scores = rm.score_sequence_groups(groups, batch_size=batching.batch_size, pack_tokens=batching.pack_tokens,
                                              members=True)
            for (_, row), got in zip(chunk, scores):
                _add_scores(row, [summarize(v, norm) for v in got], top_k, rm.members > 1)
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            bar.update(len(chunk))
    return len(rows)


def _add_scores(row: dict[str, Any], stats: list[RewardStats], top_k: int | None, with_std: bool) -> None:
    """``score`` for a one-response row; ``scores`` and ``ranking`` (best first) for a ``responses`` row,
    cut to its ``top_k`` best in rank order when asked; ``std`` / ``stds`` too ``with_std`` (an ensemble)."""
    got = [s.mean for s in stats]
    if not ("responses" in row and isinstance(row["responses"], list)):
        row["score"] = got[0]
        if with_std:
            row["std"] = stats[0].std
        return
    ranking = sorted(range(len(got)), key=lambda k: got[k], reverse=True)
    keep = ranking if top_k is None else ranking[:top_k]
    if top_k is not None:
        row["responses"] = [row["responses"][k] for k in keep]
    row["scores"] = got if top_k is None else [got[k] for k in keep]
    if with_std:
        row["stds"] = [s.std for s in stats] if top_k is None else [stats[k].std for k in keep]
    row["ranking"] = ranking if top_k is None else list(range(len(keep)))


def iter_prompts(path: str) -> Iterable[str]:
    """Prompts from a text file (one a line) or jsonl (``prompt`` field)."""
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        if path.endswith((".jsonl", ".json")):
            yield json.loads(line)["prompt"]
        else:
            yield line.strip()
