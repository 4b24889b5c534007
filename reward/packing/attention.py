"""Each layer's own attention over a packed row, in every ``packed_attention`` mode.

One attention implementation, registered with transformers as :data:`PACKED`, serves all modes. The
model calls it from each layer with what that layer computes: ``scaling``, its ``sliding_window``
(per layer: Gemma 2/3's local layers, Qwen2's windowed layers, Mistral's window), ``softcap`` (Gemma
2), ``s_aux`` (attention sinks, gpt-oss) and ``dropout``; and, in a packed forward, the row's layout
(keyword :data:`PACKED`, built by ``reward.packing.layout.pack_groups``). So the rule a layer applies is
read from the layer's own call, never from one global config value. The packed rule

    attend(q, k) = same_group(q, k) and k ≤ q and (k is prompt or segment(k) == segment(q))

is joined with the layer's window on *positions* (``pos(q) − pos(k) < window``, as transformers'
``sliding_window_overlay``): positions restart per group and a suffix reuses the positions after
its prefix, so a position distance is the distance in the padded sequence.

- ``dense``: the rule as a [T, T] mask, computed by transformers' SDPA, or by the model's own eager
  attention function where the layer has a softcap or sinks (SDPA has neither).
- ``flex``: the rule as a FlexAttention ``BlockMask`` (one per window size), through transformers'
  flex attention, which applies softcap in its ``score_mod`` and sinks through the log-sum-exp.
- ``varlen``: keys and values gathered per segment (``kv_index``): a group ``[prefix s₁ s₂ …]`` is the
  segments ``(q = prefix+s₁, k = prefix+s₁)``, ``(q = s₂, k = prefix+s₂)``, …, causal aligned
  bottom-right. FlashAttention varlen on CUDA in 16 bits (the window as ``window_size=(W−1, 0)``); on
  CPU, and for a layer with softcap or sinks, the segments one at a time (:func:`segment_attention`)
  through SDPA or the model's own eager attention.

A padded call under this implementation (scoring checks, padded batches) runs SDPA with transformers'
own mask, or the model's eager attention for a layer with softcap or sinks: what the model computes.
An attention keyword this module does not know is never dropped: the packed forward stops, naming it.

Written here because transformers' packed-sequence support (``position_ids`` restarts, FlashAttention
``cu_seqlens``) cannot express a shared prefix seen by several suffixes, and a 4-D mask passed to a
model replaces the per-layer (full / sliding) masks it would have built.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch

from ..errors import RecipeError
from ..seams import model_eager_attention
from .layout import PROMPT

PACKED = "rewardkit_packed"  # the attention implementation name registered with transformers
MODE_ATTR = "_rewardkit_packed_mode"
"""Attribute of the transformers model holding its packed mode (a Python attribute: never saved)."""

LAYER_RULE = ("sliding_window", "softcap", "s_aux")
"""Attention keywords that change what a layer computes, each applied in every mode."""
PASSED_ON = frozenset({"position_ids", "use_cache", "output_attentions", "cache_position"})
"""Attention keywords with no bearing on the attention of a packed row (positions are in q and k already)."""

_PLACEHOLDER = (1, 1, 1, 1)


# --- masks -----------------------------------------------------------------------------------------
def dense_mask(group_ids: torch.Tensor, segment_ids: torch.Tensor, dtype: torch.dtype | None = None,
               position_ids: torch.Tensor | None = None, window: int | None = None) -> torch.Tensor:
    """[1, 1, T, T] mask of the packed rule (and of a sliding ``window`` over ``position_ids``);
    boolean (True = attend) or additive float when ``dtype`` is given (eager)."""
    p, s = group_ids[0], segment_ids[0]
    t = p.shape[0]
    order = torch.arange(t, device=p.device)
    allowed = (p[:, None] == p[None, :]) & (order[None, :] <= order[:, None]) & (
        (s[None, :] == PROMPT) | (s[None, :] == s[:, None])
    )
    if window is not None:
        pos = position_ids[0]
        allowed &= (pos[:, None] - pos[None, :]) < window
    allowed = allowed[None, None]
    if dtype is None:
        return allowed
    return _additive(allowed, dtype)


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    out = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return out.masked_fill(~allowed, torch.finfo(dtype).min)


def flex_block_mask(group_ids: torch.Tensor, segment_ids: torch.Tensor, position_ids: torch.Tensor | None = None,
                    window: int | None = None) -> Any:
    """The rule of :func:`dense_mask` as a FlexAttention ``BlockMask`` (no T×T tensor)."""
    from torch.nn.attention.flex_attention import create_block_mask

    p, s = group_ids[0], segment_ids[0]
    pos = position_ids[0] if position_ids is not None else None

    def mask_mod(b, h, q, k):  # noqa: ANN001 - FlexAttention's signature
        allowed = (p[q] == p[k]) & (k <= q) & ((s[k] == PROMPT) | (s[k] == s[q]))
        return allowed if window is None else allowed & (pos[q] - pos[k] < window)

    t = p.shape[0]
    return create_block_mask(mask_mod, B=None, H=None, Q_LEN=t, KV_LEN=t, device=p.device)


def _is_placeholder(mask: Any) -> bool:
    """Whether ``mask`` is the packed forward's stand-in (no padded call builds a [1, 1, 1, 1] mask for >1 query)."""
    return isinstance(mask, torch.Tensor) and tuple(mask.shape) == _PLACEHOLDER and mask.dtype == torch.bool


def placeholder_mask(device: Any) -> torch.Tensor:
    """The ``attention_mask`` of a packed call: a 4-D tensor makes transformers build no mask of its own
    (the layout carries the rule); a layer that never gets the layout recognises it and stops."""
    return torch.ones(_PLACEHOLDER, dtype=torch.bool, device=device)


def _cached(layout: dict[str, Any], key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
    """A mask built once per forward (the same layout dict reaches every layer), per window and dtype."""
    cache = layout.setdefault("_masks", {})
    if key not in cache:
        cache[key] = make()
    return cache[key]


# --- the registered attention function --------------------------------------------------------------
def packed_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: Any, scaling: float | None = None, dropout: float = 0.0,
                             **kwargs: Any) -> tuple[torch.Tensor, Any]:
    """transformers attention function (query [1, H, T, D], key/value [1, Hkv, T, D] → ([1, T, H, D], …)):
    the packed rule joined with this layer's own rule when the forward passed a layout, the model's own
    attention otherwise."""
    layout = kwargs.pop(PACKED, None)
    if layout is None:
        if _is_placeholder(attention_mask) and query.shape[2] > 1:
            # a packed forward whose layout never reached this layer: attention under the placeholder would
            # let every token see every pair, and train or score on wrong rewards without a sign
            raise RecipeError(f"packing: {type(module).__name__} does not pass keyword arguments on to its attention "
                              "function (transformers' AttentionInterface), so a packed row cannot be computed "
                              "exactly. Use packing: false.")
        return _model_attention(module, query, key, value, attention_mask, scaling, dropout, kwargs)
    unknown = sorted(k for k, v in kwargs.items() if v is not None and k not in PASSED_ON and k not in LAYER_RULE)
    if unknown:
        raise RecipeError(f"packing: {type(module).__name__} passes {', '.join(unknown)} to its attention, which the "
                          "packed forward does not compute. Use packing: false.")
    rule = {k: kwargs[k] for k in LAYER_RULE if kwargs.get(k) is not None}
    window = rule.get("sliding_window")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    mode = layout["mode"]
    if mode == "dense":
        dtype = query.dtype if _needs_eager(rule) else None
        mask = _cached(layout, ("dense", window, dtype), lambda: dense_mask(
            layout["group_ids"], layout["segment_ids"], dtype, layout["position_ids"], window))
        return _model_attention(module, query, key, value, mask, scale, dropout, rule)
    if mode == "flex":
        from transformers.integrations.flex_attention import flex_attention_forward

        block = _cached(layout, ("flex", window), lambda: flex_block_mask(
            layout["group_ids"], layout["segment_ids"], layout["position_ids"], window))
        return flex_attention_forward(module, query, key, value, block, scaling=scale, softcap=rule.get("softcap"),
                                      s_aux=rule.get("s_aux"), dropout=dropout)
    q = query[0].transpose(0, 1)  # [T, H, D]
    k = key[0].transpose(0, 1).index_select(0, layout["kv_index"])
    v = value[0].transpose(0, 1).index_select(0, layout["kv_index"])
    half = _half_dtype(q, v)
    if half is not None and varlen_available(q.device) and not _needs_eager(rule) and not dropout \
            and (window is None or _varlen_takes_window()):
        out = _flash_varlen(q.to(half), k.to(half), v.to(half), layout, scale, window).to(query.dtype)
    else:
        attend = None
        if _needs_eager(rule):
            def attend(qs: torch.Tensor, ks: torch.Tensor, vs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
                return _model_attention(module, qs, ks, vs, _additive(mask, qs.dtype), scale, dropout, rule)[0]
        out = segment_attention(q, k, v, layout, scale, window, dropout, attend)
    return out.unsqueeze(0), None


def _needs_eager(rule: dict[str, Any]) -> bool:
    """Whether a layer's rule is beyond SDPA: a logit softcap or attention sinks."""
    return rule.get("softcap") is not None or rule.get("s_aux") is not None


def _model_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: Any,
                     scaling: float | None, dropout: float, rule: dict[str, Any]) -> tuple[torch.Tensor, Any]:
    """What the model itself computes for ``mask``: its own eager attention for a softcap or sinks,
    transformers' SDPA otherwise (both take the layer's keywords; a window is already in the mask)."""
    if _needs_eager(rule):
        eager = model_eager_attention(module)
        if eager is None:
            raise RecipeError(f"packing: {type(module).__name__} has {', '.join(sorted(rule))} but no eager attention "
                              "function to compute it. Use packing: false.")
        if mask is None or mask.dtype == torch.bool:  # eager adds the mask to the logits
            mask = _additive(_causal(query, key) if mask is None else mask, query.dtype)
        return eager(module, query, key, value, mask, scaling=scaling, dropout=dropout, **rule)
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, mask, dropout=dropout, scaling=scaling, **rule)


def _causal(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """The causal mask transformers leaves out (None) when SDPA can use ``is_causal``, bottom-right aligned."""
    lq, lk = query.shape[-2], key.shape[-2]
    return torch.ones(lq, lk, dtype=torch.bool, device=query.device).tril(lk - lq)[None, None]


def segment_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: dict[str, Any],
                      scale: float, window: int | None = None, dropout: float = 0.0,
                      attend: Callable[..., torch.Tensor] | None = None) -> torch.Tensor:
    """The varlen rule one segment at a time (causal aligned bottom-right, within ``window`` positions):
    the CPU path and the reference the tests compare the CUDA kernel against. q [Tq, H, D], k/v [Tk,
    Hkv, D] → [Tq, H, D]; the segments are ``layout``'s ``cu_seq_q``/``cu_seq_k``. ``attend(q, k, v,
    allowed)`` ([1, H, Lq, D]…, [1, 1, Lq, Lk] bool → [1, Lq, H, D]) computes a segment instead of SDPA
    (the model's eager attention for a softcap or sinks).

    Written for speed on CPU, where it is the default (``auto``): the segments come from ``split`` and
    go back with one ``cat`` (slices would each give the backward a zero-filled full-size gradient), a
    square segment without a window is plain causal with no mask, grouped-query heads go to SDPA as
    they are (``enable_gqa``) instead of being copied, and every segment reaches SDPA's fused kernel (4-D
    inputs). On 8 HH-RLHF pairs of the 135M shape (~1,800 tokens a row, fp32) a layer's attention,
    forward and backward, took ~33 ms on SDPA's math path, 55 ms with slices and copied heads, and 144
    ms with the dense T×T mask. The math path (3-D inputs, until 2026-12-07) made a packed bf16 step
    of that shape ~1.75× slower per token than stock TRL's padded one on qa-feedback's ~850-token
    segments; on whole bf16 epochs (2-core CPU) the fused kernel took 43.7 s against the math path's
    87.0 s (listwise, 12 qa-feedback questions) and 23.2 s against 25.4 s (48 HH pairs). It even beat
    using the math path only below 192 queries, where it is faster alone: 45.9 s and 23.8 s."""
    import torch.nn.functional as F

    gqa = q.shape[1] != k.shape[1]
    cu_q, cu_k = layout["cu_seq_q"], layout["cu_seq_k"]
    len_q = (cu_q[1:] - cu_q[:-1]).tolist()
    len_k = (cu_k[1:] - cu_k[:-1]).tolist()
    out = []
    for qs, ks, vs in zip(q.split(len_q), k.split(len_k), v.split(len_k)):
        lq, lk = qs.shape[0], ks.shape[0]
        if lq == 0:
            continue
        # [1, H, L, D]: SDPA's fused CPU kernel takes 4-D inputs only; 3-D ones always run its math path
        qs, ks, vs = qs.transpose(0, 1)[None], ks.transpose(0, 1)[None], vs.transpose(0, 1)[None]
        allowed = None
        if lq != lk or window is not None or attend is not None:  # query i sees keys (i + lk − lq − window, i + lk − lq]
            allowed = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(lk - lq)
            if window is not None:
                allowed &= ~torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(lk - lq - window)
        if attend is not None:
            out.append(attend(qs, ks, vs, allowed[None, None])[0])
            continue
        if allowed is None:
            o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale, enable_gqa=gqa, dropout_p=dropout)
        else:
            o = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=allowed, scale=scale, enable_gqa=gqa,
                                               dropout_p=dropout)
        out.append(o[0].transpose(0, 1))
    return torch.cat(out) if out else torch.empty_like(q)


@functools.cache
def _varlen_params() -> frozenset[str]:
    from torch.nn.attention.varlen import varlen_attn

    return frozenset(inspect.signature(varlen_attn).parameters)


def _varlen_takes_window() -> bool:
    return "window_size" in _varlen_params()


def _half_dtype(q: torch.Tensor, v: torch.Tensor) -> torch.dtype | None:
    """The 16-bit dtype FlashAttention should run in, or None. Under autocast, RoPE leaves q and k in
    fp32 (cos/sin follow the fp32 residual stream) while v is already 16-bit: use autocast's dtype,
    as transformers' own flash path does."""
    if not q.is_cuda:
        return None
    if torch.is_autocast_enabled("cuda"):
        return torch.get_autocast_dtype("cuda")
    return v.dtype if v.dtype in (torch.float16, torch.bfloat16) else None


def _flash_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: dict[str, Any], scale: float,
                  window: int | None = None) -> torch.Tensor:
    """``varlen_attn`` with causal segments aligned bottom-right, across torch releases: newer ones
    express causality (and a window of W positions) as ``window_size=(W − 1 or −1, 0)``, older ones as
    ``is_causal=True`` (no window: the caller runs :func:`segment_attention` instead)."""
    from torch.nn.attention.varlen import varlen_attn

    params = _varlen_params()
    kw: dict[str, Any] = {"scale": scale}
    if "window_size" in params:
        kw["window_size"] = (-1 if window is None else window - 1, 0)
    else:
        kw["is_causal"] = True
    if k.shape[1] != q.shape[1]:
        if "enable_gqa" in params:
            kw["enable_gqa"] = True
        else:
            rep = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    cu_q, cu_k = layout["cu_seq_q"], layout["cu_seq_k"]
    return varlen_attn(q, k, v, cu_q.to(q.device, torch.int32), cu_k.to(q.device, torch.int32),
                       int(layout["max_q"]), int(layout["max_k"]), **kw)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(PACKED, packed_attention_forward)
    # padded calls get an additive mask, always materialised: SDPA takes it, and so does the eager attention
    # of a softcap or sinks layer (it adds the mask to its logits)
    AttentionMaskInterface.register(PACKED, eager_mask)


def varlen_available(device: torch.device | str) -> bool:
    """Whether FlashAttention varlen (``torch.nn.attention.varlen``) can run on ``device``."""
    return torch.device(device).type == "cuda" and _has_varlen_module()


@functools.cache
def _has_varlen_module() -> bool:
    # looked up once: the attention function asks on every layer of every forward
    import importlib.util

    try:
        return importlib.util.find_spec("torch.nn.attention.varlen") is not None
    except ImportError:
        return False
