"""rewardkit: train, evaluate, export and serve Bradley-Terry reward models.

The package follows the data flow, one subpackage a stage, each with a small facade:

    config → data → modeling → packing → training → inference → evaluation → export

and at the top ``run`` (one training run, end to end) and ``cli``. Below them all: ``errors``,
``seams`` (every reliance on a library's private detail), ``coercion`` and ``rundir`` (the run
directory's files and atomic writes). No module imports a later stage (``tests/test_structure.py``).

Public API: :func:`load_recipe`, :class:`RewardkitConfig`, :class:`RewardkitTrainer`, :func:`run_training`,
:func:`export_run`, :class:`RewardModel` (scoring) and the original project's :class:`RewardModelEvaluator`.
"""

import os
from importlib.metadata import PackageNotFoundError, version

from .facade import lazy_names

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

_HOMES = {
    "RewardModel": ".inference.model",
    "RewardModelEvaluator": ".inference.legacy",
    "RewardkitTrainer": ".training.trainer",
    "RewardkitConfig": ".config.reward_config",
    "Recipe": ".config.recipe",
    "load_recipe": ".config.recipe",
    "run_training": ".run",
    "export_run": ".export.write",
}
__all__ = [*sorted(_HOMES), "__version__"]

__getattr__ = lazy_names(__name__, _HOMES)  # lazy: `import reward` stays cheap for the CLI's recipe checks
