"""gp.GEBMDensity, the scikit-learn estimator: scikit-learn's estimator checks, and closed forms on Gaussian data
(log-densities in the data's units, normalisation on a grid)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

import gebm_ppl as gp
from gebm_ppl.sklearn import GEBMDensity

# tiny networks and epochs: each check fits several times on a few dozen rows
TINY = {"hidden_features": 8, "num_layers": 2, "energy_hidden": (8,), "mle_epochs": 2, "kale_epochs": 1,
        "batch_size": 32, "noise_factor": 2, "log_partition_samples": 256, "sample_proposals": 8}

# Every check that scikit-learn 1.9 selects for a density estimator passes (pickling included: the fitted GEBM is
# pickled as its checkpoint); none is expected to fail. Checks that do not apply are not run by scikit-learn itself
# (classifier/regressor/transformer checks; sparse input is refused with scikit-learn's own error).
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


@parametrize_with_checks([GEBMDensity(**TINY)], expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ------------------------------------------------------------------------------------------ closed forms
MEAN = np.array([50.0, -3.0])
# correlated, with scales 10 and 0.1: log|det W| ≈ 2.1 nats, so a dropped Jacobian shows at once
COV = np.array([[100.0, 0.8], [0.8, 0.01]])


@pytest.fixture(scope="module")
def gaussian_fit():
    rng = np.random.default_rng(0)
    chol = np.linalg.cholesky(COV)
    train = rng.standard_normal((1500, 2)) @ chol.T + MEAN
    test = rng.standard_normal((500, 2)) @ chol.T + MEAN
    est = GEBMDensity(hidden_features=32, num_layers=2, energy_hidden=(32, 32), mle_epochs=30, kale_epochs=5,
                      log_partition_samples=20_000, random_state=0).fit(train)
    return est, test


def test_score_samples_match_the_gaussian_log_density(gaussian_fit):
    est, test = gaussian_fit
    true = multivariate_normal(MEAN, COV).logpdf(test)
    got = est.score_samples(test)
    assert got.shape == (500,) and got.dtype == np.float64
    # a fitted density, not the closed form: 0.1 nats per row on average (measured 0.04); the mean
    # log-likelihood within 0.05 nats of the truth (measured 0.001); log|det W| = 2.1 would break both
    assert np.abs(got - true).mean() < 0.1
    assert est.score(test) == pytest.approx(true.mean(), abs=0.05)
    assert est.log_abs_det_ == pytest.approx(-0.5 * np.linalg.slogdet(COV)[1], abs=0.05)
    assert est.log_partition_ess_ > 1000


def test_score_samples_integrate_to_one_on_a_grid(gaussian_fit):
    est, _ = gaussian_fit
    sd = np.sqrt(np.diag(COV))
    g0 = np.linspace(MEAN[0] - 7 * sd[0], MEAN[0] + 7 * sd[0], 281)
    g1 = np.linspace(MEAN[1] - 7 * sd[1], MEAN[1] + 7 * sd[1], 281)
    grid = np.stack(np.meshgrid(g0, g1, indexing="ij"), -1).reshape(-1, 2)
    integral = np.exp(est.score_samples(grid)).sum() * (g0[1] - g0[0]) * (g1[1] - g1[0])
    assert integral == pytest.approx(1.0, abs=0.03)  # measured 1.0002


def test_sample_is_in_the_data_units_and_seeded(gaussian_fit):
    est, _ = gaussian_fit
    draws = est.sample(2000, random_state=1)
    assert draws.shape == (2000, 2)
    se = np.sqrt(np.diag(COV) / 2000)
    assert (np.abs(draws.mean(0) - MEAN) < 4 * se).all(), draws.mean(0)  # in the data's units, not whitened
    np.testing.assert_allclose(np.cov(draws.T), COV, rtol=0.15)
    np.testing.assert_array_equal(draws, est.sample(2000, random_state=1))
    assert not np.array_equal(draws, est.sample(2000, random_state=2))


def test_fit_is_seeded_and_errors_are_named():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((80, 3)) * [1.0, 5.0, 0.2]
    with pytest.raises(NotFittedError):
        GEBMDensity(**TINY).score_samples(x)
    with pytest.raises(NotFittedError):
        GEBMDensity(**TINY).sample(3)
    a = GEBMDensity(**TINY, random_state=7).fit(x).score_samples(x)
    b = GEBMDensity(**TINY, random_state=7).fit(x).score_samples(x)
    np.testing.assert_array_equal(a, b)
    flow = GEBMDensity(**{**TINY, "kale_epochs": 0}, random_state=7).fit(x)  # the flow alone: no energy, A = 0
    assert flow.log_partition_ == 0.0 and np.isfinite(flow.score_samples(x)).all()
    with pytest.raises(ValueError, match="'mle_epochs' should be a positive integer. Got 0"):
        GEBMDensity(mle_epochs=0).fit(x)
    with pytest.raises(ValueError, match=r"'validation_fraction' should be in \[0, 1\)"):
        GEBMDensity(validation_fraction=1.5).fit(x)
    with pytest.raises(ValueError, match="'patience' should be None or a positive integer"):
        GEBMDensity(patience=0).fit(x)
    with pytest.raises(ValueError, match="n_samples = 3 for n_features = 3"):
        GEBMDensity(**TINY).fit(x[:3])
    with pytest.raises(ValueError, match="cannot whiten"):
        GEBMDensity(**TINY).fit(np.column_stack([x, np.ones(80)]))
    with pytest.raises(ValueError, match="'n_samples' should be a positive integer"):
        GEBMDensity(**TINY).fit(x).sample(0)
    assert isinstance(gp.GEBMDensity(), GEBMDensity)  # exported lazily from the package
