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

from .errors import DataError, RecipeError
from .evaluation import PairRewards, write_report
from .recipe import Recipe
from .rundir import (
    DATA_REPORT,
    ENVIRONMENT,
    EVAL_REPORT,
    EVAL_REWARDS,
    LOG_DIR,
    METRICS,
    RESOLVED_RECIPE,
    RUN_COMPLETE,
    RUN_INFO,
    TRAIN_LOG,
    TRAIN_LOG_JSONL,
    TRAIN_PROMPTS,
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
        """The data step's counts, drops and lengths (also when it left nothing to train on)."""
        if self.is_main:
            write_json(self.dir / DATA_REPORT, data.report.to_dict())

    def start(self, recipe: Recipe, data: Any, run_info: dict[str, Any]) -> None:
        """Before training: what the run is (resolved recipe, environment, how to reload it), its
        training prompt hashes, and no completion stamp (a rerun is unfinished until it ends)."""
        if not self.is_main:
            return
        # Hashes, not text: enough for `rewardkit eval` to leave out what the model trained on.
        write_json(self.dir / TRAIN_PROMPTS, {"hash": "sha1(prompt json)[:16]", "prompts": data.train_prompt_hashes or []})
        atomic_write_text(self.dir / RESOLVED_RECIPE, yaml.safe_dump(_plain(recipe.resolved()), sort_keys=False))
        write_json(self.dir / ENVIRONMENT, environment())
        write_json(self.dir / RUN_INFO, run_info)
        (self.dir / RUN_COMPLETE).unlink(missing_ok=True)

    def weights_saved(self) -> None:
        """After ``save_model``: safetensors writes 0600 whatever the umask."""
        if self.is_main:
            set_default_modes(self.dir)

    def evaluation(self, evaluation: dict[str, Any], rewards: PairRewards, ids: dict[str, list[list[int]]],
                   max_length: int | None) -> None:
        """The held-out report, and the first 64 pairs' token ids and rewards (:data:`EVAL_REWARDS`)."""
        if not self.is_main:
            return
        write_report(self.dir / EVAL_REPORT, evaluation, rewards, title=f"Held-out evaluation of {self.dir.name}",
                     max_length=max_length)
        write_json(self.dir / EVAL_REWARDS, {"chosen_ids": ids["chosen_ids"][:64], "rejected_ids": ids["rejected_ids"][:64],
                                             "chosen": rewards.chosen[:64], "rejected": rewards.rejected[:64]})

    def finish(self, metrics: dict[str, Any], global_step: int) -> None:
        """Metrics, then the completion stamp, last."""
        if not self.is_main:
            return
        write_json(self.dir / METRICS, metrics)
        write_json(self.dir / RUN_COMPLETE, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "global_step": global_step})


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
    from .modeling import build_peft_config, preflight_lora_targets

    args, margs = recipe.training, recipe.model
    source = recipe.model_source()
    preflight_lora_targets(margs, source)  # before anything is loaded or written
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
    if args.eval_strategy != "no" and data.eval is None:
        logger.warning("eval_strategy %s but no eval pairs: evaluation during training is off", args.eval_strategy)
        args.eval_strategy = "no"
    resume = _resume_target(args.resume_from_checkpoint, args.output_dir)
    writer.start(recipe, data, {
        "model_name_or_path": margs.model_name_or_path, "gguf_file": source.gguf_file,
        "model_revision": margs.model_revision, "use_peft": bool(margs.use_peft), "quantized_base": margs.quantized,
        "trust_remote_code": bool(args.trust_remote_code), "max_length": args.max_length,
        "truncation": recipe.data.truncation, "recipe": recipe.path, "datasets": [s.path for s in recipe.sources],
        "length_debias": args.length_debias, "reward_read_at": chat_format(tokenizer).turn_end,
    })
    return TrainingRun(recipe, state, writer, tokenizer, data, model,
                       build_peft_config(margs) if margs.use_peft else None, resume, push, started)


def load_data(recipe: Recipe, source: Any) -> tuple[Any, Any]:
    """(tokenizer, prepared data) of a recipe whose model is ``source``: what ``train`` and ``data inspect`` read."""
    from .data import DataSettings, prepare_data
    from .modeling import load_tokenizer

    tokenizer = load_tokenizer(source)
    return tokenizer, prepare_data(recipe.sources, tokenizer, DataSettings.from_recipe(recipe))


def _load_model(recipe: Recipe, source: Any, tokenizer: Any) -> Any:
    """The reward model to train: its head drawn under the run's seed, the lower layers frozen when the
    recipe asks (the trainer sets its packed attention)."""
    from transformers import set_seed

    from .modeling import freeze_lower_layers, head_outputs, load_reward_model

    args, margs = recipe.training, recipe.model
    # The score head is new (an LM checkpoint has none) and drawn at load time, before the Trainer
    # seeds anything: seed here, or the same recipe trains a different model each run.
    set_seed(args.seed)
    model = load_reward_model(margs, source, tokenizer, num_labels=head_outputs(args.length_debias))
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
    from .trainer import RewardkitTrainer

    args = run.recipe.training
    delay = os.environ.get("REWARDKIT_STEP_DELAY")
    trainer = RewardkitTrainer(
        model=run.model, args=args, train_dataset=run.data.train, eval_dataset=run.data.eval,
        processing_class=run.tokenizer, peft_config=run.peft_config,
        callbacks=[_JsonlLogCallback(run.writer.dir / TRAIN_LOG_JSONL)]
        + ([_StepDelayCallback(float(delay))] if delay else []),
    )
    with save_errors(args.output_dir, clean=run.state.is_main_process):
        result = trainer.train(resume_from_checkpoint=run.resume)
        trainer.save_model(str(run.writer.dir))
    run.writer.weights_saved()
    return trainer, result


def final_evaluation(run: TrainingRun, trainer: Any) -> dict[str, Any] | None:
    """Rewards of the held-out pairs (up to ``eval_max_pairs``) on every rank; metrics and report
    written by the main process. None without eval pairs."""
    if run.data.eval is None:
        return None
    cap = run.recipe.training.eval_max_pairs
    subset = run.data.eval.select(range(min(len(run.data.eval), cap) if cap else len(run.data.eval)))
    got = trainer.predict(subset).predictions  # every rank takes part in the forward
    ids = {k: [list(x) for x in subset[k]] for k in ("chosen_ids", "rejected_ids")}
    prompt = list(subset["prompt_len"])
    rewards = PairRewards(got[:, 0].tolist(), got[:, 1].tolist(), [len(c) - p for c, p in zip(ids["chosen_ids"], prompt)],
                          [len(r) - p for r, p in zip(ids["rejected_ids"], prompt)])
    evaluation = rewards.metrics()
    run.writer.evaluation(evaluation, rewards, ids, run.recipe.training.max_length)
    return evaluation


def finish(run: TrainingRun, trainer: Any, result: Any, evaluation: dict[str, Any] | None) -> None:
    """Metrics and the completion stamp (main process), then the verified export's Hub push, if asked."""
    import torch

    from .evaluation import summary_lines

    report = run.data.report.to_dict()
    metrics: dict[str, Any] = {"train": result.metrics,
                               "data": {k: report[k] for k in ("total", "kept", "dropped", "truncated")}}
    if evaluation is not None:
        metrics["eval"] = evaluation
    metrics["train_seconds"] = time.time() - run.started
    if torch.cuda.is_available():
        metrics["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    run.writer.finish(metrics, trainer.state.global_step)
    if run.state.is_main_process and evaluation is not None:
        for line in summary_lines(evaluation):
            logger.info("eval: %s", line)
        print(f"held-out accuracy: {evaluation['accuracy']:.4f} on {evaluation['n_pairs']} pairs "
              f"(report: {run.writer.dir / EVAL_REPORT})", flush=True)
    run.state.wait_for_everyone()
    if run.push and run.state.is_main_process:
        from .export import ExportOptions, export_run

        export_run(run.writer.dir, run.writer.dir / "export",
                   ExportOptions(push_to_hub=run.push["repo_id"], private=run.push["private"], token=run.push["token"]))
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_training(recipe: Recipe) -> Path:
    """Train; returns the run directory (``output_dir``): setup → train → final evaluation → finish."""
    run = setup(recipe)
    trainer, result = train(run)
    evaluation = final_evaluation(run, trainer)
    finish(run, trainer, result, evaluation)
    return run.writer.dir


def leave_process_group() -> None:
    """Every rank leaves the process group together, before the process exits (``rewardkit train``; a
    caller of :func:`run_training` may still use the group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
