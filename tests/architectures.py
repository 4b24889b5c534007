"""The architecture matrix: a tiny random ``*ForSequenceClassification`` of each family users scale to,
with the real SmolLM2 tokenizer, built so that each family's own attention features act at test lengths:
a sliding window of :data:`WINDOW` positions (test sequences are several times longer), Gemma 2's
logit softcap low enough that logits reach it, Gemma 3's local and global layers, gpt-oss's sinks.

Left out, and why (see also the table in docs/architectures.md):
- Falcon is in the matrix as the family that cannot pack: ``FalconForSequenceClassification.forward``
  takes no ``position_ids``, so ``auto`` trains and scores it padded and an explicit mode is refused.
- Bloom and MPT (ALiBi through the attention mask; no ``position_ids``): the same refusal, not tested.
- Encoder-only and encoder-decoder classifiers (BERT, T5): not causal, not reward-model bases here.
- Hybrid recurrent families (Jamba, Zamba, Falcon-H1, Mamba): their state layers read padded rows;
  a packed row would leak state across pairs. ``cannot_pack`` does not yet detect them: use packing: false.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WINDOW = 8
"""The sliding window of every windowed family here: test prompts and responses are longer."""

ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]


@dataclass(frozen=True)
class Family:
    """One row of the matrix."""

    name: str
    config: Callable[[dict[str, Any]], Any]
    """The family's config from the shared tiny sizes (``base``)."""
    lora_targets: list[str]
    """The family's usual LoRA target modules."""
    packs: bool = True
    """False: the packed forward refuses it (``auto`` runs it padded)."""
    in_transformers_451: bool = True
    """Whether transformers 4.51 (RewardBench's stack) has the family's classifier (Gemma 3's text classifier, OLMo 2
    and gpt-oss came later)."""
    differs_in_451: str = ""
    """Why 4.51 computes another function on this tiny model (its export loads there, with other rewards)."""
    features: tuple[str, ...] = ()
    """What acts at test lengths: ``window``, ``softcap``, ``sinks``."""
    disable: dict[str, Any] = field(default_factory=dict)
    """Config changes that turn the features off (the test checks they change the rewards)."""


def base(tok: Any) -> dict[str, Any]:
    return dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=1024, pad_token_id=tok.pad_token_id,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False, num_labels=1)


def _drop(b: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in b.items() if k not in keys}


def _families() -> list[Family]:
    import transformers as T

    return [
        Family("llama", lambda b: T.LlamaConfig(**b), ATTN),
        Family("qwen2", lambda b: T.Qwen2Config(**b, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1),
               ATTN, features=("window",), disable={"sliding_window": 10**6},
               differs_in_451="4.51 computes Qwen2's window only under flash attention (SDPA and eager ignore it)"),
        Family("qwen3", lambda b: T.Qwen3Config(**b, head_dim=8), ATTN),
        Family("qwen3_moe", lambda b: T.Qwen3MoeConfig(**b, head_dim=8, num_experts=4, num_experts_per_tok=2,
                                                       moe_intermediate_size=16), ATTN),
        Family("mixtral", lambda b: T.MixtralConfig(**b, num_local_experts=4, num_experts_per_tok=2, sliding_window=WINDOW),
               ATTN, features=("window",), disable={"sliding_window": None}),
        Family("mistral", lambda b: T.MistralConfig(**b, sliding_window=WINDOW), ATTN, features=("window",),
               disable={"sliding_window": None}),
        Family("gemma2", lambda b: T.Gemma2Config(**b, head_dim=8, sliding_window=WINDOW, attn_logit_softcapping=0.5,
                                                  query_pre_attn_scalar=8),
               ATTN, features=("window", "softcap"), disable={"sliding_window": 10**6, "attn_logit_softcapping": None},
               differs_in_451="4.51 loads Gemma 2 with SDPA, which drops the logit softcap "
                              "(with attn_implementation=eager it matches)"),
        Family("gemma3", lambda b: T.Gemma3TextConfig(**{**b, "num_hidden_layers": 3}, head_dim=8, sliding_window=WINDOW,
                                                      layer_types=["sliding_attention", "sliding_attention",
                                                                   "full_attention"]),
               ATTN, in_transformers_451=False, features=("window",), disable={"sliding_window": 10**6}),
        Family("phi3", lambda b: T.Phi3Config(**b, sliding_window=WINDOW), ["qkv_proj", "o_proj"], features=("window",),
               disable={"sliding_window": None}),
        Family("olmo2", lambda b: T.Olmo2Config(**b), ATTN, in_transformers_451=False),
        Family("starcoder2", lambda b: T.Starcoder2Config(**b, sliding_window=WINDOW), ATTN, features=("window",),
               disable={"sliding_window": None}),
        Family("gpt_oss", lambda b: T.GptOssConfig(**b, head_dim=8, num_local_experts=4, num_experts_per_tok=2,
                                                   sliding_window=WINDOW,
                                                   layer_types=["sliding_attention", "full_attention"]),
               ATTN, in_transformers_451=False, features=("window", "sinks"), disable={"sliding_window": 10**6}),
        Family("gpt_neox", lambda b: T.GPTNeoXConfig(**_drop(b, "num_key_value_heads")), ["query_key_value", "dense"]),
        Family("falcon", lambda b: T.FalconConfig(**_drop(b, "num_key_value_heads", "intermediate_size",
                                                          "max_position_embeddings"),
                                                  new_decoder_architecture=True, num_kv_heads=2),
               ["query_key_value", "dense"], packs=False),
        Family("gpt2", lambda b: T.GPT2Config(vocab_size=b["vocab_size"], n_embd=32, n_layer=2, n_head=4, n_positions=1024,
                                              pad_token_id=b["pad_token_id"], bos_token_id=b["bos_token_id"],
                                              eos_token_id=b["eos_token_id"], num_labels=1, attn_pdrop=0.0,
                                              resid_pdrop=0.0, embd_pdrop=0.0),
               ["c_attn", "c_proj"]),
    ]


FAMILIES: dict[str, Family] = {f.name: f for f in _families()}


def build(family: Family, tok: Any, **overrides: Any) -> Any:
    """The family's tiny config (seeded weights come from :func:`make`)."""
    cfg = family.config(base(tok))
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def make(family: Family, out: Path, tokenizer_dir: Path) -> Path:
    """The family's tiny random classifier with the real tokenizer, saved to ``out``."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(build(family, tok), attn_implementation="eager")
    if "softcap" in family.features:  # logits large enough for the cap to act
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(("q_proj.weight", "k_proj.weight")):
                    p.mul_(4.0)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def readme_rows() -> list[str]:
    """The architecture table of docs/architectures.md, one row per family, as this matrix tests it."""
    rows = []
    for f in FAMILIES.values():
        feats = {"window": f"window ({WINDOW} here)", "softcap": "logit softcap", "sinks": "sinks"}
        what = ", ".join(feats[x] for x in f.features) or "causal"
        packs = "exact (`dense`, `varlen`)" if f.packs else "`auto`: padded, one warning; explicit mode refused"
        old = ("yes" if not f.differs_in_451 else "loads; 4.51 computes differently") if f.in_transformers_451 else "—"
        rows.append(f"| {f.name} | {what} | {packs} | `{', '.join(f.lora_targets)}` | {old} | yes |")
    return rows
