"""``RewardkitTrainer``: TRL's ``RewardTrainer`` with the packed forward and exact, sync-free metrics.

What it changes, and why:
- ``compute_loss`` runs the prompt-sharing packed forward (``reward.packing``) when the batch is
  packed, TRL's padded forward otherwise; the loss terms are the pure functions of ``reward.training.losses``.
- Its settings (packing and its attention mode, token budget, length debiasing) are fields of its
  ``args`` (``reward.config.RewardkitConfig``), as TRL's trainer reads
  ``center_rewards_coefficient``; the trainer sets the model's packed attention itself, so a trainer
  built from Python runs what its ``args`` say.
- Metrics: TRL calls ``.item()`` several times per micro-batch (a host sync each) and logs accuracy
  as a mean of batch means that counts ties as losses. Here counts accumulate on the device and are
  reduced across processes once per ``log``: exact accuracy, ties apart. Evaluation counts go
  through ``gather_for_metrics``, so ``eval_accuracy`` is over exactly the eval set.
- ``max_tokens_per_batch``: training micro-batches are a token budget filled with pairs of similar
  length (``reward.packing.TokenBudgetBatchSampler``) instead of a fixed pair count.
- ZeRO with optimizer offload gets DeepSpeed's CPU Adam (with the Trainer's parameter groups): the
  Trainer hands DeepSpeed a torch AdamW, which DeepSpeed refuses under offload.
- A mixture-of-experts base adds its router's load-balancing loss in training (``reward.training.routing``), as
  the family's causal LM does; TRL's reward trainer drops it.
- ``pairing: listwise``: micro-batches of whole prompt groups, each prompt and each distinct response
  computed once (``reward.packing.groups``), the Bradley-Terry loss averaged within each group (or
  Plackett-Luce for total orders); TRL trains every pair alone.
- ``ensemble_heads``: N reward heads on one backbone, each trained on its own Poisson(1) bootstrap weights
  of the pairs (``reward.packing.bootstrap``), all in one forward; accuracy is the members' mean's, and
  ``ensemble_disagreement`` logs how often members order a pair differently. TRL trains one head.
- ``length_debias`` (``corr_penalty``, ``odin``): extra loss terms TRL lacks; an ODIN head has two
  outputs (quality, length) and accuracy, reports and exports use the quality one.
- A NaN or infinite training loss stops the run (``TrainingDiverged``) at the next log step instead
  of training on and stamping a NaN model complete.
- Datasets prepared by ``reward.data`` (tokenized, every pair fitted to ``max_length``) pass TRL's
  dataset preparation as they are: its per-row length filter would read every row of a memory-mapped
  set (minutes for a million pairs) to drop nothing. Their lengths are checked on the Arrow columns.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any

import torch
from trl import RewardTrainer

from ..config.reward_config import RewardkitConfig
from ..errors import RecipeError, TrainingDiverged
from ..modeling.heads import head_name, unwrap_peft
from ..packing import (
    GroupBatchSampler,
    ListwiseCollator,
    PackedPreferenceCollator,
    ScoreCapture,
    TokenBudgetBatchSampler,
    attention_features,
    describe,
    group_layout,
    longest_row,
    ordered_group_batches,
    packed_pair_lengths,
    packed_rewards,
    packed_token_rewards,
    prepare_model,
)
from ..seams import PACKED_COLUMNS, reward_trainer_accepts_outputs
from . import losses
from .routing import RouterLoss

logger = logging.getLogger(__name__)
_STATS = ("pairs", "correct", "ties", "margin_sum", "loss_sum", "disagree", "tokens")


def _set_packed_forward(model: Any, config: RewardkitConfig) -> None:
    """Point ``model`` at the packed attention ``config.packed_attention`` asks for; a model that cannot
    pack under ``auto`` trains padded (``config.packing`` becomes false, with the warning saying why)."""
    if not isinstance(model, torch.nn.Module):
        return
    half = bool(config.bf16 or config.fp16 or getattr(model, "is_loaded_in_4bit", False))
    mode = prepare_model(model, config.packed_attention, config.device, half=half)
    if mode == "padded":
        if config.length_debias != "none":
            raise RecipeError(f"recipe key 'length_debias': {config.length_debias} needs the packed forward, which "
                              "this model cannot run (see the warning above): use length_debias: none.")
        config.packing = False
        return
    logger.info("packed forward: %s attention (%s)", mode, describe(attention_features(model)))


class RewardkitTrainer(RewardTrainer):
    """RewardTrainer + packing + exact metrics, set by its ``args`` (a ``RewardkitConfig``); ``packing: false``
    is the stock padded path."""

    def __init__(self, *args: Any, **kwargs: Any):
        self._eval_prefix = "eval"  # the running evaluation's metric prefix (``evaluate``)
        config = kwargs.get("args", args[1] if len(args) > 1 else None)
        if not isinstance(config, RewardkitConfig):
            raise TypeError("RewardkitTrainer takes its settings from a reward.config.RewardkitConfig as `args`.")
        if config.packing:
            _set_packed_forward(kwargs.get("model", args[0] if args else None), config)
        if config.packing and kwargs.get("data_collator") is None:
            pad = kwargs["processing_class"].pad_token_id
            members = dict(members=config.ensemble_heads, seed=config.seed)
            kwargs["data_collator"] = (
                ListwiseCollator(pad, config.max_tokens_per_batch, total_orders=config.listwise_loss == "plackett_luce",
                                 **members)
                if config.pairing == "listwise" else PackedPreferenceCollator(pad_token_id=pad, **members))
        with reward_trainer_accepts_outputs(kwargs.get("model")):
            super().__init__(*args, **kwargs)
        self._check_head_trainable()
        self._router = RouterLoss.for_model(unwrap_peft(self.model), config.router_aux_loss_coef)
        if self._router is not None:
            logger.info("mixture of experts: router load-balancing loss × %g added in training", self._router.coef)
        self._capture: ScoreCapture | None = None
        self._stats: dict[str, torch.Tensor] = {}

    def _check_head_trainable(self) -> None:
        name = head_name(self.model)
        trainable = [n for n, p in self.model.named_parameters() if p.requires_grad and f".{name}." in f".{n}"]
        if not trainable:
            raise RecipeError(f"the reward head '{name}' is frozen: LoRA would never train it. "
                               "Use task_type SEQ_CLS / modules_to_save=['score'].")

    def get_train_dataloader(self) -> Any:
        """Whole prompt groups a micro-batch under ``pairing: listwise`` (sub-groups with
        ``listwise_max_comparisons``); a token-budget batch sampler when ``max_tokens_per_batch`` is set;
        the Trainer's otherwise. accelerate shards the batches across
        processes like any batch sampler's."""
        listwise = self._listwise
        if (not self.args.max_tokens_per_batch and not listwise) or self.train_dataset is None:
            return super().get_train_dataloader()
        dataset = self._remove_unused_columns(self.train_dataset, description="training")
        if listwise:
            groups, tokens = group_layout(dataset, self.args.listwise_max_comparisons)
            sampler = GroupBatchSampler(groups, tokens, self.args.max_tokens_per_batch,
                                        groups_per_batch=self.args.per_device_train_batch_size, seed=self.args.seed)
        else:
            sampler = TokenBudgetBatchSampler(packed_pair_lengths(dataset), self.args.max_tokens_per_batch,
                                              seed=self.args.seed)
        return self._batched_loader(dataset, sampler)

    def _batched_loader(self, dataset: Any, batch_sampler: Any) -> Any:
        from torch.utils.data import DataLoader

        workers = self.args.dataloader_num_workers
        loader = DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=self.data_collator, num_workers=workers,
                            pin_memory=self.args.dataloader_pin_memory,
                            persistent_workers=bool(workers and self.args.dataloader_persistent_workers),
                            prefetch_factor=self.args.dataloader_prefetch_factor if workers else None)
        return self.accelerator.prepare(loader)

    @property
    def _listwise(self) -> bool:
        return self.args.pairing == "listwise" and self.args.packing

    def _whole_groups_in_eval(self) -> bool:
        """Listwise evaluation batches whole groups on one process: each prompt and response computed once
        (fixed-size batches of pairs computed a question split over two batches twice, ~1.45× the tokens on
        qa-feedback). Across processes the batches stay fixed-size: the Trainer gathers equal-sized tensors."""
        return self._listwise and self.args.world_size == 1

    def get_eval_dataloader(self, eval_dataset: Any = None) -> Any:
        if not self._whole_groups_in_eval():
            return super().get_eval_dataloader(eval_dataset)
        if isinstance(eval_dataset, str):
            eval_dataset = self.eval_dataset[eval_dataset]
        return self.get_test_dataloader(eval_dataset if eval_dataset is not None else self.eval_dataset)

    def get_test_dataloader(self, test_dataset: Any) -> Any:
        """Under :meth:`_whole_groups_in_eval`, consecutive whole groups up to ``max_tokens_per_batch``, in the
        set's order: predictions follow the set wherever its groups are contiguous (``group_contiguous``)."""
        if not self._whole_groups_in_eval():
            return super().get_test_dataloader(test_dataset)
        dataset = self._remove_unused_columns(test_dataset, description="evaluation")
        groups, tokens = group_layout(dataset)
        return self._batched_loader(dataset, ordered_group_batches(groups, tokens, self.args.max_tokens_per_batch))

    def create_optimizer(self, *args: Any, **kwargs: Any) -> Any:
        optimizer = super().create_optimizer(*args, **kwargs)
        if self.is_deepspeed_enabled and _offloads_optimizer(self.accelerator) and type(optimizer).__name__ == "AdamW":
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            a = self.args
            self.optimizer = DeepSpeedCPUAdam(optimizer.param_groups, lr=a.learning_rate, betas=(a.adam_beta1, a.adam_beta2),
                                              eps=a.adam_epsilon, weight_decay=a.weight_decay, adamw_mode=True)
            logger.info("ZeRO optimizer offload: DeepSpeedCPUAdam instead of %s", type(optimizer).__name__)
        return self.optimizer

    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
        """seams.TRAINER_DATASET_HOOK: a prepared set as it is, once its longest row is checked (Arrow)."""
        if "chosen_ids" not in getattr(dataset, "column_names", ()):
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        longest = longest_row(dataset)
        if args.max_length is not None and longest > args.max_length:
            raise RecipeError(f"the {dataset_name} set has a {longest}-token row, over max_length {args.max_length}: "
                              "prepare it with rewardkit's data step (reward.data.prepare_data).")
        return dataset

    def _set_signature_columns_if_needed(self) -> None:  # seams.TRAINER_SIGNATURE_HOOK: keep the packed columns
        if self._signature_columns is None:
            self._signature_columns = list(PACKED_COLUMNS)

    def _head_capture(self) -> ScoreCapture:
        """The hook on the trained model's reward head (``self.model``, also when ``compute_loss`` gets a wrapper)."""
        if self._capture is None:
            self._capture = ScoreCapture.for_model(self.model)
        return self._capture

    def pair_rewards(self, model: Any, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """(chosen rewards, rejected rewards, real tokens: an int or a device scalar) for a packed or padded
        batch; rewards are [n], or [n, outputs] for an ODIN head (quality, length) or an ensemble (members)."""
        odin = self.args.length_debias == "odin" or self.args.ensemble_heads > 1
        if "rows" in inputs:  # listwise: every distinct response once, then each pair's two
            rewards = torch.cat(self._row_rewards(model, inputs["rows"], odin))
            tokens = sum(row["input_ids"].numel() for row in inputs["rows"])
            return rewards[inputs["chosen_pos"]], rewards[inputs["rejected_pos"]], tokens
        if "segment_ids" in inputs:
            chosen, rejected = packed_rewards(model, self._head_capture(), inputs, inner=self.model,
                                              all_outputs=odin)
            return chosen, rejected, inputs["input_ids"].numel()
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
        chosen, rejected = torch.chunk(out.logits.squeeze(-1), chunks=2)
        return chosen, rejected, inputs["attention_mask"].sum()

    def _row_rewards(self, model: Any, rows: list[dict[str, Any]], odin: bool) -> list[torch.Tensor]:
        """The rewards of each packed row of a listwise batch (a group over the token budget spans several
        rows, one forward each). DDP allows one forward per backward: the rows before the last run under
        ``no_sync``, so that the single backward reduces the gradients of them all once."""
        out = []
        for n, row in enumerate(rows):
            last = n == len(rows) - 1
            with contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync():
                out.append(packed_token_rewards(model, self._head_capture(), row, inner=self.model,
                                                all_outputs=odin)[row["reward_index"]])
        return out

    def length_terms(self, chosen: torch.Tensor, rejected: torch.Tensor,
                     inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reward for the Bradley-Terry loss of chosen, of rejected, extra loss) under ``length_debias``."""
        if self.args.length_debias == "none":
            return chosen, rejected, chosen.new_zeros(())
        c_len, r_len = inputs["chosen_len"], inputs["rejected_len"]
        if self.args.length_debias == "corr_penalty":
            return chosen, rejected, losses.corr_penalty(chosen, rejected, c_len, r_len, self.args.length_debias_coef)
        return losses.odin_terms(chosen, rejected, c_len, r_len, self.args.length_debias_coef, self._head_weight())

    def _head_weight(self) -> torch.Tensor:
        """The trained reward head's weight (PEFT keeps the trained copy in ``modules_to_save``)."""
        head = getattr(unwrap_peft(self.model), head_name(self.model))
        if hasattr(head, "modules_to_save"):
            head = next(iter(head.modules_to_save.values()))
        return head.weight

    def compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        mode = "train" if self.model.training else "eval"
        if self._router is not None:
            self._router.start()
        chosen, rejected, tokens = self.pair_rewards(model, inputs)
        bt_chosen, bt_rejected, extra = self.length_terms(chosen, rejected, inputs)
        ensemble = self.args.ensemble_heads > 1
        margin = inputs.get("margin")
        members_gap = None
        if ensemble:  # each member its own Bradley-Terry loss; the reward model's reward is their mean
            margin = margin[:, None] if margin is not None else None
            members_gap = (chosen - rejected).detach()
            chosen, rejected = chosen.mean(-1), rejected.mean(-1)
        elif chosen.dim() == 2:  # ODIN: the quality head is the reward model's reward
            chosen, rejected = chosen[:, 0], rejected[:, 0]
        per_pair = losses.bradley_terry(bt_chosen, bt_rejected, margin)
        weights = inputs.get("bootstrap") if mode == "train" else None  # evaluation weighs every pair once
        loss = self._pair_loss(per_pair if weights is None else per_pair * weights.to(per_pair.dtype),
                               bt_chosen, bt_rejected, inputs) + extra
        if self.args.center_rewards_coefficient is not None:
            loss = loss + losses.centering(bt_chosen, bt_rejected, self.args.center_rewards_coefficient)
        if self._router is not None and mode == "train":  # the reward model's eval loss stays Bradley-Terry
            aux = self._router.loss(inputs.get("attention_mask"))
            if aux is not None:
                loss = loss + aux
        with torch.no_grad():
            gap = (chosen - rejected).float()
            pair_loss = per_pair.detach().float()
            pair_loss = pair_loss.mean(-1) if pair_loss.dim() == 2 else pair_loss
            disagree = losses.members_disagree(members_gap) if members_gap is not None else torch.zeros_like(gap)
            if mode == "eval":  # every process gets the whole de-duplicated batch; `log` does not reduce again
                every = self.accelerator.gather_for_metrics(torch.stack([gap, pair_loss, disagree], dim=-1))
                gap, pair_loss, disagree = every[:, 0], every[:, 1], every[:, 2]
            n = torch.tensor(float(gap.numel()), device=gap.device)
            row = torch.stack([n, (gap > 0).sum().float(), (gap == 0).sum().float(), gap.sum(),
                               pair_loss.sum(), disagree.sum(), torch.as_tensor(tokens, device=gap.device).float()])
            self._stats[mode] = self._stats[mode] + row if mode in self._stats else row
        if return_outputs:
            return loss, {"rewards": torch.stack([chosen, rejected], dim=-1)}
        return loss

    def _pair_loss(self, per_pair: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor,
                   inputs: dict[str, Any]) -> torch.Tensor:
        """The mean per-pair loss; for a listwise batch, the mean over groups of each group's loss (per
        member, then over members, for an ensemble's [n, members] losses)."""
        if "pair_group" not in inputs:
            return per_pair.mean()
        per_group = losses.group_mean(per_pair, inputs["pair_group"], inputs["n_groups"])
        if len(inputs.get("pl_group", ())):  # the collator found total orders: Plackett-Luce was asked for
            slots = chosen.new_zeros(inputs["n_responses"])
            # the responses' rewards back in slot order (every response is some pair's chosen or rejected)
            slots = slots.index_put((inputs["chosen_pos"],), chosen).index_put((inputs["rejected_pos"],), rejected)
            per_group = per_group.index_copy(0, inputs["pl_group"], losses.plackett_luce(slots, inputs["pl_order"])
                                             .to(per_group.dtype))
        return per_group.mean()

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        self._stats.pop("eval", None)  # counts left by a `predict` call must not leak into this evaluation
        # a named set (``eval_dataset`` a dict) logs under its own prefix, ``eval_NAME_``, as the Trainer's loss does
        self._eval_prefix = kwargs.get("metric_key_prefix", "eval")
        return super().evaluate(*args, **kwargs)

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        out = super().predict(*args, **kwargs)
        self._stats.pop("eval", None)  # predict does not log: drop its counts
        return out

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        stats = self._stats.pop(mode, None)
        if stats is not None:
            # one sync per log, not per step; eval counts were gathered already
            total = (self.accelerator.reduce(stats, reduction="sum") if mode == "train" else stats).tolist()
            values = dict(zip(_STATS, total))
            pairs = max(values["pairs"], 1.0)
            prefix = f"{self._eval_prefix}_" if mode == "eval" else ""
            logs[prefix + "accuracy"] = values["correct"] / pairs
            logs[prefix + "ties"] = values["ties"] / pairs
            logs[prefix + "margin"] = values["margin_sum"] / pairs
            if self.args.ensemble_heads > 1:
                logs[prefix + "ensemble_disagreement"] = values["disagree"] / pairs
            if mode == "eval":
                logs[prefix + "pairs"] = values["pairs"]
            if mode == "train":
                logs["tokens"] = values["tokens"]
        super().log(logs, start_time)
        loss = logs.get("loss")
        if mode == "train" and loss is not None and not math.isfinite(loss):
            # checked where the loss is already on the host (a log step), so it costs no extra sync
            raise TrainingDiverged(
                f"training diverged: the loss is {loss} at step {self.state.global_step}. The run is stopped and not "
                "marked complete. Lower learning_rate, keep max_grad_norm on, or use bf16 instead of fp16; "
                "logs/train_log.jsonl has the steps before it.")


def _offloads_optimizer(accelerator: Any) -> bool:
    """Whether the DeepSpeed config accelerate resolved offloads optimizer states (to CPU or NVMe)."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    config = getattr(plugin, "deepspeed_config", None) or {}
    offload = (config.get("zero_optimization") or {}).get("offload_optimizer") or {}
    return offload.get("device", "none") in ("cpu", "nvme")
