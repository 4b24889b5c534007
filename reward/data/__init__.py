"""Data: adapters from every source format to one pair format, hygiene, splits and tokenization."""

from ..errors import DataError
from .adapters import ADAPTERS, parse_hh_transcript, write_pairs_csv
from .formatting import as_messages, encode_pairs, fit_to_length, render_texts
from .pipeline import DataSettings, PreparedData, collect_pairs, grouped_split, prepare_data
from .report import DataReport

__all__ = [
    "ADAPTERS", "DataError", "DataReport", "DataSettings", "PreparedData", "as_messages", "collect_pairs", "encode_pairs",
    "fit_to_length", "grouped_split", "parse_hh_transcript", "prepare_data", "render_texts", "write_pairs_csv",
]
