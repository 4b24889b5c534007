"""The adapter of each format name a data source may have (:data:`reward.config.sources.FORMATS`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from ..config.sources import FORMATS, DataSource
from .adapters import (
    Pair,
    adapt_conversational,
    adapt_helpsteer2,
    adapt_helpsteer2_binarized,
    adapt_hh_rlhf,
    adapt_pairs,
)
from .groups import adapt_oasst, adapt_qa_feedback, adapt_ranked, adapt_ranked_csv
from .report import DataReport

ADAPTERS: dict[str, Callable[[Iterable[dict], DataSource, DataReport], Iterator[Pair]]] = {
    "pairs": adapt_pairs,
    "conversational": adapt_conversational,
    "hh-rlhf": adapt_hh_rlhf,
    "helpsteer2": adapt_helpsteer2,
    "helpsteer2-binarized": adapt_helpsteer2_binarized,
    "ranked-csv": adapt_ranked_csv,
    "ranked": adapt_ranked,
    "qa-feedback": adapt_qa_feedback,
    "oasst": adapt_oasst,
}
"""One adapter for each format name; every format yields pairs (a ranked group's comparisons, in order)."""
if set(ADAPTERS) != set(FORMATS):  # a format named without an adapter, or the other way round
    raise ImportError(f"data adapters {sorted(ADAPTERS)} do not match DataSource formats {sorted(FORMATS)}")
