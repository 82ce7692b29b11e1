"""Re-measured stage tables: how far boundaries move under the curve's own noise."""
import numpy as np
import pandas as pd

from devinterp.transitions import detect_transitions
from devinterp.transitions.replicates import boundary_ranges, remeasured_tables
from devinterp.transitions.synthetic import make_scenario


def curve_and_table(noise: float, seed: int):
    run = make_scenario("A-B-A", llc_noise=noise, seed=seed)
    steps = [int(s) for s in run.steps]
    curve = pd.DataFrame({"value": run.llc, "std": run.llc_std}, index=pd.Index(steps, name="step"))
    return steps, curve, detect_transitions(curve, llc="value", loss=None, llc_std="std")


def test_boundaries_move_more_when_the_curve_is_noisier():
    widths = {}
    for noise in (0.1, 0.6):
        steps, curve, table = curve_and_table(noise, seed=2)
        tables = remeasured_tables(curve, 20, np.random.default_rng(0), llc="value", llc_std="std")
        assert len(tables) == 20
        ranges = boundary_ranges(table, tables, steps)
        assert len(ranges) == len(table) - 1
        for (lo, hi), boundary in zip(ranges, table["end_step"][:-1]):
            assert lo - 1 <= steps.index(int(boundary)) <= hi + 1  # the table's own boundary is among them
        widths[noise] = sum(hi - lo for lo, hi in ranges)
    assert widths[0.1] <= 4 < widths[0.6]


def test_without_alike_replicates_the_range_is_the_boundary_itself():
    steps, _, table = curve_and_table(0.3, seed=0)
    other = table.assign(type=["other"] * len(table))
    ranges = boundary_ranges(table, [other], steps)
    assert ranges == [(steps.index(int(b)), steps.index(int(b))) for b in table["end_step"][:-1]]


def test_seeded_replicates_repeat():
    _, curve, _ = curve_and_table(0.3, seed=1)
    first = remeasured_tables(curve, 3, np.random.default_rng(5), llc="value", llc_std="std")
    again = remeasured_tables(curve, 3, np.random.default_rng(5), llc="value", llc_std="std")
    for a, b in zip(first, again):
        pd.testing.assert_frame_equal(a.drop(columns="evidence"), b.drop(columns="evidence"))
