"""Scoring with a trained reward model: :class:`RewardModel`.

Scoring formats text with ``reward.data.formatting`` (the function training used), sorts work by
length so batches carry little padding, runs without gradients (bf16 on GPU, fp32 on CPU) and
passes explicit position ids, so a score is the same alone or in any batch, with left or right
padding. Pairs (``eval``) and a prompt's n responses (``rank``, ``reward.inference.scorefile``) go through the
packed forward of ``reward.packing`` instead: the prompt is computed once, no padding, same rewards.

An ensemble (``ensemble_heads``) scores every member in the same forward: the reward methods return the
members' mean, and ``members=True`` (or :meth:`RewardModel.score_stats`) each member's reward, whose
std and minimum give the conservative reward (``reward.inference.ensemble``).
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..data.formatting import as_messages, encode_pairs, encode_texts, fit_to_length
from ..errors import ScoringError
from ..rundir import TRAIN_PROMPTS, RunInfo, held_out_reward_stats
from .batches import DEFAULT_PACK_TOKENS, Encoded, Prompt, progress_bar, ungroup
from .ensemble import RewardStats, summarize

logger = logging.getLogger(__name__)


class RewardModel:
    """A reward model ready to score: ``RewardModel.from_pretrained(run_dir_or_model)``."""

    def __init__(self, model: Any, tokenizer: Any, max_length: int | None = None, truncation: str = "left",
                 info: RunInfo | None = None, source: str | None = None, autocast: Any = None):
        self.model = model
        self.autocast = autocast
        """16-bit dtype the forward runs in under autocast (fp32 weights, as mixed-precision training), or None."""
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.truncation = truncation
        self.info = info or RunInfo()
        """What the folder it came from says of it (run or export); empty for a model rewardkit did not write."""
        self.source = source
        from .loading import members

        self.members = members(model, info)
        """Ensemble members the head scores (1: a plain reward model)."""
        self._packing_checked_len = 0  # longest sequence whose packed reward was checked against padded
        self._packing_ok: bool | None = None  # False once packed scoring disagreed with padded scoring
        self._packed_mode: str | None = None  # the packed attention mode, None: scored padded only
        if self._has_token_head():
            from ..packing import prepare_model

            mode = prepare_model(model, "auto", self.device, half=self.half)
            self._packed_mode = None if mode == "padded" else mode

    @classmethod
    def from_pretrained(cls, path_or_id: str, device: Any = None, dtype: Any = None,
                        max_length: int | None = None, trust_remote_code: bool = False) -> RewardModel:
        from ..modeling.heads import context_length, fit_max_length
        from .loading import load_scoring_model

        model, tok, info, autocast = load_scoring_model(path_or_id, device, dtype, trust_remote_code)
        # outside training a response is scored whole, up to the model's context (as RewardBench and the RL
        # frameworks score it): the training max_length is a compute budget, not a property of the reward
        info = info or RunInfo()
        max_length = fit_max_length(max_length, context_length(model), str(path_or_id))
        return cls(model, tok, max_length or context_length(model) or info.max_length, info.truncation, info,
                   source=str(path_or_id), autocast=autocast)

    @functools.cached_property
    def reward_stats(self) -> dict[str, float] | None:
        """Mean and std of this model's rewards on its held-out pairs (an export's ``rewardkit.json``
        or a run's ``metrics.json``): what an RLHF loop uses to normalise rewards. Read once, not on
        every ``score(..., normalize=True)``."""
        mean, std = self.info.reward_mean, self.info.reward_std  # an export's rewardkit.json
        if (mean is None or not std) and self.source:
            mean, std, _ = held_out_reward_stats(self.source)  # a run's metrics.json
        return {"mean": float(mean), "std": float(std)} if mean is not None and std else None

    def normalizer(self, normalize: bool) -> Callable[[float], float]:
        """The identity, or (reward − mean) / std with :attr:`reward_stats` (a :class:`ScoringError` without them)."""
        if not normalize:
            return lambda x: x
        stats = self.reward_stats
        if stats is None:
            raise ScoringError(f"{self.source}: no reward mean/std recorded (a rewardkit run with an eval split, "
                             "or its export, has them); score without normalize.")
        return lambda x: (x - stats["mean"]) / stats["std"]

    def trained_prompt_hashes(self) -> set[str] | None:
        """Hashes of the prompts this model trained on (a rewardkit run or export), or None if unknown."""
        path = Path(self.source) / TRAIN_PROMPTS if self.source else None
        if path is None or not path.is_file():
            return None
        return set(json.loads(path.read_text())["prompts"])

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    @property
    def half(self) -> bool:
        """Whether the forward computes in 16 bits (16-bit weights, or fp32 weights under autocast)."""
        return self.autocast is not None or next(self.model.parameters()).element_size() == 2

    def _inference(self) -> Any:
        """``inference_mode``, under autocast to :attr:`autocast` when set."""
        import contextlib

        import torch

        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.autocast is not None:
            stack.enter_context(torch.autocast(self.device.type, dtype=self.autocast))
        return stack

    # -- core -------------------------------------------------------------------------------
    def _reduce(self, vectors: list[list[float]], members: bool) -> list[Any]:
        """Member vectors as they are (``members``), or each one's mean: the reward."""
        return vectors if members else [v[0] if len(v) == 1 else math.fsum(v) / len(v) for v in vectors]

    def score_token_ids(self, sequences: Sequence[Sequence[int]], batch_size: int = 16,
                        progress: bool = False, members: bool = False) -> list[Any]:
        """Rewards for already-formatted token sequences, batched by length (with ``members``, each
        sequence's list of member rewards)."""
        return self._reduce(self._token_vectors(sequences, batch_size, progress), members)

    def _token_vectors(self, sequences: Sequence[Sequence[int]], batch_size: int,
                       progress: bool) -> list[list[float]]:
        import torch

        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]), reverse=True)
        out: list[list[float]] = [[0.0]] * len(sequences)
        pad = self.tokenizer.pad_token_id
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="scoring", unit="batch")
        with self._inference():
            for idx in batches:
                seqs = [list(sequences[i]) for i in idx]
                width = max(len(s) for s in seqs)
                ids = torch.full((len(seqs), width), pad, dtype=torch.long)
                mask = torch.zeros((len(seqs), width), dtype=torch.long)
                for row, s in enumerate(seqs):
                    sl = slice(width - len(s), width) if left else slice(0, len(s))
                    ids[row, sl] = torch.tensor(s)
                    mask[row, sl] = 1
                # Explicit positions: left padding must not shift rotary positions.
                pos = (mask.cumsum(-1) - 1).clamp(min=0)
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                    position_ids=pos.to(self.device), use_cache=False).logits
                for i, value in zip(idx, logits[:, :self.members].float().tolist()):  # one device→host copy a batch
                    out[i] = value
        return out

    def packable(self) -> bool:
        """Whether pairs can be scored prompt-shared (``reward.packing``): a per-token ``score`` head on a
        model whose forward can run a packed row (``reward.packing.cannot_pack``)."""
        return self._packed_mode is not None

    def _has_token_head(self) -> bool:
        from ..modeling.heads import head_name

        try:
            return head_name(self.model) == "score"
        except ValueError:
            return False

    def score_sequence_groups(self, groups: Sequence[Sequence[Sequence[int]]], batch_size: int = 16,
                              pack_tokens: int | None = None, progress: bool = False,
                              members: bool = False) -> list[list[Any]]:
        """Rewards for groups of already-formatted token sequences (a pair, or n answers to one prompt).

        With ``pack_tokens`` > 0 and a :meth:`packable` model, the tokens a group's sequences start
        with (the prompt, usually) are computed once, and groups are packed without padding into rows
        of at most ``pack_tokens`` tokens (a larger group is split): training's packed forward, here for
        inference. Each reward is what :meth:`score_token_ids` gives that sequence alone: the row that
        holds a call's longest sequence is also scored padded whenever that is longer than any checked
        before, and a model whose attention does not honour the packed mask (a sliding window,
        an unusual architecture) is scored padded from then on, with a warning. Otherwise sequences are
        scored padded, ``batch_size`` at a time.

        ``pack_tokens=None``: 512 on CPU, 4096 on a GPU (:data:`DEFAULT_PACK_TOKENS`). ``members``: each
        sequence's list of member rewards instead of their mean."""
        got = self._group_vectors(groups, batch_size, pack_tokens, progress)
        return [self._reduce(g, members) for g in got]

    def _group_vectors(self, groups: Sequence[Sequence[Sequence[int]]], batch_size: int, pack_tokens: int | None,
                       progress: bool) -> list[list[list[float]]]:
        if pack_tokens is None:
            pack_tokens = DEFAULT_PACK_TOKENS["cpu" if self.device.type == "cpu" else "gpu"]
        if pack_tokens <= 0 or not groups or self._packing_ok is False or not self.packable():
            return self._score_groups_padded(groups, batch_size, progress)
        import torch

        from ..packing import ScoreCapture, pack_groups, pack_rows, packed_token_rewards

        rows = pack_rows(groups, pack_tokens)
        # the row with the longest sequence is the one checked against padded scoring
        check = max(range(len(rows)),
                    key=lambda n: max(len(part.prefix) + len(s) for part in rows[n] for s in part.suffixes))
        out: list[list[list[float]]] = [[[0.0]] * len(g) for g in groups]
        capture = ScoreCapture.for_model(self.model)
        try:
            with self._inference(), progress_bar(progress, len(rows), "scoring (prompt-shared)", "row") as bar:
                for n, row in enumerate(rows):
                    batch = pack_groups([(part.prefix, part.suffixes) for part in row], self.tokenizer.pad_token_id)
                    logits = packed_token_rewards(self.model, capture, {k: v.to(self.device) if torch.is_tensor(v) else v
                                                                          for k, v in batch.items()}, all_outputs=True)
                    got = iter(logits[batch["reward_index"].to(self.device), :self.members].float().tolist())
                    for part in row:
                        for j in range(len(part.suffixes)):
                            out[part.group][part.first + j] = next(got)
                    if n == check and not self._packed_matches_padded(groups, row, out):
                        bar.close()
                        return self._score_groups_padded(groups, batch_size, progress)
                    bar.update(1)
        finally:
            capture.remove()
        return out

    def _score_groups_padded(self, groups: Sequence[Sequence[Sequence[int]]], batch_size: int,
                             progress: bool) -> list[list[list[float]]]:
        flat = self._token_vectors([s for g in groups for s in g], batch_size, progress)
        it = iter(flat)
        return [[next(it) for _ in g] for g in groups]

    def _packed_matches_padded(self, groups: Sequence[Sequence[Sequence[int]]], row: list[Any],
                               out: list[list[list[float]]]) -> bool:
        """Score one packed row's sequences padded too, unless no longer than those checked before;
        False (and a warning, and padded scoring from now on) if they disagree."""

        seqs = [groups[part.group][part.first + j] for part in row for j in range(len(part.suffixes))]
        longest = max(len(s) for s in seqs)
        if longest <= self._packing_checked_len:
            return True
        packed = [out[part.group][part.first + j] for part in row for j in range(len(part.suffixes))]
        padded = self._token_vectors(seqs, len(seqs), False)
        # fp32 agrees to ~1e-5; bf16 rounds each layer differently in the two layouts
        tol = 0.1 if self.half else 1e-3
        worst = max(abs(a - b) / (1.0 + abs(b)) for u, v in zip(packed, padded) for a, b in zip(u, v))
        if worst <= tol:
            self._packing_checked_len = longest
            return True
        self._packing_ok = False
        logger.warning("prompt-shared scoring differs from padded scoring by %.3g on this model (%s attention): "
                       "scoring padded instead", worst, self._packed_mode)
        return False

    def encode(self, prompts: Sequence[Prompt], responses: Sequence[Sequence[str]],
               max_length: int | None = None) -> Encoded:
        """Each prompt's responses as token sequences, formatted as training formatted them and fitted
        to ``max_length`` (default: the model's) one response at a time by the training length rule
        (``reward.data.formatting.fit_to_length``), so a response scores the same alone or with others.
        A response too long on its own keeps its first tokens (and is counted and logged)."""
        p_ids, r_ids = encode_pairs(self.tokenizer, [as_messages(p) for p in prompts], responses)
        return self._fit(p_ids, r_ids, max_length)

    def encode_texts(self, texts: Sequence[str], prompts: Sequence[str | None] | None = None,
                     max_length: int | None = None) -> tuple[list[list[int]], Encoded]:
        """Clients' full texts (OpenRLHF's queries, a rendered conversation, a policy's decoded output),
        mapped onto the reading rule (``reward.data.formatting.split_text``): each gets the reward
        :meth:`score` gives its (prompt, response). Texts of the same prompt form one group (the
        prompt is computed once). Returns, per group, the indices of its texts, and the encoding."""
        p_ids, r_ids, _ = encode_texts(self.tokenizer, texts, prompts)
        by_prompt: dict[tuple[int, ...], list[int]] = {}
        for i, p in enumerate(p_ids):
            by_prompt.setdefault(tuple(p), []).append(i)
        index = list(by_prompt.values())
        return index, self._fit([p_ids[g[0]] for g in index], [[r_ids[i] for i in g] for g in index], max_length)

    def _fit(self, p_ids: list[list[int]], r_ids: list[list[list[int]]], max_length: int | None) -> Encoded:
        limit = max_length or self.max_length
        groups, truncated, cut = [], [], 0
        for p, rs in zip(p_ids, r_ids):
            fits = [fit_to_length(p, [r], limit, "left", clip_responses=True) for r in rs]
            groups.append([f.prompt + f.responses[0] for f in fits])
            truncated.append([bool(f.prompt_cut or f.responses_cut) for f in fits])
            cut += sum(f.responses_cut for f in fits)
        if cut:
            logger.warning("%d responses exceed max_length %s on their own: scored on their first tokens", cut, limit)
        return Encoded(groups, truncated, cut, [[len(r) for r in rs] for rs in r_ids], [list(p) for p in p_ids])

    # -- public API ---------------------------------------------------------------------------
    def score(self, prompt: Prompt, response: str, normalize: bool = False) -> float:
        """Reward of one response to a prompt (a string or a list of chat messages).

        ``normalize``: (reward − mean) / std with the held-out statistics in :attr:`reward_stats`."""
        return self.score_batch([(prompt, response)], normalize=normalize)[0]

    def score_batch(self, pairs: Sequence[tuple[Prompt, str]], batch_size: int = 16,
                    progress: bool = False, normalize: bool = False) -> list[float]:
        """Rewards of many (prompt, response) pairs, in input order."""
        norm = self.normalizer(normalize)
        seqs = [g[0] for g in self.encode([p for p, _ in pairs], [[r] for _, r in pairs]).groups]
        return [norm(x) for x in self.score_token_ids(seqs, batch_size=batch_size, progress=progress)]

    def score_stats(self, pairs: Sequence[tuple[Prompt, str]], batch_size: int = 16,
                    normalize: bool = False) -> list[RewardStats]:
        """Each (prompt, response)'s reward across the ensemble's members: mean (what :meth:`score_batch`
        gives), standard deviation and minimum; ``.reward(uncertainty_penalty=λ)`` is mean − λ·std. A plain
        reward model has std 0. With ``normalize``, each member's reward is normalised first."""
        norm = self.normalizer(normalize) if normalize else None
        seqs = [g[0] for g in self.encode([p for p, _ in pairs], [[r] for _, r in pairs]).groups]
        return [summarize(v, norm) for v in self.score_token_ids(seqs, batch_size=batch_size, members=True)]

    def score_texts(self, texts: Sequence[str], prompts: Sequence[str | None] | None = None,
                    normalize: bool = False) -> list[float]:
        """Rewards of clients' full texts (:meth:`encode_texts`), in input order: each the reward
        :meth:`score` gives its (prompt, response), whatever end or start the client gave the text."""
        norm = self.normalizer(normalize)
        index, encoded = self.encode_texts(texts, prompts)
        return [norm(v) for v in ungroup(index, self.score_sequence_groups(encoded.groups), len(texts))]

    def rank(self, prompt: Prompt, responses: Sequence[str], batch_size: int = 16,
             pack_tokens: int | None = None) -> list[tuple[str, float]]:
        """Responses sorted best first, with their rewards (the prompt computed once: :meth:`score_sequence_groups`)."""
        scores = self.score_sequence_groups(self.encode([prompt], [list(responses)]).groups, batch_size=batch_size,
                                            pack_tokens=pack_tokens)[0]
        return sorted(zip(responses, scores), key=lambda x: x[1], reverse=True)

    def as_reward_func(self, normalize: bool = False, device: Any = None, name: str | None = None,
                       pack_tokens: int | None = None, uncertainty_penalty: float = 0.0,
                       worst_case: bool = False) -> Any:
        """This model as a reward function for TRL's ``GRPOTrainer`` / ``RLOOTrainer`` (``reward_funcs``):
        every completion formatted as training formatted it, each prompt computed once for its group
        (:class:`reward.inference.RewardFunction`). For an ensemble, the reward is mean − λ·std
        (``uncertainty_penalty`` λ) or the members' minimum (``worst_case``), and the std is logged."""
        from .reward_func import RewardFunction

        return RewardFunction(self, normalize=normalize, device=device, name=name, pack_tokens=pack_tokens,
                              uncertainty_penalty=uncertainty_penalty, worst_case=worst_case)

    def evaluate_conversation(self, conversation: Sequence[tuple[str, str]]) -> list[float]:
        """Reward of each assistant turn in the context of the turns before it."""
        pairs, history = [], []
        for question, answer in conversation:
            history.append({"role": "user", "content": question})
            pairs.append((list(history), answer))
            history.append({"role": "assistant", "content": answer})
        return self.score_batch(pairs)
