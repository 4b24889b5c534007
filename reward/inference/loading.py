"""A run directory or an export → the model that scores: merged adapters, the stored dtype, the
head checked.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError, RecipeError, RewardkitError
from ..modeling.heads import check_reward_head, fit_embeddings, head_outputs, restore_member_heads
from ..modeling.source import load_pretrained, load_tokenizer, parse_dtype
from ..rundir import ENSEMBLE_HEADS, RUN_INFO, RunInfo

logger = logging.getLogger(__name__)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def load_scoring_model(path_or_id: str, device: Any = None, dtype: Any = None,
                       trust_remote_code: bool = False) -> tuple[Any, Any, RunInfo | None, Any]:
    """(model, tokenizer, run info, autocast dtype or None) for a LoRA run directory, a full run /
    exported directory, or a Hub id.

    A LoRA run is loaded as base + adapter (unmerged), the base read the way training read it
    (``rewardkit_run.json``: Hub id, local dir or GGUF). A model's own code runs only with
    ``trust_remote_code`` or when the run's recipe allowed it.

    A 16-bit ``dtype`` computes as mixed-precision training computed: weights stored in fp32 (a run,
    an fp32 export) stay fp32 and the forward runs under autocast to ``dtype``; weights stored in 16
    bits (``rewardkit export --dtype bf16``) are used as they are.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = parse_dtype(dtype, torch.bfloat16 if device.type == "cuda" else torch.float32)
    path = Path(path_or_id)
    info = RunInfo.read(path) if path.is_dir() else None
    autocast = None
    if dtype.itemsize == 2 and stored_dtype(path) == torch.float32:
        autocast, dtype = dtype, torch.float32
    trust = bool(trust_remote_code or (info and info.trust_remote_code))
    adapter_cfg = path / "adapter_config.json"
    if path.is_dir() and adapter_cfg.is_file():
        model = load_adapter_model(path, info, dtype, trust)
    elif path.exists() and not (path / "config.json").is_file():
        raise ModelLoadError(f"{path}: no config.json or adapter_config.json: not a model or run directory "
                                "(an unfinished run? look for run_complete.json).")
    elif not path.exists() and _looks_local(str(path_or_id)):
        raise ModelLoadError(f"{path_or_id}: no such model or run directory.")
    else:
        try:
            model = load_pretrained(AutoModelForSequenceClassification, str(path_or_id), trust_remote_code=trust,
                                    dtype=dtype)
        except RewardkitError:
            raise
        except Exception as exc:  # transformers/safetensors/hub raise many types for missing or damaged weights
            raise _unloadable(str(path_or_id), path, exc) from None
    tokenizer = load_tokenizer(str(path_or_id), trust_remote_code=trust) \
        if (not path.exists() or (path / "tokenizer_config.json").is_file()) \
        else load_tokenizer(info.model_name_or_path, info.gguf_file, trust_remote_code=trust)
    restore_members(model, path)  # an export's ensemble: its one mean head → the members (side file)
    check_reward_head(model, info.length_debias if info else None, str(path_or_id), info.ensemble_heads if info else 1)
    fit_embeddings(model, tokenizer)
    if info and not info.reward_read_at:
        logger.warning("%s was trained by a rewardkit that read rewards after the chat template's trailing characters; "
                       "it is scored at the end-of-turn token now, which shifts its rewards: retrain it.", path_or_id)
    model.to(device=device, dtype=dtype).eval()
    return model, tokenizer, info, autocast


def restore_members(model: Any, folder: Path) -> int:
    """An ensemble export's members put back on its one mean head (:data:`ENSEMBLE_HEADS`); returns the
    members the model now scores with (1 when the folder has no side file)."""
    side = folder / ENSEMBLE_HEADS
    if not side.is_file():
        return 1
    from safetensors.torch import load_file

    try:
        members = load_file(str(side))
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise ModelLoadError(f"{side}: the ensemble's members could not be read ({type(exc).__name__}); the file may "
                             "be truncated: export the run again.") from None
    restore_member_heads(model, members, str(folder))
    return int(members["weight"].shape[0])


def members(model: Any, info: RunInfo | None) -> int:
    """Ensemble members a loaded reward model scores with: its head's outputs, unless they are an ODIN
    head's (quality, length: one reward); 1 for a plain reward model."""
    from ..seams import config_holder

    n = int(getattr(config_holder(model).config, "num_labels", 1) or 1)
    return 1 if info is not None and info.length_debias == "odin" else n


def stored_dtype(path: Path) -> Any:
    """The dtype of a local model's saved weights (``config.json``), fp32 for a LoRA run (training loads
    its base in fp32 unless quantized), None when unknown (a Hub id)."""
    import torch

    adapter = _read_json(path / "adapter_config.json") if path.is_dir() else {}
    if adapter:
        run = _read_json(path / RUN_INFO)
        return None if run.get("quantized_base") else torch.float32
    config = _read_json(path / "config.json") if path.is_dir() else {}
    name = config.get("dtype") or config.get("torch_dtype") or (config.get("text_config") or {}).get("dtype")
    try:
        return parse_dtype(name) if isinstance(name, str) and name != "auto" else None
    except RecipeError:
        return None


def _looks_local(name: str) -> bool:
    """A path, not a Hub id (``org/name``): absolute, relative with ./ or ../, ~, or deeper than org/name."""
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or "\\" in name


def _unloadable(name: str, path: Path, exc: Exception) -> ModelLoadError:
    """What is missing or damaged, in one line, instead of a loader traceback."""
    if path.is_dir():
        weights = sorted(p.name for p in path.glob("*.safetensors")) + sorted(p.name for p in path.glob("*.bin"))
        if not weights:
            return ModelLoadError(f"{name}: config.json but no model weights (*.safetensors): an unfinished run or a "
                                "partial copy? A finished run has run_complete.json.")
        return ModelLoadError(f"{name}: the weights ({', '.join(weights)}) could not be read ({type(exc).__name__}: "
                            f"{str(exc)[:200]}); the file may be truncated or corrupt.")
    return ModelLoadError(f"{name}: not a local folder, and not loadable as a Hub id ({type(exc).__name__}: "
                        f"{str(exc)[:200]}).")


def load_adapter_model(run: Path, info: RunInfo | None, dtype: Any, trust_remote_code: bool = False) -> Any:
    """Base in 16/32 bits (never 4-bit) as a one-label classifier + the run's adapter and head."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    adapter = _read_json(run / "adapter_config.json")
    info = info or RunInfo()
    base_id = info.model_name_or_path or adapter.get("base_model_name_or_path")
    if not base_id:
        raise ModelLoadError(f"{run}: adapter without a base model (no rewardkit_run.json, no base_model_name_or_path)")
    weights = [run / "adapter_model.safetensors", run / "adapter_model.bin"]
    if not any(w.is_file() for w in weights):
        raise ModelLoadError(f"{run}: adapter_config.json but no adapter_model.safetensors: the adapter is missing.")
    # 16/32-bit base even for a run trained in 4-bit: the adapter is applied to dequantized weights
    labels = head_outputs(info.length_debias, info.ensemble_heads)
    base = load_pretrained(AutoModelForSequenceClassification, base_id, info.gguf_file,
                           trust_remote_code=trust_remote_code, new_head=True, num_labels=labels,
                           revision=info.model_revision, dtype=dtype if dtype != torch.float16 else torch.float32,
                           **({"ignore_mismatched_sizes": True} if labels != 1 else {}))
    try:
        return PeftModel.from_pretrained(base, str(run), is_trainable=False)
    except Exception as exc:  # safetensors/peft raise many types for truncated or foreign files
        raise ModelLoadError(f"{run}: the adapter could not be loaded ({type(exc).__name__}: {exc}); "
                         "it may be corrupted or from another base model.") from exc
