"""rewardkit's one error type: whatever a user can fix (a recipe, a file, a flag, a run that diverged)
is a :class:`RewardkitError`, which the CLI prints as one ``error:`` line with exit status 2.

Subclasses keep the built-in base they had (``ValueError``, ``RuntimeError``), so code that caught
those still does."""

from __future__ import annotations


class RewardkitError(Exception):
    """An error the user can act on; the message says what and how."""


class TrainingDiverged(RewardkitError, RuntimeError):
    """The training loss became NaN or infinite: the run is stopped and not stamped complete."""
