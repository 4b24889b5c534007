"""Evaluation: metrics of rewards (pure), the report, pairs files and benchmark suites.

- :mod:`.metrics`: accuracy and its interval, calibration, length bias.
- :mod:`.report`: plots and tables.
- :mod:`.pairs`: ``rewardkit eval`` on a file of pairs.
- :mod:`.suites`: RewardBench 1/2 and RM-Bench.
"""

from __future__ import annotations

from ..facade import lazy_names

_HOMES = {
    "PairRewards": ".metrics",
    "binomial_p_above_chance": ".metrics",
    "compute_metrics": ".metrics",
    "evaluate_file": ".pairs",
    "expected_calibration_error": ".metrics",
    "read_suite": ".suites",
    "rewardbench2_metrics": ".suites",
    "rewardbench_metrics": ".suites",
    "rm_bench_metrics": ".suites",
    "score_suite": ".suites",
    "suite_metrics": ".suites",
    "summary_lines": ".metrics",
    "v2_ties_score": ".suites",
    "wilson_interval": ".metrics",
    "write_report": ".report",
}
__all__ = sorted(_HOMES)

__getattr__ = lazy_names(__name__, _HOMES)
