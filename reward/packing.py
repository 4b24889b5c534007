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
runs the prompt twice). Three ways to apply the rule (``packed_attention`` in a recipe):

- ``dense``: a [T, T] boolean mask for SDPA/eager (the plain path).
- ``flex``: a FlexAttention ``BlockMask`` (no T×T tensor; needs ``torch.compile``'d kernels).
- ``varlen``: variable-length FlashAttention (``torch.nn.attention.varlen``), no mask at all.
  A group ``[prefix s₁ s₂ …]`` becomes the segments ``(q = prefix+s₁, k = prefix+s₁)``,
  ``(q = s₂, k = prefix+s₂)``, …: queries stay where they are, keys and values are gathered
  (``kv_index``), and FlashAttention's causal mask, aligned bottom-right when a segment has fewer
  queries than keys, is exactly the rule above. CUDA fp16/bf16; on CPU the same segments run
  through SDPA one at a time (``segment_attention``: the CPU default, and the tests' reference).

``TokenBudgetBatchSampler`` makes a micro-batch a token budget filled with pairs of similar length.
"""

from __future__ import annotations

import functools
import inspect
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from .errors import RecipeError
from .modeling import head_name, unwrap_peft
from .seams import attn_implementation, config_holder

PROMPT = 0  # segment id of a group's shared prefix; suffix j (chosen, rejected, …) is segment j + 1
VARLEN = "rewardkit_varlen"  # the attention implementation name registered with transformers
SUPPORTED_ATTENTION = ("sdpa", "eager", "flex_attention", VARLEN)


def pack_groups(groups: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]], pad_token_id: int) -> dict[str, Any]:
    """Groups of (shared prefix, [suffix₁, suffix₂, …]) → one packed row ``[prefix₁ s₁ s₂ … prefix₂ …]``.

    Suffix j of a group is segment j + 1 and reuses the positions after the prefix, so under the mask
    rule each suffix sees only its group's prefix and itself. ``reward_index`` holds, group by group and
    suffix by suffix, the packed index where the padded model reads the reward of ``prefix + suffix``.

    The varlen layout (``kv_index``, ``cu_seq_q``, ``cu_seq_k``, ``max_q``, ``max_k``; see the module
    docstring) is built here on the host too, so the forward needs no device→host sync.
    """
    ids: list[int] = []
    pos: list[int] = []
    group: list[int] = []
    kind: list[int] = []
    reward_index: list[int] = []
    kv_index: list[int] = []
    cu_q, cu_k = [0], [0]
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
            # segment j: the first one's queries include the prefix; later ones see it as keys only
            q_from = start if j == 0 else seg_start
            kv_index += range(start, start + p)
            kv_index += range(seg_start, len(ids))
            cu_q.append(cu_q[-1] + len(ids) - q_from)
            cu_k.append(cu_k[-1] + p + len(ids) - seg_start)
        if not suffixes:  # a bare prefix is a causal segment of its own
            kv_index += range(start, len(ids))
            cu_q.append(cu_q[-1] + p)
            cu_k.append(cu_k[-1] + p)
    seg_q = [b - a for a, b in zip(cu_q, cu_q[1:])]
    seg_k = [b - a for a, b in zip(cu_k, cu_k[1:])]
    return {
        "input_ids": torch.tensor([ids], dtype=torch.long),
        "position_ids": torch.tensor([pos], dtype=torch.long),
        "group_ids": torch.tensor([group], dtype=torch.long),
        "segment_ids": torch.tensor([kind], dtype=torch.long),
        "reward_index": torch.tensor(reward_index, dtype=torch.long),
        "kv_index": torch.tensor(kv_index, dtype=torch.long),
        "cu_seq_q": torch.tensor(cu_q, dtype=torch.int32),
        "cu_seq_k": torch.tensor(cu_k, dtype=torch.int32),
        "max_q": max(seg_q, default=0),
        "max_k": max(seg_k, default=0),
    }


@dataclass
class PackedPreferenceCollator:
    """Examples with ``chosen_ids``/``rejected_ids``/``prompt_len`` → one packed row (chosen: segment 1, rejected: 2)."""

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
        # response token counts: what length debiasing correlates rewards with
        batch["chosen_len"] = torch.tensor([len(s[0]) for _, s in groups], dtype=torch.float)
        batch["rejected_len"] = torch.tensor([len(s[1]) for _, s in groups], dtype=torch.float)
        if "margin" in examples[0]:
            batch["margin"] = torch.tensor([float(ex["margin"]) for ex in examples], dtype=torch.float)
        return batch


def _reward_position(seq: list[int], pad_id: int, prompt_start: int, seg_start: int, prompt_len: int) -> int:
    """Packed index of the rightmost non-pad token of ``seq`` (what the padded head reads)."""
    last = max((i for i, t in enumerate(seq) if t != pad_id), default=0)
    return prompt_start + last if last < prompt_len else seg_start + (last - prompt_len)


def dense_mask(group_ids: torch.Tensor, segment_ids: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """[1, 1, T, T] mask; boolean (True = attend) or additive float when ``dtype`` is given (eager)."""
    p, s = group_ids[0], segment_ids[0]
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


def flex_block_mask(group_ids: torch.Tensor, segment_ids: torch.Tensor) -> Any:
    """The same rule as :func:`dense_mask`, as a FlexAttention ``BlockMask`` (no T×T tensor)."""
    from torch.nn.attention.flex_attention import create_block_mask

    p, s = group_ids[0], segment_ids[0]

    def mask_mod(b, h, q, k):  # noqa: ANN001 - FlexAttention's signature
        return (p[q] == p[k]) & (k <= q) & ((s[k] == PROMPT) | (s[k] == s[q]))

    t = p.shape[0]
    return create_block_mask(mask_mod, B=None, H=None, Q_LEN=t, KV_LEN=t, device=p.device)


_PLACEHOLDER = (1, 1, 1, 1)


def _is_placeholder(mask: Any) -> bool:
    """Whether ``mask`` is the varlen path's stand-in (no padded call builds a [1, 1, 1, 1] mask for >1 query)."""
    return isinstance(mask, torch.Tensor) and tuple(mask.shape) == _PLACEHOLDER and mask.dtype == torch.bool


def attention_mask_for(model: Any, group_ids: torch.Tensor, segment_ids: torch.Tensor) -> Any:
    impl = attn_implementation(model)
    if impl == VARLEN:  # no mask: a 4-D placeholder makes transformers skip building one
        return torch.ones(_PLACEHOLDER, dtype=torch.bool, device=group_ids.device)
    if impl == "flex_attention":
        return flex_block_mask(group_ids, segment_ids)
    if impl == "eager":
        return dense_mask(group_ids, segment_ids, dtype=next(model.parameters()).dtype)
    if impl == "sdpa":
        return dense_mask(group_ids, segment_ids)

    raise RecipeError(
        f"packing needs attn_implementation in {SUPPORTED_ATTENTION}, the model uses '{impl}'. "
        "Set attn_implementation: sdpa (or packing: false)."
    )


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
    [T, outputs] with ``all_outputs`` (an ODIN head's quality and length columns)."""
    holder = config_holder(inner if inner is not None else model)
    mask = attention_mask_for(holder, batch["group_ids"], batch["segment_ids"])
    extra = {}
    if attn_implementation(holder) == VARLEN:  # reaches every attention layer through the model's **kwargs
        extra[VARLEN] = {k: batch[k] for k in ("kv_index", "cu_seq_q", "cu_seq_k", "max_q", "max_k")}
    model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], attention_mask=mask, use_cache=False,
          **extra)
    out = capture.pop()[0]
    return out if all_outputs else out[:, 0]


def packed_rewards(model: Any, capture: ScoreCapture, batch: dict[str, torch.Tensor],
                   inner: Any | None = None, all_outputs: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` on a packed preference batch; return (chosen rewards, rejected rewards), each
    [n_pairs] (or [n_pairs, outputs] with ``all_outputs``)."""
    logits = packed_token_rewards(model, capture, batch, inner, all_outputs)
    return logits[batch["chosen_index"]], logits[batch["rejected_index"]]


# --- attention implementations ------------------------------------------------------------------
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


def set_packed_attention(model: Any, mode: str, device: torch.device | str, half: bool = True) -> str:
    """Point ``model`` at the attention the packed forward should use (``auto``: the varlen layout on
    CPU and on CUDA in fp16/bf16 (``half``), else the model's own SDPA/eager with a dense mask); returns
    the implementation name. A model on flex or another non-default implementation keeps it under ``auto``.

    Padded calls (scoring checks, ``packing: false`` evaluation) keep working under every choice:
    the varlen implementation falls back to SDPA with transformers' own mask when no layout is given."""
    current = attn_implementation(model)
    if mode == "auto":
        if current not in ("sdpa", "eager", VARLEN):
            return current
        # the varlen layout: FlashAttention on CUDA in 16 bits; per-segment SDPA on CPU, where it beats a
        # dense T×T mask (segment_attention). CUDA in fp32 keeps the dense mask: one kernel, not a loop.
        on_cpu = torch.device(device).type == "cpu"
        mode = "varlen" if on_cpu or (half and varlen_available(device)) else "dense"
    if mode == "dense":
        impl = current if current in ("sdpa", "eager") else "sdpa"
    else:
        impl = {"varlen": VARLEN, "flex": "flex_attention"}[mode]
    if impl == VARLEN:
        if torch.device(device).type == "cuda" and not (half and varlen_available(device)):

            raise RecipeError("packed_attention: varlen runs FlashAttention in fp16/bf16 (torch ≥ 2.10) on CUDA; "
                             "this run is fp32 or the kernel is missing: use packed_attention: dense or auto.")
        _register_varlen()
    if impl != current:
        # a PEFT wrapper forwards attributes only partly: switch the transformers model itself
        target = unwrap_peft(model) if hasattr(model, "get_base_model") else config_holder(model)
        target.set_attn_implementation(impl)
    return impl


def _register_varlen() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(VARLEN, varlen_attention_forward)
    AttentionMaskInterface.register(VARLEN, sdpa_mask)  # padded calls get SDPA's mask


def varlen_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: Any, scaling: float | None = None, dropout: float = 0.0,
                             **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers attention function: varlen segments when the packed forward passed a layout,
    SDPA otherwise. query [1, H, T, D], key/value [1, Hkv, T, D] → ([1, T, H, D], None)."""
    layout = kwargs.pop(VARLEN, None)
    if layout is None:
        if _is_placeholder(attention_mask) and query.shape[2] > 1:
            # a packed forward whose layout never reached this layer: SDPA under the placeholder would let
            # every token see every pair, and train or score on wrong rewards without a sign

            raise RecipeError("packed_attention: varlen needs the model's attention layers to pass on keyword "
                              "arguments (transformers' AttentionInterface); this model's do not. "
                              "Use packed_attention: dense.")
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    q = query[0].transpose(0, 1)  # [T, H, D]
    k = key[0].transpose(0, 1).index_select(0, layout["kv_index"])
    v = value[0].transpose(0, 1).index_select(0, layout["kv_index"])
    scale = scaling if scaling is not None else q.shape[-1] ** -0.5
    half = _half_dtype(q, v)
    if half is not None and varlen_available(q.device):
        out = _flash_varlen(q.to(half), k.to(half), v.to(half), layout, scale).to(query.dtype)
    else:
        out = segment_attention(q, k, v, layout["cu_seq_q"], layout["cu_seq_k"], scale)
    return out.unsqueeze(0), None


def _half_dtype(q: torch.Tensor, v: torch.Tensor) -> torch.dtype | None:
    """The 16-bit dtype FlashAttention should run in, or None. Under autocast, RoPE leaves q and k in
    fp32 (cos/sin follow the fp32 residual stream) while v is already 16-bit: use autocast's dtype,
    as transformers' own flash path does."""
    if not q.is_cuda:
        return None
    if torch.is_autocast_enabled("cuda"):
        return torch.get_autocast_dtype("cuda")
    return v.dtype if v.dtype in (torch.float16, torch.bfloat16) else None


_VARLEN_PARAMS: set[str] | None = None


def _flash_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: dict[str, Any], scale: float) -> torch.Tensor:
    """``varlen_attn`` with causal segments aligned bottom-right, across torch releases: newer ones
    express causality as ``window_size=(-1, 0)``, older ones as ``is_causal=True``."""
    global _VARLEN_PARAMS
    from torch.nn.attention.varlen import varlen_attn

    if _VARLEN_PARAMS is None:
        _VARLEN_PARAMS = set(inspect.signature(varlen_attn).parameters)
    kw: dict[str, Any] = {"scale": scale}
    kw.update({"window_size": (-1, 0)} if "window_size" in _VARLEN_PARAMS else {"is_causal": True})
    if k.shape[1] != q.shape[1]:
        if "enable_gqa" in _VARLEN_PARAMS:
            kw["enable_gqa"] = True
        else:
            rep = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    cu_q, cu_k = layout["cu_seq_q"], layout["cu_seq_k"]
    return varlen_attn(q, k, v, cu_q.to(q.device, torch.int32), cu_k.to(q.device, torch.int32),
                       int(layout["max_q"]), int(layout["max_k"]), **kw)


def segment_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: torch.Tensor, cu_k: torch.Tensor,
                      scale: float) -> torch.Tensor:
    """The varlen rule one segment at a time through SDPA (causal, aligned bottom-right): the CPU path
    and the reference the tests compare the CUDA kernel against. q [Tq, H, D], k/v [Tk, Hkv, D] → [Tq, H, D].

    Written for speed on CPU, where it is the default (``auto``): the segments come from ``split``
    and go back with one ``cat`` (slices would each give the backward a zero-filled full-size
    gradient), a square segment (a prompt and its first response) is plain causal with no mask, and
    grouped-query heads go to SDPA as they are (``enable_gqa``) instead of being copied. On 8 HH-RLHF
    pairs of the 135M shape (~1,800 tokens a row) a layer's attention, forward and backward, took
    ~33 ms this way, 55 ms with slices and copied heads, and 144 ms with the dense T×T mask."""
    import torch.nn.functional as F

    gqa = q.shape[1] != k.shape[1]
    len_q = (cu_q[1:] - cu_q[:-1]).tolist()
    len_k = (cu_k[1:] - cu_k[:-1]).tolist()
    out = []
    for qs, ks, vs in zip(q.split(len_q), k.split(len_k), v.split(len_k)):
        lq, lk = qs.shape[0], ks.shape[0]
        if lq == 0:
            continue
        qs, ks, vs = qs.transpose(0, 1), ks.transpose(0, 1), vs.transpose(0, 1)
        if lq == lk:
            o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale, enable_gqa=gqa)
        else:  # query i sees keys up to i + (lk - lq): causal aligned bottom-right
            allowed = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(lk - lq)
            o = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=allowed, scale=scale, enable_gqa=gqa)
        out.append(o.transpose(0, 1))
    return torch.cat(out) if out else torch.empty_like(q)


# --- token-budget micro-batches -----------------------------------------------------------------

class TokenBudgetBatchSampler:
    """Micro-batches of pairs whose packed tokens (prompt once + both responses) stay within
    ``max_tokens``, filled with pairs of similar length.

    Pairs are sorted by packed length and cut greedily into batches once, so the number of batches
    (and with it the Trainer's step count and LR schedule) is fixed; each epoch visits the batches in
    a new seeded order. A pair longer than the budget forms a batch of its own, never dropped.
    Written here because neither TRL nor transformers batches by tokens (TRL's ``padding_free`` still
    takes a fixed pair count)."""

    def __init__(self, lengths: Sequence[int], max_tokens: int, seed: int = 0, shuffle: bool = True):
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be > 0, got {max_tokens}")
        order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
        self.batches: list[list[int]] = []
        current: list[int] = []
        used = 0
        for i in order:
            if current and used + lengths[i] > max_tokens:
                self.batches.append(current)
                current, used = [], 0
            current.append(i)
            used += lengths[i]
        if current:
            self.batches.append(current)
        self.seed, self.shuffle, self.epoch = seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        order = list(range(len(self.batches)))
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        for n in order:
            yield list(self.batches[n])


def packed_pair_lengths(dataset: Any) -> list[int]:
    """Tokens each pair takes in a packed row: the prompt once plus both responses. Read as Arrow list
    lengths a batch at a time, so a memory-mapped set of any size is never materialised."""
    import pyarrow.compute as pc

    out: list[int] = []
    for batch in dataset.with_format("arrow").iter(batch_size=65536):
        n = pc.add(pc.list_value_length(batch["chosen_ids"]), pc.list_value_length(batch["rejected_ids"]))
        out.extend(pc.subtract(n, batch["prompt_len"].cast("int32")).to_pylist())
    return out


def longest_row(dataset: Any) -> int:
    """The longest ``chosen_ids``/``rejected_ids`` row of a tokenized set, from Arrow list lengths."""
    import pyarrow.compute as pc

    longest = 0
    for batch in dataset.with_format("arrow").iter(batch_size=65536):
        for name in ("chosen_ids", "rejected_ids"):
            longest = max(longest, pc.max(pc.list_value_length(batch[name])).as_py() or 0)
    return longest


# --- inference rows ------------------------------------------------------------------------------

def common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all ``seqs`` share (the prompt, plus any common start of the answers)."""
    n = 0
    for column in zip(*seqs):
        if any(t != column[0] for t in column):
            break
        n += 1
    return n


class PackedPart(NamedTuple):
    """A group's share of a packed row: its sequences ``first``, ``first + 1``, … as prefix + suffix."""

    group: int
    """Index of the group (a pair, a prompt's n answers) in the caller's list."""
    first: int
    """Index, inside its group, of the first sequence this part holds."""
    prefix: list[int]
    """The tokens all the group's sequences start with, computed once."""
    suffixes: list[list[int]]


def pack_rows(groups: Sequence[Sequence[Sequence[int]]], budget: int) -> list[list[PackedPart]]:
    """Greedy next-fit of groups, longest first, into rows of at most ``budget`` tokens; a group whose
    prefix + suffixes exceed the budget is split into parts that each repeat the prefix."""
    parts = []
    for g, seqs in enumerate(groups):
        p = common_prefix(seqs) if len(seqs) > 1 else 0
        prefix, first, suffixes, cost = seqs[0][:p], 0, [], p
        for j, s in enumerate(seqs):
            if suffixes and cost + len(s) - p > budget:
                parts.append((cost, PackedPart(g, first, list(prefix), suffixes)))
                first, suffixes, cost = j, [], p
            suffixes.append(list(s[p:]))
            cost += len(s) - p
        parts.append((cost, PackedPart(g, first, list(prefix), suffixes)))
    rows: list[list[PackedPart]] = []
    used = budget  # the first part opens a row
    for cost, part in sorted(parts, key=lambda x: x[0], reverse=True):
        if used + cost > budget:
            rows.append([])
            used = 0
        rows[-1].append(part)
        used += cost
    return rows
