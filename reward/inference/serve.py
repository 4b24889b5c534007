"""``rewardkit serve``: an HTTP reward server for RLHF loops (FastAPI + uvicorn).

Endpoints:
- ``GET /health`` (no auth): status and model.
- ``GET /metrics``: Prometheus text (``prometheus_client``).
- ``POST /v1/score`` ``{"prompt": str | messages, "responses": [...], "normalize": false}`` →
  ``{"scores": [...], "truncated": [...]}`` (and an ensemble's ``stds``): what ``rewardkit score`` writes for
  the same row.
- ``POST /get_reward``: OpenRLHF's remote reward protocol (``--remote_rm_url``; its ``serve_rm.py``
  and ``openrlhf/utils/agent.py`` at 3c3be62): ``{"query": [full texts], "prompts": [...], "labels": [...]}``
  → ``{"rewards", "scores", "extra_logs", "truncated"}``; empty lists (a second server's share of one
  sample) get empty lists. For an ensemble ``rewards`` is the conservative reward OpenRLHF trains on
  (mean − λ·std with ``--uncertainty_penalty`` λ, or the minimum with ``--worst_case``), ``scores`` the
  mean, and ``extra_logs.reward_std`` the std, which OpenRLHF logs.
- ``POST /classify``: vLLM's pooling API as verl's reward loop calls it (``{"input": text or texts,
  "use_activation": false}`` → ``{"data": [{"index", "probs": [reward], ...}]}``; an ensemble's reward is
  the conservative one, as ``/get_reward``'s).

Every text is mapped onto the reading rule (``reward.data.formatting``): a query that ends at the
end-of-turn token, one that ends with the chat template's trailing characters, one with no end of
turn, with or without its BOS, gets the reward ``rewardkit score`` gives its (prompt, response).

What it adds over a plain model-behind-FastAPI (OpenRLHF's server, LLaMA-Factory's ``/v1/score``):
requests that arrive within ``max_wait_ms`` of each other are scored together, packed without padding
into rows of at most ``max_batch_tokens`` tokens, and the responses of one prompt (a GRPO group,
best-of-n samples, also when each arrives in a request of its own, as OpenRLHF sends them) compute
that prompt once (``RewardModel.score_sequence_groups``). One forward runs
at a time on the device; every result goes back to its own request, in order.

Safe by default: binds 127.0.0.1; with ``REWARDKIT_API_KEY`` set every endpoint but ``/health``
needs ``Authorization: Bearer <key>`` (never logged); a body or a response count over the limits
gets 413, malformed JSON 400, a missing or mistyped field 422 naming it; an error inside one batch
fails that batch's requests with 500 and the server stays up; SIGTERM finishes the requests in
flight and exits 0.
"""

import asyncio
import hmac
import logging
import math
import os
import signal
import time
import uuid
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from ..errors import ScoringError
from .batcher import Batcher, Metrics, ServeSettings
from .batches import Encoded, ungroup
from .ensemble import RewardStats, summarize
from .model import RewardModel

logger = logging.getLogger(__name__)
API_KEY_ENV = "REWARDKIT_API_KEY"




class Message(BaseModel):
    role: str = Field(pattern="^(system|user|assistant)$")
    content: str


class ScoreRequest(BaseModel):
    """``/v1/score``: one prompt (text or chat messages) and its responses."""

    prompt: str | list[Message] = ""
    responses: list[str] = Field(min_length=1)
    normalize: bool = False


class RewardRequest(BaseModel):
    """``/get_reward``: OpenRLHF's remote reward model request (``prompts`` rendered, plain or absent; a null
    prompt is an absent one, as a client with no prompt for a sample sends it; ``labels`` are not read)."""

    query: list[str]
    prompts: list[str | None] | None = None
    labels: list[Any] | None = None


class ClassifyRequest(BaseModel):
    """``/classify``: vLLM's pooling request as verl sends it (``activation`` is its name before vLLM 0.11.2)."""

    input: str | list[str]
    model: str | None = None
    use_activation: bool | None = None
    activation: bool | None = None


class Scorer:
    """What the endpoints share: the model, the limits and the batcher (started with the app)."""

    def __init__(self, rm: RewardModel, settings: ServeSettings, metrics: Metrics):
        self.rm, self.settings, self.metrics = rm, settings, metrics
        self.batcher: Batcher | None = None

    def check_count(self, n: int, what: str) -> None:
        if n > self.settings.max_responses:
            raise HTTPException(413, f"{n} {what} in one request; the limit is {self.settings.max_responses}")

    async def score(self, encoded: Encoded) -> list[list[list[float]]]:
        """Each sequence's member rewards (one value for a plain model), per group."""
        try:
            return await self.batcher.score(encoded)
        except Exception as exc:  # noqa: BLE001 - reported as one line, the server stays up
            raise HTTPException(500, f"scoring failed: {type(exc).__name__}: {str(exc)[:300]}") from None

    async def score_texts(self, texts: list[str],
                          prompts: list[str | None] | None) -> tuple[list[RewardStats], list[bool]]:
        """Clients' full texts (and prompts) → (each one's reward stats, whether each was cut), in input order."""
        if not texts:
            return [], []
        index, encoded = await asyncio.to_thread(self.rm.encode_texts, texts, prompts)
        got = [[summarize(v) for v in g] for g in await self.score(encoded)]
        return ungroup(index, got, len(texts)), ungroup(index, encoded.truncated, len(texts))

    def reward(self, stats: RewardStats) -> float:
        """The reward an RL loop trains on: an ensemble's conservative reward (the mean for one model)."""
        return stats.reward(self.settings.uncertainty_penalty, self.settings.worst_case)


def create_app(rm: RewardModel, settings: ServeSettings | None = None, api_key: str | None = None) -> Any:
    """The FastAPI application around a loaded model."""
    from contextlib import asynccontextmanager

    scorer = Scorer(rm, settings or ServeSettings(), Metrics())

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202 - FastAPI's lifespan protocol
        scorer.batcher = Batcher(rm, scorer.settings, scorer.metrics)
        scorer.batcher.start()
        yield
        await scorer.batcher.stop()

    app = FastAPI(title="rewardkit reward server", lifespan=lifespan, docs_url=None, redoc_url=None)
    _observe(app, scorer.metrics)
    auth = [Depends(_authorizer(api_key))]
    _add_info_routes(app, scorer, auth)
    _add_scoring_routes(app, scorer, auth)
    app.add_middleware(BodyLimit, limit=scorer.settings.max_body_bytes)
    return app


def _authorizer(api_key: str | None) -> Any:
    """A FastAPI dependency: ``Authorization: Bearer <key>`` when the server has a key."""

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise HTTPException(401, "missing or wrong API key (Authorization: Bearer <key>)",
                                headers={"WWW-Authenticate": "Bearer"})

    return authorize


def _observe(app: FastAPI, metrics: Metrics) -> None:
    """Request counts and latencies per endpoint; validation errors as 400 (bad JSON) or 422 (bad fields)."""

    @app.middleware("http")
    async def request_metrics(request: Request, call_next):  # noqa: ANN001, ANN202 - Starlette's signature
        started = time.perf_counter()
        response = await call_next(request)
        path = request.url.path
        endpoint = path if path in ("/health", "/metrics", "/v1/score", "/get_reward", "/classify") else "other"
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


def _add_info_routes(app: FastAPI, scorer: Scorer, auth: list[Any]) -> None:
    rm = scorer.rm

    @app.get("/health")
    async def health() -> dict[str, Any]:
        ensemble = {"ensemble_members": rm.members, "uncertainty_penalty": scorer.settings.uncertainty_penalty,
                    "worst_case": scorer.settings.worst_case} if rm.members > 1 else {}
        return {"status": "ok", "model": rm.source, "max_length": rm.max_length, "device": str(rm.device), **ensemble}

    @app.get("/metrics", dependencies=auth)
    async def prometheus() -> PlainTextResponse:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return PlainTextResponse(generate_latest(scorer.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _add_scoring_routes(app: FastAPI, scorer: Scorer, auth: list[Any]) -> None:
    rm = scorer.rm

    @app.post("/v1/score", dependencies=auth)
    async def score(req: ScoreRequest) -> dict[str, Any]:
        scorer.check_count(len(req.responses), "responses")
        try:
            norm = rm.normalizer(req.normalize)
        except ScoringError as exc:
            raise HTTPException(400, str(exc)) from None
        prompt = req.prompt if isinstance(req.prompt, str) else [m.model_dump() for m in req.prompt]
        encoded = await asyncio.to_thread(rm.encode, [prompt], [req.responses])
        stats = [summarize(v, norm) for v in (await scorer.score(encoded))[0]]
        out: dict[str, Any] = {"scores": [s.mean for s in stats], "truncated": encoded.truncated[0]}
        if rm.members > 1:
            out["stds"] = [s.std for s in stats]
        return out

    @app.post("/get_reward", dependencies=auth)
    async def get_reward(req: RewardRequest) -> dict[str, Any]:
        scorer.check_count(len(req.query), "queries")
        if req.prompts is not None and len(req.prompts) != len(req.query):
            raise HTTPException(422, f"prompts has {len(req.prompts)} items, query {len(req.query)}: one prompt a query")
        stats, truncated = await scorer.score_texts(req.query, req.prompts)
        # extra_logs: OpenRLHF logs each key (a value per query, as its own serve_rm.py sends them)
        logs = {"truncated": [float(t) for t in truncated]}
        if rm.members > 1:
            logs["reward_std"] = [s.std for s in stats]
        return {"rewards": [scorer.reward(s) for s in stats], "scores": [s.mean for s in stats], "extra_logs": logs,
                "truncated": truncated}

    @app.post("/classify", dependencies=auth)
    async def classify(req: ClassifyRequest) -> dict[str, Any]:
        texts = [req.input] if isinstance(req.input, str) else req.input
        scorer.check_count(len(texts), "inputs")
        stats, _ = await scorer.score_texts(texts, None)
        rewards = [scorer.reward(s) for s in stats]
        activation = next((v for v in (req.use_activation, req.activation) if v is not None), True)
        # vLLM applies the config's activation unless told not to: none for problem_type "regression" (exports)
        if activation and getattr(rm.model.config, "problem_type", None) != "regression":
            rewards = [1.0 / (1.0 + math.exp(-r)) for r in rewards]
        tokens = sum(len(t) for t in texts)  # characters: vLLM counts tokens; nothing here reads it
        return {"id": f"classify-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
                "model": req.model or rm.source,
                "data": [{"index": i, "label": "LABEL_0", "probs": [r], "num_classes": 1} for i, r in enumerate(rewards)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0}}


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


def serve(rm: RewardModel, settings: ServeSettings | None = None, host: str = "127.0.0.1", port: int = 8000) -> int:
    """Serve a loaded model until SIGTERM / Ctrl-C (requests in flight finish first)."""
    import uvicorn

    api_key = os.environ.get(API_KEY_ENV) or None
    if host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        logger.warning("serving on %s without %s: anyone who reaches this port can use the model", host, API_KEY_ENV)
    settings = settings or ServeSettings()
    if rm.members == 1 and (settings.uncertainty_penalty or settings.worst_case):
        logger.warning("--uncertainty_penalty / --worst_case apply to a reward ensemble; %s has one head: its rewards "
                       "are served as they are", rm.source)
    app = create_app(rm, settings, api_key)
    print(f"serving {rm.source or 'the model'} on http://{host}:{port} (auth: {'on' if api_key else 'off'})", flush=True)
    # uvicorn handles SIGTERM / Ctrl-C itself (stop accepting, finish the requests in flight), then
    # raises the signal again for the handler it found: a no-op one makes a requested stop exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=10)
    return 0
