"""Verification: the export's rewards against the run's own, on held-out pairs or probes.
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path
from typing import Any

from ..errors import ExportError
from ..modeling.heads import keep_quality_head, mean_member_head
from ..modeling.source import parse_dtype
from ..rundir import ENSEMBLE_HEADS, RESOLVED_RECIPE, held_out_reward_stats, is_run_complete
from .deepspeed import _has_weights, consolidate_deepspeed
from .options import ExportOptions, VerifiedExport

logger = logging.getLogger(__name__)
PROBES = [  # used for verification when the run's held-out data cannot be rebuilt
    ("How do I boil an egg?", "Put the egg in boiling water for about nine minutes, then cool it in cold water."),
    ("How do I boil an egg?", "Eggs are oval."),
    ("Can you help me pick a lock to get into my neighbour's house?", "I can't help with getting into someone else's home."),
    ("Can you help me pick a lock to get into my neighbour's house?", "Sure, first get a tension wrench."),
    ("What is 12 times 12?", "144."),
    ("What is 12 times 12?", "It is 124."),
]


HALF_TOLERANCE_STD = 0.25
"""A 16-bit export may move a reward by this many reward standard deviations (of the verified rewards)."""


def default_tolerance(dtype_name: str, reward_std: float) -> float:
    """Max |Δreward| accepted: fp32 must agree to float rounding; a 16-bit export to a fraction of the reward
    spread, which is what a reward's use (ranking, advantages normalised by the std) is sensitive to."""
    return 1e-4 if parse_dtype(dtype_name).itemsize == 4 else HALF_TOLERANCE_STD * reward_std


def compare_rewards(reference: list[float], got: list[float], paired: bool, tolerance: float) -> dict[str, Any]:
    """How the export's rewards differ from the run's: the largest |Δreward|, and with ``paired`` (the
    first half chosen, the second half rejected) the pairs whose order flipped although the run's margin
    exceeds ``tolerance`` (smaller margins are ties at that precision)."""
    worst = max((abs(a - b) for a, b in zip(reference, got)), default=0.0)
    flipped = 0
    if paired:
        n = len(reference) // 2
        for i in range(n):
            ref_margin, margin = reference[i] - reference[n + i], got[i] - got[n + i]
            flipped += int(abs(ref_margin) > tolerance and (ref_margin > 0) != (margin > 0))
    return {"max_abs_diff": worst, "flipped_pairs": flipped, "pairs": len(reference) // 2 if paired else 0}


HELD_OUT = "held-out pairs"


def verification_sequences(run: Path, tokenizer: Any, n: int) -> tuple[list[list[int]], str]:
    """Token sequences (chosen and rejected) of the run's held-out pairs, rebuilt from its recipe;
    the fixed probe pairs when the data cannot be read (e.g. a Hub dataset offline)."""
    resolved = run / RESOLVED_RECIPE
    if resolved.is_file():
        try:
            from ..config.recipe import load_recipe
            from ..data.pipeline import prepare_data
            from ..data.settings import DataSettings

            recipe = load_recipe(resolved)
            data = prepare_data(recipe.sources, tokenizer, DataSettings.from_recipe(recipe))
            ds = data.eval if data.eval is not None else data.train
            ds = ds.select(range(min(n, len(ds))))
            return [list(x) for x in ds["chosen_ids"]] + [list(x) for x in ds["rejected_ids"]], HELD_OUT
        except Exception as exc:  # noqa: BLE001 - verification still runs, on the probes
            logger.warning("could not rebuild the run's held-out pairs (%s); verifying on built-in probes", exc)
    from ..data.formatting import as_messages, encode_pairs

    p_ids, r_ids = encode_pairs(tokenizer, [as_messages(p) for p, _ in PROBES], [[r] for _, r in PROBES])
    return [p + r[0] for p, r in zip(p_ids, r_ids)], "built-in probe pairs"


def _reward_stats(run: Path) -> dict[str, Any]:
    mean, std, metrics = held_out_reward_stats(run)
    return {"reward_mean": mean, "reward_std": std, "metrics": metrics}


def verify_export(run: Path, options: ExportOptions) -> VerifiedExport:
    """The run's model merged (LoRA) and cast to the export dtype, its rewards compared with the run's
    on held-out pairs; an :class:`ExportError` when they differ beyond the tolerance."""
    import torch

    from ..inference.model import RewardModel

    if not run.is_dir():
        raise ExportError(f"{run}: no such run directory")
    if not is_run_complete(run):
        logger.warning("%s has no run_complete.json: exporting what it holds", run)
    weights = run if _has_weights(run) else consolidate_deepspeed(run) or run
    if not _has_weights(weights):
        raise ExportError(f"{run}: no model weights, adapter or DeepSpeed checkpoint to export")
    reference = RewardModel.from_pretrained(str(weights), device="cpu", dtype=torch.float32,
                                            trust_remote_code=options.trust_remote_code)
    seqs, what = verification_sequences(run, reference.tokenizer, options.verify_pairs)
    ref_scores = reference.score_token_ids(seqs)
    model = reference.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()  # LoRA deltas folded in; the trained head is a plain module again
    if reference.info.length_debias == "odin" and keep_quality_head(model):
        logger.info("length_debias odin: exporting the quality head only (verified against the run below)")
    members = mean_member_head(model) if reference.members > 1 else None
    if members is not None:  # the run's reward is the members' mean: so is the one-output export's
        logger.info("ensemble of %d: exporting their mean head, the members in %s", reference.members, ENSEMBLE_HEADS)
    model = model.to(parse_dtype(options.dtype))
    got = RewardModel(model, reference.tokenizer).score_token_ids(seqs)
    stats = _reward_stats(run)
    spread = stats["reward_std"] or statistics.pstdev(ref_scores) or 1.0
    tol = options.tolerance if options.tolerance is not None else default_tolerance(options.dtype, spread)
    check = compare_rewards(ref_scores, got, what == HELD_OUT, tol)
    worst = check["max_abs_diff"]
    logger.info("verify: %d sequences (%s), max |Δreward| %.3g (tolerance %.3g, %s), %d pairs flipped",
                len(seqs), what, worst, tol, options.dtype, check["flipped_pairs"])
    if not worst <= tol or check["flipped_pairs"]:
        raise ExportError(f"exported model's rewards differ from the run's by up to {worst:.4g} (tolerance {tol:.3g}"
                          f" = {tol / spread:.2g} reward std, {options.dtype}, {len(seqs)} {what}) and flip "
                          f"{check['flipped_pairs']} of {check['pairs']} pairs; nothing was written.")
    verification = {"sequences": len(seqs), "on": what, **check, "tolerance": tol, "reward_std": spread,
                    "dtype": options.dtype}
    if members is not None:
        verification["ensemble_members"] = reference.members
    return VerifiedExport(model, reference.tokenizer, stats, verification, reference.info, members)
