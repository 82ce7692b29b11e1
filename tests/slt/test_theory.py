import pytest

from devinterp.slt.theory import learning_coefficient_dln, learning_coefficient_rrr


@pytest.mark.parametrize(
    "shape, rank, expected",
    [((5, 3, 5), 0, 6.5), ((4, 3, 8), 0, 6.0), ((8, 3, 4), 0, 6.0), ((3, 8, 4), 0, 6.0)],
)
def test_rrr_known_values(shape, rank, expected):
    assert learning_coefficient_rrr(*shape, rank) == expected
    assert learning_coefficient_dln(shape, rank) == expected


def test_dln_two_layers_is_rrr():
    for M in range(1, 7):
        for H in range(1, 7):
            for N in range(1, 7):
                for r in range(min(M, H, N) + 1):
                    assert learning_coefficient_dln([M, H, N], r) == pytest.approx(learning_coefficient_rrr(M, H, N, r))


def test_dln_regular_cases():
    # one layer: a plain linear map, regular, λ = d/2
    assert learning_coefficient_dln([3, 4], 0) == 6.0
    # every width equal to the true rank r: λ = r²/2, half the dimension of the product matrix
    assert learning_coefficient_dln([2, 2, 2], 2) == 2.0
    assert learning_coefficient_dln([3, 3, 3, 3], 3) == 4.5


def test_dln_is_at_most_half_the_dimension_and_grows_with_rank():
    widths = [3, 2, 2, 3]
    dimension = sum(a * b for a, b in zip(widths, widths[1:]))
    values = [learning_coefficient_dln(widths, r) for r in range(3)]
    assert all(v <= dimension / 2 for v in values)
    assert values == sorted(values) and len(set(values)) == 3


def test_dln_deeper_network_matches_hand_computation():
    # widths (2,2,2,2), r=1: Δ = (1,1,1,1), Σ = first 2 indices (ℓ=1)? max Σ Δ = 1 is not < min Σᶜ Δ = 1,
    # so Σ grows to all 4 indices, ℓ = 3, S = 4, M = 2, a = 1:
    # λ = (-1 + 1·4)/2 + 1·2/12 - (3·2/4)(4/3)² + ½·6 = 1.5 + 1/6 - 8/3 + 3 = 2
    assert learning_coefficient_dln([2, 2, 2, 2], 1) == pytest.approx(2.0)


@pytest.mark.parametrize("widths, rank", [([3, 2], 3), ([0, 2], 0), ([2, 2, 2], -1)])
def test_invalid_arguments(widths, rank):
    with pytest.raises(ValueError):
        learning_coefficient_dln(widths, rank)
