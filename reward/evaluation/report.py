"""An evaluation written for people: plots and tables beside the metrics.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..rundir import METRICS, atomic_write_text, metrics_json
from .metrics import PairRewards, summary_lines, wilson_interval


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
        # clipped at 0: the Wilson bound of an all-right (or all-wrong) bin rounds a hair past its accuracy
        yerr = np.clip([acc - ci[:, 0], ci[:, 1] - acc], 0.0, None)
        ax.errorbar(conf, acc, yerr=yerr, fmt="-o", color="tab:blue", capsize=3,
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


CURVES = (("loss", "Bradley-Terry loss"), ("accuracy", "accuracy"), ("margin", "margin (chosen − rejected)"))


def plot_training_curves(log_jsonl: str | Path, out: str | Path) -> Path | None:
    """A run's curves from its own log (``logs/train_log.jsonl``): loss, accuracy and margin by step, the
    evaluation points on the same axes, and the learning rate. None when the log holds no training step."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(log_jsonl).read_text().splitlines() if line.strip()]
    train = [r for r in rows if "loss" in r]
    if not train:
        return None
    fig, axes = plt.subplots(1, len(CURVES) + 1, figsize=(4.2 * (len(CURVES) + 1), 3.4))
    for ax, (key, title) in zip(axes, CURVES):
        # the held-out split logs eval_KEY; with eval_datasets each set logs eval_NAME_KEY
        evals = sorted({k[: -len(key)] for r in rows for k in r if k.startswith("eval_") and k.endswith(key)})
        for prefix in ["", *evals]:
            points = [(r["step"], r[prefix + key]) for r in rows if isinstance(r.get(prefix + key), (int, float))]
            if points:
                label = "train" if not prefix else (prefix.removeprefix("eval_").rstrip("_") or "eval")
                ax.plot(*zip(*points), "-" if not prefix else "o--", label=label, markersize=4)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    lr = [(r["step"], r["learning_rate"]) for r in train if "learning_rate" in r]
    if lr:
        axes[-1].plot(*zip(*lr))
    axes[-1].set_title("learning rate")
    axes[-1].set_xlabel("step")
    return _save(fig, Path(out))
