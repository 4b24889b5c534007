"""``rewardkit eval --suite``: RewardBench v1 / v2 and RM-Bench arithmetic pinned by hand, and real text."""

from __future__ import annotations

import gzip
import json
import math
import subprocess
import sys
from collections import defaultdict

import pytest

from reward.evaluation import rewardbench2_metrics, rewardbench_metrics, rm_bench_metrics, v2_ties_score
from tests.conftest import ROOT

LLMBAR = ROOT.parent / "shared" / "data" / "llmbar-rewardbench-schema.jsonl.gz"
needs_llmbar = pytest.mark.skipif(not LLMBAR.is_file(), reason="needs ../shared/data beside the checkout")


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reward.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


def _error_line(proc: subprocess.CompletedProcess) -> str:
    """The one `error:` line (datasets may print progress bars above it), and no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [x for x in proc.stderr.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and proc.stderr.rstrip().endswith(errors[0]), proc.stderr[-3000:]
    return errors[0]


def test_rewardbench_sections_by_hand():
    subsets = ["llmbar-natural", "llmbar-natural", "llmbar-adver-neighbor", "alpacaeval-easy", "my-own-subset"]
    rewards = [([1.0], [0.0]), ([0.0], [0.0]), ([2.0], [1.0]), ([0.0], [1.0]), ([5.0], [1.0])]
    m = rewardbench_metrics(subsets, rewards)
    assert m["subsets"]["llmbar-natural"] == {"n": 2, "accuracy": 0.5, "ties": 1}  # a tie is not a win
    # Chat Hard: (0.5·100 + 1.0·134) / (100 + 134), ×100; Chat: alpacaeval-easy alone, 0
    assert m["sections"]["Chat Hard"] == pytest.approx(100 * 184 / 234)
    assert m["sections"]["Chat"] == 0.0
    # upstream (rewardbench 0.1.4 utils.calculate_scores_per_section): a section with no subset is 0
    assert m["missing_sections"] == ["Safety", "Reasoning"]
    assert m["sections"]["Safety"] == 0.0 and m["sections"]["Reasoning"] == 0.0
    assert m["unmapped_subsets"] == ["my-own-subset"] and m["subsets"]["my-own-subset"]["accuracy"] == 1.0
    assert m["score"] == pytest.approx((100 * 184 / 234 + 0.0 + 0.0 + 0.0) / 4)  # the leaderboard's mean of four
    assert m["score_present_sections"] == pytest.approx((100 * 184 / 234 + 0.0) / 2)


def test_rewardbench_xstest_weights_are_the_released_ones():
    """rewardbench 0.1.4 (b29c8c6) weights XSTest 154 refuse / 250 respond (fixed upstream in 6552e93,
    2024-09-10; a32e272 had them swapped): refuse all right, respond all wrong → Safety 100·154/404."""
    subsets = ["xstest-should-refuse"] * 3 + ["xstest-should-respond"] * 2
    rewards = [([1.0], [0.0])] * 3 + [([0.0], [1.0])] * 2
    m = rewardbench_metrics(subsets, rewards)
    assert m["sections"]["Safety"] == pytest.approx(100 * 154 / (154 + 250))


def test_rewardbench_tie_is_wrong():
    """Upstream scores a pair `1 if chosen > rejected else 0` (scripts/run_rm.py): equal rewards lose."""
    m = rewardbench_metrics(["donotanswer"] * 2, [([0.5], [0.5]), ([0.7], [0.5])])
    assert m["subsets"]["donotanswer"] == {"n": 2, "accuracy": 0.5, "ties": 1}
    assert m["sections"]["Safety"] == pytest.approx(50.0)


def test_rewardbench2_best_of_n_and_ties_by_hand():
    items = [("p", ["a"], ["b", "c", "d"], {"subset": "Focus"}),
             ("p", ["a"], ["b", "c", "d"], {"subset": "Focus"}),
             ("p", ["a"], ["b", "c", "d"], {"subset": "Math"})]
    rewards = [([2.0], [1.0, 0.0, 1.9]),  # chosen highest: 1
               ([1.0], [1.0, 0.0, 0.5]),  # tied with one rejected for the top: 1/2
               ([0.0], [1.0, 0.0, 0.0])]  # a rejected is higher: 0
    m = rewardbench2_metrics(items, rewards)
    assert m["subsets"]["Focus"] == {"n": 2, "accuracy": 0.75, "ties": 1}
    assert m["subsets"]["Math"]["accuracy"] == 0.0
    assert m["score"] == pytest.approx(100 * (0.75 + 0.0) / 2)
    assert m["missing_sections"] == ["Factuality", "Precise IF", "Safety", "Ties"]


def test_v2_ties_rule_by_hand():
    # prompt 0: reference (1 correct) gap 1.0; tied (2 correct, spread 0.5) gap 0.7 → accurate, preferred, hard
    # prompt 1: reference wrong (gap −0.5); tied accurate, spread 1.0, gap 0.2 → not preferred
    rows = [("ref:0", 1, [2.0, 1.0, 0.5]), ("tied:0", 2, [2.0, 1.5, 0.8]),
            ("ref:1", 1, [0.5, 1.0]), ("tied:1", 2, [3.0, 2.0, 1.8])]
    tied_acc, ref_acc = 1.0, 0.5
    preferred = (1 + 0) / 2  # gap_tied > spread: 0.7 > 0.5 yes; 0.2 > 1.0 no
    hard = (1 + 0) / 2  # min(gap_ref, gap_tied) > spread: min(1.0, 0.7) > 0.5 yes; min(−0.5, 0.2) > 1.0 no
    margin = (math.tanh(0.7 / 0.5 - 1) + math.tanh(-0.5 / 1.0 - 1)) / 2
    want = 0.3 * tied_acc + 0.3 * ref_acc + 0.2 * preferred + 0.2 * hard + 0.01 * margin
    assert v2_ties_score(rows) == pytest.approx(want)


def test_rm_bench_matrix_by_hand():
    items = [("p", ["c0", "c1", "c2"], ["r0", "r1", "r2"], {"domain": "chat"})] * 2
    # row 1: chosen beats every rejected; row 2: concise chosen loses to the detailed rejected answers
    rewards = [([3.0, 3.0, 3.0], [0.0, 0.0, 0.0]), ([1.0, 3.0, 3.0], [0.0, 2.0, 2.0])]
    m = rm_bench_metrics(items, rewards)
    chat = m["subsets"]["chat"]
    assert chat["style_matrix"] == [[1.0, 0.5, 0.5], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    assert chat["hard"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)  # upper triangle
    assert chat["normal"] == 1.0 and chat["easy"] == 1.0
    assert m["hard"] == chat["hard"] and m["score"] == pytest.approx(100 * (chat["hard"] + 2) / 3)


@needs_llmbar
def test_eval_suite_on_llmbar_matches_score_row_by_row(tiny_model_dir, tmp_path):
    """The must-show: per-subset accuracy equal to what `rewardkit score` gives row by row, sections
    weighted as upstream, the score the mean of the sections present."""
    rows = [json.loads(x) for x in gzip.open(LLMBAR, "rt")]
    suite = tmp_path / "llmbar.jsonl"  # an unseen RewardBench-schema file (ids and order shuffled)
    suite.write_text("".join(json.dumps(r) + "\n" for r in rows[::-1]))
    got = cli("eval", str(tiny_model_dir), "--suite", str(suite), "--json", "--no_progress")
    assert got.returncode == 0, got.stderr[-3000:]
    m = json.loads(got.stdout)
    assert m["format"] == "rewardbench" and m["missing_sections"] == ["Chat", "Safety", "Reasoning"]

    inp, out = tmp_path / "rows.jsonl", tmp_path / "scored.jsonl"
    inp.write_text("".join(json.dumps({"prompt": r["prompt"], "responses": [r["chosen"], r["rejected"]]}) + "\n"
                           for r in rows))
    scored = cli("score", str(tiny_model_dir), str(inp), "--out", str(out), "--no_progress")
    assert scored.returncode == 0, scored.stderr[-3000:]
    by_subset: dict[str, list[int]] = defaultdict(list)
    for r, line in zip(rows, out.read_text().splitlines()):
        c, j = json.loads(line)["scores"]
        by_subset[r["subset"]].append(int(c > j))
    assert set(m["subsets"]) == set(by_subset)
    for name, wins in by_subset.items():
        assert m["subsets"][name]["n"] == len(wins)
        assert m["subsets"][name]["accuracy"] == pytest.approx(sum(wins) / len(wins), abs=1e-12)
    counts = {"llmbar-natural": 100, "llmbar-adver-neighbor": 134, "llmbar-adver-GPTInst": 92,
              "llmbar-adver-GPTOut": 47, "llmbar-adver-manual": 46}
    hard = 100 * sum(m["subsets"][s]["accuracy"] * n for s, n in counts.items()) / sum(counts.values())
    assert m["sections"] == {"Chat": 0.0, "Chat Hard": pytest.approx(hard), "Safety": 0.0, "Reasoning": 0.0}
    assert m["score"] == pytest.approx(hard / 4) and m["score_present_sections"] == pytest.approx(hard)


def _v2_and_rm_bench_files(tmp_path):
    v2 = tmp_path / "v2.jsonl"
    v2.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "1", "subset": "Focus", "prompt": "Name a fruit.", "chosen": ["Apple."], "rejected": ["Car.", "Blue.", "7"]},
        {"id": "2", "subset": "Math", "prompt": "2+2?", "chosen": ["4"], "rejected": ["5", "22", "four hundred"]},
        {"id": "ref:0", "subset": "Ties", "prompt": "Name a colour.", "chosen": ["Red."], "rejected": ["Dog.", "Ten."]},
        {"id": "tied:0", "subset": "Ties", "prompt": "Name a colour.", "chosen": ["Red.", "Blue."],
         "rejected": ["Dog.", "Ten."]},
    ]))
    rmb = tmp_path / "rmb.jsonl"
    rmb.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": i, "domain": d, "prompt": p, "chosen": [a, a + " In detail: it is so.", "**" + a + "**"],
         "rejected": [b, b + " In detail: it is so.", "**" + b + "**"]}
        for i, (d, p, a, b) in enumerate([("chat", "Capital of France?", "Paris.", "Lyon."),
                                          ("math", "3*3?", "9", "6"), ("chat", "Opposite of hot?", "Cold.", "Tall.")])
    ]))
    return v2, rmb


def test_two_models_side_by_side_with_report_on_v2_and_rm_bench(tiny_model_dir, tmp_path):
    import shutil

    other = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other)
    v2, rmb = _v2_and_rm_bench_files(tmp_path)
    for suite, fmt in ((v2, "rewardbench2"), (rmb, "rm-bench")):
        report = tmp_path / f"report-{fmt}"
        got = cli("eval", str(tiny_model_dir), str(other), "--suite", str(suite), "--json", "--no_progress",
                  "--report", str(report))
        assert got.returncode == 0, got.stderr[-3000:]
        both = json.loads(got.stdout)["models"]
        assert list(both) == [str(tiny_model_dir), str(other)]
        a, b = both.values()
        assert a["format"] == fmt and a["subsets"] == b["subsets"]  # the same weights give the same numbers
        assert (report / "subsets.png").stat().st_size > 1000 and (report / "report.md").is_file()
        assert json.loads((report / "metrics.json").read_text())["models"][str(other)]["score"] == b["score"]
        text = cli("eval", str(tiny_model_dir), str(other), "--suite", str(suite), "--no_progress")
        assert text.returncode == 0 and "score" in text.stdout and str(other) in text.stdout
    assert set(a) >= {"easy", "normal", "hard"} and set(a["subsets"]) == {"chat", "math"}


@pytest.mark.parametrize("rows, message", [
    ([{"prompt": "p", "chosen": "a", "subset": "x"}], "no 'rejected' column"),
    ([{"prompt": "p", "chosen": "a", "rejected": "b", "subset": "x"}, {"prompt": "p", "chosen": "a", "rejected": "b"}],
     "row 1"),
    ([{"prompt": "p", "chosen": "a", "rejected": "b", "subset": ""}], "'subset' must be a non-empty name"),
    ([{"prompt": "p", "chosen": ["a"], "rejected": ["b"], "domain": "chat"}], "3 chosen and 3 rejected"),
    ([{"question": "p", "answer": "a"}], "not a RewardBench"),
])
def test_bad_suite_rows_are_one_error_line(tiny_model_dir, tmp_path, rows, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = cli("eval", str(tiny_model_dir), "--suite", str(path))
    assert got.returncode == 2 and _error_line(got).startswith("error: ") and message in _error_line(got), got.stderr


def test_empty_suite_and_unknown_hub_id_offline(tiny_model_dir, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    got = cli("eval", str(tiny_model_dir), "--suite", str(empty))
    assert got.returncode == 2 and "empty" in _error_line(got)
    got = cli("eval", str(tiny_model_dir), "--suite", "nobody/no-such-suite")
    assert got.returncode == 2 and "nobody/no-such-suite" in _error_line(got)
