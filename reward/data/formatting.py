"""The one formatting function: (prompt, response) → token ids, for training *and* scoring, and the
one rule for where a reward is read.

**The reading rule.** A reward is read at the token that closes the response's turn (the end-of-turn
token a policy emits and stops at: ``<|im_end|>`` for ChatML models, the EOS without a chat
template) and nowhere else: the scored sequence is ``[lead] prompt rendering + response + turn end``
with nothing after it. Whatever a chat template writes after the turn end (ChatML's ``\n``) is not
scored; ``lead`` (a BOS, or the special token every rendering starts with) appears exactly once.
Training, ``score``, ``eval``, ``serve`` and :class:`reward.inference.RewardModel` all build this
sequence, and every text a client sends is mapped onto it (:func:`split_text`): a text that ends at
the turn end (OpenRLHF decodes the policy's ids), one that ends with the template's trailing
characters (a chat template's rendering), one with no turn end at all (a policy's text decoded
with ``skip_special_tokens=True``), with or without the leading BOS, give the same tokens.

Why the turn end: it is the one token every client form shares, and the one plain ``transformers``
reads when the pad token is not also the end-of-turn token (``reward.export`` makes sure of that).

A prompt is a list of chat messages (``{"role", "content"}``). With a chat template the prompt is
rendered with ``add_generation_prompt=True`` and the response is the rest of the rendered
conversation up to the turn end; without one the prompt is rendered as an HH-style transcript
(``\n\nHuman: …\n\nAssistant:``) and the response is followed by the EOS token. Prompt and
response are tokenized separately and concatenated: the prompt's ids are then an exact prefix of
every response's sequence, which is what prompt sharing (``reward.packing``) needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

Message = dict[str, str]
_PROBE_Q, _PROBE_A = "rewardkit-probe-question", "rewardkit-probe-answer"


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


@dataclass(frozen=True)
class ChatFormat:
    """How a tokenizer frames a conversation, as far as the reading rule needs it (:func:`chat_format`)."""

    templated: bool
    """The tokenizer has a chat template (else the HH transcript rendering)."""
    lead: str
    """Text every prompt rendering starts with exactly once (a BOS), ``""`` if none; a client may strip it."""
    marker: str
    """What ends every prompt rendering, where the response begins (``<|im_start|>assistant\n``)."""
    closing: str
    """What follows a response's content up to and including the turn end (``<|im_end|>``): read here."""
    turn_end: str
    """The end-of-turn token itself (the last token of every scored sequence)."""
    trailing: str
    """What the chat template writes after the turn end (``\n``); never scored."""


def chat_format(tokenizer: Any) -> ChatFormat:
    """The tokenizer's :class:`ChatFormat`, probed once from its chat template (cached on the tokenizer)."""
    key = (getattr(tokenizer, "chat_template", None), tokenizer.bos_token, tokenizer.eos_token)
    cached = getattr(tokenizer, "_rewardkit_chat_format", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    fmt = _probe_format(tokenizer)
    try:
        tokenizer._rewardkit_chat_format = (key, fmt)
    except AttributeError:  # a tokenizer that refuses attributes is probed on every call
        pass
    return fmt


def _adds_bos(tokenizer: Any) -> bool:
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(probe) and probe[0] == bos


def _probe_format(tokenizer: Any) -> ChatFormat:
    eos = tokenizer.eos_token or ""
    adds_bos = _adds_bos(tokenizer)
    if not getattr(tokenizer, "chat_template", None):
        return ChatFormat(False, tokenizer.bos_token if adds_bos else "", "\n\nAssistant:", eos, eos, "")
    user = [{"role": "user", "content": _PROBE_Q}]
    with_gen = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    without = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=False)
    marker = with_gen[len(without):] if with_gen.startswith(without) else ""
    full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": _PROBE_A}], tokenize=False)
    after = full[full.rindex(_PROBE_A) + len(_PROBE_A):] if _PROBE_A in full else eos
    names = _special_tokens(tokenizer)
    specials = [t for t in dict.fromkeys([eos, *names]) if t and t in after]
    if specials:  # the turn end: the first special token after the content
        turn_end = min(specials, key=lambda t: (after.index(t), -len(t)))
        cut = after.index(turn_end) + len(turn_end)
        closing, trailing = after[:cut], after[cut:]
    else:  # a template that closes turns with plain text: the EOS closes the response
        turn_end, closing, trailing = eos, after + eos, ""
    if adds_bos:
        lead = tokenizer.bos_token
    else:
        lead = next((t for t in names if t and with_gen.startswith(t)), "")
    return ChatFormat(True, lead, marker, closing, turn_end, trailing)


def _special_tokens(tokenizer: Any) -> list[str]:
    """The tokenizer's special tokens, named (BOS, EOS, …) or only added as special."""
    added = [t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if getattr(t, "special", False)]
    return list(dict.fromkeys([*getattr(tokenizer, "all_special_tokens", []), *added]))


def scoring_chat_template(tokenizer: Any) -> str | None:
    """The tokenizer's chat template, changed so that a conversation that ends with an assistant turn
    (``add_generation_prompt`` off) renders ending at the turn end, without the trailing characters
    (:attr:`ChatFormat.trailing`): the scored text under the reading rule, for every client that renders
    a reward model's own template (TRL's model-path reward, verl, RewardBench). Every other rendering is
    unchanged. None when there is nothing to change."""
    fmt = chat_format(tokenizer)
    if not fmt.templated or not fmt.trailing:
        return None
    end = fmt.closing + fmt.trailing
    return ("{%- set rewardkit_rendered -%}" + tokenizer.chat_template + "{%- endset -%}"
            "{%- if not (add_generation_prompt is defined and add_generation_prompt) and messages "
            "and messages[-1]['role'] == 'assistant' and rewardkit_rendered.endswith(" + _jinja_str(end) + ") -%}"
            "{{ rewardkit_rendered[:" + str(-len(fmt.trailing)) + "] }}"
            "{%- else -%}{{ rewardkit_rendered }}{%- endif -%}")


def consumer_tokenizer(tokenizer: Any) -> Any:
    """A copy of the tokenizer for an export, so that clients that build their own input read the reward
    where rewardkit does: the :func:`scoring_chat_template`, a pad token that is not the turn end
    (``reward.modeling.set_distinct_pad`` already saw to it), and no ``bos_token`` where the tokenizer
    never adds one but names the template's first token so (SmolLM2 names ``<|im_start|>``): verl strips
    a rendered prompt's leading ``bos_token`` before vLLM scores it, which would cut that token off."""
    import copy

    out = copy.deepcopy(tokenizer)
    template = scoring_chat_template(out)
    if template is not None:
        out.chat_template = template
    fmt = chat_format(tokenizer)
    if fmt.templated and out.bos_token and fmt.lead == out.bos_token and not _adds_bos(out):
        out.bos_token = None
    return out


def _jinja_str(text: str) -> str:
    import json

    return json.dumps(text)  # a JSON string literal is a Jinja string literal


def _with_lead(fmt: ChatFormat, text: str) -> str:
    """``text`` starting with ``fmt.lead`` exactly once."""
    if not fmt.lead:
        return text
    while text.startswith(fmt.lead):
        text = text[len(fmt.lead):]
    return fmt.lead + text


def _closed(fmt: ChatFormat, core: str) -> str:
    """A response's content followed by the turn end (and nothing after it)."""
    if not fmt.templated and not core[:1].isspace():
        core = " " + core  # "Assistant: reply", as the transcripts read
    return core + fmt.closing


def _strip_end(fmt: ChatFormat, text: str) -> str:
    """``text`` without a final turn end and what may follow it (template trailing characters, whitespace)."""
    if fmt.turn_end:
        at = text.rfind(fmt.turn_end)
        if at >= 0 and not text[at + len(fmt.turn_end):].strip():
            head = text[:at]
            done = fmt.closing[:-len(fmt.turn_end)]  # text a template writes between content and turn end
            return head[:len(head) - len(done)] if done and head.endswith(done) else head
    return text


def render_texts(tokenizer: Any, prompt: Sequence[Message], response: str) -> tuple[str, str]:
    """(prompt_text, response_text) whose concatenation is the scored text for this response."""
    fmt = chat_format(tokenizer)
    if not fmt.templated:
        return _with_lead(fmt, render_plain(prompt)), _closed(fmt, response)
    # prompts are optional: no prompt is one empty user turn (a chat template needs a conversation)
    prompt = list(prompt) or [{"role": "user", "content": ""}]
    prompt_text = tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(list(prompt) + [{"role": "assistant", "content": response}], tokenize=False)
    if full.startswith(prompt_text) and full.endswith(fmt.closing + fmt.trailing):
        reply = full[len(prompt_text):len(full) - len(fmt.trailing)]
    else:  # templates that rewrite earlier turns: keep the prompt rendering, close the reply
        reply = _closed(fmt, response)
    return _with_lead(fmt, prompt_text), reply


def split_text(tokenizer: Any, text: str, prompt: str | None = None) -> tuple[str, str, bool]:
    """A client's full text (prompt and response, as a policy produced or a template rendered it) →
    (prompt_text, response_text, framed) under the reading rule, the same pieces :func:`render_texts`
    gives that prompt and response.

    ``prompt``: the client's prompt, when it sends one (OpenRLHF's ``prompts``): a rendered prompt
    (ending at the generation marker) is used as it is; a plain one is rendered as one user turn, as
    training rendered it. Without it the text is split after its last generation marker. ``framed`` is
    False for a text with neither (scored as one response to an empty prompt rendering)."""
    fmt = chat_format(tokenizer)
    if prompt and text.startswith(prompt):
        core = _strip_end(fmt, text[len(prompt):])
        if fmt.marker and prompt.endswith(fmt.marker):  # rendered by a chat template (or as a transcript)
            return _with_lead(fmt, prompt), _closed(fmt, core), True
        ptext, rtext = render_texts(tokenizer, as_messages(prompt), core)
        return ptext, rtext, True
    at = text.rfind(fmt.marker) if fmt.marker else -1
    if at < 0:
        return "", _closed(fmt, _strip_end(fmt, text)), False
    cut = at + len(fmt.marker)
    return _with_lead(fmt, text[:cut]), _closed(fmt, _strip_end(fmt, text[cut:])), True


def _tokenize(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []


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
    return _tokenize(tokenizer, prompt_texts), _regroup(_tokenize(tokenizer, response_texts), counts)


def _regroup(flat: list[Any], counts: Sequence[int]) -> list[list[Any]]:
    out, k = [], 0
    for n in counts:
        out.append(flat[k:k + n])
        k += n
    return out


def encode_texts(tokenizer: Any, texts: Sequence[str], prompts: Sequence[str | None] | None = None
                 ) -> tuple[list[list[int]], list[list[int]], list[bool]]:
    """Clients' full texts (:func:`split_text`) → (prompt ids, response ids, framed), one of each a text."""
    split = [split_text(tokenizer, t, prompts[i] if prompts is not None else None) for i, t in enumerate(texts)]
    return (_tokenize(tokenizer, [s[0] for s in split]), _tokenize(tokenizer, [s[1] for s in split]),
            [s[2] for s in split])


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
    ``max_length - 1`` tokens and its last one (the turn end the reward is read at), with no prompt.
    Returns what was cut rather than counting it anywhere.
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
        kept = responses[0][:max_length - 1] + responses[0][-1:] if max_length > 1 else responses[0][-1:]
        return Fitted([], [kept], len(prompt), 1)
    keep = max_length - longest
    return Fitted(prompt[len(prompt) - keep:], responses, len(prompt) - keep, 0)
