"""TRL's GRPOTrainer and RLOOTrainer run for real with `RewardModel.as_reward_func()` (a tiny random policy, 2
steps on CPU): the rewards TRL logs are the ones `rewardkit score` gives the completions it generated."""

from __future__ import annotations

import pytest

PROMPTS = ["How do I boil an egg?", "What is the capital of France?", "Tell me a joke.", "Say something kind."]


class Recorder:
    """A second reward function (weight 0) that keeps what TRL asked to be scored, step by step."""

    __name__ = "recorder"

    def __init__(self):
        self.calls: list[tuple[list, list]] = []

    def __call__(self, prompts, completions, **kwargs):
        self.calls.append((list(prompts), list(completions)))
        return [0.0] * len(prompts)


@pytest.fixture(scope="module")
def rm(tiny_model_dir):
    from reward.inference import RewardModel

    return RewardModel.from_pretrained(str(tiny_model_dir), device="cpu")


def _train(kind, policy, rm, conversational, tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    rows = [{"prompt": [{"role": "user", "content": p}] if conversational else p} for p in PROMPTS]
    config_cls, trainer_cls = (GRPOConfig, GRPOTrainer) if kind == "grpo" else (RLOOConfig, RLOOTrainer)
    args = config_cls(output_dir=str(tmp_path / kind), per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=12, max_steps=2, logging_steps=1, learning_rate=1e-5, report_to="none",
                      use_cpu=True, bf16=False, save_strategy="no", seed=0, reward_weights=[1.0, 0.0])
    func, recorder = rm.as_reward_func(), Recorder()
    trainer = trainer_cls(model=str(policy), reward_funcs=[func, recorder], args=args, train_dataset=Dataset.from_list(rows))
    trainer.train()
    return trainer, func.__name__, recorder


@pytest.mark.parametrize("kind, conversational", [("grpo", False), ("grpo", True), ("rloo", False)])
def test_trl_logs_the_rewards_rewardkit_scores(kind, conversational, tiny_policy_dir, rm, tmp_path):
    trainer, name, recorder = _train(kind, tiny_policy_dir, rm, conversational, tmp_path)
    logged = [h[f"rewards/{name}/mean"] for h in trainer.state.log_history if f"rewards/{name}/mean" in h]
    assert len(logged) == 2 and len(recorder.calls) == 2
    for mean, (prompts, completions) in zip(logged, recorder.calls):
        if conversational:
            completions = [c[-1]["content"] for c in completions]
        scores = [rm.score(p, c) for p, c in zip(prompts, completions)]
        assert mean == pytest.approx(sum(scores) / len(scores), abs=1e-4)
