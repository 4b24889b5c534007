"""The packed forward: the model called on a packed row through its normal ``forward`` (DDP, DeepSpeed and
PEFT wrappers all see the call), rewards read from per-token logits captured on the score head."""

from __future__ import annotations

from typing import Any

import torch

from ..modeling.heads import head_name, unwrap_peft
from .attention import PACKED, placeholder_mask
from .modes import packed_mode

LAYOUT_KEYS = ("group_ids", "segment_ids", "position_ids", "kv_index", "cu_seq_q", "cu_seq_k", "max_q", "max_k")
"""The parts of a packed batch the attention reads (``reward.packing.attention``)."""


class ScoreCapture:
    """Forward hook on the score head that keeps its per-token output ([B, T, 1])."""

    def __init__(self, head: torch.nn.Module):
        self.value: torch.Tensor | None = None
        self.handle = head.register_forward_hook(self._hook)

    @classmethod
    def for_model(cls, model: Any) -> ScoreCapture:
        """A capture on ``model``'s reward head (inside a PEFT wrapper too): the one place the hook is set up."""
        return cls(getattr(unwrap_peft(model), head_name(model)))

    def _hook(self, module: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
        self.value = output

    def pop(self) -> torch.Tensor:
        value, self.value = self.value, None
        if value is None:
            raise RuntimeError("score head was not called during the forward pass")
        return value

    def remove(self) -> None:
        self.handle.remove()


def packed_token_rewards(model: Any, capture: ScoreCapture, batch: dict[str, Any],
                         inner: Any | None = None, all_outputs: bool = False) -> torch.Tensor:
    """Run ``model`` on a packed batch; return the score head's output at every token: [T], or
    [T, outputs] with ``all_outputs`` (an ODIN head's quality and length columns). The layout reaches
    every attention layer through the model's ``**kwargs`` (``inner``: the unwrapped model, whose
    packed mode is read, when ``model`` is a wrapper)."""
    layout = {"mode": packed_mode(inner if inner is not None else model), **{k: batch[k] for k in LAYOUT_KEYS}}
    model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
          attention_mask=placeholder_mask(batch["input_ids"].device), use_cache=False, **{PACKED: layout})
    out = capture.pop()[0]
    return out if all_outputs else out[:, 0]


def packed_rewards(model: Any, capture: ScoreCapture, batch: dict[str, torch.Tensor],
                   inner: Any | None = None, all_outputs: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` on a packed preference batch; return (chosen rewards, rejected rewards), each
    [n_pairs] (or [n_pairs, outputs] with ``all_outputs``)."""
    logits = packed_token_rewards(model, capture, batch, inner, all_outputs)
    return logits[batch["chosen_index"]], logits[batch["rejected_index"]]
