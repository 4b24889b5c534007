"""The original project's scoring API, kept working on top of :class:`reward.inference.RewardModel`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .model import RewardModel


class RewardModelEvaluator:
    """The original project's API, kept working on top of :class:`RewardModel`."""

    def __init__(self, model_path: str, device: Any = None):
        self.reward_model = RewardModel.from_pretrained(model_path, device=device)

    def get_reward_score(self, prompt: str, response: str) -> float:
        return self.reward_model.score(prompt, response)

    def compare_responses(self, prompt: str, response_a: str, response_b: str) -> dict[str, Any]:
        a, b = self.reward_model.score_batch([(prompt, response_a), (prompt, response_b)])
        return {"score_a": a, "score_b": b, "preferred": "a" if a > b else "b" if b > a else "tie",
                "margin": a - b}

    def evaluate_conversation(self, conversation: Sequence[tuple[str, str]]) -> list[float]:
        return self.reward_model.evaluate_conversation(conversation)
