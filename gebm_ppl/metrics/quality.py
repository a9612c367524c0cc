"""Sample quality of images against held-out data: FD and KID on classifier features, label statistics."""

from __future__ import annotations

import numpy as np

from .distances import frechet_distance, kid
from .labels import confident_fraction, label_histogram, label_kl, modes_covered

__all__ = ["fd_floor", "sample_quality"]

_SPLITS = ("train", "val", "test")


def _samples(x, data) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    dim = int(np.prod(data.image_shape))
    if x.ndim == 4 and tuple(x.shape[1:]) == tuple(data.image_shape):
        x = x.reshape(len(x), dim)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(
            f"'x' should be flat images [N, {dim}] (image_shape {tuple(data.image_shape)}). Got shape {x.shape}."
        )
    if len(x) < 4:
        raise ValueError(f"'x' should hold at least 4 samples. Got {len(x)}.")
    if not np.isfinite(x).all():
        raise ValueError("'x' has NaN or inf entries.")
    return x


def _kid_subsets(n: int, wanted: int = 10) -> int:
    """Jackknife blocks of ≥ 5 rows each (at most ``wanted``)."""
    return max(1, min(wanted, n // 5))


def sample_quality(x, data, classifier=None, split: str = "test", *, kid_subsets: int = 10, seed: int = 0) -> dict:
    """Quality of samples ``x`` measured against ``data``'s ``split`` through the classifier's features.

    Keys:
        fd: Fréchet distance between the penultimate features of ``x`` and of the split.
        kid, kid_stderr: unbiased KID (polynomial-kernel MMD² over all rows) and its block-jackknife
            standard error.
        modes_covered: classes c predicted for ≥ 0.2 · prior_c of the samples (prior = training label shares).
        label_kl: KL(predicted label histogram ‖ training label prior), nats.
        confident_fraction: share of samples whose top class probability exceeds 0.9.
        n: number of samples.

    FD is biased upwards for small samples: compare methods with the same n, and against
    :func:`fd_floor` (two real samples). ``x`` may also be ``[N, C, H, W]``.

    Args:
        x: ``[N, D]`` samples in [−1, 1], D = C·H·W.
        data: the :class:`~gebm_ppl.data.ImageData` the model was trained on.
        classifier: an :class:`~gebm_ppl.metrics.ImageClassifier` (default :func:`load_classifier` (data)).
        split: the reference split (``"test"`` or ``"val"``; ``"train"`` measures fit, not generalisation).
        kid_subsets: number of jackknife blocks for the KID standard error (fewer when the samples are few).
        seed: seed of the KID subsets.
    """
    from .classifier import load_classifier

    if split not in _SPLITS:
        raise ValueError(f"'split' should be one of {_SPLITS}. Got {split!r}.")
    x = _samples(x, data)
    classifier = load_classifier(data) if classifier is None else classifier
    ref = np.asarray(getattr(data, split))
    feat_x = classifier.features(x)
    feat_ref = classifier.features(ref)
    est = kid(feat_x, feat_ref, subsets=_kid_subsets(min(len(x), len(ref)), kid_subsets), seed=seed)
    probs = classifier.predict_proba(x)
    prior = data.label_prior
    hist = label_histogram(probs, len(prior))
    return {
        "fd": frechet_distance(feat_x, feat_ref),
        "kid": est.estimate,
        "kid_stderr": est.stderr,
        "modes_covered": modes_covered(hist, prior),
        "label_kl": label_kl(hist, prior),
        "confident_fraction": confident_fraction(probs),
        "n": len(x),
    }


def fd_floor(data, classifier=None, seed: int = 0, split: str = "test", repeats: int = 5) -> float:
    """FD between real images: random training subsets of the size of ``split`` against ``split``.

    The FD a perfect sampler would reach with as many samples as the split holds (sampling noise
    and the train/test gap), averaged over ``repeats`` subsets drawn with ``default_rng(seed)``.
    """
    from .classifier import load_classifier

    if split not in ("val", "test"):
        raise ValueError(f"'split' should be 'val' or 'test'. Got {split!r}.")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"'repeats' should be a positive integer. Got {repeats!r}.")
    classifier = load_classifier(data) if classifier is None else classifier
    ref = classifier.features(np.asarray(getattr(data, split)))
    train = classifier.features(np.asarray(data.train))
    rng = np.random.default_rng(seed)
    size = min(len(ref), len(train))
    return float(np.mean([frechet_distance(train[rng.choice(len(train), size, replace=False)], ref)
                          for _ in range(repeats)]))  # fmt: skip
