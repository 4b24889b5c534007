"""A reward model as a TRL reward function: ``GRPOTrainer(reward_funcs=[rm.as_reward_func()])``.

TRL's own model-path reward (``reward_funcs="path/to/model"``) scores ``prompt + completion`` as raw
text when prompts are plain strings (no chat template, no end-of-turn token) and pads every
completion with its prompt. :class:`RewardFunction` adds what that lacks: each (prompt, completion)
is formatted exactly as training formatted it (``reward.data.formatting``, the same reward
``rewardkit score`` gives), each prompt is computed once for its group of completions (packed,
prompt-shared scoring), the model runs on the trainer's device, and TRL logs it under a readable
name (``rewards/<name>/mean``). The same callable serves ``RLOOTrainer``, whose reward call is the same.

An ensemble's reward is the conservative one (mean − λ·std, or the members' minimum), and its std
reaches TRL's logs through the ``log_metric`` (``<name>/reward_std``: the batch mean) and ``log_extra``
(the completions table's ``<name>_std`` column, per completion) callables TRL 1.x passes every reward
function.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .batches import ungroup
from .ensemble import check_penalty, summarize

if TYPE_CHECKING:  # the model makes reward functions (RewardModel.as_reward_func): no import back at run time
    from .model import RewardModel


class RewardFunction:
    """A TRL ``reward_funcs`` entry backed by a :class:`RewardModel`.

    ``normalize``: (reward − mean) / std with the model's held-out statistics. ``device``: where the model
    runs (default: the device of accelerate's process state, which is the trainer's). ``name``: what TRL
    logs it under (default ``rewardkit_<model folder>``). ``uncertainty_penalty`` (λ) / ``worst_case``: an
    ensemble's reward is mean − λ·std / the members' minimum."""

    def __init__(self, rm: RewardModel, normalize: bool = False, device: Any = None, name: str | None = None,
                 pack_tokens: int | None = None, uncertainty_penalty: float = 0.0, worst_case: bool = False):
        self.rm = rm
        self.uncertainty_penalty = check_penalty(uncertainty_penalty)
        self.worst_case = worst_case
        self.device = device
        self.pack_tokens = pack_tokens
        self._normalize = rm.normalizer(normalize)
        # TRL names a callable by its __name__ (trl.trainer.utils.get_callable_name); "/" would nest its log keys
        self.__name__ = name or "rewardkit_" + re.sub(r"[^\w.-]+", "_", Path(str(rm.source or "model")).name)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        """One reward per (prompt, completion), in order. Prompts are strings (plain or already rendered
        with a chat template) or message lists; completions strings or message lists, as TRL passes them."""
        self._place()
        if prompts and not isinstance(prompts[0], str):  # conversational
            index, groups = self._conversational(prompts, completions)
        else:
            texts = [p + _text(c) for p, c in zip(prompts, completions)]
            index, encoded = self.rm.encode_texts(texts, list(prompts))
            groups = encoded.groups
        scores = self.rm.score_sequence_groups(groups, pack_tokens=self.pack_tokens, members=True)
        stats = [summarize(v, self._normalize) for v in ungroup(index, scores, len(prompts))]
        if self.rm.members > 1:
            self._log_std([s.std for s in stats], kwargs)
        return [s.reward(self.uncertainty_penalty, self.worst_case) for s in stats]

    def _log_std(self, stds: list[float], kwargs: dict[str, Any]) -> None:
        """The ensemble's std into TRL's logs: the batch mean as a metric, each completion's in its table."""
        if callable(kwargs.get("log_metric")):
            kwargs["log_metric"](f"{self.__name__}/reward_std", sum(stds) / max(len(stds), 1))
        if callable(kwargs.get("log_extra")):
            kwargs["log_extra"](f"{self.__name__}_std", stds)

    def _conversational(self, prompts: Sequence[Any], completions: Sequence[Any]) -> tuple[list[list[int]], Any]:
        by_prompt: dict[str, list[int]] = {}
        for i, p in enumerate(prompts):
            by_prompt.setdefault(json.dumps(p, sort_keys=True), []).append(i)
        index = list(by_prompt.values())
        encoded = self.rm.encode([prompts[g[0]] for g in index], [[_text(completions[i]) for i in g] for g in index])
        return index, encoded.groups

    def _place(self) -> None:
        """Move the model to the trainer's device on the first call (the trainer is built after this object)."""
        import torch

        if self.device is None:
            from accelerate import PartialState

            self.device = PartialState().device
        device = torch.device(self.device)
        if self.rm.device != device:
            self.rm.model.to(device)


def _text(completion: Any) -> str:
    """A completion as text: TRL passes a string, or for conversational prompts a list of messages."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content") or "" for m in completion if m.get("role", "assistant") == "assistant")
