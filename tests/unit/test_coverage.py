"""quant.coverage: which grid nodes lie inside the data (quoted strikes and fitted expiries)."""

from __future__ import annotations

import numpy as np

from quant.coverage import inside_data, quoted_k_ranges


def test_inside_is_between_the_expiries_and_the_quoted_k_range_interpolated_in_time() -> None:
    # Two expiries: 0.1 y quoted on k in [-0.2, 0.1], 0.3 y on k in [-0.4, 0.3].
    tau = np.array([0.05, 0.1, 0.2, 0.3, 0.5])
    k = np.array([-0.5, -0.3, -0.2, 0.0, 0.1, 0.2, 0.3, 0.4])
    inside = inside_data(tau, k, [0.3, 0.1], [-0.4, -0.2], [0.3, 0.1])  # any order of expiries
    assert inside.shape == (5, 8)
    assert not inside[0].any() and not inside[4].any()  # before the first, after the last expiry
    assert inside[1].tolist() == [False, False, True, True, True, False, False, False]  # exactly 0.1 y
    # Halfway in time: k range [-0.3, 0.2].
    assert inside[2].tolist() == [False, True, True, True, True, True, False, False]
    assert inside[3].tolist() == [False, True, True, True, True, True, True, False]


def test_no_expiry_or_no_range_leaves_everything_extrapolated() -> None:
    assert not inside_data([0.1, 0.2], [0.0], [], [], []).any()
    assert not inside_data([0.1], [0.0], [0.1], [np.nan], [np.nan]).any()
    # An expiry without a range is left out: the other one alone covers only its own tenor.
    one = inside_data([0.1, 0.2, 0.3], [0.0], [0.1, 0.3], [-0.1, np.nan], [0.1, np.nan])
    assert one[:, 0].tolist() == [True, False, False]


def test_quoted_k_ranges_per_expiry_from_the_quotes_that_carry_a_vol() -> None:
    expiry = [1, 1, 1, 2, 2, 3]
    k = [-0.3, 0.2, -0.9, 0.0, 0.4, np.nan]
    used = [True, True, False, True, True, True]  # -0.9 has no vol; the NaN k is no strike
    k_min, k_max = quoted_k_ranges(expiry, k, used, [1, 2, 3, 4])
    assert k_min[:2].tolist() == [-0.3, 0.0] and k_max[:2].tolist() == [0.2, 0.4]
    assert np.isnan(k_min[2:]).all() and np.isnan(k_max[2:]).all()
