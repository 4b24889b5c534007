"""reward/losses.py on hand-worked tensors (milliseconds each), as OpenRLHF tests its loss module."""

from __future__ import annotations

import math

import pytest
import torch

from reward.training import losses


def test_bradley_terry_with_and_without_margin():
    chosen, rejected = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([0.0, 0.0, 1.0])
    # −log σ(d) = log(1 + e^(−d)) for d = 2, 0, −2
    want = [math.log1p(math.exp(-2)), math.log(2), math.log1p(math.exp(2))]
    assert losses.bradley_terry(chosen, rejected).tolist() == pytest.approx(want)
    # a margin of 1 asks the chosen to win by 1: d = 1, −1, −3
    margin = torch.ones(3)
    want = [math.log1p(math.exp(-1)), math.log1p(math.exp(1)), math.log1p(math.exp(3))]
    assert losses.bradley_terry(chosen, rejected, margin).tolist() == pytest.approx(want)


def test_centering():
    # pair sums 1 and −3: mean of squares (1 + 9) / 2 = 5, times 0.01
    assert losses.centering(torch.tensor([1.0, -1.0]), torch.tensor([0.0, -2.0]), 0.01).item() == pytest.approx(0.05)


def test_pearson_by_hand_and_constant_input():
    x, y = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 7.0])
    # centred x (−1, 0, 1), y (−2.33, −0.33, 2.67): Σxy = 5, Σx² = 2, Σy² = 12.667
    assert losses.pearson(x, y).item() == pytest.approx(5 / math.sqrt(2 * 38 / 3))
    assert losses.pearson(torch.ones(3), y).item() == 0.0


def test_corr_penalty_is_within_class():
    """Chosen rewards follow length exactly (corr 1); rejected rewards against it (corr −1): the mean is 0,
    although reward and length correlate over all six responses."""
    lengths = torch.tensor([10.0, 20.0, 30.0])
    chosen, rejected = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([-1.0, -2.0, -3.0])
    assert losses.corr_penalty(chosen, rejected, lengths, lengths, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.corr_penalty(chosen, -rejected, lengths, lengths, 2.0).item() == pytest.approx(2.0)


def test_odin_terms():
    """Quality output free of length (within-class corr 0), length output equal to length (corr 1), head rows
    orthogonal: extra = coef·(0 − 1) + 0; the Bradley-Terry rewards are the sums of the two outputs."""
    c_len, r_len = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1.0, 2.0, 3.0, 4.0])
    quality = torch.tensor([1.0, -1.0, -1.0, 1.0])  # uncorrelated with 1, 2, 3, 4
    chosen = torch.stack([quality, c_len], dim=-1)
    rejected = torch.stack([quality - 1, r_len], dim=-1)
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    bt_c, bt_r, extra = losses.odin_terms(chosen, rejected, c_len, r_len, 0.5, weight)
    assert bt_c.tolist() == pytest.approx((quality + c_len).tolist())
    assert bt_r.tolist() == pytest.approx((quality - 1 + r_len).tolist())
    assert extra.item() == pytest.approx(-0.5)
    # parallel head rows add |cos| = 1
    assert losses.odin_terms(chosen, rejected, c_len, r_len, 0.5, torch.ones(2, 2))[2].item() == pytest.approx(0.5)
    assert losses.head_orthogonality(torch.empty(0)).item() == 0.0  # a ZeRO-3 shard holds nothing


def test_ensemble_losses_per_member():
    """[pairs, members] losses: each member's group means; members disagree where their gaps' signs differ;
    the length penalty is the mean of each member's."""
    per_pair = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0]])
    groups = torch.tensor([0, 0, 1])
    assert losses.group_mean(per_pair, groups, 2).tolist() == [[2.0, 1.0], [5.0, 4.0]]
    assert losses.group_mean(per_pair[:, 0], groups, 2).tolist() == [2.0, 5.0]  # one member: as before
    gaps = torch.tensor([[1.0, 2.0], [1.0, -1.0], [-1.0, 0.0], [0.0, 0.0]])
    assert losses.members_disagree(gaps).tolist() == [0.0, 1.0, 0.0, 0.0]  # a tie is not "above"
    lengths = torch.tensor([1.0, 2.0, 3.0])
    chosen = torch.stack([torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 1.0, 2.0])], dim=-1)
    rejected = torch.stack([torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 1.0, 1.0])], dim=-1)
    both = losses.corr_penalty(chosen, rejected, lengths, lengths, 1.0)
    first = losses.corr_penalty(chosen[:, 0], rejected[:, 0], lengths, lengths, 1.0)
    second = losses.corr_penalty(chosen[:, 1], rejected[:, 1], lengths, lengths, 1.0)
    assert first.item() == pytest.approx(1.0) and both.item() == pytest.approx((first + second).item() / 2)
