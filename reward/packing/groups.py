"""Listwise packing: a micro-batch of whole prompt groups, each prompt computed once with each of its
distinct responses once, however many comparisons the responses take part in.

The data keeps a group as its pairs (``reward.data.groups``); this module regroups them by prompt
tokens. A pair ``(prompt, chosen, rejected)`` of a prompt with K distinct responses and C comparisons
costs ``prompt + 2·response`` tokens on the pairwise packed path, C times; here the group costs
``prompt + Σ responses`` once. Written here because no trainer we know of (TRL, OpenRLHF, NeMo-RL)
trains a group of K responses as one element; InstructGPT did.

- :func:`group_layout`: which pairs form each group, and the tokens each group packs to (read from
  Arrow, for the sampler); :func:`split_group` cuts a prompt's pairs into sub-groups
  (``listwise_max_comparisons``): the sampler batches them apart, so an epoch visits the prompt once a
  sub-group. Two sub-groups of a prompt that share a micro-batch are one group there (the collator
  groups by prompt tokens): computed once, averaged together.
- :class:`GroupBatchSampler`: micro-batches of whole groups by a token budget (or a group count);
  :func:`ordered_group_batches`: the same for evaluation, in the set's order.
- :class:`ListwiseCollator`: pairs → packed rows (a group over the budget is split into parts that each
  repeat the prompt, as scoring splits one) and, per pair, where its two rewards land.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .batching import TokenBudgetBatchSampler
from .bootstrap import bootstrap_weights
from .layout import pack_groups, pack_prefixed


def _digest(values: Any) -> bytes:
    return hashlib.blake2b(values.tobytes(), digest_size=16).digest()


def group_layout(dataset: Any, max_comparisons: int | None = None) -> tuple[list[list[int]], list[int]]:
    """(pair indices of each group, packed tokens of each group) of a prepared pair set. A group is the
    pairs with the same prompt tokens (a prompt cut differently for two of its pairs makes two groups);
    its tokens are the prompt once plus each distinct response once. With ``max_comparisons``, a prompt
    with more pairs is split into sub-groups of at most that many (:func:`split_group`). Read from the
    Arrow columns a record batch at a time (token digests, not token lists, are kept)."""
    import numpy as np

    groups: dict[bytes, tuple[int, list[tuple[int, tuple[bytes, int], tuple[bytes, int]]]]] = {}
    index = 0
    for batch in dataset.with_format("arrow").iter(batch_size=8192):
        prompt_len = np.asarray(batch["prompt_len"])
        sides = []
        for name in ("chosen_ids", "rejected_ids"):
            column = batch[name].combine_chunks() if hasattr(batch[name], "combine_chunks") else batch[name]
            sides.append((np.asarray(column.offsets), np.asarray(column.values)))
        for row in range(len(prompt_len)):
            c_off, c_val = sides[0]
            start, p = c_off[row], int(prompt_len[row])
            responses = [val[off[row] + p:off[row + 1]] for off, val in sides]
            pair = (index, *((_digest(r), len(r)) for r in responses))
            groups.setdefault(_digest(c_val[start:start + p]), (p, []))[1].append(pair)
            index += 1
    out: tuple[list[list[int]], list[int]] = ([], [])
    for p, pairs in groups.values():
        for part in split_group([(c, r) for _, c, r in pairs], max_comparisons):
            out[0].append([pairs[i][0] for i in part])
            out[1].append(p + sum(dict(x for i in part for x in pairs[i][1:]).values()))
    return out


def split_group(pairs: Sequence[tuple[Hashable, Hashable]], max_comparisons: int | None) -> list[list[int]]:
    """A prompt's pairs (each as its two responses) cut into ⌈n / max_comparisons⌉ sub-groups of near-equal
    size (all in one without a limit), each filled with the pairs that add the fewest responses not yet
    in it (ties: the earlier pair), so that a sub-group computes as few responses as it can; positions
    into ``pairs``. Deterministic: the same set always splits the same way."""
    n = len(pairs)
    if not max_comparisons or n <= max_comparisons:
        return [list(range(n))]
    parts = -(-n // max_comparisons)
    left = list(range(n))
    out = []
    for k in range(parts):
        size = n // parts + (k < n % parts)
        part = [left.pop(0)]
        seen = set(pairs[part[0]])
        while len(part) < size:
            best = min(left, key=lambda i: (len(set(pairs[i]) - seen), i))
            left.remove(best)
            part.append(best)
            seen.update(pairs[best])
        out.append(part)
    return out


def group_contiguous(dataset: Any) -> Any:
    """The set with each group's pairs next to each other (groups in order of first appearance; within a
    group, the set's order): the set itself where that holds already."""
    groups, _ = group_layout(dataset)
    order = [i for pairs in groups for i in pairs]
    return dataset if order == list(range(len(order))) else dataset.select(order)


def ordered_group_batches(groups: Sequence[Sequence[int]], group_tokens: Sequence[int],
                          max_tokens: int | None) -> list[list[int]]:
    """Evaluation batches: consecutive whole groups, in their order, up to ``max_tokens`` packed tokens a
    batch (a group over it alone; one group a batch without a budget). Unlike :class:`GroupBatchSampler`
    nothing is sorted or shuffled, so a set whose groups are contiguous comes back in its own order."""
    batches: list[list[int]] = []
    used = 0
    for pairs, tokens in zip(groups, group_tokens):
        if not batches or not max_tokens or used + tokens > max_tokens:
            batches.append([])
            used = 0
        batches[-1].extend(pairs)
        used += tokens
    return batches


class GroupBatchSampler(TokenBudgetBatchSampler):
    """Micro-batches of whole groups: groups of similar packed length up to ``max_tokens`` (a group over
    it alone), or ``groups_per_batch`` groups when there is no budget; yields the groups' pair indices.
    The batches are cut once (a fixed step count) and visited in a new seeded order each epoch."""

    def __init__(self, groups: Sequence[Sequence[int]], group_tokens: Sequence[int], max_tokens: int | None,
                 groups_per_batch: int = 1, seed: int = 0, shuffle: bool = True):
        self.groups = [list(g) for g in groups]
        if max_tokens:
            super().__init__(group_tokens, max_tokens, seed=seed, shuffle=shuffle)
        else:  # every group costs 1: batches of groups_per_batch groups
            super().__init__([1] * len(self.groups), groups_per_batch, seed=seed, shuffle=shuffle)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in super().__iter__():
            yield [i for g in batch for i in self.groups[g]]


@dataclass
class ListwiseCollator:
    """Pairs (``chosen_ids``/``rejected_ids``/``prompt_len``) → ``rows``: packed rows of prompt groups, the
    prompt once and each distinct response once (at most ``max_tokens`` a row; a larger group is split
    into parts that repeat the prompt); ``chosen_pos``/``rejected_pos``: each pair's rewards in the
    rewards of all rows read in order; ``pair_group``: each pair's group (0 … ``n_groups`` − 1);
    ``n_responses``: the rewards all rows hold;
    with ``total_orders``, ``pl_order``: for groups whose comparisons rank all their responses totally, the responses best
    first (a [groups, K] table of reward positions, −1 padded; ``pl_group`` names each row's group)."""

    pad_token_id: int
    max_tokens: int | None = None
    total_orders: bool = False
    """Also find the totally ordered groups (``pl_order``/``pl_group``): only Plackett-Luce reads them."""
    members: int = 1
    """Ensemble members: above 1, ``bootstrap`` holds each pair's weight for each (:mod:`.bootstrap`)."""
    seed: int = 0

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        keys: dict[tuple[int, ...], int] = {}
        groups: list[tuple[list[int], list[list[int]], dict[tuple[int, ...], int]]] = []
        pair_slots, pair_group = [], []
        for ex in examples:
            p = int(ex["prompt_len"])
            prompt = tuple(ex["chosen_ids"][:p])
            if tuple(ex["rejected_ids"][:p]) != prompt:
                raise ValueError("packing needs chosen_ids and rejected_ids to start with the same prompt_len tokens")
            g = keys.setdefault(prompt, len(keys))
            if g == len(groups):
                groups.append((list(prompt), [], {}))
            slots = []
            for side in ("chosen_ids", "rejected_ids"):
                response = tuple(ex[side][p:])
                seen = groups[g][2]
                if response not in seen:
                    seen[response] = len(groups[g][1])
                    groups[g][1].append(list(response))
                slots.append(seen[response])
            pair_slots.append(slots)
            pair_group.append(g)
        rows, where = self._rows(groups)
        chosen = [where[(g, s[0])] for g, s in zip(pair_group, pair_slots)]
        rejected = [where[(g, s[1])] for g, s in zip(pair_group, pair_slots)]
        # a per-pair tensor first: accelerate and the Trainer read a batch's size from its first tensor
        batch: dict[str, Any] = {
            "chosen_len": _lengths(examples, "chosen_ids"),
            "rejected_len": _lengths(examples, "rejected_ids"),
            "chosen_pos": torch.tensor(chosen, dtype=torch.long),
            "rejected_pos": torch.tensor(rejected, dtype=torch.long),
            "pair_group": torch.tensor(pair_group, dtype=torch.long),
            "n_groups": len(groups),
            "n_responses": len(where),
            "rows": rows,
        }
        if "margin" in examples[0]:
            batch["margin"] = torch.tensor([float(ex["margin"]) for ex in examples], dtype=torch.float)
        if self.members > 1:
            batch["bootstrap"] = bootstrap_weights(examples, self.members, self.seed)
        if self.total_orders:
            batch.update(_total_orders(pair_group, pair_slots, [len(g[1]) for g in groups], where))
        return batch

    def _rows(self, groups: list[tuple[list[int], list[list[int]], Any]]) -> tuple[list[dict[str, Any]], dict]:
        """Packed rows and, for each (group, response), its position in the rows' rewards read in order."""
        rows, where = [], {}
        for row in pack_prefixed([(prompt, responses) for prompt, responses, _ in groups], self.max_tokens):
            for part in row:
                for j in range(len(part.suffixes)):
                    where[(part.group, part.first + j)] = len(where)
            rows.append(pack_groups([(part.prefix, part.suffixes) for part in row], self.pad_token_id))
        return rows, where


def _lengths(examples: list[dict[str, Any]], side: str) -> torch.Tensor:
    """Each pair's response length in tokens (what length debiasing correlates rewards with)."""
    return torch.tensor([len(ex[side]) - int(ex["prompt_len"]) for ex in examples], dtype=torch.float)


def _total_orders(pair_group: list[int], pair_slots: list[list[int]], sizes: list[int],
                  where: dict[tuple[int, int], int]) -> dict[str, torch.Tensor]:
    """The groups whose comparisons order every two of their responses, consistently: each one's reward
    positions best first (what Plackett-Luce reads)."""
    compared: dict[int, set[tuple[int, int]]] = {}
    for g, (better, worse) in zip(pair_group, pair_slots):
        compared.setdefault(g, set()).add((better, worse))
    orders, names = [], []
    for g, edges in sorted(compared.items()):
        k = sizes[g]
        wins = [0] * k
        for better, _ in edges:
            wins[better] += 1
        if len(edges) != k * (k - 1) // 2 or sorted(wins) != list(range(k)):
            continue  # not every two compared, or not one consistent order (a cycle or a pair judged both ways)
        ranked = sorted(range(k), key=lambda j: -wins[j])
        orders.append([where[(g, j)] for j in ranked])
        names.append(g)
    width = max((len(o) for o in orders), default=0)
    table = torch.full((len(orders), width), -1, dtype=torch.long)
    for n, order in enumerate(orders):
        table[n, :len(order)] = torch.tensor(order)
    return {"pl_order": table, "pl_group": torch.tensor(names, dtype=torch.long)}
