"""Readers, preprocessing, splits and the prepared-dataset store."""

from engine.data.builtin import BUILTINS, load_builtin
from engine.data.store import Dataset, list_datasets, load_dataset, save_dataset
from engine.data.tabular import TableInfo, detect_task, prepare_table, read_csv_bytes

__all__ = ["BUILTINS", "Dataset", "TableInfo", "detect_task", "list_datasets", "load_builtin", "load_dataset",
           "prepare_table", "read_csv_bytes", "save_dataset"]
