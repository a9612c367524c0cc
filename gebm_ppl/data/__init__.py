"""Benchmark data: UCI density sets (kexpfam, MAF protocols), images (digits, MNIST); lookup, download, cache."""

from .cache import cache_key, read_cache, write_cache
from .fetch import (
    ChecksumMismatchError,
    DataNotFoundError,
    data_dirs,
    default_cache_dir,
    download_file,
    file_digest,
    locate,
)
from .idx import read_idx, write_idx
from .images import ImageData, stratified_split
from .load import UCIData, load
from .readers import SourceFormatError
from .registry import ARCHIVES, DATASETS, Archive, DatasetSpec, SourceFile, dataset_names, get_spec
from .stream import H5Array

__all__ = [
    "ARCHIVES",
    "Archive",
    "ChecksumMismatchError",
    "DATASETS",
    "DataNotFoundError",
    "DatasetSpec",
    "H5Array",
    "ImageData",
    "SourceFile",
    "SourceFormatError",
    "UCIData",
    "cache_key",
    "data_dirs",
    "dataset_names",
    "default_cache_dir",
    "download_file",
    "file_digest",
    "get_spec",
    "load",
    "locate",
    "read_cache",
    "read_idx",
    "stratified_split",
    "write_cache",
    "write_idx",
]
