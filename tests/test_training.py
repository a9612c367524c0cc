"""Training loops: closed-form MLE and KALE optima, real data, exact resume, early stopping, bad input, divergence."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from common import RED_WINE, gaussian_case, uci_dir

import gebm_ppl as gp
from gebm_ppl.training.mle import mean_nll


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # small models: one thread is fastest, and several oversubscribe a shared machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _gaussian_data(mean, cov, n, seed):
    g = torch.Generator().manual_seed(seed)
    return mean + torch.randn(n, mean.shape[0], generator=g, dtype=mean.dtype) @ torch.linalg.cholesky(cov).T


def _affine_quadratic_log_partition(base, energy):
    """A = log E_G[exp(−E)] for G = N(m, Σ) and E(x) = ½ (x − c)ᵀ P (x − c), in closed form."""
    with torch.no_grad():
        L, P = base.scale_tril, energy.precision
        S = L @ L.T
        eye = torch.eye(S.shape[0], dtype=S.dtype)
        d = base.loc - energy.center
        return float(-0.5 * torch.logdet(eye + S @ P) - 0.5 * d @ P @ torch.linalg.solve(eye + S @ P, d))


# ---------------------------------------------------------------------------------------- closed forms
def test_fit_mle_recovers_the_gaussian_maximum_likelihood_estimate():
    # The MLE of N(m, L Lᵀ) is the sample mean and the (biased) sample covariance.
    torch.manual_seed(0)
    cov = torch.tensor([[2.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 0.5]], dtype=torch.float64)
    x = _gaussian_data(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), cov, 2000, seed=1)
    base = gp.AffineBase(3).double()
    history = gp.fit_mle(base, x, x[:500], epochs=60, batch_size=200, lr=0.05, progress=False, patience=None)
    emp_cov = torch.cov(x.T, correction=0)
    with torch.no_grad():
        assert (base.loc - x.mean(0)).abs().max().item() < 0.02
        assert (base.scale_tril @ base.scale_tril.T - emp_cov).abs().max().item() < 0.03
    # the best epoch's weights are the ones left in the model
    assert history.best_value == pytest.approx(mean_nll(base, x[:500]), abs=1e-9)


def test_fit_kale_recovers_the_gaussian_log_ratio_and_log_partition():
    # Fixed affine base, quadratic energy family containing the truth, data from the Gaussian Q:
    # at KALE's optimum −E − c = log(q/g) = −E* − A*, c = A, and F(E, c) = KL(Q ‖ G).
    case = gaussian_case(dim=2, seed=1, dtype=torch.float64)
    true_energy, true_a = case.gebm.energy, case.log_partition
    x = _gaussian_data(case.mean, case.cov, 4000, seed=0)
    x_test = _gaussian_data(case.mean, case.cov, 1000, seed=1)
    base = gp.AffineBase(2).double()
    base.load_state_dict(case.gebm.base.state_dict())
    energy = gp.QuadraticEnergy(2, factor=0.3 * torch.eye(2)).double()
    gebm = gp.GEBM(base, energy)
    kw = dict(batch_size=200, noise_factor=10, energy_lr=0.02, epochs=20, penalty=0.0, progress=False)
    history = gp.fit_kale(gebm, x, **kw)
    with torch.no_grad():
        c = gebm.log_partition.item()
        log_ratio = -energy(x_test) - c
        true_log_ratio = -true_energy(x_test) - true_a
        q = torch.distributions.MultivariateNormal(case.mean, case.cov)
        g = torch.distributions.MultivariateNormal(base.loc, scale_tril=base.scale_tril)
        kl = torch.distributions.kl_divergence(q, g).item()  # 0.42 nats
    # statistical error with 4000 data points: mean absolute error about 0.04, |c − A*| about 0.02
    assert (log_ratio - true_log_ratio).abs().mean().item() < 0.08
    assert c == pytest.approx(true_a, abs=0.05)
    assert c == pytest.approx(_affine_quadratic_log_partition(base, energy), abs=0.01)
    last = history.last
    assert c == pytest.approx(last["log_partition_estimate"], abs=3 * last["log_partition_stderr"] + 0.01)
    assert last["kale_train"] == pytest.approx(kl, abs=0.05)
    assert history.monitor is None and history.best_epoch is None and history.stop_reason == "epochs"


# ---------------------------------------------------------------------------------------- real data
def _data_dir() -> Path | None:
    """The folder with red-wine: $GEBM_DATA_DIR split as the library splits it (a path list), else ../shared."""
    path = uci_dir()
    return path if (path / RED_WINE).is_file() else None


def _red_wine(tmp_path_factory):
    data_dir = _data_dir()
    if data_dir is None:
        pytest.skip("red-wine data not found ($GEBM_DATA_DIR or ../shared/data/uci)")
    data = gp.data.load("red-wine", data_dir=data_dir, cache_dir=tmp_path_factory.mktemp("cache"), download=False)
    return data.train, data.val


def test_red_wine_gebm_beats_its_maximum_likelihood_base(tmp_path_factory):
    train, val = _red_wine(tmp_path_factory)
    torch.manual_seed(0)
    base = gp.RealNVP(11, hidden_features=64, num_layers=4)
    mle = gp.fit_mle(base, train, val, epochs=40, progress=False)
    assert mle.best_value < 14.0  # a flow that has learned something (a standard normal scores 15.6 nats)
    base_val = mean_nll(base, torch.as_tensor(val))
    assert base_val == pytest.approx(mle.best_value, abs=1e-4)
    gebm = gp.GEBM(base, gp.EnergyMLP(11, hidden=(64, 64), spectral_norm="output"))
    kale = gp.fit_kale(gebm, train, val, epochs=8, noise_factor=10, energy_lr=3e-3, progress=False)
    best = kale.records[kale.best_epoch - 1]
    assert best["base_val_nll"] == pytest.approx(base_val, abs=1e-4)  # the base stayed frozen
    assert kale.best_value < base_val - 0.05  # 0.13 nats in this run
    assert best["kale_val"] > 0.05 and best["kale_train"] > 0.05
    # the KALE bound is an upper bound of the importance-sampling NLL, up to the Monte-Carlo error
    assert best["val_nll"] <= best["val_nll_bound"] + 3 * best["log_partition_stderr"]


# ---------------------------------------------------------------------------------------- resume
def _states_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7, msg=k)


def _without_times(history):
    drop = {"epoch_time", "eval_time", "wall_time"}
    return [{k: v for k, v in r.items() if k not in drop} for r in history.records]


def test_fit_mle_resume_is_exact(tmp_path):
    x = torch.randn(300, 3, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 2.0, 0.5])

    def fresh(seed):
        torch.manual_seed(seed)  # different initial weights: the checkpoint must overwrite them all
        return gp.RealNVP(3, hidden_features=16, num_layers=2)

    kw = dict(batch_size=64, epochs=10, lr=3e-3, progress=False)
    full = fresh(0)
    gp.fit_mle(full, x, max_steps=22, **kw)  # 5 steps per epoch: 22 ends mid-epoch
    first = fresh(0)
    ckpt = tmp_path / "mle.pt"
    gp.fit_mle(first, x, max_steps=11, checkpoint_path=ckpt, **kw)
    second = fresh(1)
    gp.fit_mle(second, x, max_steps=22, resume=ckpt, **kw)
    _states_equal(full.state_dict(), second.state_dict())


@pytest.mark.parametrize("train_base", [False, True])
def test_fit_kale_resume_is_exact(tmp_path, train_base):
    g = torch.Generator().manual_seed(0)
    x, x_val = torch.randn(240, 2, generator=g) + 1.0, torch.randn(60, 2, generator=g) + 1.0

    def fresh(seed):
        torch.manual_seed(seed)
        return gp.GEBM(gp.RealNVP(2, hidden_features=8, num_layers=2), gp.EnergyMLP(2, hidden=(16, 16)))

    kw = dict(
        train_base=train_base, batch_size=40, noise_factor=5, n_energy_steps=3, warmup_energy_steps=4,
        log_partition_samples=500, epochs=6, patience=None, progress=False,
    )  # fmt: skip
    full = fresh(0)
    base_before = {k: v.clone() for k, v in full.base.state_dict().items()}
    h_full = gp.fit_kale(full, x, x_val, max_steps=16, **kw)  # 6 steps per epoch: 8 and 16 are mid-epoch
    base_changed = any(not torch.equal(v, full.base.state_dict()[k]) for k, v in base_before.items())
    assert base_changed == train_base
    assert ("base_loss" in h_full.records[0]) == train_base  # base steps after energy steps 4, 7, 10, ...
    first = fresh(0)
    ckpt = tmp_path / "kale.pt"
    gp.fit_kale(first, x, x_val, max_steps=8, checkpoint_path=ckpt, checkpoint_every=3, **kw)
    second = fresh(1)
    h_second = gp.fit_kale(second, x, x_val, max_steps=16, resume=ckpt, **kw)
    _states_equal(full.state_dict(), second.state_dict())
    assert _without_times(h_full) == _without_times(h_second)
    assert h_second.total_steps == 16 and h_second.stop_reason == "max_steps"
    # the training checkpoint is also a GEBM checkpoint
    loaded = gp.GEBM.load(ckpt)
    _states_equal(loaded.state_dict(), first.state_dict())


def test_resume_refuses_a_different_setting(tmp_path):
    x = torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
    base = gp.RealNVP(2, hidden_features=8, num_layers=2)
    ckpt = tmp_path / "mle.pt"
    gp.fit_mle(base, x, epochs=1, batch_size=50, checkpoint_path=ckpt, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        gp.fit_mle(base, x, epochs=2, batch_size=20, resume=ckpt, progress=False)
    with pytest.raises(ValueError, match="train"):
        gp.fit_mle(base, x + 1, epochs=2, batch_size=50, resume=ckpt, progress=False)
    with pytest.raises(ValueError, match="'mle' run"):
        gp.fit_kale(gp.GEBM(base, gp.EnergyMLP(2, hidden=(8,))), x, epochs=2, resume=ckpt, progress=False)
    with pytest.raises(FileNotFoundError, match="resume"):
        gp.fit_mle(base, x, resume=tmp_path / "missing.pt", progress=False)


# ---------------------------------------------------------------------------------------- loop behaviour
def test_early_stopping_callback_and_history():
    g = torch.Generator().manual_seed(0)
    x, x_val = torch.randn(200, 2, generator=g), torch.randn(50, 2, generator=g)
    seen = []
    base = gp.RealNVP(2, hidden_features=8, num_layers=2)
    history = gp.fit_mle(base, x, x_val, epochs=50, callback=lambda r: seen.append(r) or len(seen) == 3, progress=False)
    assert [r["epoch"] for r in seen] == [1, 2, 3]
    assert history.stop_reason == "callback" and history.stopped_early
    restored = json.loads(json.dumps(history.to_dict()))
    assert gp.training.TrainingHistory.from_dict(restored).records == history.records
    assert history.best_value == min(history.series("val_nll"))
    assert history.steps_per_second > 0 and history.total_steps == 3  # one batch of 200 per epoch

    # patience: a learning rate of 0.2 overfits 30 points fast; the best weights come back
    base = gp.RealNVP(2, hidden_features=32, num_layers=4)
    history = gp.fit_mle(base, x[:30], x_val, epochs=200, lr=0.2, patience=3, schedule=None, progress=False)
    assert history.stop_reason == "patience"
    assert len(history.records) == history.best_epoch + 3
    assert mean_nll(base, x_val) == pytest.approx(history.best_value, abs=1e-5)


def test_progress_bar_goes_to_stderr(capsys):
    base = gp.RealNVP(2, hidden_features=8, num_layers=2)
    gp.fit_mle(base, torch.randn(50, 2), epochs=2, progress=True)
    assert "fit_mle" in capsys.readouterr().err


def test_kale_with_a_generator_base_monitors_the_kale_value():
    class Linear(gp.Base):  # a generator without a density: G(z) = A z, z in R^1
        def __init__(self):
            super().__init__()
            self.dim, self.latent_dim = 2, 1
            self.weight = torch.nn.Parameter(torch.tensor([[1.0], [0.5]]))

        def forward(self, z):
            return z @ self.weight.T

    g = torch.Generator().manual_seed(0)
    z = torch.randn(300, 1, generator=g)
    x = z @ torch.tensor([[1.0, 0.5]]) + 0.5
    gebm = gp.GEBM(Linear(), gp.EnergyMLP(2, hidden=(16,), spectral_norm="output"))
    kw = dict(epochs=5, batch_size=50, noise_factor=4, energy_lr=1e-2, progress=False)
    history = gp.fit_kale(gebm, x[:200], x[200:], **kw)
    assert history.monitor == "kale_val" and history.mode == "max"
    assert "val_nll" not in history.last
    assert history.best_value == max(history.series("kale_val")) > 0.05
    # training the generator too: KALE is minimised over the base, so no direction of kale_val is "best";
    # nothing is monitored and the final weights are kept (not the max-KALE ones)
    joint = gp.fit_kale(gebm, x[:200], x[200:], train_base=True, n_energy_steps=2, warmup_energy_steps=0, **kw)
    assert joint.monitor is None and joint.stop_reason != "patience"
    assert len(joint.records) == kw["epochs"]


@pytest.mark.parametrize("factor, scale", [(1e3, 1e-6), (1e-2, 0.5)])
def test_scaled_clipping_equals_clipping_the_true_gradient(factor, scale):
    # fit_kale backpropagates scale·loss (no float32 overflow for a huge exp term) and clips g / scale
    from gebm_ppl.training.kale_loop import _clip_scaled_grad

    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    (factor * (w * w).sum()).backward()
    torch.nn.utils.clip_grad_norm_([w], 1.0)
    expected, w.grad = w.grad.clone(), None
    (scale * factor * (w * w).sum()).backward()
    assert _clip_scaled_grad([w], 1.0, scale)
    torch.testing.assert_close(w.grad, expected)


# ---------------------------------------------------------------------------------------- bad input
_X = torch.randn(20, 2)


@pytest.mark.parametrize(
    "train, kwargs, error, match",
    [
        (torch.empty(0, 2), {}, ValueError, "'train' is empty"),
        (torch.randn(20, 3), {}, ValueError, r"'train' should have 2 columns"),
        (torch.randn(20), {}, ValueError, r"shape \[N, 2\]"),
        (torch.cat([_X, torch.full((1, 2), math.nan)]), {}, ValueError, r"1 row\(s\) with NaN.*row 20"),
        ([[0.0, 1.0]], {}, TypeError, "'train' should be a torch.Tensor or numpy array"),
        (_X, {"lr": 0.0}, ValueError, "'lr' should be a positive"),
        (_X, {"lr": -1e-3}, ValueError, "'lr' should be a positive"),
        (_X, {"batch_size": 0}, ValueError, "'batch_size'"),
        (_X, {"schedule": "linear"}, ValueError, "'schedule'"),
    ],
)
def test_fit_mle_rejects_bad_input(train, kwargs, error, match):
    with pytest.raises(error, match=match):
        gp.fit_mle(gp.RealNVP(2, hidden_features=8, num_layers=2), train, progress=False, **kwargs)


@pytest.mark.parametrize(
    "val, kwargs, error, match",
    [
        (torch.randn(5, 3), {}, ValueError, r"'val' should have 2 columns"),
        (np.full((5, 2), np.inf), {}, ValueError, r"'val' has 5 row\(s\) with NaN or inf"),
        (None, {"energy_lr": 0.0}, ValueError, "'energy_lr'"),
        (None, {"base_lr": -1.0}, ValueError, "'base_lr'"),
        (None, {"noise_factor": 0}, ValueError, "'noise_factor'"),
        (None, {"penalty": -0.1}, ValueError, "'penalty'"),
    ],
)
def test_fit_kale_rejects_bad_input(val, kwargs, error, match):
    gebm = gp.GEBM(gp.RealNVP(2, hidden_features=8, num_layers=2), gp.EnergyMLP(2, hidden=(8,)))
    with pytest.raises(error, match=match):
        gp.fit_kale(gebm, _X, val, progress=False, **kwargs)


def test_numpy_float64_data_is_converted_to_the_model_dtype():
    x = np.random.default_rng(0).normal(size=(64, 2))
    base = gp.RealNVP(2, hidden_features=8, num_layers=2)
    history = gp.fit_mle(base, x, x, epochs=1, progress=False)
    assert isinstance(history.last["val_nll"], float) and history.settings["dtype"] == "torch.float32"


# ---------------------------------------------------------------------------------------- divergence
def test_absurd_learning_rate_raises_and_keeps_the_last_good_checkpoint(tmp_path):
    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    gebm = gp.GEBM(gp.RealNVP(2, hidden_features=8, num_layers=2), gp.EnergyMLP(2, hidden=(16,), spectral_norm=False))
    ckpt = tmp_path / "kale.pt"
    with pytest.raises(gp.TrainingDiverged, match=r"diverged at step \d+ \(epoch 1\).*kale\.pt") as info:
        gp.fit_kale(
            gebm, x, energy_lr=1e6, grad_clip=None, batch_size=20, epochs=3, progress=False,
            checkpoint_path=ckpt, checkpoint_every=1,
        )  # fmt: skip
    err = info.value
    assert err.step >= 2 and err.checkpoint_step == err.step - 1 and err.checkpoint_path == str(ckpt)
    good = gp.GEBM.load(ckpt)
    assert all(bool(torch.isfinite(v).all()) for v in good.state_dict().values())
    assert torch.load(ckpt, weights_only=True)["extra"]["training"]["loop"]["step"] == err.step - 1


# ---------------------------------------------------------------------------------------- progress off a terminal
def test_progress_lines_off_a_terminal(capsys, monkeypatch):
    # capsys's stderr is not a TTY: no bar, but a line after the first and the last epoch and a summary
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 2, generator=g)
    base = gp.RealNVP(2, hidden_features=8, num_layers=2)
    gp.fit_mle(base, x[:80], x[80:], epochs=3, batch_size=40, patience=None)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 3, err  # epochs 1 and 3 (2 falls within the 10 s interval) and the summary
    assert lines[0].startswith("fit_mle: epoch 1/3 step 2 train_loss=") and "val_nll=" in lines[0]
    assert "elapsed" in lines[0] and "ETA" in lines[0] and "\r" not in err
    assert lines[1].startswith("fit_mle: epoch 3/3 step 6") and lines[1].endswith("ETA 0s")
    assert lines[2].startswith("fit_mle: done after 3 epoch(s), 6 steps") and "(stopped by epochs)" in lines[2]
    assert "best val_nll=" in lines[2]

    # with a zero interval every epoch gets a line; max_steps shortens the total
    monkeypatch.setattr("gebm_ppl.training._progress.PROGRESS_INTERVAL", 0.0)
    gp.fit_mle(base, x[:80], x[80:], epochs=50, batch_size=40, max_steps=6, patience=None)
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split()[2] for line in lines[:-1]] == ["1/3", "2/3", "3/3"]
    assert "(stopped by max_steps)" in lines[-1]

    gp.fit_mle(base, x[:80], x[80:], epochs=2, batch_size=40, progress=False)
    assert capsys.readouterr().err == ""


def test_progress_lines_of_fit_kale_go_to_the_package_logger(capsys):
    import logging

    g = torch.Generator().manual_seed(1)
    x = torch.randn(120, 2, generator=g)
    gebm = gp.GEBM(gp.RealNVP(2, hidden_features=8, num_layers=2), gp.EnergyMLP(2, hidden=(8,)))
    seen = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append((record.levelno, record.getMessage()))

    logger = logging.getLogger("gebm_ppl.training")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        gp.fit_kale(gebm, x[:80], x[80:], epochs=2, batch_size=40, noise_factor=2, log_partition_samples=200)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert capsys.readouterr().err == ""  # a handler on the package logger takes the lines instead of stderr
    assert [lv for lv, _ in seen] == [logging.INFO] * 3
    assert seen[0][1].startswith("fit_kale: epoch 1/2 step 2 train_loss=") and "val_nll=" in seen[0][1]
    assert seen[-1][1].startswith("fit_kale: done after 2 epoch(s)")


def test_progress_bar_on_a_terminal():
    import io

    from gebm_ppl.training._progress import Progress, format_duration

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    p = Progress(None, "fit_test", total=4, stream=out)
    assert p.mode == "bar"
    p.update({"epoch": 1, "train_loss": 0.5})
    p.close()
    assert "fit_test" in out.getvalue() and "\r" in out.getvalue()
    assert Progress(False, "x", 3, stream=out).mode == "off"
    assert Progress(True, "x", 3, stream=io.StringIO()).mode == "lines"
    assert [format_duration(s) for s in (4.4, 187, 3720, float("nan"))] == ["4s", "3m07s", "1h02m", "?"]


def test_training_options_check_their_values():
    from gebm_ppl.training import KaleSettings, TrainingOptions

    options = TrainingOptions(seed=np.int64(3), epochs=5)
    assert options.seed == 3 and type(options.seed) is int
    assert options.loop_kwargs()["epochs"] == 5 and "device" not in options.loop_kwargs()
    for bad, match in [
        (dict(epochs=0), "epochs"),
        (dict(schedule="linear"), "schedule"),
        (dict(patience=0), "patience"),
        (dict(callback=3), "callback"),
        (dict(progress="yes"), "progress"),
        (dict(seed=-1), "seed"),
    ]:
        with pytest.raises((TypeError, ValueError), match=match):
            TrainingOptions(**bad)
    assert KaleSettings(energy_lr=0.01).log_partition_lr == 0.01
    with pytest.raises(TypeError, match="train_base"):
        KaleSettings(train_base=1)
    with pytest.raises(ValueError, match="noise_factor"):
        gp.fit_kale(gp.GEBM(gp.RealNVP(2), gp.EnergyMLP(2)), torch.randn(10, 2), noise_factor=0)


def test_resume_refuses_other_checkpoint_versions_and_files(tmp_path):
    from gebm_ppl.gebm import checkpoint_digest
    from gebm_ppl.training._checkpoint import TRAINING_VERSION

    x = torch.randn(60, 2, generator=torch.Generator().manual_seed(2))
    gebm = gp.GEBM(gp.RealNVP(2, hidden_features=4, num_layers=1), gp.EnergyMLP(2, hidden=(4,)))
    kw = dict(epochs=2, batch_size=30, noise_factor=2, log_partition_samples=100, progress=False)
    ckpt = tmp_path / "kale.pt"
    gp.fit_kale(gebm, x, checkpoint_path=ckpt, max_steps=1, **kw)
    data = torch.load(ckpt, weights_only=True)
    data["extra"]["training"]["version"] = TRAINING_VERSION + 1
    data.pop("digest")
    data["digest"] = checkpoint_digest(data)
    future = tmp_path / "future.pt"
    torch.save(data, future)
    with pytest.raises(ValueError, match=f"training-checkpoint version {TRAINING_VERSION + 1}; expected"):
        gp.fit_kale(gebm, x, resume=future, **kw)
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a gebm_ppl training checkpoint"):
        gp.fit_kale(gebm, x, resume=tmp_path / "foreign.pt", **kw)
    # the frozen base stays in eval mode inside a training GEBM, and both modes come back afterwards
    gebm.train()
    gebm.base.eval()
    history = gp.fit_kale(gebm, x, resume=ckpt, **kw)
    assert history.total_steps == 4 and gebm.training and not gebm.base.training and gebm.energy.training
