"""Launching multi-process runs from tests: ports that cannot collide, and hangs that fail fast, loud.

Why (a distributed run once hung for 329 s and then failed, in one run of four; not reproduced since):
the rendezvous port came from binding port 0, which hands out a port of the kernel's *ephemeral*
range and releases it. Until the rendezvous store listens on it, the kernel may give that port to
any outgoing connection as its source port: the store's bind then fails on rank 0 while the other
rank waits for it until the static rendezvous times out (600 s by default), or a rank dialling
127.0.0.1:P from source port P connects to itself and waits for a reply that never comes. The likely
cause, removed here: ports come from below the ephemeral range, never handed out as source ports;
the rendezvous and every collective give up after :data:`RENDEZVOUS_TIMEOUT_S`; and should a run
still hang, every process of every launched tree (launcher, torchrun agent, each rank, each in its
own session) gets SIGABRT: with ``PYTHONFAULTHANDLER`` each prints the stack of every thread, and
the test fails showing them.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RENDEZVOUS_TIMEOUT_S = 60
"""A rendezvous or collective that waits longer than this is an error (``--rdzv_conf timeout=…``,
the recipe's ``ddp_timeout``), not a 10- or 30-minute hang."""


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A TCP port free right now and outside the ephemeral range (never some socket's source port)."""
    low, _ = _ephemeral_range()
    candidates = list(range(max(1024, low - 12000), low))
    random.SystemRandom().shuffle(candidates)
    for port in candidates[:200]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port below the ephemeral range")


def launch_env(**extra: str) -> dict[str, str]:
    """The environment of a launched run: this checkout importable, one thread a rank, tracebacks on abort."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               PYTHONFAULTHANDLER="1", **extra)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env




def accelerate_cmd(config: str | Path, port: int, *args: str) -> list[str]:
    """``accelerate launch`` with a rendezvous that gives up after :data:`RENDEZVOUS_TIMEOUT_S`."""
    import sys

    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--main_process_port",
            str(port), "--rdzv_conf", f"timeout={RENDEZVOUS_TIMEOUT_S}", *args]


def run_all(cmds: Sequence[Sequence[str]], env: dict[str, str], timeout: float, cwd: Path = ROOT,
            what: str = "run") -> list[subprocess.CompletedProcess]:
    """Run the commands side by side (one per "machine"); every one must exit 0 within ``timeout`` s.
    A hang is aborted with SIGABRT in every process of every tree and fails the test with each tree's
    stderr tail (the stacks faulthandler printed); a non-zero exit fails it with each one's tracebacks."""
    procs = [subprocess.Popen(list(c), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
                              start_new_session=True) for c in cmds]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        time.sleep(0.5)
    hung = [p for p in procs if p.poll() is None]
    if hung:
        tree = _descendants([p.pid for p in hung])
        for pid in sorted(tree, key=lambda x: -tree[x]) + [p.pid for p in hung]:  # the ranks first, then their agents
            try:
                os.kill(pid, signal.SIGABRT)
            except ProcessLookupError:
                pass
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        outs.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    if hung:
        pytest.fail(f"{what} hung for {timeout:.0f} s; stacks of every process:\n"
                    + "\n".join(f"--- process tree {i} ---\n{o.stderr[-6000:]}" for i, o in enumerate(outs)))
    failed = [(i, o) for i, o in enumerate(outs) if o.returncode != 0]
    if failed:
        pytest.fail(f"{what} failed:\n" + "\n".join(
            f"--- process tree {i} (rc {o.returncode}) ---\n" + "\n".join(
                x for x in o.stderr.splitlines() if any(w in x for w in _FAILURE_WORDS)
            )[-4000:] for i, o in failed))
    return outs


_FAILURE_WORDS = ("Error", "error", "Traceback", 'File "', "terminate", "Signal", "signal", "exitcode", "Fatal",
                  "Segmentation", "Aborted", "core dumped")
"""Lines of a failed tree's stderr worth showing: tracebacks, and how a rank died natively (torchrun's
``exitcode : -6`` / ``Signal 6 (SIGABRT)``, ``terminate called …``, faulthandler's ``Fatal Python error``)."""


def _descendants(roots: list[int]) -> dict[int, int]:
    """Every process below ``roots`` (whatever session it started), with its depth, from /proc."""
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    depth: dict[int, int] = {}
    frontier = [(r, 0) for r in roots]
    while frontier:
        pid, d = frontier.pop()
        for child, ppid in parent.items():
            if ppid == pid and child not in depth:
                depth[child] = d + 1
                frontier.append((child, d + 1))
    return depth
