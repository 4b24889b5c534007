"""LoRA for reward models: targets checked before loading, and a config that trains the head.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import RecipeError
from .source import ModelSource, meta_skeleton

logger = logging.getLogger(__name__)


def check_lora_targets(model: Any, targets: list[str] | str | None) -> None:
    """Fail with the list of module names that exist when a LoRA target matches nothing."""
    if targets is None or targets == "all-linear" or targets == ["all-linear"]:
        return
    targets = [targets] if isinstance(targets, str) else list(targets)
    import torch

    leaf_names = sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
    missing = [t for t in targets if t not in leaf_names and not any(n.endswith(t) for n, _ in model.named_modules())]
    if missing:
        raise RecipeError(
            f"lora_target_modules: {missing} not found in {type(model).__name__}. "
            f"Linear modules it has: {', '.join(leaf_names)} (or use 'all-linear')."
        )


def build_peft_config(model_args: Any) -> Any:
    """LoRA for a reward model: task type SEQ_CLS so peft trains and saves the score head.

    TRL's ``get_peft_config`` defaults ``lora_task_type`` to CAUSAL_LM, which leaves the freshly
    initialised head frozen at random values: the failure this function exists to prevent.
    """
    from peft import LoraConfig

    targets = model_args.lora_target_modules or "all-linear"
    modules_to_save = list(dict.fromkeys(list(model_args.lora_modules_to_save or []) + ["score"]))
    return LoraConfig(
        task_type="SEQ_CLS",
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=targets,
        modules_to_save=modules_to_save,
        use_rslora=model_args.use_rslora,
        use_dora=model_args.use_dora,
    )


def preflight_lora_targets(model_args: Any, source: ModelSource) -> None:
    """Check ``lora_target_modules`` against the model's structure built on the meta device (config
    only, no weights, no data): a typo fails in a second, before anything is loaded or written."""
    if not model_args.use_peft or model_args.lora_target_modules in (None, "all-linear", ["all-linear"]):
        return
    try:
        skeleton = meta_skeleton(source)
    except Exception as exc:  # noqa: BLE001 - an unreadable config is reported by the real load, with its own message
        logger.debug("LoRA preflight skipped: %s", exc)
        return
    check_lora_targets(skeleton, model_args.lora_target_modules)
