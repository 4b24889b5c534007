"""The reward an RL loop gets is the reward the model learned: each client's exact request construction,
replayed from its source, against a trained tiny run and its export.

Clients and the code each replay is written from:
- OpenRLHF 3c3be62 (2026-08-13): ``openrlhf/datasets/prompts_dataset.py`` ``preprocess_data`` (the prompt,
  rendered with ``add_generation_prompt=True``) and ``openrlhf/utils/agent.py``
  ``SingleTurnAgentExecutor.execute`` / ``_fetch_rewards_via_http`` (one sample per request,
  ``query = decode(prompt_ids + action_ids, skip_special_tokens=False)``, a batch sharded across
  ``--remote_rm_url`` servers, the reward read as ``rewards_info_list[0]["rewards"]``).
- TRL 1.16 ``GRPOTrainer._calculate_rewards`` (model-path reward: the reward tokenizer's chat template
  over prompt + completion, or ``prompt + completion`` for plain strings; right padding; ``logits[:, 0]``).
- verl b178a3c (2026-01-29) ``verl/experimental/reward_loop/reward_loop.py``
  (``_preprocess_reward_inputs``: decode the response, drop the EOS, render the RM's chat template with
  ``add_generation_prompt=False``, strip a leading ``bos_token``; ``compute_score_disrm``: ``POST /classify``,
  ``data[-1].probs[-1]``).
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from tests.test_serve import Server

aiohttp = pytest.importorskip("aiohttp")

PAIRS = [
    ([{"role": "user", "content": "How do I boil an egg?"}], "Put it in boiling water for nine minutes."),
    ([{"role": "user", "content": "Hi"}], "Hello! How can I help?"),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}], "Paris."),
    ([{"role": "user", "content": "Tell me a joke."}, {"role": "assistant", "content": "Why?"},
      {"role": "user", "content": "Go on."}], "Because the cat sat on the keyboard.\n\nThe end."),
]


@pytest.fixture(scope="module")
def run(tiny_run):
    return tiny_run


@pytest.fixture(scope="module")
def export(tiny_export):
    return tiny_export


@pytest.fixture(scope="module")
def rm(export):
    from reward.inference import RewardModel

    return RewardModel.from_pretrained(str(export), device="cpu")


@pytest.fixture(scope="module")
def want(rm):
    """What `rewardkit score` gives each (prompt, response)."""
    return [rm.score(p, r) for p, r in PAIRS]


@pytest.fixture(scope="module")
def policy_tok(tokenizer_dir):
    """The policy's own tokenizer (SmolLM2's, its original chat template): what OpenRLHF and verl decode with."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


def openrlhf_query(tok, messages, reply, apply_chat_template=True) -> tuple[str, str]:
    """(query, prompt) as OpenRLHF builds them for one sample."""
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) if apply_chat_template \
        else messages[-1]["content"]
    prompt_ids = tok(text=prompt, add_special_tokens=False, return_tensors="pt")["input_ids"][0].tolist()
    # vLLM's output token_ids end with the stop token the policy emitted
    action_ids = tok(reply, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return tok.decode(prompt_ids + action_ids, skip_special_tokens=False), prompt


def verl_input(policy_tok, rm_tok, messages, reply) -> str:
    """The text verl's reward loop sends to a vLLM pooling server for one sample."""
    response_ids = policy_tok(reply, add_special_tokens=False)["input_ids"] + [policy_tok.eos_token_id]
    response = policy_tok.decode(response_ids).replace(policy_tok.eos_token, "")
    text = rm_tok.apply_chat_template(list(messages) + [{"role": "assistant", "content": response}],
                                      add_generation_prompt=False, tokenize=False)
    if rm_tok.bos_token is not None and text.startswith(rm_tok.bos_token):
        text = text[len(rm_tok.bos_token):]
    return text


def test_every_form_of_a_text_reads_the_same_reward(rm, want, policy_tok):
    """A text that ends at the end-of-turn token, with the template's trailing characters, with no end of
    turn, with or without its leading BOS, with a plain or a rendered prompt: the reward `score` gives."""
    for (messages, reply), expected in zip(PAIRS, want):
        rendered = policy_tok.apply_chat_template(list(messages) + [{"role": "assistant", "content": reply}],
                                                  tokenize=False)  # the original template: "...<|im_end|>\n"
        assert rendered.endswith("<|im_end|>\n")
        prompt = policy_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        forms = [rendered, rendered.rstrip("\n"), prompt + reply, rendered[len("<|im_start|>"):],
                 "<|im_start|>" + rendered, (prompt + reply)[len("<|im_start|>"):]]
        assert rm.score_texts(forms) == pytest.approx([expected] * len(forms), abs=1e-4)
        # a rendered prompt sent beside its query, and a plain one (OpenRLHF without --apply_chat_template)
        assert rm.score_texts([rendered], [prompt]) == pytest.approx([expected], abs=1e-4)
    single = PAIRS[1]
    plain = rm.score_texts([single[0][0]["content"] + single[1] + "<|im_end|>"], [single[0][0]["content"]])
    assert plain == pytest.approx([want[1]], abs=1e-4)


def test_the_reading_rule_matters_on_this_model(rm, want, policy_tok):
    """The forms above must be able to disagree: scored as given, the template's trailing newline (and a
    text without its end of turn) change the reward."""
    messages, reply = PAIRS[0]
    rendered = policy_tok.apply_chat_template(list(messages) + [{"role": "assistant", "content": reply}], tokenize=False)
    def raw(text: str) -> float:
        return rm.score_token_ids([rm.tokenizer(text, add_special_tokens=False)["input_ids"]])[0]

    as_given, without_end = raw(rendered), raw(rendered[:-len("<|im_end|>\n")])
    assert abs(as_given - want[0]) > 1e-3 and abs(without_end - want[0]) > 1e-3


def _plain(export):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return AutoModelForSequenceClassification.from_pretrained(export).eval(), AutoTokenizer.from_pretrained(export)


@pytest.mark.parametrize("side", ["right", "left"])
def test_plain_transformers_reads_the_template_and_eos_forms_alike(export, want, policy_tok, side):
    """The export alone, as TRL's model-path reward and OpenRLHF's own RM loading use it: its chat template's
    rendering and a text ending at the end-of-turn token, batched or alone, padded on either side."""
    model, tok = _plain(export)
    assert model.config.pad_token_id == tok.pad_token_id != tok.convert_tokens_to_ids("<|im_end|>")
    assert model.config.problem_type == "regression" and isinstance(model.config.mean, float) and model.config.std > 0
    template = [tok.apply_chat_template(list(m) + [{"role": "assistant", "content": r}], tokenize=False) for m, r in PAIRS]
    eos_form = [openrlhf_query(policy_tok, m, r)[0] for m, r in PAIRS]
    for texts in (template, eos_form):
        inputs = tok(texts, return_tensors="pt", padding=True, padding_side=side, add_special_tokens=False)
        with torch.no_grad():
            batched = model(**inputs).logits[:, 0].tolist()
            alone = [model(**tok(t, return_tensors="pt", add_special_tokens=False)).logits[0, 0].item() for t in texts]
        assert batched == pytest.approx(want, abs=1e-4) and alone == pytest.approx(want, abs=1e-4)


def test_trl_model_path_reward_replayed(export, want):
    """TRL's `_calculate_rewards` with the export's path as reward_funcs: conversational prompts give the
    rewardkit reward; plain-string prompts are scored raw (no template, no end of turn) and do not: that is
    what `as_reward_func()` is for (the README measures the gap)."""
    from trl.data_utils import apply_chat_template

    model, tok = _plain(export)
    texts = [apply_chat_template({"messages": list(m) + [{"role": "assistant", "content": r}]}, tok)["text"]
             for m, r in PAIRS]
    inputs = tok(text=texts, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False)
    with torch.inference_mode():
        conversational = model(**inputs).logits[:, 0].tolist()
    assert conversational == pytest.approx(want, abs=1e-4)
    raw = [m[-1]["content"] + r for m, r in PAIRS]
    inputs = tok(text=raw, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False)
    with torch.inference_mode():
        strings = model(**inputs).logits[:, 0].tolist()
    assert max(abs(a - b) for a, b in zip(strings, want)) > 1e-3


def test_reward_func_formats_as_training_did(rm, want):
    """`as_reward_func()`: TRL's call (prompts, completions, **kwargs) in both TRL formats gives `score`'s rewards,
    with a readable name."""
    func = rm.as_reward_func()
    assert func.__name__ == "rewardkit_export"
    completions = [[{"role": "assistant", "content": r}] for _, r in PAIRS]
    conversational = func(prompts=[m for m, _ in PAIRS], completions=completions, completion_ids=None, trainer_state=None)
    assert conversational == pytest.approx(want, abs=1e-4)
    single = [i for i, (m, _) in enumerate(PAIRS) if len(m) == 1]
    strings = func(prompts=[PAIRS[i][0][0]["content"] for i in single], completions=[PAIRS[i][1] for i in single])
    assert strings == pytest.approx([want[i] for i in single], abs=1e-4)


def test_reward_func_computes_each_prompt_once(rm, monkeypatch):
    """A GRPO batch (2 prompts × 4 completions): two groups, the prompt shared inside each."""
    seen = []
    real = rm.score_sequence_groups

    def spy(groups, **kw):
        seen.append([len(g) for g in groups])
        return real(groups, **kw)

    monkeypatch.setattr(rm, "score_sequence_groups", spy)
    prompts = ["How do I boil an egg?"] * 4 + ["Hi"] * 4
    completions = ["a", "b", "c", "d"] * 2
    got = rm.as_reward_func()(prompts=prompts, completions=completions)
    assert seen == [[4, 4]]
    assert got == pytest.approx([rm.score(p, c) for p, c in zip(prompts, completions)], abs=1e-4)


async def _openrlhf_fetch(endpoints, queries, prompts, labels):
    """`SingleTurnAgentExecutor._fetch_rewards_via_http`: the batch sharded across the reward servers."""
    batch_size = (len(queries) + len(endpoints) - 1) // len(endpoints)
    timeout = aiohttp.ClientTimeout(total=180)

    async def post(url, data):
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.post(url, json=data, headers={"Authorization": "Bearer test-secret-key-0123"}) as r:
                r.raise_for_status()
                return await r.json()

    tasks = []
    for i, url in enumerate(endpoints):
        start, end = i * batch_size, min((i + 1) * batch_size, len(queries))
        payload = {"query": queries[start:end], "prompts": prompts[start:end], "labels": labels[start:end]}
        tasks.append(asyncio.create_task(post(url, payload)))
    return await asyncio.gather(*tasks)


@pytest.fixture(scope="module")
def server(export, tmp_path_factory):
    srv = Server(export, tmp_path_factory.mktemp("rl-serve"), "--max_wait_ms", "20")
    yield srv
    srv.stop()


def test_openrlhf_one_sample_requests_under_load(server, rm, policy_tok):
    """256 one-sample requests in flight, each sharded over two `--remote_rm_url` servers as OpenRLHF shards
    them (the second gets empty lists): every one answered 200, rewards equal `score`, scored in batches."""
    replies = ["Sure.", "No.", "Here is how: first this, then that.", "I would rather not say.", "Maybe later!",
               "Absolutely, and here is why.", "OK", "Let me think about it for a moment."]
    samples = [(PAIRS[i % len(PAIRS)][0], replies[i % len(replies)] + f" ({i % 32})") for i in range(256)]
    url = server.url + "/get_reward"

    async def go():
        jobs = []
        for messages, reply in samples:
            query, prompt = openrlhf_query(policy_tok, messages, reply)
            jobs.append(_openrlhf_fetch([url, url], [query], [prompt], [""]))
        return await asyncio.gather(*jobs)

    before = _batches(server)
    answers = asyncio.run(go())
    for (first, second), (messages, reply) in zip(answers, samples):
        assert second == {"rewards": [], "scores": [], "extra_logs": {"truncated": []}, "truncated": []}
        assert first["rewards"] == pytest.approx([rm.score(messages, reply)], abs=1e-4)
        assert first["scores"] == first["rewards"]
        for value in first["extra_logs"].values():  # how OpenRLHF's samples_generator logs each key
            torch.tensor([value])
    assert _batches(server) - before < 128  # batched: far fewer forwards than requests


def _batches(server) -> float:
    import httpx

    text = httpx.get(server.url + "/metrics", headers={"Authorization": "Bearer test-secret-key-0123"}).text
    return float(next(x for x in text.splitlines() if x.startswith("rewardkit_batch_requests_count")).split()[-1])


def test_verl_classify_replayed(server, export, run, want, policy_tok, tmp_path):
    """verl's exact request to a vLLM pooling server, answered by `rewardkit serve` with the same number, for
    the export and for the run directory (whose tokenizer names the template's first token as BOS, which
    verl strips)."""
    import httpx
    from transformers import AutoTokenizer

    for target, srv in ((export, server), (run, None)):
        srv = srv or Server(run, tmp_path, "--max_wait_ms", "5")
        try:
            rm_tok = AutoTokenizer.from_pretrained(target)
            for (messages, reply), expected in zip(PAIRS, want):
                body = {"model": str(target), "input": verl_input(policy_tok, rm_tok, messages, reply), "activation": False}
                for key in ("activation", "use_activation"):  # verl's name before vLLM 0.11.2, and after
                    payload = {k: v for k, v in body.items() if k != "activation"} | {key: False}
                    r = httpx.post(srv.url + "/classify", json=payload, timeout=60,
                                   headers={"Authorization": "Bearer test-secret-key-0123"})
                    assert r.status_code == 200, r.text
                    assert r.json()["data"][-1]["probs"][-1] == pytest.approx(expected, abs=1e-4)
        finally:
            if srv is not server:
                srv.stop()
