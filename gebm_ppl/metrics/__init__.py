"""Offline sample-quality metrics: a small cached classifier, FD, KID, MMD and label statistics."""

from .classifier import ImageClassifier, default_arch, load_classifier, train_classifier
from .distances import KIDEstimate, frechet_distance, kid, median_bandwidth, mmd
from .labels import MODE_MIN_RATIO, confident_fraction, label_histogram, label_kl, modes_covered
from .quality import fd_floor, sample_quality

__all__ = [
    "ImageClassifier",
    "KIDEstimate",
    "MODE_MIN_RATIO",
    "confident_fraction",
    "default_arch",
    "fd_floor",
    "frechet_distance",
    "kid",
    "label_histogram",
    "label_kl",
    "load_classifier",
    "median_bandwidth",
    "mmd",
    "modes_covered",
    "sample_quality",
    "train_classifier",
]
