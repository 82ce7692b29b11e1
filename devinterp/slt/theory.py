"""Closed-form learning coefficients used as ground truth for the LLC estimator.

- Reduced-rank regression (Aoyagi & Watanabe 2005): f(x) = B A x with input dimension M,
  hidden width H, output dimension N, realised by a true matrix of rank r.
- Deep linear networks (Aoyagi 2024): f(x) = W_L ... W_1 x with widths H_1 (input), ..., H_{L+1}
  (output) and true product of rank r. For two layers it coincides with reduced-rank regression.

Both assume a regression model with Gaussian noise and an input distribution with a positive
definite covariance; the learning coefficient does not depend on the noise scale.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations


def learning_coefficient_rrr(input_dim: int, hidden_dim: int, output_dim: int, rank: int) -> float:
    """Learning coefficient of reduced-rank regression (Aoyagi & Watanabe 2005).

    `input_dim` = M, `hidden_dim` = H, `output_dim` = N, `rank` = r (0 <= r <= min(M, H, N)).
    """
    M, H, N, r = input_dim, hidden_dim, output_dim, rank
    _check_rank([M, H, N], r)
    if N + r <= M + H and M + r <= N + H and H + r <= M + N:
        numerator = 2 * (H + r) * (M + N) - (M - N) ** 2 - (H + r) ** 2
        if (M + H + N + r) % 2 == 1:
            numerator += 1
        return numerator / 8
    if M + H < N + r:
        return (H * M - H * r + N * r) / 2
    if N + H < M + r:
        return (H * N - H * r + M * r) / 2
    return M * N / 2  # M + N < H + r


def learning_coefficient_dln(widths: Sequence[int], rank: int) -> float:
    """Learning coefficient of a deep linear network (Aoyagi 2024, Theorem 1).

    `widths` = (H_1, ..., H_{L+1}): input width, hidden widths, output width (L >= 1 layers).
    `rank` = r: the rank of the true (data-generating) product matrix, at most min(widths).

    With Delta_j = H_j - r, the index set Sigma (|Sigma| = l + 1, l >= 1) is the shortest prefix of the
    indices sorted by Delta with max_Sigma Delta < min_{not Sigma} Delta, sum_Sigma Delta >= l * max_Sigma Delta
    and sum_Sigma Delta < l * min_{not Sigma} Delta (the minimum over an empty set is +inf). Then, with
    S = sum_Sigma Delta, M = ceil(S / l) and a = S - (M - 1) l:

        lambda = (-r^2 + r (H_1 + H_{L+1})) / 2 + a (l - a) / (4 l) - l (l - 1) / 4 * (S / l)^2
                 + 1/2 * sum_{i < j in Sigma} Delta_i Delta_j.

    For one layer (a plain linear map, a regular model) this returns H_1 * H_2 / 2.
    """
    widths = [int(w) for w in widths]
    if len(widths) < 2:
        raise ValueError(f"widths must list at least input and output width, got {widths}")
    _check_rank(widths, rank)
    if len(widths) == 2:
        return widths[0] * widths[1] / 2
    deltas = sorted(w - rank for w in widths)
    for size in range(2, len(deltas) + 1):
        inside, outside = deltas[:size], deltas[size:]
        ell = size - 1
        min_outside = min(outside) if outside else math.inf
        total = sum(inside)
        if max(inside) < min_outside and total >= ell * max(inside) and total < ell * min_outside:
            break
    else:  # pragma: no cover - the full set always satisfies the conditions
        raise AssertionError(f"no index set found for widths={widths}, rank={rank}")
    m = math.ceil(total / ell)
    a = total - (m - 1) * ell
    pairs = sum(di * dj for di, dj in combinations(inside, 2))
    value = (
        (-rank**2 + rank * (widths[0] + widths[-1])) / 2
        + a * (ell - a) / (4 * ell)
        - ell * (ell - 1) / 4 * (total / ell) ** 2
        + pairs / 2
    )
    return float(value)


def _check_rank(widths: Sequence[int], rank: int) -> None:
    if min(widths) < 1:
        raise ValueError(f"widths must be positive, got {list(widths)}")
    if not 0 <= rank <= min(widths):
        raise ValueError(f"rank={rank} must lie in [0, min(widths)={min(widths)}]")
