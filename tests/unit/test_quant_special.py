"""The numpy special functions under the option maths, against Cody's scalar originals."""

from __future__ import annotations

import numpy as np
import pytest

from quant._special import erfc, erfcx, erfcx_nonneg, inverse_norm_cdf_rough, norm_cdf, powers


def test_erfc_and_erfcx_match_codys_scalar_code() -> None:
    cody = pytest.importorskip("cody_special.erf_cody")
    x = np.concatenate((np.linspace(-26.0, 27.0, 5301), [0.0, 0.46875, 4.0, -0.46875, -4.0]))
    ref_erfc = np.array([cody.erfc_cody(v) for v in x])
    ref_erfcx = np.array([cody.erfcx_cody(v) for v in x])
    np.testing.assert_allclose(erfc(x), ref_erfc, rtol=2e-15, atol=0.0)
    np.testing.assert_allclose(erfcx(x), ref_erfcx, rtol=2e-15, atol=0.0)
    pos = x >= 0
    np.testing.assert_allclose(erfcx_nonneg(x[pos]), ref_erfcx[pos], rtol=2e-15, atol=0.0)


def test_norm_cdf_tails_and_symmetry() -> None:
    z = np.linspace(-37.0, 8.0, 901)
    phi = norm_cdf(z)
    assert np.all(np.diff(phi) >= 0.0) and phi[-1] == pytest.approx(1.0, abs=1e-15)
    # Far in the left tail Phi(z) = phi(z)/|z| (1 - 1/z^2 + 3/z^4 - 15/z^6 + 105/z^8 - ...).
    zt = z[z < -25]
    series = 1.0 - 1.0 / zt**2 + 3.0 / zt**4 - 15.0 / zt**6 + 105.0 / zt**8
    mills = np.exp(-0.5 * zt * zt) / (np.sqrt(2.0 * np.pi) * -zt) * series
    np.testing.assert_allclose(norm_cdf(zt), mills, rtol=1e-10)
    np.testing.assert_allclose(norm_cdf(np.array([1.3, 2.7])) + norm_cdf(np.array([-1.3, -2.7])), 1.0, rtol=1e-15)


def test_rough_inverse_normal_is_within_its_bound() -> None:
    u = np.concatenate((np.linspace(1e-6, 1.0 - 1e-6, 2001), np.geomspace(1e-300, 1e-6, 200)))
    z = inverse_norm_cdf_rough(u)
    assert np.max(np.abs(norm_cdf(z) - u) / np.maximum(np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi), 1e-300)) < 5e-4


def test_powers() -> None:
    y = np.array([0.5, 2.0, -3.0])
    np.testing.assert_array_equal(powers(y, 4), np.array([y**0, y, y**2, y**3]))
