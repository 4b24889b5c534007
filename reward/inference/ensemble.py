"""An ensemble's rewards for one response: the members' mean, standard deviation and minimum, and the
conservative reward an RL loop trains on (mean − λ·std, or the minimum: Coste et al. 2023).

One home for the rule, used by ``RewardModel``, ``rewardkit score``, ``eval``, ``serve`` and the TRL
reward function, so a reward is penalised the same way wherever it leaves rewardkit. A plain reward
model is a one-member ensemble: std 0, every reward its mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple


class RewardStats(NamedTuple):
    """One response's reward across an ensemble's members."""

    mean: float
    std: float
    """Population standard deviation across members (0 for one member)."""
    min: float

    def reward(self, uncertainty_penalty: float = 0.0, worst_case: bool = False) -> float:
        """What an RL loop trains on: the minimum with ``worst_case``, else mean − λ·std."""
        return self.min if worst_case else self.mean - uncertainty_penalty * self.std


def summarize(values: Sequence[float], normalize: Callable[[float], float] | None = None) -> RewardStats:
    """The :class:`RewardStats` of one response's member rewards, each normalised first when asked (so
    the std is in normalised units, as the mean is)."""
    xs = [normalize(v) for v in values] if normalize else list(values)
    mean = math.fsum(xs) / len(xs)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / len(xs))
    return RewardStats(mean, std, min(xs))


def check_penalty(uncertainty_penalty: float) -> float:
    """λ as a finite number ≥ 0, or a ValueError that says so."""
    if not (isinstance(uncertainty_penalty, (int, float)) and math.isfinite(uncertainty_penalty)
            and uncertainty_penalty >= 0):
        raise ValueError(f"uncertainty_penalty must be a number ≥ 0, got {uncertainty_penalty!r}")
    return float(uncertainty_penalty)
