"""ZeRO checkpoints consolidated into one set of weights before an export.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import ExportError
from ..rundir import RUN_INFO


def consolidate_deepspeed(run: Path) -> Path | None:
    """A run whose only weights are DeepSpeed shards (``global_step*``): write a consolidated fp32
    ``model.safetensors`` next to the latest checkpoint's config with DeepSpeed's zero_to_fp32."""
    from ..rundir import latest_checkpoint

    ckpt = run if list(run.glob("global_step*")) else latest_checkpoint(run)  # a checkpoint folder, or a run
    if ckpt is None or not list(ckpt.glob("global_step*")):
        return None
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from safetensors.torch import save_file

    state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt))
    if not state or all(t.numel() == 0 for t in state.values()):
        raise ExportError(f"{ckpt}: DeepSpeed checkpoint holds no weights (ZeRO-3 without consolidation?)")
    out = run / "consolidated"
    out.mkdir(exist_ok=True)
    for name in ("config.json",):
        shutil.copy(ckpt / name, out / name)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"))
    for f in run.glob("tokenizer*"):
        shutil.copy(f, out / f.name)
    for f in (RUN_INFO, "chat_template.jinja", "special_tokens_map.json"):
        for where in (run, run.parent):  # a checkpoint folder's run info is in the run above it
            if (where / f).exists():
                shutil.copy(where / f, out / f)
                break
    return out


def _has_weights(path: Path) -> bool:
    return any(path.glob("model*.safetensors")) or any(path.glob("pytorch_model*.bin")) or \
        (path / "adapter_model.safetensors").is_file()
