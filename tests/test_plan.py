"""The memory planner's arithmetic and verdicts."""

from __future__ import annotations

from dataclasses import replace

import pytest

from reward.config import load_recipe
from reward.training import Layout, Shape, estimate, plan_from_recipe
from tests.conftest import ROOT


def test_param_count_matches_public_sizes():
    qwen15 = Shape(hidden=1536, layers=28, heads=12, kv_heads=2, inter=8960, vocab=151936)
    assert qwen15.params / 1e9 == pytest.approx(1.54, abs=0.03)
    llama8 = Shape(hidden=4096, layers=32, heads=32, kv_heads=8, inter=14336, vocab=128256, tied=False)
    assert llama8.params / 1e9 == pytest.approx(7.5, abs=0.1)  # 8.03B minus the 0.53B LM head


def test_zero_stages_and_levers_shrink_memory():
    s = Shape(hidden=3584, layers=28, heads=28, kv_heads=4, inter=18944, vocab=152064, tied=False)
    base = Layout(gpus=8, zero_stage=0, deepspeed=False, micro_batch_pairs=4, max_length=2048, checkpointing=True)
    z0 = estimate(s, "7b", base, 80)
    z2 = estimate(s, "7b", replace(base, zero_stage=2, deepspeed=True), 80)
    z3 = estimate(s, "7b", replace(base, zero_stage=3, deepspeed=True), 80)
    assert z0.total_gb > z2.total_gb > z3.total_gb
    assert not z0.fits and z3.fits
    no_ckpt = estimate(s, "7b", replace(base, zero_stage=3, deepspeed=True, checkpointing=False), 80)
    assert no_ckpt.parts_gb["activations"] > 5 * z3.parts_gb["activations"]


def test_plan_cli_recipes():
    r = load_recipe(ROOT / "recipes" / "qwen2.5-7b-zero3-full.yaml")
    one = plan_from_recipe(r, "single_gpu_bf16", 1)
    assert not one.fits and one.lever
    eight = plan_from_recipe(r, "zero3", 8)
    assert eight.fits and eight.zero_stage == 3
    assert "total per GPU" in eight.render()


def test_shipped_configs_work_from_any_directory_and_are_packaged(tmp_path):
    """`--accelerate_config NAME` reads the configs shipped inside the package (not the checkout's
    folder), and a built wheel carries them: a non-editable install works from anywhere."""
    import subprocess
    import sys
    import zipfile

    from tests.conftest import ROOT

    proc = subprocess.run([sys.executable, "-m", "reward.cli", "plan", str(ROOT / "recipes" / "quickstart.yaml"),
                           "--accelerate_config", "zero3_cpu"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert "for trying this path" in proc.stdout  # plan says the CPU configs are not for speed
    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheel_dir), str(ROOT)], check=True, capture_output=True, timeout=300)
    names = zipfile.ZipFile(next(wheel_dir.glob("rewardkit-*.whl"))).namelist()
    for config in ("zero3.yaml", "zero3_cpu.yaml", "zero2_cpu.yaml", "single_gpu_bf16.yaml", "multi_cpu.yaml"):
        assert f"reward/accelerate_configs/{config}" in names, config
