"""Datasets: fetch and check the raw IDX files (acquire.py), split and scale them (load.py)."""

from .acquire import DATASETS, DataError, ensure_files
from .load import Splits, load_splits

__all__ = ["DATASETS", "DataError", "Splits", "ensure_files", "load_splits"]
