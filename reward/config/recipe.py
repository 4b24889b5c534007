"""Recipe parsing and validation: YAML + ``--key value`` overrides → typed dataclasses.

A recipe is one flat YAML mapping, as in TRL's ``trl/scripts/reward.py`` + ``TrlParser`` and the
alignment-handbook recipes: model keys under TRL's ``ModelConfig`` names, every ``RewardConfig`` /
``TrainingArguments`` key under its own name, and rewardkit's data keys (:class:`DataArguments`).

What this adds over ``TrlParser``/``HfArgumentParser``: every check runs before torch touches a
device, and each failure names the offending key and its fix (closest valid key for typos,
``1e-5`` written as a string coerced to a number, impossible precision/quantization combinations).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..coercion import coerce, suggest, type_args
from ..errors import RecipeError
from ..seams import checkpointing_key, cpu_has_native_bf16
from .sources import DataSource

logger = logging.getLogger(__name__)


@dataclass
class Recipe:
    """A validated recipe: its three argument groups (``reward.config.arguments``), and where it came from."""

    model: Any  # reward.config.ModelArguments
    data: Any  # reward.config.DataArguments
    training: Any  # reward.config.RewardkitConfig
    path: str | None = None

    @property
    def sources(self) -> list[DataSource]:
        """The checked data sources."""
        return self.data.sources

    def resolved(self) -> dict[str, Any]:
        """The effective recipe (every key, after overrides and fallbacks), for the run directory."""
        out: dict[str, Any] = {}
        for obj in (self.model, self.data):
            out.update({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init})
        training = self.training.to_dict()
        for key in ("hub_token", "push_to_hub_token"):  # never write secrets next to a model
            training.pop(key, None)
        out.update(training)
        return out


def _groups() -> tuple[type, type, type]:
    from .arguments import DataArguments, ModelArguments
    from .reward_config import RewardkitConfig

    return ModelArguments, DataArguments, RewardkitConfig


class _EnumText(str):
    """Stands for a ``str`` enum (e.g. ``IntervalStrategy``) in a cached key table."""


class _OtherType:
    """Stands for any other annotated type in a cached key table."""


_KINDS: dict[str, Any] = {"none": type(None), "bool": bool, "int": int, "float": float, "str": str,
                          "list": list, "dict": dict, "any": Any, "enum": _EnumText, "other": _OtherType}


def _describe_type(tp: Any) -> list[list[str]]:
    """An annotation → JSON-able ``[[kind, name], ...]`` that ``coerce`` reads like the annotation."""
    out = []
    for arg in type_args(tp):
        origin = typing.get_origin(arg) or arg
        name = getattr(arg, "__name__", str(arg))
        if arg is type(None):
            kind = "none"
        elif arg is Any:
            kind = "any"
        elif origin in (bool, int, float, str, list, dict):
            kind = origin.__name__
        elif isinstance(arg, type) and issubclass(arg, str):
            kind = "enum"
        else:
            kind = "other"
        out.append([kind, name])
    return out


def _table_from_classes() -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for group, cls in zip(("model", "data", "training"), _groups()):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.init and f.name not in table:
                table[f.name] = {"group": group, "type": _describe_type(hints[f.name])}
    return table


def _table_cache_path() -> Path | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        versions = [version(n) for n in ("trl", "transformers")]
    except PackageNotFoundError:
        return None
    # rewardkit's own keys are part of the table: any change to the module defining them is a new table
    stamp = hashlib.sha256(json.dumps(versions).encode())
    for module in ("arguments.py", "reward_config.py"):
        stamp.update((Path(__file__).parent / module).read_bytes())
    root = Path(os.environ.get("REWARDKIT_CACHE", Path.home() / ".cache" / "rewardkit"))
    return root / "recipe_keys" / f"{stamp.hexdigest()[:16]}.json"


def key_table() -> dict[str, dict[str, Any]]:
    """Every recipe key → its group (model / data / training) and type, without importing TRL when
    possible: reading ``RewardConfig``'s fields means importing torch, transformers and TRL (seconds),
    so the table is cached per TRL and transformers version and a bad recipe fails at once."""
    path = _table_cache_path()
    if path is not None and path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            pass
    table = _table_from_classes()
    if path is not None:
        try:
            from ..rundir import atomic_write_text

            atomic_write_text(path, json.dumps(table))
        except OSError:  # a read-only home only costs speed
            pass
    return table


def _table_type(entry: dict[str, Any]) -> tuple[Any, str]:
    """A cached ``[[kind, name], ...]`` → (a Union ``coerce`` understands, its name for messages)."""
    args = tuple(_KINDS[kind] for kind, _ in entry["type"])
    tp = args[0] if len(args) == 1 else typing.Union[args]  # noqa: UP007 (built at run time)
    return tp, " or ".join(name for kind, name in entry["type"] if kind != "none")


def parse_overrides(argv: list[str]) -> dict[str, Any]:
    """``--key value`` / ``--key=value`` / bare ``--flag`` (true) → dict; values read as YAML scalars."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or token == "--":
            raise RecipeError(f"unexpected argument {token!r}: overrides are written '--key value'.")
        key = token[2:]
        if "=" in key:
            key, text = key.split("=", 1)
            i += 1
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            text = argv[i + 1]
            i += 2
        else:
            text = "true"
            i += 1
        out[key.replace("-", "_")] = yaml.safe_load(text) if text != "" else ""
    return out


def _read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"recipe file not found: {p}" + (" (it is a directory)" if p.is_dir() else ""))
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise RecipeError(f"recipe {p} is not UTF-8 text (byte {exc.start}); save it as UTF-8.") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe {p} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {p} must be a mapping of keys to values, not {type(data).__name__}.")
    return data


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def merge(path: str | Path | None, overrides: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """The recipe file's keys, then the overrides (``--key value`` words or a mapping) over them."""
    raw = _read_yaml(path) if path is not None else {}
    extra = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides or {})
    return {**raw, **extra}


def coerce_groups(raw: dict[str, Any], table: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every key known and its value of the key's type, sorted into the model / data / training groups."""
    unknown = [k for k in raw if k not in table]
    if unknown:
        raise RecipeError(f"unknown recipe key '{unknown[0]}'.{suggest(unknown[0], table)} Keys are TRL's ModelConfig "
                          "and RewardConfig names plus rewardkit's own (README: recipe keys).")
    if isinstance(raw.get("resume_from_checkpoint"), bool):  # `true` means the newest complete checkpoint
        raw = {**raw, "resume_from_checkpoint": "latest" if raw["resume_from_checkpoint"] else None}
    groups: dict[str, dict[str, Any]] = {"model": {}, "data": {}, "training": {}}
    for key, value in raw.items():
        groups[table[key]["group"]][key] = coerce(key, value, *_table_type(table[key]))
    return groups


def adapt_to_machine(train_kw: dict[str, Any], model: Any) -> dict[str, Any]:
    """What this machine can run: 4/8-bit needs CUDA; fp16 and bf16 asked for fall back to fp32 where
    nothing runs them (bf16 autocasts on a CPU with native bf16); several CPU processes form a gloo group."""
    cuda = _cuda_available()
    if model.quantized and not cuda:
        key = "load_in_4bit" if model.load_in_4bit else "load_in_8bit"
        raise RecipeError(f"recipe key '{key}': bitsandbytes quantization needs a CUDA GPU and none is visible. "
                          "Run on a GPU, or remove the key (plain LoRA runs on CPU).")
    out = dict(train_kw)
    if out.get("fp16") and not out.get("bf16") and not cuda:
        logger.warning("fp16 was asked for but no CUDA device is present: training in fp32 instead.")
        out["fp16"] = False
    if out.get("bf16") and not out.get("fp16") and not cuda:
        if cpu_has_native_bf16():  # AMX / AVX512-BF16: bf16 autocast, fp32 master weights; transformers asks use_cpu
            out["use_cpu"] = True
        else:
            logger.warning("bf16 was asked for but neither a CUDA device nor a CPU with native bf16 is present: "
                           "training in fp32 instead.")
            out["bf16"] = False
    # torchrun / accelerate launch without CUDA: accelerate forms a gloo group only when told it runs on CPU
    if not cuda and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        out.setdefault("use_cpu", True)
    return out


def adapt_to_library(train_kw: dict[str, Any], table: dict[str, Any], path: str | Path | None) -> dict[str, Any]:
    """TRL's keys under the names this transformers uses: transformers 5 renamed ``gradient_checkpointing``
    to ``activation_checkpointing`` (the old name warns); either is taken, the new one passed. A recipe
    without ``output_dir`` writes to ``runs/<recipe name>`` (the other defaults are the fields' own,
    :class:`~reward.config.reward_config.RewardkitConfig`)."""
    out = dict(train_kw)
    key = checkpointing_key(table)
    if key == "activation_checkpointing":
        for old, new in (("gradient_checkpointing", "activation_checkpointing"),
                         ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs")):
            if old in out and new in out and out[old] != out[new]:  # equal in a resolved recipe, which writes both
                raise RecipeError(f"recipe keys '{old}' and '{new}' are the same setting: keep '{new}'.")
            if old in out:
                out[new] = out.pop(old)
    if "output_dir" not in out and path:
        out["output_dir"] = f"runs/{Path(path).stem}"
    return out


def load_recipe(path: str | Path | None, overrides: list[str] | dict[str, Any] | None = None) -> Recipe:
    """Read, merge and check a recipe: merge → coerce → check the model and data keys → adapt the
    training keys to the machine and to the library → build (which checks them). Raises
    :class:`RecipeError` before any model loads."""
    from .arguments import DataArguments, ModelArguments

    table = key_table()
    groups = coerce_groups(merge(path, overrides), table)
    model, data = ModelArguments(**groups["model"]), DataArguments(**groups["data"])  # torch-free checks first
    from .reward_config import RewardkitConfig

    training = RewardkitConfig(**adapt_to_library(adapt_to_machine(groups["training"], model), table, path))
    return Recipe(model=model, data=data, training=training, path=str(path) if path else None)
