"""What an export is asked for, and what its verification found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..rundir import RunInfo


@dataclass(frozen=True)
class ExportOptions:
    """How ``rewardkit export`` writes, verifies and publishes (defaults are the CLI's)."""

    dtype: str = "float32"
    verify_pairs: int = 32
    """Held-out pairs whose rewards the export must reproduce."""
    tolerance: float | None = None
    """Largest |Δreward| accepted; None: :func:`default_tolerance` of the dtype."""
    trust_remote_code: bool = False
    push_to_hub: str | None = None
    """``org/name`` to push the verified export to."""
    private: bool = False
    revision: str | None = None
    share_train_prompt_hashes: bool = False
    token: str | None = field(default=None, repr=False)
    """A Hub token (kept in memory, never written)."""


@dataclass
class VerifiedExport:
    """A merged model whose rewards matched the run's, ready to be written."""

    model: Any
    tokenizer: Any
    stats: dict[str, Any]
    verification: dict[str, Any]
    info: RunInfo
    members: dict[str, Any] | None = None
    """An ensemble's member head rows (the model's own head is their mean), for the side file."""
