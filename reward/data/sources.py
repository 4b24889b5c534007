"""Reading a recipe's data source into rows, through ``datasets.load_dataset`` for Hub and local files."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ..config.sources import DataSource
from ..errors import DataError

_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".tsv": "csv"}


def _builder(path: Path) -> str | None:
    suffixes = [s for s in path.suffixes if s not in (".gz", ".bz2", ".xz", ".zst")]
    return _BUILDERS.get(suffixes[-1].lower()) if suffixes else None


def _open_text(path: Path) -> IO[str]:
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(path.suffix.lower(), open)
    return opener(path, "rt", encoding="utf-8-sig")  # type: ignore[operator]  # a leading BOM is read, not refused


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of every non-blank line of a JSON Lines file (compressed or not);
    a line that is not JSON, or text that is not UTF-8, is a DataError naming the line."""
    path = Path(path)
    number = 0
    try:
        with _open_text(path) as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{number}: not valid JSON ({exc.msg}, column {exc.colno}).") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}:{number + 1}: not UTF-8 text (byte {exc.start}); save the file as UTF-8.") from None
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise DataError(f"{path}: cannot be read ({type(exc).__name__}: {exc}); is the file complete?") from None


def check_local_file(path: Path) -> None:
    """Checks ``datasets`` reports badly: an empty file, and for JSON Lines the line number of the
    first line that is not a JSON object (``datasets`` names a byte position)."""
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty.")
    if ".jsonl" not in [s.lower() for s in path.suffixes]:
        return
    rows = 0
    for number, row in iter_jsonl(path):
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}.")
        rows += 1
    if rows == 0:
        raise DataError(f"{path}: the file holds no rows (only blank lines).")


def open_rows(source: DataSource, split: str | None = None) -> Any:
    """One split of a source as a ``datasets.Dataset``: Arrow, memory-mapped, whatever its size.

    ``path`` is a local file (jsonl/json/csv/tsv/parquet, compressed or not), a local dataset
    directory, or a Hub dataset id (``name``/``revision`` apply). For a local file, ``split`` other
    than the source's own ``split`` is read as the path of another file (its eval file).
    """
    from datasets import load_dataset, load_from_disk

    split = split or source.split
    path_str = source.path if split == source.split else split
    path = Path(path_str).expanduser()
    try:
        if path.is_file():
            builder = _builder(path)
            if builder is None:
                raise DataError(f"{path}: unknown file type; use .jsonl, .json, .csv, .tsv or .parquet.")
            check_local_file(path)
            kwargs = {"delimiter": "\t"} if path.suffix == ".tsv" else {}
            ds = load_dataset(builder, data_files={"data": str(path)}, split="data", **kwargs)
        elif path.is_dir() and (path / "dataset_info.json").exists():
            ds = load_from_disk(str(path))
        elif path.is_dir():
            ds = load_dataset(str(path), split=split)
        elif split != source.split and not Path(source.path).exists():
            ds = load_dataset(source.path, name=source.name, split=split, revision=source.revision)
        elif Path(source.path).exists():
            raise DataError(f"eval_split {split!r} of local source {source.path} is not a file.")
        else:
            ds = load_dataset(source.path, name=source.name, split=split, revision=source.revision)
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(f"dataset {path_str!r}: not found ({exc}).") from exc
    except Exception as exc:  # datasets raises many types for offline / missing / bad files
        raise DataError(
            f"dataset {path_str!r} (split {split!r}) could not be loaded: {type(exc).__name__}: "
            f"{(str(exc).strip().splitlines() or [''])[0][:300]}. "
            "A Hub id needs network access (or HF_DATASETS_OFFLINE=1 with a cached copy); a local path must exist."
        ) from exc
    if hasattr(ds, "keys") and not hasattr(ds, "to_list"):  # DatasetDict from load_from_disk
        if split not in ds:
            raise DataError(f"dataset {path_str!r} has splits {list(ds)}, not {split!r}.")
        ds = ds[split]
    if len(ds) == 0:
        raise DataError(f"dataset {path_str!r} (split {split!r}) has no rows.")
    return ds


def iter_rows(dataset: Any, batch_size: int = 1024) -> Iterator[dict[str, Any]]:
    """The rows of a dataset as dicts, read a batch at a time (bounded memory, faster than ``iter(ds)``)."""
    for batch in dataset.iter(batch_size=batch_size):
        columns = list(batch)
        for values in zip(*(batch[c] for c in columns)):
            yield dict(zip(columns, values))


def load_rows(source: DataSource, split: str | None = None) -> list[dict[str, Any]]:
    """Rows of one split of a source as a list of dicts: for the small sets read whole (suites)."""
    return list(iter_rows(open_rows(source, split)))
