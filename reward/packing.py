"""Padding-free, prompt-sharing reward forward: each prompt is computed once for both responses
(training, evaluation) or for all n responses to it (best-of-n scoring, ``pack_groups``).

A micro-batch of pairs becomes one row: ``[prompt₁ chosen₁ rejected₁ prompt₂ …]``. Position ids
restart per pair and the rejected segment reuses the chosen segment's positions, so with the mask

    attend(q, k) = same_pair(q, k) and k ≤ q and (k is prompt or segment(k) == segment(q))

every response token sees exactly what it would see in its own padded sequence ``prompt + response``.
The reward is read where the stock path reads it (the rightmost non-pad token of prompt + response),
from per-token logits captured with a forward hook on the score head, so the model is called
through its normal ``forward`` (DDP, DeepSpeed and PEFT wrappers all see the call).

Written here because TRL 1.x has no prompt sharing for reward models (OpenRLHF packs samples but
runs the prompt twice). Masks: a dense boolean mask for SDPA/eager (the plain path CPU tests run),
a FlexAttention ``BlockMask`` when the model uses ``flex_attention`` (GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

PROMPT, CHOSEN, REJECTED = 0, 1, 2
SUPPORTED_ATTENTION = ("sdpa", "eager", "flex_attention")


def pack_groups(groups: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Groups of (shared prefix, [suffix₁, suffix₂, …]) → one packed row ``[prefix₁ s₁ s₂ … prefix₂ …]``.

    Suffix j of a group is segment j + 1 and reuses the positions after the prefix, so under the mask
    rule each suffix sees only its group's prefix and itself. ``reward_index`` holds, group by group and
    suffix by suffix, the packed index where the padded model reads the reward of ``prefix + suffix``.
    """
    ids: list[int] = []
    pos: list[int] = []
    group: list[int] = []
    kind: list[int] = []
    reward_index: list[int] = []
    for n, (prefix, suffixes) in enumerate(groups):
        p = len(prefix)
        start = len(ids)
        ids += prefix
        pos += range(p)
        group += [n] * p
        kind += [PROMPT] * p
        for j, suffix in enumerate(suffixes):
            seg_start = len(ids)
            ids += suffix
            pos += range(p, p + len(suffix))
            group += [n] * len(suffix)
            kind += [j + 1] * len(suffix)
            reward_index.append(_reward_position(list(prefix) + list(suffix), pad_token_id, start, seg_start, p))
    return {
        "input_ids": torch.tensor([ids], dtype=torch.long),
        "position_ids": torch.tensor([pos], dtype=torch.long),
        "pair_ids": torch.tensor([group], dtype=torch.long),
        "segment_ids": torch.tensor([kind], dtype=torch.long),
        "reward_index": torch.tensor(reward_index, dtype=torch.long),
    }


@dataclass
class PackedPreferenceCollator:
    """Examples with ``chosen_ids``/``rejected_ids``/``prompt_len`` → one packed row (segments CHOSEN, REJECTED)."""

    pad_token_id: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        groups = []
        for ex in examples:
            p = int(ex["prompt_len"])
            prompt = list(ex["chosen_ids"][:p])
            if list(ex["rejected_ids"][:p]) != prompt:
                raise ValueError("packing needs chosen_ids and rejected_ids to start with the same prompt_len tokens")
            groups.append((prompt, [list(ex["chosen_ids"][p:]), list(ex["rejected_ids"][p:])]))
        batch = pack_groups(groups, self.pad_token_id)
        index = batch.pop("reward_index")
        batch["chosen_index"], batch["rejected_index"] = index[0::2].clone(), index[1::2].clone()
        if "margin" in examples[0]:
            batch["margin"] = torch.tensor([float(ex["margin"]) for ex in examples], dtype=torch.float)
        return batch


def _reward_position(seq: list[int], pad_id: int, prompt_start: int, seg_start: int, prompt_len: int) -> int:
    """Packed index of the rightmost non-pad token of ``seq`` (what the padded head reads)."""
    last = max((i for i, t in enumerate(seq) if t != pad_id), default=0)
    return prompt_start + last if last < prompt_len else seg_start + (last - prompt_len)


def dense_mask(pair_ids: torch.Tensor, segment_ids: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """[1, 1, T, T] mask; boolean (True = attend) or additive float when ``dtype`` is given (eager)."""
    p, s = pair_ids[0], segment_ids[0]
    t = p.shape[0]
    order = torch.arange(t, device=p.device)
    allowed = (p[:, None] == p[None, :]) & (order[None, :] <= order[:, None]) & (
        (s[None, :] == PROMPT) | (s[None, :] == s[:, None])
    )
    allowed = allowed[None, None]
    if dtype is None:
        return allowed
    out = torch.zeros(allowed.shape, dtype=dtype, device=p.device)
    return out.masked_fill(~allowed, torch.finfo(dtype).min)


def flex_block_mask(pair_ids: torch.Tensor, segment_ids: torch.Tensor) -> Any:
    """The same rule as :func:`dense_mask`, as a FlexAttention ``BlockMask`` (no T×T tensor)."""
    from torch.nn.attention.flex_attention import create_block_mask

    p, s = pair_ids[0], segment_ids[0]

    def mask_mod(b, h, q, k):  # noqa: ANN001 - FlexAttention's signature
        return (p[q] == p[k]) & (k <= q) & ((s[k] == PROMPT) | (s[k] == s[q]))

    t = p.shape[0]
    return create_block_mask(mask_mod, B=None, H=None, Q_LEN=t, KV_LEN=t, device=p.device)


def attention_mask_for(model: Any, pair_ids: torch.Tensor, segment_ids: torch.Tensor) -> Any:
    impl = getattr(model.config, "_attn_implementation", "sdpa") or "sdpa"
    if impl == "flex_attention":
        return flex_block_mask(pair_ids, segment_ids)
    if impl == "eager":
        return dense_mask(pair_ids, segment_ids, dtype=next(model.parameters()).dtype)
    if impl == "sdpa":
        return dense_mask(pair_ids, segment_ids)
    raise ValueError(
        f"packing needs attn_implementation in {SUPPORTED_ATTENTION}, the model uses '{impl}'. "
        "Set attn_implementation: sdpa (or packing: false)."
    )


class ScoreCapture:
    """Forward hook on the score head that keeps its per-token output ([B, T, 1])."""

    def __init__(self, head: torch.nn.Module):
        self.value: torch.Tensor | None = None
        self.handle = head.register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
        self.value = output

    def pop(self) -> torch.Tensor:
        value, self.value = self.value, None
        if value is None:
            raise RuntimeError("score head was not called during the forward pass")
        return value

    def remove(self) -> None:
        self.handle.remove()


def packed_token_rewards(model: Any, capture: ScoreCapture, batch: dict[str, torch.Tensor],
                         inner: Any | None = None) -> torch.Tensor:
    """Run ``model`` on a packed batch; return the score head's output at every token, [T]."""
    inner = inner if inner is not None else model
    mask = attention_mask_for(_config_holder(inner), batch["pair_ids"], batch["segment_ids"])
    model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], attention_mask=mask, use_cache=False)
    return capture.pop()[0, :, 0]


def packed_rewards(model: Any, capture: ScoreCapture, batch: dict[str, torch.Tensor],
                   inner: Any | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` on a packed preference batch; return (chosen rewards, rejected rewards), each [n_pairs]."""
    logits = packed_token_rewards(model, capture, batch, inner)
    return logits[batch["chosen_index"]], logits[batch["rejected_index"]]


def _config_holder(model: Any) -> Any:
    while not hasattr(model, "config") and hasattr(model, "module"):
        model = model.module
    return model
