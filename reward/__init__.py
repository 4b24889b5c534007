"""rewardkit: train, evaluate, export and serve Bradley-Terry reward models.

Public API: :class:`RewardModel` (scoring) and the original project's :class:`RewardModelEvaluator`.
"""

from importlib.metadata import PackageNotFoundError, version

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
