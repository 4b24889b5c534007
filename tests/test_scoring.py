"""RewardModel scoring and `rewardkit eval` reports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from reward.evaluation import evaluate_file
from reward.export import ExportOptions
from reward.inference import Batching, RewardModel, RewardModelEvaluator, score_jsonl

PAIRS = [("How do I boil an egg?", "Boil it for nine minutes."),
         ("Hi", "Hello! How can I help you today? I can answer questions about many topics."),
         ([{"role": "user", "content": "Name a fruit"}, {"role": "assistant", "content": "Apple"},
           {"role": "user", "content": "Another?"}], "Banana"),
         ("Tell me a long story", "Once upon a time " * 20)]


@pytest.fixture()
def rm(tiny_model_dir):
    return RewardModel.from_pretrained(str(tiny_model_dir))


def test_score_is_batch_and_padding_invariant(rm):
    alone = [rm.score(p, r) for p, r in PAIRS]
    for batch_size in (2, 4):
        assert rm.score_batch(PAIRS, batch_size=batch_size) == pytest.approx(alone, abs=1e-5)
    rm.tokenizer.padding_side = "left"
    assert rm.score_batch(PAIRS, batch_size=4) == pytest.approx(alone, abs=1e-5)
    rm.tokenizer.padding_side = "right"


def test_rank_and_original_names(rm, tiny_model_dir):
    ranked = rm.rank("Hi", ["a", "b b b", "c c"])
    assert sorted(s for _, s in ranked)[::-1] == [s for _, s in ranked] and len(ranked) == 3
    ev = RewardModelEvaluator(str(tiny_model_dir))
    s = ev.get_reward_score("Hi", "Hello")
    cmp = ev.compare_responses("Hi", "Hello", "Go away")
    b = rm.score("Hi", "Go away")
    assert cmp["score_a"] == pytest.approx(s, abs=1e-6) and cmp["score_b"] == pytest.approx(b, abs=1e-6)
    assert cmp["preferred"] == ("a" if s > b else "b") and cmp["margin"] == pytest.approx(s - b, abs=1e-6)
    turns = ev.evaluate_conversation([("Hi", "Hello"), ("How are you?", "Fine")])
    assert len(turns) == 2 and turns[0] == pytest.approx(s, abs=1e-5)


def test_score_jsonl_rows_and_rankings(rm, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "Hi", "response": "Hello"}) + "\n"
                   + json.dumps({"prompt": "Hi", "responses": ["a", "bb", "ccc"]}) + "\n")
    out = tmp_path / "out.jsonl"
    assert score_jsonl(rm, str(src), str(out)) == 2
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows[0]["score"] == pytest.approx(rm.score("Hi", "Hello"), abs=1e-5)  # the value, not just a float
    assert rows[1]["scores"] == pytest.approx([rm.score("Hi", r) for r in ("a", "bb", "ccc")], abs=1e-5)
    assert rows[1]["ranking"] == sorted(range(3), key=lambda k: rows[1]["scores"][k], reverse=True)


def test_eval_cli_json_and_report(tiny_model_dir, hh_small, tmp_path):
    report = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "reward.cli", "eval", str(tiny_model_dir), "--data", str(hh_small),
                           "--format", "hh-rlhf", "--json", "--report", str(report), "--max_length", "128"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout)
    assert {"accuracy", "n_pairs", "mean_margin", "ece", "length_bias", "bt_logloss", "reward_mean", "reward_std"} <= set(m)
    assert m["n_pairs"] == 80
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert pngs == ["reliability_diagram.png", "reward_histogram.png", "reward_vs_length.png"]
    assert (report / "report.md").read_text().startswith("# Evaluation")
    rows = [json.loads(x) for x in (report / "pair_rewards.jsonl").read_text().splitlines()]
    assert len(rows) == m["n_pairs"]
    assert sum(r["chosen"] > r["rejected"] for r in rows) / len(rows) == pytest.approx(m["accuracy"])
    assert sum(r["chosen"] for r in rows) / len(rows) == pytest.approx(m["chosen_reward_mean"])


def test_prompt_shared_eval_gives_the_rewards_score_gives(rm, tmp_path, monkeypatch):
    """Packed, prompt-shared evaluation must not change a single reward: each equals ``score`` alone,
    also for a prompt cut to max_length, a response longer than max_length on its own, and a
    rejected answer that is the start of the chosen one (the shared part runs into the answers)."""
    story = "Once upon a time there was a small dragon who lived by the sea. " * 8
    rows = [{"prompt": "How do I boil an egg?", "chosen": "Boil it for nine minutes.", "rejected": "No."},
            {"prompt": "Summarise: " + story, "chosen": "A dragon by the sea.", "rejected": "It is about fish."},
            {"prompt": "Tell me a story", "chosen": story, "rejected": "No."},
            {"prompt": "Count", "chosen": "one two three four", "rejected": "one two"},
            {"prompt": [{"role": "user", "content": "Name a fruit"}, {"role": "assistant", "content": "Apple"},
                        {"role": "user", "content": "Another?"}], "chosen": "Banana", "rejected": "Car"}]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert rm.packable()
    rm.max_length = 48
    alone = [(rm.score(r["prompt"], r["chosen"]), rm.score(r["prompt"], r["rejected"])) for r in rows]
    encoded = rm.encode([r["prompt"] for r in rows], [[r["chosen"], r["rejected"]] for r in rows])
    assert encoded.responses_cut == 1  # the story alone is longer than 48 tokens
    assert encoded.truncated[2] == [True, False] and encoded.truncated[1] == [True, True]  # long prompt cut for both
    assert all(len(s) <= 48 for g in encoded.groups for s in g)
    padded_path, padded_calls = rm._token_vectors, []  # the padded forward every path ends in

    def counting(seqs, *args, **kwargs):
        padded_calls.append(len(seqs))
        return padded_path(seqs, *args, **kwargs)

    monkeypatch.setattr(rm, "_token_vectors", counting)
    for pack_tokens in (0, 60, 4096):  # padded; about one pair a row; all pairs in one row
        padded_calls.clear()
        result = evaluate_file(rm, str(data), batching=Batching(pack_tokens=pack_tokens), max_length=48)
        assert result.data["responses_cut_to_max_length"] == 1
        got = list(zip(result.rewards.chosen, result.rewards.rejected))
        assert got == [pytest.approx(a, abs=1e-5) for a in alone], pack_tokens
        # packed: no fallback; only the row with the longest sequence is checked padded, and not again
        if pack_tokens == 0:
            assert padded_calls == [10]
        elif pack_tokens == 60:
            assert len(padded_calls) == 1 and padded_calls[0] < 10, padded_calls
        else:
            assert padded_calls == [], padded_calls
    rm.tokenizer.padding_side = "left"  # the padded path, left-padded, agrees too
    result = evaluate_file(rm, str(data), batching=Batching(pack_tokens=0), max_length=48)
    rm.tokenizer.padding_side = "right"
    assert list(zip(result.rewards.chosen, result.rewards.rejected)) == [pytest.approx(a, abs=1e-5) for a in alone]


def test_ranking_shares_the_prompt_and_falls_back_when_the_mask_is_ignored(rm, tiny_model_dir, monkeypatch, caplog):
    """``rank`` and ``score_jsonl`` compute a prompt once for all its answers; a model whose attention
    ignores the packed mask (here: a mask that lets every token see every other) is caught by the
    check on the first row and scored padded, with a warning, so no reward is wrong."""
    import torch

    import reward.packing
    import reward.packing.attention

    answers = ["Boil it.", "Boil it for nine minutes, then cool it in cold water.", "No.", "Boil it for nine."]
    alone = [rm.score("How do I boil an egg?", a) for a in answers]
    ranked = dict(rm.rank("How do I boil an egg?", answers, pack_tokens=64))  # split into several rows
    assert [ranked[a] for a in answers] == pytest.approx(alone, abs=1e-5)

    def attend_everything(group_ids, segment_ids, *args, **kwargs):
        t = group_ids.shape[-1]
        return torch.ones((1, 1, t, t), dtype=torch.bool)

    monkeypatch.setattr(reward.packing.attention, "dense_mask", attend_everything)
    fresh = RewardModel.from_pretrained(str(tiny_model_dir))
    reward.packing.prepare_model(fresh.model, "dense", "cpu")  # the mask path (CPU's default is varlen)
    with caplog.at_level("WARNING", logger="reward.inference.model"):
        ranked = dict(fresh.rank("How do I boil an egg?", answers))
    assert "scoring padded instead" in caplog.text
    assert [ranked[a] for a in answers] == pytest.approx(alone, abs=1e-5)
    caplog.clear()
    ranked = dict(fresh.rank("How do I boil an egg?", answers))  # padded from now on, no second warning
    assert [ranked[a] for a in answers] == pytest.approx(alone, abs=1e-5) and not caplog.text


def test_prompt_shared_eval_of_a_lora_run_matches_padded(tiny_recipe, hh_small, tmp_path):
    """A LoRA run scores as base + adapter: the head hook must sit on the wrapped model's head."""
    from reward.config import load_recipe
    from reward.run import run_training

    run = run_training(load_recipe(tiny_recipe(use_peft=True, lora_r=4, lora_target_modules=["q_proj", "v_proj"])))
    rm = RewardModel.from_pretrained(str(run))
    assert hasattr(rm.model, "get_base_model") and rm.packable()
    packed = evaluate_file(rm, str(hh_small), fmt="hh-rlhf", exclude_seen=False)
    padded = evaluate_file(rm, str(hh_small), fmt="hh-rlhf", batching=Batching(pack_tokens=0), exclude_seen=False)
    assert packed.metrics["n_pairs"] == padded.metrics["n_pairs"] > 50
    assert packed.rewards.chosen == pytest.approx(padded.rewards.chosen, abs=1e-5)
    assert packed.rewards.rejected == pytest.approx(padded.rewards.rejected, abs=1e-5)
    assert packed.metrics["accuracy"] == padded.metrics["accuracy"]


def test_metrics_ties_are_not_wins():
    from reward.evaluation import compute_metrics

    m = compute_metrics([1.0, 0.5, 2.0, 0.0], [0.0, 0.5, 3.0, 0.0], [1, 2, 3, 4], [2, 2, 2, 2])
    assert m["accuracy"] == 0.25 and m["ties"] == 2 and m["accuracy_excluding_ties"] == 0.5
    assert m["length_bias"]["n_chosen_shorter"] == 1


def test_ece_is_zero_for_perfect_calibration_and_high_when_overconfident():
    import numpy as np

    from reward.evaluation import expected_calibration_error

    rng = np.random.default_rng(0)
    margins = rng.normal(0, 2, 20000)
    p = 1 / (1 + np.exp(-margins))
    wins = rng.random(20000) < p  # chosen truly wins with probability p
    calibrated = np.where(wins, margins, -margins)  # relabel so chosen is the winner
    assert expected_calibration_error(calibrated)[0] < 0.02
    assert expected_calibration_error(calibrated * 10)[0] > 0.1


def test_eval_leaves_out_pairs_the_run_trained_on(tiny_recipe, hh_small, tmp_path):
    """A run records hashes of its training prompts; `rewardkit eval` on a file that contains its
    training pairs scores only the others, and says how many it left out."""
    from reward.config import DataSource, load_recipe
    from reward.data import ADAPTERS, DataReport, clean_pairs, load_rows, prompt_hash
    from reward.run import run_training
    from reward.rundir import TRAIN_PROMPTS

    run = run_training(load_recipe(tiny_recipe(eval_split_size=0.25, max_steps=1)))
    trained = set(json.loads((run / TRAIN_PROMPTS).read_text())["prompts"])
    kept_train = json.loads((run / "data_report.json").read_text())["kept_train"]
    assert 0 < len(trained) <= kept_train

    source = DataSource.parse(0, {"path": str(hh_small), "format": "hh-rlhf"})
    report = DataReport()
    pairs = clean_pairs(ADAPTERS["hh-rlhf"](load_rows(source), source, report), report)
    n_seen = sum(prompt_hash(p) in trained for p in pairs)
    assert n_seen >= kept_train  # every trained pair is in the file

    def run_eval(*extra: str) -> tuple[dict, str]:
        proc = subprocess.run([sys.executable, "-m", "reward.cli", "eval", str(run), "--data", str(hh_small),
                               "--format", "hh-rlhf", "--json", "--no_progress", *extra],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout), proc.stderr

    unseen, err = run_eval()
    assert unseen["data"]["dropped"]["prompt_seen_in_training"] == n_seen
    assert unseen["n_pairs"] == len(pairs) - n_seen and f"left out {n_seen} of" in err
    everything, _ = run_eval("--include_seen")
    assert everything["n_pairs"] == len(pairs) and "prompt_seen_in_training" not in everything["data"]["dropped"]


def test_accuracy_interval_and_p_value():
    from reward.evaluation import binomial_p_above_chance, compute_metrics, wilson_interval

    assert binomial_p_above_chance(10, 10) == pytest.approx(1 / 1024)
    assert binomial_p_above_chance(5, 10) == pytest.approx(638 / 1024)  # P(X >= 5), X ~ Bin(10, 1/2)
    lo, hi = wilson_interval(50, 100)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(0.192, abs=0.002)
    m = compute_metrics([1.0] * 30 + [0.0] * 10, [0.0] * 40)  # 30 wins, 10 ties
    assert m["accuracy_ci95"][1] < 0.9 and m["p_value_vs_chance"] < 0.01


def test_normalized_scores_use_the_held_out_reward_statistics(tiny_recipe, tiny_model_dir, tmp_path):
    from reward.config import load_recipe
    from reward.errors import ScoringError
    from reward.run import run_training

    run = run_training(load_recipe(tiny_recipe(eval_split_size=0.25, max_steps=1)))
    ev = json.loads((run / "metrics.json").read_text())["eval"]
    rm = RewardModel.from_pretrained(str(run))
    assert rm.reward_stats == {"mean": ev["reward_mean"], "std": ev["reward_std"]}
    raw = rm.score_batch(PAIRS)
    normed = rm.score_batch(PAIRS, normalize=True)
    assert normed == pytest.approx([(x - ev["reward_mean"]) / ev["reward_std"] for x in raw], rel=1e-9)

    bare = RewardModel.from_pretrained(str(tiny_model_dir))  # no run behind it: no statistics
    with pytest.raises(ScoringError, match="no reward mean/std"):
        bare.score("Hi", "Hello", normalize=True)
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "Hi", "response": "Hello"}) + "\n")
    proc = subprocess.run([sys.executable, "-m", "reward.cli", "score", str(tiny_model_dir), str(src), "--out",
                           str(tmp_path / "out.jsonl"), "--normalize"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "no reward mean/std" in proc.stderr and not (tmp_path / "out.jsonl").exists()


def test_score_jsonl_streams_in_chunks_and_filters_best_of_n(rm, tmp_path, umask_022):
    rows = [{"prompt": f"Question {i}?", "responses": ["no", "yes, and here is why", "maybe"]} for i in range(5)]
    rows.insert(2, {"prompt": "Hi", "response": "Hello", "id": "keep-me"})
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    whole, chunked, best = tmp_path / "whole.jsonl", tmp_path / "chunked.jsonl", tmp_path / "best.jsonl"
    score_jsonl(rm, str(src), str(whole))
    score_jsonl(rm, str(src), str(chunked), chunk_rows=2)  # 3 chunks, same answer
    assert whole.stat().st_mode & 0o777 == 0o644  # not the temporary file's 0600
    a = [json.loads(x) for x in whole.read_text().splitlines()]
    b = [json.loads(x) for x in chunked.read_text().splitlines()]
    assert len(a) == len(b) == 6 and a[2]["id"] == "keep-me"
    for x, y in zip(a, b):
        assert x.get("ranking") == y.get("ranking")
        assert (x.get("scores") or [x["score"]]) == pytest.approx(y.get("scores") or [y["score"]], abs=1e-5)
    for row in a:  # prompt-shared (the default) gives each response the reward it gets alone
        for response, got in zip(row.get("responses") or [row["response"]], row.get("scores") or [row["score"]]):
            assert got == pytest.approx(rm.score(row["prompt"], response), abs=1e-5)
    score_jsonl(rm, str(src), str(best), top_k=1)
    top = [json.loads(x) for x in best.read_text().splitlines()]
    for full, kept in zip(a, top):
        if "responses" in full:
            assert kept["responses"] == [full["responses"][full["ranking"][0]]]
            assert kept["scores"] == pytest.approx([max(full["scores"])])


def test_score_cli_rejects_a_bad_line_before_loading_the_model(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "Hi", "response": "Hello"}) + "\n{not json\n")
    out = tmp_path / "out.jsonl"
    # the model path does not exist: an error about line 2 proves the file was checked first
    proc = subprocess.run([sys.executable, "-m", "reward.cli", "score", str(tmp_path / "no-model"), str(src),
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "in.jsonl:2: not valid JSON" in proc.stderr and not out.exists()
    src.write_text(json.dumps({"prompt": "Hi", "responses": []}) + "\n")
    proc = subprocess.run([sys.executable, "-m", "reward.cli", "score", str(tmp_path / "no-model"), str(src),
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "'responses' is empty" in proc.stderr


def test_half_precision_scores_as_mixed_precision_training_computes(tiny_run, tmp_path):
    """`--dtype bf16` on a run (fp32 weights, trained under bf16 autocast) keeps the weights in fp32 and runs
    the forward under autocast, as training did; an export saved in bf16 is scored in its own dtype."""
    import torch

    from reward.export import export_run

    fp32 = RewardModel.from_pretrained(str(tiny_run), device="cpu")
    half = RewardModel.from_pretrained(str(tiny_run), device="cpu", dtype="bf16")
    assert half.autocast == torch.bfloat16 and next(half.model.parameters()).dtype == torch.float32
    seq = half.encode([[{"role": "user", "content": "How do I boil an egg?"}]], [["Nine minutes."]]).groups[0][0]
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        want = fp32.model(input_ids=torch.tensor([seq])).logits[0, 0].float().item()
    assert half.score_token_ids([seq]) == pytest.approx([want], abs=1e-6)
    assert half.score_token_ids([seq]) != pytest.approx(fp32.score_token_ids([seq]), abs=1e-6)  # bf16 did compute
    bf16 = export_run(tiny_run, tmp_path / "bf16", ExportOptions(dtype="bf16"))
    exported = RewardModel.from_pretrained(str(bf16), dtype="bf16")
    assert exported.autocast is None and next(exported.model.parameters()).dtype == torch.bfloat16


def test_a_report_with_an_all_right_calibration_bin_is_written(tmp_path):
    """A bin whose pairs are all ordered right has a Wilson upper bound a hair under 1.0 (0.9999999999999999 at
    6 pairs): the reliability plot's error bar must not go negative (a proxy run of the over-optimisation bench
    failed on it)."""
    from reward.evaluation.metrics import PairRewards
    from reward.evaluation.report import write_report

    rewards = PairRewards([5.0] * 6 + [0.1, 0.2], [0.0] * 6 + [0.3, 0.0])
    paths = write_report(tmp_path / "report", rewards.metrics(), rewards)
    assert any(p.name == "reliability_diagram.png" for p in paths)
