"""Training: the trainer and its losses, the MoE router loss, launching and memory planning.

- :mod:`.trainer`: :class:`RewardkitTrainer`, TRL's ``RewardTrainer`` on the packed forward.
- :mod:`.losses`: Bradley-Terry and length-debias losses, pure functions on tensors.
- :mod:`.routing`: the MoE router's load-balancing loss.
- :mod:`.launching`: accelerate configs, ``accelerate launch``, and how a rank ends.
- :mod:`.plan`: ``rewardkit plan``'s per-GPU memory.
"""

from __future__ import annotations

from ..facade import lazy_names

_HOMES = {
    "Layout": ".plan",
    "RewardkitTrainer": ".trainer",
    "RouterLoss": ".routing",
    "Shape": ".plan",
    "ensure_zero3_saves_weights": ".launching",
    "exit_rank": ".launching",
    "estimate": ".plan",
    "launch_command": ".launching",
    "launch_env": ".launching",
    "leave_process_group": ".launching",
    "losses": ".losses",
    "plan_from_recipe": ".plan",
    "read_accelerate_config": ".launching",
    "shape_for": ".plan",
}
__all__ = sorted(_HOMES)

__getattr__ = lazy_names(__name__, _HOMES)
