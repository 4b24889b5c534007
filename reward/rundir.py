"""The run directory: what a finished run leaves behind, written so a partial file never looks complete."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any

from .errors import SaveError

# Every file name of a run directory (and of an export), defined once.
RUN_COMPLETE = "run_complete.json"
"""Written last, by the main process: the run finished (finish time and global step)."""
TRAIN_PROMPTS = "train_prompt_hashes.json"
"""Hashes of the prompts a run trained on: `rewardkit eval` leaves pairs with these prompts out."""
RUN_INFO = "rewardkit_run.json"
"""How to reload the run: base model (Hub id, folder or GGUF), LoRA or not, length policy."""
EXPORT_INFO = "rewardkit.json"
"""An export's completeness and ownership mark (written last into an export folder)."""
ENSEMBLE_HEADS = "ensemble_heads.safetensors"
"""An ensemble export's members: each member's head row (``weight`` [members, hidden], ``bias``); the model's
own head is their mean. ``rewardkit serve`` and ``RewardModel`` restore the members from it."""
METRICS = "metrics.json"
DATA_REPORT = "data_report.json"
ENVIRONMENT = "environment.json"
RESOLVED_RECIPE = "recipe.resolved.yaml"
EVAL_REPORT = "eval_report"
EVAL_REWARDS = "eval_report/rewards.json"
"""The trained model's own rewards on held-out pairs: reloads and exports are checked against them."""
LOG_DIR = "logs"
TRAIN_LOG = "logs/train.log"
TRAIN_LOG_JSONL = "logs/train_log.jsonl"
TRAINING_CURVES = "logs/training_curves.png"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def _umask() -> int:
    """This process's umask: from /proc on Linux, else by setting and restoring it (for a moment
    another thread's new file would get 0o077, too strict but never too open)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def set_default_mode(path: str | Path) -> None:
    """Give a ``tempfile.mkstemp``/``mkdtemp`` result the mode a plain ``open``/``mkdir`` would have.

    Those create 0600 files and 0700 folders; renamed into place, a model, report or scored file
    would be unreadable to the rest of a team on a shared cluster."""
    path = Path(path)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_umask())


def set_default_modes(folder: str | Path) -> None:
    """:func:`set_default_mode` for a folder and everything in it. safetensors writes its files 0600
    whatever the umask; a run or export is meant to be read by the team that shares the disk."""
    folder = Path(folder)
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            set_default_mode(path)


def held_out_reward_stats(run_dir: str | Path) -> tuple[float | None, float | None, dict[str, Any]]:
    """(reward mean, reward std, all metrics) of a run's held-out evaluation (:data:`METRICS`)."""
    path = Path(run_dir) / METRICS
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    ev = metrics.get("eval") or {}
    return ev.get("reward_mean"), ev.get("reward_std"), metrics


@contextmanager
def atomic_file(path: str | Path, newline: str | None = None) -> Iterator[IO[str]]:
    """A text file written under a hidden temporary name beside ``path`` and renamed onto it only when
    the block ends normally: readers see the old file or the whole new one, never half; on an error,
    Ctrl-C or SIGTERM the temporary file is removed. Published with the umask's mode (not mkstemp's 0600).
    The one write-then-rename helper of the package."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.partial-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as fh:
            yield fh
        set_default_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_file`."""
    with atomic_file(path) as fh:
        fh.write(text)
    return Path(path)


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def metrics_json(metrics: dict[str, Any]) -> str:
    """JSON with NaN written as null (strict JSON readers reject NaN)."""
    return json.dumps(_finite(metrics), indent=2)


def write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, metrics_json(data) if isinstance(data, dict) else json.dumps(data, indent=2))


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries that decide what a run computes."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in ("rewardkit", "torch", "transformers", "trl", "accelerate", "peft", "datasets", "deepspeed",
                 "bitsandbytes", "huggingface_hub"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def environment() -> dict[str, Any]:
    import platform

    import torch

    env: dict[str, Any] = {"versions": library_versions(), "python": platform.python_version(),
                           "platform": platform.platform(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["gpu_count"] = torch.cuda.device_count()
    env["world_size"] = int(os.environ.get("WORLD_SIZE", "1"))
    return env


def _checkpoints(output_dir: str | Path) -> list[tuple[bool, Path]]:
    """(complete, path) of every ``checkpoint-N``, oldest first. Complete: Trainer writes
    ``trainer_state.json`` last, and it must read back whole (a disk that fills during that write leaves
    a truncated file)."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = _CHECKPOINT.match(child.name)
        if m and child.is_dir():
            try:
                complete = "global_step" in json.loads((child / "trainer_state.json").read_text())
            except (OSError, ValueError):
                complete = False
            found.append((int(m.group(1)), complete, child))
    return [(complete, p) for _, complete, p in sorted(found)]


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """Checkpoints whose save finished, oldest first."""
    return [p for complete, p in _checkpoints(output_dir) if complete]


def incomplete_checkpoints(output_dir: str | Path) -> list[Path]:
    """Checkpoints whose save did not finish (a crash or a full disk while saving)."""
    return [p for complete, p in _checkpoints(output_dir) if not complete]


SAVE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG}
"""OS errors that mean the disk refused a write, whatever file was being written."""


@contextmanager
def save_errors(output_dir: str | Path, clean: bool = True) -> Iterator[None]:
    """Turn a failed write inside the block (an ``OSError`` of :data:`SAVE_ERRNOS`, or safetensors'
    ``SafetensorError``, which is how a full disk surfaces while weights are written) into one
    :class:`SaveError` naming the path, removing (``clean``: the main process) any checkpoint left
    half-written so that nothing can resume from it."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, SafetensorError) as exc:
        partial = incomplete_checkpoints(output_dir)
        if isinstance(exc, OSError) and exc.errno not in SAVE_ERRNOS and not partial:
            raise
        if clean:
            for path in partial:
                shutil.rmtree(path, ignore_errors=True)
        where = getattr(exc, "filename", None) or (partial[-1] if partial else output_dir)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0][:300]
        removed = f"; removed the incomplete {', '.join(p.name for p in partial)}" if clean and partial else ""
        raise SaveError(f"could not write {where}: {reason}{removed}") from None


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest *complete* checkpoint: a half-written ``checkpoint-N`` is never taken."""
    done = complete_checkpoints(output_dir)
    return done[-1] if done else None


def is_run_complete(run_dir: str | Path) -> bool:
    return (Path(run_dir) / RUN_COMPLETE).is_file()


@dataclass
class RunInfo:
    """What rewardkit knows of the model in a folder: a run directory's ``rewardkit_run.json`` (written
    when training starts) or an export's ``rewardkit.json`` (written last by ``rewardkit export``). The
    one reader and writer of both files; their keys stay what they were (an export names the base
    ``base_model``), so older runs and exports still read."""

    model_name_or_path: str | None = None
    gguf_file: str | None = None
    model_revision: str | None = None
    use_peft: bool = False
    quantized_base: bool = False
    trust_remote_code: bool = False
    max_length: int | None = None
    truncation: str = "left"
    recipe: str | None = None
    datasets: list[str] = field(default_factory=list)
    length_debias: str | None = None
    ensemble_heads: int = 1
    """Members of a reward ensemble (one head output each); 1: a plain reward model."""
    reward_read_at: str | None = None
    """Where the reward is read (the template's end-of-turn token); None: a run from before it was recorded."""
    reward_mean: float | None = None
    """An export's: held-out reward mean and standard deviation (``normalize``)."""
    reward_std: float | None = None
    source_run: str | None = None
    source: dict[str, Any] | None = None
    """An export's: its run, the run's completion stamp and the export options (what "already complete" compares)."""
    verification: dict[str, Any] | None = None
    exported: bool = False
    """Read from an export's ``rewardkit.json`` (not a run directory's)."""

    _RUN_KEYS = ("model_name_or_path", "gguf_file", "model_revision", "use_peft", "quantized_base", "trust_remote_code",
                 "max_length", "truncation", "recipe", "datasets", "length_debias", "ensemble_heads", "reward_read_at")
    _EXPORT_KEYS = ("source_run", "source", "model_name_or_path", "gguf_file", "max_length", "truncation", "reward_mean",
                    "reward_std", "reward_read_at", "ensemble_heads", "verification")

    @classmethod
    def read(cls, folder: str | Path) -> RunInfo | None:
        """The info of a run directory or an export; None for a folder rewardkit did not write (a Hub model)."""
        folder = Path(folder)
        for name, exported in ((RUN_INFO, False), (EXPORT_INFO, True)):
            if (folder / name).is_file():
                raw = json.loads((folder / name).read_text())
                if exported:
                    raw["model_name_or_path"] = raw.pop("base_model", None)
                known = {f.name for f in fields(cls)}
                return cls(**{k: v for k, v in raw.items() if k in known}, exported=exported)
        return None

    def write(self, folder: str | Path) -> Path:
        """This info as the folder's file: an export's ``rewardkit.json`` or a run's ``rewardkit_run.json``."""
        values = asdict(self)
        if self.exported:
            out = {k: values[k] for k in self._EXPORT_KEYS}
            out["base_model"] = out.pop("model_name_or_path")
            return Path(atomic_write_text(Path(folder) / EXPORT_INFO, json.dumps(out, indent=2)))
        return write_json(Path(folder) / RUN_INFO, {k: values[k] for k in self._RUN_KEYS})
