"""Reading recipe values: a YAML or command-line value → the annotated type, where the intent is
unambiguous (``1e-5`` written as a string is a number), else a :class:`RecipeError` naming the key;
and the closest valid name for a typo. Used by every argument class (``reward.config.arguments``) and by
``reward.data.sources.DataSource``; and the CLI's bounded number types (:func:`bounded_number`). Imports
nothing heavy."""

from __future__ import annotations

import difflib
import json
import types
import typing
from typing import Any

from .errors import RecipeError


def suggest(key: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def type_args(tp: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return (tp,)


def accepts(tp: Any, kind: type) -> bool:
    for arg in type_args(tp):
        if arg is kind or typing.get_origin(arg) is kind:
            return True
    return False


def coerce(key: str, value: Any, tp: Any, label: str | None = None) -> Any:
    """Convert ``value`` to the annotated type where the intent is unambiguous, else raise.
    ``label`` names the type in messages (default: from ``tp``)."""
    label = label or describe(tp)
    if value is None:
        return None
    allowed = type_args(tp)
    if any(a is Any for a in allowed):
        return value
    enum_like = any(isinstance(a, type) and issubclass(a, str) and a is not str for a in allowed)
    if isinstance(value, bool):
        if accepts(tp, bool) or enum_like:
            return value
        raise RecipeError(f"recipe key '{key}': expected {label}, got a boolean ({value}).")
    if isinstance(value, str):
        return value if accepts(tp, str) or enum_like else _from_text(key, value, tp, label)
    if isinstance(value, (int, float)):
        if isinstance(value, int) and (accepts(tp, int) or accepts(tp, float)):
            return value
        if isinstance(value, float) and accepts(tp, float):
            return value
        if isinstance(value, float) and accepts(tp, int) and value.is_integer():
            return int(value)
        if accepts(tp, str) or enum_like:
            return value
        raise RecipeError(f"recipe key '{key}': expected {label}, got the number {value}.")
    if isinstance(value, list):
        if accepts(tp, list):
            return value
        # never joined into one string: `output_dir: [a, b]` must not train into "a,b"
        raise RecipeError(f"recipe key '{key}': expected {label}, got a list ({value!r}); give one value.")
    if isinstance(value, dict):
        if accepts(tp, dict) or accepts(tp, str):
            return value
        raise RecipeError(f"recipe key '{key}': expected {label}, got a mapping.")
    return value


def describe(tp: Any) -> str:
    names = [getattr(arg, "__name__", str(arg)) for arg in type_args(tp) if arg is not type(None)]
    return " or ".join(names) or str(tp)


def _from_text(key: str, value: str, tp: Any, label: str) -> Any:
    """A string where a bool, number, list or mapping is expected (a command-line value, a quoted YAML one)."""
    text = value.strip()
    if accepts(tp, bool) and text.lower() in ("true", "false", "yes", "no", "1", "0"):
        return text.lower() in ("true", "yes", "1")
    if accepts(tp, int) and not accepts(tp, float):
        try:
            return int(text)
        except ValueError:
            pass
    if accepts(tp, float):
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            integral = accepts(tp, int) and number.is_integer() and "." not in text and "e" not in text.lower()
            return int(number) if integral else number
    if accepts(tp, list):
        return [part.strip() for part in text.split(",") if part.strip()]
    if accepts(tp, dict):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    raise RecipeError(f"recipe key '{key}': expected {label}, got the string {value!r}.")


def bounded_number(kind: type, minimum: float, inclusive: bool = True) -> Any:
    """An argparse type: ``kind`` not below ``minimum`` (argparse then prints one error line, exit 2)."""
    import argparse

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a {kind.__name__}") from None
        if value != value or value < minimum or (not inclusive and value == minimum):
            raise argparse.ArgumentTypeError(f"{text} must be {'at least' if inclusive else 'more than'} {minimum}")
        return value

    return parse
