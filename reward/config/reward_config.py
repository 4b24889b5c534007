"""``RewardkitConfig``: TRL's ``RewardConfig`` + the packed forward, its token budget and the
length-debiasing loss, read by ``RewardkitTrainer`` from its ``args`` as TRL's ``RewardTrainer``
reads ``center_rewards_coefficient``. Its values are checked in ``__post_init__`` before
``TrainingArguments``' own checks, so a bad value fails before torch sees a device.

Changed defaults against TRL 1.x, each a field below: activation checkpointing off unless asked
(``gradient_checkpointing``), ``logging_nan_inf_filter`` off (the loss is logged as it is, with no
per-step host sync), ``report_to: none`` (nothing leaves the machine unasked), ``output_dir:
runs/rewardkit`` (a recipe names its own, ``runs/<recipe name>``); ``bf16`` and
``dataloader_pin_memory`` unset mean "where CUDA runs" (TRL turns bf16 on whenever fp16 is off, and
pinning without CUDA only warns). A value asked for that this machine cannot run (fp16 or bf16 on a
CPU without it) is handled by ``reward.config.recipe.adapt_to_machine``, with a warning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from trl import RewardConfig

from ..errors import RecipeError
from ..seams import checkpointing_key
from .arguments import is_whole, one_of

_RENAMED = checkpointing_key(RewardConfig.__dataclass_fields__) == "activation_checkpointing"
PACKED_ATTENTION = ("auto", "varlen", "flex", "dense")
LENGTH_DEBIAS = ("none", "odin", "corr_penalty")
PAIRING = ("pairwise", "listwise")
LISTWISE_LOSS = ("bradley_terry", "plackett_luce")


@dataclass
class RewardkitConfig(RewardConfig):
    """TRL's ``RewardConfig``, its values checked before torch sees them, and rewardkit's training keys."""

    # TRL's keys with rewardkit's defaults (the module docstring says why)
    output_dir: str | None = "runs/rewardkit"
    gradient_checkpointing: bool | None = None if _RENAMED else False
    """Off unless asked (TRL: on). transformers 5 names it ``activation_checkpointing``, whose unset value
    is off; the old name, unset here, would warn that it is deprecated."""
    logging_nan_inf_filter: bool = False
    report_to: None | str | list[str] = "none"
    bf16: bool | None = None
    dataloader_pin_memory: bool | None = None

    packing: bool = True
    """Padding-free, prompt-sharing forward (exactly the padded model's rewards; see reward.packing)."""
    packed_attention: str = "auto"
    """How the packed forward attends: ``varlen`` (FlashAttention varlen on CUDA, per-segment SDPA on
    CPU), ``flex`` (FlexAttention block mask), ``dense`` (SDPA with a T×T mask); each applies every
    layer's own window, softcap and sinks. ``auto``: varlen on CPU and on CUDA in fp16/bf16, dense on
    CUDA in fp32 or for a model with a softcap or sinks; a model that cannot pack trains padded."""
    max_tokens_per_batch: int | None = None
    """Token budget of a packed micro-batch (prompt once + both responses), filled with pairs of
    similar length; replaces ``per_device_train_batch_size`` for training. None: a fixed pair count."""
    length_debias: str = "none"
    """``odin``: a second head carries the length signal (ODIN, Chen et al. 2024) and only the quality head
    is scored, exported and served; ``corr_penalty``: the Bradley-Terry loss plus a penalty on the
    batch correlation between reward and response length; ``none``: plain Bradley-Terry."""
    length_debias_coef: float = 0.2
    """Weight of the length terms (``odin``: correlation terms; ``corr_penalty``: |corr(reward, length)|).
    0.2: on the quickstart, 1.0 over-corrected (the correlation changed sign, accuracy fell to chance)."""
    router_aux_loss_coef: float | None = None
    """Weight of a mixture-of-experts base's router load-balancing loss, added in training as the family's
    causal LM adds it (``reward.training.routing``). None: the model config's ``router_aux_loss_coef`` (0.001 for
    Mixtral and Qwen3-MoE); 0: off. Dense models ignore it."""
    pairing: str = "pairwise"
    """``listwise``: a prompt's pairs train as one group (``reward.packing.groups``): the prompt packed once
    with each distinct response once, the loss averaged within the group so that each prompt weighs the
    same (InstructGPT); micro-batches are whole groups by ``max_tokens_per_batch`` (or
    ``per_device_train_batch_size`` groups). ``pairwise``: every pair on its own (TRL's weighting)."""
    listwise_loss: str = "bradley_terry"
    """Listwise loss of a group: ``bradley_terry`` over all its comparisons, averaged; ``plackett_luce``
    for the groups whose comparisons rank every response (a total order; the others keep Bradley-Terry)."""
    listwise_max_comparisons: int | None = None
    """Under ``pairing: listwise``, at most this many of a prompt's comparisons in one group: a prompt with
    more is split into sub-groups of near-equal size, each the responses its comparisons take (the prompt
    computed once a sub-group), batched on their own, so an epoch comes back to the prompt once a sub-group
    as pairwise comes back once a pair. None: one group a prompt, the fastest. docs/listwise.md measures
    the trade on qa-feedback."""
    ensemble_heads: int = 1
    """Reward heads trained on one backbone (a reward ensemble, ``reward.training.ensemble``): each head
    drawn with its own seed and trained on its own Poisson(1) bootstrap weights of the pairs, all heads
    in the same forward (the backbone computed once). Scoring gives each response the members' mean,
    standard deviation and minimum; the export is one head, their mean. 1: a plain reward model."""
    eval_max_pairs: int = 512
    """Pairs the final evaluation report (and export verification) uses."""

    def __post_init__(self) -> None:
        import torch

        cuda = torch.cuda.is_available()
        if self.bf16 is None:
            self.bf16 = bool(cuda and not self.fp16)
        if self.dataloader_pin_memory is None:
            self.dataloader_pin_memory = cuda
        self._check_packing()
        self._check_schedule()
        if self.fp16 and self.bf16:
            raise RecipeError("recipe keys 'fp16' and 'bf16' are both true: pick one (bf16 on Ampere or newer GPUs).")
        if self.output_dir is not None and Path(self.output_dir).exists() and not Path(self.output_dir).is_dir():
            raise RecipeError(f"recipe key 'output_dir': {self.output_dir} is an existing file; give a directory.")
        try:
            super().__post_init__()
        except (ValueError, TypeError) as exc:  # TrainingArguments' own checks
            raise RecipeError(f"invalid training arguments: {exc}") from exc

    def _check_packing(self) -> None:
        one_of("packed_attention", self.packed_attention, PACKED_ATTENTION)
        one_of("length_debias", self.length_debias, LENGTH_DEBIAS)
        one_of("pairing", self.pairing, PAIRING)
        one_of("listwise_loss", self.listwise_loss, LISTWISE_LOSS)
        if self.pairing == "listwise" and not self.packing:
            raise RecipeError("recipe key 'pairing': listwise needs 'packing: true' (a group is one packed prompt "
                              "with its responses).")
        if self.listwise_loss != "bradley_terry" and self.pairing != "listwise":
            raise RecipeError(f"recipe key 'listwise_loss': {self.listwise_loss} needs 'pairing: listwise'.")
        self._check_sub_groups()
        if self.length_debias != "none" and not self.packing:
            raise RecipeError("recipe key 'length_debias' needs 'packing: true' (the packed batch carries response "
                              "lengths).")
        self._check_ensemble()
        coef = self.length_debias_coef
        if not (isinstance(coef, (int, float)) and coef >= 0 and coef == coef):
            raise RecipeError(f"recipe key 'length_debias_coef': {coef} must be a number ≥ 0.")
        aux = self.router_aux_loss_coef
        if aux is not None and not (isinstance(aux, (int, float)) and aux >= 0 and aux == aux):
            raise RecipeError(f"recipe key 'router_aux_loss_coef': {aux} must be a number ≥ 0 (0: off).")
        if self.max_tokens_per_batch is not None:
            if self.max_tokens_per_batch <= 0:
                raise RecipeError(f"recipe key 'max_tokens_per_batch': {self.max_tokens_per_batch} must be a positive "
                                  "token count (or remove the key for a fixed pair count).")
            if not self.packing:
                raise RecipeError("recipe key 'max_tokens_per_batch' needs 'packing: true' (it budgets packed rows).")

    def _check_sub_groups(self) -> None:
        n = self.listwise_max_comparisons
        if n is None:
            return
        if not is_whole(n, 1):
            raise RecipeError(f"recipe key 'listwise_max_comparisons': {n!r} must be a whole number ≥ 1 (or remove "
                              "the key: one group a prompt).")
        if self.pairing != "listwise":
            raise RecipeError("recipe key 'listwise_max_comparisons' needs 'pairing: listwise' (pairwise trains each "
                              "comparison on its own already).")
        if self.listwise_loss == "plackett_luce":
            raise RecipeError("recipe keys 'listwise_max_comparisons' and 'listwise_loss: plackett_luce' do not "
                              "combine (Plackett-Luce reads a whole ranking, which a sub-group has not): remove one.")

    def _check_ensemble(self) -> None:
        n = self.ensemble_heads
        if not is_whole(n, 1, 64):
            raise RecipeError(f"recipe key 'ensemble_heads': {n!r} must be a whole number from 1 (a plain reward model) "
                              "to 64.")
        if n == 1:
            return
        if not self.packing:
            raise RecipeError("recipe key 'ensemble_heads' needs 'packing: true' (the packed batch carries each "
                              "pair's bootstrap weights).")
        if self.length_debias == "odin":
            raise RecipeError("recipe keys 'ensemble_heads' and 'length_debias: odin' do not combine (both claim "
                              "the head's outputs): use length_debias: corr_penalty, which applies to each head.")
        if self.listwise_loss == "plackett_luce":
            raise RecipeError("recipe keys 'ensemble_heads' and 'listwise_loss: plackett_luce' do not combine (each "
                              "head trains on bootstrap weights of the pairs, which a Plackett-Luce group has not): "
                              "use listwise_loss: bradley_terry.")

    def _check_schedule(self) -> None:
        """Values that would fail inside torch after the model loaded, or silently train nothing."""
        lr = self.learning_rate
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise RecipeError(f"recipe key 'learning_rate': {lr} would train nothing or diverge; give a positive "
                              "number such as 1e-5.")
        for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            if getattr(self, key) < 1:
                raise RecipeError(f"recipe key '{key}': {getattr(self, key)} must be at least 1.")
        epochs, steps = self.num_train_epochs, self.max_steps
        if not math.isfinite(epochs):
            raise RecipeError(f"recipe key 'num_train_epochs': {epochs} is not a number of epochs.")
        if (steps is None or steps <= 0) and epochs <= 0:
            raise RecipeError(f"recipe keys 'max_steps' ({steps}) and 'num_train_epochs' ({epochs}) leave nothing to "
                              "train; set max_steps > 0 or num_train_epochs > 0.")
