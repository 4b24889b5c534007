"""One training run: recipe → data → model → ``RewardkitTrainer`` → run directory (→ export).

Runs the same in one process (``rewardkit train``) and under ``accelerate launch`` (``launch/train.py``):
accelerate's environment decides the processes, the recipe decides everything else.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainerCallback

from .config.recipe import Recipe
from .errors import DataError, RecipeError
from .evaluation.metrics import PairRewards
from .evaluation.report import write_report
from .rundir import (
    DATA_REPORT,
    ENVIRONMENT,
    EVAL_REPORT,
    EVAL_REWARDS,
    LOG_DIR,
    METRICS,
    RESOLVED_RECIPE,
    RUN_COMPLETE,
    TRAIN_LOG,
    TRAIN_LOG_JSONL,
    TRAIN_PROMPTS,
    TRAINING_CURVES,
    RunInfo,
    atomic_write_text,
    environment,
    latest_checkpoint,
    save_errors,
    set_default_modes,
    write_json,
)

logger = logging.getLogger("reward")


def _setup_logging(run_dir: Path, is_main: bool) -> None:
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(logging.INFO if is_main else logging.WARNING)
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in root.handlers):
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(fmt)
        root.addHandler(stream)
    if is_main:
        (run_dir / LOG_DIR).mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(run_dir / TRAIN_LOG)
        fh.setFormatter(fmt)
        root.addHandler(fh)


def _resume_target(value: Any, output_dir: str) -> str | None:
    """``latest``/``true`` → newest complete checkpoint (None if there is none yet); a path → itself."""
    if value in (None, False, "", "false", "False"):
        return None
    if value in (True, "true", "True", "latest"):
        found = latest_checkpoint(output_dir)
        if found is None:
            logger.info("resume_from_checkpoint: no complete checkpoint in %s yet, starting fresh", output_dir)
        return str(found) if found else None
    if not Path(value).is_dir() or not (Path(value) / "trainer_state.json").is_file():
        raise RecipeError(f"resume_from_checkpoint: {value} is not a complete checkpoint (no trainer_state.json)")
    return str(value)


class _JsonlLogCallback(TrainerCallback):
    """Every Trainer log line, appended to logs/train_log.jsonl on the main process."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if state.is_world_process_zero and logs:
            with self.path.open("a") as fh:
                fh.write(json.dumps({"step": state.global_step, **logs}) + "\n")


class _StepDelayCallback(TrainerCallback):
    """Fault-injection aid: sleep after each step (``REWARDKIT_STEP_DELAY`` seconds), so a test can
    SIGKILL a run between two checkpoints."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        time.sleep(self.seconds)


class RunWriter:
    """Every file ``rewardkit train`` writes into its run directory, in one place. Only the main
    process writes; on the other ranks each method does nothing, so callers need no guard."""

    def __init__(self, run_dir: str | Path, is_main: bool):
        self.dir = Path(run_dir)
        self.is_main = is_main

    def data_report(self, data: Any) -> None:
        """The data step's counts, drops and lengths (also when it left nothing to train on), and each
        named evaluation set's."""
        if self.is_main:
            named = {"eval_datasets": {k: r.to_dict() for k, r in data.named_reports.items()}} if data.named else {}
            write_json(self.dir / DATA_REPORT, {**data.report.to_dict(), **named})

    def start(self, recipe: Recipe, data: Any, run_info: RunInfo) -> None:
        """Before training: what the run is (resolved recipe, environment, how to reload it), its
        training prompt hashes, and no completion stamp (a rerun is unfinished until it ends)."""
        if not self.is_main:
            return
        # Hashes, not text: enough for `rewardkit eval` to leave out what the model trained on.
        write_json(self.dir / TRAIN_PROMPTS, {"hash": "sha1(prompt json)[:16]", "prompts": data.train_prompt_hashes or []})
        atomic_write_text(self.dir / RESOLVED_RECIPE, yaml.safe_dump(_plain(recipe.resolved()), sort_keys=False))
        write_json(self.dir / ENVIRONMENT, environment())
        run_info.write(self.dir)
        (self.dir / RUN_COMPLETE).unlink(missing_ok=True)

    def weights_saved(self) -> None:
        """After ``save_model``: safetensors writes 0600 whatever the umask."""
        if self.is_main:
            set_default_modes(self.dir)

    def evaluation(self, evaluation: dict[str, Any], rewards: PairRewards, ids: dict[str, list[Any]],
                   max_length: int | None, name: str | None = None) -> None:
        """The held-out report and its first 64 pairs' token ids and rewards (:data:`EVAL_REWARDS`); a named
        evaluation set's report goes to ``eval_report/NAME``."""
        if not self.is_main:
            return
        if name is not None:
            write_report(self.dir / EVAL_REPORT / name, evaluation, rewards, max_length=max_length,
                         title=f"{name}: evaluation of {self.dir.name}")
            return
        write_report(self.dir / EVAL_REPORT, evaluation, rewards, title=f"Held-out evaluation of {self.dir.name}",
                     max_length=max_length)
        write_json(self.dir / EVAL_REWARDS, {**{k: v[:64] for k, v in ids.items()},
                                             "chosen": rewards.chosen[:64], "rejected": rewards.rejected[:64]})

    def finish(self, metrics: dict[str, Any], global_step: int) -> Path | None:
        """Metrics and the training curves, then the completion stamp, last; returns the curves' file."""
        if not self.is_main:
            return None
        from .evaluation.report import plot_training_curves

        curves = plot_training_curves(self.dir / TRAIN_LOG_JSONL, self.dir / TRAINING_CURVES) \
            if (self.dir / TRAIN_LOG_JSONL).is_file() else None
        write_json(self.dir / METRICS, metrics)
        write_json(self.dir / RUN_COMPLETE, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "global_step": global_step})
        return curves


def _plain(value: Any) -> Any:
    """Enums and other objects → YAML-safe values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return getattr(value, "value", str(value))


@dataclass
class TrainingRun:
    """What :func:`setup` prepared: everything :func:`train`, :func:`final_evaluation` and :func:`finish` use."""

    recipe: Recipe
    state: Any  # accelerate.PartialState
    writer: RunWriter
    tokenizer: Any
    data: Any  # reward.data.PreparedData
    model: Any
    peft_config: Any
    resume: str | None
    push: dict[str, Any] | None  # the Hub push asked for, done after the run (token kept in memory only)
    started: float = field(default_factory=time.time)


def setup(recipe: Recipe) -> TrainingRun:
    """Load data and model, settle the arguments, and write the run's metadata (main process)."""
    from accelerate import PartialState

    from .data.formatting import chat_format
    from .modeling.heads import fit_max_length
    from .modeling.lora import build_peft_config, preflight_lora_targets
    from .modeling.source import ModelSource

    args, margs = recipe.training, recipe.model
    source = ModelSource.of_recipe(recipe)
    preflight_lora_targets(margs, source)  # before anything is loaded or written
    args.max_length = fit_max_length(args.max_length, source.context_length(), "recipe key 'max_length'")
    state = PartialState()
    writer = RunWriter(args.output_dir, state.is_main_process)
    writer.dir.mkdir(parents=True, exist_ok=True)
    _setup_logging(writer.dir, state.is_main_process)
    started = time.time()

    tokenizer, data = load_data(recipe, source)
    writer.data_report(data)  # as soon as it is known, also when it leaves nothing to train on
    if state.is_main_process:
        logger.info("data:\n%s", data.report.summary())
    if data.train is None:
        raise DataError(f"no training pairs left after preparation; see {writer.dir / DATA_REPORT}.")
    model = _load_model(recipe, source, tokenizer)
    push = _hold_hub_push(args)
    if args.eval_strategy != "no" and data.eval is None and not data.named:
        logger.warning("eval_strategy %s but no eval pairs: evaluation during training is off", args.eval_strategy)
        args.eval_strategy = "no"
    resume = _resume_target(args.resume_from_checkpoint, args.output_dir)
    writer.start(recipe, data, RunInfo(
        model_name_or_path=margs.model_name_or_path, gguf_file=source.gguf_file, model_revision=margs.model_revision,
        use_peft=bool(margs.use_peft), quantized_base=bool(margs.quantized), trust_remote_code=bool(args.trust_remote_code),
        max_length=args.max_length, truncation=recipe.data.truncation, recipe=recipe.path,
        datasets=[s.path for s in recipe.sources], length_debias=args.length_debias, ensemble_heads=args.ensemble_heads,
        reward_read_at=chat_format(tokenizer).turn_end))
    return TrainingRun(recipe, state, writer, tokenizer, data, model,
                       build_peft_config(margs) if margs.use_peft else None, resume, push, started)


def load_data(recipe: Recipe, source: Any) -> tuple[Any, Any]:
    """(tokenizer, prepared data) of a recipe whose model is ``source``: what ``train`` and ``data inspect`` read."""
    from .data import DataSettings, prepare_data
    from .data.pipeline import prepare_named_sets
    from .modeling.source import load_tokenizer

    tokenizer = load_tokenizer(source)
    settings = DataSettings.from_recipe(recipe)
    data = prepare_data(recipe.sources, tokenizer, settings)
    for name, prepared in prepare_named_sets(recipe.data.eval_sources, tokenizer, settings).items():
        data.named[name], data.named_reports[name] = prepared.train, prepared.report
    return tokenizer, data


def _load_model(recipe: Recipe, source: Any, tokenizer: Any) -> Any:
    """The reward model to train: its head drawn under the run's seed, the lower layers frozen when the
    recipe asks (the trainer sets its packed attention)."""
    from transformers import set_seed

    from .modeling.heads import draw_member_heads, freeze_lower_layers, head_outputs
    from .modeling.load import load_reward_model

    args, margs = recipe.training, recipe.model
    # The score head is new (an LM checkpoint has none) and drawn at load time, before the Trainer
    # seeds anything: seed here, or the same recipe trains a different model each run.
    set_seed(args.seed)
    model = load_reward_model(margs, source, tokenizer, num_labels=head_outputs(args.length_debias, args.ensemble_heads))
    if args.ensemble_heads > 1:
        draw_member_heads(model, args.seed)
    if margs.freeze_trainable_layers is not None:
        n = freeze_lower_layers(model, margs.freeze_trainable_layers)
        logger.info("freeze_trainable_layers=%d: %.1fM trainable parameters", margs.freeze_trainable_layers, n / 1e6)
    return model


def _hold_hub_push(args: Any) -> dict[str, Any] | None:
    """The Hub push the recipe asks for, taken out of the Trainer's hands: rewardkit pushes a verified
    export at the end, not raw checkpoints, and the Trainer pickles its arguments into every save
    (training_args.bin), so the token must not ride along."""
    push = {"repo_id": args.hub_model_id, "private": args.hub_private_repo, "token": args.hub_token} \
        if args.push_to_hub else None
    args.push_to_hub = False
    args.hub_token = None
    return push


def train(run: TrainingRun) -> tuple[Any, Any]:
    """(trainer, train result): ``RewardkitTrainer`` trains and saves the model into the run directory."""
    from .training.trainer import RewardkitTrainer

    args = run.recipe.training
    delay = os.environ.get("REWARDKIT_STEP_DELAY")
    trainer = RewardkitTrainer(
        model=run.model, args=args, train_dataset=run.data.train, eval_dataset=_eval_sets(run.data),
        processing_class=run.tokenizer, peft_config=run.peft_config,
        callbacks=[_JsonlLogCallback(run.writer.dir / TRAIN_LOG_JSONL)]
        + ([_StepDelayCallback(float(delay))] if delay else []),
    )
    with save_errors(args.output_dir, clean=run.state.is_main_process):
        result = trainer.train(resume_from_checkpoint=run.resume)
        trainer.save_model(str(run.writer.dir))
    run.writer.weights_saved()
    return trainer, result


def _eval_sets(data: Any) -> Any:
    """What the trainer evaluates at ``eval_steps``: the held-out split alone (logged as ``eval_*``), or with
    the named sets, each under its name (``eval_NAME_*``; the held-out split is ``held_out``)."""
    if not data.named:
        return data.eval
    return {**({"held_out": data.eval} if data.eval is not None else {}), **data.named}


def _set_rewards(trainer: Any, dataset: Any, cap: int | None) -> tuple[PairRewards, dict[str, list[Any]]]:
    """Rewards of a prepared set's pairs (up to ``cap``), computed on every rank, and their token ids and
    prompt lengths."""
    subset = dataset.select(range(min(len(dataset), cap) if cap else len(dataset)))
    if trainer.args.pairing == "listwise":  # listwise evaluation batches whole groups, in the set's order
        from .packing import group_contiguous

        subset = group_contiguous(subset)
    got = trainer.predict(subset).predictions  # every rank takes part in the forward
    ids = {k: [list(x) for x in subset[k]] for k in ("chosen_ids", "rejected_ids")}
    prompt = ids["prompt_len"] = list(subset["prompt_len"])
    rewards = PairRewards(got[:, 0].tolist(), got[:, 1].tolist(), [len(c) - p for c, p in zip(ids["chosen_ids"], prompt)],
                          [len(r) - p for r, p in zip(ids["rejected_ids"], prompt)])
    return rewards, ids


def _ranked_metrics(rewards: PairRewards, ids: dict[str, list[Any]]) -> dict[str, Any]:
    """Top-1 accuracy and Kendall τ over the held-out prompts, as ``rewardkit eval`` reports them for ranked
    data (its :class:`ResponseGroups`, on token ids here); nothing for plain pairs."""
    from .evaluation.pairs import ResponseGroups

    groups = ResponseGroups.of_triples((tuple(c[:n]), None, tuple(c[n:]), tuple(r[n:]))
                                       for c, r, n in zip(ids["chosen_ids"], ids["rejected_ids"], ids["prompt_len"]))
    return groups.ranked_metrics(groups.response_rewards(rewards.chosen, rewards.rejected))


def final_evaluation(run: TrainingRun, trainer: Any) -> dict[str, Any] | None:
    """Rewards of the held-out pairs (up to ``eval_max_pairs``) on every rank; metrics and report
    written by the main process. None without eval pairs."""
    if run.data.eval is None:
        return None
    rewards, ids = _set_rewards(trainer, run.data.eval, run.recipe.training.eval_max_pairs)
    evaluation = {**rewards.metrics(), **_ranked_metrics(rewards, ids)}
    run.writer.evaluation(evaluation, rewards, ids, run.recipe.training.max_length)
    return evaluation


def named_evaluations(run: TrainingRun, trainer: Any) -> dict[str, dict[str, Any]]:
    """Each ``eval_datasets`` set evaluated like the held-out split, its report in ``eval_report/NAME``."""
    out = {}
    for name, dataset in run.data.named.items():
        rewards, ids = _set_rewards(trainer, dataset, run.recipe.training.eval_max_pairs)
        out[name] = rewards.metrics()
        run.writer.evaluation(out[name], rewards, ids, run.recipe.training.max_length, name=name)
    return out


def finish(run: TrainingRun, trainer: Any, result: Any, evaluation: dict[str, Any] | None,
           named: dict[str, dict[str, Any]] | None = None) -> None:
    """Metrics and the completion stamp (main process), then the verified export's Hub push, if asked."""
    import torch

    from .evaluation.metrics import summary_lines

    report = run.data.report.to_dict()
    metrics: dict[str, Any] = {"train": result.metrics,
                               "data": {k: report[k] for k in ("total", "kept", "dropped", "truncated")}}
    if evaluation is not None:
        metrics["eval"] = evaluation
    if named:
        metrics["eval_datasets"] = named
    metrics["train_seconds"] = time.time() - run.started
    if torch.cuda.is_available():
        metrics["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    curves = run.writer.finish(metrics, trainer.state.global_step)
    if curves is not None:
        print(f"training curves: {curves}", flush=True)
    if run.state.is_main_process and evaluation is not None:
        for line in summary_lines(evaluation):
            logger.info("eval: %s", line)
        print(f"held-out accuracy: {evaluation['accuracy']:.4f} on {evaluation['n_pairs']} pairs "
              f"(report: {run.writer.dir / EVAL_REPORT})", flush=True)
    run.state.wait_for_everyone()
    if run.push and run.state.is_main_process:
        from .export.options import ExportOptions
        from .export.write import export_run

        export_run(run.writer.dir, run.writer.dir / "export",
                   ExportOptions(push_to_hub=run.push["repo_id"], private=run.push["private"], token=run.push["token"]))
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_training(recipe: Recipe) -> Path:
    """Train; returns the run directory (``output_dir``): setup → train → final evaluation → finish."""
    run = setup(recipe)
    trainer, result = train(run)
    evaluation = final_evaluation(run, trainer)
    finish(run, trainer, result, evaluation, named_evaluations(run, trainer))
    return run.writer.dir
