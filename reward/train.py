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
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainerCallback

from .recipe import Recipe
from .rundir import RUN_COMPLETE, TRAIN_PROMPTS, environment, latest_checkpoint, set_default_modes, write_json

logger = logging.getLogger("reward")
RUN_INFO = "rewardkit_run.json"


def _setup_logging(run_dir: Path, is_main: bool) -> None:
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(logging.INFO if is_main else logging.WARNING)
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in root.handlers):
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(fmt)
        root.addHandler(stream)
    if is_main:
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(run_dir / "logs" / "train.log")
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
        raise FileNotFoundError(f"resume_from_checkpoint: {value} is not a complete checkpoint (no trainer_state.json)")
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


def run_training(recipe: Recipe) -> Path:
    """Train; returns the run directory (``output_dir``)."""
    import torch
    from accelerate import PartialState

    from .data import prepare_data
    from .evaluation import compute_metrics, summary_lines, write_report
    from .modeling import build_peft_config, freeze_lower_layers, load_reward_model, load_tokenizer, preflight_lora_targets
    from .trainer import RewardkitTrainer

    args, margs, dargs = recipe.training, recipe.model, recipe.data
    preflight_lora_targets(margs, dargs.gguf_file, args.trust_remote_code)  # before anything is loaded or written
    state = PartialState()
    run_dir = Path(args.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _setup_logging(run_dir, state.is_main_process)
    started = time.time()

    tokenizer = load_tokenizer(margs.model_name_or_path, dargs.gguf_file, margs.model_revision, args.trust_remote_code)
    data = prepare_data(recipe.sources, tokenizer, args.max_length, dargs.truncation, args.seed, dargs.eval_split_size,
                        dargs.max_train_samples, dargs.max_eval_samples, dargs.cache_dir)
    if state.is_main_process:
        logger.info("data:\n%s", data.report.summary())
        write_json(run_dir / "data_report.json", data.report.to_dict())
        # Hashes, not text: enough for `rewardkit eval` to leave out what the model trained on.
        write_json(run_dir / TRAIN_PROMPTS, {"hash": "sha1(prompt json)[:16]", "prompts": data.train_prompt_hashes or []})
    if data.train is None:
        from .data.report import DataError

        raise DataError(f"no training pairs left after preparation; see {run_dir / 'data_report.json'}.")

    from transformers import set_seed

    # The score head is new (an LM checkpoint has none) and drawn at load time, before the Trainer
    # seeds anything: seed here, or the same recipe trains a different model each run.
    set_seed(args.seed)
    model = load_reward_model(margs, tokenizer, dargs.gguf_file, args.trust_remote_code)
    if dargs.packing:
        from .packing import set_packed_attention

        impl = set_packed_attention(model, dargs.packed_attention, state.device, half=bool(args.bf16 or args.fp16
                                                                                          or margs.load_in_4bit))
        logger.info("packed forward: %s attention", impl)
    peft_config = build_peft_config(margs) if margs.use_peft else None
    if dargs.freeze_trainable_layers is not None:
        n = freeze_lower_layers(model, dargs.freeze_trainable_layers)
        logger.info("freeze_trainable_layers=%d: %.1fM trainable parameters", dargs.freeze_trainable_layers, n / 1e6)

    push, hub_id = args.push_to_hub, args.hub_model_id
    args.push_to_hub = False  # rewardkit pushes a verified export at the end, not raw checkpoints
    # The Trainer pickles its arguments into every save (training_args.bin): a token must not ride along.
    # It stays in memory for the push only.
    hub_token, args.hub_token = args.hub_token, None
    if args.eval_strategy != "no" and data.eval is None:
        logger.warning("eval_strategy %s but no eval pairs: evaluation during training is off", args.eval_strategy)
        args.eval_strategy = "no"
    resume = _resume_target(args.resume_from_checkpoint, args.output_dir)

    if state.is_main_process:
        (run_dir / "recipe.resolved.yaml").write_text(yaml.safe_dump(_plain(recipe.resolved()), sort_keys=False))
        write_json(run_dir / "environment.json", environment())
        write_json(run_dir / RUN_INFO, {
            "model_name_or_path": margs.model_name_or_path, "gguf_file": dargs.gguf_file,
            "model_revision": margs.model_revision, "use_peft": bool(margs.use_peft),
            "trust_remote_code": bool(args.trust_remote_code), "max_length": args.max_length,
            "truncation": dargs.truncation, "recipe": recipe.path,
            "datasets": [s.path for s in recipe.sources],
        })
        (run_dir / RUN_COMPLETE).unlink(missing_ok=True)

    trainer = RewardkitTrainer(
        model=model, args=args, train_dataset=data.train, eval_dataset=data.eval,
        processing_class=tokenizer, peft_config=peft_config, packing=dargs.packing,
        max_tokens_per_batch=dargs.max_tokens_per_batch,
        callbacks=[_JsonlLogCallback(run_dir / "logs" / "train_log.jsonl")]
        + ([_StepDelayCallback(float(os.environ["REWARDKIT_STEP_DELAY"]))]
           if os.environ.get("REWARDKIT_STEP_DELAY") else []),
    )
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(str(run_dir))
    if state.is_main_process:
        set_default_modes(run_dir)  # safetensors writes 0600 whatever the umask

    report = data.report.to_dict()
    metrics: dict[str, Any] = {"train": result.metrics,
                               "data": {k: report[k] for k in ("total", "kept", "dropped", "truncated")}}
    if data.eval is not None:
        n = min(len(data.eval), dargs.eval_max_pairs) if dargs.eval_max_pairs else len(data.eval)
        subset = data.eval.select(range(n))
        rewards = trainer.predict(subset).predictions
        if state.is_main_process:
            chosen, rejected = rewards[:, 0].tolist(), rewards[:, 1].tolist()
            clen = [len(c) - p for c, p in zip(subset["chosen_ids"], subset["prompt_len"])]
            rlen = [len(r) - p for r, p in zip(subset["rejected_ids"], subset["prompt_len"])]
            evaluation = compute_metrics(chosen, rejected, clen, rlen)
            metrics["eval"] = evaluation
            write_report(run_dir / "eval_report", evaluation, chosen, rejected, clen, rlen,
                         title=f"Held-out evaluation of {run_dir.name}", max_length=args.max_length)
            # The trained model's own rewards: a reloaded or exported model is checked against these.
            write_json(run_dir / "eval_report" / "rewards.json",
                       {"chosen_ids": [list(x) for x in subset["chosen_ids"][:64]],
                        "rejected_ids": [list(x) for x in subset["rejected_ids"][:64]],
                        "chosen": chosen[:64], "rejected": rejected[:64]})
    metrics["train_seconds"] = time.time() - started
    if torch.cuda.is_available():
        metrics["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    if state.is_main_process:
        write_json(run_dir / "metrics.json", metrics)
        if "eval" in metrics:
            for line in summary_lines(metrics["eval"]):
                logger.info("eval: %s", line)
            print(f"held-out accuracy: {metrics['eval']['accuracy']:.4f} on {metrics['eval']['n_pairs']} pairs "
                  f"(report: {run_dir / 'eval_report'})", flush=True)
        write_json(run_dir / RUN_COMPLETE, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                            "global_step": trainer.state.global_step})
    state.wait_for_everyone()
    if push and state.is_main_process:
        from .export import export_run

        export_run(run_dir, run_dir / "export", push_to_hub=hub_id, private=args.hub_private_repo, token=hub_token)
    del trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return run_dir


def _plain(value: Any) -> Any:
    """Enums and other objects → YAML-safe values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return getattr(value, "value", str(value))
