"""A data source as a recipe names it: path, format, columns, split and weight, checked.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from ..coercion import coerce, suggest
from ..errors import DataError, RecipeError

FORMATS = ("pairs", "conversational", "hh-rlhf", "helpsteer2", "helpsteer2-binarized", "ranked-csv", "ranked",
           "qa-feedback", "oasst")
"""The ``format`` names a data source may have; ``reward.data.formats`` registers one adapter under each
(``ranked``, ``ranked-csv``, ``qa-feedback`` and ``oasst`` rank several responses to a prompt)."""


@dataclass
class DataSource:
    """One dataset in a recipe's ``datasets`` list (several are mixed by ``weight``)."""

    path: str
    """Hub dataset id, local file (jsonl/json/csv/parquet, optionally .gz) or local dataset dir."""
    format: str = "pairs"
    """Adapter to the pair format: one of :data:`FORMATS`."""
    split: str = "train"
    name: str | None = None
    """Hub dataset config name."""
    revision: str | None = None
    columns: dict[str, str] | None = None
    """Map rewardkit fields (prompt/chosen/rejected/margin/answer/rank/messages) to source columns."""
    weight: float = 1.0
    """Fraction of the source to use (<1 subsamples, seeded); >1 repeats rows."""
    eval_split: str | None = None
    """A split of the same source to evaluate on; without one, ``eval_split_size`` of the train rows."""
    # helpsteer2 (raw, per-response attribute scores)
    score_weights: dict[str, float] | None = None
    """HelpSteer2: weighted sum of attributes that orders responses (default: helpfulness only)."""
    use_margin: bool = False
    """Add the score (or rank) gap as the Bradley-Terry ``margin`` (helpsteer2, ranked formats)."""
    # ranked formats (ranked, ranked-csv, oasst)
    pairing: str = "all"
    """Ranked formats: every pair of a prompt's ranked responses (``all``), or neighbouring ranks only
    (``adjacent``). How they train, pair by pair or as one group, is the recipe's ``pairing``."""
    pairs_out: str | None = None
    """ranked-csv: also write the generated pairs to this CSV (the original project's answers_pairs.csv)."""

    def __post_init__(self) -> None:
        if not self.path:
            raise DataError("path: required (a Hub dataset id or a local file).")
        if self.format not in FORMATS:
            raise DataError(f"format: unknown format '{self.format}'.{suggest(self.format, FORMATS)} "
                            f"Choose one of: {', '.join(FORMATS)}.")
        if self.pairing not in ("all", "adjacent"):
            raise DataError(f"pairing: '{self.pairing}' is not 'all' or 'adjacent'.")
        if self.weight <= 0:
            raise DataError(f"weight: must be > 0 (got {self.weight}); remove the source to leave it out.")

    @classmethod
    def parse(cls, index: int | str, spec: Any) -> DataSource:
        """One recipe ``datasets`` entry (a mapping, or a bare path string), its values coerced to the
        field types; a bad entry is a :class:`RecipeError` naming ``datasets[index]`` (or ``index`` itself
        when it is a name, as ``eval_datasets.NAME``) and the key."""
        where = f"datasets[{index}]" if isinstance(index, int) else index
        if isinstance(spec, str):
            spec = {"path": spec}
        if not isinstance(spec, dict):
            raise RecipeError(f"{where}: expected a mapping with at least 'path', got {type(spec).__name__}.")
        names = {f.name for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        for key in spec:
            if key not in names:
                raise RecipeError(f"{where}: unknown key '{key}'.{suggest(key, names)} Valid keys: {', '.join(names)}.")
        try:
            return cls(**{key: coerce(f"{where}.{key}", value, hints[key]) for key, value in spec.items()})
        except DataError as exc:
            raise RecipeError(f"{where}.{exc}") from None
        except TypeError:  # no path
            raise RecipeError(f"{where}: 'path' is required (a Hub dataset id or a local file).") from None
