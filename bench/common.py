"""What every benchmark script shares: where and how its result table is written, and how it refuses bad input."""

from __future__ import annotations

import json
import platform
import sys
from datetime import date
from pathlib import Path
from typing import NoReturn

RESULTS = Path(__file__).resolve().parent / "results"


def bad_input(message: str) -> NoReturn:
    """One ``error:`` line on stderr and exit 2, as the ``rewardkit`` commands refuse bad input."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def write_result(kind: str, device_name: str, fields: dict, out: str | None = None) -> Path:
    """``fields`` after the date, device and platform, as JSON at ``out`` or at
    ``bench/results/<date>-<kind>-<device>.json`` (``…-2.json``, ``-3``… when a run of the day is there
    already: a rerun never replaces the table a note may cite); written atomically, prints the path."""
    from reward.rundir import atomic_write_text

    today = date.today().isoformat()
    result = {"date": today, "device": device_name, "platform": platform.platform(), **fields}
    path = Path(out) if out else RESULTS / f"{today}-{kind}-{device_name.replace(' ', '_')}.json"
    n = 1
    while out is None and path.exists():
        n += 1
        path = RESULTS / f"{today}-{kind}-{device_name.replace(' ', '_')}-{n}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return path
