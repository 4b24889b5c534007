"""``rewardkit serve``: an HTTP reward server for RLHF loops (FastAPI + uvicorn).

Endpoints:
- ``GET /health`` (no auth): status and model.
- ``GET /metrics``: Prometheus text (``prometheus_client``).
- ``POST /v1/score`` ``{"prompt": str | messages, "responses": [...], "normalize": false}`` →
  ``{"scores": [...], "truncated": [...]}``: what ``rewardkit score`` writes for the same row.
- ``POST /get_reward``: OpenRLHF's remote reward protocol (``--remote_rm_url``, its ``serve_rm.py``):
  ``{"query": [full texts], "prompts": [...], "labels": [...]}`` → ``{"rewards", "scores", "truncated"}``.

What it adds over a plain model-behind-FastAPI (OpenRLHF's server, LLaMA-Factory's ``/v1/score``):
requests that arrive within ``max_wait_ms`` of each other are scored together, packed without padding
into rows of at most ``max_batch_tokens`` tokens, and the responses of one prompt (a GRPO group,
best-of-n samples) compute that prompt once (``RewardModel.score_sequence_groups``). One forward runs
at a time on the device; every result goes back to its own request, in order.

Safe by default: binds 127.0.0.1; with ``REWARDKIT_API_KEY`` set every endpoint but ``/health``
needs ``Authorization: Bearer <key>`` (never logged); a body or a response count over the limits
gets 413, malformed JSON 400, a missing or mistyped field 422 naming it; an error inside one batch
fails that batch's requests with 500 and the server stays up; SIGTERM finishes the requests in
flight and exits 0.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint annotations at runtime.
import asyncio
import hmac
import logging
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from .data.formatting import encode_texts, fit_to_length
from .scoring import RewardModel, ScoringError

logger = logging.getLogger(__name__)
API_KEY_ENV = "REWARDKIT_API_KEY"


@dataclass
class ServeSettings:
    """Server limits and batching; defaults are the CLI's."""

    max_batch_tokens: int = 4096
    """Tokens in one packed row (prompt once + its responses); requests are packed up to this."""
    max_wait_ms: float = 5.0
    """How long the first request of a batch waits for others to join it."""
    max_body_bytes: int = 8 * 2**20
    max_responses: int = 1024
    """Responses (or queries) in one request; more is 413."""
    batching: bool = True
    """False: the naive server of ``bench/serve.py`` (each response alone, padded, one at a time)."""


@dataclass
class _Job:
    groups: list[list[list[int]]]
    future: "asyncio.Future[list[list[float]]]"
    tokens: int
    enqueued: float = field(default_factory=time.perf_counter)


class Metrics:
    """The server's Prometheus metrics, in a registry of its own (several apps in one process stay apart)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("rewardkit_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry)
        self.responses = Counter("rewardkit_responses_scored", "Responses scored", registry=self.registry)
        self.batch_tokens = Histogram("rewardkit_batch_tokens", "Tokens per scored batch", registry=self.registry,
                                      buckets=(64, 256, 1024, 2048, 4096, 8192, 16384, 65536))
        self.batch_requests = Histogram("rewardkit_batch_requests", "Requests per scored batch",
                                        registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.queue_depth = Gauge("rewardkit_queue_depth", "Requests waiting to be scored", registry=self.registry)
        self.latency = Histogram("rewardkit_request_latency_seconds", "Request latency", ["endpoint"],
                                 registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


class Batcher:
    """Collects jobs for ``max_wait_ms`` (or until ``max_batch_tokens``), scores them in one call on a
    worker thread, one batch at a time, and resolves each job's future with its own scores."""

    def __init__(self, rm: RewardModel, settings: ServeSettings, metrics: Metrics):
        self.rm, self.settings, self.metrics = rm, settings, metrics
        self.queue: asyncio.Queue = asyncio.Queue()
        self._carry: _Job | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def score(self, groups: list[list[list[int]]]) -> list[list[float]]:
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(_Job(groups, future, sum(len(s) for g in groups for s in g)))
        self.metrics.queue_depth.inc()
        return await future

    async def _next_batch(self) -> list[_Job]:
        first = self._carry or await self.queue.get()
        self._carry = None
        batch, tokens = [first], first.tokens
        deadline = time.perf_counter() + self.settings.max_wait_ms / 1000
        while self.settings.batching and tokens < self.settings.max_batch_tokens:
            left = deadline - time.perf_counter()
            try:
                job = self.queue.get_nowait() if left <= 0 else await asyncio.wait_for(self.queue.get(), left)
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
            if tokens + job.tokens > self.settings.max_batch_tokens:
                self._carry = job  # opens the next batch
                break
            batch.append(job)
            tokens += job.tokens
        return batch

    def _forward(self, batch: list[_Job]) -> list[list[float]]:
        groups = [g for job in batch for g in job.groups]
        if not self.settings.batching:  # naive: each sequence alone, padded
            return [[self.rm.score_token_ids([s], batch_size=1)[0] for s in g] for g in groups]
        return self.rm.score_sequence_groups(groups, pack_tokens=self.settings.max_batch_tokens)

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            self.metrics.queue_depth.dec(len(batch))
            self.metrics.batch_tokens.observe(sum(j.tokens for j in batch))
            self.metrics.batch_requests.observe(len(batch))
            try:
                scores = await asyncio.to_thread(self._forward, batch)
            except Exception as exc:  # noqa: BLE001 - this batch's requests fail with 500; the server stays up
                logger.exception("scoring a batch of %d requests failed", len(batch))
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            it = iter(scores)
            for job in batch:
                got = [next(it) for _ in job.groups]
                if not job.future.done():  # a client that went away
                    job.future.set_result(got)
                self.metrics.responses.inc(sum(len(g) for g in got))


class Message(BaseModel):
    role: str = Field(pattern="^(system|user|assistant)$")
    content: str


class ScoreRequest(BaseModel):
    """``/v1/score``: one prompt (text or chat messages) and its responses."""

    prompt: str | list[Message] = ""
    responses: list[str] = Field(min_length=1)
    normalize: bool = False


class RewardRequest(BaseModel):
    """``/get_reward``: OpenRLHF's remote reward model request."""

    query: list[str] = Field(min_length=1)
    prompts: list[str] | None = None
    labels: list[Any] | None = None


def _query_groups(tokenizer: Any, queries: Sequence[str], prompts: Sequence[str] | None,
                  max_length: int | None) -> tuple[list[list[int]], list[list[list[int]]], list[bool]]:
    """OpenRLHF's full-text queries → (index groups, token groups, truncated flags). Queries of the same
    prompt (``prompts[i]``, else a shared token prefix) form one group, so the prompt is computed once.

    Each query is scored as given. One over ``max_length`` is cut by the training rule when its prompt
    is known (prompt cut from the left; a response too long alone keeps its first tokens), else from
    the left (the end of a query holds the answer), and flagged."""
    ids = encode_texts(tokenizer, queries)
    truncated = [False] * len(ids)
    long = [i for i, seq in enumerate(ids) if max_length and len(seq) > max_length]
    if long:
        p_lens: dict[int, int] = {}
        if prompts is not None:  # only the over-long queries' prompts are tokenized
            known = [i for i in long if queries[i].startswith(prompts[i])]
            p_lens = dict(zip(known, (len(p) for p in encode_texts(tokenizer, [prompts[i] for i in known]))))
        for i in long:
            seq = ids[i]
            truncated[i] = True
            n = p_lens.get(i)
            if n is not None and 0 < n < len(seq):
                fit = fit_to_length(seq[:n], [seq[n:]], max_length, clip_responses=True)
                ids[i] = fit.prompt + fit.responses[0]
            else:
                ids[i] = seq[len(seq) - max_length:]
    if prompts is not None:
        by_prompt: dict[str, list[int]] = {}
        for i, text in enumerate(prompts):
            by_prompt.setdefault(text, []).append(i)
        index_groups = list(by_prompt.values())
    else:
        index_groups = _prefix_groups(ids)
    return index_groups, [[ids[i] for i in g] for g in index_groups], truncated


def _prefix_groups(ids: list[list[int]]) -> list[list[int]]:
    """Queries sorted by their tokens; a query joins its neighbour's group when they share at least half
    of its tokens (samples of one prompt do; different prompts under one system prompt do not)."""
    from .packing import common_prefix

    order = sorted(range(len(ids)), key=lambda i: ids[i])
    groups: list[list[int]] = []
    shared = 0
    for i in order:
        if groups:
            p = common_prefix([ids[groups[-1][0]], ids[i]])
            if p >= max(8, len(ids[i]) // 2) and (len(groups[-1]) == 1 or p >= shared // 2):
                groups[-1].append(i)
                shared = min(shared, p) if len(groups[-1]) > 2 else p
                continue
        groups.append([i])
        shared = len(ids[i])
    return groups


def create_app(rm: RewardModel, settings: ServeSettings | None = None, api_key: str | None = None) -> Any:
    """The FastAPI application around a loaded model."""
    from contextlib import asynccontextmanager

    settings = settings or ServeSettings()
    metrics = Metrics()
    state: dict[str, Batcher] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202 - FastAPI's lifespan protocol
        state["batcher"] = Batcher(rm, settings, metrics)
        state["batcher"].start()
        yield
        await state["batcher"].stop()

    app = FastAPI(title="rewardkit reward server", lifespan=lifespan, docs_url=None, redoc_url=None)

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise HTTPException(401, "missing or wrong API key (Authorization: Bearer <key>)",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.middleware("http")
    async def request_metrics(request: Request, call_next):  # noqa: ANN001, ANN202 - Starlette's signature
        started = time.perf_counter()
        response = await call_next(request)
        path = request.url.path
        endpoint = path if path in ("/health", "/metrics", "/v1/score", "/get_reward") else "other"
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse({"detail": "malformed JSON body"}, status_code=400)
        detail = [{"field": ".".join(str(x) for x in e.get("loc", ())[1:]) or "body", "error": e.get("msg")}
                  for e in errors]
        return JSONResponse({"detail": detail}, status_code=422)

    def check_count(n: int, what: str) -> None:
        if n > settings.max_responses:
            raise HTTPException(413, f"{n} {what} in one request; the limit is {settings.max_responses}")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": rm.source, "max_length": rm.max_length, "device": str(rm.device)}

    @app.get("/metrics", dependencies=[Depends(authorize)])
    async def prometheus() -> PlainTextResponse:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/score", dependencies=[Depends(authorize)])
    async def score(req: ScoreRequest) -> dict[str, Any]:
        check_count(len(req.responses), "responses")
        try:
            norm = rm.normalizer(req.normalize)
        except ScoringError as exc:
            raise HTTPException(400, str(exc)) from None
        prompt = req.prompt if isinstance(req.prompt, str) else [m.model_dump() for m in req.prompt]
        encoded = await asyncio.to_thread(rm.encode, [prompt], [req.responses])
        scores = await _score(encoded.groups)
        return {"scores": [norm(x) for x in scores[0]], "truncated": encoded.truncated[0]}

    @app.post("/get_reward", dependencies=[Depends(authorize)])
    async def get_reward(req: RewardRequest) -> dict[str, Any]:
        check_count(len(req.query), "queries")
        if req.prompts is not None and len(req.prompts) != len(req.query):
            raise HTTPException(422, f"prompts has {len(req.prompts)} items, query {len(req.query)}: one prompt a query")
        index_groups, groups, truncated = await asyncio.to_thread(_query_groups, rm.tokenizer, req.query, req.prompts,
                                                                  rm.max_length)
        got = await _score(groups)
        rewards = [0.0] * len(req.query)
        for idx, values in zip(index_groups, got):
            for i, v in zip(idx, values):
                rewards[i] = v
        return {"rewards": rewards, "scores": rewards, "truncated": truncated}

    async def _score(groups: list[list[list[int]]]) -> list[list[float]]:
        try:
            return await state["batcher"].score(groups)
        except Exception as exc:  # noqa: BLE001 - reported as one line, the server stays up
            raise HTTPException(500, f"scoring failed: {type(exc).__name__}: {str(exc)[:300]}") from None

    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 before anything parses it, whether
    it declares a Content-Length or arrives chunked (uvicorn has no body limit of its own)."""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        too_big = declared.isdigit() and int(declared) > self.limit  # refused without reading it
        body, more = b"", not too_big
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False) and len(body) <= self.limit
        if too_big or len(body) > self.limit:
            response = JSONResponse({"detail": f"request body over {self.limit} bytes"}, status_code=413)
            return await response(scope, receive, send)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def serve(model: str, host: str = "127.0.0.1", port: int = 8000, device: str | None = None,
          dtype: str | None = None, trust_remote_code: bool = False, settings: ServeSettings | None = None,
          max_length: int | None = None) -> int:
    """Load the model once and serve until SIGTERM / Ctrl-C (requests in flight finish first)."""
    import uvicorn

    rm = RewardModel.from_pretrained(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                                     max_length=max_length)
    api_key = os.environ.get(API_KEY_ENV) or None
    if host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        logger.warning("serving on %s without %s: anyone who reaches this port can use the model", host, API_KEY_ENV)
    app = create_app(rm, settings, api_key)
    print(f"serving {model} on http://{host}:{port} (auth: {'on' if api_key else 'off'})", flush=True)
    # uvicorn handles SIGTERM / Ctrl-C itself (stop accepting, finish the requests in flight), then
    # raises the signal again for the handler it found: a no-op one makes a requested stop exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=10)
    return 0
