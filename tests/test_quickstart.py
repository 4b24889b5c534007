"""The real offline path: SmolLM2-135M from the bundled GGUF, trained for a few steps on CPU."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_quickstart_recipe_short(tmp_path):
    out = tmp_path / "qs"
    proc = subprocess.run([sys.executable, "-m", "reward.cli", "train", str(ROOT / "recipes" / "quickstart.yaml"),
                           "--max_steps", "2", "--eval_max_pairs", "16", "--output_dir", str(out),
                           "--cache_dir", str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "held-out accuracy" in proc.stdout
    report = json.loads((out / "data_report.json").read_text())
    assert report["kept"] + sum(report["dropped"].values()) == report["total"] == 900
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForSequenceClassification"] and "quantization_config" not in cfg
