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


def head_outputs(length_debias: str | None, ensemble_heads: int = 1) -> int:
    """Outputs of the reward head: two for ODIN (quality, length), one per member for an ensemble, else
    one. The one place this is decided, for training and for loading a run."""
    return 2 if length_debias == "odin" else max(int(ensemble_heads or 1), 1)


def draw_member_heads(model: Any, seed: int) -> None:
    """Redraw each row of an ensemble's head (one row a member) from its own generator, seeded by
    (``seed``, member): members start apart by construction, not by the draw order of one generator.
    Rows are drawn as transformers draws a fresh score head, N(0, ``initializer_range``²)."""
    import contextlib

    import torch

    head = getattr(unwrap_peft(model), head_name(model))
    params = [p for p in (head.weight, getattr(head, "bias", None)) if p is not None]
    gather: Any = contextlib.nullcontext()
    if any(hasattr(p, "ds_id") for p in params):  # a ZeRO-3 shard: draw on the full weight, rank 0 writes
        import deepspeed

        gather = deepspeed.zero.GatheredParameters(params, modifier_rank=0)
    std = float(getattr(config_holder(model).config, "initializer_range", 0.02) or 0.02)
    with gather, torch.no_grad():
        weight = head.weight
        for member in range(weight.shape[0]):
            weight[member].copy_(member_row(seed, member, weight.shape[1], std).to(weight.dtype))
        if getattr(head, "bias", None) is not None:
            head.bias.zero_()
    logger.info("ensemble: %d heads drawn, member m from seed (%d, m)", head.weight.shape[0], seed)


def member_row(seed: int, member: int, width: int, std: float) -> Any:
    """Member ``member``'s first head row: ``width`` draws of N(0, std²) from its own generator."""
    import torch

    g = torch.Generator().manual_seed(seed * 1_000_003 + member)
    return torch.randn(width, generator=g, dtype=torch.float32) * std


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


def check_reward_head(model: Any, length_debias: str | None, name: str, ensemble_heads: int = 1) -> None:
    """Refuse what is not a reward model: one output, two for an ODIN run (its quality output is read),
    or one per member for an ensemble run. A 2-label classifier would otherwise be scored silently on
    its first logit."""
    n = config_holder(model).config.num_labels
    if n == head_outputs(length_debias, ensemble_heads) or n == 1:
        return
    raise ModelLoadError(f"{name}: num_labels is {n}: not a reward model (a reward model has one output; more are "
                         "accepted only from a rewardkit run that says why: length_debias: odin, or ensemble_heads).")


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


def _replace_head(model: Any, weight: Any, bias: Any) -> None:
    """Set ``model``'s reward head to a plain ``Linear`` holding ``weight`` ([outputs, hidden]) and ``bias``."""
    import torch

    name = head_name(model)
    old = getattr(model, name)
    head = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=old.weight.device,
                           dtype=old.weight.dtype)
    with torch.no_grad():
        head.weight.copy_(weight)
        if bias is not None:
            head.bias.copy_(bias)
    setattr(model, name, head)
    model.config.num_labels = weight.shape[0]
    model.num_labels = weight.shape[0]


def mean_member_head(model: Any) -> dict[str, Any]:
    """An ensemble's head ([members, hidden]) → one output, the members' mean: the mean of linear heads
    is one linear head, so plain transformers gives exactly the ensemble's mean reward. Returns the
    members' own rows (``weight``, and ``bias`` if any), for the export's side file."""
    import torch

    head = getattr(model, head_name(model))
    members = {"weight": head.weight.detach().clone()}
    if head.bias is not None:
        members["bias"] = head.bias.detach().clone()
    with torch.no_grad():  # averaged in fp64: one rounding, the export's own
        weight = head.weight.double().mean(0, keepdim=True)
        bias = head.bias.double().mean(0, keepdim=True) if head.bias is not None else None
    _replace_head(model, weight, bias)
    return members


def restore_member_heads(model: Any, members: dict[str, Any], name: str) -> None:
    """An exported ensemble (one mean head) → its members again, from the side file's rows. Refused
    when the rows' mean is not the model's head (a side file from another export)."""
    import torch

    head = getattr(model, head_name(model))
    weight = members["weight"].to(head.weight.dtype)
    bias = members.get("bias")
    mean_w = members["weight"].double().mean(0, keepdim=True)
    tol = 1e-2 if head.weight.element_size() == 2 else 1e-5  # the head is the mean rounded to its dtype
    if head.weight.shape != mean_w.shape or not torch.allclose(head.weight.double(), mean_w, rtol=tol, atol=tol * 1e-2):
        raise ModelLoadError(f"{name}: its ensemble side file's members do not average to the model's head: the "
                             "side file belongs to another export; export the run again.")
    _replace_head(model, weight, bias.to(head.weight.dtype) if bias is not None else None)
