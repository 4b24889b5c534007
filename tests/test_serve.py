"""``rewardkit serve`` as users run it: a real server process, a real HTTP client, the tiny model."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.launcher import ROOT, free_port

httpx = pytest.importorskip("httpx")
KEY = "test-secret-key-0123"
HEADERS = {"Authorization": f"Bearer {KEY}"}
PROMPTS = ["How do I boil an egg?", "What is the capital of France?", "Tell me a joke about cats.",
           "Explain photosynthesis briefly.", "Write a haiku about rain."]
ANSWERS = ["Boil it for nine minutes.", "Paris.", "No.", "Plants turn light into sugar using chlorophyll.",
           "Rain on the roof / a soft drum in the dark night / the garden drinks deep", "I do not know.",
           "Here is a long answer " * 12]


class Server:
    def __init__(self, model: Path, tmp: Path, *extra: str, key: str | None = KEY):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
        env.pop("REWARDKIT_API_KEY", None)
        if key:
            env["REWARDKIT_API_KEY"] = key
        self.log = tmp / f"server-{self.port}.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "reward.cli", "serve", str(model), "--port", str(self.port),
                                      "--device", "cpu", *extra], stdout=self.log.open("w"), stderr=subprocess.STDOUT,
                                     env=env, cwd=ROOT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.5)
        self.stop()
        raise AssertionError(f"server did not come up: {self.log.read_text()[-3000:]}")

    def post(self, path: str, body, **kw):
        return httpx.post(self.url + path, json=body, headers=kw.pop("headers", HEADERS), timeout=120, **kw)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    srv = Server(tiny_model_dir, tmp_path_factory.mktemp("serve"), "--max_length", "64", "--max_responses", "64",
                 "--max_body_bytes", "200000", "--max_wait_ms", "20")
    yield srv
    srv.stop()
    assert KEY not in srv.log.read_text()  # the key is never logged


@pytest.fixture(scope="module")
def rm(tiny_model_dir):
    from reward.inference import RewardModel

    return RewardModel.from_pretrained(str(tiny_model_dir), device="cpu", max_length=64)


def test_v1_score_equals_rewardkit_score(server, rm, tmp_path):
    from reward.inference import score_jsonl

    rows = [{"prompt": PROMPTS[0], "responses": ANSWERS},
            {"prompt": [{"role": "user", "content": "Name a fruit"}, {"role": "assistant", "content": "Apple"},
                        {"role": "user", "content": "Another?"}], "responses": ["Banana", "Car", "A pear, ripe."]}]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    score_jsonl(rm, str(src), str(out))
    expected = [json.loads(x)["scores"] for x in out.read_text().splitlines()]
    for row, want in zip(rows, expected):
        r = server.post("/v1/score", {"prompt": row["prompt"], "responses": row["responses"]})
        assert r.status_code == 200, r.text
        assert r.json()["scores"] == pytest.approx(want, abs=1e-4)
    # the long answer is over max_length 64 with its prompt: scored by the same rule, and flagged
    flags = server.post("/v1/score", {"prompt": PROMPTS[0], "responses": ANSWERS}).json()["truncated"]
    assert flags == [False] * 6 + [True]


def test_200_concurrent_requests_get_the_serial_numbers(server, rm):
    bodies = [{"prompt": PROMPTS[i % len(PROMPTS)], "responses": ANSWERS[(i % 3):(i % 3) + 1 + i % 4]}
              for i in range(200)]
    want = {}  # each distinct body scored serially, one response at a time
    for b in bodies:
        key = json.dumps(b)
        if key not in want:
            want[key] = [rm.score(b["prompt"], r) for r in b["responses"]]

    async def go():
        async with httpx.AsyncClient(timeout=300, headers=HEADERS) as client:
            return await asyncio.gather(*[client.post(server.url + "/v1/score", json=b) for b in bodies])

    answers = asyncio.run(go())
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200][:3]
    for b, a in zip(bodies, answers):  # every answer is its own request's, in order
        assert a.json()["scores"] == pytest.approx(want[json.dumps(b)], abs=1e-4)
    metrics = httpx.get(server.url + "/metrics", headers=HEADERS).text
    batches = [x for x in metrics.splitlines() if x.startswith("rewardkit_batch_requests_count")]
    assert batches and float(batches[0].split()[-1]) < 200  # requests were batched together


def test_get_reward_openrlhf_protocol(server, rm):
    """Full texts in OpenRLHF's form; the replay of its exact request construction is tests/test_rl_clients.py."""
    from reward.data import as_messages, render_texts

    tok = rm.tokenizer
    queries, prompts, want = [], [], []
    for p in PROMPTS[:2]:
        for a in ANSWERS[:4] + ["Sure.", "Maybe later.", "Yes, certainly, here it is.", "Fine."]:  # 8 samples
            ptxt, rtxt = render_texts(tok, as_messages(p), a)
            queries.append(ptxt + rtxt)
            prompts.append(ptxt)
            want.append(rm.score(p, a))
    nulls = {"query": queries, "prompts": [None] * len(queries), "labels": None}  # no prompt per sample: as absent
    for body in ({"query": queries, "prompts": prompts, "labels": [None] * len(queries)}, {"query": queries}, nulls):
        r = server.post("/get_reward", body)
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["rewards"] == pytest.approx(want, abs=1e-4) and got["scores"] == got["rewards"]
        assert got["truncated"] == [False] * len(queries) and got["extra_logs"] == {"truncated": [0.0] * len(queries)}
    # a query over max_length (64 here) with its prompt known: prompt cut from the left, as `score` cuts it
    ptxt, rtxt = render_texts(tok, as_messages(PROMPTS[0] + " Please explain in detail." * 8), "Fine, thanks.")
    r = server.post("/get_reward", {"query": [ptxt + rtxt], "prompts": [ptxt]}).json()
    want = rm.score(PROMPTS[0] + " Please explain in detail." * 8, "Fine, thanks.")
    assert r["truncated"] == [True] and r["rewards"][0] == pytest.approx(want, abs=1e-4)
    # a second --remote_rm_url server's share of a one-sample batch
    empty = server.post("/get_reward", {"query": [], "prompts": [], "labels": []})
    assert empty.status_code == 200 and empty.json() == {"rewards": [], "scores": [], "extra_logs": {"truncated": []},
                                                         "truncated": []}


@pytest.mark.parametrize("body, status, field", [
    (b'{"prompt": "x", "responses": [', 400, None),
    ({"prompt": "x"}, 422, "responses"),
    ({"prompt": "x", "responses": "not a list"}, 422, "responses"),
    ({"prompt": "x", "responses": [1, 2]}, 422, "responses.0"),
    ({"prompt": [{"role": "wizard", "content": "x"}], "responses": ["a"]}, 422, "prompt"),
    ({"prompt": "x", "responses": []}, 422, "responses"),
    ({"prompt": "x", "responses": ["a"] * 65}, 413, None),
    ({"prompt": "x" * 300000, "responses": ["a"]}, 413, None),
])
def test_bad_input_is_a_4xx_naming_the_field(server, body, status, field):
    if isinstance(body, bytes):
        r = httpx.post(server.url + "/v1/score", content=body, headers={**HEADERS, "content-type": "application/json"})
    else:
        r = server.post("/v1/score", body)
    assert r.status_code == status, r.text
    if field:
        assert any(d["field"].startswith(field) for d in r.json()["detail"]), r.json()
    assert httpx.get(server.url + "/health").status_code == 200  # still up


def test_a_chunked_body_over_the_limit_is_413(server):
    """No Content-Length to check: the limit holds on the bytes that arrive."""
    def chunks():
        yield b'{"prompt": "'
        for _ in range(30):
            yield b"x" * 10000
        yield b'", "responses": ["a"]}'

    r = httpx.post(server.url + "/v1/score", content=chunks(), headers={**HEADERS, "content-type": "application/json"})
    assert r.status_code == 413 and "request body over" in r.text
    small = server.post("/v1/score", {"prompt": "x", "responses": ["a"]})
    assert small.status_code == 200  # a body under the limit still reaches the endpoint whole


def test_get_reward_bad_input(server):
    assert server.post("/get_reward", {"query": "not a list"}).status_code == 422
    r = server.post("/get_reward", {"query": ["a", "b"], "prompts": ["a"]})
    assert r.status_code == 422 and "prompts" in r.text


def test_auth(server):
    assert httpx.get(server.url + "/health").status_code == 200  # no auth on health
    body = {"prompt": "x", "responses": ["a"]}
    assert server.post("/v1/score", body, headers={}).status_code == 401
    assert server.post("/v1/score", body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert server.post("/get_reward", {"query": ["a"]}, headers={}).status_code == 401
    assert httpx.get(server.url + "/metrics").status_code == 401
    assert server.post("/v1/score", body).status_code == 200


def test_binds_localhost_by_default():
    from reward.cli import build_parser

    ns = build_parser().parse_args(["serve", "some/model"])
    assert ns.host == "127.0.0.1"


def test_an_error_in_one_batch_fails_only_that_batch(tiny_model_dir):
    """An exception inside scoring: that request gets 500 with one line, the next is served."""
    from fastapi.testclient import TestClient

    from reward.inference import RewardModel, create_app

    rm = RewardModel.from_pretrained(str(tiny_model_dir), device="cpu")
    real = rm.score_sequence_groups

    def flaky(groups, **kw):
        if any(len(s) > 200 for g in groups for s in g):
            raise RuntimeError("boom")
        return real(groups, **kw)

    rm.score_sequence_groups = flaky
    with TestClient(create_app(rm)) as client:
        bad = client.post("/v1/score", json={"prompt": "x", "responses": ["word " * 300]})
        assert bad.status_code == 500 and "boom" in bad.json()["detail"]
        good = client.post("/v1/score", json={"prompt": "x", "responses": ["fine"]})
        assert good.status_code == 200 and len(good.json()["scores"]) == 1


def test_sigterm_finishes_in_flight_requests_and_exits_0(tiny_model_dir, tmp_path):
    srv = Server(tiny_model_dir, tmp_path, "--max_wait_ms", "300", key=None)
    try:
        async def go():
            async with httpx.AsyncClient(timeout=60) as client:
                tasks = [asyncio.create_task(client.post(srv.url + "/v1/score",
                                                         json={"prompt": PROMPTS[i % 5], "responses": ANSWERS}))
                         for i in range(8)]
                await asyncio.sleep(0.1)  # the requests are in the server's batch window
                started = time.monotonic()
                srv.proc.send_signal(signal.SIGTERM)
                answers = await asyncio.gather(*tasks)
                return answers, started

        answers, started = asyncio.run(go())
        assert [a.status_code for a in answers] == [200] * 8
        assert srv.proc.wait(timeout=15) == 0
        assert time.monotonic() - started < 15
    finally:
        srv.stop()
