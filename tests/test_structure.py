"""The package's shape, checked: folders follow the data flow, no module imports one downstream of it,
no import cycle, and modules and functions stay small enough to read."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "reward"
# The data flow, upstream first: a module may import its own stage and the stages before it.
STAGES = ["base", "config", "data", "modeling", "packing", "training", "inference", "evaluation", "export", "top"]
BASE = {"errors", "seams", "coercion", "rundir", "facade"}
TOP = {"__init__", "cli", "run"}


def _modules() -> dict[str, Path]:
    """Dotted name (without ``reward.``) → file."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("")
        out[".".join(rel.parts)] = path
    return out


def _stage(module: str) -> str:
    head = module.split(".")[0]
    if head in BASE:
        return "base"
    if head in TOP:
        return "top"
    return head


def _imports(module: str, path: Path) -> set[str]:
    """Modules of the package that ``module`` imports (at any depth of its code)."""
    package = module.split(".")[:-1]  # a facade's own package too: "data.__init__" → data
    found = set()
    known = _modules()
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree)
                   if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test) for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only: not an import at run time
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = ".".join([*base, node.module] if node.module else base)
            elif node.module and node.module.split(".")[0] == "reward":
                target = node.module.partition(".")[2]
            else:
                continue
            names = [f"{target}.{a.name}" if target else a.name for a in node.names]
            hits = [n for n in names if n in known]
            found.update(hits or ([target] if target in known or f"{target}.__init__" in known else []))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("reward."):
                    found.add(a.name.partition(".")[2])
    return {t.removesuffix(".__init__") for t in found if t and t != module}


def test_at_least_five_subpackages_and_at_most_eight_top_level_modules():
    subpackages = [p for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()]
    top = [p for p in PACKAGE.glob("*.py")]
    assert len(subpackages) >= 5, subpackages
    assert len(top) <= 8, sorted(p.name for p in top)
    assert {_stage(m) for m in _modules()} <= set(STAGES), {_stage(m) for m in _modules()} - set(STAGES)


def test_no_module_imports_one_downstream_of_it():
    wrong = []
    for module, path in _modules().items():
        own = STAGES.index(_stage(module))
        for target in _imports(module, path):
            if STAGES.index(_stage(target)) > own:
                wrong.append(f"{module} → {target}")
    assert not wrong, wrong


def test_no_import_cycle():
    graph = {m: {t for t in _imports(m, p)} for m, p in _modules().items()}
    # a package's facade re-exports its modules: an edge into a facade is an edge into the package
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            nxt = nxt if nxt in graph else f"{nxt}.__init__" if f"{nxt}.__init__" in graph else nxt
            if state.get(nxt) == 1 and not nxt.endswith("__init__") and not node.endswith("__init__"):
                cycles.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif state.get(nxt) is None and nxt in graph:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for m in graph:
        if state.get(m) is None:
            visit(m, [m])
    assert not cycles, cycles


def test_modules_and_functions_stay_small():
    long_modules = {m: n for m, p in _modules().items() if (n := len(p.read_text().splitlines())) > 400}
    assert not long_modules, long_modules
    long_functions = []
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                a = node.args
                bound = int(bool(a.args) and a.args[0].arg in ("self", "cls"))
                params = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) - bound
                if lines > 60 or params > 8:
                    long_functions.append(f"{module}.{node.name}: {lines} lines, {params} parameters")
    assert not long_functions, long_functions


def test_facade_names_the_public_api():
    import reward

    assert {"RewardModel", "RewardkitTrainer", "RewardkitConfig", "load_recipe"} <= set(reward.__all__)


def test_packed_attention_is_set_in_one_place():
    calls = [f"{m}:{n.lineno}" for m, p in _modules().items() for n in ast.walk(ast.parse(p.read_text()))
             if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) == "prepare_model"]
    assert len(calls) == 2, calls  # the trainer's __init__ and the scoring loader, nowhere else
