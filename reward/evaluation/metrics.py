"""Pairwise metrics on rewards: pure functions of numbers (accuracy and its interval, calibration,
length bias).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataError


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def expected_calibration_error(margins: np.ndarray, bins: int = 10) -> tuple[float, list[dict[str, float]]]:
    """ECE of p = sigmoid(margin) as the probability that chosen beats rejected.

    Pairs are folded so p ≥ 0.5 (the model's confidence in its own prediction), binned on [0.5, 1],
    and each bin's mean confidence is compared with its accuracy.
    """
    p = _sigmoid(margins)
    conf = np.where(p >= 0.5, p, 1 - p)
    hit = (margins > 0).astype(float)  # chosen is the true winner: a prediction is right iff margin > 0
    edges = np.linspace(0.5, 1.0, bins + 1)
    table, ece = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (conf >= lo) & ((conf < hi) if hi < 1.0 else (conf <= hi))
        if not sel.any():
            continue
        acc, c = float(hit[sel].mean()), float(conf[sel].mean())
        ece += sel.mean() * abs(acc - c)
        table.append({"lo": float(lo), "hi": float(hi), "count": int(sel.sum()), "accuracy": acc, "confidence": c})
    return float(ece), table


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sound at small n and near 0 or 1, unlike p ± 2σ)."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def binomial_p_above_chance(successes: int, n: int) -> float:
    """One-sided exact binomial p-value of ``successes`` or more wins out of ``n`` at p = 0.5."""
    if n == 0:
        return float("nan")
    log_terms = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2)
                 for k in range(successes, n + 1)]
    top = max(log_terms)
    return float(min(1.0, math.exp(top) * sum(math.exp(t - top) for t in log_terms)))


def compute_metrics(chosen: Sequence[float], rejected: Sequence[float],
                    chosen_len: Sequence[int] | None = None, rejected_len: Sequence[int] | None = None) -> dict[str, Any]:
    """All pair metrics. Ties (equal rewards) are counted apart, never as wins."""
    c, r = np.asarray(chosen, dtype=np.float64), np.asarray(rejected, dtype=np.float64)
    n = len(c)
    if n == 0:
        raise DataError("no pairs to evaluate: every pair was dropped or left out (see the data report above).")
    m = c - r
    wins, ties = int((m > 0).sum()), int((m == 0).sum())
    # -log sigmoid(m) computed stably
    logloss = float(np.mean(np.logaddexp(0.0, -m)))
    ece, table = expected_calibration_error(m)
    everything = np.concatenate([c, r])
    out: dict[str, Any] = {
        "n_pairs": n,
        "comparisons": n,
        "accuracy": wins / n,
        "ties": ties,
        "tie_rate": ties / n,
        "accuracy_excluding_ties": wins / (n - ties) if n > ties else float("nan"),
        # Ties count as losses here: "above chance" must not lean on a model that outputs constants.
        "accuracy_ci95": list(wilson_interval(wins, n)),
        "p_value_vs_chance": binomial_p_above_chance(wins, n),
        "mean_margin": float(m.mean()),
        "bt_logloss": logloss,
        "ece": ece,
        "calibration": table,
        "reward_mean": float(everything.mean()),
        "reward_std": float(everything.std()),
        "chosen_reward_mean": float(c.mean()),
        "rejected_reward_mean": float(r.mean()),
    }
    if chosen_len is not None and rejected_len is not None:
        cl, rl = np.asarray(chosen_len, dtype=float), np.asarray(rejected_len, dtype=float)
        lengths = np.concatenate([cl, rl])
        shorter = cl < rl
        longer = cl > rl
        out["length_bias"] = {
            "reward_length_corr": _corr(everything, lengths),
            "accuracy_chosen_shorter": float((m[shorter] > 0).mean()) if shorter.any() else None,
            "accuracy_chosen_longer": float((m[longer] > 0).mean()) if longer.any() else None,
            "n_chosen_shorter": int(shorter.sum()),
            "n_chosen_longer": int(longer.sum()),
            "baseline_prefer_shorter_accuracy": float(shorter.mean()),
        }
    else:
        out["length_bias"] = None
    return out


def best_of_n(scores: Sequence[float]) -> tuple[float, bool]:
    """RewardBench 2's best-of-n rule: 1/k if the first (the best) score is the maximum, shared by k
    scores, else 0; and whether it tied. Ranked groups' top-1 accuracy uses it too."""
    top = max(scores)
    if scores[0] != top:
        return 0.0, False
    k = sum(1 for s in scores if s == top)
    return 1.0 / k, k > 1


def group_metrics(groups: Sequence[tuple[Sequence[float], Sequence[tuple[int, int]]]]) -> dict[str, Any]:
    """Metrics of ranked groups: each a prompt's response rewards and its judged comparisons (better,
    worse). ``top1_accuracy``: over the groups whose best response is defined (it beat every other one, each
    compared), the share where the model ranks it first (:func:`best_of_n`, ties shared); ``kendall_tau``:
    the mean over groups of (concordant − discordant) / comparisons, over the judged comparisons only
    (τ-a of the human order where that order is total), a model tie counting neither way."""
    taus, top1 = [], []
    for rewards, comparisons in groups:
        if not comparisons:
            continue
        signs = [(rewards[b] > rewards[w]) - (rewards[b] < rewards[w]) for b, w in comparisons]
        taus.append(sum(signs) / len(signs))
        k = len(rewards)
        wins: dict[int, set[int]] = {}
        for b, w in comparisons:
            wins.setdefault(b, set()).add(w)
        best = [b for b, beaten in wins.items() if len(beaten) == k - 1 and k > 1]
        if len(best) == 1 and not any(w == best[0] for _, w in comparisons):
            others = [rewards[j] for j in range(k) if j != best[0]]
            top1.append(best_of_n([rewards[best[0]], *others])[0])
    return {"groups": len(taus), "responses_per_group": (sum(len(r) for r, c in groups if c) / len(taus)) if taus else None,
            "kendall_tau": float(np.mean(taus)) if taus else None,
            "top1_accuracy": float(np.mean(top1)) if top1 else None, "top1_groups": len(top1)}


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float | None:
    """Area under the ROC curve of ``scores`` for telling ``positive`` cases from the rest (the
    Mann-Whitney U statistic; tied scores count a half); None when either class is empty."""
    pos = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return None
    _, inverse, counts = np.unique(np.asarray(scores, dtype=float), return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # 1-based ranks, ties at their average
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def ensemble_metrics(chosen: Sequence[Sequence[float]], rejected: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Metrics of an ensemble's pairs ([pairs][members] rewards of chosen and of rejected): each member's
    accuracy; ``disagreement``, the share of pairs its members do not all order the same way;
    ``std_auroc_misordered``: how well the std of the members' margins tells the pairs the ensemble mean
    misorders (or ties) from those it orders right (0.5: std says nothing of its mistakes)."""
    margins = np.asarray(chosen, dtype=float) - np.asarray(rejected, dtype=float)  # [pairs, members]
    wrong = margins.mean(1) <= 0
    right_by_member = margins > 0
    return {"members": int(margins.shape[1]),
            "member_accuracy": [float(a) for a in right_by_member.mean(0)],
            "disagreement": float((right_by_member.any(1) & ~right_by_member.all(1)).mean()),
            "misordered_pairs": int(wrong.sum()),
            "mean_margin_std": float(margins.std(1).mean()),
            "std_auroc_misordered": auroc(margins.std(1).tolist(), wrong.tolist())}


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    lines = [
        f"pairs: {metrics['n_pairs']}  accuracy: {metrics['accuracy']:.4f}"
        + (" (95% CI {:.3f}–{:.3f}, one-sided p vs chance {:.2g})".format(*metrics["accuracy_ci95"],
                                                                          metrics["p_value_vs_chance"])
           if "accuracy_ci95" in metrics else "")
        + f"  ties: {metrics['ties']}",
        *([f"groups: {metrics['groups']} ({metrics['responses_per_group']:.1f} responses each)  top-1 accuracy: "
           + ("n/a" if metrics["top1_accuracy"] is None else f"{metrics['top1_accuracy']:.4f}")
           + f" ({metrics['top1_groups']} groups with one best)  Kendall tau: {metrics['kendall_tau']:.4f}"]
          if metrics.get("kendall_tau") is not None else []),
        f"mean margin: {metrics['mean_margin']:.4f}  Bradley-Terry log-loss: {metrics['bt_logloss']:.4f}  "
        f"ECE: {metrics['ece']:.4f}",
        f"reward mean/std: {metrics['reward_mean']:.4f} / {metrics['reward_std']:.4f}",
    ]
    ens = metrics.get("ensemble")
    if ens:
        auc = ens["std_auroc_misordered"]
        lines.append(f"ensemble of {ens['members']}: member accuracy "
                     + " ".join(f"{a:.4f}" for a in ens["member_accuracy"])
                     + f"; members disagree on {ens['disagreement']:.3f} of pairs; AUROC of std for the "
                     f"{ens['misordered_pairs']} misordered pairs: " + ("n/a" if auc is None else f"{auc:.3f}"))
    data = metrics.get("data")
    if data:
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(data.get("dropped", {}).items())) or "none"
        lines.append(f"data: {data['total']} pairs read, {data['kept']} evaluated; left out: {dropped}")
    lb = metrics.get("length_bias")
    if lb:
        def fmt(v: Any) -> str:
            return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"
        lines.append(
            f"length bias: corr(reward, length) {fmt(lb['reward_length_corr'])}; accuracy when chosen is shorter "
            f"{fmt(lb['accuracy_chosen_shorter'])} (n={lb['n_chosen_shorter']}), longer "
            f"{fmt(lb['accuracy_chosen_longer'])} (n={lb['n_chosen_longer']}); "
            f"'prefer the shorter' baseline {fmt(lb['baseline_prefer_shorter_accuracy'])}"
        )
    return lines


@dataclass
class PairRewards:
    """Each pair's rewards (chosen, rejected), and its responses' lengths in tokens when known."""

    chosen: list[float]
    rejected: list[float]
    chosen_len: list[int] | None = None
    rejected_len: list[int] | None = None

    def metrics(self) -> dict[str, Any]:
        """:func:`compute_metrics` of these pairs."""
        return compute_metrics(self.chosen, self.rejected, self.chosen_len, self.rejected_len)

    @property
    def has_lengths(self) -> bool:
        return self.chosen_len is not None and self.rejected_len is not None
