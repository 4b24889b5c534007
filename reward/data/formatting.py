"""The one formatting function: (prompt, response) → token ids, for training *and* scoring.

Training, evaluation, export verification and ``RewardModel.score`` all call :func:`encode_pairs`,
so what the model was trained on and what it is served cannot drift apart.

A prompt is a list of chat messages (``{"role", "content"}``). With a chat template the prompt is
rendered with ``add_generation_prompt=True`` and the response is the rest of the rendered
conversation; without one the prompt is rendered as an HH-style transcript
(``\\n\\nHuman: …\\n\\nAssistant:``) and the response follows with the EOS token (left out when EOS
doubles as the pad token, because the sequence-classification head reads the last non-pad token).
Prompt and response are tokenized separately and concatenated: the prompt's ids are then an exact
prefix of every response's sequence, which is what prompt sharing (``reward.packing``) needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

Message = dict[str, str]


def as_messages(prompt: str | Sequence[Message] | None) -> list[Message]:
    """A plain-string prompt is one user turn; ``None``/empty is no turn."""
    if prompt is None or prompt == "":
        return []
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


def render_plain(messages: Sequence[Message]) -> str:
    """HH-RLHF transcript rendering for tokenizers without a chat template."""
    parts = []
    for m in messages:
        if m["role"] == "system":
            parts.append(m["content"])
        elif m["role"] == "user":
            parts.append("\n\nHuman: " + m["content"])
        else:
            parts.append("\n\nAssistant: " + m["content"])
    return "".join(parts) + "\n\nAssistant:"


def _bos_prefix(tokenizer: Any) -> list[int]:
    """BOS id if the tokenizer adds one by default (Llama-style), since we tokenize without special tokens."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    return [bos] if probe and probe[0] == bos else []


def render_texts(tokenizer: Any, prompt: Sequence[Message], response: str) -> tuple[str, str]:
    """(prompt_text, response_text) whose concatenation is the model's input for this response."""
    if getattr(tokenizer, "chat_template", None):
        # prompts are optional: no prompt is one empty user turn (a chat template needs a conversation)
        prompt = list(prompt) or [{"role": "user", "content": ""}]
        prompt_text = tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(
            list(prompt) + [{"role": "assistant", "content": response}], tokenize=False
        )
        if full.startswith(prompt_text):
            return prompt_text, full[len(prompt_text):]
        # Templates that rewrite earlier turns: keep the prompt rendering, close the reply with EOS.
        return prompt_text, response + (tokenizer.eos_token or "")
    prompt_text = render_plain(prompt)
    text = response if response[:1].isspace() else " " + response
    if tokenizer.eos_token and tokenizer.eos_token_id != tokenizer.pad_token_id:
        text += tokenizer.eos_token
    return prompt_text, text


def encode_pairs(
    tokenizer: Any, prompts: Sequence[Sequence[Message]], responses: Sequence[Sequence[str]]
) -> tuple[list[list[int]], list[list[list[int]]]]:
    """Tokenize prompts and their responses in batches.

    ``responses[i]`` holds any number of responses to ``prompts[i]``. Returns the prompt ids and, per
    prompt, the ids of each response (without the prompt); ``prompt_ids + response_ids`` is the input.
    """
    prompt_texts: list[str] = []
    response_texts: list[str] = []
    counts = []
    for prompt, resps in zip(prompts, responses):
        counts.append(len(resps))
        p_text = None
        for r in resps:
            p_text, r_text = render_texts(tokenizer, prompt, r)
            response_texts.append(r_text)
        prompt_texts.append(p_text if p_text is not None else render_texts(tokenizer, prompt, "")[0])
    bos = _bos_prefix(tokenizer)
    p_ids = tokenizer(prompt_texts, add_special_tokens=False)["input_ids"] if prompt_texts else []
    r_ids = tokenizer(response_texts, add_special_tokens=False)["input_ids"] if response_texts else []
    p_ids = [bos + ids for ids in p_ids]
    out, k = [], 0
    for n in counts:
        out.append(r_ids[k:k + n])
        k += n
    return p_ids, out


def encode_texts(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Already-formatted full texts (prompt and response, as a policy produced them) as token ids,
    with the BOS the model's formatting adds (:func:`encode_pairs`) unless the text carries it."""
    bos = _bos_prefix(tokenizer)
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
    return [x if not bos or x[:1] == bos else bos + x for x in ids]


class Fitted(NamedTuple):
    """What :func:`fit_to_length` kept, and what it cut."""

    prompt: list[int]
    """The prompt's last tokens (all of them when nothing had to go)."""
    responses: list[list[int]]
    prompt_cut: int
    """Tokens cut from the prompt's left."""
    responses_cut: int
    """Responses longer than the limit on their own, kept to their first tokens (``clip_responses``)."""


def fit_to_length(prompt: Sequence[int], responses: Sequence[Sequence[int]], max_length: int | None,
                  policy: str = "left", clip_responses: bool = False) -> Fitted | None:
    """The one length rule of training and scoring: ``prompt + response`` ≤ ``max_length`` for every response.

    ``left`` cuts the prompt from the left (keeping its last turn and the whole responses); ``drop``
    keeps only what fits as is. A response that cannot fit even alone makes the group dropped (None),
    or, with ``clip_responses`` (scoring: every row gets a score), is kept to its first
    ``max_length`` tokens with no prompt. Returns what was cut rather than counting it anywhere.
    """
    prompt, responses = list(prompt), [list(r) for r in responses]
    longest = max((len(r) for r in responses), default=0)
    if max_length is None or len(prompt) + longest <= max_length:
        return Fitted(prompt, responses, 0, 0)
    if policy == "drop" or (longest > max_length and not clip_responses):
        return None
    clipped = sum(len(r) >= max_length for r in responses) if clip_responses else 0
    if clip_responses and clipped:
        if len(responses) > 1:
            raise ValueError("clip_responses fits one response at a time (each keeps its own share of the prompt)")
        return Fitted([], [responses[0][:max_length]], len(prompt), 1)
    keep = max_length - longest
    return Fitted(prompt[len(prompt) - keep:], responses, len(prompt) - keep, 0)
