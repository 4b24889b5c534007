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
import difflib
import hashlib
import json
import logging
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .data.adapters import DATA_FORMATS
from .data.sources import DataSource
from .errors import RecipeError
from .seams import checkpointing_key, cpu_has_native_bf16

logger = logging.getLogger(__name__)

TRUNCATION_POLICIES = ("left", "drop")
PACKED_ATTENTION = ("auto", "varlen", "flex", "dense")
LENGTH_DEBIAS = ("none", "odin", "corr_penalty")


@dataclass
class DataArguments:
    """rewardkit's own data keys; the length limit is TRL's ``max_length``."""

    datasets: list[dict[str, Any]] = field(default_factory=list)
    """Sources, each a :class:`DataSource` mapping."""
    eval_split_size: float = 0.2
    """Held-out fraction when no source names an ``eval_split``; grouped by prompt, seeded by ``seed``."""
    truncation: str = "left"
    """``left``: cut the prompt from the left so both responses fit; ``drop``: drop pairs that do not fit."""
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    packing: bool = True
    """Padding-free, prompt-sharing forward (exactly the padded model's rewards; see reward.packing)."""
    packed_attention: str = "auto"
    """How the packed forward attends: ``varlen`` (FlashAttention varlen on CUDA, per-segment SDPA on
    CPU), ``flex`` (FlexAttention block mask), ``dense`` (SDPA with a T×T mask); ``auto``: varlen on
    CPU and on CUDA in fp16/bf16, dense on CUDA in fp32."""
    max_tokens_per_batch: int | None = None
    """Token budget of a packed micro-batch (prompt once + both responses), filled with pairs of
    similar length; replaces ``per_device_train_batch_size`` for training. None: a fixed pair count."""
    freeze_trainable_layers: int | None = None
    """Full fine-tuning of only the top N decoder layers (+ final norm and head), as LLaMA-Factory's
    ``freeze`` mode; the rest is frozen, so backward stops early. None: train everything."""
    gguf_file: str | None = None
    """GGUF file name inside ``model_name_or_path`` (dequantized to a plain trainable model)."""
    length_debias: str = "none"
    """``odin``: a second head carries the length signal (ODIN, Chen et al. 2024) and only the quality head
    is scored, exported and served; ``corr_penalty``: the Bradley-Terry loss plus a penalty on the
    batch correlation between reward and response length; ``none``: plain Bradley-Terry."""
    length_debias_coef: float = 0.2
    """Weight of the length terms (``odin``: correlation terms; ``corr_penalty``: |corr(reward, length)|).
    0.2: on the quickstart, 1.0 over-corrected (the correlation changed sign, accuracy fell to chance)."""
    eval_max_pairs: int = 512
    """Pairs the final evaluation report (and export verification) uses."""
    cache_dir: str | None = None
    """Tokenized-dataset cache (default ~/.cache/rewardkit)."""


@dataclass
class Recipe:
    """A validated recipe: TRL's three argument groups, plus where it came from."""

    model: Any  # trl.ModelConfig
    data: DataArguments
    training: Any  # trl.RewardConfig
    sources: list[DataSource]
    raw: dict[str, Any]
    path: str | None = None

    def resolved(self) -> dict[str, Any]:
        """The effective recipe (every key, after overrides and fallbacks), for the run directory."""
        out: dict[str, Any] = {}
        for obj in (self.model, self.data):
            out.update(dataclasses.asdict(obj))
        training = self.training.to_dict()
        for key in ("hub_token", "push_to_hub_token"):  # never write secrets next to a model
            training.pop(key, None)
        out.update(training)
        return out


def _groups() -> tuple[type, type, type]:
    from trl import ModelConfig, RewardConfig

    return ModelConfig, DataArguments, RewardConfig


class _EnumText(str):
    """Stands for a ``str`` enum (e.g. ``IntervalStrategy``) in a cached key table."""


class _OtherType:
    """Stands for any other annotated type in a cached key table."""


_KINDS: dict[str, Any] = {"none": type(None), "bool": bool, "int": int, "float": float, "str": str,
                          "list": list, "dict": dict, "any": Any, "enum": _EnumText, "other": _OtherType}


def _describe_type(tp: Any) -> list[list[str]]:
    """An annotation → JSON-able ``[[kind, name], ...]`` that ``_coerce`` reads like the annotation."""
    out = []
    for arg in _type_args(tp):
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
    # rewardkit's data keys are part of the table, so their names and types are part of the key
    stamp = hashlib.sha256(json.dumps([versions, _data_fields()]).encode())
    root = Path(os.environ.get("REWARDKIT_CACHE", Path.home() / ".cache" / "rewardkit"))
    return root / "recipe_keys" / f"{stamp.hexdigest()[:16]}.json"


def _data_fields() -> list[list[Any]]:
    return [[f.name, str(f.type)] for f in dataclasses.fields(DataArguments)]


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
            from .rundir import atomic_write_text  # torch-free, like this module

            atomic_write_text(path, json.dumps(table))
        except OSError:  # a read-only home only costs speed
            pass
    return table


def _table_type(entry: dict[str, Any]) -> tuple[Any, str]:
    """A cached ``[[kind, name], ...]`` → (a Union ``_coerce`` understands, its name for messages)."""
    args = tuple(_KINDS[kind] for kind, _ in entry["type"])
    tp = args[0] if len(args) == 1 else typing.Union[args]  # noqa: UP007 (built at run time)
    return tp, " or ".join(name for kind, name in entry["type"] if kind != "none")


def _suggest(key: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def _type_args(tp: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return (tp,)


def _accepts(tp: Any, kind: type) -> bool:
    for arg in _type_args(tp):
        if arg is kind or typing.get_origin(arg) is kind:
            return True
    return False


def _coerce(key: str, value: Any, tp: Any, label: str | None = None) -> Any:
    """Convert ``value`` to the annotated type where the intent is unambiguous, else raise.
    ``label`` names the type in messages (default: from ``tp``)."""
    label = label or _describe(tp)
    if value is None:
        return None
    allowed = _type_args(tp)
    if any(a is Any for a in allowed):
        return value
    enum_like = any(isinstance(a, type) and issubclass(a, str) and a is not str for a in allowed)
    if isinstance(value, bool):
        if _accepts(tp, bool) or enum_like:
            return value
        raise RecipeError(f"recipe key '{key}': expected {label}, got a boolean ({value}).")
    if isinstance(value, str):
        if _accepts(tp, str) or enum_like:
            return value
        text = value.strip()
        if _accepts(tp, bool) and text.lower() in ("true", "false", "yes", "no", "1", "0"):
            return text.lower() in ("true", "yes", "1")
        if _accepts(tp, int) and not _accepts(tp, float):
            try:
                return int(text)
            except ValueError:
                pass
        if _accepts(tp, float):
            try:
                number = float(text)
            except ValueError:
                pass
            else:
                integral = _accepts(tp, int) and number.is_integer() and "." not in text and "e" not in text.lower()
                return int(number) if integral else number
        if _accepts(tp, list):
            return [part.strip() for part in text.split(",") if part.strip()]
        if _accepts(tp, dict):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                pass
        raise RecipeError(f"recipe key '{key}': expected {label}, got the string {value!r}.")
    if isinstance(value, (int, float)):
        if isinstance(value, int) and (_accepts(tp, int) or _accepts(tp, float)):
            return value
        if isinstance(value, float) and _accepts(tp, float):
            return value
        if isinstance(value, float) and _accepts(tp, int) and value.is_integer():
            return int(value)
        if _accepts(tp, str) or enum_like:
            return value
        raise RecipeError(f"recipe key '{key}': expected {label}, got the number {value}.")
    if isinstance(value, list):
        if _accepts(tp, list):
            return value
        # never joined into one string: `output_dir: [a, b]` must not train into "a,b"
        raise RecipeError(f"recipe key '{key}': expected {label}, got a list ({value!r}); give one value.")
    if isinstance(value, dict):
        if _accepts(tp, dict) or _accepts(tp, str):
            return value
        raise RecipeError(f"recipe key '{key}': expected {label}, got a mapping.")
    return value


def _describe(tp: Any) -> str:
    names = [getattr(arg, "__name__", str(arg)) for arg in _type_args(tp) if arg is not type(None)]
    return " or ".join(names) or str(tp)


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


def parse_source(index: int, spec: Any) -> DataSource:
    """Validate one ``datasets`` entry (a mapping, or a bare path string)."""
    where = f"datasets[{index}]"
    if isinstance(spec, str):
        spec = {"path": spec}
    if not isinstance(spec, dict):
        raise RecipeError(f"{where}: expected a mapping with at least 'path', got {type(spec).__name__}.")
    names = {f.name: f for f in dataclasses.fields(DataSource)}
    hints = typing.get_type_hints(DataSource)
    kwargs = {}
    for key, value in spec.items():
        if key not in names:
            raise RecipeError(f"{where}: unknown key '{key}'.{_suggest(key, names)} Valid keys: {', '.join(names)}.")
        kwargs[key] = _coerce(f"{where}.{key}", value, hints[key])
    if "path" not in kwargs or not kwargs["path"]:
        raise RecipeError(f"{where}: 'path' is required (a Hub dataset id or a local file).")
    source = DataSource(**kwargs)
    if source.format not in DATA_FORMATS:
        raise RecipeError(
            f"{where}.format: unknown format '{source.format}'.{_suggest(source.format, DATA_FORMATS)} "
            f"Choose one of: {', '.join(DATA_FORMATS)}."
        )
    if source.pairing not in ("all", "adjacent"):
        raise RecipeError(f"{where}.pairing: '{source.pairing}' is not 'all' or 'adjacent'.")
    if source.weight <= 0:
        raise RecipeError(f"{where}.weight: must be > 0 (got {source.weight}); remove the source to leave it out.")
    return source


def _check_training_values(train_kw: dict[str, Any], model_kw: dict[str, Any]) -> None:
    """Values that would fail inside torch after the model loaded, or silently train nothing."""
    import math

    lr = train_kw.get("learning_rate")
    if lr is not None and not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise RecipeError(f"recipe key 'learning_rate': {lr} would train nothing or diverge; give a positive number "
                          "such as 1e-5.")
    for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        value = train_kw.get(key)
        if value is not None and value < 1:
            raise RecipeError(f"recipe key '{key}': {value} must be at least 1.")
    epochs, steps = train_kw.get("num_train_epochs"), train_kw.get("max_steps")
    if epochs is not None and not math.isfinite(epochs):
        raise RecipeError(f"recipe key 'num_train_epochs': {epochs} is not a number of epochs.")
    if (steps is None or steps <= 0) and epochs is not None and epochs <= 0:
        raise RecipeError(f"recipe keys 'max_steps' ({steps}) and 'num_train_epochs' ({epochs}) leave nothing to train; "
                          "set max_steps > 0 or num_train_epochs > 0.")
    out = train_kw.get("output_dir")
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise RecipeError(f"recipe key 'output_dir': {out} is an existing file; give a directory.")
    task = model_kw.get("lora_task_type")
    if task not in (None, "SEQ_CLS"):
        raise RecipeError(f"recipe key 'lora_task_type': '{task}' would leave the reward head untrained; use SEQ_CLS "
                          "or remove the key.")


def load_recipe(path: str | Path | None, overrides: list[str] | dict[str, Any] | None = None) -> Recipe:
    """Read, merge and validate a recipe. Raises :class:`RecipeError` before any heavy work."""
    raw = _read_yaml(path) if path is not None else {}
    extra = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides or {})
    raw = {**raw, **extra}

    table = key_table()
    unknown = [k for k in raw if k not in table]
    if unknown:
        key = unknown[0]
        raise RecipeError(
            f"unknown recipe key '{key}'.{_suggest(key, table)} "
            "Keys are TRL's ModelConfig and RewardConfig names plus rewardkit's data keys (README: recipe keys)."
        )

    values: dict[str, dict[str, Any]] = {"model": {}, "data": {}, "training": {}}
    if isinstance(raw.get("resume_from_checkpoint"), bool):  # `true` means the newest complete checkpoint
        raw["resume_from_checkpoint"] = "latest" if raw["resume_from_checkpoint"] else None
    for key, value in raw.items():
        entry = table[key]
        values[entry["group"]][key] = _coerce(key, value, *_table_type(entry))
    model_kw, data_kw, train_kw = values["model"], values["data"], values["training"]

    if not model_kw.get("model_name_or_path"):
        raise RecipeError("recipe key 'model_name_or_path' is required (a Hub id, a local directory or a .gguf file).")
    data_kw.setdefault("datasets", [])
    if not data_kw["datasets"]:
        raise RecipeError("recipe key 'datasets' needs at least one source, e.g. datasets: [{path: pairs.jsonl}].")
    sources = [parse_source(i, s) for i, s in enumerate(data_kw["datasets"])]
    if data_kw.get("truncation", "left") not in TRUNCATION_POLICIES:
        raise RecipeError(f"recipe key 'truncation': '{data_kw['truncation']}' is not one of {TRUNCATION_POLICIES}.")
    if data_kw.get("packed_attention", "auto") not in PACKED_ATTENTION:
        raise RecipeError(f"recipe key 'packed_attention': '{data_kw['packed_attention']}' is not one of "
                          f"{', '.join(PACKED_ATTENTION)}.{_suggest(str(data_kw['packed_attention']), PACKED_ATTENTION)}")
    debias = data_kw.get("length_debias", "none")
    if debias not in LENGTH_DEBIAS:
        raise RecipeError(f"recipe key 'length_debias': '{debias}' is not one of {', '.join(LENGTH_DEBIAS)}."
                          f"{_suggest(str(debias), LENGTH_DEBIAS)}")
    if debias != "none" and not data_kw.get("packing", True):
        raise RecipeError("recipe key 'length_debias' needs 'packing: true' (the packed batch carries response lengths).")
    coef = data_kw.get("length_debias_coef", 0.2)
    if not (isinstance(coef, (int, float)) and coef >= 0 and coef == coef):
        raise RecipeError(f"recipe key 'length_debias_coef': {coef} must be a number ≥ 0.")
    budget = data_kw.get("max_tokens_per_batch")
    if budget is not None:
        if budget <= 0:
            raise RecipeError(f"recipe key 'max_tokens_per_batch': {budget} must be a positive token count "
                              "(or remove the key for a fixed pair count).")
        if not data_kw.get("packing", True):
            raise RecipeError("recipe key 'max_tokens_per_batch' needs 'packing: true' (it budgets packed rows).")
    split = data_kw.get("eval_split_size", 0.2)
    if not 0 <= split < 1:
        raise RecipeError(f"recipe key 'eval_split_size': {split} must be in [0, 1).")

    _check_training_values(train_kw, model_kw)

    # Impossible combinations fail here, before torch is imported or a model loads.
    if train_kw.get("fp16") and train_kw.get("bf16"):
        raise RecipeError("recipe keys 'fp16' and 'bf16' are both true: pick one (bf16 on Ampere or newer GPUs).")
    if model_kw.get("load_in_4bit") and model_kw.get("load_in_8bit"):
        raise RecipeError("recipe keys 'load_in_4bit' and 'load_in_8bit' are both true: pick one.")
    for qkey in ("load_in_4bit", "load_in_8bit"):
        if model_kw.get(qkey) and not model_kw.get("use_peft"):
            raise RecipeError(f"recipe key '{qkey}' needs 'use_peft: true': a quantized base cannot be trained in full.")
    if data_kw.get("gguf_file") and (model_kw.get("load_in_4bit") or model_kw.get("load_in_8bit")):
        raise RecipeError("recipe key 'gguf_file' is dequantized to a plain model; combine it with LoRA, not load_in_4bit.")
    if data_kw.get("freeze_trainable_layers") is not None and model_kw.get("use_peft"):
        raise RecipeError("recipe keys 'freeze_trainable_layers' and 'use_peft' exclude each other: pick one.")

    # What the machine can do (imports torch).
    cuda = _cuda_available()
    for qkey in ("load_in_4bit", "load_in_8bit"):
        if model_kw.get(qkey) and not cuda:
            raise RecipeError(
                f"recipe key '{qkey}': bitsandbytes quantization needs a CUDA GPU and none is visible. "
                "Run on a GPU, or remove the key (plain LoRA runs on CPU)."
            )
    if train_kw.get("fp16") and not cuda:
        logger.warning("fp16 was asked for but no CUDA device is present: training in fp32 instead.")
        train_kw["fp16"] = False
    if train_kw.get("bf16") and not cuda:
        if cpu_has_native_bf16():
            # AMX / AVX512-BF16: bf16 autocast on the CPU (fp32 master weights); transformers asks use_cpu for
            # it, and without CUDA the run is on the CPU whatever the recipe says.
            train_kw["use_cpu"] = True
        else:
            logger.warning("bf16 was asked for but neither a CUDA device nor a CPU with native bf16 is present: "
                           "training in fp32 instead.")
            train_kw["bf16"] = False
    # TRL 1.x turns bf16 on whenever fp16 is off; that is only right where a GPU can run it.
    train_kw.setdefault("bf16", bool(cuda and not train_kw.get("fp16")))
    train_kw.setdefault("dataloader_pin_memory", cuda)  # pinning without CUDA only warns
    # Several processes and no CUDA (torchrun / accelerate launch on CPU): accelerate forms a gloo
    # process group only when told it runs on CPU; otherwise every process trains alone as "rank 0".
    if not cuda and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        train_kw.setdefault("use_cpu", True)
    # TRL defaults gradient checkpointing on; rewardkit turns it on when the recipe (or `plan`) needs it.
    # transformers 5 renamed it `activation_checkpointing` (the old name warns): take either, pass the new one.
    key = checkpointing_key(table)
    if key == "activation_checkpointing":
        for old, new in (("gradient_checkpointing", "activation_checkpointing"),
                         ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs")):
            if old in train_kw and new not in train_kw:
                train_kw[new] = train_kw.pop(old)
            elif old in train_kw:
                raise RecipeError(f"recipe keys '{old}' and '{new}' are the same setting: keep '{new}'.")
    train_kw.setdefault(key, False)
    # transformers checks every step's loss for NaN/inf on the host (a device sync per step) only to
    # hide it from the log; rewardkit logs the loss as it is.
    train_kw.setdefault("logging_nan_inf_filter", False)
    train_kw.setdefault("output_dir", "runs/" + (Path(path).stem if path else "rewardkit"))
    train_kw.setdefault("report_to", "none")
    ModelConfig, _, RewardConfig = _groups()
    try:
        model_args = ModelConfig(**model_kw)
        data_args = DataArguments(**data_kw)
        training_args = RewardConfig(**train_kw)
    except (ValueError, TypeError) as exc:  # TrainingArguments' own __post_init__ checks
        raise RecipeError(f"invalid training arguments: {exc}") from exc
    return Recipe(model=model_args, data=data_args, training=training_args, sources=sources, raw=raw,
                  path=str(path) if path else None)
