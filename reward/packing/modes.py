"""Which packed attention a model gets (``packed_attention``), or why it cannot pack.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch

from ..errors import RecipeError
from ..modeling.heads import unwrap_peft
from ..seams import attn_implementation, config_holder
from .attention import MODE_ATTR, PACKED, _register, varlen_available

logger = logging.getLogger(__name__)
MODES = ("dense", "flex", "varlen")


# --- FlashAttention varlen (CUDA) -----------------------------------------------------------------------




# --- choosing the mode ---------------------------------------------------------------------------------
def packed_model(model: Any) -> Any:
    """The transformers model inside DDP / DeepSpeed / PEFT wrappers: where the attention is switched."""
    holder = config_holder(model)
    return unwrap_peft(holder) if hasattr(holder, "get_base_model") else holder


def cannot_pack(model: Any) -> str | None:
    """Why ``model`` cannot run a packed row exactly, or None. A packed row restarts positions per group,
    so the model's forward must take ``position_ids`` (Falcon's and Bloom's classifiers do not)."""
    target = packed_model(model)
    if "position_ids" not in inspect.signature(type(target).forward).parameters:
        return f"{type(target).__name__}.forward takes no position_ids, so a packed row's positions cannot restart per pair"
    return None


def attention_features(model: Any) -> dict[str, Any]:
    """What the model's attention computes beyond causal softmax, from its config and modules: the
    sliding windows (``{window: layers}``), a logit softcap, attention sinks. For logs, docs and the
    choice of mode; the packed forward itself reads each layer's rule from the layer's own call."""
    target = packed_model(model)
    cfg = target.config
    window = getattr(cfg, "sliding_window", None)
    types = getattr(cfg, "layer_types", None)
    n = getattr(cfg, "num_hidden_layers", None) or len(types or [])
    if window and types:
        # some configs keep a window with use_sliding_window off; layer_types says which layers use it
        windows = {window: sum(t == "sliding_attention" for t in types)} if "sliding_attention" in types else {}
    else:
        windows = {window: n} if window else {}
    return {"sliding_window": windows, "layers": n, "softcap": getattr(cfg, "attn_logit_softcapping", None),
            "sinks": any(isinstance(getattr(m, "sinks", None), torch.nn.Parameter) for m in target.modules())}


def describe(features: dict[str, Any]) -> str:
    """``attention_features`` in a few words for a log line."""
    parts = [f"window {w} on {n}/{features['layers']} layers" for w, n in features["sliding_window"].items()]
    if features["softcap"]:
        parts.append(f"softcap {features['softcap']:g}")
    if features["sinks"]:
        parts.append("sinks")
    return ", ".join(parts) or "causal"


def prepare_model(model: Any, mode: str = "auto", device: torch.device | str | None = None,
                  half: bool | None = None) -> str:
    """Point ``model`` at the packed attention in ``mode`` (``packed_attention``): the one place a model is
    set up for the packed forward, called by ``RewardkitTrainer`` (from its ``args``) and by
    ``RewardModel`` (``auto``). Returns the mode the packed forward runs in, or ``"padded"`` where
    ``auto`` finds the model cannot pack (one warning, naming why). ``device`` and ``half`` default to the
    model's first parameter: its device, and whether it is 16-bit or runs under autocast.

    ``auto``: ``flex`` for a model loaded with flex attention; else ``varlen`` on CPU (per-segment SDPA
    beats a dense T×T mask there) and on CUDA in fp16/bf16 where FlashAttention varlen exists, unless
    a layer has a softcap or sinks (the kernel has neither: ``dense`` with the model's eager attention);
    ``dense`` otherwise (CUDA fp32: one kernel, not a loop). An explicit mode that cannot run is refused.
    Padded calls keep working under every choice (see the module docstring)."""
    target = packed_model(model)
    param = next(target.parameters())
    device = param.device if device is None else device
    if half is None:
        half = param.element_size() == 2 or torch.is_autocast_enabled(param.device.type)
    reason = cannot_pack(target)
    if reason:
        if mode == "auto":
            logger.warning("packing is off for this model (%s): it trains and scores padded", reason)
            return "padded"
        raise RecipeError(f"packed_attention: {mode}: {reason}. Use packing: false.")
    features = attention_features(target)
    cuda = torch.device(device).type == "cuda"
    if mode == "auto":
        if attn_implementation(target) == "flex_attention":
            mode = "flex"
        elif not cuda:
            mode = "varlen"
        else:
            exotic = features["softcap"] or features["sinks"]
            mode = "varlen" if half and varlen_available(device) and not exotic else "dense"
    if mode not in MODES:
        raise RecipeError(f"packed_attention: {mode!r} is not one of auto, {', '.join(MODES)}.")
    if mode == "varlen" and cuda and not (half and varlen_available(device)):
        raise RecipeError("packed_attention: varlen runs FlashAttention in fp16/bf16 (torch ≥ 2.10) on CUDA; "
                          "this run is fp32 or the kernel is missing: use packed_attention: dense or auto.")
    if mode == "flex" and features["sinks"] and not cuda:
        raise RecipeError("packed_attention: flex cannot compute attention sinks on CPU (transformers' flex "
                          "attention needs CUDA for them): use packed_attention: dense or auto.")
    _register()
    if attn_implementation(target) != PACKED:
        target.set_attn_implementation(PACKED)
    setattr(target, MODE_ATTR, mode)
    return mode


def packed_mode(model: Any) -> str:
    """The mode ``model``'s packed forward runs in (set by :func:`prepare_model`)."""
    target = packed_model(model)
    mode = getattr(target, MODE_ATTR, None)
    if mode is None or attn_implementation(target) != PACKED:
        raise RecipeError("packing: this model was not prepared for the packed forward: call "
                          "reward.packing.prepare_model(model) first, or use packing: false.")
    return mode
