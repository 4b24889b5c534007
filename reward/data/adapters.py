"""Adapters from the pair formats users bring to one pair: ``{prompt: [messages], chosen, rejected, margin}``
(the formats that rank several responses to a prompt are in ``reward.data.groups``).

Each adapter is a generator over rows, so a source of any size streams through it (``helpsteer2``,
which pairs a prompt's rows, gathers them first).

Every adapter counts what it cannot use in the :class:`DataReport` (``dropped`` by reason) and
raises :class:`DataError` naming the row and column for values of the wrong type, so nothing is
lost without a number next to it.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from ..config.sources import DataSource
from ..errors import DataError
from .formatting import as_messages
from .report import DataReport

Pair = dict[str, Any]
HH_ASSISTANT = "\n\nAssistant:"
HH_HUMAN = "\n\nHuman:"
HELPSTEER_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")


def _col(source: DataSource, name: str) -> str:
    return (source.columns or {}).get(name, name)


def _text(row: dict, column: str, index: int, source: DataSource) -> str | None:
    """A text field: ``None``/missing → None (counted by the caller), non-string → DataError."""
    value = row.get(column)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DataError(
            f"{source.path}: row {index}, column '{column}': expected text, got {type(value).__name__} "
            f"({str(value)[:60]!r}). Fix the row or map another column with 'columns'."
        )
    return value


def _messages(value: Any, column: str, index: int, source: DataSource) -> list[dict[str, str]] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return as_messages(value)
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        for m in value:
            if not isinstance(m["content"], str):
                raise DataError(f"{source.path}: row {index}, column '{column}': message content must be text.")
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise DataError(
        f"{source.path}: row {index}, column '{column}': expected text or a list of {{role, content}} messages, "
        f"got {type(value).__name__}."
    )


def _split_conversation(msgs: list[dict[str, str]]) -> tuple[list[dict[str, str]], str] | None:
    """A conversation ending with the assistant's reply → (prompt messages, reply)."""
    if not msgs or msgs[-1]["role"] != "assistant":
        return None
    return msgs[:-1], msgs[-1]["content"]


def _margin(row: dict, source: DataSource, index: int) -> float | None:
    column = _col(source, "margin")
    if column not in row or row[column] is None:
        return None
    try:
        return float(row[column])
    except (TypeError, ValueError):
        raise DataError(f"{source.path}: row {index}, column '{column}': margin must be a number.") from None


def adapt_pairs(rows: Iterable[dict], source: DataSource, report: DataReport) -> Iterator[Pair]:
    """Columns ``prompt``/``chosen``/``rejected`` (text or messages; prompt optional) and ``margin``."""
    pc, cc, rc = _col(source, "prompt"), _col(source, "chosen"), _col(source, "rejected")
    for i, row in enumerate(rows):
        if i == 0:
            missing = [c for c in (cc, rc) if c not in row]
            if missing:
                raise DataError(
                    f"{source.path}: no column {missing[0]!r} (columns: {', '.join(row)}). "
                    "Map yours with columns: {chosen: ..., rejected: ...} or pick a named format."
                )
        chosen, rejected = row.get(cc), row.get(rc)
        if isinstance(chosen, list) or isinstance(rejected, list):
            pair = _conversational_pair(row, source, i, report)
            if pair is not None:
                yield pair
            continue
        c, r = _text(row, cc, i, source), _text(row, rc, i, source)
        prompt = _messages(row.get(pc), pc, i, source) if pc in row else []
        if c is None or r is None or prompt is None:
            report.drop("empty_field")
            continue
        yield {"prompt": prompt, "chosen": c, "rejected": r, "margin": _margin(row, source, i)}


def _conversational_pair(row: dict, source: DataSource, i: int, report: DataReport) -> Pair | None:
    cc, rc, pc = _col(source, "chosen"), _col(source, "rejected"), _col(source, "prompt")
    chosen = _messages(row.get(cc), cc, i, source)
    rejected = _messages(row.get(rc), rc, i, source)
    if chosen is None or rejected is None:
        report.drop("empty_field")
        return None
    split_c, split_r = _split_conversation(chosen), _split_conversation(rejected)
    if split_c is None or split_r is None:
        report.drop("no_assistant_reply")
        return None
    (prompt_c, reply_c), (prompt_r, reply_r) = split_c, split_r
    explicit = _messages(row.get(pc), pc, i, source) if row.get(pc) is not None else None
    if explicit is not None:  # TRL's explicit-prompt conversational format: chosen holds only the reply
        prompt_c = explicit + prompt_c
        prompt_r = explicit + prompt_r
    if prompt_c != prompt_r:
        report.drop("prompt_mismatch")
        return None
    return {"prompt": prompt_c, "chosen": reply_c, "rejected": reply_r, "margin": _margin(row, source, i)}


def adapt_conversational(rows: Iterable[dict], source: DataSource, report: DataReport) -> Iterator[Pair]:
    """UltraFeedback-style: ``chosen``/``rejected`` are message lists ending in the assistant reply."""
    for i, row in enumerate(rows):
        pair = _conversational_pair(row, source, i, report)
        if pair is not None:
            yield pair


def parse_hh_transcript(text: str) -> list[dict[str, str]]:
    """``\\n\\nHuman: …\\n\\nAssistant: …`` → messages (the text before the first turn is dropped)."""
    msgs: list[dict[str, str]] = []
    pos = 0
    markers = ((HH_HUMAN, "user"), (HH_ASSISTANT, "assistant"))
    while True:
        nxt = [(text.find(m, pos), m, role) for m, role in markers]
        nxt = [x for x in nxt if x[0] >= 0]
        if not nxt:
            break
        start, marker, role = min(nxt)
        if msgs:
            msgs[-1]["content"] = text[pos:start].strip()
        msgs.append({"role": role, "content": ""})
        pos = start + len(marker)
    if msgs:
        msgs[-1]["content"] = text[pos:].strip()
    return msgs


def adapt_hh_rlhf(rows: Iterable[dict], source: DataSource, report: DataReport) -> Iterator[Pair]:
    """HH-RLHF transcripts: the shared prompt ends at the last Assistant turn both sides share.

    Rows whose ``chosen``/``rejected`` prefixes differ (a reply that itself contains
    ``\\n\\nAssistant:``) are split at the last Assistant marker inside their common prefix, kept,
    and counted under ``repaired``.
    """
    cc, rc = _col(source, "chosen"), _col(source, "rejected")
    for i, row in enumerate(rows):
        c, r = _text(row, cc, i, source), _text(row, rc, i, source)
        if not c or not r:
            report.drop("empty_field")
            continue
        cut_c, cut_r = c.rfind(HH_ASSISTANT), r.rfind(HH_ASSISTANT)
        if cut_c < 0 or cut_r < 0:
            report.drop("no_assistant_turn")
            continue
        if c[:cut_c] != r[:cut_r]:
            common = len(_common_prefix(c, r))
            cut = c.rfind(HH_ASSISTANT, 0, common - len(HH_ASSISTANT) + 1)
            if cut < 0:
                report.drop("prompt_mismatch")
                continue
            cut_c = cut_r = cut
            report.repaired["hh_prefix_mismatch"] += 1
        prompt = parse_hh_transcript(c[:cut_c])
        end = cut_c + len(HH_ASSISTANT)
        yield {"prompt": prompt, "chosen": c[end:].strip(), "rejected": r[end:].strip(), "margin": None}


def _common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return a[:n]


def adapt_helpsteer2_binarized(rows: Iterable[dict], source: DataSource, report: DataReport) -> Iterator[Pair]:
    """HelpSteer2 binarized; some releases repeat the prompt at the start of chosen/rejected: strip it."""
    for pair in adapt_pairs(rows, source, report):
        last = pair["prompt"][-1]["content"] if pair["prompt"] else ""
        for side in ("chosen", "rejected"):
            if last and pair[side].startswith(last) and len(pair[side]) > len(last):
                pair[side] = pair[side][len(last):].lstrip()
                report.repaired["prompt_repeated_in_response"] += 1
        yield pair


def _helpsteer_score(row: dict, weights: dict[str, float], source: DataSource, index: int) -> float:
    total = 0.0
    for attr, w in weights.items():
        column = _col(source, attr)
        value = row.get(column)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DataError(f"{source.path}: row {index}, column '{column}': expected a number, got {value!r}.")
        total += w * float(value)
    return total


def adapt_helpsteer2(rows: Iterable[dict], source: DataSource, report: DataReport) -> Iterator[Pair]:
    """HelpSteer2 raw: one response per row with attribute scores → all score-ordered pairs per prompt.

    Ordered by ``score_weights`` (default helpfulness); ties are skipped and counted; with
    ``use_margin`` the score gap becomes the Bradley-Terry margin.
    """
    weights = source.score_weights or {"helpfulness": 1.0}
    unknown = [a for a in weights if a not in HELPSTEER_ATTRIBUTES and a not in (source.columns or {})]
    if unknown:
        raise DataError(f"{source.path}: score_weights names '{unknown[0]}', not one of {HELPSTEER_ATTRIBUTES}.")
    pc, rc = _col(source, "prompt"), _col(source, "response")
    groups: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for i, row in enumerate(rows):
        p, r = _text(row, pc, i, source), _text(row, rc, i, source)
        if not p or not r:
            report.drop("empty_field")  # one row is one response; count it as one candidate
            continue
        groups[p].append((_helpsteer_score(row, weights, source, i), r))
    for prompt, scored in groups.items():
        for (s1, r1), (s2, r2) in itertools.combinations(scored, 2):
            if s1 == s2:
                report.drop("score_tie")
                continue
            (hi, chosen), (lo, rejected) = ((s1, r1), (s2, r2)) if s1 > s2 else ((s2, r2), (s1, r1))
            yield {"prompt": as_messages(prompt), "chosen": chosen, "rejected": rejected,
                   "margin": (hi - lo) if source.use_margin else None}
