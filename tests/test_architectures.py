"""The architecture matrix (``tests/architectures.py``): on each family's tiny model, whose window, softcap
and sinks act at test lengths, the packed forward computes what the model computes padded, training
logs the same first loss packed and padded, and the export scores as plain transformers does.

Each family is trained twice (``packing: true`` and ``false``, LoRA on the family's usual targets, lr
1e-12, one step on the same batch) and exported once; the runs are shared by the tests below.
"""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path

import pytest
import torch

from tests.architectures import FAMILIES, WINDOW, make
from tests.conftest import write_recipe

PACKING = [f for f in FAMILIES.values() if f.packs]


def _examples(pad: int, seed: int, n: int = 6) -> list[dict]:
    """Pairs whose prompts and responses are longer than the window (and some shorter ones)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        p = [rng.randrange(3, 1000) for _ in range(rng.randint(0, 3 * WINDOW))]
        c = [rng.randrange(3, 1000) for _ in range(rng.randint(1, 3 * WINDOW))]
        r = [rng.randrange(3, 1000) for _ in range(rng.randint(1, 3 * WINDOW))]
        out.append({"chosen_ids": p + c, "rejected_ids": p + r, "prompt_len": len(p)})
    return out


@pytest.fixture(scope="module")
def family_dir(tokenizer_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("families")

    @functools.cache
    def get(name: str) -> Path:
        return make(FAMILIES[name], root / name, tokenizer_dir)

    return get


def _load(path: Path, **config):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    cfg = AutoConfig.from_pretrained(path)
    for k, v in config.items():
        setattr(cfg, k, v)
    return AutoModelForSequenceClassification.from_pretrained(path, config=cfg, attn_implementation="eager",
                                                              dtype=torch.float32)


def _padded(model, exs):
    from trl.trainer.reward_trainer import DataCollatorForPreference

    batch = DataCollatorForPreference(pad_token_id=model.config.pad_token_id)(exs)
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)


def _loss_and_grads(model, rewards):
    import torch.nn.functional as F

    chosen, rejected = rewards.chunk(2)
    model.zero_grad()
    (-F.logsigmoid(chosen - rejected).mean()).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", [f.name for f in PACKING])
def test_packed_forward_computes_each_layers_attention(family_dir, name):
    """Rewards and gradients of the packed row (dense and varlen) equal the padded eager forward's in
    fp32, within 1e-5 relative; and the family's window / softcap / sinks do change the rewards here."""
    from reward.packing import PackedPreferenceCollator, ScoreCapture, packed_rewards, prepare_model

    family, path = FAMILIES[name], family_dir(name)
    ref_model = _load(path)
    exs = _examples(ref_model.config.pad_token_id, seed=1)
    ref = _padded(ref_model, exs)
    ref_grads = _loss_and_grads(ref_model, ref)
    scale = ref.detach().abs().max()
    if family.disable:  # the features act at these lengths: without them the padded rewards differ
        with torch.no_grad():
            plain = _padded(_load(path, **family.disable), exs)
        assert (plain - ref.detach()).abs().max() > 1e-3 * scale, f"{family.features} do not act at test lengths"
    batch = PackedPreferenceCollator(pad_token_id=ref_model.config.pad_token_id)(exs)
    for mode in ("dense", "varlen"):
        model = _load(path)
        assert prepare_model(model, mode, "cpu", half=False) == mode
        capture = ScoreCapture.for_model(model)
        got = torch.cat(packed_rewards(model, capture, batch))
        grads = _loss_and_grads(model, got)
        capture.remove()
        assert (got.detach() - ref.detach()).abs().max() <= 1e-5 * scale, (mode, got, ref)
        assert grads.keys() == ref_grads.keys()
        for n, g in ref_grads.items():
            assert (grads[n] - g).abs().max() <= 1e-5 * g.abs().max().clamp(min=1e-8), (mode, n)


def test_flex_computes_softcap_and_per_layer_windows(family_dir):
    """``flex`` (compiled FlexAttention on CPU, forward only: the compile costs ~10-25 s): Gemma 2's window
    and softcap, Gemma 3's local and global layers, through one block mask per window size."""
    from reward.packing import PackedPreferenceCollator, ScoreCapture, packed_rewards, prepare_model

    for name in ("gemma2", "gemma3"):
        ref_model = _load(family_dir(name)).eval()
        exs = _examples(ref_model.config.pad_token_id, seed=2)
        model = _load(family_dir(name)).eval()
        assert prepare_model(model, "flex", "cpu", half=False) == "flex"
        with torch.no_grad():
            ref = _padded(ref_model, exs)
            got = torch.cat(packed_rewards(model, ScoreCapture.for_model(model),
                                           PackedPreferenceCollator(pad_token_id=model.config.pad_token_id)(exs)))
        assert (got - ref).abs().max() <= 1e-5 * ref.abs().max(), name


def test_docs_table_is_the_matrix():
    """The architecture table of docs/architectures.md says what this matrix tests, row for row."""
    from tests.architectures import readme_rows
    from tests.conftest import ROOT

    text = (ROOT / "docs" / "architectures.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("| ") and line.endswith("| yes |")]
    assert table == readme_rows()


def test_a_family_without_position_ids_runs_padded_or_is_refused(family_dir, caplog):
    """Falcon's classifier drops position_ids: ``auto`` falls back to the padded forward with one warning
    naming why; an explicit mode is refused."""
    from reward.errors import RecipeError
    from reward.packing import prepare_model

    model = _load(family_dir("falcon"))
    with caplog.at_level("WARNING"):
        assert prepare_model(model, "auto", "cpu") == "padded"
    assert "takes no position_ids" in caplog.text
    with pytest.raises(RecipeError, match="packed_attention: varlen: .*takes no position_ids"):
        prepare_model(model, "varlen", "cpu")


def test_an_attention_keyword_the_packed_forward_does_not_know_stops_it(family_dir):
    """A keyword that changes attention (here an invented one) is never dropped: the forward refuses, naming it."""
    from reward.errors import RecipeError
    from reward.packing import PackedPreferenceCollator, ScoreCapture, packed_rewards, prepare_model

    model = _load(family_dir("llama"))
    prepare_model(model, "varlen", "cpu")
    layer = model.model.layers[0].self_attn
    original = layer.forward
    layer.forward = lambda *a, **kw: original(*a, **kw, attention_chunk_size=4)
    batch = PackedPreferenceCollator(pad_token_id=model.config.pad_token_id)(_examples(model.config.pad_token_id, 0, 2))
    with pytest.raises(RecipeError, match="passes attention_chunk_size to its attention"), torch.no_grad():
        packed_rewards(model, ScoreCapture.for_model(model), batch)


# --- training, export and scoring of every family ------------------------------------------------------
@pytest.fixture(scope="module")
def family_runs(family_dir, tmp_path_factory):
    """(packed run, padded run, export) of a family, trained once for the tests that read them."""
    from reward.config import load_recipe
    from reward.export import export_run
    from reward.run import run_training
    from tests.conftest import SAMPLE

    root = tmp_path_factory.mktemp("family-runs")
    data = root / "hh.jsonl"
    import gzip

    data.write_text("".join(gzip.open(SAMPLE, "rt").readlines()[:16]))

    @functools.cache
    def get(name: str) -> tuple[Path, Path, Path]:
        runs = []
        for packing in (True, False):
            out = root / f"{name}-{'packed' if packing else 'padded'}"
            recipe = write_recipe(root / f"{name}-{packing}.yaml", model_name_or_path=str(family_dir(name)),
                                  datasets=[{"path": str(data), "format": "hh-rlhf"}], max_length=128, packing=packing,
                                  per_device_train_batch_size=4, max_steps=1, logging_steps=1, learning_rate=1e-12,
                                  eval_split_size=0.25, use_peft=True, lora_r=4,
                                  lora_target_modules=FAMILIES[name].lora_targets, output_dir=str(out),
                                  cache_dir=str(root / "cache"), save_strategy="no", report_to="none", seed=0)
            runs.append(run_training(load_recipe(recipe)))
        return runs[0], runs[1], export_run(runs[0], root / f"{name}-export")

    return get


def _first_loss(run: Path) -> float:
    logged = [json.loads(x) for x in (run / "logs" / "train_log.jsonl").read_text().splitlines()]
    return next(x["loss"] for x in logged if "loss" in x)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_trains_packed_as_padded_and_its_export_scores_as_plain_transformers(family_runs, tmp_path, name):
    """LoRA on the family's usual targets: the first logged loss is the same packed and padded (same batch,
    lr 1e-12), the adapter saves the score head, and `rewardkit score` of the export equals plain
    transformers (eager) on responses longer than the window, within 1e-4."""
    from transformers import AutoTokenizer

    from reward.cli import main as cli

    packed, padded, export = family_runs(name)
    assert _first_loss(packed) == pytest.approx(_first_loss(padded), abs=1e-3)
    saved = json.loads((packed / "adapter_config.json").read_text())
    assert "score" in (saved.get("modules_to_save") or []) and set(saved["target_modules"]) == \
        set(FAMILIES[name].lora_targets)
    rows = [{"prompt": [{"role": "user", "content": "Tell me about tides in the sea, please, in some detail."}],
             "response": "Tides rise and fall twice a day because the moon pulls on the oceans of the earth."},
            {"prompt": "Hi", "response": "Hello there! How can I help you with your garden this fine morning?"}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli(["score", str(export), str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out.jsonl")]) == 0
    got = [json.loads(x)["score"] for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    tok = AutoTokenizer.from_pretrained(export)
    model = _load(export).eval()
    want = []
    for r in rows:
        messages = r["prompt"] if isinstance(r["prompt"], list) else [{"role": "user", "content": r["prompt"]}]
        ids = tok.apply_chat_template(messages + [{"role": "assistant", "content": r["response"]}], tokenize=True,
                                      return_dict=True, return_tensors="pt")
        assert ids["input_ids"].shape[1] > 3 * WINDOW  # longer than the window
        with torch.no_grad():
            want.append(model(**ids).logits[0, 0].item())
    assert got == pytest.approx(want, abs=1e-4)


def test_exports_load_with_the_same_rewards_under_transformers_4_51(family_runs):
    """Every family transformers 4.51 has: its export reloads there (RewardBench's own stack) with the rewards
    rewardkit gives, within 1e-4 (one process for all families); where 4.51 itself computes another function
    (``differs_in_451``), it loads and the rewards do differ, so the note stays true."""
    from reward.inference import RewardModel
    from tests.test_old_stack import in_old_stack

    rows = [{"prompt": [{"role": "user", "content": "What is the capital of France, and why is it famous?"}],
             "response": "Paris. It is famous for its art, its food, its history and the Eiffel tower."}]
    off = {}
    for family in FAMILIES.values():
        if not family.in_transformers_451:
            continue
        export = family_runs(family.name)[2]
        got = in_old_stack(export, rows)["rewards"][0]
        want = RewardModel.from_pretrained(str(export), device="cpu").score(rows[0]["prompt"], rows[0]["response"])
        if (abs(got - want) > 1e-4) != bool(family.differs_in_451):
            off[family.name] = (got, want)
    assert not off, off


@pytest.mark.parametrize("name", ["mixtral", "qwen3_moe", "gpt_oss"])
def test_moe_router_loss_is_the_familys_own(family_dir, tokenizer_dir, tmp_path, name):
    """A mixture-of-experts base adds ``router_aux_loss_coef`` × its family's load-balancing loss in training,
    on the router logits transformers itself records (``output_router_logits``); the packed forward feeds it
    one logit row per packed token; eval loss stays Bradley-Terry; a dense model and a coefficient of 0 add nothing."""
    import importlib

    from transformers import AutoTokenizer

    from reward.config import RewardkitConfig
    from reward.packing import PackedPreferenceCollator
    from reward.training import RewardkitTrainer, RouterLoss

    model = _load(family_dir(name))
    assert RouterLoss.for_model(_load(family_dir("llama")), None) is None
    assert RouterLoss.for_model(model, 0.0) is None
    router = RouterLoss.for_model(model, None)
    assert router.coef == model.config.router_aux_loss_coef > 0 and len(router.handles) == model.config.num_hidden_layers
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [5, 6, 7, 11, 0, 0]])
    mask = (ids != 0).long()
    router.start()
    model(input_ids=ids, attention_mask=mask)
    got = router.loss(mask)
    recorded = model.model(input_ids=ids, attention_mask=mask, output_router_logits=True).router_logits
    family = importlib.import_module(type(model).__module__).load_balancing_loss_func
    want = router.coef * family(recorded, router.num_experts, router.top_k, mask)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    from reward.packing import ScoreCapture, packed_rewards, prepare_model

    packed = PackedPreferenceCollator(pad_token_id=model.config.pad_token_id)(_examples(model.config.pad_token_id, 4, 3))
    prepare_model(model, "varlen", "cpu", half=False)
    router.start()
    packed_rewards(model, ScoreCapture.for_model(model), packed)
    assert [x.shape[0] for x in router.logits] == [packed["input_ids"].shape[1]] * model.config.num_hidden_layers
    assert router.loss() > 0
    router.remove()

    # through the trainer: the training loss is Bradley-Terry plus coef × the term; eval is Bradley-Terry
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    from datasets import Dataset

    exs = _examples(tok.pad_token_id, seed=3, n=3)
    batch = PackedPreferenceCollator(pad_token_id=tok.pad_token_id)(exs)
    loss = {}
    for coef in (0.0, 0.5):
        args = RewardkitConfig(output_dir=str(tmp_path / str(coef)), report_to="none", use_cpu=True,
                               router_aux_loss_coef=coef)
        trainer = RewardkitTrainer(model=_load(family_dir(name)), args=args, processing_class=tok,
                                   train_dataset=Dataset.from_list(exs))
        trainer.model.train()
        loss[coef] = trainer.compute_loss(trainer.model, batch).item()
        if coef:
            trainer.model.eval()
            assert trainer.compute_loss(trainer.model, batch).item() == pytest.approx(loss[0.0], abs=1e-6)
    assert loss[0.5] - loss[0.0] > 0.5  # the load-balancing loss is ≥ 1 (1 when perfectly balanced)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_plan_counts_each_familys_parameters_and_lora(family_dir, name):
    """`rewardkit plan` on a local model reads its config.json and counts what the classifier holds (MoE
    experts, two-matrix MLPs, biases, sinks), and LoRA's parameters on the family's targets as peft makes
    them: the model-state parts of the plan start from exact counts, for every family of the matrix."""
    from peft import get_peft_model

    from reward.config import ModelArguments
    from reward.modeling import ModelSource, build_peft_config
    from reward.training import shape_for

    path, targets = family_dir(name), FAMILIES[name].lora_targets
    shape = shape_for(ModelSource.resolve(str(path)))
    model = _load(path)
    assert shape.params == sum(p.numel() for p in model.parameters())
    lora = get_peft_model(model, build_peft_config(ModelArguments(model_name_or_path=str(path), use_peft=True, lora_r=4,
                                                              lora_target_modules=targets)))
    assert shape.lora_params(4, targets) == sum(p.numel() for p in lora.parameters() if p.requires_grad)
