"""Data adapters, hygiene, splits and the length policy: every pair accounted for."""

from __future__ import annotations

import csv
import json

import pytest

from reward.config import DataSource
from reward.data import (
    DataError,
    DataReport,
    DataSettings,
    collect_pairs,
    fit_to_length,
    grouped_split,
    parse_hh_transcript,
    prepare_data,
    prompt_key,
)
from tests.conftest import SHARED_HH


def _collect(path, fmt="pairs", **kw):
    report = DataReport()
    train, evals = collect_pairs([DataSource.parse(0, {"path": str(path), "format": fmt, **kw})], report,
                                 eval_split_size=0.0)
    return train, report


def test_hh_transcript_parsing():
    msgs = parse_hh_transcript("\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?")
    assert msgs == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                    {"role": "user", "content": "how are you?"}]


@pytest.mark.skipif(not SHARED_HH.exists(), reason="../shared/data is not beside this checkout")
def test_hh_rlhf_full_file_at_256_accounts_for_every_row(tokenizer_dir, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    data = prepare_data([DataSource.parse(0, {"path": str(SHARED_HH), "format": "hh-rlhf"})], tok,
                        DataSettings(256, "left", 42, 0.2, cache_dir=str(tmp_path)))
    r = data.report
    assert r.total == 1800
    assert r.kept + sum(r.dropped.values()) == r.total
    assert r.kept / r.total >= 0.97, r.summary()
    assert r.repaired["hh_prefix_mismatch"] == 2
    assert r.truncated > 0
    assert all(len(x) <= 256 for x in list(data.train["chosen_ids"]) + list(data.train["rejected_ids"]))
    print(r.summary())


PINNED_HH_256 = "26a46b294507acc88973376af79b410a"
"""Digest of the shared HH file prepared at max_length 256 (split, token ids, prompt lengths, train
prompt hashes), taken with the list pipeline this one replaced (rewardkit 517a160)."""


def _digest(data) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, ds in (("train", data.train), ("eval", data.eval)):
        for r in ds:
            h.update(json.dumps([name, list(r["chosen_ids"]), list(r["rejected_ids"]), int(r["prompt_len"])]).encode())
    h.update(json.dumps(data.train_prompt_hashes).encode())
    return h.hexdigest()[:32]


@pytest.mark.skipif(not SHARED_HH.exists(), reason="../shared/data is not beside this checkout")
def test_streamed_preparation_keeps_the_pinned_split_and_ids(tokenizer_dir, tmp_path, monkeypatch):
    """The Arrow pipeline gives the split and token ids the list pipeline gave, in one process and in two
    (``datasets.map`` workers), and hands back sets memory-mapped from the published cache."""
    from reward.data import tokenize
    from reward.modeling import load_tokenizer

    tok = load_tokenizer(str(tokenizer_dir))
    source = [DataSource.parse(0, {"path": str(SHARED_HH), "format": "hh-rlhf"})]
    one = prepare_data(source, tok, DataSettings(256, "left", 42, 0.2, cache_dir=str(tmp_path / "one"), num_proc=1))
    monkeypatch.setattr(tokenize, "PARALLEL_FROM", 0)
    two = prepare_data(source, tok, DataSettings(256, "left", 42, 0.2, cache_dir=str(tmp_path / "two"), num_proc=2))
    assert _digest(one) == _digest(two) == PINNED_HH_256
    assert one.report.to_dict() == two.report.to_dict()
    assert all(f["filename"].startswith(str(tmp_path / "one")) for f in one.train.cache_files)
    assert one.train.features["chosen_ids"].feature.dtype == "int32"


def test_length_policy():
    p = list(range(300))
    assert fit_to_length(p[:100], ([1] * 20, [2] * 30), 256, "left") == (p[:100], [[1] * 20, [2] * 30], 0, 0)
    kept = fit_to_length(p, ([1] * 20, [2] * 30), 256, "left")
    assert kept.prompt == p[74:] and kept.prompt_cut == 74 and len(kept.prompt) + 30 == 256
    assert fit_to_length(p, ([1] * 20, [2] * 30), 256, "drop") is None
    assert fit_to_length(p[:10], ([1] * 300, [2] * 5), 256, "left") is None
    assert fit_to_length(p[:10], ([1] * 256, [2] * 5), 256, "left").prompt == []
    # scoring: a response too long alone keeps its first max_length tokens, nothing of the prompt
    assert fit_to_length(p[:10], ([3] * 300,), 256, clip_responses=True) == ([], [[3] * 256], 10, 1)
    assert fit_to_length(p[:10], ([3] * 250,), 256, clip_responses=True) == (p[4:10], [[3] * 250], 4, 0)


def test_left_truncation_keeps_last_turn_and_responses(tokenizer_dir, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    long_prompt = "\n\nHuman: " + "tell me more " * 200 + "\n\nAssistant: ok\n\nHuman: final question?"
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"chosen": long_prompt + "\n\nAssistant: good answer",
                                "rejected": long_prompt + "\n\nAssistant: bad"}) + "\n")
    source = [DataSource.parse(0, {"path": str(path), "format": "hh-rlhf"})]
    data = prepare_data(source, tok, DataSettings(128, "left", 42, 0.0, cache_dir=str(tmp_path / "left")))
    assert data.report.kept == 1 and data.report.truncated == 1
    text = tok.decode(data.train[0]["chosen_ids"])
    assert "final question?" in text and text.rstrip().endswith("<|im_end|>") and "good answer" in text
    assert len(data.train[0]["chosen_ids"]) <= 128
    with pytest.raises(DataError, match="(?s)no pairs left.*dropped too_long: 1"):
        prepare_data(source, tok, DataSettings(128, "drop", 42, 0.0, cache_dir=str(tmp_path / "drop")))


def test_hygiene_counts_each_reason(tmp_path):
    rows = [
        {"prompt": "p1", "chosen": "a", "rejected": "b"},
        {"prompt": "p1", "chosen": "a", "rejected": "b"},  # duplicate
        {"prompt": "p2", "chosen": "same", "rejected": "same"},  # identical
        {"prompt": "p3", "chosen": "", "rejected": "b"},  # empty
        {"prompt": "p4", "chosen": None, "rejected": "b"},  # missing
        {"prompt": "p5", "chosen": "x", "rejected": "y", "margin": 1.5},
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs, report = _collect(path)
    assert len(pairs) == 2
    assert dict(report.dropped) == {"duplicate": 1, "identical_responses": 1, "empty_field": 2}
    assert report.total == 6
    assert pairs[1]["margin"] == 1.5


def test_non_string_value_names_row_and_column(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n"
                    + json.dumps({"prompt": "p", "chosen": "a", "rejected": 7}) + "\n")
    with pytest.raises(DataError, match=r"row 1, column 'rejected'"):
        _collect(path)


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet", "json"])
def test_local_file_types_and_column_mapping(tmp_path, ext):
    import pandas as pd

    df = pd.DataFrame({"question": ["q1", "q2", "q3"], "good": ["a1", "a2", "a3"], "bad": ["b1", "b2", "b3"]})
    path = tmp_path / f"d.{ext}"
    {"jsonl": lambda: df.to_json(path, orient="records", lines=True), "csv": lambda: df.to_csv(path, index=False),
     "parquet": lambda: df.to_parquet(path), "json": lambda: df.to_json(path, orient="records")}[ext]()
    pairs, report = _collect(path, columns={"prompt": "question", "chosen": "good", "rejected": "bad"})
    assert [p["chosen"] for p in pairs] == ["a1", "a2", "a3"]
    assert pairs[0]["prompt"] == [{"role": "user", "content": "q1"}]


def test_missing_column_is_explained(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"question": "q", "good": "a", "bad": "b"}) + "\n")
    with pytest.raises(DataError, match=r"no column 'chosen'.*columns: question, good, bad"):
        _collect(path)


def test_conversational_ultrafeedback(tmp_path):
    conv = lambda reply: [{"role": "user", "content": "hi"}, {"role": "assistant", "content": reply}]  # noqa: E731
    rows = [{"chosen": conv("hello!"), "rejected": conv("go away")},
            {"chosen": conv("x"), "rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "y"}]},
            {"chosen": [{"role": "user", "content": "no reply"}], "rejected": conv("z")}]
    path = tmp_path / "uf.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs, report = _collect(path, "conversational")
    assert len(pairs) == 1 and pairs[0]["chosen"] == "hello!"
    assert dict(report.dropped) == {"prompt_mismatch": 1, "no_assistant_reply": 1}


def test_helpsteer2_raw_pairs_ties_and_margin(tmp_path):
    rows = [
        {"prompt": "p", "response": "r1", "helpfulness": 4, "correctness": 4, "coherence": 4, "complexity": 2, "verbosity": 2},  # noqa: E501
        {"prompt": "p", "response": "r2", "helpfulness": 2, "correctness": 3, "coherence": 4, "complexity": 2, "verbosity": 2},  # noqa: E501
        {"prompt": "q", "response": "s1", "helpfulness": 3, "correctness": 3, "coherence": 3, "complexity": 2, "verbosity": 2},  # noqa: E501
        {"prompt": "q", "response": "s2", "helpfulness": 3, "correctness": 1, "coherence": 3, "complexity": 2, "verbosity": 2},  # noqa: E501
    ]
    path = tmp_path / "hs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs, report = _collect(path, "helpsteer2", use_margin=True)
    assert len(pairs) == 1 and pairs[0]["chosen"] == "r1" and pairs[0]["margin"] == 2.0
    assert report.dropped["score_tie"] == 1
    pairs, report = _collect(path, "helpsteer2", score_weights={"helpfulness": 1.0, "correctness": 1.0})
    assert len(pairs) == 2 and report.dropped["score_tie"] == 0


def test_helpsteer2_binarized_strips_repeated_prompt(tmp_path):
    rows = [{"prompt": "What is 2+2?", "chosen": "What is 2+2? 4", "rejected": "What is 2+2? 5"},
            {"prompt": "Name a colour", "chosen": "Blue", "rejected": "Seven"}]
    path = tmp_path / "hsb.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs, report = _collect(path, "helpsteer2-binarized")
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("4", "5"), ("Blue", "Seven")]
    assert report.repaired["prompt_repeated_in_response"] == 2


def test_ranked_csv_all_and_adjacent(tmp_path):
    from tests.conftest import ROOT

    src = ROOT / "data" / "ranked_answers.csv"
    out = tmp_path / "answers_pairs.csv"
    pairs, report = _collect(src, "ranked-csv", pairs_out=str(out))
    assert report.dropped["rank_tie"] == 1  # the one tie in the file
    assert len(pairs) + report.dropped["rank_tie"] == report.total == 6 * 3
    with out.open() as fh:
        written = list(csv.DictReader(fh))
    assert len(written) == len(pairs) and set(written[0]) == {"prompt", "chosen", "rejected"}
    adj, report = _collect(src, "ranked-csv", pairing="adjacent")
    assert len(adj) + report.dropped["rank_tie"] == 6 * 2


def test_grouped_split_has_no_prompt_on_both_sides(hh_small):
    pairs, _ = _collect(hh_small, "hh-rlhf")
    pairs = pairs + [dict(p, chosen=p["chosen"] + " (variant)") for p in pairs[:20]]  # repeated prompts
    train, evals = grouped_split(pairs, 0.2, seed=3)
    assert len(train) + len(evals) == len(pairs) and evals
    assert not {prompt_key(p) for p in train} & {prompt_key(p) for p in evals}
    again = grouped_split(pairs, 0.2, seed=3)
    assert [prompt_key(p) for p in again[1]] == [prompt_key(p) for p in evals]


def test_explicit_eval_split_leak_is_counted(tmp_path):
    train = [{"prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(5)]
    test = [{"prompt": "p0", "chosen": "c", "rejected": "d"}, {"prompt": "new", "chosen": "c", "rejected": "d"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    report = DataReport()
    tr, ev = collect_pairs([DataSource.parse(0, {"path": str(tmp_path / "train.jsonl"),
                                             "eval_split": str(tmp_path / "test.jsonl")})], report)
    assert len(tr) == 5 and len(ev) == 1 and report.dropped["prompt_in_train_and_eval"] == 1


def test_mixture_weights_are_counted(tmp_path):
    rows = [{"prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(10)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = DataReport()
    sources = [DataSource.parse(0, {"path": str(tmp_path / "a.jsonl"), "weight": 0.5}),
               DataSource.parse(1, {"path": str(tmp_path / "a.jsonl"), "weight": 2.0})]
    tr, _ = collect_pairs(sources, report, eval_split_size=0)
    assert len(tr) == 5 + 20 and report.dropped["mixture_weight"] == 5 and report.total == 30


def test_hub_loading_path_uses_load_dataset(tmp_path, monkeypatch):
    """A Hub id goes through datasets.load_dataset with name/split/revision (tested on a local copy)."""
    import datasets

    calls = []
    local = datasets.Dataset.from_list([{"prompt": "p", "chosen": "a", "rejected": "b"}])

    def fake(path, name=None, split=None, revision=None, **kw):
        calls.append((path, name, split, revision))
        return local

    monkeypatch.setattr(datasets, "load_dataset", fake)
    pairs, _ = _collect("org/some-dataset", name="cfg", revision="abc", split="train")
    assert calls == [("org/some-dataset", "cfg", "train", "abc")] and len(pairs) == 1


def test_data_inspect_json(tiny_recipe, tmp_path):
    import subprocess
    import sys

    recipe = tiny_recipe()
    proc = subprocess.run([sys.executable, "-m", "reward.cli", "data", "inspect", str(recipe), "--json",
                           "--max_length", "64"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["kept"] + sum(out["dropped"].values()) == out["total"] == 80
    assert out["truncated"] > 0 and "prompt_token_share" in out


def test_a_jsonl_file_that_begins_with_a_utf8_bom_is_read(hh_small, tmp_path):
    """Editors on Windows save JSON Lines with a byte-order mark: training data and `score` input read it
    (as a CSV with one already was), the same rows as without it."""
    from reward.data import load_rows
    from reward.inference.scorefile import read_scoring_rows

    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + hh_small.read_bytes())
    assert load_rows(DataSource(path=str(bom), format="hh-rlhf")) == load_rows(DataSource(path=str(hh_small),
                                                                                             format="hh-rlhf"))
    (tmp_path / "score.jsonl").write_bytes(b'\xef\xbb\xbf{"prompt": "Hi", "response": "Hello"}\n')
    assert [row for _, row in read_scoring_rows(str(tmp_path / "score.jsonl"))] == [{"prompt": "Hi", "response": "Hello"}]
