"""The benchmark figure's x placement: near parameter counts are drawn apart, never far from their count."""

from __future__ import annotations

import math

from lcc_lens.bench.figure import SPREAD, _side_by_side


def test_points_are_apart_and_stay_close_to_their_counts():
    counts = [17280, 8704, 8704, 17280, 0, 0, 8704, 9216, 921600, 8640, 967680]
    xs = _side_by_side(counts)
    gaps = [abs(math.log(a / b)) for i, a in enumerate(xs) for b in xs[i + 1 :]]
    assert min(gaps) >= 0.99 * math.log(SPREAD)
    assert xs[0] == 17280 and xs[1] == 8704 and xs[8] == 921600  # the first of a count is exact
    for n, x in zip(counts, xs, strict=True):
        assert x >= 1.0
        assert abs(math.log(x / max(1, n))) <= len(counts) * math.log(SPREAD)
