"""A scikit-learn density estimator: :class:`GEBMDensity`, a GEBM (RealNVP base + KALE energy) on whitened data.

For users of :class:`sklearn.neighbors.KernelDensity` and :class:`sklearn.mixture.GaussianMixture`:
``GEBMDensity(...).fit(X).score_samples(X)`` returns log-densities of the rows of X in X's own units.

The maths (Arbel, Zhou & Gretton, 2021, https://arxiv.org/abs/2003.05033):

* whitening fitted on the training rows, x_w = (x − m) W (PCA, identity covariance);
* a RealNVP base g_θ fitted to x_w by maximum likelihood (:func:`gebm_ppl.fit_mle`);
* an energy E fitted by KALE on the frozen base (:func:`gebm_ppl.fit_kale`), and the log-partition
  A = log E_{z∼N(0, I)}[exp(−E(G_θ(z)))] estimated by importance sampling
  (:func:`gebm_ppl.estimate_log_partition`);
* the density of x in X's units, with the whitening's Jacobian:

      log q(x) = log g_θ(x_w) − E(x_w) − A + log|det W|.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

__all__ = ["GEBMDensity"]

_INT32_MAX = np.iinfo(np.int32).max


def _validate(estimator, X, reset: bool) -> np.ndarray:
    """``check_array`` of X as float64 ``[N, D]`` (no NaN, no sparse) through scikit-learn's ``validate_data``,
    which also sets (``reset``) or checks ``n_features_in_``. Fitting needs 2 rows and 2 columns at least."""
    least = 2 if reset else 1
    kwargs = {"dtype": np.float64, "ensure_min_samples": least, "ensure_min_features": least}
    try:
        from sklearn.utils.validation import validate_data  # scikit-learn >= 1.6
    except ImportError:  # older scikit-learn: the same checks as a method
        return estimator._validate_data(X, reset=reset, **kwargs)
    return validate_data(estimator, X, reset=reset, **kwargs)


class GEBMDensity(DensityMixin, BaseEstimator):
    """Density estimation with a Generalized Energy-Based Model, in the style of ``KernelDensity``.

    ``fit`` whitens X (mean and PCA matrix of the training rows), fits a RealNVP flow by maximum
    likelihood, then an energy by KALE with the flow frozen, and estimates the log-partition A; a
    ``validation_fraction`` of the rows (shuffled with ``random_state``) drives early stopping. All
    results are in X's units: ``score_samples`` adds the whitening's log|det W| and ``sample`` maps the
    draws back (x = x_w W⁻¹ + m).

    Args:
        hidden_features: width of the RealNVP coupling networks.
        num_layers: RealNVP coupling layers.
        energy_hidden: hidden widths of the energy MLP (spectrally normalised).
        mle_epochs: maximum epochs of the flow's maximum-likelihood fit.
        kale_epochs: maximum epochs of the energy's KALE fit; 0 gives the flow alone (E = 0, A = 0).
        batch_size: minibatch size of both fits.
        mle_lr: Adam learning rate of the flow.
        energy_lr: Adam learning rate of the energy.
        noise_factor: base samples per data point in each KALE step.
        penalty: gradient-penalty weight λ of KALE.
        patience: evaluations without validation improvement before early stopping (None: never).
        validation_fraction: share of the rows held out for early stopping (0: none; then the last
            epoch's weights are kept).
        log_partition_samples: base samples for the final estimate of A (and KALE's evaluations).
        sample_proposals: base proposals per draw of :meth:`sample` (sampling–importance–resampling
            with weights exp(−E); exact as this grows).
        random_state: seed (int), ``numpy.random.RandomState`` or None; fixes the split, the
            initial weights, the minibatches and every Monte-Carlo draw.

    Attributes:
        n_features_in_: number of columns of X.
        mean_: ``[D]`` whitening mean m.
        whitening_: ``[D, D]`` whitening matrix W (x_w = (x − m) W).
        log_abs_det_: log|det W|, added to every log-density.
        gebm_: the fitted :class:`gebm_ppl.GEBM` on whitened coordinates (float64).
        log_partition_: A, the log-partition estimate used by ``score_samples``.
        log_partition_stderr_: its delta-method standard error.
        log_partition_ess_: the importance-sampling effective sample size of the estimate.

    Example:
        >>> import numpy as np
        >>> X = np.random.default_rng(0).normal(size=(500, 2)) * [1.0, 10.0]
        >>> est = GEBMDensity(mle_epochs=20, kale_epochs=5, random_state=0).fit(X)  # doctest: +SKIP
        >>> est.score_samples(X[:3]).shape  # doctest: +SKIP
        (3,)
    """

    def __init__(
        self,
        *,
        hidden_features: int = 64,
        num_layers: int = 4,
        energy_hidden: Sequence[int] = (64, 64),
        mle_epochs: int = 200,
        kale_epochs: int = 50,
        batch_size: int = 128,
        mle_lr: float = 1e-3,
        energy_lr: float = 3e-3,
        noise_factor: int = 10,
        penalty: float = 0.1,
        patience: int | None = 20,
        validation_fraction: float = 0.1,
        log_partition_samples: int = 20_000,
        sample_proposals: int = 256,
        random_state=None,
    ):
        self.hidden_features = hidden_features
        self.num_layers = num_layers
        self.energy_hidden = energy_hidden
        self.mle_epochs = mle_epochs
        self.kale_epochs = kale_epochs
        self.batch_size = batch_size
        self.mle_lr = mle_lr
        self.energy_lr = energy_lr
        self.noise_factor = noise_factor
        self.penalty = penalty
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.log_partition_samples = log_partition_samples
        self.sample_proposals = sample_proposals
        self.random_state = random_state

    # ---------------------------------------------------------------- fit
    def _check_params(self) -> None:
        for name in ("hidden_features", "num_layers", "mle_epochs", "batch_size", "noise_factor",
                     "log_partition_samples", "sample_proposals"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"'{name}' should be a positive integer. Got {value!r}.")
        if isinstance(self.kale_epochs, bool) or not isinstance(self.kale_epochs, int | np.integer) \
                or self.kale_epochs < 0:
            raise ValueError(f"'kale_epochs' should be a non-negative integer. Got {self.kale_epochs!r}.")
        if not (isinstance(self.validation_fraction, int | float) and 0 <= self.validation_fraction < 1):
            raise ValueError(f"'validation_fraction' should be in [0, 1). Got {self.validation_fraction!r}.")
        for name in ("mle_lr", "energy_lr"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"'{name}' should be a positive number. Got {value!r}.")
        patience = self.patience
        if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int | np.integer)
                                     or patience < 1):
            raise ValueError(f"'patience' should be None or a positive integer. Got {self.patience!r}.")
        if not (isinstance(self.penalty, int | float) and math.isfinite(self.penalty) and self.penalty >= 0):
            raise ValueError(f"'penalty' should be a non-negative number. Got {self.penalty!r}.")

    def fit(self, X, y=None) -> GEBMDensity:
        """Fit the whitening, the flow (MLE) and the energy (KALE) to the rows of ``X`` ``[N, D]``, D ≥ 2.

        Args:
            X: array-like ``[N, D]`` of finite numbers.
            y: ignored (scikit-learn's API).

        Returns:
            self.

        Raises:
            ValueError: bad parameters, NaN/inf or non-numeric X, fewer than 2 rows or columns, no more
                rows than columns, or degenerate columns (constant or collinear: no whitening).
        """
        from . import GEBM, EnergyMLP, RealNVP, estimate_log_partition
        from .data.preprocess import whiten_fit
        from .training import fit_kale, fit_mle

        self._check_params()
        X = _validate(self, X, reset=True)
        n, dim = X.shape
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(_INT32_MAX))
        order = rng.permutation(n)
        n_val = int(self.validation_fraction * n)
        n_val = n_val if n - n_val > dim else 0
        train, val = X[order[n_val:]], X[order[:n_val]]
        if train.shape[0] <= dim:
            raise ValueError(f"GEBMDensity needs more training rows than columns to whiten them; got n_samples = "
                             f"{train.shape[0]} for n_features = {dim}.")
        try:
            mean, matrix = whiten_fit(train)
        except ValueError as e:
            raise ValueError(f"GEBMDensity: X {e}") from None
        self.mean_, self.whitening_ = mean, matrix
        self.log_abs_det_ = float(np.linalg.slogdet(matrix)[1])
        train_w = torch.tensor((train - mean) @ matrix, dtype=torch.float32)
        val_w = torch.tensor((val - mean) @ matrix, dtype=torch.float32) if n_val else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the initial weights; the loops draw from their own seeded generators
            base = RealNVP(dim, hidden_features=int(self.hidden_features), num_layers=int(self.num_layers))
            energy = EnergyMLP(dim, hidden=tuple(int(h) for h in self.energy_hidden))
        gebm = GEBM(base, energy)
        fit_mle(base, train_w, val_w, epochs=int(self.mle_epochs), batch_size=int(self.batch_size), lr=self.mle_lr,
                patience=self.patience, seed=seed, progress=False)
        self.log_partition_, self.log_partition_stderr_, self.log_partition_ess_ = 0.0, 0.0, math.nan
        if self.kale_epochs:
            fit_kale(gebm, train_w, val_w, epochs=int(self.kale_epochs), batch_size=int(self.batch_size),
                     noise_factor=int(self.noise_factor), energy_lr=self.energy_lr, penalty=self.penalty,
                     patience=self.patience, log_partition_samples=int(self.log_partition_samples), seed=seed,
                     progress=False)
        gebm = copy.deepcopy(gebm).double().eval()  # scored and sampled in float64
        if self.kale_epochs:
            generator = torch.Generator().manual_seed(seed + 1)
            with torch.no_grad():
                est = estimate_log_partition(gebm, num_samples=int(self.log_partition_samples), generator=generator)
            self.log_partition_ = float(est.estimate)
            self.log_partition_stderr_, self.log_partition_ess_ = float(est.stderr), float(est.ess)
        self.gebm_ = gebm
        return self

    # ---------------------------------------------------------------- pickling
    def __getstate__(self) -> dict:
        """Picklable state: the fitted GEBM as its checkpoint dict (torch cannot pickle spectral-norm modules)."""
        state = super().__getstate__()
        if "gebm_" in state:
            state["gebm_"] = state["gebm_"].checkpoint()
        return state

    def __setstate__(self, state: dict) -> None:
        from . import GEBM

        state = dict(state)
        if isinstance(state.get("gebm_"), dict):
            ckpt = state["gebm_"]
            gebm = GEBM.from_checkpoint(ckpt, source="a pickled GEBMDensity").double().eval()
            gebm.load_state_dict(ckpt["state_dict"])  # again, now in float64: no rounding through float32
            state["gebm_"] = gebm
        super().__setstate__(state)

    # ---------------------------------------------------------------- densities
    def score_samples(self, X) -> np.ndarray:
        """log q(x) of each row of ``X`` ``[N, D]``, in nats, as a density in X's units.

        log q(x) = log g_θ(x_w) − E(x_w) − A + log|det W| with x_w = (x − m) W (without an energy,
        ``kale_epochs=0``: log g_θ(x_w) + log|det W|).

        Returns:
            ``[N]`` float64 array.

        Raises:
            NotFittedError: before :meth:`fit`.
            ValueError: X not ``[N, n_features_in_]`` finite numbers.
        """
        check_is_fitted(self, "gebm_")
        X = _validate(self, X, reset=False)
        x_w = torch.tensor((X - self.mean_) @ self.whitening_, dtype=torch.float64)
        with torch.no_grad():
            if self.kale_epochs:
                log_q = self.gebm_.log_prob(x_w, log_partition=self.log_partition_)
            else:
                log_q = self.gebm_.base.log_prob(x_w)
        return log_q.numpy().astype(np.float64) + self.log_abs_det_

    def score(self, X, y=None) -> float:
        """Mean log-density of the rows of ``X`` (nats per row, in X's units), as ``GaussianMixture.score``.

        Note that ``KernelDensity.score`` returns the sum instead; multiply by ``len(X)`` to compare.
        """
        return float(np.mean(self.score_samples(X)))

    # ---------------------------------------------------------------- sampling
    def sample(self, n_samples: int = 1, random_state=None) -> np.ndarray:
        """Draw ``n_samples`` rows ``[n_samples, D]`` in X's units.

        Sampling–importance–resampling: for each draw, ``sample_proposals`` flow samples x_w ~ g_θ,
        one kept with probability ∝ exp(−E(x_w)) (exact as ``sample_proposals`` grows; for MCMC in
        latent space use :func:`gebm_ppl.sample_latent` on ``gebm_``), then x = x_w W⁻¹ + m.

        Args:
            n_samples: number of rows.
            random_state: seed for these draws (default: derived from the estimator's ``random_state``).
        """
        check_is_fitted(self, "gebm_")
        if isinstance(n_samples, bool) or not isinstance(n_samples, int | np.integer) or n_samples < 1:
            raise ValueError(f"'n_samples' should be a positive integer. Got {n_samples!r}.")
        rng = check_random_state(self.random_state if random_state is None else random_state)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(int(rng.randint(_INT32_MAX)))
            if self.kale_epochs:
                x_w = self.gebm_.distribution(num_proposals=int(self.sample_proposals)).sample((int(n_samples),))
            else:
                x_w = self.gebm_.base.sample(int(n_samples))
        return np.linalg.solve(self.whitening_.T, x_w.numpy().T).T + self.mean_
