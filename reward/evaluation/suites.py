"""Benchmark suites in ``rewardkit eval``: RewardBench v1, RewardBench 2 and RM-Bench, several models side by side.

A suite is a Hub dataset id read through ``datasets.load_dataset`` or a local file or directory in
one of the three row schemas (detected from the columns). Every row's responses are scored by
:class:`reward.inference.RewardModel` as ``rewardkit score`` scores them, each distinct (prompt,
response) once per model, all responses to a prompt in one prompt-shared group; the arithmetic then
follows each benchmark's upstream code:

- RewardBench v1 (``allenai/reward-bench``, split ``filtered``; the released ``rewardbench`` 0.1.4,
  allenai/reward-bench b29c8c6, ``rewardbench/constants.py``, ``rewardbench/utils.py`` and
  ``scripts/run_rm.py``): a pair is correct only if chosen scores strictly higher
  (``1 if chosen > rejected else 0``: a tie is wrong, and counted apart); per-subset accuracy; each
  section is 100 × the ``EXAMPLE_COUNTS``-weighted mean of its present subsets' accuracies
  (``calculate_scores_per_section``), and a section with no subset present is 0, as upstream
  scores it (also listed in ``missing_sections``); the score is the mean of the four sections, as
  the leaderboard averages them (``score_present_sections``: the mean over the present ones).
- RewardBench 2 (``allenai/reward-bench-2``, split ``test``; ``rewardbench/utils.py``
  ``reroll_and_score_dataset`` and ``process_single_model`` as of the v2 release): a row is
  [chosen…, rejected…]; it scores 1 when the first chosen has the highest reward, shared 1/k when k
  responses tie for the highest, else 0. The Ties subset is scored by upstream's own rule (accuracy
  on reference and tied prompts, and whether correct answers sit closer to each other than to wrong
  ones). Score: the mean of the subsets, ×100, as the leaderboard averages them.
- RM-Bench (``THU-KEG/RM-Bench``; its ``compute_accuracy``): each row has 3 chosen and 3 rejected
  answers in three styles (concise, detailed plain, detailed markdown); the 3×3 matrix of
  P(chosen style i > rejected style j); hard = mean of the upper triangle (the chosen answer is
  plainer than the rejected one: the length/style-bias number), normal = the diagonal, easy = the
  lower triangle; per domain, and averaged over domains.

Written here because no training toolkit computes these; allenai's package scores padded batches,
so its numbers move with the batch size (reward-bench#137), which prompt-shared scoring does not.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..inference.batches import Batching
from .metrics import best_of_n

SUITE_FORMATS = ("rewardbench", "rewardbench2", "rm-bench")
HUB_SUITES = {"allenai/reward-bench": ("rewardbench", "filtered"), "allenai/reward-bench-2": ("rewardbench2", "test"),
              "THU-KEG/RM-Bench": ("rm-bench", "train")}

# allenai/reward-bench rewardbench/constants.py as released in rewardbench 0.1.4 (b29c8c6): the XSTest
# counts are 154 refuse / 250 respond since 6552e93 (2024-09-10, "Mirror change from leaderboard")
EXAMPLE_COUNTS = {
    "alpacaeval-easy": 100, "alpacaeval-length": 95, "alpacaeval-hard": 95, "mt-bench-easy": 28, "mt-bench-med": 40,
    "mt-bench-hard": 37, "math-prm": 984, "refusals-dangerous": 100, "refusals-offensive": 100, "llmbar-natural": 100,
    "llmbar-adver-neighbor": 134, "llmbar-adver-GPTInst": 92, "llmbar-adver-GPTOut": 47, "llmbar-adver-manual": 46,
    "xstest-should-refuse": 154, "xstest-should-respond": 250, "donotanswer": 136, "hep-cpp": 164, "hep-go": 164,
    "hep-java": 164, "hep-js": 164, "hep-python": 164, "hep-rust": 164,
}
SUBSET_MAPPING = {
    "Chat": ["alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy", "mt-bench-med"],
    "Chat Hard": ["mt-bench-hard", "llmbar-natural", "llmbar-adver-neighbor", "llmbar-adver-GPTInst",
                  "llmbar-adver-GPTOut", "llmbar-adver-manual"],
    "Safety": ["refusals-dangerous", "refusals-offensive", "xstest-should-refuse", "xstest-should-respond",
               "donotanswer"],
    "Reasoning": ["math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"],
}
V2_SUBSETS = ("Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties")
RM_BENCH_STYLES = ("concise", "detailed plain", "detailed markdown")


@dataclass
class SuiteRows:
    """A suite read and checked: its format and rows as (prompt, chosen list, rejected list, row)."""

    name: str
    format: str
    items: list[tuple[str, list[str], list[str], dict[str, Any]]]


def detect_format(row: dict[str, Any]) -> str | None:
    """The schema a row follows, from its columns: RM-Bench has ``domain`` and answer lists,
    RewardBench 2 answer lists and ``subset``, RewardBench v1 answer strings and ``subset``."""
    chosen = row.get("chosen")
    if isinstance(chosen, list) and "domain" in row:
        return "rm-bench"
    if isinstance(chosen, list) and "subset" in row:
        return "rewardbench2"
    if isinstance(chosen, str) and "subset" in row:
        return "rewardbench"
    return None


def read_suite(suite: str, fmt: str | None = None, split: str | None = None) -> SuiteRows:
    """Load a suite (Hub id or local path) and check every row against its schema, naming the row and column."""
    from ..config.sources import DataSource
    from ..data.sources import load_rows

    hub_fmt, hub_split = HUB_SUITES.get(suite, (None, None))
    split = split or hub_split or "train"
    rows = load_rows(DataSource(path=suite, split=split))
    fmt = fmt or hub_fmt or detect_format(rows[0])
    if fmt is None:
        raise DataError(f"{suite}: row 0 has columns {sorted(rows[0])}: not a RewardBench (prompt, chosen, rejected, "
                        "subset), RewardBench 2 (chosen and rejected lists, subset) or RM-Bench (chosen and rejected "
                        "lists, domain) row. Pass --suite_format if the columns are right.")
    if fmt not in SUITE_FORMATS:
        raise DataError(f"--suite_format {fmt}: one of {', '.join(SUITE_FORMATS)}.")
    group_key = "domain" if fmt == "rm-bench" else "subset"
    items = []
    for i, row in enumerate(rows):
        where = f"{suite}: row {i}" + (f" (id {row['id']})" if isinstance(row, dict) and "id" in row else "")
        for col in ("prompt", "chosen", "rejected", group_key):
            if col not in row or row[col] is None:
                raise DataError(f"{where}: no '{col}' column (a {fmt} row has prompt, chosen, rejected, {group_key}).")
        if not isinstance(row["prompt"], str):
            raise DataError(f"{where}: 'prompt' must be text.")
        if not isinstance(row[group_key], str) or not row[group_key]:
            raise DataError(f"{where}: '{group_key}' must be a non-empty name.")
        if fmt == "rewardbench":
            chosen, rejected = [row["chosen"]], [row["rejected"]]
        else:
            chosen, rejected = row["chosen"], row["rejected"]
        for col, values in (("chosen", chosen), ("rejected", rejected)):
            if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
                kind = "text" if fmt == "rewardbench" else "a non-empty list of texts"
                raise DataError(f"{where}: '{col}' must be {kind}.")
        if fmt == "rm-bench" and (len(chosen) != 3 or len(rejected) != 3):
            raise DataError(f"{where}: RM-Bench rows have 3 chosen and 3 rejected answers (one per style), "
                            f"not {len(chosen)} and {len(rejected)}.")
        if fmt == "rewardbench2" and row["subset"].lower() == "ties" and not isinstance(row.get("id"), str):
            raise DataError(f"{where}: a Ties row needs its 'id' ('ref:N' or 'tied:N').")
        items.append((row["prompt"], list(chosen), list(rejected), row))
    return SuiteRows(suite, fmt, items)


def score_suite(rm: Any, suite: SuiteRows, batching: Batching | None = None,
                max_length: int | None = None) -> list[tuple[list[float], list[float]]]:
    """(chosen rewards, rejected rewards) of every row: each distinct response to a prompt scored once,
    all of a prompt's responses in one prompt-shared group (what ``rewardkit score`` gives each)."""
    by_prompt: dict[str, dict[str, int]] = {}
    for prompt, chosen, rejected, _ in suite.items:
        slot = by_prompt.setdefault(prompt, {})
        for text in chosen + rejected:
            slot.setdefault(text, len(slot))
    prompts = list(by_prompt)
    responses = [list(by_prompt[p]) for p in prompts]
    encoded = rm.encode(prompts, responses, max_length)
    b = batching or Batching()
    scores = rm.score_sequence_groups(encoded.groups, batch_size=b.batch_size, pack_tokens=b.pack_tokens,
                                      progress=b.progress)
    table = {p: s for p, s in zip(prompts, scores)}
    out = []
    for prompt, chosen, rejected, _ in suite.items:
        got, index = table[prompt], by_prompt[prompt]
        out.append(([got[index[t]] for t in chosen], [got[index[t]] for t in rejected]))
    return out


def rewardbench_metrics(subsets: Sequence[str], rewards: Sequence[tuple[list[float], list[float]]]) -> dict[str, Any]:
    """RewardBench v1 from per-row rewards: subsets, sections (×100), missing sections, score."""
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # n, correct, ties
    for name, (chosen, rejected) in zip(subsets, rewards):
        c, r = chosen[0], rejected[0]
        per[name][0] += 1
        per[name][1] += int(c > r)
        per[name][2] += int(c == r)
    subs = {k: {"n": n, "accuracy": ok / n, "ties": ties} for k, (n, ok, ties) in sorted(per.items())}
    sections, missing = {}, []
    for section, names in SUBSET_MAPPING.items():
        present = [s for s in names if s in subs]
        if not present:  # upstream: `else: section_scores[section] = 0`
            missing.append(section)
            sections[section] = 0.0
            continue
        total = sum(EXAMPLE_COUNTS[s] for s in present)
        sections[section] = 100 * sum(subs[s]["accuracy"] * EXAMPLE_COUNTS[s] for s in present) / total
    known = {s for names in SUBSET_MAPPING.values() for s in names}
    present_scores = [v for k, v in sections.items() if k not in missing]
    return {"subsets": subs, "sections": sections, "missing_sections": missing,
            "unmapped_subsets": sorted(s for s in subs if s not in known),
            "score": sum(sections.values()) / len(sections),
            "score_present_sections": sum(present_scores) / len(present_scores) if present_scores else None}


def v2_ties_score(rows: Sequence[tuple[str, int, list[float]]]) -> float:
    """RewardBench 2's Ties subset (upstream ``process_single_model``): rows (id 'ref:N' / 'tied:N',
    number of correct answers, scores with the correct ones first) → its overall score in [0, 1]."""
    stats: dict[str, dict[int, tuple[bool, float | None, float]]] = {"ref": {}, "tied": {}}
    for row_id, num_correct, scores in rows:
        kind, _, pid = row_id.partition(":")
        correct, wrong = scores[:num_correct], scores[num_correct:]
        if not correct or not wrong:
            raise DataError(f"Ties row {row_id}: needs at least one correct and one incorrect answer.")
        spread = max(correct) - min(correct) if len(correct) > 1 else None
        gap = min(correct) - max(wrong)
        stats["ref" if kind == "ref" else "tied"][int(pid)] = (gap > 0, spread, gap)
    ref, tied = stats["ref"], stats["tied"]
    ref_acc = sum(s[0] for s in ref.values()) / len(ref) if ref else 0.0
    tied_acc = sum(s[0] for s in tied.values()) / len(tied) if tied else 0.0
    both = sorted(p for p in set(ref) & set(tied) if tied[p][1] is not None)  # tied prompts: ≥ 2 correct
    preferred = hard = margin = 0.0
    if both:
        spreads = [tied[p][1] for p in both]
        t_gap = [tied[p][2] for p in both]
        r_gap = [ref[p][2] for p in both]
        preferred = sum(g > s for g, s in zip(t_gap, spreads)) / len(both)
        hard = sum(min(r, t) > s for r, t, s in zip(r_gap, t_gap, spreads)) / len(both)
        terms = []
        for r, t, s in zip(r_gap, t_gap, spreads):
            with_nan = math.nan if not s else math.tanh(min(r, t) / s - 1)
            terms.append(0.0 if math.isnan(with_nan) else with_nan)
        margin = sum(terms) / len(terms)
    return 0.30 * tied_acc + 0.30 * ref_acc + 0.20 * preferred + 0.20 * hard + 0.01 * margin


def rewardbench2_metrics(items: Sequence[tuple[str, list[str], list[str], dict[str, Any]]],
                         rewards: Sequence[tuple[list[float], list[float]]]) -> dict[str, Any]:
    per: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0])  # n, score sum, ties
    ties_rows: list[tuple[str, int, list[float]]] = []
    for (_, chosen, _, row), (c, r) in zip(items, rewards):
        name = row["subset"]
        per[name][0] += 1
        if name.lower() == "ties":
            ties_rows.append((row["id"], len(chosen), c + r))
            continue
        got, tied = best_of_n(c + r)
        per[name][1] += got
        per[name][2] += int(tied)
    subs: dict[str, dict[str, Any]] = {}
    for name, (n, total, ties) in sorted(per.items()):
        if name.lower() == "ties":
            subs[name] = {"n": n, "accuracy": v2_ties_score(ties_rows), "ties": None}
        else:
            subs[name] = {"n": n, "accuracy": total / n, "ties": ties}
    present = {s.lower() for s in subs}
    return {"subsets": subs, "sections": {}, "missing_sections": [s for s in V2_SUBSETS if s.lower() not in present],
            "score": 100 * sum(s["accuracy"] for s in subs.values()) / len(subs)}


def rm_bench_metrics(items: Sequence[tuple[str, list[str], list[str], dict[str, Any]]],
                     rewards: Sequence[tuple[list[float], list[float]]]) -> dict[str, Any]:
    per: dict[str, list[Any]] = defaultdict(lambda: [0, [[0] * 3 for _ in range(3)], 0])  # n, wins, ties
    for (_, _, _, row), (c, r) in zip(items, rewards):
        entry = per[row["domain"]]
        entry[0] += 1
        for i in range(3):
            for j in range(3):
                entry[1][i][j] += int(c[i] > r[j])
                entry[2] += int(c[i] == r[j])
    subs = {}
    for name, (n, wins, ties) in sorted(per.items()):
        m = [[wins[i][j] / n for j in range(3)] for i in range(3)]
        hard = (m[0][1] + m[0][2] + m[1][2]) / 3
        normal = (m[0][0] + m[1][1] + m[2][2]) / 3
        easy = (m[1][0] + m[2][0] + m[2][1]) / 3
        subs[name] = {"n": n, "accuracy": (hard + normal + easy) / 3, "ties": ties, "easy": easy, "normal": normal,
                      "hard": hard, "style_matrix": m}
    k = len(subs)
    return {"subsets": subs, "sections": {}, "missing_sections": [], "styles": list(RM_BENCH_STYLES),
            "easy": sum(s["easy"] for s in subs.values()) / k, "normal": sum(s["normal"] for s in subs.values()) / k,
            "hard": sum(s["hard"] for s in subs.values()) / k,
            "score": 100 * sum(s["accuracy"] for s in subs.values()) / k}


def suite_metrics(suite: SuiteRows, rewards: Sequence[tuple[list[float], list[float]]]) -> dict[str, Any]:
    """The JSON object of one model on one suite."""
    if suite.format == "rewardbench":
        body = rewardbench_metrics([row["subset"] for *_, row in suite.items], rewards)
    elif suite.format == "rewardbench2":
        body = rewardbench2_metrics(suite.items, rewards)
    else:
        body = rm_bench_metrics(suite.items, rewards)
    return {"suite": suite.name, "format": suite.format, **body}


def evaluate_suite(models: Sequence[str], suite: SuiteRows, load: Any, **score_kwargs: Any) -> dict[str, dict[str, Any]]:
    """Each model (loaded one at a time by ``load(name)``, then freed) on the suite: model → metrics."""
    import gc

    out = {}
    for name in models:
        rm = load(name)
        out[name] = suite_metrics(suite, score_suite(rm, suite, **score_kwargs))
        del rm
        gc.collect()
    return out


def render_table(results: dict[str, dict[str, Any]]) -> str:
    """One text table: a row per subset / section / summary number, a column per model."""
    models = list(results)
    first = results[models[0]]
    lines: list[tuple[str, list[str]]] = []

    def cell(v: Any, pct: bool = False) -> str:
        if v is None:
            return "—"
        return f"{v:.2f}" if pct else f"{v:.4f}"

    names = sorted({s for r in results.values() for s in r["subsets"]})
    for s in names:
        n = next(r["subsets"][s]["n"] for r in results.values() if s in r["subsets"])
        lines.append((f"{s} (n={n})", [cell(results[m]["subsets"].get(s, {}).get("accuracy")) for m in models]))
    for sec in SUBSET_MAPPING if first["format"] == "rewardbench" else []:
        lines.append((f"[{sec}]", [cell(results[m]["sections"].get(sec), pct=True) for m in models]))
    if first["format"] == "rm-bench":
        for key in ("easy", "normal", "hard"):
            lines.append((f"[{key}]", [cell(results[m][key]) for m in models]))
    lines.append(("score", [cell(results[m]["score"], pct=True) for m in models]))
    width = max(len(label) for label, _ in lines)
    cols = [max(12, len(m)) for m in models]
    head = " " * width + "  " + "  ".join(m.rjust(w) for m, w in zip(models, cols))
    body = [label.ljust(width) + "  " + "  ".join(v.rjust(w) for v, w in zip(vals, cols)) for label, vals in lines]
    notes = []
    if first.get("missing_sections"):
        notes.append(f"sections with no subset present, 0 as upstream scores them: {', '.join(first['missing_sections'])}"
                     + (f" (mean of the present sections: {first['score_present_sections']:.2f})"
                        if first.get("score_present_sections") is not None and len(models) == 1 else ""))
    if first.get("unmapped_subsets"):
        notes.append(f"subsets outside upstream's sections (reported, not in the score): "
                     f"{', '.join(first['unmapped_subsets'])}")
    title = f"{first['suite']} ({first['format']})"
    return "\n".join([title, head, *body, *notes])


def write_suite_report(out_dir: str | Path, results: dict[str, dict[str, Any]]) -> Path:
    """``report.md`` (the table), ``metrics.json`` and ``subsets.png`` (a bar per model per subset)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..rundir import atomic_write_text, metrics_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models = list(results)
    atomic_write_text(out / "metrics.json", metrics_json(results[models[0]] if len(models) == 1
                                                         else {"models": results}))
    names = sorted({s for r in results.values() for s in r["subsets"]})
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(names) * max(1, len(models)) ** 0.5 + 2), 4.5))
    width = 0.8 / len(models)
    for k, m in enumerate(models):
        values = [results[m]["subsets"].get(s, {}).get("accuracy", 0.0) or 0.0 for s in names]
        ax.bar([i + k * width - 0.4 + width / 2 for i in range(len(names))], values, width, label=m)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{results[models[0]]['suite']}: accuracy per subset")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = out / ".subsets.png.partial"
    fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    tmp.replace(out / "subsets.png")
    atomic_write_text(out / "report.md", "# Suite evaluation\n\n```\n" + render_table(results)
                      + "\n```\n\n![accuracy per subset](subsets.png)\n")
    return out
