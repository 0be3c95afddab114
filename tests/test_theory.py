"""Tests for slt.theory: closed-form learning coefficients."""

import itertools
from fractions import Fraction as F

import pytest

from slt.theory import (
    LearningCoefficient,
    dln,
    dln_num_params,
    normal_crossing,
    power_norm,
    regular,
    rrr,
)

# (widths output->input, rank, lambda, multiplicity or None)
DLN_VECTORS = [
    ([1, 1, 1], 0, F(1, 2), 2),
    ([1, 1, 1, 1], 0, F(1, 2), 3),
    ([2, 2, 2], 0, F(3, 2), 1),
    ([2, 2, 2], 1, F(2), 2),
    ([2, 2, 2], 2, F(2), 1),
    ([5, 3, 5], 0, F(13, 2), 2),
    ([5, 4, 5], 0, F(8), 1),
    ([10, 5, 10], 2, F(29), 2),
    ([10, 10, 10, 10], 0, F(67, 2), 3),
    ([10, 10, 10, 10], 5, F(46), 3),
    ([10, 10, 10, 10], 10, F(50), 1),
    ([4, 6, 5, 3], 1, F(6), 2),
    ([6, 6, 6, 6, 6, 6], 2, F(15), 5),
    ([100, 50, 100], 10, F(2550), 1),
    ([100, 100, 100], 0, F(3750), 1),
]


@pytest.mark.parametrize("widths, r, lam, m", DLN_VECTORS)
def test_dln_vectors(widths, r, lam, m):
    got = dln(widths, r)
    assert isinstance(got.lam, F)
    assert got.lam == lam
    assert got.multiplicity == m


@pytest.mark.parametrize("widths, r, lam, m", [v for v in DLN_VECTORS if len(v[0]) == 3])
def test_dln_vectors_match_rrr(widths, r, lam, m):
    N, H, M = widths
    assert rrr(M, H, N, r) == (lam, m)


TWO_LAYER = [
    (M, H, N, r)
    for M, H, N in itertools.product(range(1, 9), repeat=3)
    for r in range(min(M, H, N) + 1)
]


def test_rrr_dln_agree_all_two_layer_shapes():
    mismatches = [
        (M, H, N, r, rrr(M, H, N, r), dln([N, H, M], r))
        for M, H, N, r in TWO_LAYER
        if rrr(M, H, N, r) != dln([N, H, M], r)
    ]
    assert len(TWO_LAYER) > 1500
    assert mismatches == []


def test_dln_single_layer_is_regular():
    # one full matrix: no singularity, lam = d/2 for every rank
    for h1, h2 in itertools.product(range(1, 6), repeat=2):
        for r in range(min(h1, h2) + 1):
            assert dln([h1, h2], r) == regular(h1 * h2)


def test_dln_bounded_by_regular_and_symmetric():
    for widths in itertools.product(range(1, 5), repeat=4):
        for r in range(min(widths) + 1):
            lc = dln(widths, r)
            assert 0 <= lc.lam <= F(dln_num_params(widths), 2)
            assert lc.multiplicity >= 1
            # reversing the network (transposing every matrix) keeps K's zero set
            assert dln(widths[::-1], r) == lc


def test_dln_full_rank_through_narrow_bottleneck():
    # true rank = bottleneck width: the rank-1 3x3 matrices form a 5-dim manifold
    assert dln([3, 1, 3], 1).lam == F(5, 2)
    assert dln([3, 1, 3], 1) == rrr(3, 1, 3, 1)


def test_learning_coefficient_unpacks_and_floats():
    lam, m = dln([5, 3, 5], 0)
    assert (lam, m) == (F(13, 2), 2)
    lc = LearningCoefficient(F(1, 3), 1)
    assert float(lc) == pytest.approx(1 / 3, rel=1e-15)
    assert lc.lam == lc[0] and lc.multiplicity == lc[1]


def test_dln_num_params():
    assert dln_num_params([10, 5, 10]) == 100
    assert dln_num_params([4, 6, 5, 3]) == 24 + 30 + 15


# ---------------------------------------------------------------- rrr


@pytest.mark.parametrize(
    "M, H, N, r, lam, m",
    [
        (1, 1, 1, 0, F(1, 2), 2),  # main branch, odd: (4 - 0 - 1)/8 + 1/8
        (2, 2, 2, 0, F(3, 2), 1),  # main branch, even: (16 - 0 - 4)/8
        (3, 1, 3, 0, F(3, 2), 2),  # main branch, odd: (12 - 0 - 1)/8 + 1/8
        (4, 2, 3, 1, F(4), 1),  # main branch, even, M != N: (42 - 1 - 9)/8
        (1, 2, 5, 0, F(1), 1),  # M+H < N+r: (HM - Hr + Nr)/2
        (5, 2, 1, 0, F(1), 1),  # N+H < M+r: (HN - Hr + Mr)/2
        (2, 8, 2, 1, F(2), 1),  # H+r > M+N: MN/2
    ],
)
def test_rrr_branches(M, H, N, r, lam, m):
    assert rrr(M, H, N, r) == (lam, m)


def test_rrr_full_rank_hidden_is_regular_count():
    # r = H = min: identifiable up to GL(H); lam = H(M + N - H)/2 (manifold dimension / 2)
    for M, N in itertools.product(range(1, 7), repeat=2):
        for H in range(1, min(M, N) + 1):
            assert rrr(M, H, N, H) == (F(H * (M + N - H), 2), 1)


# ---------------------------------------------------------------- simple models


@pytest.mark.parametrize("d", [0, 1, 2, 7, 100])
def test_regular(d):
    assert regular(d) == (F(d, 2), 1)


@pytest.mark.parametrize(
    "k, h, lam, m",
    [
        ((1, 2), None, F(1, 4), 1),
        ((1, 1), None, F(1, 2), 2),
        ((1, 3), None, F(1, 6), 1),
        ((2, 2, 2), None, F(1, 4), 3),
        ((1, 0), None, F(1, 2), 1),  # k_i = 0 coordinates are ignored
        ((1, 1, 1), None, F(1, 2), 3),  # regular in 3 dims would be 3/2: product, not sum
        ((1, 2), (0, 1), F(1, 2), 2),  # (0+1)/2 = (1+1)/4
        ((1, 2), (1, 0), F(1, 4), 1),  # min(2/2, 1/4)
        ((1, 3), (0, 2), F(1, 2), 2),  # min(1/2, 3/6)
        ((2, 3), (3, 1), F(1, 3), 1),  # min(4/4, 2/6)
    ],
)
def test_normal_crossing(k, h, lam, m):
    assert normal_crossing(k, h) == (lam, m)


@pytest.mark.parametrize("d, k, lam", [(1, 1, F(1, 2)), (3, 1, F(3, 2)), (2, 2, F(1, 2)), (5, 3, F(5, 6))])
def test_power_norm(d, k, lam):
    assert power_norm(d, k) == (lam, 1)


def test_power_norm_k1_is_regular():
    for d in range(1, 10):
        assert power_norm(d, 1) == regular(d)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "widths, r",
    [
        ([3, 2, 3], 3),  # rank > min width
        ([1, 1], 2),
        ([3, 0, 3], 0),  # non-positive width
        ([3, -1, 3], 0),
        ([3, 2, 3], -1),  # negative rank
        ([3], 0),  # too few widths
        ([], 0),
    ],
)
def test_dln_bad_input(widths, r):
    with pytest.raises(ValueError):
        dln(widths, r)


def test_dln_rank_error_message():
    with pytest.raises(ValueError, match="rank"):
        dln([4, 2, 4], 3)
    with pytest.raises(ValueError, match="positive"):
        dln([4, 0, 4], 0)


def test_bad_input_other():
    with pytest.raises(ValueError):
        rrr(3, 2, 3, 3)
    with pytest.raises(ValueError):
        rrr(0, 2, 3, 0)
    with pytest.raises(ValueError):
        normal_crossing((0, 0))
    with pytest.raises(ValueError):
        normal_crossing((1, 2), (0,))
    with pytest.raises(ValueError):
        normal_crossing((1, -1))
    with pytest.raises(ValueError):
        power_norm(3, 0)
    with pytest.raises(ValueError):
        regular(-1)
    with pytest.raises(TypeError):
        dln([3, 2.5, 3], 0)
    with pytest.raises(TypeError):
        dln_num_params([3, "2"])
