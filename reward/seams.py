"""Every reliance on a private or version-dependent detail of TRL, transformers or peft, in one place.

Each function here names the detail it leans on; ``tests/test_seams.py`` pins each assumption
against the installed libraries, so an upgrade that moves one fails in CI, not in a user's run.
Public APIs are used directly elsewhere; only what is private, undocumented or renamed across
versions lives here. Two assumptions have no code of their own and are pinned by tests only: TRL's
``DataCollatorForPreference`` stacks all chosen sequences before all rejected ones (the padded path
splits with ``torch.chunk(…, 2)``), and a ``*ForSequenceClassification`` decoder applies its score
head to every token before pooling (the packed forward reads rewards from that per-token output).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

TRAINER_SIGNATURE_HOOK = "_set_signature_columns_if_needed"
"""``transformers.Trainer`` calls this private method to decide which dataset columns reach the
collator (``_remove_unused_columns``); ``RewardkitTrainer`` overrides it to keep its packed columns."""

TRAINER_DATASET_HOOK = "_prepare_dataset"
"""TRL's ``RewardTrainer`` passes each dataset through this private method (tokenize, then a per-row
``max_length`` filter); ``RewardkitTrainer`` overrides it so prepared sets pass as they are."""

PACKED_COLUMNS = ["chosen_ids", "rejected_ids", "margin", "prompt_len"]
"""The columns rewardkit's prepared datasets carry and its collator reads."""


def suppress_seqcls_warning() -> AbstractContextManager[Any]:
    """TRL's context manager that silences "some weights of ...ForSequenceClassification were not
    initialized" for the fresh score head (``trl.trainer.reward_trainer``, not exported by ``trl``)."""
    from trl.trainer.reward_trainer import suppress_seqcls_warning as trl_suppress

    return trl_suppress()


def attn_implementation(model: Any) -> str:
    """The attention implementation a model runs (``config._attn_implementation``; transformers has no
    public getter). The config may sit on a wrapped module (DDP, DeepSpeed): unwrapped first."""
    return getattr(config_holder(model).config, "_attn_implementation", None) or "sdpa"


def model_eager_attention(module: Any) -> Any:
    """The eager attention function of an attention module's own modeling file, or None: by transformers'
    convention each ``modeling_*.py`` defines ``eager_attention_forward`` (a module-level name, not an API),
    and it is the one function that computes a family's softcap or sinks as the model does padded."""
    import importlib

    return getattr(importlib.import_module(type(module).__module__), "eager_attention_forward", None)


def router_logits_source(model: Any) -> tuple[type, int] | None:
    """(router module class, index of its logits in the router's output) of a mixture-of-experts model,
    or None: transformers records ``router_logits`` with hooks declared in the model class's private
    ``_can_record_outputs`` table (``OutputRecorder(target_class, index)``), the table its MoE causal LMs
    read their load-balancing loss from."""
    owner = model if isinstance(model, type) else type(model)
    recorder = (getattr(owner, "_can_record_outputs", None) or {}).get("router_logits")
    cls = getattr(recorder, "target_class", None)
    return (cls, int(getattr(recorder, "index", 0) or 0)) if isinstance(cls, type) else None


def family_load_balancing_loss(router_class: type) -> Any:
    """The family's own ``load_balancing_loss_func`` (a module-level name of its ``modeling_*.py``, the
    function its causal LM adds to the loss), or None."""
    import importlib

    return getattr(importlib.import_module(router_class.__module__), "load_balancing_loss_func", None)


def config_holder(model: Any) -> Any:
    """The module that carries ``config`` inside DDP / DeepSpeed wrappers (``.module``)."""
    while not hasattr(model, "config") and hasattr(model, "module"):
        model = model.module
    return model


def drop_quantizer(model: Any) -> None:
    """Remove the ``hf_quantizer`` marker a dequantizing GGUF load leaves (``remove_quantization_config``
    of transformers' quantizer), so Trainer and ``save_pretrained`` treat the model as a float model."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)


def checkpointing_enabled(args: Any) -> bool:
    """Whether a ``TrainingArguments`` turns activation checkpointing on. transformers 5 renamed
    ``gradient_checkpointing`` to ``activation_checkpointing`` (the old name still works and warns):
    the one reader of either name, for the trainer and ``plan`` alike."""
    value = getattr(args, "activation_checkpointing", None)
    if value is None:
        value = getattr(args, "gradient_checkpointing", False)
    return bool(value)


def checkpointing_key(field_names: Any) -> str:
    """The name this transformers gives the checkpointing switch (``field_names``: TrainingArguments' fields)."""
    return "activation_checkpointing" if "activation_checkpointing" in field_names else "gradient_checkpointing"


@contextmanager
def reward_trainer_accepts_outputs(model: Any) -> Iterator[None]:
    """TRL's ``RewardTrainer.__init__`` refuses a model whose ``config.num_labels`` is not 1. An ODIN head
    has two outputs (quality, length) and rewardkit's loss reads both: the config says 1 while TRL checks."""
    config = getattr(model, "config", None)
    n = getattr(config, "num_labels", 1)
    if n == 1:
        yield
        return
    config.num_labels = 1
    try:
        yield
    finally:
        config.num_labels = n


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matmuls natively (AMX tiles or AVX512-BF16), where bf16
    autocast is several times faster than fp32; elsewhere it is emulated and slower. torch exposes the
    check only privately (``torch.cpu._is_amx_tile_supported`` / ``_is_avx512_bf16_supported``)."""
    import torch

    cpu = torch.cpu
    return any(bool(getattr(cpu, name, lambda: False)()) for name in
               ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))


def close_progress_bars() -> None:
    """Close every open ``tqdm`` bar (``tqdm._instances``, the class's private registry of live bars), so
    that an error printed after an interrupted training or scoring loop starts on a line of its own
    instead of behind the bar's last ``\\r`` frame."""
    try:
        from tqdm import tqdm
    except ImportError:
        return
    for bar in list(getattr(tqdm, "_instances", None) or []):
        bar.close()


def run_exit_handlers() -> None:
    """Run the ``atexit`` handlers now (``atexit._run_exitfuncs``, CPython's private runner), for a process
    about to end with ``os._exit`` (``reward.training.launching.exit_rank``): temporary files and logs are
    still cleaned up."""
    import atexit

    atexit._run_exitfuncs()
