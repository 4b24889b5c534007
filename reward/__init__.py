"""rewardkit: train, evaluate, export and serve Bradley-Terry reward models.

Public API: :class:`RewardModel` (scoring) and the original project's :class:`RewardModelEvaluator`.
"""

import os
from importlib.metadata import PackageNotFoundError, version

# Arrow's allocator, chosen before pyarrow first loads (datasets imports it): the system one. pyarrow ≥ 25
# defaults to its bundled mimalloc, whose per-thread state has crashed processes at thread start and exit
# (apache/arrow #50471, #50908); a rank of the 2-machine DDP test died in std::terminate at exit (stop 32),
# more often once Arrow's pool was asked to release memory, and a rank that dies after the last collective
# costs the other machine torchrun's 300 s exit barrier. The datasets here are memory-mapped: Arrow's own
# allocations are small, so its allocator's speed does not matter. A user's setting wins.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

try:  # pyproject.toml is the one place the version is written
    __version__ = version("rewardkit")
except PackageNotFoundError:  # a source tree on sys.path, never installed
    __version__ = "0+unknown"

__all__ = ["RewardModel", "RewardModelEvaluator", "__version__"]


def __getattr__(name: str):  # lazy: `import reward` stays cheap for the CLI's recipe checks
    if name == "RewardModel":
        from .scoring import RewardModel

        return RewardModel
    if name == "RewardModelEvaluator":
        from .legacy import RewardModelEvaluator

        return RewardModelEvaluator
    raise AttributeError(name)
