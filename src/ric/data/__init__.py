"""Dataset sources and reward relabeling with resumable, sharded scoring."""

from ric.data.io import load_stats, save_stats
from ric.data.label import LabelResult, label_dataset, raw_column, standardized_column
from ric.data.sources import fingerprint_pairs, read_pairs

__all__ = [
    "LabelResult",
    "fingerprint_pairs",
    "label_dataset",
    "load_stats",
    "raw_column",
    "read_pairs",
    "save_stats",
    "standardized_column",
]
