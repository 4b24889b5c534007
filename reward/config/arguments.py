"""A recipe's model and data argument groups (the training group is ``reward.config.reward_config``).
Each dataclass owns its defaults and checks its own keys in ``__post_init__``, as TRL's
``ModelConfig`` and ``RewardConfig`` do; nothing downstream restates a default.

- :class:`ModelArguments`: TRL's ``ModelConfig`` + the GGUF file and partial freezing.
- :class:`DataArguments`: the sources and how they become pairs (the length limit is TRL's
  ``max_length``, the split seed TRL's ``seed``, the tokenizing processes TRL's ``dataset_num_proc``).

Torch-free (TRL's ``model_config`` module imports nothing heavy): a bad model or data key fails in
a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trl.trainer.model_config import ModelConfig

from ..coercion import suggest
from ..errors import RecipeError
from .sources import DataSource

TRUNCATION_POLICIES = ("left", "drop")


def one_of(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise RecipeError(f"recipe key '{key}': '{value}' is not one of {', '.join(choices)}.{suggest(str(value), choices)}")


def is_whole(value: Any, low: int, high: int | None = None) -> bool:
    """A whole number (not a bool) from ``low`` to ``high``: what a count key accepts."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)


@dataclass
class ModelArguments(ModelConfig):
    """TRL's ``ModelConfig`` and rewardkit's model keys."""

    gguf_file: str | None = None
    """GGUF file name inside ``model_name_or_path`` (dequantized to a plain trainable model)."""
    freeze_trainable_layers: int | None = None
    """Full fine-tuning of only the top N decoder layers (+ final norm and head), as LLaMA-Factory's
    ``freeze`` mode; the rest is frozen, so backward stops early. None: train everything."""
    lora_task_type: str = "SEQ_CLS"
    """Changed from TRL's ``CAUSAL_LM``, which leaves the new reward head frozen at its random values."""

    def __post_init__(self) -> None:
        if not self.model_name_or_path:
            raise RecipeError("recipe key 'model_name_or_path' is required (a Hub id, a local directory or a .gguf file).")
        if self.load_in_4bit and self.load_in_8bit:
            raise RecipeError("recipe keys 'load_in_4bit' and 'load_in_8bit' are both true: pick one.")
        for key in ("load_in_4bit", "load_in_8bit"):
            if getattr(self, key) and not self.use_peft:
                raise RecipeError(f"recipe key '{key}' needs 'use_peft: true': a quantized base cannot be trained in full.")
        if self.gguf_file and (self.load_in_4bit or self.load_in_8bit):
            raise RecipeError("recipe key 'gguf_file' is dequantized to a plain model; combine it with LoRA, not "
                              "load_in_4bit.")
        if self.freeze_trainable_layers is not None and self.use_peft:
            raise RecipeError("recipe keys 'freeze_trainable_layers' and 'use_peft' exclude each other: pick one.")
        if self.lora_task_type not in (None, "SEQ_CLS"):
            raise RecipeError(f"recipe key 'lora_task_type': '{self.lora_task_type}' would leave the reward head "
                              "untrained; use SEQ_CLS or remove the key.")
        super().__post_init__()

    @property
    def quantized(self) -> bool:
        """A 4- or 8-bit base (bitsandbytes)."""
        return bool(self.load_in_4bit or self.load_in_8bit)


@dataclass
class DataArguments:
    """The sources and how they become pairs."""

    datasets: list[dict[str, Any]] = field(default_factory=list)
    """Sources, each a :class:`DataSource` mapping (or a path)."""
    eval_split_size: float = 0.2
    """Held-out fraction when no source names an ``eval_split``; grouped by prompt, seeded by ``seed``."""
    truncation: str = "left"
    """``left``: cut the prompt from the left so both responses fit; ``drop``: drop pairs that do not fit."""
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    cache_dir: str | None = None
    """Tokenized-dataset cache (default ~/.cache/rewardkit/data)."""
    eval_datasets: dict[str, Any] | None = None
    """Named evaluation sets, each a :class:`DataSource` mapping (or a path), all of whose pairs are
    evaluated: during training at ``eval_steps`` and at the end, each reported under its name (beside the
    held-out split of ``eval_split_size``, which stays one of the sets)."""
    sources: list[DataSource] = field(init=False, repr=False)
    """``datasets``, each checked (:meth:`DataSource.parse`)."""
    eval_sources: dict[str, DataSource] = field(init=False, repr=False)
    """``eval_datasets``, each checked."""

    def __post_init__(self) -> None:
        if not self.datasets:
            raise RecipeError("recipe key 'datasets' needs at least one source, e.g. datasets: [{path: pairs.jsonl}].")
        self.sources = [DataSource.parse(i, spec) for i, spec in enumerate(self.datasets)]
        if self.eval_datasets is not None and not isinstance(self.eval_datasets, dict):
            raise RecipeError("recipe key 'eval_datasets' maps names to sources, e.g. eval_datasets: {llmbar: "
                              "{path: llmbar.jsonl, format: pairs}}.")
        self.eval_sources = {str(name): DataSource.parse(f"eval_datasets.{name}", spec)
                             for name, spec in (self.eval_datasets or {}).items()}
        reserved = {"eval", "held_out"} & set(self.eval_sources)
        if reserved:
            raise RecipeError(f"eval_datasets: the name {sorted(reserved)[0]!r} is the held-out split's; pick another.")
        one_of("truncation", self.truncation, TRUNCATION_POLICIES)
        if not 0 <= self.eval_split_size < 1:
            raise RecipeError(f"recipe key 'eval_split_size': {self.eval_split_size} must be in [0, 1).")
