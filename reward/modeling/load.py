"""The reward model a run trains: loaded, head drawn, embeddings fitted to the tokenizer.
"""

from __future__ import annotations

from typing import Any

from ..errors import RecipeError
from .heads import fit_embeddings
from .lora import check_lora_targets
from .source import ModelSource, load_pretrained, parse_dtype


def load_reward_model(model_args: Any, source: ModelSource, tokenizer: Any, num_labels: int,
                      device_map: Any = None) -> Any:
    """Base model as ``AutoModelForSequenceClassification`` with one label (two for ODIN: quality,
    length; one a member for an ensemble), pad id set, weights in fp32 unless ``dtype`` says otherwise
    (AMP needs fp32 master weights); 4/8-bit via bitsandbytes."""
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
            raise RecipeError(f"a {num_labels}-output head (length_debias: odin, or ensemble_heads) is asked for, and "
                              f"{model_args.model_name_or_path} is already a one-output reward model, whose head this "
                              "load (ZeRO-3) cannot replace; start from the language model (or use ZeRO-2).") from None
        raise
    fit_embeddings(model, tokenizer)
    if model_args.use_peft:
        check_lora_targets(model, model_args.lora_target_modules)
    return model
