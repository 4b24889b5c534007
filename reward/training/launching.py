"""accelerate configs: the ones shipped with rewardkit, their reading, and what a launch needs.

The YAML files live inside the package (``reward/accelerate_configs``, read with
``importlib.resources``), so ``rewardkit train R --accelerate_config zero3`` and ``rewardkit plan``
work from any directory after a plain ``pip install``. What rewardkit adds over ``accelerate launch``:
CPU DeepSpeed configs get ``DS_ACCELERATOR=cpu``, and a ZeRO-3 run that would save empty weights is
fixed before training, with a warning naming the key.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import RecipeError

logger = logging.getLogger(__name__)
CPU_CONFIGS = ("multi_cpu", "zero2_cpu", "zero3_cpu")
"""Configs for trying a path without a GPU (CI, a laptop): correct, not fast."""


def shipped_configs() -> dict[str, Path]:
    """Name → path of every accelerate config shipped with rewardkit."""
    folder = resources.files("reward") / "accelerate_configs"
    return {Path(str(f)).stem: Path(str(f)) for f in folder.iterdir() if str(f).endswith(".yaml")}


def resolve_accelerate_config(name: str) -> Path:
    """A path to a YAML file, or the name of a shipped config (with or without ``.yaml``)."""
    p = Path(name).expanduser()
    if p.is_file():
        return p
    known = shipped_configs()
    stem = name[:-5] if name.endswith(".yaml") else name
    if stem in known:
        return known[stem]
    raise RecipeError(f"--accelerate_config '{name}': not a file and not one of {', '.join(sorted(known))}.")


def read_accelerate_config(name: str) -> dict[str, Any]:
    """The facts about a config that ``plan`` and the launcher use."""
    path = resolve_accelerate_config(name)
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise RecipeError(f"--accelerate_config {path}: not a readable YAML file ({exc}).") from None
    if not isinstance(cfg, dict):
        raise RecipeError(f"--accelerate_config {path}: expected a mapping of accelerate keys.")
    ds = cfg.get("deepspeed_config") or {}
    deepspeed = cfg.get("distributed_type") == "DEEPSPEED"
    ds_file = _deepspeed_file(path, ds.get("deepspeed_config_file")) if deepspeed else None
    facts = _deepspeed_json_facts(ds_file) if ds_file else {
        "zero_stage": int(ds.get("zero_stage", 0)) if deepspeed else 0,
        "offload_optimizer": ds.get("offload_optimizer_device", "none") not in ("none", None),
        "offload_params": ds.get("offload_param_device", "none") not in ("none", None),
        "zero3_save_16bit_model": bool(ds.get("zero3_save_16bit_model", False)),
    }
    return {
        "path": str(path),
        "deepspeed": deepspeed,
        "deepspeed_config_file": str(ds_file) if ds_file else None,
        **facts,
        "mixed_precision": cfg.get("mixed_precision", "no"),
        "num_processes": int(cfg.get("num_processes", 1)),
        "cpu_only": Path(str(path)).stem in CPU_CONFIGS or bool(cfg.get("use_cpu")),
    }


def _deepspeed_file(config: Path, name: str | None) -> Path | None:
    """The DeepSpeed JSON a config names: as written (absolute, or from the working directory as
    ``accelerate launch`` reads it), else beside the config, so a shipped config works from anywhere."""
    if not name:
        return None
    for candidate in (Path(name).expanduser(), config.parent / Path(name).name):
        if candidate.is_file():
            return candidate.resolve()
    raise RecipeError(f"--accelerate_config {config}: its deepspeed_config_file {name} is neither a file nor beside it.")


def _deepspeed_json_facts(path: Path) -> dict[str, Any]:
    """ZeRO stage, offload and 16-bit save of a DeepSpeed JSON config."""
    import json

    try:
        zero = json.loads(path.read_text(encoding="utf-8")).get("zero_optimization") or {}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise RecipeError(f"deepspeed_config_file {path}: not a JSON mapping of DeepSpeed keys ({exc}).") from None
    return {
        "zero_stage": int(zero.get("stage", 0)),
        "offload_optimizer": (zero.get("offload_optimizer") or {}).get("device", "none") not in ("none", None),
        "offload_params": (zero.get("offload_param") or {}).get("device", "none") not in ("none", None),
        "zero3_save_16bit_model": bool(zero.get("stage3_gather_16bit_weights_on_model_save", False)),
    }


def launch_env(config: dict[str, Any], cuda: bool) -> dict[str, str]:
    """Environment for ``accelerate launch`` of this config: DeepSpeed without a GPU needs its CPU
    accelerator (which falls back to gloo when oneCCL is absent)."""
    env = dict(os.environ)
    if config["deepspeed"] and (config["cpu_only"] or not cuda):
        env.setdefault("DS_ACCELERATOR", "cpu")
        env.setdefault("OMP_NUM_THREADS", "1")  # N processes on a few cores: no oversubscription
    return env


def launch_command(config_name: str, target: list[str], num_processes: int | None = None) -> list[str]:
    """``accelerate launch`` of ``target`` (``-m module ...`` or a script and its arguments) under this config."""
    import sys

    config = read_accelerate_config(config_name)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config["path"]]
    if num_processes:
        cmd += ["--num_processes", str(num_processes)]
    if config["deepspeed_config_file"]:  # found beside the config: accelerate would look in the working directory
        cmd += ["--deepspeed_config_file", config["deepspeed_config_file"]]
    if os.environ.get("MASTER_PORT"):  # several jobs on one node: each its own rendezvous port
        cmd += ["--main_process_port", os.environ["MASTER_PORT"]]
    return cmd + target


def relaunch(config_name: str, argv: list[str], num_processes: int | None = None) -> int:
    """Run ``rewardkit ARGV`` again under ``accelerate launch`` with this config; its exit status.
    The launched processes fix a ZeRO-3 config that would save empty weights
    (:func:`ensure_zero3_saves_weights`)."""
    import subprocess

    import torch

    cmd = launch_command(config_name, ["-m", "reward.cli", *argv], num_processes)
    print("launching:", " ".join(cmd), flush=True)
    return subprocess.call(cmd, env=launch_env(read_accelerate_config(config_name), torch.cuda.is_available()))


def ensure_zero3_saves_weights() -> None:
    """Inside a launched process: a ZeRO-3 run whose config lacks ``zero3_save_16bit_model`` would save
    empty tensors (each rank holds a shard). Turn it on before TrainingArguments reads it, and say so."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() != "true":
        return
    if os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") != "3":
        return
    if os.environ.get("ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL", "false").lower() == "true":
        return
    if os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE"):
        return  # a DeepSpeed JSON of the user's own decides (stage3_gather_16bit_weights_on_model_save)
    os.environ["ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL"] = "true"
    if os.environ.get("RANK", "0") == "0":  # once per run, not once per process
        logger.warning("accelerate config: ZeRO-3 without zero3_save_16bit_model would save empty weights; "
                       "turned it on for this run (add `zero3_save_16bit_model: true` under deepspeed_config).")


def leave_process_group() -> bool:
    """Every rank leaves the process group together, before the process exits (``rewardkit train``; a
    caller of :func:`run_training` may still use the group). Returns whether there was a group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        return True
    return False


def exit_rank(code: int = 0) -> None:
    """The end of a rank of a distributed run whose work is done: it leaves the process group, runs Python's
    exit handlers, flushes, and ends the process without C++ static destructors. Outside a distributed run
    it returns (the caller exits as usual).

    Why (a core dump of a failed run, ``tests/test_distributed.py``, about 1 run in 11 on a loaded 2-core
    machine): ``destroy_process_group`` does not stop gloo's worker threads while the group is still
    referenced (by DDP, accelerate); one of them was still releasing the last collective it ran (the
    barrier, which holds the collectives before it) when Python finalized. Dropping the tensors needs the
    GIL; a thread that asks for it during finalization is exited by CPython with a forced unwind, which
    a C++ destructor cannot pass: ``terminate called without an active exception``, SIGABRT, after the
    run had completed. torchrun then reported the run failed and the other node's agent waited 300 s in
    its exit barrier. Nothing is left to do at that point but leave, so finalization is skipped.
    """
    from ..seams import run_exit_handlers

    if not leave_process_group():
        return
    run_exit_handlers()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)
