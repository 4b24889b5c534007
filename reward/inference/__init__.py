"""Inference: a run or an export → a model that scores, and everything that serves its rewards.

- :mod:`.loading`: run directory or export → model (adapters merged, dtype, head checked).
- :mod:`.model`: :class:`RewardModel`; :mod:`.batches`: how work is grouped.
- :mod:`.reward_func`: the TRL reward function; :mod:`.scorefile`: ``rewardkit score``.
- :mod:`.serve` and :mod:`.batcher`: the HTTP server; :mod:`.demo`; :mod:`.legacy`: the original API.
"""

from __future__ import annotations

from ..facade import lazy_names

_HOMES = {
    "Batching": ".batches",
    "RewardFunction": ".reward_func",
    "RewardModel": ".model",
    "RewardModelEvaluator": ".legacy",
    "ServeSettings": ".batcher",
    "create_app": ".serve",
    "load_scoring_model": ".loading",
    "score_jsonl": ".scorefile",
}
__all__ = sorted(_HOMES)

__getattr__ = lazy_names(__name__, _HOMES)
