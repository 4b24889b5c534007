"""Reward ensembles (``ensemble_heads``): N heads on one backbone trained on their own bootstrap weights,
their mean/std/min wherever a reward leaves rewardkit, and an export whose one head is their mean."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest
import torch

from reward.errors import RecipeError
from tests.conftest import SAMPLE, write_recipe

MEMBERS = 4


def train_ensemble_run(model_dir: Path, tmp: Path, **overrides) -> Path:
    """``model_dir`` trained as a 4-member ensemble, a few steps on 48 shared HH-RLHF pairs."""
    from reward.config import load_recipe
    from reward.run import run_training

    (tmp / "hh.jsonl").write_text("".join(gzip.open(SAMPLE, "rt").readlines()[:48]))
    keys = dict(model_name_or_path=str(model_dir), datasets=[{"path": str(tmp / "hh.jsonl"), "format": "hh-rlhf"}],
                max_length=256, per_device_train_batch_size=4, max_steps=4, learning_rate=1e-2, eval_split_size=0.25,
                ensemble_heads=MEMBERS, output_dir=str(tmp / "run"), cache_dir=str(tmp / "c"), save_strategy="no",
                report_to="none", seed=3)
    keys.update(overrides)
    return run_training(load_recipe(write_recipe(tmp / "r.yaml", **keys)))


@pytest.fixture(scope="session")
def ensemble_run(tmp_path_factory, tiny_model_dir) -> Path:
    return train_ensemble_run(tiny_model_dir, tmp_path_factory.mktemp("ensemble-run"))


@pytest.fixture(scope="session")
def ensemble_export(ensemble_run, tmp_path_factory) -> Path:
    from reward.export import export_run

    return export_run(ensemble_run, tmp_path_factory.mktemp("ensemble-export") / "export")


# -- recipe keys -------------------------------------------------------------------------------

@pytest.mark.parametrize("keys, says", [
    (dict(ensemble_heads=0), "ensemble_heads"),
    (dict(ensemble_heads=2.5), "ensemble_heads"),
    (dict(ensemble_heads=4, packing=False), "packing"),
    (dict(ensemble_heads=4, length_debias="odin"), "odin"),
    (dict(ensemble_heads=4, pairing="listwise", listwise_loss="plackett_luce"), "plackett_luce"),
])
def test_ensemble_keys_that_cannot_train_fail_naming_the_key(keys, says, tmp_path):
    from reward import RewardkitConfig

    with pytest.raises(RecipeError, match=says):
        RewardkitConfig(output_dir=str(tmp_path), use_cpu=True, **keys)


# -- bootstrap weights ---------------------------------------------------------------------------

def test_bootstrap_weights_are_poisson_and_a_function_of_the_pair_alone():
    """Each pair's weights depend on (seed, its tokens, member) only: the same in any batch or collator, another
    seed draws others; over many pairs they are Poisson(1) (mean 1, variance 1, P(0) = e⁻¹)."""
    from reward.packing import ListwiseCollator, PackedPreferenceCollator, bootstrap_weights, pair_weights

    rng = torch.Generator().manual_seed(0)
    rows = [{"chosen_ids": [1, 2] + torch.randint(3, 900, (5,), generator=rng).tolist(),
             "rejected_ids": [1, 2] + torch.randint(3, 900, (4,), generator=rng).tolist(), "prompt_len": 2}
            for _ in range(4000)]
    w = bootstrap_weights(rows, 4, seed=7)
    assert w.shape == (4000, 4)
    assert w.mean().item() == pytest.approx(1.0, abs=0.03) and w.var().item() == pytest.approx(1.0, abs=0.06)
    assert (w == 0).float().mean().item() == pytest.approx(math.exp(-1), abs=0.02)
    assert not torch.equal(w[:, 0], w[:, 1])  # members resample differently
    assert torch.equal(bootstrap_weights(rows[::-1], 4, seed=7), w.flip(0))  # order does not matter
    assert not torch.equal(bootstrap_weights(rows[:50], 4, seed=8), w[:50])
    assert pair_weights(rows[3]["chosen_ids"], rows[3]["rejected_ids"], 4, 7) == w[3].tolist()
    few = rows[:6]
    pairwise = PackedPreferenceCollator(pad_token_id=0, members=4, seed=7)(few)["bootstrap"]
    listwise = ListwiseCollator(pad_token_id=0, members=4, seed=7)(few)["bootstrap"]
    assert torch.equal(pairwise, w[:6]) and torch.equal(listwise, w[:6])
    assert "bootstrap" not in PackedPreferenceCollator(pad_token_id=0)(few)


# -- the loss ------------------------------------------------------------------------------------

def _ensemble_trainer(model_dir, tmp_path, members=3, **args):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from reward import RewardkitConfig, RewardkitTrainer
    from reward.modeling.heads import draw_member_heads
    from tests.test_listwise import _group_rows

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32, num_labels=members,
                                                               ignore_mismatched_sizes=True)
    draw_member_heads(model, seed=5)
    config = RewardkitConfig(output_dir=str(tmp_path / "out"), use_cpu=True, ensemble_heads=members, seed=11, **args)
    return RewardkitTrainer(model=model, args=config, processing_class=tok, train_dataset=Dataset.from_list(_group_rows()))


@pytest.mark.parametrize("pairing", ["pairwise", "listwise"])
def test_ensemble_loss_is_each_members_bootstrap_weighted_loss_from_one_forward(tiny_model_dir, tmp_path, pairing):
    """The packed ensemble forward (the backbone once, every head read) gives the loss and gradients of the
    definition, computed on the padded model one sequence at a time: each member's Bradley-Terry loss with
    its own Poisson weights (mean over pairs; listwise: within each group first), then the mean over
    members; fp32, within 1e-5. Evaluation weighs every pair once."""
    from reward.packing import bootstrap_weights
    from reward.training import losses
    from tests.test_listwise import _group_rows

    rows = _group_rows()
    trainer = _ensemble_trainer(tiny_model_dir, tmp_path, pairing=pairing)
    model = trainer.model
    batch = trainer.data_collator(rows)
    weights = bootstrap_weights(rows, 3, seed=11)
    assert torch.equal(batch["bootstrap"], weights)
    assert weights.min() == 0 and weights.max() > 1  # the draw this test pins really reweights

    model.train()
    model.zero_grad()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    def reward(ids):  # [members]: the padded model, one sequence
        return model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]

    model.zero_grad()
    chosen = torch.stack([reward(r["chosen_ids"]) for r in rows])
    rejected = torch.stack([reward(r["rejected_ids"]) for r in rows])
    per_pair = losses.bradley_terry(chosen, rejected) * weights  # [pairs, members]
    if pairing == "listwise":
        groups = batch["pair_group"]
        want = losses.group_mean(per_pair, groups, batch["n_groups"]).mean()
    else:
        want = per_pair.mean()
    want.backward()
    assert loss.item() == pytest.approx(want.item(), abs=1e-5)
    assert len(got) > 5
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.allclose(got[name], p.grad, atol=1e-5, rtol=0), name
    head = model.score.weight.grad
    assert head.abs().sum(1).min() > 0  # every member's head trained

    model.eval()
    eval_loss = trainer.compute_loss(model, batch).item()
    with torch.no_grad():
        flat = losses.bradley_terry(chosen, rejected)
        plain = (losses.group_mean(flat, batch["pair_group"], batch["n_groups"]) if pairing == "listwise" else flat).mean()
    assert eval_loss == pytest.approx(plain.item(), abs=1e-5)


def test_members_start_from_their_own_draw(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    from reward.modeling.heads import draw_member_heads

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=3, ignore_mismatched_sizes=True)
    draw_member_heads(model, seed=1)
    rows = model.score.weight.detach().clone()
    assert not torch.allclose(rows[0], rows[1])
    model2 = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2, ignore_mismatched_sizes=True)
    draw_member_heads(model2, seed=1)
    assert torch.equal(model2.score.weight[:2], rows[:2])  # member m's draw depends on (seed, m) only
    assert rows.std().item() == pytest.approx(model.config.initializer_range, rel=0.3)


# -- a trained ensemble, end to end --------------------------------------------------------------

PAIRS = [("How do I boil an egg?", "Boil it for nine minutes."), ("How do I boil an egg?", "No."),
         ("What is the capital of France?", "Paris."), ("Tell me a joke about cats.", "I do not know.")]


@pytest.fixture(scope="module")
def ensemble_rm(ensemble_run):
    from reward.inference import RewardModel

    return RewardModel.from_pretrained(str(ensemble_run), device="cpu")


def test_an_ensemble_run_logs_disagreement_and_scores_mean_std_min(ensemble_run, ensemble_rm):
    from reward.rundir import RunInfo

    logs = [json.loads(line) for line in (ensemble_run / "logs" / "train_log.jsonl").read_text().splitlines()]
    assert any("ensemble_disagreement" in row for row in logs)
    assert RunInfo.read(ensemble_run).ensemble_heads == MEMBERS
    rm = ensemble_rm
    assert rm.members == MEMBERS
    stats = rm.score_stats(PAIRS)
    members = rm.score_token_ids([g[0] for g in rm.encode([p for p, _ in PAIRS], [[r] for _, r in PAIRS]).groups],
                                 members=True)
    for s, m in zip(stats, members):
        assert len(m) == MEMBERS
        assert s.mean == pytest.approx(sum(m) / MEMBERS, abs=1e-9)
        assert s.std == pytest.approx(float(torch.tensor(m, dtype=torch.float64).std(unbiased=False)), abs=1e-9)
        assert s.min == min(m) and s.std > 0
        assert s.reward(0.5) == pytest.approx(s.mean - 0.5 * s.std) and s.reward(worst_case=True) == s.min
    assert rm.score_batch(PAIRS) == pytest.approx([s.mean for s in stats], abs=1e-6)  # the reward is the mean
    # prompt-shared scoring gives each member the rewards the padded forward gives
    packed = rm.score_sequence_groups(rm.encode([PAIRS[0][0]], [[PAIRS[0][1], PAIRS[1][1]]]).groups, members=True)[0]
    for got, want in zip(packed, members[:2]):
        assert got == pytest.approx(want, abs=1e-4)


def test_score_rows_carry_the_members_std(ensemble_run, ensemble_rm, tmp_path, capsys):
    from reward.cli import main

    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(json.dumps({"prompt": PAIRS[0][0], "response": PAIRS[0][1]}) + "\n"
                   + json.dumps({"prompt": PAIRS[0][0], "responses": [PAIRS[0][1], PAIRS[1][1]]}) + "\n")
    assert main(["score", str(ensemble_run), str(src), "--out", str(out), "--device", "cpu"]) == 0
    one, many = [json.loads(line) for line in out.read_text().splitlines()]
    want = ensemble_rm.score_stats(PAIRS[:2])
    assert one["score"] == pytest.approx(want[0].mean, abs=1e-4) and one["std"] == pytest.approx(want[0].std, abs=1e-4)
    assert many["scores"] == pytest.approx([w.mean for w in want], abs=1e-4)
    assert many["stds"] == pytest.approx([w.std for w in want], abs=1e-4)


def test_eval_reports_each_member_and_whether_std_predicts_mistakes(ensemble_run, ensemble_rm, tmp_path, capsys):
    from reward.cli import main
    from reward.evaluation.metrics import auroc

    rows = [json.loads(line) for line in gzip.open(SAMPLE, "rt").readlines()[100:130]]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["eval", str(ensemble_run), "--data", str(data), "--format", "hh-rlhf", "--json", "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    ens = report["ensemble"]
    assert ens["members"] == MEMBERS and len(ens["member_accuracy"]) == MEMBERS
    # recomputed from RewardModel on the pairs the command read
    from reward.config.sources import DataSource
    from reward.data.collect import collect_pairs
    from reward.data.report import DataReport

    pairs, _ = collect_pairs([DataSource.parse(0, {"path": str(data), "format": "hh-rlhf"})], DataReport(),
                             eval_split_size=0.0)
    assert report["n_pairs"] == len(pairs) > 20
    rm = ensemble_rm
    seqs = rm.encode([p["prompt"] for p in pairs] * 2, [[p["chosen"]] for p in pairs] + [[p["rejected"]] for p in pairs])
    got = rm.score_token_ids([g[0] for g in seqs.groups], members=True)
    chosen = torch.tensor(got[:len(pairs)], dtype=torch.float64)
    rejected = torch.tensor(got[len(pairs):], dtype=torch.float64)
    margins = chosen - rejected
    assert ens["member_accuracy"] == pytest.approx((margins > 0).double().mean(0).tolist(), abs=1e-9)
    assert report["accuracy"] == pytest.approx((margins.mean(1) > 0).double().mean().item(), abs=1e-9)
    wrong = (margins.mean(1) <= 0).tolist()
    assert ens["misordered_pairs"] == sum(wrong)
    assert ens["std_auroc_misordered"] == pytest.approx(auroc(margins.std(1, unbiased=False).tolist(), wrong), abs=1e-6)


def test_auroc_counts_ties_as_half():
    from reward.evaluation.metrics import auroc

    assert auroc([0.1, 0.4, 0.35, 0.8], [False, True, False, True]) == 1.0
    assert auroc([0.9, 0.4, 0.35, 0.1], [False, True, False, True]) == 0.25
    assert auroc([1, 1, 1], [True, False, True]) == 0.5
    assert auroc([1, 2], [True, True]) is None


# -- export ----------------------------------------------------------------------------------------

def test_export_is_one_head_equal_to_the_ensemble_mean_and_serve_restores_the_members(
        ensemble_run, ensemble_export, ensemble_rm):
    """Plain transformers reads the export as a one-output model whose reward is the members' mean (fp32,
    within 1e-5); the members ride in the side file the card names, and loading the export through rewardkit
    gives back every member; the normalisation statistics in config.json are the mean's."""
    from transformers import AutoModelForSequenceClassification

    from reward.inference import RewardModel
    from reward.rundir import ENSEMBLE_HEADS, EVAL_REWARDS, METRICS, RunInfo

    export = ensemble_export
    assert (export / ENSEMBLE_HEADS).is_file() and ENSEMBLE_HEADS in (export / "README.md").read_text()
    assert RunInfo.read(export).ensemble_heads == MEMBERS
    plain = AutoModelForSequenceClassification.from_pretrained(export, dtype=torch.float32).eval()
    assert plain.config.num_labels == 1 and plain.score.weight.shape[0] == 1
    rm = ensemble_rm
    seqs = [g[0] for g in rm.encode([p for p, _ in PAIRS], [[r] for _, r in PAIRS]).groups]
    want = [s.mean for s in rm.score_stats(PAIRS)]
    with torch.no_grad():
        got = [plain(input_ids=torch.tensor([s])).logits[0, 0].item() for s in seqs]
    assert got == pytest.approx(want, abs=1e-5)
    restored = RewardModel.from_pretrained(str(export), device="cpu")
    assert restored.members == MEMBERS
    for a, b in zip(restored.score_token_ids(seqs, members=True), rm.score_token_ids(seqs, members=True)):
        assert a == pytest.approx(b, abs=1e-5)
    # the run's held-out statistics (what config.json carries) are those of the mean reward
    metrics = json.loads((ensemble_run / METRICS).read_text())["eval"]
    assert plain.config.mean == pytest.approx(metrics["reward_mean"])
    assert plain.config.std == pytest.approx(metrics["reward_std"])
    saved = json.loads((ensemble_run / EVAL_REWARDS).read_text())
    assert saved["chosen"] == pytest.approx(rm.score_token_ids(saved["chosen_ids"]), abs=1e-4)


def test_a_side_file_that_does_not_average_to_the_head_is_refused(ensemble_export, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from reward.errors import ModelLoadError
    from reward.inference import RewardModel
    from reward.rundir import ENSEMBLE_HEADS

    copy = Path(shutil.copytree(ensemble_export, tmp_path / "export"))
    members = load_file(str(copy / ENSEMBLE_HEADS))
    members["weight"][0] += 0.05
    save_file(members, str(copy / ENSEMBLE_HEADS))
    with pytest.raises(ModelLoadError, match="side file"):
        RewardModel.from_pretrained(str(copy), device="cpu")


# -- into the RL loop ----------------------------------------------------------------------------

LAMBDA = 0.5


def test_served_rewards_are_score_mean_minus_lambda_std(ensemble_export, ensemble_rm, tmp_path):
    """``rewardkit serve EXPORT --uncertainty_penalty λ``: OpenRLHF's ``rewards`` are mean − λ·std of what
    ``rewardkit score`` gives (within 1e-4), ``scores`` the mean, ``extra_logs.reward_std`` the std; ``/v1/score``
    gives the std, ``/classify`` (verl) the penalised reward; ``--worst_case`` the minimum."""
    from reward.data import as_messages, render_texts
    from tests.test_serve import Server

    want = ensemble_rm.score_stats(PAIRS)
    queries, prompts = [], []
    for p, a in PAIRS:
        ptxt, rtxt = render_texts(ensemble_rm.tokenizer, as_messages(p), a)
        queries.append(ptxt + rtxt)
        prompts.append(ptxt)
    server = Server(ensemble_export, tmp_path, "--uncertainty_penalty", str(LAMBDA), key=None)
    try:
        assert server.post("/health", None).status_code == 405
        got = server.post("/get_reward", {"query": queries, "prompts": prompts}).json()
        assert got["rewards"] == pytest.approx([w.mean - LAMBDA * w.std for w in want], abs=1e-4)
        assert got["scores"] == pytest.approx([w.mean for w in want], abs=1e-4)
        assert got["extra_logs"]["reward_std"] == pytest.approx([w.std for w in want], abs=1e-4)
        v1 = server.post("/v1/score", {"prompt": PAIRS[0][0], "responses": [PAIRS[0][1], PAIRS[1][1]]}).json()
        assert v1["scores"] == pytest.approx([w.mean for w in want[:2]], abs=1e-4)
        assert v1["stds"] == pytest.approx([w.std for w in want[:2]], abs=1e-4)
        cls = server.post("/classify", {"input": queries, "use_activation": False}).json()
        assert [d["probs"][0] for d in cls["data"]] == pytest.approx([w.mean - LAMBDA * w.std for w in want], abs=1e-4)
    finally:
        server.stop()
    server = Server(ensemble_export, tmp_path, "--worst_case", key=None)
    try:
        got = server.post("/get_reward", {"query": queries, "prompts": prompts}).json()
        assert got["rewards"] == pytest.approx([w.min for w in want], abs=1e-4)
    finally:
        server.stop()


def test_reward_func_gives_the_penalised_reward_and_logs_the_std(ensemble_rm):
    from reward.data import as_messages, render_texts

    metrics, extra = {}, {}
    func = ensemble_rm.as_reward_func(uncertainty_penalty=LAMBDA, device="cpu", name="rk")
    texts = [render_texts(ensemble_rm.tokenizer, as_messages(p), a) for p, a in PAIRS]
    got = func([p for p, _ in texts], [r for _, r in texts], log_metric=metrics.__setitem__, log_extra=extra.__setitem__)
    want = ensemble_rm.score_stats(PAIRS)
    assert got == pytest.approx([w.mean - LAMBDA * w.std for w in want], abs=1e-4)
    assert extra["rk_std"] == pytest.approx([w.std for w in want], abs=1e-4)
    assert metrics["rk/reward_std"] == pytest.approx(sum(w.std for w in want) / len(want), abs=1e-4)
    conversational = func([[{"role": "user", "content": p}] for p, _ in PAIRS], [a for _, a in PAIRS])
    assert conversational == pytest.approx(got, abs=1e-4)
    worst = ensemble_rm.as_reward_func(worst_case=True, device="cpu")
    assert worst([[{"role": "user", "content": p}] for p, _ in PAIRS], [a for _, a in PAIRS]) == \
        pytest.approx([w.min for w in want], abs=1e-4)


def test_grpo_trains_on_the_penalised_reward_and_logs_the_std(ensemble_rm, tiny_policy_dir, tmp_path):
    """A real ``GRPOTrainer`` run: the reward TRL logs is the mean over its completions of mean − λ·std, and
    the std reaches its logs (``log_metric``)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from tests.test_trl_grpo import PROMPTS, Recorder

    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=12, max_steps=2, logging_steps=1, learning_rate=1e-5, report_to="none",
                      use_cpu=True, bf16=False, save_strategy="no", seed=0, reward_weights=[1.0, 0.0])
    func, recorder = ensemble_rm.as_reward_func(uncertainty_penalty=LAMBDA, name="rk"), Recorder()
    trainer = GRPOTrainer(model=str(tiny_policy_dir), reward_funcs=[func, recorder], args=args,
                          train_dataset=Dataset.from_list([{"prompt": p} for p in PROMPTS]))
    trainer.train()
    logged = [h for h in trainer.state.log_history if "rewards/rk/mean" in h]
    assert len(logged) == 2 and len(recorder.calls) == 2
    for row, (prompts, completions) in zip(logged, recorder.calls):
        texts = [p + c for p, c in zip(prompts, completions)]
        index, encoded = ensemble_rm.encode_texts(texts, prompts)
        from reward.inference.batches import ungroup
        from reward.inference.ensemble import summarize

        stats = [summarize(v) for v in ungroup(index, ensemble_rm.score_sequence_groups(encoded.groups, members=True),
                                                len(texts))]
        assert row["rewards/rk/mean"] == pytest.approx(sum(s.reward(LAMBDA) for s in stats) / len(stats), abs=1e-4)
        assert row["rk/reward_std"] == pytest.approx(sum(s.std for s in stats) / len(stats), abs=1e-4)


def test_a_lora_listwise_ensemble_with_length_penalty_trains_every_head_and_exports_its_mean(tiny_model_dir, tmp_path):
    """LoRA (the N-output head trained as a saved module), listwise groups and ``corr_penalty`` on each head:
    the run's members differ, and the merged export's one output is their mean within 1e-5."""
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    from reward.export import export_run
    from reward.inference import RewardModel

    run = train_ensemble_run(tiny_model_dir, tmp_path, use_peft=True, lora_r=4, lora_alpha=8, pairing="listwise",
                             length_debias="corr_penalty", ensemble_heads=3)
    adapter = load_file(str(run / "adapter_model.safetensors"))
    head = next(v for k, v in adapter.items() if "score" in k)
    assert head.shape[0] == 3
    rm = RewardModel.from_pretrained(str(run), device="cpu")
    assert rm.members == 3
    seqs = [g[0] for g in rm.encode([p for p, _ in PAIRS], [[r] for _, r in PAIRS]).groups]
    members = rm.score_token_ids(seqs, members=True)
    assert all(len(set(m)) == 3 for m in members)
    export = export_run(run, tmp_path / "export")
    plain = AutoModelForSequenceClassification.from_pretrained(export, dtype=torch.float32).eval()
    with torch.no_grad():
        got = [plain(input_ids=torch.tensor([s])).logits[0, 0].item() for s in seqs]
    assert got == pytest.approx([sum(m) / 3 for m in members], abs=1e-5)


def test_reward_stats_of_members():
    from reward.inference.ensemble import check_penalty, summarize

    s = summarize([1.0, 2.0, 3.0, 6.0])
    assert (s.mean, s.min) == (3.0, 1.0) and s.std == pytest.approx(math.sqrt(3.5))
    assert s.reward(2.0) == pytest.approx(3.0 - 2 * math.sqrt(3.5)) and s.reward(worst_case=True) == 1.0
    assert summarize([4.0]) == (4.0, 0.0, 4.0)  # a plain model: std 0, every reward its mean
    normed = summarize([1.0, 3.0], normalize=lambda x: (x - 1.0) / 2.0)
    assert (normed.mean, normed.std) == (0.5, 0.5)  # each member normalised first: std in normalised units
    with pytest.raises(ValueError):
        check_penalty(-1.0)

