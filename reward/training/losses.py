"""The reward-model losses as small pure functions on tensors, as OpenRLHF keeps its losses
(``openrlhf/models/loss.py``): ``RewardkitTrainer.compute_loss`` composes them, and
``tests/test_losses.py`` checks each on hand-worked tensors in milliseconds.

- :func:`bradley_terry`: −log σ(r_chosen − r_rejected − margin) per pair (TRL's loss, margin included).
- :func:`group_mean`: the mean over groups of each group's mean per-pair loss (listwise training: each
  prompt weighs the same, whatever its number of comparisons).
- :func:`plackett_luce`: −log P(order) of a group's responses, best first, per comparison step.
- :func:`members_disagree`: whether an ensemble's members order a pair differently (a metric).
- :func:`centering`: coef · mean((r_chosen + r_rejected)²) (TRL's ``center_rewards_coefficient``).
- :func:`corr_penalty`: coef · |corr(reward, response length)| within the chosen and within the
  rejected responses (rewardkit's ``length_debias: corr_penalty``).
- :func:`odin_terms`: ODIN (Chen et al., 2024) for a two-output head (quality, length): the
  Bradley-Terry loss on their sum, plus coef · (|corr(quality, length)| within class −
  corr(length output, length) over all responses) + |cos| between the two head rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pair loss −log σ(chosen − rejected − margin), shape [n]."""
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff)


def group_mean(per_pair: torch.Tensor, pair_group: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Each group's mean of ``per_pair`` ([n_groups], or [n_groups, members] for [n, members] losses);
    ``pair_group`` names each pair's group."""
    sums = per_pair.new_zeros((n_groups, *per_pair.shape[1:])).index_add(0, pair_group, per_pair)
    counts = torch.bincount(pair_group, minlength=n_groups).to(per_pair.dtype)
    return sums / counts.clamp_min(1).view(-1, *([1] * (per_pair.dim() - 1)))


def members_disagree(gaps: torch.Tensor) -> torch.Tensor:
    """Per pair, 1.0 where an ensemble's members ([n, members] chosen − rejected gaps) do not all order
    the pair the same way (some above zero, some not), else 0.0."""
    above = gaps > 0
    return (above.any(-1) & ~above.all(-1)).float()


def plackett_luce(rewards: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Per group, −log P(order) / (K − 1) under Plackett-Luce: Σᵢ logsumexp(r[order[i:]]) − r[order[i]].
    ``order`` is [groups, K] of indices into ``rewards``, best first, −1 padded; dividing by the K − 1
    choices keeps a group's loss on the scale of one Bradley-Terry comparison (K = 2 is exactly it)."""
    mask = order >= 0
    picked = rewards.float()[order.clamp_min(0)]
    r = torch.where(mask, picked, torch.full_like(picked, -1e9))  # finite padding: no inf − inf in backward
    suffix = torch.flip(torch.logcumsumexp(torch.flip(r, [1]), dim=1), [1])
    steps = torch.where(mask, suffix - r, torch.zeros_like(r))
    return steps.sum(1) / (mask.sum(1) - 1).clamp_min(1).to(r.dtype)


def centering(chosen: torch.Tensor, rejected: torch.Tensor, coef: float) -> torch.Tensor:
    """coef · mean((chosen + rejected)²): pulls the rewards of a pair towards a mean of zero."""
    return coef * torch.mean((chosen + rejected) ** 2)


def pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of two 1-D tensors, 0 when either is constant (differentiable in ``x``)."""
    x, y = x.float() - x.float().mean(), y.float() - y.float().mean()
    denom = torch.sqrt((x * x).sum() * (y * y).sum())
    return torch.where(denom > 0, (x * y).sum() / denom.clamp_min(1e-12), torch.zeros_like(denom))


def within_class_corr(chosen: torch.Tensor, rejected: torch.Tensor, chosen_len: torch.Tensor,
                      rejected_len: torch.Tensor) -> torch.Tensor:
    """Mean of corr(reward, length) among the chosen responses and among the rejected ones. Within a
    class the quality label is fixed, so what correlates with length there is length bias; over all
    responses together, a dataset whose chosen answers tend to be longer would make the penalty fight
    the quality signal itself (measured: a pooled penalty flipped a tiny model to pure length)."""
    return 0.5 * (pearson(chosen, chosen_len.to(chosen.dtype)) + pearson(rejected, rejected_len.to(rejected.dtype)))


def corr_penalty(chosen: torch.Tensor, rejected: torch.Tensor, chosen_len: torch.Tensor, rejected_len: torch.Tensor,
                 coef: float) -> torch.Tensor:
    """coef · |within-class corr(reward, length)|; for an ensemble's [n, members] rewards, the mean over
    members of each one's penalty."""
    if chosen.dim() == 2:
        return torch.stack([corr_penalty(chosen[:, m], rejected[:, m], chosen_len, rejected_len, coef)
                            for m in range(chosen.shape[1])]).mean()
    return coef * within_class_corr(chosen, rejected, chosen_len, rejected_len).abs()


def head_orthogonality(weight: torch.Tensor) -> torch.Tensor:
    """|cos| between the two rows (quality, length) of an ODIN head's weight; 0 for an empty shard
    (ZeRO-3 holds no local copy) or a head without two rows."""
    if weight.numel() == 0 or weight.dim() != 2 or weight.shape[0] != 2:
        return torch.zeros((), device=weight.device)
    return F.cosine_similarity(weight[0], weight[1], dim=0).abs()


def odin_terms(chosen: torch.Tensor, rejected: torch.Tensor, chosen_len: torch.Tensor, rejected_len: torch.Tensor,
               coef: float, head_weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ODIN for [n, 2] rewards (quality, length): (chosen sum, rejected sum, extra loss). The length
    output takes all of the length signal (pooled over every response), the quality output none of it
    (within class)."""
    quality = within_class_corr(chosen[:, 0], rejected[:, 0], chosen_len, rejected_len)
    length = pearson(torch.cat([chosen[:, 1], rejected[:, 1]]), torch.cat([chosen_len, rejected_len]).to(chosen.dtype))
    extra = coef * (quality.abs() - length) + head_orthogonality(head_weight)
    return chosen.sum(-1), rejected.sum(-1), extra
