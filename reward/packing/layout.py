"""The packed row: groups of (shared prefix, suffixes) laid out without padding, with the layout every
attention mode reads (segments, positions, the varlen gather), built on the host so the forward needs
no device→host sync; and rows of groups for inference (``pack_rows``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from .bootstrap import bootstrap_weights

PROMPT = 0  # segment id of a group's shared prefix; suffix j (chosen, rejected, …) is segment j + 1


def pack_groups(groups: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]], pad_token_id: int) -> dict[str, Any]:
    """Groups of (shared prefix, [suffix₁, suffix₂, …]) → one packed row ``[prefix₁ s₁ s₂ … prefix₂ …]``.

    Suffix j of a group is segment j + 1 and reuses the positions after the prefix, so under the mask
    rule each suffix sees only its group's prefix and itself. ``reward_index`` holds, group by group and
    suffix by suffix, the packed index where the padded model reads the reward of ``prefix + suffix``.

    The varlen layout (``kv_index``, ``cu_seq_q``, ``cu_seq_k``, ``max_q``, ``max_k``; see the module
    docstring) is built here on the host too, so the forward needs no device→host sync.
    """
    ids: list[int] = []
    pos: list[int] = []
    group: list[int] = []
    kind: list[int] = []
    reward_index: list[int] = []
    kv_index: list[int] = []
    cu_q, cu_k = [0], [0]
    for n, (prefix, suffixes) in enumerate(groups):
        p = len(prefix)
        start = len(ids)
        ids += prefix
        pos += range(p)
        group += [n] * p
        kind += [PROMPT] * p
        for j, suffix in enumerate(suffixes):
            seg_start = len(ids)
            ids += suffix
            pos += range(p, p + len(suffix))
            group += [n] * len(suffix)
            kind += [j + 1] * len(suffix)
            reward_index.append(_reward_position(list(prefix) + list(suffix), pad_token_id, start, seg_start, p))
            # segment j: the first one's queries include the prefix; later ones see it as keys only
            q_from = start if j == 0 else seg_start
            kv_index += range(start, start + p)
            kv_index += range(seg_start, len(ids))
            cu_q.append(cu_q[-1] + len(ids) - q_from)
            cu_k.append(cu_k[-1] + p + len(ids) - seg_start)
        if not suffixes:  # a bare prefix is a causal segment of its own
            kv_index += range(start, len(ids))
            cu_q.append(cu_q[-1] + p)
            cu_k.append(cu_k[-1] + p)
    seg_q = [b - a for a, b in zip(cu_q, cu_q[1:])]
    seg_k = [b - a for a, b in zip(cu_k, cu_k[1:])]
    return {
        "input_ids": torch.tensor([ids], dtype=torch.long),
        "position_ids": torch.tensor([pos], dtype=torch.long),
        "group_ids": torch.tensor([group], dtype=torch.long),
        "segment_ids": torch.tensor([kind], dtype=torch.long),
        "reward_index": torch.tensor(reward_index, dtype=torch.long),
        "kv_index": torch.tensor(kv_index, dtype=torch.long),
        "cu_seq_q": torch.tensor(cu_q, dtype=torch.int32),
        "cu_seq_k": torch.tensor(cu_k, dtype=torch.int32),
        "max_q": max(seg_q, default=0),
        "max_k": max(seg_k, default=0),
    }


@dataclass
class PackedPreferenceCollator:
    """Examples with ``chosen_ids``/``rejected_ids``/``prompt_len`` → one packed row (chosen: segment 1, rejected: 2);
    with ``members`` > 1, ``bootstrap``: each pair's weight for each ensemble member (:mod:`.bootstrap`)."""

    pad_token_id: int
    members: int = 1
    seed: int = 0

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        groups = []
        for ex in examples:
            p = int(ex["prompt_len"])
            prompt = list(ex["chosen_ids"][:p])
            if list(ex["rejected_ids"][:p]) != prompt:
                raise ValueError("packing needs chosen_ids and rejected_ids to start with the same prompt_len tokens")
            groups.append((prompt, [list(ex["chosen_ids"][p:]), list(ex["rejected_ids"][p:])]))
        batch = pack_groups(groups, self.pad_token_id)
        index = batch.pop("reward_index")
        batch["chosen_index"], batch["rejected_index"] = index[0::2].clone(), index[1::2].clone()
        # response token counts: what length debiasing correlates rewards with
        batch["chosen_len"] = torch.tensor([len(s[0]) for _, s in groups], dtype=torch.float)
        batch["rejected_len"] = torch.tensor([len(s[1]) for _, s in groups], dtype=torch.float)
        if "margin" in examples[0]:
            batch["margin"] = torch.tensor([float(ex["margin"]) for ex in examples], dtype=torch.float)
        if self.members > 1:
            batch["bootstrap"] = bootstrap_weights(examples, self.members, self.seed)
        return batch


def _reward_position(seq: list[int], pad_id: int, prompt_start: int, seg_start: int, prompt_len: int) -> int:
    """Packed index of the rightmost non-pad token of ``seq`` (what the padded head reads)."""
    last = max((i for i, t in enumerate(seq) if t != pad_id), default=0)
    return prompt_start + last if last < prompt_len else seg_start + (last - prompt_len)



def common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all ``seqs`` share (the prompt, plus any common start of the answers)."""
    n = 0
    for column in zip(*seqs):
        if any(t != column[0] for t in column):
            break
        n += 1
    return n


class PackedPart(NamedTuple):
    """A group's share of a packed row: its sequences ``first``, ``first + 1``, … as prefix + suffix."""

    group: int
    """Index of the group (a pair, a prompt's n answers) in the caller's list."""
    first: int
    """Index, inside its group, of the first sequence this part holds."""
    prefix: list[int]
    """The tokens all the group's sequences start with, computed once."""
    suffixes: list[list[int]]


def pack_rows(groups: Sequence[Sequence[Sequence[int]]], budget: int) -> list[list[PackedPart]]:
    """Greedy next-fit of groups, longest first, into rows of at most ``budget`` tokens; a group whose
    prefix + suffixes exceed the budget is split into parts that each repeat the prefix."""
    split = []
    for seqs in groups:
        p = common_prefix(seqs) if len(seqs) > 1 else 0
        split.append((list(seqs[0][:p]), [list(s[p:]) for s in seqs]))
    return pack_prefixed(split, budget)


def pack_prefixed(groups: Sequence[tuple[list[int], list[list[int]]]], budget: int | None) -> list[list[PackedPart]]:
    """:func:`pack_rows` for groups already split into (prefix, suffixes); ``budget`` None: one row."""
    parts = []
    for g, (prefix, suffixes) in enumerate(groups):
        first, held, cost = 0, [], len(prefix)
        for j, suffix in enumerate(suffixes):
            if held and budget is not None and cost + len(suffix) > budget:
                parts.append((cost, PackedPart(g, first, prefix, held)))
                first, held, cost = j, [], len(prefix)
            held.append(suffix)
            cost += len(suffix)
        parts.append((cost, PackedPart(g, first, prefix, held)))
    rows: list[list[PackedPart]] = []
    used = None  # the first part opens a row
    for cost, part in sorted(parts, key=lambda x: x[0], reverse=True):
        if used is None or (budget is not None and used + cost > budget):
            rows.append([])
            used = 0
        rows[-1].append(part)
        used += cost
    return rows
