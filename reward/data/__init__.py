"""Data: adapters from every source format to one pair format, hygiene, splits and tokenization."""

from ..errors import DataError
from .adapters import adapt_hh_rlhf, parse_hh_transcript
from .collect import clean_pairs, collect_pairs, grouped_split, prompt_hash, prompt_key
from .formats import ADAPTERS
from .formatting import as_messages, consumer_tokenizer, encode_pairs, fit_to_length, render_plain, render_texts
from .groups import Group, qa_feedback_prompt, write_pairs_csv
from .pipeline import PreparedData, prepare_data
from .report import DataReport
from .settings import DataSettings
from .sources import load_rows
from .tokenize import encode_batch

__all__ = [
    "ADAPTERS",
    "DataError",
    "DataReport",
    "DataSettings",
    "Group",
    "PreparedData",
    "adapt_hh_rlhf",
    "as_messages",
    "clean_pairs",
    "collect_pairs",
    "consumer_tokenizer",
    "encode_batch",
    "encode_pairs",
    "fit_to_length",
    "grouped_split",
    "load_rows",
    "parse_hh_transcript",
    "prepare_data",
    "prompt_hash",
    "prompt_key",
    "qa_feedback_prompt",
    "render_plain",
    "render_texts",
    "write_pairs_csv",
]
