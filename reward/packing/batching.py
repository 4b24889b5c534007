"""Token-budget micro-batches of pairs, with the pair lengths read from Arrow."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any


class TokenBudgetBatchSampler:
    """Micro-batches of pairs whose packed tokens (prompt once + both responses) stay within
    ``max_tokens``, filled with pairs of similar length.

    Pairs are sorted by packed length and cut greedily into batches once, so the number of batches
    (and with it the Trainer's step count and LR schedule) is fixed; each epoch visits the batches in
    a new seeded order. A pair longer than the budget forms a batch of its own, never dropped.
    Written here because neither TRL nor transformers batches by tokens (TRL's ``padding_free`` still
    takes a fixed pair count)."""

    def __init__(self, lengths: Sequence[int], max_tokens: int, seed: int = 0, shuffle: bool = True):
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be > 0, got {max_tokens}")
        order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
        self.batches: list[list[int]] = []
        current: list[int] = []
        used = 0
        for i in order:
            if current and used + lengths[i] > max_tokens:
                self.batches.append(current)
                current, used = [], 0
            current.append(i)
            used += lengths[i]
        if current:
            self.batches.append(current)
        self.seed, self.shuffle, self.epoch = seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        order = list(range(len(self.batches)))
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        for n in order:
            yield list(self.batches[n])


def packed_pair_lengths(dataset: Any) -> list[int]:
    """Tokens each pair takes in a packed row: the prompt once plus both responses. Read as Arrow list
    lengths a batch at a time, so a memory-mapped set of any size is never materialised."""
    import pyarrow.compute as pc

    out: list[int] = []
    for batch in dataset.with_format("arrow").iter(batch_size=65536):
        n = pc.add(pc.list_value_length(batch["chosen_ids"]), pc.list_value_length(batch["rejected_ids"]))
        out.extend(pc.subtract(n, batch["prompt_len"].cast("int32")).to_pylist())
    return out


def longest_row(dataset: Any) -> int:
    """The longest ``chosen_ids``/``rejected_ids`` row of a tokenized set, from Arrow list lengths."""
    import pyarrow.compute as pc

    longest = 0
    for batch in dataset.with_format("arrow").iter(batch_size=65536):
        for name in ("chosen_ids", "rejected_ids"):
            longest = max(longest, pc.max(pc.list_value_length(batch[name])).as_py() or 0)
    return longest

