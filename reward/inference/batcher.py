"""Requests gathered into batches across clients, and the server's counters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from .batches import Encoded
from .model import RewardModel

logger = logging.getLogger(__name__)


@dataclass
class _Job:
    groups: list[list[list[int]]]
    prompts: list[tuple[int, ...]]
    """Each group's prompt ids: groups of one prompt from different requests are scored as one."""
    future: asyncio.Future[list[list[float]]]
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

    async def score(self, encoded: Encoded) -> list[list[list[float]]]:
        future = asyncio.get_running_loop().create_future()
        groups = encoded.groups
        self.queue.put_nowait(_Job(groups, [tuple(p) for p in encoded.prompts], future,
                                   sum(len(s) for g in groups for s in g)))
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

    def _forward(self, batch: list[_Job]) -> list[list[list[float]]]:
        """Each sequence's member rewards (one value for a plain model), per group of each job in order."""
        groups = [g for job in batch for g in job.groups]
        if not self.settings.batching:  # naive: each sequence alone, padded
            return [[self.rm.score_token_ids([s], batch_size=1, members=True)[0] for s in g] for g in groups]
        # one group per prompt across the batch's requests: OpenRLHF sends each sample of a prompt alone
        merged: dict[tuple[int, ...], list[tuple[int, int]]] = {}
        flat = [(prompt, g) for job in batch for prompt, g in zip(job.prompts, job.groups)]
        for n, (prompt, g) in enumerate(flat):
            merged.setdefault(prompt, []).extend((n, j) for j in range(len(g)))
        slots = list(merged.values())
        scores = self.rm.score_sequence_groups([[flat[n][1][j] for n, j in slot] for slot in slots],
                                               pack_tokens=self.settings.max_batch_tokens, members=True)
        out: list[list[Any]] = [[None] * len(g) for _, g in flat]
        for slot, values in zip(slots, scores):
            for (n, j), v in zip(slot, values):
                out[n][j] = v
        return out

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
    uncertainty_penalty: float = 0.0
    """An ensemble's λ: ``/get_reward``'s ``rewards`` and ``/classify`` give mean − λ·std."""
    worst_case: bool = False
    """An ensemble's ``/get_reward`` ``rewards`` and ``/classify`` give the members' minimum."""
