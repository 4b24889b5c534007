"""What the data step is asked for: lengths, truncation, split, cache and processes, one reader of the recipe.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

MAX_DEFAULT_PROCS = 8
"""Default ceiling on tokenizing processes: each is forked from the preparing process and held about
0.7-0.9 GB (PSS) at 1M pairs on the 2-core machine, so a 64-core node must not start 64 unasked."""


PARALLEL_FROM = 20_000
"""Pairs below which tokenization stays in one process (starting workers costs more than it saves)."""


@dataclass(frozen=True)
class DataSettings:
    """What decides the prepared data (and its cache key), besides the sources and the tokenizer; the
    defaults are the recipe's (:class:`reward.config.DataArguments`), read from it, not restated."""

    max_length: int | None
    truncation: str
    seed: int
    eval_split_size: float
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    cache_dir: str | None = None
    num_proc: int | None = None
    """Tokenizing processes for a large set (TRL's ``dataset_num_proc``); None: :meth:`processes`."""

    @classmethod
    def from_recipe(cls, recipe: Any) -> DataSettings:
        """A recipe's data keys, with TRL's ``max_length``, ``seed`` and ``dataset_num_proc``."""
        d, t = recipe.data, recipe.training
        return cls(t.max_length, d.truncation, t.seed, d.eval_split_size, d.max_train_samples, d.max_eval_samples,
                   d.cache_dir, t.dataset_num_proc)

    def processes(self) -> int:
        """``num_proc``, or the cores this process may use, at most :data:`MAX_DEFAULT_PROCS`."""
        if self.num_proc:
            return self.num_proc
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return min(cores, MAX_DEFAULT_PROCS)

    def cache_key(self) -> dict[str, Any]:
        """The settings that change the prepared data (not where it is kept, nor how many processes make it)."""
        import dataclasses

        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("cache_dir", "num_proc")}
