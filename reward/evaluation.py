"""Reward-model evaluation: exact accuracy, Bradley-Terry log-loss, calibration, length bias, plots.

Everything here works on plain arrays of chosen/rejected rewards and response lengths, so the
same numbers come out of ``rewardkit eval``, the end of training and export verification.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError
from .rundir import METRICS, atomic_write_text, metrics_json
from .scoring import Batching


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


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    lines = [
        f"pairs: {metrics['n_pairs']}  accuracy: {metrics['accuracy']:.4f}"
        + (" (95% CI {:.3f}–{:.3f}, one-sided p vs chance {:.2g})".format(*metrics["accuracy_ci95"],
                                                                          metrics["p_value_vs_chance"])
           if "accuracy_ci95" in metrics else "")
        + f"  ties: {metrics['ties']}",
        f"mean margin: {metrics['mean_margin']:.4f}  Bradley-Terry log-loss: {metrics['bt_logloss']:.4f}  "
        f"ECE: {metrics['ece']:.4f}",
        f"reward mean/std: {metrics['reward_mean']:.4f} / {metrics['reward_std']:.4f}",
    ]
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


def write_report(report_dir: str | Path, metrics: dict[str, Any], rewards: PairRewards,
                 title: str = "Reward model evaluation", max_length: int | None = None) -> list[Path]:
    """metrics.json, pair_rewards.jsonl (one line a pair, for your own analysis), report.md and three
    PNG plots (histogram, reliability diagram with per-bin intervals, reward vs length)."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    c, r = np.asarray(rewards.chosen, float), np.asarray(rewards.rejected, float)
    files = [_plot_histogram(out / "reward_histogram.png", c, r, metrics),
             _plot_reliability(out / "reliability_diagram.png", len(c), metrics)]
    if rewards.has_lengths:
        files.append(_plot_lengths(out / "reward_vs_length.png", rewards, metrics, max_length))
    return files + _write_tables(out, metrics, rewards, title)


def _plot_histogram(path: Path, c: np.ndarray, r: np.ndarray, metrics: dict[str, Any]) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(min(c.min(), r.min()), max(c.max(), r.max()), 40)
    ax.hist(c, bins=bins, alpha=0.6, label=f"chosen (mean {c.mean():.2f})", color="tab:green")
    ax.hist(r, bins=bins, alpha=0.6, label=f"rejected (mean {r.mean():.2f})", color="tab:red")
    ax.set_xlabel("reward")
    ax.set_ylabel("pairs")
    ax.set_title(f"Rewards, chosen vs rejected (accuracy {metrics['accuracy']:.3f}, n={len(c)})")
    ax.legend()
    return _save(fig, path)


def _plot_reliability(path: Path, n: int, metrics: dict[str, Any]) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    table = metrics["calibration"]
    ax.plot([0.5, 1], [0.5, 1], "--", color="gray", label="perfect calibration")
    if table:
        conf = np.array([b["confidence"] for b in table])
        acc = np.array([b["accuracy"] for b in table])
        # A bin of 3 pairs says little: show each bin's 95% interval and its count.
        ci = np.array([wilson_interval(round(b["accuracy"] * b["count"]), b["count"]) for b in table])
        ax.errorbar(conf, acc, yerr=[acc - ci[:, 0], ci[:, 1] - acc], fmt="-o", color="tab:blue", capsize=3,
                    label="model (95% interval per bin)")
        for x, y, b in zip(conf, acc, table):
            ax.annotate(f"n={b['count']}", (x, y), textcoords="offset points", xytext=(4, -12), fontsize=7)
    ax.set_xlim(0.5, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence: sigmoid(|margin|)")
    ax.set_ylabel("accuracy in bin")
    ax.set_title(f"Reliability diagram (ECE {metrics['ece']:.3f}, n={n})")
    ax.legend(loc="lower right")
    return _save(fig, path)


def _plot_lengths(path: Path, rewards: PairRewards, metrics: dict[str, Any], max_length: int | None) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.6))
    c, r = np.asarray(rewards.chosen, float), np.asarray(rewards.rejected, float)
    cl, rl = np.asarray(rewards.chosen_len, float), np.asarray(rewards.rejected_len, float)
    ax.scatter(rl, r, s=6, alpha=0.35, color="tab:red", label="rejected")
    ax.scatter(cl, c, s=6, alpha=0.35, color="tab:green", label="chosen")
    lengths, values = np.concatenate([cl, rl]), np.concatenate([c, r])
    edges = np.unique(np.quantile(lengths, np.linspace(0, 1, 11)))
    if len(edges) > 2:  # mean reward per length decile: the trend the cloud hides
        idx = np.clip(np.searchsorted(edges, lengths, side="right") - 1, 0, len(edges) - 2)
        centres = [lengths[idx == k].mean() for k in range(len(edges) - 1) if (idx == k).any()]
        means = [values[idx == k].mean() for k in range(len(edges) - 1) if (idx == k).any()]
        ax.plot(centres, means, "-o", color="black", ms=3, label="mean reward per length decile")
    if max_length:
        ax.axvline(max_length, ls=":", color="gray", label=f"max_length {max_length} (longer: first tokens scored)")
    if lengths.min() >= 1 and lengths.max() > 5 * max(np.median(lengths), 1.0):
        ax.set_xscale("log")  # skewed lengths (most answers short): a log axis spreads the crowd
    corr = (metrics["length_bias"] or {}).get("reward_length_corr")
    corr_text = "n/a" if corr is None or not math.isfinite(corr) else f"{corr:.3f}"
    ax.set_xlabel("response length (tokens)")
    ax.set_ylabel("reward")
    ax.set_title(f"Reward vs response length (corr {corr_text})")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)  # below: the cloud fills the axes
    return _save(fig, path)


def _write_tables(out: Path, metrics: dict[str, Any], rewards: PairRewards, title: str) -> list[Path]:
    """metrics.json, pair_rewards.jsonl and report.md."""
    atomic_write_text(out / METRICS, metrics_json(metrics))
    rows = []
    for i, (c, r) in enumerate(zip(rewards.chosen, rewards.rejected)):
        row: dict[str, Any] = {"pair": i, "chosen": float(c), "rejected": float(r)}
        if rewards.has_lengths:
            row.update(chosen_len=int(rewards.chosen_len[i]), rejected_len=int(rewards.rejected_len[i]))
        rows.append(json.dumps(row))
    atomic_write_text(out / "pair_rewards.jsonl", "\n".join(rows) + "\n")
    md = [f"# {title}", ""] + [f"- {line}" for line in summary_lines(metrics)] + [""]
    md += ["| confidence bin | pairs | accuracy | mean confidence |", "|---|---|---|---|"]
    md += [f"| {b['lo']:.2f}–{b['hi']:.2f} | {b['count']} | {b['accuracy']:.3f} | {b['confidence']:.3f} |"
           for b in metrics["calibration"]]
    md += ["", "![histogram](reward_histogram.png)", "![reliability](reliability_diagram.png)"]
    if rewards.has_lengths:
        md.append("![length](reward_vs_length.png)")
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    return [out / METRICS, out / "pair_rewards.jsonl", out / "report.md"]


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@dataclass
class FileEvaluation:
    """What :func:`evaluate_file` found: metrics (with the data counts under ``data``), each pair's
    rewards and response lengths."""

    metrics: dict[str, Any]
    rewards: PairRewards

    @property
    def data(self) -> dict[str, Any]:
        """Rows read, kept and dropped (with reasons), whether training prompts were known, cuts."""
        return self.metrics["data"]


def evaluate_file(rm: Any, path: str, fmt: str = "pairs", split: str = "train", batching: Batching | None = None,
                  max_length: int | None = None, max_pairs: int | None = None, exclude_seen: bool = True
                  ) -> FileEvaluation:
    """Every pair of a preference file or Hub dataset (any adapter format) → metrics and per-pair
    rewards of ``rm`` (a :class:`reward.scoring.RewardModel`).

    With ``exclude_seen`` (the default), pairs whose prompt the model trained on are left out and
    counted as ``prompt_seen_in_training`` — an evaluation on training data looks better than it is.
    Each response is fitted to ``max_length`` as ``rm.score`` fits it (``rm.encode``), so a pair's
    rewards are the ones ``score`` returns.
    """
    from .data.pipeline import collect_pairs, prompt_hash
    from .data.report import DataReport
    from .data.sources import DataSource

    batching = batching or Batching()
    report = DataReport()
    pairs, _ = collect_pairs([DataSource.parse(0, {"path": path, "format": fmt, "split": split})], report,
                             eval_split_size=0.0)
    seen = rm.trained_prompt_hashes() if exclude_seen else None
    if seen:
        kept = [p for p in pairs if prompt_hash(p) not in seen]
        report.drop("prompt_seen_in_training", len(pairs) - len(kept))
        pairs = kept
    if not pairs:
        raise DataError(f"{path}: no pairs left to evaluate:\n{report.summary()}")
    if max_pairs is not None and len(pairs) > max_pairs:
        report.drop("max_pairs", len(pairs) - max_pairs)
        pairs = pairs[:max_pairs]
    report.kept_eval = len(pairs)
    report.check()
    encoded = rm.encode([p["prompt"] for p in pairs], [[p["chosen"], p["rejected"]] for p in pairs], max_length)
    got = rm.score_sequence_groups(encoded.groups, batch_size=batching.batch_size, pack_tokens=batching.pack_tokens,
                                   progress=batching.progress)
    rewards = PairRewards([g[0] for g in got], [g[1] for g in got], [n[0] for n in encoded.response_lengths],
                          [n[1] for n in encoded.response_lengths])
    summary = report.to_dict()
    metrics = rewards.metrics()
    metrics["data"] = {**{k: summary[k] for k in ("total", "kept", "dropped", "repaired")},
                       "training_prompts_known": seen is not None if exclude_seen else None,
                       "max_length": max_length or rm.max_length, "responses_cut_to_max_length": encoded.responses_cut}
    return FileEvaluation(metrics, rewards)


def data_notes(data: dict[str, Any], model: str) -> list[str]:
    """What a user should know about the pairs an evaluation used: those left out as seen in training,
    responses cut to ``max_length``, a model that does not say what it trained on."""
    notes = []
    seen = data["dropped"].get("prompt_seen_in_training", 0)
    if seen:
        notes.append(f"left out {seen} of {data['total']} pairs whose prompt the model trained on "
                     "(--include_seen keeps them)")
    if data["responses_cut_to_max_length"]:
        notes.append(f"{data['responses_cut_to_max_length']} responses are longer than max_length {data['max_length']} "
                     "on their own and were scored on their first tokens and end of turn (--max_length raises the limit)")
    if not seen and data["training_prompts_known"] is False:
        notes.append(f"warning: {model} does not record its training prompts (no train_prompt_hashes.json): "
                     "cannot check that these pairs are unseen")
    return notes
