"""Accounting for every pair: what was kept, what was dropped and why, what was truncated."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DataReport:
    """Counts in units of candidate pairs: ``kept + sum(dropped.values()) == total``."""

    total: int = 0
    kept_train: int = 0
    kept_eval: int = 0
    dropped: Counter = field(default_factory=Counter)
    truncated: int = 0
    repaired: Counter = field(default_factory=Counter)
    """Rows kept after a documented repair (e.g. HH transcripts whose prefixes differ)."""
    per_source: dict[str, dict[str, Any]] = field(default_factory=dict)
    lengths: dict[str, dict[str, float]] = field(default_factory=dict)
    prompt_token_share: float | None = None
    max_length: int | None = None
    truncation: str | None = None

    @property
    def kept(self) -> int:
        return self.kept_train + self.kept_eval

    def drop(self, reason: str, n: int = 1) -> None:
        if n:
            self.dropped[reason] += n

    def check(self) -> None:
        """The invariant that makes 'no silent drops' testable."""
        lost = self.total - self.kept - sum(self.dropped.values())
        if lost:
            raise AssertionError(f"data accounting is off by {lost} pairs: {self.to_dict()}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "kept": self.kept,
            "kept_train": self.kept_train,
            "kept_eval": self.kept_eval,
            "dropped": dict(sorted(self.dropped.items())),
            "truncated": self.truncated,
            "repaired": dict(self.repaired),
            "max_length": self.max_length,
            "truncation": self.truncation,
            "lengths": self.lengths,
            "prompt_token_share": self.prompt_token_share,
            "per_source": self.per_source,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataReport:
        """The report :meth:`to_dict` wrote."""
        return cls(total=d["total"], kept_train=d["kept_train"], kept_eval=d["kept_eval"], dropped=Counter(d["dropped"]),
                   truncated=d["truncated"], repaired=Counter(d["repaired"]), per_source=d["per_source"],
                   lengths=d["lengths"], prompt_token_share=d["prompt_token_share"], max_length=d["max_length"],
                   truncation=d["truncation"])

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def summary(self) -> str:
        """Human-readable lines for ``rewardkit data inspect`` and the training log."""
        lines = [
            f"pairs: {self.total} total, {self.kept} kept ({self.kept_train} train / {self.kept_eval} eval), "
            f"{sum(self.dropped.values())} dropped, {self.truncated} prompt-truncated"
            + (f" (max_length {self.max_length}, truncation {self.truncation})" if self.max_length else ""),
        ]
        for reason, n in sorted(self.dropped.items()):
            lines.append(f"  dropped {reason}: {n}")
        for reason, n in sorted(self.repaired.items()):
            lines.append(f"  kept after repair ({reason}): {n}")
        if self.lengths:
            lines.append("tokens      " + "  ".join(f"{k:>6}" for k in ("mean", "p50", "p90", "p99", "max")))
            for name, st in self.lengths.items():
                lines.append(f"  {name:<9} " + "  ".join(f"{st[k]:>6.0f}" for k in ("mean", "p50", "p90", "p99", "max")))
        if self.prompt_token_share is not None:
            share = self.prompt_token_share
            lines.append(f"prompt share of pair tokens (chosen and rejected as two sequences): {share:.0%}")
        return "\n".join(lines)


def length_stats(values: Sequence[int]) -> dict[str, float]:
    import numpy as np

    if not len(values):
        return {k: 0.0 for k in ("mean", "p50", "p90", "p99", "max")}
    a = np.asarray(values, dtype=float)
    return {
        "mean": float(a.mean()),
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
    }
