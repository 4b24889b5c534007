"""Every rewardkit error class, in one module that imports nothing of rewardkit (so any module can raise
any of them). Whatever a user can fix (a recipe, a file, a flag, a run that diverged) is a
:class:`RewardkitError`, which the CLI prints as one ``error:`` line with exit status 2.

Subclasses keep the built-in base they had (``ValueError``, ``RuntimeError``), so code that caught
those still does. :func:`user_error` is the one decision of what a user sees as a one-line error."""

from __future__ import annotations


class RewardkitError(Exception):
    """An error the user can act on; the message says what and how."""


class TrainingDiverged(RewardkitError, RuntimeError):
    """The training loss became NaN or infinite: the run is stopped and not stamped complete."""


class RecipeError(RewardkitError, ValueError):
    """A recipe that cannot run. The message names the key and the fix."""


class ExportError(RewardkitError, RuntimeError):
    """The export would not reproduce the run's rewards, or the run cannot be exported."""


class RemoteCodeError(RewardkitError):
    """A model that ships its own Python code, loaded without ``trust_remote_code``."""


class ModelLoadError(RewardkitError, ValueError):
    """A model or run directory that cannot be loaded: what is missing or damaged, in one line."""


class ScoringError(RewardkitError, ValueError):
    """A model cannot score as asked (no reward statistics to normalise with, …)."""


class DataError(RewardkitError, ValueError):
    """Input that cannot be read as intended (a non-string text field, a missing column…)."""


class SaveError(RewardkitError, OSError):
    """Writing a run's files failed (disk full, quota, read-only or failing disk): the path and the reason."""


def user_error(exc: BaseException) -> RewardkitError | None:
    """``exc`` as the error a user gets in one line: a :class:`RewardkitError` as it is; an ``OSError``
    (a disk that is full, read-only or failing, a file that went away) as its path and reason; None
    for anything else, a bug whose traceback is the report."""
    if isinstance(exc, RewardkitError):
        return exc
    if isinstance(exc, OSError):
        return SaveError((f"{exc.filename}: " if exc.filename else "") + str(exc.strerror or exc))
    return None
