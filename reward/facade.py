"""Lazy package facades (PEP 562): a subpackage names its public API in a table without importing its
modules, so ``import reward.config`` stays torch-free for the CLI's recipe checks, and each name loads
its module the first time it is used."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_names(package: str, homes: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``homes`` maps each public name to its module (relative),
    a name that is itself a module to that module."""

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = import_module(homes[name], package)
        return module if module.__name__.endswith(f".{name}") else getattr(module, name)

    return __getattr__
