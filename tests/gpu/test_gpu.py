"""GPU checks: skipped cleanly without CUDA; with one, the fp16 single-GPU run must reload exactly
and score the same prompt-shared as padded."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_single_gpu_fp16_trains_and_reloads(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "gpu" / "run_all.py"), "--only", "single_gpu_fp16",
                           "--steps", "10", "--out", str(out)], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    row = json.loads(out.read_text())[0]
    assert not row["nan"] and row["max_abs_reward_diff"] <= 2e-2 * max(1.0, row["reward_scale"])
    # bf16 prompt-shared scoring must pass its own check against padded scoring (no silent fallback)
    assert row["packed_scoring_kept"] and row["packed_vs_padded_max_diff"] <= 0.1 * max(1.0, row["reward_scale"])


def _random_groups(seed: int, n: int = 12):
    import random

    rng = random.Random(seed)
    return [([rng.randrange(3, 1000) for _ in range(rng.randint(0, 200))],
             [[rng.randrange(3, 1000) for _ in range(rng.randint(1, 120))] for _ in range(rng.randint(1, 4))])
            for _ in range(n)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_varlen_kernel_matches_segment_reference(dtype):
    """FlashAttention varlen on the packed layout (bottom-right causal, GQA) = the per-segment SDPA
    reference in fp32, forward and backward."""
    from reward.packing import pack_groups, segment_attention, varlen_available
    from reward.packing.attention import _flash_varlen

    if not varlen_available("cuda"):
        pytest.skip("torch.nn.attention.varlen is not in this torch")
    batch = pack_groups(_random_groups(0), pad_token_id=0)
    t, tk = batch["input_ids"].shape[1], batch["kv_index"].numel()
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(t, 8, 64, device="cuda", generator=g, requires_grad=True)
    kv = torch.randn(2, t, 2, 64, device="cuda", generator=g, requires_grad=True)
    idx = batch["kv_index"].cuda()
    layout = {k: batch[k] for k in ("cu_seq_q", "cu_seq_k", "max_q", "max_k")}

    def run(fast: bool) -> torch.Tensor:
        k, v = kv[0].index_select(0, idx), kv[1].index_select(0, idx)
        if fast:
            return _flash_varlen(q.to(dtype), k.to(dtype), v.to(dtype), layout, 0.125).float()
        return segment_attention(q, k, v, batch, 0.125)

    ref, got = run(False), run(True)
    assert got.shape == ref.shape and torch.isfinite(got).all()
    assert ((got - ref).norm() / ref.norm()).item() < 1e-2
    w = torch.randn_like(ref)
    gq_ref, gkv_ref = torch.autograd.grad((ref * w).sum(), (q, kv))
    gq, gkv = torch.autograd.grad((got * w).sum(), (q, kv))
    assert ((gq - gq_ref).norm() / gq_ref.norm()).item() < 2e-2
    assert ((gkv - gkv_ref).norm() / gkv_ref.norm()).item() < 2e-2
    assert tk > t  # prompts' keys really were gathered twice


def test_varlen_model_rewards_match_padded():
    """A bf16 Llama: prompt-shared varlen rewards = padded rewards within bf16 tolerance."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from reward.packing import ScoreCapture, pack_groups, packed_token_rewards, prepare_model

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=8,
                      num_key_value_heads=2, num_labels=1, pad_token_id=0, max_position_embeddings=1024)
    model = LlamaForSequenceClassification(cfg).cuda().to(torch.bfloat16).eval()
    assert prepare_model(model, "auto", "cuda", half=True) == "varlen"
    groups = _random_groups(1, n=6)
    seqs = [p + s for p, ss in groups for s in ss]
    with torch.no_grad():
        ref = torch.stack([model(input_ids=torch.tensor([x], device="cuda")).logits[0, 0].float() for x in seqs])
        batch = pack_groups(groups, 0)
        cap = ScoreCapture(model.score)
        got = packed_token_rewards(model, cap, {k: v.cuda() if torch.is_tensor(v) else v for k, v in batch.items()})
        got = got[batch["reward_index"].cuda()].float()
    scale = ref.abs().max().clamp(min=1.0)
    assert ((got - ref).abs().max() / scale).item() < 3e-2, (got - ref).abs().max()


def test_varlen_under_autocast_trains():
    """fp32 master weights + bf16 autocast (how training runs): RoPE leaves q/k in fp32, v in bf16. The
    varlen path must still take the FlashAttention kernel (not the slow per-segment reference), match
    the padded rewards and give finite gradients."""
    from unittest import mock

    from transformers import LlamaConfig, LlamaForSequenceClassification

    import reward.packing as packing
    import reward.packing.attention

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=1000, hidden_size=192, intermediate_size=384, num_hidden_layers=3, num_attention_heads=3,
                      num_key_value_heads=1, num_labels=1, pad_token_id=0, max_position_embeddings=1024)
    model = LlamaForSequenceClassification(cfg).cuda()
    packing.prepare_model(model, "varlen", "cuda", half=True)
    groups = _random_groups(2, n=5)
    seqs = [p + s for p, ss in groups for s in ss]
    batch = packing.pack_groups(groups, 0)
    batch = {k: v.cuda() if torch.is_tensor(v) else v for k, v in batch.items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        with torch.no_grad():
            ref = torch.stack([model(input_ids=torch.tensor([x], device="cuda")).logits[0, 0].float() for x in seqs])
        cap = packing.ScoreCapture(model.score)
        reference = AssertionError("reference path on CUDA")
        with mock.patch.object(reward.packing.attention, "segment_attention", side_effect=reference):
            got = packing.packed_token_rewards(model, cap, batch)[batch["reward_index"]].float()
    got.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert ((got.detach() - ref).abs().max() / ref.abs().max().clamp(min=1.0)).item() < 3e-2
