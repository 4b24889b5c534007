"""Scoring with a trained reward model: ``RewardModel`` and the original ``RewardModelEvaluator``.

Scoring formats text with ``reward.data.formatting`` (the function training used), sorts work by
length so batches carry little padding, runs without gradients (bf16 on GPU, fp32 on CPU) and
passes explicit position ids, so a score is the same alone or in any batch, with left or right
padding. Pairs (``eval``) and a prompt's n responses (``rank``, ``score_jsonl``) go through the
packed forward of ``reward.packing`` instead: the prompt is computed once, no padding, same rewards.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .data.formatting import Message, as_messages, encode_pairs
from .errors import RewardkitError
from .rundir import TRAIN_PROMPTS, atomic_file, held_out_reward_stats

logger = logging.getLogger(__name__)
Prompt = str | Sequence[Message]


class ScoringError(RewardkitError, ValueError):
    """A model cannot score as asked (no reward statistics to normalise with, …)."""


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def load_scoring_model(path_or_id: str, device: Any = None, dtype: Any = None,
                       trust_remote_code: bool = False) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, run info) for a LoRA run directory, a full run / exported directory, or a Hub id.

    A LoRA run is loaded as base + adapter (unmerged), the base read the way training read it
    (``rewardkit_run.json``: Hub id, local dir or GGUF). A model's own code runs only with
    ``trust_remote_code`` or when the run's recipe allowed it.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    from .modeling import check_remote_code, load_tokenizer, remote_code_refused

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    path = Path(path_or_id)
    info = _read_json(path / "rewardkit_run.json") or _read_json(path / "rewardkit.json")
    trust = bool(trust_remote_code or info.get("trust_remote_code"))
    adapter_cfg = path / "adapter_config.json"
    if path.is_dir() and adapter_cfg.is_file():
        model = load_adapter_model(path, info, dtype, trust)
    elif path.exists() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no config.json or adapter_config.json: not a model or run directory "
                                "(an unfinished run? look for run_complete.json).")
    elif not path.exists() and _looks_local(str(path_or_id)):
        raise ScoringError(f"{path_or_id}: no such model or run directory.")
    else:
        check_remote_code(str(path_or_id), trust)
        try:
            model = AutoModelForSequenceClassification.from_pretrained(str(path_or_id), dtype=dtype, trust_remote_code=trust)
        except Exception as exc:  # transformers/safetensors/hub raise many types for missing or damaged weights
            raise (remote_code_refused(str(path_or_id), exc) or _unloadable(str(path_or_id), path, exc)) from None
    tokenizer = load_tokenizer(str(path_or_id), trust_remote_code=trust) \
        if (not path.exists() or (path / "tokenizer_config.json").is_file()) \
        else load_tokenizer(info["model_name_or_path"], info.get("gguf_file"), trust_remote_code=trust)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.to(device=device, dtype=dtype).eval()
    return model, tokenizer, info


def _looks_local(name: str) -> bool:
    """A path, not a Hub id (``org/name``): absolute, relative with ./ or ../, ~, or deeper than org/name."""
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or "\\" in name


def _unloadable(name: str, path: Path, exc: Exception) -> ScoringError:
    """What is missing or damaged, in one line, instead of a loader traceback."""
    if path.is_dir():
        weights = sorted(p.name for p in path.glob("*.safetensors")) + sorted(p.name for p in path.glob("*.bin"))
        if not weights:
            return ScoringError(f"{name}: config.json but no model weights (*.safetensors): an unfinished run or a "
                                "partial copy? A finished run has run_complete.json.")
        return ScoringError(f"{name}: the weights ({', '.join(weights)}) could not be read ({type(exc).__name__}: "
                            f"{str(exc)[:200]}); the file may be truncated or corrupt.")
    return ScoringError(f"{name}: not a local folder, and not loadable as a Hub id ({type(exc).__name__}: "
                        f"{str(exc)[:200]}).")


def load_adapter_model(run: Path, info: dict[str, Any], dtype: Any, trust_remote_code: bool = False) -> Any:
    """Base in 16/32 bits (never 4-bit) as a one-label classifier + the run's adapter and head."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from .modeling import _drop_gguf_quantizer, check_remote_code, resolve_model_path

    adapter = _read_json(run / "adapter_config.json")
    base_id = info.get("model_name_or_path") or adapter.get("base_model_name_or_path")
    if not base_id:
        raise FileNotFoundError(f"{run}: adapter without a base model (no rewardkit_run.json, no base_model_name_or_path)")
    weights = [run / "adapter_model.safetensors", run / "adapter_model.bin"]
    if not any(w.is_file() for w in weights):
        raise FileNotFoundError(f"{run}: adapter_config.json but no adapter_model.safetensors: the adapter is missing.")
    base_path, gguf = resolve_model_path(base_id, info.get("gguf_file"))
    check_remote_code(base_path, trust_remote_code)
    kwargs: dict[str, Any] = {"num_labels": 1, "dtype": dtype if dtype != torch.float16 else torch.float32,
                              "trust_remote_code": trust_remote_code}
    if gguf:
        from transformers import GgufConfig

        kwargs.update(gguf_file=gguf, quantization_config=GgufConfig(gguf_file=gguf, dequantize=True))
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    with suppress_seqcls_warning():
        base = AutoModelForSequenceClassification.from_pretrained(base_path, revision=info.get("model_revision"), **kwargs)
    if gguf:
        _drop_gguf_quantizer(base)
    try:
        return PeftModel.from_pretrained(base, str(run), is_trainable=False)
    except Exception as exc:  # safetensors/peft raise many types for truncated or foreign files
        raise ScoringError(f"{run}: the adapter could not be loaded ({type(exc).__name__}: {exc}); "
                         "it may be corrupted or from another base model.") from exc


class RewardModel:
    """A reward model ready to score: ``RewardModel.from_pretrained(run_dir_or_model)``."""

    def __init__(self, model: Any, tokenizer: Any, max_length: int | None = None, truncation: str = "left",
                 info: dict[str, Any] | None = None, source: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.truncation = truncation
        self.info = info or {}
        self.source = source
        self.responses_cut = 0
        """Responses longer than ``max_length`` on their own, scored on their first tokens (running count)."""
        self._packing_checked_len = 0  # longest sequence whose packed reward was checked against padded
        self._packing_ok: bool | None = None  # False once packed scoring disagreed with padded scoring
        if self.packable():  # prompt-shared scoring uses FlashAttention varlen where it can run
            from .packing import set_packed_attention

            set_packed_attention(model, "auto", self.device, half=next(model.parameters()).element_size() == 2)

    @classmethod
    def from_pretrained(cls, path_or_id: str, device: Any = None, dtype: Any = None,
                        max_length: int | None = None, trust_remote_code: bool = False) -> RewardModel:
        model, tok, info = load_scoring_model(path_or_id, device, dtype, trust_remote_code)
        return cls(model, tok, max_length or info.get("max_length"), info.get("truncation", "left"), info,
                   source=str(path_or_id))

    @functools.cached_property
    def reward_stats(self) -> dict[str, float] | None:
        """Mean and std of this model's rewards on its held-out pairs (an export's ``rewardkit.json``
        or a run's ``metrics.json``): what an RLHF loop uses to normalise rewards. Read once, not on
        every ``score(..., normalize=True)``."""
        mean, std = self.info.get("reward_mean"), self.info.get("reward_std")  # an export's rewardkit.json
        if (mean is None or not std) and self.source:
            mean, std, _ = held_out_reward_stats(self.source)  # a run's metrics.json
        return {"mean": float(mean), "std": float(std)} if mean is not None and std else None

    def _normalizer(self, normalize: bool) -> Any:
        if not normalize:
            return lambda x: x
        stats = self.reward_stats
        if stats is None:
            raise ScoringError(f"{self.source}: no reward mean/std recorded (a rewardkit run with an eval split, "
                             "or its export, has them); score without normalize.")
        return lambda x: (x - stats["mean"]) / stats["std"]

    def trained_prompt_hashes(self) -> set[str] | None:
        """Hashes of the prompts this model trained on (a rewardkit run or export), or None if unknown."""
        path = Path(self.source) / TRAIN_PROMPTS if self.source else None
        if path is None or not path.is_file():
            return None
        return set(json.loads(path.read_text())["prompts"])

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    # -- core -------------------------------------------------------------------------------
    def _fit(self, prompt: list[int], response: list[int], max_length: int | None = None) -> list[int]:
        """The training length policy: cut the prompt from the left; a response alone too long
        for ``max_length`` keeps its first tokens (and is logged), so every row still gets a score."""
        limit = max_length or self.max_length
        if limit is None or len(prompt) + len(response) <= limit:
            return prompt + response
        if len(response) >= limit:
            self.responses_cut += 1  # reported once per call by the caller, not once per row
            return response[:limit]
        return prompt[len(prompt) - (limit - len(response)):] + response

    def score_token_ids(self, sequences: Sequence[Sequence[int]], batch_size: int = 16,
                        progress: bool = False) -> list[float]:
        """Rewards for already-formatted token sequences, batched by length."""
        import torch

        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]), reverse=True)
        out = [0.0] * len(sequences)
        pad = self.tokenizer.pad_token_id
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="scoring", unit="batch")
        with torch.inference_mode():
            for idx in batches:
                seqs = [list(sequences[i]) for i in idx]
                width = max(len(s) for s in seqs)
                ids = torch.full((len(seqs), width), pad, dtype=torch.long)
                mask = torch.zeros((len(seqs), width), dtype=torch.long)
                for row, s in enumerate(seqs):
                    sl = slice(width - len(s), width) if left else slice(0, len(s))
                    ids[row, sl] = torch.tensor(s)
                    mask[row, sl] = 1
                # Explicit positions: left padding must not shift rotary positions.
                pos = (mask.cumsum(-1) - 1).clamp(min=0)
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                    position_ids=pos.to(self.device), use_cache=False).logits
                for i, value in zip(idx, logits[:, 0].float().tolist()):  # one device→host copy a batch
                    out[i] = value
        return out

    def packable(self) -> bool:
        """Whether pairs can be scored prompt-shared (``reward.packing``): a per-token ``score`` head
        and an attention implementation that takes a 4D mask."""
        from .modeling import head_name
        from .packing import SUPPORTED_ATTENTION

        try:
            head = head_name(self.model)
        except ValueError:
            return False
        impl = getattr(self.model.config, "_attn_implementation", None) or "sdpa"
        return head == "score" and impl in SUPPORTED_ATTENTION

    def score_sequence_groups(self, groups: Sequence[Sequence[Sequence[int]]], batch_size: int = 16,
                              pack_tokens: int | None = None, progress: bool = False) -> list[list[float]]:
        """Rewards for groups of already-formatted token sequences (a pair, or n answers to one prompt).

        With ``pack_tokens`` > 0 and a :meth:`packable` model, the tokens a group's sequences start
        with (the prompt, usually) are computed once, and groups are packed without padding into rows
        of at most ``pack_tokens`` tokens (a larger group is split): training's packed forward, here for
        inference. Each reward is what :meth:`score_token_ids` gives that sequence alone: the row that
        holds a call's longest sequence is also scored padded whenever that is longer than any checked
        before, and a model whose attention does not honour the packed mask (a sliding window,
        an unusual architecture) is scored padded from then on, with a warning. Otherwise sequences are
        scored padded, ``batch_size`` at a time.

        ``pack_tokens=None``: 512 on CPU, where SDPA with a dense T×T mask runs a slower kernel than
        plain causal attention and long rows lose (eval with SmolLM2-135M on 2 cores, 300 HH-RLHF
        pairs: 143 s at 512 against 152–170 s padded, 150 s at 256, 175 s at 1024; 120 pairs: 1.44× at
        512, 0.94× at 2048), 4096 on a GPU, where FlexAttention or SDPA's masked kernels take long rows
        (not measured yet)."""
        if pack_tokens is None:
            pack_tokens = 512 if self.device.type == "cpu" else 4096
        if pack_tokens <= 0 or not groups or self._packing_ok is False or not self.packable():
            return self._score_groups_padded(groups, batch_size, progress)
        import torch

        from .modeling import head_name
        from .packing import ScoreCapture, pack_groups, packed_token_rewards

        rows = _pack_rows([[list(s) for s in g] for g in groups], pack_tokens)
        # the row with the longest sequence is the one checked against padded scoring
        check = max(range(len(rows)), key=lambda n: max(len(p) + len(s) for _, _, p, ss in rows[n] for s in ss))
        out: list[list[float]] = [[0.0] * len(g) for g in groups]
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        capture = ScoreCapture(getattr(base, head_name(self.model)))
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(rows), desc="scoring (prompt-shared)", unit="row")
        try:
            with torch.inference_mode():
                for n, row in enumerate(rows):
                    batch = pack_groups([(prefix, suffixes) for _, _, prefix, suffixes in row], self.tokenizer.pad_token_id)
                    logits = packed_token_rewards(self.model, capture, {k: v.to(self.device) if torch.is_tensor(v) else v
                                                                          for k, v in batch.items()})
                    got = iter(logits[batch["reward_index"].to(self.device)].float().tolist())
                    for g, first, _, suffixes in row:
                        for j in range(len(suffixes)):
                            out[g][first + j] = next(got)
                    if n == check and not self._packed_matches_padded(groups, row, out):
                        if bar is not None:
                            bar.close()
                            bar = None
                        return self._score_groups_padded(groups, batch_size, progress)
                    if bar is not None:
                        bar.update(1)
        finally:
            capture.remove()
            if bar is not None:
                bar.close()
        return out

    def _score_groups_padded(self, groups: Sequence[Sequence[Sequence[int]]], batch_size: int,
                             progress: bool) -> list[list[float]]:
        flat = self.score_token_ids([s for g in groups for s in g], batch_size=batch_size, progress=progress)
        it = iter(flat)
        return [[next(it) for _ in g] for g in groups]

    def _packed_matches_padded(self, groups: Sequence[Sequence[Sequence[int]]], row: list[Any],
                               out: list[list[float]]) -> bool:
        """Score one packed row's sequences padded too, unless no longer than those checked before;
        False (and a warning, and padded scoring from now on) if they disagree."""
        import torch

        seqs = [groups[g][first + j] for g, first, _, suffixes in row for j in range(len(suffixes))]
        longest = max(len(s) for s in seqs)
        if longest <= self._packing_checked_len:
            return True
        packed = [out[g][first + j] for g, first, _, suffixes in row for j in range(len(suffixes))]
        padded = self.score_token_ids(seqs, batch_size=len(seqs))
        # fp32 agrees to ~1e-5; bf16 rounds each layer differently in the two layouts
        tol = 1e-3 if next(self.model.parameters()).dtype == torch.float32 else 0.1
        worst = max(abs(a - b) / (1.0 + abs(b)) for a, b in zip(packed, padded))
        if worst <= tol:
            self._packing_checked_len = longest
            return True
        self._packing_ok = False
        logger.warning("prompt-shared scoring differs from padded scoring by %.3g on this model (%s attention): "
                       "scoring padded instead", worst, getattr(self.model.config, "_attn_implementation", "?"))
        return False

    def _sequences(self, prompts: Sequence[Prompt], responses: Sequence[Sequence[str]]) -> list[list[list[int]]]:
        p_ids, r_ids = encode_pairs(self.tokenizer, [as_messages(p) for p in prompts], responses)
        before = self.responses_cut
        out = [[self._fit(p, r) for r in rs] for p, rs in zip(p_ids, r_ids)]
        self._warn_cut(before)
        return out

    def _warn_cut(self, before: int) -> None:
        if self.responses_cut > before:
            logger.warning("%d responses exceed max_length %s on their own: scored on their first tokens",
                           self.responses_cut - before, self.max_length)

    # -- public API ---------------------------------------------------------------------------
    def score(self, prompt: Prompt, response: str, normalize: bool = False) -> float:
        """Reward of one response to a prompt (a string or a list of chat messages).

        ``normalize``: (reward − mean) / std with the held-out statistics in :attr:`reward_stats`."""
        return self.score_batch([(prompt, response)], normalize=normalize)[0]

    def score_batch(self, pairs: Sequence[tuple[Prompt, str]], batch_size: int = 16,
                    progress: bool = False, normalize: bool = False) -> list[float]:
        """Rewards of many (prompt, response) pairs, in input order."""
        norm = self._normalizer(normalize)
        seqs = [s[0] for s in self._sequences([p for p, _ in pairs], [[r] for _, r in pairs])]
        return [norm(x) for x in self.score_token_ids(seqs, batch_size=batch_size, progress=progress)]

    def rank(self, prompt: Prompt, responses: Sequence[str], batch_size: int = 16,
             pack_tokens: int | None = None) -> list[tuple[str, float]]:
        """Responses sorted best first, with their rewards (the prompt computed once: :meth:`score_sequence_groups`)."""
        scores = self.score_sequence_groups(self._sequences([prompt], [list(responses)]), batch_size=batch_size,
                                            pack_tokens=pack_tokens)[0]
        return sorted(zip(responses, scores), key=lambda x: x[1], reverse=True)

    def evaluate_conversation(self, conversation: Sequence[tuple[str, str]]) -> list[float]:
        """Reward of each assistant turn in the context of the turns before it."""
        pairs, history = [], []
        for question, answer in conversation:
            history.append({"role": "user", "content": question})
            pairs.append((list(history), answer))
            history.append({"role": "assistant", "content": answer})
        return self.score_batch(pairs)

    def evaluate_file(self, path: str, fmt: str = "pairs", max_length: int | None = None, batch_size: int = 16,
                      max_pairs: int | None = None, exclude_seen: bool = True, split: str = "train",
                      progress: bool = True, pack_tokens: int | None = None) -> dict[str, Any]:
        """Every pair of a preference file or Hub dataset (any adapter format) → metrics and per-pair rewards.

        With ``exclude_seen`` (the default), pairs whose prompt the model trained on are left out and
        counted as ``prompt_seen_in_training`` — an evaluation on training data looks better than it is.
        Each response is fitted to ``max_length`` as :meth:`score` fits it, so a pair's rewards are
        the ones ``score`` returns; ``pack_tokens`` (0: padded) is :meth:`score_sequence_groups`'.
        """
        from .data.pipeline import collect_pairs, prompt_hash
        from .data.report import DataReport
        from .evaluation import compute_metrics
        from .recipe import parse_source

        report = DataReport()
        pairs, _ = collect_pairs([parse_source(0, {"path": path, "format": fmt, "split": split})], report,
                                 eval_split_size=0.0)
        seen = self.trained_prompt_hashes() if exclude_seen else None
        if seen:
            kept = [p for p in pairs if prompt_hash(p) not in seen]
            report.drop("prompt_seen_in_training", len(pairs) - len(kept))
            pairs = kept
        if not pairs:
            from .data.report import DataError

            raise DataError(f"{path}: no pairs left to evaluate:\n{report.summary()}")
        if max_pairs is not None and len(pairs) > max_pairs:
            report.drop("max_pairs", len(pairs) - max_pairs)
            pairs = pairs[:max_pairs]
        report.kept_eval = len(pairs)
        report.check()
        p_ids, r_ids = encode_pairs(self.tokenizer, [p["prompt"] for p in pairs],
                                    [[p["chosen"], p["rejected"]] for p in pairs])
        limit = max_length or self.max_length
        before = self.responses_cut
        flat = [self._fit(p, r, limit) for p, rs in zip(p_ids, r_ids) for r in rs]
        cut = self.responses_cut - before
        rewards = self.score_sequence_groups(list(zip(flat[0::2], flat[1::2])), batch_size=batch_size,
                                             pack_tokens=pack_tokens, progress=progress)
        chosen, rejected = [r[0] for r in rewards], [r[1] for r in rewards]
        clen = [len(r[0]) for r in r_ids]
        rlen = [len(r[1]) for r in r_ids]
        metrics = compute_metrics(chosen, rejected, clen, rlen)
        summary = report.to_dict()
        return {"metrics": metrics, "chosen": chosen, "rejected": rejected, "chosen_len": clen, "rejected_len": rlen,
                "report": {**{k: summary[k] for k in ("total", "kept", "dropped", "repaired")},
                           "training_prompts_known": seen is not None if exclude_seen else None,
                           "max_length": limit, "responses_cut_to_max_length": cut}}


def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all ``seqs`` share (the prompt, plus any common start of the answers)."""
    n = 0
    for column in zip(*seqs):
        if any(t != column[0] for t in column):
            break
        n += 1
    return n


def _pack_rows(groups: list[list[list[int]]], budget: int) -> list[list[tuple[int, int, list[int], list[list[int]]]]]:
    """Greedy next-fit of groups, longest first, into rows of at most ``budget`` tokens.

    A row holds (group index, index of its first sequence, shared prefix, suffixes); a group whose
    prefix + suffixes exceed the budget is split into parts that each repeat the prefix."""
    parts = []
    for g, seqs in enumerate(groups):
        p = _common_prefix(seqs) if len(seqs) > 1 else 0
        prefix, first, suffixes, cost = seqs[0][:p], 0, [], p
        for j, s in enumerate(seqs):
            if suffixes and cost + len(s) - p > budget:
                parts.append((cost, (g, first, prefix, suffixes)))
                first, suffixes, cost = j, [], p
            suffixes.append(s[p:])
            cost += len(s) - p
        parts.append((cost, (g, first, prefix, suffixes)))
    rows: list[list[Any]] = []
    used = budget  # the first part opens a row
    for cost, part in sorted(parts, key=lambda x: x[0], reverse=True):
        if used + cost > budget:
            rows.append([])
            used = 0
        rows[-1].append(part)
        used += cost
    return rows


class RewardModelEvaluator:
    """The original project's API, kept working on top of :class:`RewardModel`."""

    def __init__(self, model_path: str, device: Any = None):
        self.reward_model = RewardModel.from_pretrained(model_path, device=device)

    def get_reward_score(self, prompt: str, response: str) -> float:
        return self.reward_model.score(prompt, response)

    def compare_responses(self, prompt: str, response_a: str, response_b: str) -> dict[str, Any]:
        a, b = self.reward_model.score_batch([(prompt, response_a), (prompt, response_b)])
        return {"score_a": a, "score_b": b, "preferred": "a" if a > b else "b" if b > a else "tie",
                "margin": a - b}

    def evaluate_conversation(self, conversation: Sequence[tuple[str, str]]) -> list[float]:
        return self.reward_model.evaluate_conversation(conversation)


def _scoring_items(row: Any, line_no: int, input_path: str) -> list[tuple[Prompt, str]]:
    """The (prompt, response) items of one input row, or a DataError naming the line."""
    from .data.report import DataError

    if not isinstance(row, dict):
        raise DataError(f"{input_path}:{line_no}: expected a JSON object, got {type(row).__name__}.")
    prompt = row.get("prompt", "")
    if prompt is None:
        prompt = ""
    if not isinstance(prompt, (str, list)):
        raise DataError(f"{input_path}:{line_no}: 'prompt' must be text or a list of chat messages.")
    if isinstance(prompt, list):
        for j, m in enumerate(prompt):
            if not (isinstance(m, dict) and isinstance(m.get("content"), str)
                    and m.get("role") in ("system", "user", "assistant")):
                raise DataError(f"{input_path}:{line_no}: prompt[{j}]: a chat message needs 'role' (system, user or "
                                "assistant) and text 'content'.")
    if isinstance(row.get("responses"), list):
        if not row["responses"]:
            raise DataError(f"{input_path}:{line_no}: 'responses' is empty.")
        for j, r in enumerate(row["responses"]):
            if not isinstance(r, str):
                raise DataError(f"{input_path}:{line_no}: responses[{j}]: expected text.")
        return [(prompt, r) for r in row["responses"]]
    if isinstance(row.get("response"), str):
        return [(prompt, row["response"])]
    raise DataError(f"{input_path}:{line_no}: neither a text 'response' nor a 'responses' list.")


def check_output_file(path: str) -> None:
    """An output file name that can be written, checked before any model loads."""
    from .data.report import DataError

    out = Path(path)
    if out.is_dir():
        raise DataError(f"--out {path} is a directory; give a file name (e.g. {out / 'scored.jsonl'}).")
    parent = next((p for p in [out.parent, *out.parent.parents] if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise DataError(f"--out {path}: {parent} is a file, not a folder.")


def read_scoring_rows(input_path: str) -> list[tuple[int, dict[str, Any]]]:
    """Every row, checked before any scoring: a bad line fails in seconds, not after hours of work."""
    from .data.report import DataError
    from .data.sources import iter_jsonl

    if not Path(input_path).is_file():
        raise DataError(f"{input_path}: no such input file.")
    rows = []
    for line_no, row in iter_jsonl(input_path):
        _scoring_items(row, line_no, input_path)
        rows.append((line_no, row))
    return rows


def score_jsonl(rm: RewardModel, input_path: str, output_path: str, batch_size: int = 16,
                progress: bool = True, normalize: bool = False, top_k: int | None = None,
                chunk_rows: int = 2048, rows: list[tuple[int, dict[str, Any]]] | None = None,
                pack_tokens: int | None = None) -> int:
    """Add ``score`` to rows with ``prompt``+``response``, or ``scores`` and ``ranking`` (indices, best
    first) to rows with ``prompt``+``responses``; ``top_k`` keeps only the best k responses of each
    row (best-of-n filtering), in rank order. Rows are scored ``chunk_rows`` at a time and streamed
    to a temporary file that is renamed into place once complete: memory stays bounded and a crash
    never leaves a partial file under the output name. ``rows``: :func:`read_scoring_rows` output,
    when the caller checked the file before loading the model. ``pack_tokens``: a row's prompt is
    computed once for all its responses (:meth:`RewardModel.score_sequence_groups`)."""

    if top_k is not None and top_k < 1:
        from .data.report import DataError

        raise DataError(f"top_k must be at least 1 (got {top_k}).")
    rows = read_scoring_rows(input_path) if rows is None else rows
    norm = rm._normalizer(normalize)
    out = Path(output_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(rows), desc="scoring", unit="row")
    try:
        with atomic_file(out) as fh:
            for start in range(0, len(rows), chunk_rows):
                chunk = rows[start:start + chunk_rows]
                items = [_scoring_items(row, n, input_path) for n, row in chunk]
                # one group per row: a row's n responses share its prompt
                groups = rm._sequences([its[0][0] for its in items], [[r for _, r in its] for its in items])
                scores = rm.score_sequence_groups(groups, batch_size=batch_size, pack_tokens=pack_tokens)
                for (_, row), got in zip(chunk, scores):
                    got = [norm(x) for x in got]
                    if "responses" in row and isinstance(row["responses"], list):
                        ranking = sorted(range(len(got)), key=lambda k: got[k], reverse=True)
                        if top_k is not None:
                            row["responses"] = [row["responses"][k] for k in ranking[:top_k]]
                            row["scores"] = [got[k] for k in ranking[:top_k]]
                            row["ranking"] = list(range(len(row["scores"])))
                        else:
                            row["scores"], row["ranking"] = got, ranking
                    else:
                        row["score"] = got[0]
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return len(rows)


def iter_prompts(path: str) -> Iterable[str]:
    """Prompts from a text file (one a line) or jsonl (``prompt`` field)."""
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        if path.endswith((".jsonl", ".json")):
            yield json.loads(line)["prompt"]
        else:
            yield line.strip()
