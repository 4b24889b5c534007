"""GPU checks: skipped cleanly without CUDA; with one, the fp16 single-GPU run must reload exactly
and score the same prompt-shared as padded."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_single_gpu_fp16_trains_and_reloads(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "gpu" / "run_all.py"), "--only", "single_gpu_fp16",
                           "--steps", "10", "--out", str(out)], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    row = json.loads(out.read_text())[0]
    assert not row["nan"] and row["max_abs_reward_diff"] <= 2e-2 * max(1.0, row["reward_scale"])
    # bf16 prompt-shared scoring must pass its own check against padded scoring (no silent fallback)
    assert row["packed_scoring_kept"] and row["packed_vs_padded_max_diff"] <= 0.1 * max(1.0, row["reward_scale"])
