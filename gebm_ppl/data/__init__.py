"""UCI density-estimation data: loaders (kexpfam and MAF protocols), lookup, download and HDF5 cache."""

from .cache import cache_key, read_cache, write_cache
from .fetch import ChecksumMismatchError, DataNotFoundError, default_cache_dir, download_file, file_digest, locate
from .load import UCIData, load
from .readers import SourceFormatError
from .registry import ARCHIVES, DATASETS, Archive, DatasetSpec, SourceFile, dataset_names, get_spec

__all__ = [
    "ARCHIVES",
    "Archive",
    "ChecksumMismatchError",
    "DATASETS",
    "DataNotFoundError",
    "DatasetSpec",
    "SourceFile",
    "SourceFormatError",
    "UCIData",
    "cache_key",
    "dataset_names",
    "default_cache_dir",
    "download_file",
    "file_digest",
    "get_spec",
    "load",
    "locate",
    "read_cache",
    "write_cache",
]
