"""fit_kale and fit_adversarial take their options as checked dataclasses or as keywords, with the same result."""

import pytest
import torch

import gebm_ppl as gp
from gebm_ppl.training import AdversarialSettings, KaleSettings, TrainingOptions

torch.set_num_threads(1)


def _values(history) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("_time")} for r in history.records]


def _kale_gebm() -> gp.GEBM:
    torch.manual_seed(0)
    return gp.GEBM(gp.AffineBase(2), gp.EnergyMLP(2, hidden=(8,)))


def test_fit_kale_dataclasses_equal_keywords():
    x = torch.randn(120, 2, generator=torch.Generator().manual_seed(1))
    keywords = dict(epochs=2, batch_size=40, seed=3, progress=False)
    kale = dict(noise_factor=2, log_partition_samples=300, penalty=0.5)
    g1, g2 = _kale_gebm(), _kale_gebm()
    h1 = gp.fit_kale(g1, x[:100], x[100:], **keywords, **kale)
    h2 = gp.fit_kale(g2, x[:100], x[100:], options=TrainingOptions(**keywords), settings=KaleSettings(**kale))
    assert _values(h1) == _values(h2)
    for a, b in zip(g1.state_dict().values(), g2.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_keyword_beside_its_dataclass_is_refused():
    x = torch.randn(50, 2)
    with pytest.raises(TypeError, match="'epochs'.*not both"):
        gp.fit_kale(_kale_gebm(), x, epochs=3, options=TrainingOptions(epochs=2))
    with pytest.raises(TypeError, match="'penalty'.*not both"):
        gp.fit_kale(_kale_gebm(), x, penalty=1.0, settings=KaleSettings())
    with pytest.raises(TypeError, match="'options' should be a TrainingOptions"):
        gp.fit_kale(_kale_gebm(), x, options={"epochs": 2})


def test_fit_adversarial_dataclasses_equal_keywords():
    x = torch.randn(200, 3, generator=torch.Generator().manual_seed(2))

    def gebm():
        torch.manual_seed(0)
        return gp.GEBM(gp.MLPGenerator(2, 3, hidden=(8,), output="identity"), gp.EnergyMLP(3, hidden=(8,)))

    g1, g2 = gebm(), gebm()
    h1 = gp.fit_adversarial(g1, x, steps=4, batch_size=16, burst_steps=2, eval_every=2, log_partition_samples=200,
                            progress=False)  # fmt: skip
    h2 = gp.fit_adversarial(g2, x, settings=AdversarialSettings(steps=4, burst_steps=2, log_partition_samples=200),
                            options=TrainingOptions(batch_size=16, eval_every=2, progress=False))  # fmt: skip
    assert _values(h1) == _values(h2)
    with pytest.raises(TypeError, match="needs 'steps'"):
        gp.fit_adversarial(gebm(), x)
