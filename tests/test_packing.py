"""The packed prompt-sharing forward computes the same function as TRL's padded forward."""

from __future__ import annotations

import random

import pytest
import torch

from reward.packing import PackedPreferenceCollator, ScoreCapture, dense_mask, packed_rewards


def _examples(n: int, vocab: int, pad: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        p = [rng.randrange(3, vocab) for _ in range(rng.randint(0, 24))]
        c = [rng.randrange(3, vocab) for _ in range(rng.randint(1, 12))]
        r = [rng.randrange(3, vocab) for _ in range(rng.randint(1, 12))]
        if rng.random() < 0.3:
            r[-1] = pad  # a response ending in the pad/EOS token: both paths read the token before it
        out.append({"chosen_ids": p + c, "rejected_ids": p + r, "prompt_len": len(p)})
    return out


def _model(tiny_model_dir, impl: str, dtype=torch.float32):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, attn_implementation=impl, dtype=dtype).eval()


@pytest.mark.parametrize("impl,mode", [("sdpa", "dense"), ("eager", "dense"), ("sdpa", "varlen")])
def test_packed_equals_padded_fp32(tiny_model_dir, impl, mode):
    from trl.trainer.reward_trainer import DataCollatorForPreference

    from reward.packing import prepare_model

    model = _model(tiny_model_dir, impl)
    assert prepare_model(model, mode, "cpu") == mode
    pad = model.config.pad_token_id
    for seed in range(3):
        exs = _examples(6, 1000, pad, seed)
        padded = DataCollatorForPreference(pad_token_id=pad)(exs)
        with torch.no_grad():
            ref = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits.squeeze(-1)
            cap = ScoreCapture(model.score)
            chosen, rejected = packed_rewards(model, cap, PackedPreferenceCollator(pad_token_id=pad)(exs))
            cap.remove()
        got = torch.cat([chosen, rejected])
        assert torch.allclose(got, ref, atol=1e-4, rtol=0), (got - ref).abs().max()


def test_packed_equals_padded_bf16(tiny_model_dir):
    from trl.trainer.reward_trainer import DataCollatorForPreference

    from reward.packing import prepare_model

    model = _model(tiny_model_dir, "sdpa", torch.bfloat16)
    assert prepare_model(model) == "varlen"  # CPU, 16-bit weights: auto
    pad = model.config.pad_token_id
    exs = _examples(6, 1000, pad, 7)
    padded = DataCollatorForPreference(pad_token_id=pad)(exs)
    with torch.no_grad():
        ref = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits.squeeze(-1).float()
        cap = ScoreCapture(model.score)
        chosen, rejected = packed_rewards(model, cap, PackedPreferenceCollator(pad_token_id=pad)(exs))
    got = torch.cat([chosen, rejected]).float()
    scale = ref.abs().max().clamp(min=1.0)
    assert ((got - ref).abs().max() / scale) < 2e-2


def test_mask_rule():
    # pair 0: prompt(2) chosen(2) rejected(1); pair 1: prompt(1) chosen(1) rejected(1)
    pair = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1]])
    seg = torch.tensor([[0, 0, 1, 1, 2, 0, 1, 2]])
    m = dense_mask(pair, seg)[0, 0]
    assert m[4].tolist() == [True, True, False, False, True, False, False, False]  # rejected sees prompt + itself
    assert m[3].tolist() == [True, True, True, True, False, False, False, False]
    assert m[1].tolist()[:3] == [True, True, False]  # prompt is causal and never sees responses
    assert m[7].tolist() == [False] * 5 + [True, False, True]  # no attention across pairs


def test_packed_batch_has_no_padding(tiny_model_dir):
    exs = _examples(5, 1000, 2, 1)
    batch = PackedPreferenceCollator(pad_token_id=2)(exs)
    real = sum(e["prompt_len"] + (len(e["chosen_ids"]) - e["prompt_len"]) + (len(e["rejected_ids"]) - e["prompt_len"])
               for e in exs)
    assert batch["input_ids"].shape == (1, real)


def test_training_loss_curves_match(tiny_recipe, tmp_path):
    """A short run: per-step losses of the packed and the stock padded path agree."""
    from reward.config import load_recipe
    from reward.run import run_training

    losses = {}
    for packing in (True, False):
        out = tmp_path / f"run_{packing}"
        run_training(load_recipe(tiny_recipe(), {"packing": packing, "output_dir": str(out), "logging_steps": 1,
                                                  "max_steps": 6, "eval_split_size": 0.0}))
        import json

        lines = [json.loads(x) for x in (out / "logs" / "train_log.jsonl").read_text().splitlines()]
        losses[packing] = [x["loss"] for x in lines if "loss" in x]
    assert len(losses[True]) == 6
    assert losses[True] == pytest.approx(losses[False], abs=2e-4), losses


def _padded_reference(model, exs):
    from trl.trainer.reward_trainer import DataCollatorForPreference

    padded = DataCollatorForPreference(pad_token_id=model.config.pad_token_id)(exs)
    with torch.no_grad():
        return model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits.squeeze(-1)


def test_varlen_layout_equals_padded_fp32(tiny_model_dir):
    """The varlen segments (keys gathered per segment, causal aligned bottom-right) give the padded
    model's rewards; on CPU they run through the SDPA reference, which is what CUDA's kernel must match."""
    from reward.packing import PACKED, prepare_model
    from reward.seams import attn_implementation

    model = _model(tiny_model_dir, "sdpa")
    assert prepare_model(model, "varlen", "cpu") == "varlen" and attn_implementation(model) == PACKED
    pad = model.config.pad_token_id
    for seed in range(3):
        exs = _examples(6, 1000, pad, 10 + seed)
        ref = _padded_reference(model, exs)  # padded calls still run SDPA with transformers' mask
        with torch.no_grad():
            cap = ScoreCapture(model.score)
            chosen, rejected = packed_rewards(model, cap, PackedPreferenceCollator(pad_token_id=pad)(exs))
            cap.remove()
        got = torch.cat([chosen, rejected])
        assert torch.allclose(got, ref, atol=1e-4, rtol=0), (got - ref).abs().max()
    # a broken layout must show: without the prompt keys the rejected rewards change
    exs = _examples(4, 1000, pad, 99)
    batch = PackedPreferenceCollator(pad_token_id=pad)(exs)
    batch["cu_seq_k"] = batch["cu_seq_q"].clone()
    batch["kv_index"] = torch.arange(batch["input_ids"].shape[1])
    with torch.no_grad():
        cap = ScoreCapture(model.score)
        chosen, rejected = packed_rewards(model, cap, batch)
    assert not torch.allclose(torch.cat([chosen, rejected]), _padded_reference(model, exs), atol=1e-3)


@pytest.mark.parametrize("bf16", [False, True])
def test_varlen_cpu_segments_run_sdpa_fused_kernel_not_its_math_path(bf16):
    """The CPU varlen path hands SDPA 4-D [1, H, L, D] segments (grouped-query heads as they are), which its
    fused kernel takes, forward and backward, in fp32 and under bf16 autocast. Segments once went 3-D, which
    always runs the math path: a packed bf16 training step of the 135M shape was then ~1.75× slower per token
    than stock TRL's padded one on qa-feedback's ~850-token segments (docs/listwise.md)."""
    import contextlib

    from torch.profiler import profile

    from reward.packing import segment_attention

    torch.manual_seed(0)
    q = torch.randn(14, 4, 16, requires_grad=True)  # a prefix+suffix segment (10) and a suffix of 4 seeing the prefix
    k, v = torch.randn(24, 2, 16), torch.randn(24, 2, 16)
    layout = {"cu_seq_q": torch.tensor([0, 10, 14]), "cu_seq_k": torch.tensor([0, 10, 24])}
    with profile() as prof:
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            out = segment_attention(q, k, v, layout, scale=0.25)
        out.float().sum().backward()
    ops = {e.key for e in prof.key_averages()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in ops, sorted(o for o in ops if "attention" in o)
    assert "aten::_scaled_dot_product_attention_math" not in ops


def test_varlen_groups_of_n(tiny_model_dir):
    """Best-of-n rows (a prompt with several responses, and a bare prompt) under varlen."""
    from reward.packing import pack_groups, packed_token_rewards, prepare_model

    model = _model(tiny_model_dir, "sdpa")
    rng = random.Random(3)
    groups = [([rng.randrange(3, 1000) for _ in range(n)], [[rng.randrange(3, 1000) for _ in range(rng.randint(1, 9))]
                                                            for _ in range(k)]) for n, k in ((7, 4), (0, 2), (5, 1), (3, 3))]
    seqs = [p + s for p, ss in groups for s in ss]
    with torch.no_grad():
        ref = torch.stack([model(input_ids=torch.tensor([x])).logits[0, 0] for x in seqs])
        prepare_model(model, "varlen", "cpu")
        batch = pack_groups(groups, model.config.pad_token_id)
        cap = ScoreCapture(model.score)
        got = packed_token_rewards(model, cap, batch)[batch["reward_index"]]
    assert torch.allclose(got, ref, atol=1e-4, rtol=0), (got - ref).abs().max()


def test_varlen_gradients_equal_dense_fp32(tiny_model_dir):
    """The CPU default (per-segment SDPA: split and cat, grouped-query heads not copied) back-propagates
    the dense mask's gradients, and ``auto`` picks it on CPU in fp32 and in bf16."""
    import torch.nn.functional as F

    from reward.packing import prepare_model

    for half in (False, True):
        assert prepare_model(_model(tiny_model_dir, "sdpa"), "auto", "cpu", half=half) == "varlen"
    pad = _model(tiny_model_dir, "sdpa").config.pad_token_id
    batch = PackedPreferenceCollator(pad_token_id=pad)(_examples(6, 1000, pad, 5))
    grads = {}
    for mode in ("dense", "varlen"):
        model = _model(tiny_model_dir, "sdpa")
        prepare_model(model, mode, "cpu")
        chosen, rejected = packed_rewards(model, ScoreCapture(model.score), batch)
        (-F.logsigmoid(chosen - rejected).mean()).backward()
        grads[mode] = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert len(grads["varlen"]) > 10 and grads["varlen"].keys() == grads["dense"].keys()
    for name, g in grads["dense"].items():
        assert g.abs().max() > 0 or "embed" in name
        assert torch.allclose(grads["varlen"][name], g, atol=1e-5, rtol=1e-4), name


def test_varlen_layout_that_never_reaches_the_attention_stops(tiny_model_dir):
    """A model whose attention layers drop keyword arguments would run SDPA under the placeholder mask
    (every token seeing every pair): the packed forward refuses instead of returning wrong rewards."""
    from reward.errors import RecipeError
    from reward.packing import PACKED, prepare_model

    model = _model(tiny_model_dir, "sdpa")
    prepare_model(model, "varlen", "cpu")
    pad = model.config.pad_token_id
    batch = PackedPreferenceCollator(pad_token_id=pad)(_examples(3, 1000, pad, 2))
    layer = model.model.layers[0].self_attn
    original = layer.forward

    def drop_layout(*args, **kwargs):
        kwargs.pop(PACKED, None)
        return original(*args, **kwargs)

    layer.forward = drop_layout
    with pytest.raises(RecipeError, match="does not pass keyword arguments.*packing: false"), torch.no_grad():
        packed_rewards(model, ScoreCapture(model.score), batch)
    layer.forward = original
    with torch.no_grad():  # a padded call under the same implementation still runs
        model(input_ids=torch.tensor([[5, 6, 7, 8]]))


def test_varlen_attention_is_not_saved(tiny_model_dir, tmp_path):
    """A model trained under the varlen implementation saves a config any transformers can load."""
    import json

    from reward.packing import prepare_model

    model = _model(tiny_model_dir, "sdpa")
    prepare_model(model, "varlen", "cpu")
    model.save_pretrained(tmp_path)
    assert "rewardkit" not in json.dumps(json.loads((tmp_path / "config.json").read_text()))


def test_token_budget_batches():
    from reward.packing import TokenBudgetBatchSampler

    rng = random.Random(0)
    lengths = [rng.randint(10, 300) for _ in range(500)] + [900]  # one pair over the budget
    s = TokenBudgetBatchSampler(lengths, max_tokens=800, seed=1)
    batches = list(s)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # every pair once, none dropped
    assert all(sum(lengths[i] for i in b) <= 800 for b in batches if len(b) > 1)
    assert [900] in [[lengths[i] for i in b] for b in batches]
    assert len(s) == len(batches)
    # similar lengths together: the spread inside a batch is far below the spread of the data
    assert max(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) < 60
    s.set_epoch(1)
    again = list(s)
    assert again != batches and sorted(map(tuple, again)) == sorted(map(tuple, batches))  # new order, same batches
    s.set_epoch(0)
    assert list(s) == batches  # seeded


def test_packed_attention_switches_a_peft_wrapped_model(tiny_model_dir):
    """Scoring a LoRA run sets the attention on base + adapter: the switch must reach the real model."""
    from peft import LoraConfig, get_peft_model

    from reward.packing import PACKED, prepare_model
    from reward.seams import attn_implementation

    model = get_peft_model(_model(tiny_model_dir, "sdpa"), LoraConfig(task_type="SEQ_CLS", r=2, target_modules=["q_proj"]))
    assert prepare_model(model, "varlen", "cpu") == "varlen"
    assert attn_implementation(model) == PACKED and model.get_base_model().config._attn_implementation == PACKED


def test_pair_lengths_and_longest_row_read_arrow_through_a_selection():
    """The token-budget sampler's lengths and the trainer's length check read Arrow list lengths a batch at
    a time, and honour a dataset's selection (indices mapping) as row access does."""
    from datasets import Dataset

    from reward.packing import longest_row, packed_pair_lengths

    rng = random.Random(0)
    rows = []
    for _ in range(300):
        p, c, r = rng.randint(0, 9), rng.randint(1, 9), rng.randint(1, 9)
        rows.append({"chosen_ids": [1] * (p + c), "rejected_ids": [2] * (p + r), "prompt_len": p})
    picked = Dataset.from_list(rows).select([rng.randrange(300) for _ in range(120)])
    want = [len(x["chosen_ids"]) + len(x["rejected_ids"]) - x["prompt_len"] for x in picked]
    assert packed_pair_lengths(picked) == want
    assert longest_row(picked) == max(max(len(x["chosen_ids"]), len(x["rejected_ids"])) for x in picked)


@pytest.mark.parametrize("mode", ["dense", "varlen"])
def test_a_trainer_built_from_python_runs_the_packed_attention_its_args_name(tiny_model_dir, tmp_path, mode):
    """`RewardkitTrainer(model, args=RewardkitConfig(packed_attention=...))`, built from Python with no recipe:
    the model's packed forward runs the mode its args name, and a step's loss is the padded path's."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    from reward import RewardkitConfig, RewardkitTrainer
    from reward.packing import PackedPreferenceCollator, packed_mode

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [{"chosen_ids": [5, 6, 7, 8, 9, 10], "rejected_ids": [5, 6, 7, 11], "prompt_len": 3},
            {"chosen_ids": [12, 13, 14], "rejected_ids": [12, 15, 16, 17, 18], "prompt_len": 1}]
    losses = {}
    for packing in (True, False):
        args = RewardkitConfig(output_dir=str(tmp_path / str(packing)), use_cpu=True, packing=packing,
                               packed_attention=mode)
        trainer = RewardkitTrainer(model=_model(tiny_model_dir, "sdpa"), args=args, processing_class=tok,
                                   train_dataset=Dataset.from_list(rows))
        if packing:
            assert packed_mode(trainer.model) == mode
            batch = PackedPreferenceCollator(pad_token_id=tok.pad_token_id)(rows)
        else:
            batch = trainer.data_collator(rows)
        losses[packing] = trainer.compute_loss(trainer.model, batch).item()
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)
