"""Listwise training: ranked formats → groups, the packed group collator, and the exactness of the
listwise loss and gradients against the pairwise path on the expanded pairs (fp32, 1e-5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT

SHARED = ROOT.parent / "shared" / "data"
QA_FEEDBACK = SHARED / "qa-feedback-dev.1-400.json.gz"
OASST = SHARED / "oasst1-en-100-trees.jsonl.gz"


def _collect(path, fmt, **source):
    from reward.config.sources import DataSource
    from reward.data import DataReport, collect_pairs

    report = DataReport()
    pairs, _ = collect_pairs([DataSource.parse(0, {"path": str(path), "format": fmt, **source})], report,
                             eval_split_size=0.0)
    return pairs, report


def test_qa_feedback_keeps_every_judged_comparison_and_counts_no_preference():
    """400 questions × 6 judgments: the 296 "no preference" judgments are counted, the other 2,104 kept,
    each with the authors' reward-model prompt and the preferred prediction as chosen."""
    import gzip

    from reward.data import qa_feedback_prompt

    pairs, report = _collect(QA_FEEDBACK, "qa-feedback")
    rows = json.loads(gzip.open(QA_FEEDBACK).read())
    assert len(pairs) == 2104 and report.dropped == {"no_preference": 296} and report.total == 2400
    first = rows[0]  # preference [0, 1, 2, 1, 0, 2]: 1≻3, 4≻1, 2≻3, 4≻3
    prompt = qa_feedback_prompt(first)
    assert prompt.startswith("question: When does bloom")
    assert " context: wikipage: Bloom (Troye Sivan album) text: " in prompt
    assert prompt.endswith(" answer:")
    mine = [(p["chosen"], p["rejected"]) for p in pairs if p["prompt"][0]["content"] == prompt]
    pred = [first[f"prediction {k}"] for k in range(1, 5)]
    assert mine == [(pred[0], pred[2]), (pred[3], pred[0]), (pred[1], pred[2]), (pred[3], pred[2])]


def test_oasst_ranked_replies_become_groups_with_their_conversation(tmp_path):
    """Each prompter message's ranked assistant replies form a group whose prompt is the conversation up to
    it; unranked replies are counted; rank ties are counted, not compared."""
    tree = {"message_tree_id": "t", "prompt": {"role": "prompter", "text": "Hi?", "replies": [
        {"role": "assistant", "text": "A0", "rank": 0, "replies": [
            {"role": "prompter", "text": "More?", "replies": [
                {"role": "assistant", "text": "B1", "rank": 1, "replies": []},
                {"role": "assistant", "text": "B0", "rank": 0, "replies": []},
                {"role": "assistant", "text": "B0bis", "rank": 0, "replies": []}]}]},
        {"role": "assistant", "text": "A1", "rank": 1, "replies": []},
        {"role": "assistant", "text": "Aunranked", "replies": []}]}}
    path = tmp_path / "trees.jsonl"
    path.write_text(json.dumps(tree) + "\n")
    pairs, report = _collect(path, "oasst")
    got = [([m["content"] for m in p["prompt"]], p["chosen"], p["rejected"]) for p in pairs]
    assert got == [(["Hi?"], "A0", "A1"),
                   (["Hi?", "A0", "More?"], "B0", "B1"), (["Hi?", "A0", "More?"], "B0bis", "B1")]
    assert report.dropped == {"unranked_reply": 1, "rank_tie": 1}
    shared, shared_report = _collect(OASST, "oasst")
    assert len(shared) == 754 and shared_report.dropped == {"unranked_reply": 46}


def test_ranked_rows_by_ranks_or_scores_with_ties_and_margins(tmp_path):
    path = tmp_path / "ranked.jsonl"
    rows = [{"prompt": "p1", "responses": ["a", "b", "c"], "ranks": [1, 0, 2]},
            {"prompt": "p2", "responses": ["x", "y", "z"], "scores": [0.5, 2.0, 0.5]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs, report = _collect(path, "ranked", use_margin=True)
    assert [(p["chosen"], p["rejected"], p["margin"]) for p in pairs] == [
        ("b", "a", 1.0), ("b", "c", 2.0), ("a", "c", 1.0), ("y", "x", 1.5), ("y", "z", 1.5)]
    assert report.dropped == {"score_tie": 1}
    adjacent, _ = _collect(path, "ranked", pairing="adjacent")
    assert [(p["chosen"], p["rejected"]) for p in adjacent][:2] == [("b", "a"), ("a", "c")]
    path.write_text(json.dumps({"prompt": "p", "responses": ["a", "b"], "ranks": [0]}) + "\n")
    from reward.errors import DataError

    with pytest.raises(DataError, match="row 0, column 'ranks': expected a list of 2 numbers"):
        _collect(path, "ranked")


# --- the collator and the loss -----------------------------------------------------------------------------

def _group_rows():
    """Two prompt groups: 3 responses with all 3 comparisons (a total order) and 2 responses with one; the
    comparisons in a shuffled order, as a sampler hands them over."""
    p1, p2 = [5, 6, 7], [20, 21]
    r = {"a": [8, 9], "b": [10, 11, 12, 13], "c": [14], "x": [22, 23, 24], "y": [25]}

    def pair(p, c, rj):
        return {"chosen_ids": p + r[c], "rejected_ids": p + r[rj], "prompt_len": len(p)}
    return [pair(p1, "b", "c"), pair(p2, "x", "y"), pair(p1, "a", "b"), pair(p1, "a", "c")]


def test_collator_packs_each_prompt_and_each_response_once():
    from reward.packing import ListwiseCollator

    rows = _group_rows()
    batch = ListwiseCollator(pad_token_id=0, total_orders=True)(rows)
    assert "pl_order" not in ListwiseCollator(pad_token_id=0)(rows)  # only Plackett-Luce reads the orders
    (row,) = batch["rows"]
    assert row["input_ids"].shape[1] == 3 + 2 + 4 + 1 + 2 + 3 + 1  # prompts once, each distinct response once
    assert batch["n_groups"] == 2 and batch["n_responses"] == 5
    assert batch["pair_group"].tolist() == [0, 1, 0, 0]
    ids = row["input_ids"][0]
    read = [ids[row["reward_index"][k]].item() for k in range(5)]
    chosen = [read[k] for k in batch["chosen_pos"].tolist()]
    rejected = [read[k] for k in batch["rejected_pos"].tolist()]
    assert chosen == [13, 24, 9, 9] and rejected == [14, 25, 13, 14]  # each response's last token
    # group 0 is totally ordered a ≻ b ≻ c; group 1 (one comparison of two) too
    order = {g: [read[k] for k in o if k >= 0] for g, o in zip(batch["pl_group"].tolist(), batch["pl_order"].tolist())}
    assert order == {0: [9, 13, 14], 1: [24, 25]}
    split = ListwiseCollator(pad_token_id=0, max_tokens=8)(rows)  # group 0 (10 tokens) over the budget: split
    assert len(split["rows"]) >= 2 and split["n_responses"] == 5
    assert sum(r["input_ids"].shape[1] for r in split["rows"]) > row["input_ids"].shape[1]  # the prompt repeated


def _trainer(model_dir, tmp_path, **args):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from reward import RewardkitConfig, RewardkitTrainer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
    config = RewardkitConfig(output_dir=str(tmp_path / "out"), use_cpu=True, **args)
    return RewardkitTrainer(model=model, args=config, processing_class=tok, train_dataset=Dataset.from_list(_group_rows()))


def _loss_and_grads(trainer, batches, weights):
    trainer.model.train()
    trainer.model.zero_grad()
    total = 0.0
    for batch, weight in zip(batches, weights):
        loss = trainer.compute_loss(trainer.model, batch) * weight
        loss.backward()
        total += loss.item()
    return total, {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("budget, mode", [(None, "varlen"), (8, "varlen"), (None, "dense"), (8, "dense")])
def test_listwise_loss_and_gradients_equal_pairwise_on_the_expanded_pairs(tiny_model_dir, tmp_path, budget, mode):
    """The listwise loss of a batch of groups is the mean over groups of each group's mean pairwise loss: on
    the same pairs, the pairwise path (its packed collator, one pair at a time, each weighted 1/(groups ×
    the group's comparisons)) gives the same loss and gradients, fp32, within 1e-5; also when a group is
    split over rows by the token budget; in each packed attention mode the CPU runs."""
    from reward.packing import PackedPreferenceCollator

    rows = _group_rows()
    listwise = _trainer(tiny_model_dir, tmp_path, pairing="listwise", max_tokens_per_batch=budget, packed_attention=mode)
    pairwise = _trainer(tiny_model_dir, tmp_path, pairing="pairwise", packed_attention=mode)
    batch = listwise.data_collator(rows)
    assert (len(batch["rows"]) == 1) == (budget is None)
    got, got_grads = _loss_and_grads(listwise, [batch], [1.0])
    groups = batch["pair_group"].tolist()
    per_group = {g: groups.count(g) for g in set(groups)}
    collate = PackedPreferenceCollator(pad_token_id=0)
    want, want_grads = _loss_and_grads(pairwise, [collate([r]) for r in rows],
                                       [1.0 / (len(per_group) * per_group[g]) for g in groups])
    assert got == pytest.approx(want, abs=1e-5)
    assert got_grads.keys() == want_grads.keys() and len(got_grads) > 5
    for name, grad in got_grads.items():
        assert torch.allclose(grad, want_grads[name], atol=1e-5, rtol=0), name


def test_plackett_luce_on_a_total_order_and_bradley_terry_elsewhere(tiny_model_dir, tmp_path):
    """``listwise_loss: plackett_luce``: the totally ordered group gets −log P(a ≻ b ≻ c)/2, a group of one
    comparison its Bradley-Terry loss (Plackett-Luce on two is exactly it)."""
    import torch.nn.functional as F

    trainer = _trainer(tiny_model_dir, tmp_path, pairing="listwise", listwise_loss="plackett_luce")
    batch = trainer.data_collator(_group_rows())
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch).item()
        chosen, rejected, _ = trainer.pair_rewards(trainer.model, batch)
    a, b, c = chosen[2].item(), chosen[0].item(), rejected[0].item()
    x, y = chosen[1].item(), rejected[1].item()
    pl = (torch.logsumexp(torch.tensor([a, b, c]), 0).item() - a + torch.logsumexp(torch.tensor([b, c]), 0).item() - b) / 2
    bt = -F.logsigmoid(torch.tensor(x - y)).item()
    assert loss == pytest.approx((pl + bt) / 2, abs=1e-6)


def test_group_sampler_keeps_groups_whole_and_counts_unique_tokens():
    from datasets import Dataset

    from reward.packing import GroupBatchSampler, group_layout

    groups, tokens = group_layout(Dataset.from_list(_group_rows()))
    assert groups == [[0, 2, 3], [1]] and tokens == [3 + 2 + 4 + 1, 2 + 3 + 1]
    sampler = GroupBatchSampler(groups, tokens, max_tokens=12, seed=0)
    assert sorted(sorted(b) for b in sampler) == [[0, 2, 3], [1]]
    assert sorted(sorted(b) for b in GroupBatchSampler(groups, tokens, None, groups_per_batch=2)) == [[0, 1, 2, 3]]


def test_sub_groups_cut_a_prompt_into_near_equal_parts_that_compute_fewest_responses():
    """``listwise_max_comparisons``: qa-feedback's 6 comparisons of 4 answers, at most 2 a sub-group, make 3
    sub-groups of 3 answers each; at most 3, a triangle and the rest; a sub-group's tokens are its prompt
    and its distinct responses; at most 1, each pair costs what the pairwise path packs it to."""
    from datasets import Dataset

    from reward.packing import group_layout, packed_pair_lengths
    from reward.packing.groups import split_group

    full = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    cut = {m: [[full[i] for i in part] for part in split_group(full, m)] for m in (None, 1, 2, 3, 5, 6)}
    assert cut[None] == cut[6] == [full] and cut[1] == [[x] for x in full]
    assert cut[2] == [[(0, 1), (0, 2)], [(0, 3), (1, 3)], [(1, 2), (2, 3)]]
    assert cut[3] == cut[5] == [[(0, 1), (0, 2), (1, 2)], [(0, 3), (1, 3), (2, 3)]]  # near-equal: 5 → 3 + 3
    data = Dataset.from_list(_group_rows())
    assert group_layout(data, 2) == ([[0, 2], [3], [1]], [3 + 4 + 1 + 2, 3 + 2 + 1, 2 + 3 + 1])  # b≻c, a≻b | a≻c
    groups, tokens = group_layout(data, 1)
    lengths = packed_pair_lengths(data)
    assert sorted(g for (g,) in groups) == [0, 1, 2, 3] and [lengths[g] for (g,) in groups] == tokens


@pytest.mark.parametrize("limit, batch_pairs", [(None, [1, 3]), (2, [2, 2])])
def test_sub_groups_come_back_to_a_prompt_once_each(tiny_model_dir, tmp_path, limit, batch_pairs):
    """Under a 12-token budget the prompt of 3 comparisons (10 tokens) is one batch of its own; cut into
    sub-groups of at most 2 comparisons, its two sub-groups go to two batches, each packing only the
    responses its comparisons take. Every pair is trained once an epoch either way."""
    trainer = _trainer(tiny_model_dir, tmp_path, pairing="listwise", max_tokens_per_batch=12,
                       listwise_max_comparisons=limit)
    batches = list(trainer.get_train_dataloader())
    assert sorted(len(b["chosen_pos"]) for b in batches) == batch_pairs
    trained = sorted((int(c), int(r)) for b in batches for c, r in zip(b["chosen_len"], b["rejected_len"]))
    assert trained == [(2, 1), (2, 4), (3, 1), (4, 1)]  # every pair once: a≻c, a≻b, x≻y, b≻c
    assert sorted(b["rows"][0]["input_ids"].shape[1] for b in batches) == ([6, 10] if limit is None else [10, 12])


def test_listwise_evaluation_batches_whole_groups_and_keeps_every_pairs_rewards(tiny_model_dir, tmp_path):
    """On one process a listwise evaluation batches consecutive whole groups (each prompt and response once)
    after putting a group's pairs together; each pair's two rewards equal the pairwise path's, fp32, 1e-5,
    on a set whose groups interleave (the rows of ``_group_rows``, each group twice over the budget)."""
    from datasets import Dataset

    from reward.packing import group_contiguous, ordered_group_batches
    from reward.run import _set_rewards

    data = Dataset.from_list(_group_rows() * 2)  # the same two groups again: pairs 4-7 repeat 0-3
    assert ordered_group_batches([[0, 2], [1], [3]], [6, 5, 9], 11) == [[0, 2, 1], [3]]
    assert ordered_group_batches([[0], [1]], [3, 3], None) == [[0], [1]]
    assert group_contiguous(data)["chosen_ids"] == [data["chosen_ids"][i] for i in (0, 2, 3, 4, 6, 7, 1, 5)]
    got = {}
    for pairing in ("listwise", "pairwise"):
        trainer = _trainer(tiny_model_dir, tmp_path, pairing=pairing, max_tokens_per_batch=12, per_device_eval_batch_size=3)
        if pairing == "listwise":  # group 0 packs to 10 tokens, group 1 to 6: one a batch under 12
            assert [len(b["chosen_pos"]) for b in trainer.get_test_dataloader(group_contiguous(data))] == [6, 2]
        rewards, ids = _set_rewards(trainer, data, None)
        got[pairing] = (ids["chosen_ids"], ids["rejected_ids"], rewards.chosen, rewards.rejected)
    order = (0, 2, 3, 4, 6, 7, 1, 5)  # the listwise evaluation's rows: the pairwise ones, grouped
    for listwise, pairwise in zip(got["listwise"], got["pairwise"]):
        want = [pairwise[i] for i in order]
        if isinstance(want[0], float):
            assert listwise == pytest.approx(want, abs=1e-5)
        else:
            assert listwise == want


def test_response_groups_of_token_pairs_give_the_ranked_metrics():
    """A run's held-out token pairs regroup as `rewardkit eval` groups text pairs: a response in several pairs
    takes its first pair's reward; plain pairs (two responses a prompt) get no ranked metrics."""
    from reward.evaluation.pairs import ResponseGroups

    p, q = (1, 2), (9,)
    triples = [(p, None, (3,), (4,)), (q, None, (5,), (6,)), (p, None, (3,), (7,)), (p, None, (4,), (7,))]
    groups = ResponseGroups.of_triples(triples)
    assert groups.responses == [[(3,), (4,), (7,)], [(5,), (6,)]] and groups.pairs[2] == (0, 0, 2)
    rewards = groups.response_rewards([2.0, 1.0, 2.5, 0.5], [1.0, 0.0, 3.0, 1.5])
    assert rewards == [[2.0, 1.0, 3.0], [1.0, 0.0]]
    got = groups.ranked_metrics(rewards)
    # p: 3 > 4 right, 3 > 7 wrong, 4 > 7 wrong → τ −1/3, its best (3) not ranked first; q: right → τ 1, top-1 right
    assert got["groups"] == 2 and got["kendall_tau"] == pytest.approx((-1 / 3 + 1) / 2)
    assert got["top1_groups"] == 2 and got["top1_accuracy"] == 0.5
    assert ResponseGroups.of_triples(triples[1:2]).ranked_metrics([[1.0, 0.0]]) == {}


def test_listwise_needs_packing():
    from reward import RewardkitConfig
    from reward.errors import RecipeError

    with pytest.raises(RecipeError, match="'pairing': listwise needs 'packing: true'"):
        RewardkitConfig(output_dir="x", pairing="listwise", packing=False, use_cpu=True)
    with pytest.raises(RecipeError, match="'listwise_loss': plackett_luce needs 'pairing: listwise'"):
        RewardkitConfig(output_dir="x", listwise_loss="plackett_luce", use_cpu=True)
    with pytest.raises(RecipeError, match="'listwise_max_comparisons' needs 'pairing: listwise'"):
        RewardkitConfig(output_dir="x", listwise_max_comparisons=2, use_cpu=True)
    for bad in (0, True, 1.5):
        with pytest.raises(RecipeError, match="'listwise_max_comparisons': .* whole number ≥ 1"):
            RewardkitConfig(output_dir="x", pairing="listwise", listwise_max_comparisons=bad, use_cpu=True)
    with pytest.raises(RecipeError, match="Plackett-Luce reads a whole ranking"):
        RewardkitConfig(output_dir="x", pairing="listwise", listwise_max_comparisons=2, listwise_loss="plackett_luce",
                        use_cpu=True)


# --- end to end: a recipe trains listwise, `rewardkit eval` reports the grouped metrics ------------------

def _qa_subset(path: Path, first: int, last: int) -> Path:
    import gzip

    path.write_text(json.dumps(json.loads(gzip.open(QA_FEEDBACK).read())[first:last]))
    return path


@pytest.fixture(scope="module")
def listwise_run(tiny_model_dir, tmp_path_factory):
    """The tiny model trained listwise with LoRA, 3 steps, on 16 qa-feedback questions (14 train / 2 held out),
    evaluated during training (whole questions an evaluation batch)."""
    from reward.config import load_recipe
    from reward.run import run_training
    from tests.conftest import write_recipe

    tmp = tmp_path_factory.mktemp("listwise")
    data = _qa_subset(tmp / "qa.json", 0, 16)
    recipe = write_recipe(tmp / "r.yaml", model_name_or_path=str(tiny_model_dir),
                          datasets=[{"path": str(data), "format": "qa-feedback"}], max_length=1024, pairing="listwise",
                          use_peft=True, lora_r=4, lora_alpha=8, lora_target_modules=["q_proj", "v_proj"],
                          max_tokens_per_batch=2048, max_steps=3, learning_rate=1e-2, eval_split_size=0.125, seed=0,
                          eval_strategy="steps", eval_steps=3, per_device_eval_batch_size=5,
                          output_dir=str(tmp / "run"), cache_dir=str(tmp / "c"), save_strategy="no", report_to="none")
    return run_training(load_recipe(recipe))


def test_a_listwise_run_trains_groups_and_eval_reports_ranked_metrics(listwise_run, tmp_path):
    """`pairing: listwise` from a recipe trains; `rewardkit eval --format qa-feedback --json` on unseen questions
    prints comparisons, accuracy with its interval, top-1 accuracy and Kendall τ, and they are the ones
    computed by hand from `rewardkit score`'s rewards of the same answers."""
    import subprocess
    import sys

    import yaml

    from reward.data import qa_feedback_prompt
    from reward.inference import RewardModel

    assert yaml.safe_load((listwise_run / "recipe.resolved.yaml").read_text())["pairing"] == "listwise"
    logged = [json.loads(x) for x in (listwise_run / "logs" / "train_log.jsonl").read_text().splitlines()]
    evals = [x for x in logged if "eval_accuracy" in x]
    final = json.loads((listwise_run / "metrics.json").read_text())["eval"]
    assert len(evals) == 1 and evals[0]["eval_pairs"] == final["n_pairs"]  # every held-out comparison, once
    assert evals[0]["eval_accuracy"] == pytest.approx(final["accuracy"], abs=1e-9)
    held = json.loads((listwise_run / "eval_report" / "rewards.json").read_text())  # every held-out pair (< 64)
    assert len(held["chosen"]) == final["n_pairs"]
    signs: dict[tuple, list[int]] = {}
    for c, p, a, b in zip(held["chosen_ids"], held["prompt_len"], held["chosen"], held["rejected"]):
        signs.setdefault(tuple(c[:p]), []).append((a > b) - (a < b))
    assert final["groups"] == len(signs) == 2  # the run's own held-out questions, ranked like `rewardkit eval`
    assert final["kendall_tau"] == pytest.approx(sum(sum(s) / len(s) for s in signs.values()) / len(signs), abs=1e-9)
    data = _qa_subset(tmp_path / "unseen.json", 100, 106)
    proc = subprocess.run([sys.executable, "-m", "reward.cli", "eval", str(listwise_run), "--data", str(data),
                           "--format", "qa-feedback", "--json"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout)
    got = got.get("metrics", got)
    rows = json.loads(data.read_text())
    rm = RewardModel.from_pretrained(str(listwise_run))
    from reward.data.groups import QA_FEEDBACK_PAIRS

    n = correct = 0
    taus, top1 = [], []
    for row in rows:
        r = [rm.score(qa_feedback_prompt(row), row[f"prediction {k}"]) for k in range(1, 5)]
        judged = [((a, b) if p == 1 else (b, a)) for (a, b), p in zip(QA_FEEDBACK_PAIRS, row["preference"]) if p]
        n += len(judged)
        correct += sum(r[b] > r[w] for b, w in judged)
        taus.append(sum((r[b] > r[w]) - (r[b] < r[w]) for b, w in judged) / len(judged))
        beaten = {b: {w for bb, w in judged if bb == b} for b, _ in judged}
        best = [b for b, s in beaten.items() if len(s) == 3]
        if best:
            top1.append(float(max(r) == r[best[0]]))
    assert got["comparisons"] == n and got["accuracy"] == pytest.approx(correct / n)
    assert len(got["accuracy_ci95"]) == 2 and got["groups"] == len(rows)
    assert got["kendall_tau"] == pytest.approx(sum(taus) / len(taus), abs=1e-6)
    assert got["top1_groups"] == len(top1) and got["top1_accuracy"] == pytest.approx(sum(top1) / len(top1))
