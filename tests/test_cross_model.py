"""Maps between two models' spaces fitted on a paired sample (the start of a cross-model adapter)."""

import numpy as np
import pytest
import torch

from adapterkit.cross_model import SampleTooSmallError, fit_linear_map, minimum_pairs
from adapterkit.metrics import unit_rows


def test_procrustes_recovers_a_known_rotation_exactly():
    rng = np.random.default_rng(0)
    rotation, _ = np.linalg.qr(rng.normal(size=(24, 24)))
    new = unit_rows(rng.normal(size=(60, 24)))
    old = new @ rotation.T  # the old model's vector of each text is the new one rotated
    layer = fit_linear_map(new, old)
    assert np.allclose(layer.linear.weight.detach().numpy(), rotation, atol=1e-5)
    mapped = layer(torch.as_tensor(new, dtype=torch.float32)).detach().numpy()
    assert np.allclose(mapped, old, atol=1e-5)


def test_least_squares_maps_between_different_dimensions():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(16, 32))
    new = unit_rows(rng.normal(size=(400, 32)))
    old = unit_rows(new @ truth.T)
    layer = fit_linear_map(new, old, ridge=1e-6)
    assert (layer.in_features, layer.out_features) == (32, 16)
    mapped = unit_rows(layer(torch.as_tensor(new, dtype=torch.float32)).detach().numpy().astype(np.float64))
    assert (mapped * old).sum(1).min() > 0.99  # cosine to the old model's own vectors


def test_a_sample_too_small_names_the_minimum():
    new, old = np.ones((10, 32)), np.ones((10, 16))
    with pytest.raises(SampleTooSmallError, match=f"at least {minimum_pairs(32)}"):
        fit_linear_map(new, old)


def test_bad_samples_are_errors():
    rng = np.random.default_rng(2)
    new, old = rng.normal(size=(40, 8)), rng.normal(size=(40, 8))
    old[3, 1] = np.nan
    with pytest.raises(ValueError, match="old model's vector of sample row 3"):
        fit_linear_map(new, old)
    with pytest.raises(ValueError, match="same n paired rows"):
        fit_linear_map(new, old[:30])
    with pytest.raises(ValueError, match="method='lstsq'"):
        fit_linear_map(rng.normal(size=(40, 8)), rng.normal(size=(40, 4)), method="procrustes")
