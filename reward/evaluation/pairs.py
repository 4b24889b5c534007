"""``rewardkit eval`` on a file of pairs.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import DataError
from ..inference.batches import Batching
from .metrics import PairRewards, ensemble_metrics, group_metrics


@dataclass
class ResponseGroups:
    """Pairs regrouped by prompt: each prompt's distinct responses, and each pair as (group, chosen, rejected)
    indices, so that every response is scored once and a group's comparisons are known."""

    prompts: list[Any]
    responses: list[list[str]]
    pairs: list[tuple[int, int, int]]

    @classmethod
    def of(cls, pairs: list[dict[str, Any]]) -> ResponseGroups:
        from ..data.collect import prompt_key

        return cls.of_triples((prompt_key(p), p["prompt"], p["chosen"], p["rejected"]) for p in pairs)

    @classmethod
    def of_triples(cls, triples: Iterable[tuple[Hashable, Any, Hashable, Hashable]]) -> ResponseGroups:
        """Grouped by ``key`` from (key, prompt, chosen, rejected): texts, or token tuples (a training run's
        held-out pairs); a group's responses are told apart by equality."""
        keys: dict[Hashable, int] = {}
        out = cls([], [], [])
        index: list[dict[Hashable, int]] = []
        for key, prompt, chosen, rejected in triples:
            g = keys.setdefault(key, len(keys))
            if g == len(out.prompts):
                out.prompts.append(prompt)
                out.responses.append([])
                index.append({})
            slots = [index[g].setdefault(side, len(index[g])) for side in (chosen, rejected)]
            for side, slot in zip((chosen, rejected), slots):
                if slot == len(out.responses[g]):
                    out.responses[g].append(side)
            out.pairs.append((g, slots[0], slots[1]))
        return out

    def comparisons(self) -> list[list[tuple[int, int]]]:
        """Each group's pairs as (better, worse) response indices."""
        out: list[list[tuple[int, int]]] = [[] for _ in self.prompts]
        for g, c, r in self.pairs:
            out[g].append((c, r))
        return out

    def response_rewards(self, chosen: Sequence[float], rejected: Sequence[float]) -> list[list[float]]:
        """Each group's response rewards from its pairs' rewards (a response in several pairs: the first's)."""
        got = [[0.0] * len(r) for r in self.responses]  # every response is in some pair
        for (g, c, r), a, b in reversed(list(zip(self.pairs, chosen, rejected))):  # the first pair written last
            got[g][c], got[g][r] = float(a), float(b)
        return got

    def ranked_metrics(self, rewards: list[list[float]]) -> dict[str, Any]:
        """Top-1 accuracy and Kendall τ (:func:`group_metrics`) where some prompt has more than two
        responses (ranked data); nothing for plain pairs."""
        if max((len(r) for r in self.responses), default=0) <= 2:
            return {}
        return group_metrics(list(zip(rewards, self.comparisons())))


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
    rewards of ``rm`` (a :class:`reward.inference.RewardModel`).

    With ``exclude_seen`` (the default), pairs whose prompt the model trained on are left out and
    counted as ``prompt_seen_in_training`` — an evaluation on training data looks better than it is.
    Each response is fitted to ``max_length`` as ``rm.score`` fits it (``rm.encode``), so a pair's
    rewards are the ones ``score`` returns.
    """
    from ..config.sources import DataSource
    from ..data.collect import collect_pairs, prompt_hash
    from ..data.report import DataReport

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
    groups = ResponseGroups.of(pairs)
    encoded = rm.encode(groups.prompts, groups.responses, max_length)
    members = rm.score_sequence_groups(encoded.groups, batch_size=batching.batch_size,
                                       pack_tokens=batching.pack_tokens, progress=batching.progress, members=True)
    got = [[sum(v) / len(v) for v in g] for g in members]  # the reward: the ensemble's mean (a plain model's own)
    lengths = encoded.response_lengths
    rewards = PairRewards([got[g][c] for g, c, _ in groups.pairs], [got[g][r] for g, _, r in groups.pairs],
                          [lengths[g][c] for g, c, _ in groups.pairs], [lengths[g][r] for g, _, r in groups.pairs])
    summary = report.to_dict()
    metrics = {**rewards.metrics(), **groups.ranked_metrics(got)}  # ranked groups: top-1 and Kendall τ too
    if rm.members > 1:
        metrics["ensemble"] = ensemble_metrics([members[g][c] for g, c, _ in groups.pairs],
                                               [members[g][r] for g, _, r in groups.pairs])
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
