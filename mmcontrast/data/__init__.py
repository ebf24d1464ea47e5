"""Data: tables of examples, their checks, and the batch samplers."""

from mmcontrast.data.samplers import NoDuplicatesBatchSampler, ShuffledBatchSampler
from mmcontrast.data.tables import check_columns, clean_table, load_table

__all__ = ["NoDuplicatesBatchSampler", "ShuffledBatchSampler", "check_columns", "clean_table", "load_table"]
