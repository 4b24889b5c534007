"""The router's load-balancing loss of a mixture-of-experts base (Mixtral, Qwen2/3-MoE, OLMoE, gpt-oss),
added to the reward loss as the family's causal LM adds it: ``router_aux_loss_coef`` times the family's
own ``load_balancing_loss_func`` over every layer's router logits.

Written here because a ``*ForSequenceClassification`` forward never returns router logits (and TRL's
reward trainer adds no such term), so without it fine-tuning a reward model lets the experts' load
drift. The logits are caught with forward hooks on the router modules (the modules transformers itself
records them from: ``reward.seams.router_logits_source``), so the packed and padded forwards, PEFT,
DDP and DeepSpeed wrappers all keep working unchanged.
"""

from __future__ import annotations

from typing import Any

import torch

from ..seams import family_load_balancing_loss, router_logits_source


class RouterLoss:
    """Hooks on a model's routers; :meth:`loss` is the load-balancing term of the last forward."""

    def __init__(self, model: torch.nn.Module, router_class: type, index: int, coef: float):
        cfg = model.config
        self.coef = coef
        self.num_experts = getattr(cfg, "num_local_experts", None) or cfg.num_experts
        self.top_k = cfg.num_experts_per_tok
        self.func = family_load_balancing_loss(router_class)
        self.logits: list[torch.Tensor] = []
        self.index = index
        self.handles = [m.register_forward_hook(self._hook) for m in model.modules() if isinstance(m, router_class)]

    @classmethod
    def for_model(cls, model: torch.nn.Module, coef: float | None) -> RouterLoss | None:
        """A ``RouterLoss`` for a mixture-of-experts ``model`` (``coef`` None: the model config's
        ``router_aux_loss_coef``), or None for a dense model or a coefficient of 0."""
        source = router_logits_source(model)
        if source is None or family_load_balancing_loss(source[0]) is None:
            return None
        coef = getattr(model.config, "router_aux_loss_coef", 0.0) if coef is None else coef
        return cls(model, *source, coef) if coef else None

    def _hook(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        # activation checkpointing's recompute calls it again during backward: :meth:`start` drops those
        self.logits.append(output[self.index] if isinstance(output, (tuple, list)) else output)

    def start(self) -> None:
        """Forget the logits of earlier forwards (call before each forward)."""
        self.logits = []

    def loss(self, attention_mask: torch.Tensor | None = None) -> torch.Tensor | None:
        """``coef`` × the family's load-balancing loss over the logits of the forward since :meth:`start`
        (``attention_mask``: a padded batch's, so pads do not count; a packed row has none)."""
        if not self.logits:
            return None
        aux = self.func(tuple(self.logits), self.num_experts, self.top_k, attention_mask)
        self.logits = []
        return self.coef * aux

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
