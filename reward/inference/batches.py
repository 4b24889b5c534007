"""How scoring work is grouped: encoded rows, batching settings and the progress bar.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..data.formatting import Message

Prompt = str | Sequence[Message]


class Encoded(NamedTuple):
    """Token sequences ready to score, grouped as the caller grouped the responses, and what was cut."""

    groups: list[list[list[int]]]
    truncated: list[list[bool]]
    """Whether anything of prompt + response was cut to fit ``max_length``."""
    responses_cut: int
    """Responses longer than ``max_length`` on their own, scored on their first tokens."""
    response_lengths: list[list[int]]
    """Each response's own token count, before any cut (for length-bias statistics)."""
    prompts: list[list[int]]
    """Each group's prompt ids, before any cut: groups with the same prompt can be scored as one."""


def ungroup(index: Sequence[Sequence[int]], grouped: Sequence[Sequence[Any]], n: int) -> list[Any]:
    """Values computed per group (``grouped[g][j]`` for input ``index[g][j]``) back in input order."""
    out: list[Any] = [None] * n
    for idx, values in zip(index, grouped):
        for i, v in zip(idx, values):
            out[i] = v
    return out


DEFAULT_PACK_TOKENS = {"cpu": 512, "gpu": 4096}
"""Tokens per packed scoring row. On CPU rows attend per segment (``packing.segment_attention``) and the
row length hardly matters (quickstart model, fp32, 1,020 shared pairs, 2 cores: 306 s at 512, 300 s
at 2048); 512 keeps a row's memory small. On a GPU varlen or FlexAttention take long rows."""


@dataclass(frozen=True)
class Batching:
    """How ``eval``, ``score`` and the suites batch what they score: packed rows of ``pack_tokens``
    tokens (None: :data:`DEFAULT_PACK_TOKENS`; 0: padded batches of ``batch_size`` sequences)."""

    batch_size: int = 16
    pack_tokens: int | None = None
    progress: bool = False


@contextmanager
def progress_bar(enabled: bool, total: int, desc: str, unit: str) -> Iterator[Any]:
    """A ``tqdm`` bar when ``enabled``, else one that does nothing; closed on the way out."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, disable=not enabled)
    try:
        yield bar
    finally:
        bar.close()
