"""The reward head: which module it is, how many outputs it has, and the embeddings around it.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import ModelLoadError, RecipeError
from ..seams import config_holder

logger = logging.getLogger(__name__)
HEAD_NAMES = ("score", "classifier")


def fit_embeddings(model: Any, tokenizer: Any) -> None:
    """Grow the input embeddings to the tokenizer's size (a pad token added by :func:`set_distinct_pad`),
    and point the config at the tokenizer's pad token: the one place a model learns its pad id."""
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows and rows > 0:  # rows == 0: a ZeRO-3 shard, resized by the full model's owner
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    text = model.config.get_text_config()
    if text is not model.config:
        text.pad_token_id = tokenizer.pad_token_id


def head_outputs(length_debias: str | None) -> int:
    """Outputs of the reward head: two for ODIN (quality, length), else one. The one place this is
    decided, for training and for loading an ODIN run."""
    return 2 if length_debias == "odin" else 1


def unwrap_peft(model: Any) -> Any:
    """The model under a PEFT wrapper (the model itself when there is none)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def head_name(model: Any) -> str:
    """Name of the sequence-classification head module (``score`` for decoder LMs)."""
    base = unwrap_peft(model)
    for name in HEAD_NAMES:
        if hasattr(base, name):
            return name
    raise RecipeError(f"{type(base).__name__} has no reward head named one of {HEAD_NAMES}: not a sequence "
                      "classifier rewardkit can train or score.")


def freeze_lower_layers(model: Any, trainable_layers: int) -> int:
    """Freeze embeddings and all but the top ``trainable_layers`` decoder layers; returns trainable params."""
    backbone = getattr(model, model.base_model_prefix)
    layers = getattr(backbone, "layers", None) or getattr(backbone, "h", None)
    if layers is None:
        raise RecipeError(f"freeze_trainable_layers: {type(model).__name__} has no decoder layer list to freeze.")
    if not 0 <= trainable_layers <= len(layers):
        raise RecipeError(f"freeze_trainable_layers: {trainable_layers} is not in [0, {len(layers)}] for this model.")
    for p in backbone.parameters():
        p.requires_grad_(False)
    for layer in list(layers)[len(layers) - trainable_layers:]:
        for p in layer.parameters():
            p.requires_grad_(True)
    for name, module in backbone.named_children():  # final norm(s) after the last layer
        if "norm" in name.lower() or name in ("ln_f",):
            for p in module.parameters():
                p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_reward_head(model: Any, length_debias: str | None, name: str) -> None:
    """Refuse what is not a reward model: one output, or two for an ODIN run (its quality output is read).
    A 2-label classifier would otherwise be scored silently on its first logit."""
    n = config_holder(model).config.num_labels
    if n == head_outputs(length_debias) or n == 1:
        return
    raise ModelLoadError(f"{name}: num_labels is {n}: not a reward model (a reward model has one output; two are "
                         "accepted only from an ODIN run, whose rewardkit_run.json says length_debias: odin).")


def context_length(model: Any) -> int | None:
    """The longest sequence the model was built for (``max_position_embeddings``), or None if it says none."""
    config = config_holder(model).config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    n = getattr(text, "max_position_embeddings", None)
    return int(n) if isinstance(n, int) and n > 0 else None


def fit_max_length(max_length: int | None, context: int | None, what: str) -> int | None:
    """``max_length`` cut to a model's ``context`` (its positions), with one warning: a longer one would
    fail mid-run on a model with absolute positions, and is past what any model was trained on."""
    if max_length is None or context is None or max_length <= context:
        return max_length
    logger.warning("%s: max_length %d is longer than the model's context of %d positions: cut to %d",
                   what, max_length, context, context)
    return context


def keep_quality_head(model: Any) -> bool:
    """An ODIN model (two-output head: quality, length) → the same model with only the quality output,
    a plain one-label reward model. Returns whether the head was cut."""
    import torch

    name = head_name(model)
    head = getattr(model, name)
    if not isinstance(head, torch.nn.Linear) or head.out_features != 2:
        return False
    quality = torch.nn.Linear(head.in_features, 1, bias=head.bias is not None, device=head.weight.device,
                              dtype=head.weight.dtype)
    with torch.no_grad():
        quality.weight.copy_(head.weight[:1])
        if head.bias is not None:
            quality.bias.copy_(head.bias[:1])
    setattr(model, name, quality)
    model.config.num_labels = 1
    model.num_labels = 1
    return True
