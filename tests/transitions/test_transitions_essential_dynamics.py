"""essential_dynamics on synthetic trajectories with a known kink."""
import numpy as np
import pytest

from devinterp.transitions import EssentialDynamics, essential_dynamics
from devinterp.transitions.smoothing import log_step
from devinterp.transitions.synthetic import checkpoint_steps

TOL_LOG = 0.3  # |ln(found+1) - ln(true+1)|


def kinked_trajectory(seed: int, kink_step: int = 200, dim: int = 200, noise: float = 0.3):
    """Piecewise linear in x = ln(step+1): A -> B (step 0..kink) then B -> C (kink..2000), in R^dim."""
    steps = checkpoint_steps()
    rng = np.random.default_rng(seed)
    a, b, c = 3.0 * rng.standard_normal((3, dim))
    x, kx = log_step(steps), log_step(kink_step)
    u = np.clip(x / kx, 0, 1)[:, None]
    v = np.clip((x - kx) / (x[-1] - kx), 0, 1)[:, None]
    clean = a + u * (b - a) + v * (c - b)
    return steps, clean + noise * rng.standard_normal(clean.shape)


@pytest.mark.parametrize("kink", [60, 200, 700])
def test_kink_is_found(kink):
    for seed in range(3):
        steps, out = kinked_trajectory(seed, kink_step=kink)
        ed = essential_dynamics(out, steps)
        assert isinstance(ed, EssentialDynamics)
        err = np.abs(log_step(ed.boundary_steps) - log_step(kink))
        assert len(ed.boundary_steps) == 1 and err[0] <= TOL_LOG, (kink, seed, ed.boundary_steps)
        assert len(ed.cusps) >= 1
        assert ed.explained_variance_ratio[:2].sum() > 0.9  # two legs span ~2 dimensions


def test_straight_line_has_no_boundary():
    steps = checkpoint_steps()
    for seed in range(5):
        rng = np.random.default_rng(seed)
        a, b = 3.0 * rng.standard_normal((2, 200))
        t = (log_step(steps) / log_step(steps[-1]))[:, None]
        out = a + t * (b - a) + 0.3 * rng.standard_normal((len(steps), 200))
        ed = essential_dynamics(out, steps)
        assert len(ed.boundary_steps) == 0, ed.boundary_steps


def test_shapes_order_and_determinism():
    steps, out = kinked_trajectory(0)
    perm = np.random.default_rng(9).permutation(len(steps))
    ed = essential_dynamics(out, steps, n_components=3)
    ed_perm = essential_dynamics(out[perm], steps[perm], n_components=3)  # row order does not matter
    assert ed.projections.shape == (len(steps), 3) and ed.components.shape == (3, out.shape[1])
    assert ed.smoothed.shape == ed.velocity.shape == (len(ed.grid_log_steps), 3)
    assert ed.smoothed_at_checkpoints().shape == (len(steps), 3)
    assert np.all(np.diff(ed.steps) > 0)
    assert np.all(np.diff(ed.explained_variance_ratio) <= 0) and ed.explained_variance_ratio.sum() <= 1
    np.testing.assert_allclose(np.linalg.norm(ed.components, axis=1), 1.0)
    np.testing.assert_allclose(ed.projections, ed_perm.projections, atol=1e-9)
    np.testing.assert_array_equal(ed.boundary_steps, ed_perm.boundary_steps)
    again = essential_dynamics(out, steps, n_components=3)
    np.testing.assert_array_equal(ed.projections, again.projections)
    np.testing.assert_array_equal(ed.boundary_steps, again.boundary_steps)


def test_input_validation():
    steps, out = kinked_trajectory(0)
    with pytest.raises(ValueError, match="2-D"):
        essential_dynamics(out[0], steps)
    with pytest.raises(ValueError, match="one entry per row"):
        essential_dynamics(out, steps[:-1])
    with pytest.raises(ValueError, match="distinct"):
        essential_dynamics(out, np.r_[steps[:-1], steps[0]])
    with pytest.raises(ValueError, match="NaN"):
        bad = out.copy()
        bad[3, 3] = np.nan
        essential_dynamics(bad, steps)
    with pytest.raises(ValueError, match="bandwidth"):
        essential_dynamics(out, steps, bandwidth=0.0)
    with pytest.raises(ValueError, match="at least 5"):
        essential_dynamics(out[:4], steps[:4])
