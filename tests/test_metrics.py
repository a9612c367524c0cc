"""gp.metrics: FD against its closed form, unbiased KID and MMD, label statistics, the cached digits classifier."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

import gebm_ppl as gp
from gebm_ppl.metrics import (
    confident_fraction,
    fd_floor,
    frechet_distance,
    kid,
    label_histogram,
    label_kl,
    load_classifier,
    mmd,
    modes_covered,
    sample_quality,
    train_classifier,
)


def _exact_sample(mean: np.ndarray, cov: np.ndarray, n: int, rng) -> np.ndarray:
    """n points whose sample mean and (ddof=1) covariance are exactly ``mean`` and ``cov``."""
    z = rng.standard_normal((n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.atleast_2d(np.cov(z, rowvar=False)))).T
    return mean + z @ np.linalg.cholesky(cov).T


def _random_cov(d: int, rng) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# ------------------------------------------------------------------------------------------- FD
def test_fd_matches_the_closed_form():
    rng = np.random.default_rng(0)
    d = 6
    m1, m2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _random_cov(d, rng), _random_cov(d, rng)
    closed = float((m1 - m2) @ (m1 - m2) + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real))
    a, b = _exact_sample(m1, s1, 50, rng), _exact_sample(m2, s2, 80, rng)
    assert frechet_distance(a, b) == pytest.approx(closed, rel=1e-9, abs=1e-10)
    assert frechet_distance(b, a) == pytest.approx(closed, rel=1e-9)
    # 1-D: (μ1 − μ2)² + (σ1 − σ2)²
    x = _exact_sample(np.array([1.0]), np.array([[4.0]]), 30, rng)
    y = _exact_sample(np.array([-0.5]), np.eye(1), 9, rng)
    assert frechet_distance(x, y) == pytest.approx(1.5**2 + (2 - 1) ** 2, rel=1e-10)
    # torch input and float32 features give the same float64 answer
    assert frechet_distance(torch.as_tensor(a), torch.as_tensor(b)) == pytest.approx(closed, rel=1e-9)


def test_fd_of_identical_gaussians_is_zero():
    rng = np.random.default_rng(1)
    cov = _random_cov(5, rng)
    a = rng.multivariate_normal(np.zeros(5), cov, 4000)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    b = rng.multivariate_normal(np.zeros(5), cov, 4000)
    # sampling error only: E[FD] ≈ O(d · tr Σ / n), far below a 0.3-σ mean shift (FD ≈ 0.09 · 5)
    assert frechet_distance(a, b) < 0.02
    assert frechet_distance(a, b + 0.3) > 0.4


def test_fd_rejects_bad_input():
    with pytest.raises(ValueError, match="same width"):
        frechet_distance(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="at least 2 rows"):
        frechet_distance(np.zeros((1, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.full((3, 2), np.nan), np.zeros((5, 2)))


# ------------------------------------------------------------------------------------ KID, MMD
def test_kid_is_the_unbiased_polynomial_mmd():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((7, 3)), rng.standard_normal((7, 3)) + 0.5
    k = lambda x, y: (x @ y / 3 + 1) ** 3  # noqa: E731
    kxx = sum(k(a[i], a[j]) for i in range(7) for j in range(7) if i != j) / 42
    kyy = sum(k(b[i], b[j]) for i in range(7) for j in range(7) if i != j) / 42
    kxy = sum(k(a[i], b[j]) for i in range(7) for j in range(7)) / 49
    est = kid(a, b, subsets=1)
    assert est.estimate == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-12) and np.isnan(est.stderr)


def test_kid_same_distribution_is_zero_within_its_error_and_shift_is_positive():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((3000, 16)), rng.standard_normal((3000, 16))
    same = kid(a, b, subsets=10)
    assert same.stderr > 0 and abs(same.estimate) < 3 * same.stderr
    shifted = kid(a, b + 0.3, subsets=10)
    assert shifted.estimate > 10 * shifted.stderr
    # the standard error is honest: over independent repeats, the spread of the estimates matches it
    # (measured ratio ≈ 1.0 for shifted samples; ≈ 0.7 for equal ones, where the jackknife is conservative)
    for shift in (0.0, 0.2):
        repeats = [kid(rng.standard_normal((200, 4)), rng.standard_normal((300, 4)) + shift) for _ in range(40)]
        spread = np.std([r.estimate for r in repeats])
        assert 0.5 < spread / np.mean([r.stderr for r in repeats]) < 1.5, shift
    with pytest.raises(ValueError, match="disjoint blocks"):
        kid(a[:100], b[:100], subsets=10, subset_size=20)
    with pytest.raises(ValueError, match="≥ 2 rows"):
        kid(a[:15], b[:100], subsets=10)
    # blocks of a given size use only subsets · subset_size rows of each sample
    part = kid(a, b, subsets=4, subset_size=50, seed=1)
    assert part.stderr > same.stderr


def test_mmd_brute_force_median_heuristic_and_power():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((6, 2)), rng.standard_normal((5, 2))
    sigma = 0.7
    k = lambda u, v: np.exp(-np.sum((u - v) ** 2) / (2 * sigma**2))  # noqa: E731
    want = (
        sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / 30
        + sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
        - 2 * sum(k(u, v) for u in x for v in y) / 30
    )
    assert mmd(x, y, bandwidth=sigma) == pytest.approx(want, rel=1e-12)
    pooled = np.concatenate([x, y])
    median = np.median(scipy.spatial.distance.pdist(pooled))
    assert mmd(x, y) == pytest.approx(mmd(x, y, bandwidth=median), rel=1e-12)
    a, b = rng.standard_normal((1500, 3)), rng.standard_normal((1500, 3))
    assert abs(mmd(a, b)) < 2e-3 < mmd(a, b + 0.25)
    with pytest.raises(ValueError, match="'bandwidth'"):
        mmd(a, b, bandwidth=0.0)


# ------------------------------------------------------------------------------ label statistics
def test_label_statistics():
    probs = np.array([[0.95, 0.05, 0.0], [0.2, 0.7, 0.1], [0.05, 0.91, 0.04], [0.99, 0.01, 0.0]])
    hist = label_histogram(probs, 3)
    np.testing.assert_allclose(hist, [0.5, 0.5, 0.0])
    np.testing.assert_allclose(label_histogram(np.array([2, 2, 0, 1]), 3), [0.25, 0.25, 0.5])
    prior = np.array([0.5, 0.3, 0.2])
    assert label_kl(hist, prior) == pytest.approx(0.5 * np.log(0.5 / 0.5) + 0.5 * np.log(0.5 / 0.3))
    assert label_kl(prior, prior) == 0.0 and label_kl([0.0, 1.0], [1.0, 0.0]) == np.inf
    assert modes_covered(hist, prior) == 2
    # the rule: share ≥ 0.2 × prior share (uniform prior of 10: ≥ 2 %)
    assert modes_covered(np.r_[0.02, 0.0199, np.full(8, 0.9601 / 8)]) == 9
    assert confident_fraction(probs) == 0.75 and confident_fraction(probs, threshold=0.5) == 1.0
    with pytest.raises(ValueError, match=r"integers in \[0, 3\)"):
        label_histogram(np.array([0, 3]), 3)


# --------------------------------------------------------------------------------- classifier
@pytest.fixture(scope="module")
def digits():
    return gp.data.load("digits", seed=0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("metrics-cache")


@pytest.fixture(scope="module")
def classifier(digits, cache):
    return load_classifier(digits, seed=0, cache_dir=cache)


def test_classifier_accuracy_cache_and_determinism(digits, cache, classifier):
    info = classifier.info
    assert info["val_accuracy"] > 0.9 and not info["from_cache"]
    assert info["train_seconds"] < 60
    feats = classifier.features(digits.test)
    assert feats.shape == (180, 128) and feats.dtype == np.float64
    hit = load_classifier(digits, seed=0, cache_dir=cache)
    assert hit.info["from_cache"] and hit.info["cache"] == info["cache"]
    assert hit.info["val_accuracy"] == info["val_accuracy"]
    np.testing.assert_array_equal(hit.features(digits.test), feats)
    # training is seeded: the same seed reproduces the weights, another seed gives another file
    again = train_classifier(digits, seed=0)
    for p, q in zip(again.parameters(), classifier.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    path = cache / "classifiers"
    assert len(list(path.glob("*.pt"))) == 1 and not list(path.glob(".*"))
    # a torn cache file is retrained (and replaced), not trusted
    file = next(path.glob("*.pt"))
    file.write_bytes(file.read_bytes()[:100])
    torn = load_classifier(digits, seed=0, cache_dir=cache)
    assert not torn.info["from_cache"]
    np.testing.assert_array_equal(torn.features(digits.test), feats)
    assert load_classifier(digits, seed=0, cache_dir=cache).info["from_cache"]


def test_public_names():
    assert gp.metrics.sample_quality is sample_quality and gp.metrics.load_classifier is load_classifier
    assert "metrics" in dir(gp) and "toys" in dir(gp)


def test_classifier_refuses_wrong_shapes(classifier):
    with pytest.raises(ValueError, match=r"\[N, 64\] \(image_shape \(1, 8, 8\)\)"):
        classifier.features(np.zeros((3, 63), np.float32))


def test_sample_quality_and_floor(digits, classifier):
    real = sample_quality(digits.val, digits, classifier)
    assert set(real) == {"fd", "kid", "kid_stderr", "modes_covered", "label_kl", "confident_fraction", "n"}
    assert real["n"] == 180 and real["modes_covered"] == 10 and real["label_kl"] < 0.05
    assert real["confident_fraction"] > 0.8 and abs(real["kid"]) < 3 * real["kid_stderr"]
    floor = fd_floor(digits, classifier)
    rng = np.random.default_rng(0)
    noise = rng.uniform(-1, 1, (180, 64)).astype(np.float32)
    bad = sample_quality(noise, digits, classifier)
    assert 0 < floor < 0.5 * bad["fd"] and real["fd"] < 0.5 * bad["fd"]
    assert bad["kid"] > 3 * bad["kid_stderr"]
    # one mode only: the label statistics see it
    zeros = digits.test[digits.labels["test"] == 0]
    collapsed = sample_quality(np.repeat(zeros, 10, axis=0), digits, classifier)
    assert collapsed["modes_covered"] == 1
    assert collapsed["label_kl"] == pytest.approx(-np.log(digits.label_prior[0]), rel=0.05)
    images = sample_quality(digits.images("val"), digits, classifier)  # [N, C, H, W] is accepted
    assert images["fd"] == pytest.approx(real["fd"])
    with pytest.raises(ValueError, match=r"\[N, 64\] \(image_shape \(1, 8, 8\)\)"):
        sample_quality(np.zeros((10, 784)), digits, classifier)
    with pytest.raises(ValueError, match="'split'"):
        sample_quality(digits.val, digits, classifier, split="validation")
