"""Formats that rank several responses to one prompt: each row becomes a :class:`Group` (the prompt, its
responses and the judged comparisons between them), expanded into the pairs the pipeline stores.

A prompt's pairs stay together through the pipeline (split, tokenization) under their prompt, so
``pairing: listwise`` training packs the prompt once with each distinct response and computes every
response once (``reward.packing.groups``); the pairwise path trains on the same pairs one by one.
Ties and "no preference" judgments are not comparisons: each is counted in the report by reason.

- ``ranked``: ``{"prompt", "responses": [...], "ranks" | "scores": [...]}`` (rank 0 best; higher score best).
- ``ranked-csv``: the original project's rows ``prompt, answer, rank``, gathered by prompt.
- ``qa-feedback``: FineGrainedRLHF's JSON (4 predictions a question, 6 pairwise judgments), with the
  authors' reward-model input ``question: … context: wikipage: <title> text: <passage> … answer:``.
- ``oasst``: OpenAssistant message trees; each set of ranked assistant replies becomes the
  conversation up to it plus its replies.
"""

from __future__ import annotations

import csv
import itertools
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.sources import DataSource
from ..errors import DataError
from .adapters import Pair, _col, _messages, _text
from .formatting import as_messages
from .report import DataReport

QA_FEEDBACK_PAIRS = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
"""The order of qa-feedback's ``preference`` list: 1vs2, 1vs3, 1vs4, 2vs3, 2vs4, 3vs4."""


@dataclass
class Group:
    """One prompt's responses and its judged comparisons ``(better, worse, margin)`` (indices into ``responses``)."""

    prompt: list[dict[str, str]]
    responses: list[str]
    comparisons: list[tuple[int, int, float | None]] = field(default_factory=list)

    def pairs(self) -> Iterator[Pair]:
        """The comparisons as pairs, in order."""
        for better, worse, margin in self.comparisons:
            yield {"prompt": self.prompt, "chosen": self.responses[better], "rejected": self.responses[worse],
                   "margin": margin}


def ranked_group(prompt: list[dict[str, str]], responses: Sequence[str], order: Sequence[float], source: DataSource,
                 report: DataReport, tie_reason: str, higher_is_better: bool = False) -> Group:
    """A group from one order value a response (ranks: lower is better; scores: ``higher_is_better``): every
    pair of responses (``pairing: adjacent``: neighbours in the order only); equal values are counted ties.
    With ``use_margin``, the gap between the two values is the pair's Bradley-Terry margin."""
    sign = -1.0 if higher_is_better else 1.0
    ranked = sorted(range(len(responses)), key=lambda i: (sign * order[i], i))
    candidates = zip(ranked, ranked[1:]) if source.pairing == "adjacent" else itertools.combinations(ranked, 2)
    group = Group(prompt, list(responses))
    for better, worse in candidates:
        if order[better] == order[worse]:
            report.drop(tie_reason)
            continue
        group.comparisons.append((better, worse, abs(order[better] - order[worse]) if source.use_margin else None))
    return group


def _numbers(row: dict, column: str, index: int, source: DataSource, n: int) -> list[float]:
    values = row.get(column)
    if not isinstance(values, list) or len(values) != n:
        raise DataError(f"{source.path}: row {index}, column '{column}': expected a list of {n} numbers (one a "
                        f"response), got {str(values)[:60]!r}.")
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise DataError(f"{source.path}: row {index}, column '{column}': every value must be a number.") from None


def adapt_ranked(rows: Iterable[dict], source: DataSource, report: DataReport) -> Iterator[Pair]:
    """``{"prompt", "responses": [...], "ranks" | "scores": [...]}``: ranks (0 best) or scores (higher best)."""
    pc, rc, kc, sc = (_col(source, n) for n in ("prompt", "responses", "ranks", "scores"))
    for i, row in enumerate(rows):
        responses = row.get(rc)
        if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
            raise DataError(f"{source.path}: row {i}, column '{rc}': expected a list of response texts. Map yours "
                            "with columns: {responses: ..., ranks: ...}.")
        by_rank = row.get(kc) is not None
        if not by_rank and row.get(sc) is None:
            raise DataError(f"{source.path}: row {i}: needs '{kc}' (0 = best) or '{sc}' (higher = better), one a "
                            "response.")
        order = _numbers(row, kc if by_rank else sc, i, source, len(responses))
        prompt = _messages(row.get(pc), pc, i, source) if row.get(pc) is not None else []
        kept = [j for j, r in enumerate(responses) if r.strip()]
        report.drop("empty_field", len(responses) - len(kept))
        if len(kept) < 2:
            report.drop("fewer_than_two_responses")
            continue
        group = ranked_group(prompt, [responses[j] for j in kept], [order[j] for j in kept], source, report,
                             "rank_tie" if by_rank else "score_tie", higher_is_better=not by_rank)
        yield from group.pairs()


def adapt_ranked_csv(rows: Iterable[dict], source: DataSource, report: DataReport) -> Iterator[Pair]:
    """Ranked answers (``prompt, answer, rank``; lower rank is better), gathered by prompt. ``pairs_out``
    writes the pairs as the original project's ``answers_pairs.csv`` (columns prompt, chosen, rejected)."""
    pc, ac, kc = _col(source, "prompt"), _col(source, "answer"), _col(source, "rank")
    gathered: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for i, row in enumerate(rows):
        if i == 0:
            missing = [c for c in (pc, ac, kc) if c not in row]
            if missing:
                raise DataError(f"{source.path}: ranked-csv needs the columns {pc!r}, {ac!r} and {kc!r}; missing "
                                f"{', '.join(map(repr, missing))} (columns: {', '.join(map(str, row))}). Rename them or "
                                "map yours with columns: {prompt: ..., answer: ..., rank: ...}.")
        p, a = _text(row, pc, i, source), _text(row, ac, i, source)
        rank = row.get(kc)
        if not p or not a or rank is None or rank == "":
            report.drop("empty_field")
            continue
        try:
            gathered[p].append((float(rank), a))
        except (TypeError, ValueError):
            raise DataError(f"{source.path}: row {i}, column '{kc}': rank must be a number, got {rank!r}.") from None
    out = []
    for prompt, answers in gathered.items():
        group = ranked_group(as_messages(prompt), [a for _, a in answers], [r for r, _ in answers], source, report,
                             "rank_tie")
        out.extend(group.pairs())
    if source.pairs_out:
        write_pairs_csv(out, source.pairs_out)
    yield from out


def write_pairs_csv(pairs: list[Pair], path: str | Path) -> None:
    """Write pairs as ``prompt,chosen,rejected`` (prompt = the last user turn), atomically."""
    from ..rundir import atomic_file

    with atomic_file(path, newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["prompt", "chosen", "rejected"])
        for p in pairs:
            writer.writerow([p["prompt"][-1]["content"] if p["prompt"] else "", p["chosen"], p["rejected"]])


def qa_feedback_prompt(row: dict[str, Any]) -> str:
    """The reward model's input before the answer, as FineGrainedRLHF builds it."""
    context = " ".join(f"wikipage: {p[0]} text: {' '.join(p[1:])}" for p in row["passages"])
    return f"question: {row['question']} context: {context} answer:"


def adapt_qa_feedback(rows: Iterable[dict], source: DataSource, report: DataReport) -> Iterator[Pair]:
    """qa-feedback: 4 predictions a question and 6 judgments (1: the first is better, 2: the second, 0: no
    preference, counted as ``no_preference``)."""
    for i, row in enumerate(rows):
        missing = [c for c in ("question", "passages", "preference") if c not in row]
        if missing:
            raise DataError(f"{source.path}: row {i}: no '{missing[0]}': not FineGrainedRLHF's qa-feedback format "
                            "(question, passages, prediction 1-4, preference).")
        answers = [_text(row, f"prediction {k}", i, source) or "" for k in range(1, 5)]
        prefs = row["preference"]
        if not isinstance(prefs, list) or len(prefs) != len(QA_FEEDBACK_PAIRS) or any(p not in (0, 1, 2) for p in prefs):
            raise DataError(f"{source.path}: row {i}, column 'preference': expected 6 judgments, each 0, 1 or 2.")
        group = Group(as_messages(qa_feedback_prompt(row)), answers)
        for (a, b), pref in zip(QA_FEEDBACK_PAIRS, prefs):
            if pref == 0:
                report.drop("no_preference")
            else:
                group.comparisons.append((a, b, None) if pref == 1 else (b, a, None))
        yield from group.pairs()


def _oasst_groups(message: dict[str, Any], path: list[dict[str, str]], source: DataSource,
                  report: DataReport) -> Iterator[Group]:
    """Depth first: the ranked assistant replies of every prompter message, with the conversation up to them."""
    role = "user" if message.get("role") == "prompter" else "assistant"
    here = path + [{"role": role, "content": message.get("text") or ""}]
    replies = [r for r in message.get("replies") or [] if isinstance(r, dict)]
    if role == "user":
        ranked = [r for r in replies if r.get("role") == "assistant" and isinstance(r.get("rank"), (int, float))
                  and (r.get("text") or "").strip()]
        report.drop("unranked_reply", sum(1 for r in replies if r.get("role") == "assistant") - len(ranked))
        if len(ranked) >= 2:
            yield ranked_group(here, [r["text"] for r in ranked], [float(r["rank"]) for r in ranked], source, report,
                               "rank_tie")
    for reply in replies:
        yield from _oasst_groups(reply, here, source, report)


def adapt_oasst(rows: Iterable[dict], source: DataSource, report: DataReport) -> Iterator[Pair]:
    """OpenAssistant trees (``{"message_tree_id", "prompt": message}``, replies nested, ``rank`` 0 = best)."""
    for i, row in enumerate(rows):
        root = row.get("prompt")
        if not isinstance(root, dict) or "replies" not in root:
            raise DataError(f"{source.path}: row {i}: expected an OpenAssistant tree with a 'prompt' message "
                            "and its 'replies'.")
        for group in _oasst_groups(root, [], source, report):
            yield from group.pairs()
