"""Bootstrap weights of an ensemble's pairs: each pair's Poisson(1) weight for each member.

A weight is a pure function of (seed, the pair's tokens, member), so it is the same in every batch,
order, process count, packing mode and pairing, and on resume: the pairwise and listwise collators
give a pair the same weights, and a resumed run trains each member on the same resample. Poisson(1)
weights are the online bootstrap (Oza & Russell 2001): each member sees each pair k ~ Poisson(1) times,
as if it trained on its own resample of the data with replacement. Written here because no trainer
we know of (TRL, OpenRLHF) trains an ensemble at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def pair_weights(chosen: Sequence[int], rejected: Sequence[int], members: int, seed: int) -> list[int]:
    """One pair's Poisson(1) weight for each of ``members`` members, drawn from a generator seeded by
    ``seed`` and a digest of the pair's token ids."""
    h = hashlib.blake2b(digest_size=16, key=int(seed).to_bytes(8, "little", signed=True))
    h.update(np.asarray(chosen, dtype=np.int64).tobytes())
    h.update(b"|")
    h.update(np.asarray(rejected, dtype=np.int64).tobytes())
    rng = np.random.default_rng(np.frombuffer(h.digest(), dtype=np.uint32))
    return rng.poisson(1.0, members).tolist()


def bootstrap_weights(examples: Sequence[dict[str, Any]], members: int, seed: int) -> torch.Tensor:
    """[pairs, members] float weights of a batch's pairs (``chosen_ids``/``rejected_ids``), in batch order."""
    return torch.tensor([pair_weights(ex["chosen_ids"], ex["rejected_ids"], members, seed) for ex in examples],
                        dtype=torch.float)
