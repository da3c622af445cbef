"""The shared persona-dialogue data layer: readers for every source, one Example type, splits.

    from spt_bench.data import Example, load_examples, load_splits, DataSplits, split_by_dialogue

Light to import: `datasets` is imported only when a datasets source is read.
"""

from spt_bench.data.example import Example
from spt_bench.data.jsonl import read_examples_jsonl, write_examples_jsonl
from spt_bench.data.parlai import format_parlai, parse_parlai, write_parlai
from spt_bench.data.resolve import (
    DATA_DIR_ENV,
    DEFAULT_VARIANT,
    SAMPLE,
    load_examples,
    resolve_source,
    sample_path,
)
from spt_bench.data.splits import (
    PROTOCOLS,
    DataSplits,
    dialogue_ids_digest,
    hold_out_dev,
    load_splits,
    split_by_dialogue,
    splits_by_protocol,
    write_splits,
)
from spt_bench.data.stats import dataset_stats

__all__ = [
    "DATA_DIR_ENV",
    "DEFAULT_VARIANT",
    "PROTOCOLS",
    "SAMPLE",
    "DataSplits",
    "Example",
    "dataset_stats",
    "dialogue_ids_digest",
    "format_parlai",
    "hold_out_dev",
    "load_examples",
    "load_splits",
    "parse_parlai",
    "read_examples_jsonl",
    "resolve_source",
    "sample_path",
    "split_by_dialogue",
    "splits_by_protocol",
    "write_splits",
    "write_examples_jsonl",
    "write_parlai",
]
