"""The README's and the docs' commands name files that exist and parse, their example inputs are valid
inputs, the README stays short, and the documentation site builds with no warning."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PRODUCED = ("runs/", "exports/", "scored.jsonl", "demo_out")  # written by an earlier command of the README


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def readme_commands() -> list[list[str]]:
    """Every ``rewardkit ...`` line of a bash block in the README and the docs' pages."""
    text = "\n".join(p.read_text() for p in DOCS)
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("rewardkit "):
                commands.append(shlex.split(line))
    return commands


def test_readme_commands_name_files_that_exist():
    commands = readme_commands()
    assert len(commands) >= 6
    missing = []
    for cmd in commands:
        for arg in cmd[1:]:
            looks_like_file = not arg.startswith("-") and re.search(r"\.(ya?ml|jsonl|txt|csv|gz)$", arg)
            if looks_like_file and not arg.startswith(("../", *PRODUCED)) and not (ROOT / arg).exists():
                missing.append((" ".join(cmd), arg))
    assert not missing, missing


def test_readme_example_inputs_score(tiny_model_dir, tmp_path):
    """`rewardkit score MODEL examples/prompts_and_responses.jsonl` as the README writes it."""
    score = next(c for c in readme_commands() if c[1] == "score")
    out = tmp_path / "scored.jsonl"
    proc = subprocess.run([sys.executable, "-m", "reward.cli", "score", str(tiny_model_dir), score[3], "--out", str(out),
                           "--no_progress"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 3 and len(rows[0]["scores"]) == 3
    from reward.inference import RewardModel

    rm = RewardModel.from_pretrained(str(tiny_model_dir), device="cpu")
    inputs = [json.loads(x) for x in (ROOT / score[3]).read_text().splitlines() if x.strip()]
    for row, got in zip(inputs, rows):  # what `score` wrote is the reward of that (prompt, response)
        responses = row["responses"] if "responses" in row else [row["response"]]
        written = got["scores"] if "responses" in row else [got["score"]]
        assert written == pytest.approx([rm.score(row.get("prompt"), r) for r in responses], abs=1e-4)
    prompts = (ROOT / next(c for c in readme_commands() if c[1] == "demo")[5]).read_text().splitlines()
    assert len([p for p in prompts if p.strip()]) == 3


def test_readme_commands_parse_with_the_current_cli():
    """Every `rewardkit ...` line of the README is accepted by the CLI's parser as written (flags and
    arguments): a renamed or removed option fails here, not in a new user's first minute."""
    from reward.cli import build_parser

    parser = build_parser()
    for cmd in readme_commands():
        ns, rest = parser.parse_known_args(cmd[1:])
        assert not rest or getattr(ns, "allow_rest", False), (" ".join(cmd), rest)


def test_readme_is_short_and_its_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    links = [t for t in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text) if not t.startswith("http")]
    assert links and not [t for t in links if not (ROOT / t).exists()], links


def test_docs_site_builds_strict(tmp_path):
    """`mkdocs build --strict` (mkdocs-material, mkdocs.yml): a broken link or a page missing from the
    site fails here."""
    import os

    if importlib.util.find_spec("mkdocs") is None and not os.environ.get("CI"):
        pytest.skip("mkdocs is part of the dev extra")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "site" / "architectures" / "index.html").is_file()
