"""The benchmarks time the same work for every path (their timings are read, not asserted here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.launcher import free_port

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "hh-rlhf-harmless-sample.jsonl.gz"


def test_timed_epoch_gives_every_path_the_same_pairs(tokenizer_dir, tmp_path):
    """With ``--fitting_only --timed_epoch`` stock TRL (which drops pairs over max_length), rewardkit at a
    fixed pair count and rewardkit under a token budget each time exactly the same pairs, once."""
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "throughput.py"), "--shapes", "tiny", "--pairs", "60", "--max_length", "192",
         "--timed_epoch", "--fitting_only", "--budgets", "0", "2000", "--tokenizer", str(tokenizer_dir),
         "--data", str(SAMPLE), "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    fitting = int(run.stdout.split("--fitting_only: ", 1)[1].split()[0])
    assert 16 < fitting < 60  # some of the 60 pairs are too long at 192 tokens: the filter did something
    rows = json.loads(out.read_text())["rows"]
    assert [(r["path"], r["max_tokens"]) for r in rows] == [("trl-stock", 0), ("trl-tuned", 0), ("rk-varlen", 0),
                                                              ("rk-varlen", 2000)]
    assert all("error" not in r for r in rows)
    # stock is TRL's defaults (checkpointing on); tuned turns it off; rewardkit never checkpoints here
    assert [r["gradient_checkpointing"] for r in rows] == [True, False, False, False]
    for r in rows:
        assert round(r["timed_steps"] * r["pairs_per_step"]) == fitting, r
    assert rows[3]["timed_steps"] < rows[2]["timed_steps"]  # the budget packs more pairs a step
    # TRL pads chosen and rejected as whole sequences; rewardkit computes each prompt once: fewer tokens
    assert rows[2]["tokens_per_step"] < rows[1]["tokens_per_step"] == rows[0]["tokens_per_step"]


def test_listwise_bench_times_the_same_comparisons_on_every_path(tmp_path):
    """bench/listwise.py at a tiny shape on 2 qa-feedback questions: each path trains every comparison once,
    and the tokens computed per comparison fall from stock TRL (prompt twice a pair, padded) to rewardkit
    pairwise (prompt once a pair) to listwise (prompt once a question, each answer once)."""
    out = tmp_path / "listwise.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "listwise.py"), "--questions", "2", "--shape", "tiny",
                          "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1].startswith("listwise: ")
    rows = {r["path"]: r for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["trl-stock", "rk-pairwise", "rk-listwise"]
    assert len({r["comparisons"] for r in rows.values()}) == 1 and rows["rk-listwise"]["comparisons"] > 4
    stock, pairwise, listwise = (rows[p]["tokens_per_comparison"] for p in rows)
    assert stock > 1.5 * pairwise and pairwise > 2 * listwise


def test_data_scale_measures_distinct_pairs(tmp_path):
    """bench/data_scale.py's million pairs are a million pairs to prepare: its variants of the shared file
    repeat no pair and no prompt across variants, so hygiene drops nothing as a duplicate."""
    import pytest

    sys.path.insert(0, str(ROOT / "bench"))
    import data_scale

    if not data_scale.SHARED_HH.exists():
        pytest.skip("../shared/data is not beside this checkout")
    path = tmp_path / "variants.jsonl"
    data_scale.write_variants(3700, path)  # variants 0, 1 and the start of 2
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 3700 and len({(r["chosen"], r["rejected"]) for r in rows}) == 3700

    def prompts(part: list[dict]) -> set[str]:
        return {r["chosen"][:r["chosen"].rfind("\n\nAssistant:")] for r in part}

    assert not prompts(rows[:1800]) & prompts(rows[1800:3600])
    assert rows[1800]["chosen"].startswith("\n\nHuman: [variant 1] ")


@pytest.mark.deepspeed
@pytest.mark.distributed
def test_zero3_widths_counts_what_the_planner_plans(tmp_path):
    """bench/zero3_widths.py at its tiny size under zero3_cpu: the planner's weights, gradients and optimizer
    parts are the bytes each rank's ZeRO-3 partitions, gradient buffer and Adam states hold (within 10%),
    and the export, read by plain transformers, gives the run's rewards."""
    out = tmp_path / "widths.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "zero3_widths.py"), "--sizes", "tiny", "--out", str(out),
                          "--scratch", str(tmp_path)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "MASTER_PORT": str(free_port())})
    assert run.returncode == 0, run.stderr[-3000:]
    row = json.loads(out.read_text())["runs"][0]
    for rank in row["plan_vs_counted_by_part"]:
        assert all(0.9 <= ratio <= 1.1 for ratio in rank.values()), rank
    assert row["ranks"][0]["fp32_master"] > 0  # DeepSpeed keeps an fp32 copy of fp32 weights (see reward.training.plan)
    assert row["reload_plain_transformers"]["max_abs_gap"] <= 1e-4


def test_ensemble_step_bench_times_both_arms_on_the_same_batches(tmp_path):
    out = tmp_path / "step.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "ensemble_step.py"), "--shape", "tiny", "--steps", "2",
                          "--repeats", "1", "--pairs", "40", "--data", str(SAMPLE), "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1].startswith("ensemble: 4 heads ")
    result = json.loads(out.read_text())
    assert set(result["seconds_per_step"]) == {"1", "4"} and result["ratio"] > 0


def test_listwise_quality_pairs_the_two_runs_comparison_by_comparison():
    """The paired difference is the mean of (right in listwise) − (right in pairwise) over the same
    comparisons, with the standard error of those per-comparison differences; runs that list different
    comparisons are not paired."""
    sys.path.insert(0, str(ROOT))
    from bench.listwise_quality import paired_difference, pooled

    a = [(10, 5, True), (3, 4, True), (7, 7, False), (2, 9, True)]
    b = [(10, 5, False), (3, 4, True), (7, 7, True), (2, 9, False)]
    d = paired_difference(a, b)  # differences +1, 0, −1, +1: mean 0.25, sample variance 0.916…
    assert d["difference"] == pytest.approx(0.25) and d["se"] == pytest.approx((11 / 12 / 4) ** 0.5)
    assert (d["only_first_right"], d["only_second_right"], d["comparisons"]) == (2, 1, 4)
    assert paired_difference(a, b[::-1]) is None and paired_difference([], []) is None
    p = pooled([d, {"difference": -0.05, "se": 0.02}])  # independent seeds: their variances add, over n²
    assert p["difference"] == pytest.approx(0.1) and p["se"] == pytest.approx((d["se"] ** 2 + 0.02**2) ** 0.5 / 2)


def test_listwise_quality_pairs_runs_of_two_results_files_by_seed(tmp_path, capsys):
    """``--compare`` pairs the seeds both files ran, outcome by outcome, first minus second, and pools them;
    an ambiguous or unreadable file is one ``error:`` line and exit 2."""
    sys.path.insert(0, str(ROOT))
    from bench.listwise_quality import compare_files

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"rows": [{"seed": 1, "right": "1101", "pairing": "listwise"},
                                      {"seed": 2, "right": "11", "pairing": "listwise"},
                                      {"seed": 3, "pairing": "listwise"}]}))
    b.write_text(json.dumps({"rows": [{"seed": s, "right": r, "pairing": p} for s, r, p in [
        (1, "0000", "listwise"), (1, "0110", "pairwise"), (2, "10", "pairwise"), (4, "1", "pairwise")]]}))
    with pytest.raises(SystemExit) as stop:
        compare_files(str(a), str(b))
    assert stop.value.code == 2 and capsys.readouterr().err.startswith(f"error: {b} ran both pairings")
    d = compare_files(str(a), f"{b}:pairwise")
    assert sorted(d) == ["1", "2", "pooled"]
    assert (d["1"]["difference"], d["2"]["difference"]) == (0.25, 0.5)
    assert d["pooled"]["difference"] == pytest.approx(0.375)
    b.write_text(json.dumps({"rows": [{"seed": 1, "right": "011", "pairing": "pairwise"}]}))  # another split: not paired
    assert compare_files(str(a), str(b)) == {"1": None}
    a.write_text(json.dumps({"rows": [{"seed": 1, "right": "01", "pairing": "listwise", "split": "x"}]}))
    b.write_text(json.dumps({"rows": [{"seed": 1, "right": "11", "pairing": "pairwise", "split": "y"}]}))
    assert compare_files(str(a), str(b)) == {"1": None}  # same count, other comparisons
    b.write_text(json.dumps({"rows": [{"seed": 1, "right": "11", "pairing": "pairwise", "split": "x"}]}))
    assert compare_files(str(a), str(b))["1"]["difference"] == -0.5  # the same split fingerprint: paired
    with pytest.raises(SystemExit) as stop:
        compare_files(str(tmp_path / "missing.json"), str(b))
    assert stop.value.code == 2 and capsys.readouterr().err.startswith(f"error: {tmp_path}/missing.json is not")


def test_a_second_run_of_the_day_gets_its_own_results_file(tmp_path, monkeypatch):
    """A rerun never replaces the day's table a note may cite: the default name gains -2, -3…; an explicit
    --out is written as asked."""
    sys.path.insert(0, str(ROOT))
    import bench.common as common

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    paths = [common.write_result("x", "cpu", {"run": n}) for n in range(3)]
    assert [p.stem.split("-x-cpu")[-1] for p in paths] == ["", "-2", "-3"]
    assert [json.loads(p.read_text())["run"] for p in paths] == [0, 1, 2]
    again = common.write_result("x", "cpu", {"run": 9}, out=str(paths[0]))
    assert again == paths[0] and json.loads(paths[0].read_text())["run"] == 9


def test_best_of_n_gold_is_the_exact_expectation_over_subsets():
    """The closed form Σᵢ gold_i · C(i−1, n−1)/C(N, n) equals the mean over every n-subset of the gold
    reward of the subset's best pick; best-of-1 is the plain mean, and picking by gold itself only gains."""
    import itertools
    import random

    sys.path.insert(0, str(ROOT))
    from bench.overoptimization import best_of_n_gold

    rng = random.Random(0)
    pick = [rng.random() for _ in range(7)]
    gold = [rng.gauss(0, 1) for _ in range(7)]
    for n in range(1, 8):
        subsets = list(itertools.combinations(range(7), n))
        brute = sum(gold[max(s, key=lambda i: pick[i])] for s in subsets) / len(subsets)
        assert best_of_n_gold(pick, gold, n) == pytest.approx(brute, abs=1e-12)
    assert best_of_n_gold(pick, gold, 1) == pytest.approx(sum(gold) / 7)
    by_gold = [best_of_n_gold(gold, gold, n) for n in range(1, 8)]
    assert by_gold == sorted(by_gold) and by_gold[-1] == max(gold)


def test_overoptimization_proxy_labels_follow_the_gold_then_flip_a_seeded_share(tmp_path):
    """The proxies' pairs: the gold's higher sample chosen, gold ties dropped, and a seeded share flipped
    (0: none, 1: all, the same pairs for the same seed)."""
    from bench.overoptimization import proxy_pairs

    prompts = [f"q{i}" for i in range(200)]
    answers = [[f"a{i}", f"b{i}"] for i in range(200)]
    gold = [[[float(i % 3)], [1.0]] for i in range(200)]  # i % 3 == 1: a tie
    read = lambda p: [json.loads(line) for line in p.open()]  # noqa: E731
    assert proxy_pairs(tmp_path / "0.jsonl", prompts, answers, gold, 0.0, 42) == (67, 0)
    exact = read(tmp_path / "0.jsonl")
    assert all((r["chosen"][0] == "a") == (int(r["prompt"][1:]) % 3 == 2) for r in exact)
    assert proxy_pairs(tmp_path / "1.jsonl", prompts, answers, gold, 1.0, 42) == (67, 133)
    swapped = [(r["rejected"], r["chosen"]) for r in read(tmp_path / "1.jsonl")]
    assert swapped == [(r["chosen"], r["rejected"]) for r in exact]
    ties, flipped = proxy_pairs(tmp_path / "q.jsonl", prompts, answers, gold, 0.25, 42)
    assert 20 <= flipped <= 47 and proxy_pairs(tmp_path / "r.jsonl", prompts, answers, gold, 0.25, 42) == (ties, flipped)
    assert read(tmp_path / "q.jsonl") == read(tmp_path / "r.jsonl")
    assert sum(a != b for a, b in zip(read(tmp_path / "q.jsonl"), exact)) == flipped


@pytest.mark.parametrize("flags", [["--label_noise", "1.5"], ["--proxy_prompts", "600"]])
def test_overoptimization_bench_refuses_bad_settings_in_one_line(flags, tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "overoptimization.py"), "--work", str(tmp_path / "w"),
                          *flags], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    said = [line for line in run.stderr.splitlines() if "error:" in line]
    assert len(said) == 1 and f"{flags[0]} {flags[1]}:" in said[0], run.stderr
    assert not (tmp_path / "w").exists()  # refused before anything is written


def test_overoptimization_bench_runs_every_stage(tiny_policy_dir, tiny_model_dir, tmp_path):
    """bench/overoptimization.py --smoke on tiny models: prompts, samples, a gold, proxies (a single head, an
    ensemble, an independent seed), best-of-n for every pick. At n = 1 every pick is a random sample: the
    same gold reward."""
    def bench(out: Path, *flags: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "bench" / "overoptimization.py"), "--smoke", "--work",
                               str(tmp_path / "work"), "--policy", str(tiny_policy_dir), "--base", str(tiny_model_dir),
                               "--data", str(SAMPLE), "--out", str(out), *flags], capture_output=True, text=True,
                              timeout=600)

    out = tmp_path / "overopt.json"
    run = bench(out)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1].startswith("overoptimization: at n=8 ")
    result = json.loads(out.read_text())
    assert result["ns"] == [1, 2, 4, 8] and out.with_suffix(".png").is_file()
    rows = {r["pick"]: r for r in result["rows"]}
    assert {"single proxy", "ensemble mean", "mean - 1·std", "min", "independent ×2 mean"} <= set(rows)
    at_one = {round(r["gold_at_n"]["1"], 9) for r in rows.values()}
    assert len(at_one) == 1 and at_one == {round(result["gold_mean_of_samples"], 9)}
    assert set(result["diversity_disagreement"]) == {"heads", "independent"}
    assert result["gold_pick_at_n"][0] == pytest.approx(result["gold_mean_of_samples"])
    assert all(result["gold_pick_at_n"][k] >= r["gold_at_n"][str(n)] - 1e-9 for r in rows.values()
               for k, n in enumerate(result["ns"]))  # no pick beats the gold's own
    assert result["minus_single_at_largest_n"]["ensemble mean"]["se"] >= 0
    # a weaker proxy from the same cached samples and gold: its own pairs, the first 6 prompts' only
    weaker = bench(tmp_path / "weaker.json", "--proxy_prompts", "6", "--label_noise", "0")
    assert weaker.returncode == 0, weaker.stderr[-3000:]
    assert "stage 3: gold" in weaker.stdout and "trained gold" not in weaker.stdout  # cached
    small = json.loads((tmp_path / "weaker.json").read_text())
    assert small["proxy_pairs"] + small["gold_ties_dropped"] == 6 and small["labels_flipped"] == 0
    assert (tmp_path / "work" / "proxy_pairs_p6.jsonl").is_file()
