"""Padding-free, prompt-sharing reward forward: each prompt is computed once for both responses
(training, evaluation) or for all n responses to it (best-of-n scoring, ``pack_groups``).

A micro-batch of pairs becomes one row: ``[prompt₁ chosen₁ rejected₁ prompt₂ …]``. Position ids
restart per pair and the rejected segment reuses the chosen segment's positions, so with the rule

    attend(q, k) = same_pair(q, k) and k ≤ q and (k is prompt or segment(k) == segment(q))

joined with each layer's own window, softcap and sinks, every response token sees exactly what it
would see in its own padded sequence ``prompt + response``. The reward is read where the stock path
reads it (the rightmost non-pad token of prompt + response).

Written here because TRL 1.x has no prompt sharing for reward models (OpenRLHF packs samples but runs
the prompt twice). The modules, in the order data flows through them:

- :mod:`.layout`: groups → one packed row and its layout; rows of groups for inference.
- :mod:`.batching`: token-budget micro-batches of pairs of similar length.
- :mod:`.bootstrap`: an ensemble's per-pair, per-member bootstrap weights.
- :mod:`.groups`: listwise micro-batches: whole prompt groups, each response computed once.
- :mod:`.attention`: each layer's own attention over the row (``dense``, ``flex``, ``varlen``), and
  the choice of mode (``prepare_model``).
- :mod:`.forward`: the model called on a row; rewards read from the score head.
"""

from .attention import PACKED, dense_mask, flex_block_mask, segment_attention, varlen_available
from .batching import TokenBudgetBatchSampler, longest_row, packed_pair_lengths
from .bootstrap import bootstrap_weights, pair_weights
from .forward import ScoreCapture, packed_rewards, packed_token_rewards
from .groups import GroupBatchSampler, ListwiseCollator, group_contiguous, group_layout, ordered_group_batches
from .layout import PROMPT, PackedPart, PackedPreferenceCollator, common_prefix, pack_groups, pack_prefixed, pack_rows
from .modes import MODES, attention_features, cannot_pack, describe, packed_mode, packed_model, prepare_model

__all__ = [
    "GroupBatchSampler", "ListwiseCollator", "MODES", "PACKED", "PROMPT", "PackedPart", "PackedPreferenceCollator",
    "ScoreCapture", "TokenBudgetBatchSampler", "attention_features", "bootstrap_weights", "cannot_pack",
    "common_prefix", "dense_mask", "describe", "flex_block_mask", "group_contiguous", "group_layout", "longest_row",
    "ordered_group_batches", "pack_groups", "pack_prefixed", "pack_rows", "packed_mode", "packed_model",
    "packed_pair_lengths", "packed_rewards", "packed_token_rewards", "pair_weights", "prepare_model",
    "segment_attention", "varlen_available",
]
