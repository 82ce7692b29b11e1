"""Transition detection: developmental stages from LLC / loss curves and essential dynamics.

Conventions shared by every module: training steps are integers >= 0 and every smoothing or
distance "in log-step" uses x = ln(step + 1) (natural log).

- `detect_transitions` (detect.py): stages with types A / B / other from a metrics table.
- `transition_signals` (signals.py): supporting events (loss bumps/drops, score jumps).
- `essential_dynamics` (essential_dynamics.py): PCA of model outputs across checkpoints and the
  turning points / cusps of the smoothed trajectory.
- `stage_movers` (movers.py): the metrics that move most across each stage.
- `mark_robustness` (robustness.py): stages that do not reappear in other LLC series or seeds are fragile.
- `remeasured_tables`, `boundary_ranges` (replicates.py): how far a table's boundaries move when the curve
  is measured again.
- adaptive.py: which checkpoints to measure so that the stage table comes out as if all were.
- smoothing.py (GP in log-step), segments.py (critical points), metrics.py (table layouts),
  synthetic.py (runs with known boundaries for tests and benchmarks).
"""
from devinterp.transitions.detect import detect_transitions, smoothed_curve
from devinterp.transitions.essential_dynamics import EssentialDynamics, essential_dynamics
from devinterp.transitions.movers import MOVER_METRICS, Mover, describe_movers, stage_movers
from devinterp.transitions.robustness import StageRobustness, mark_chain_spread, mark_robustness, stage_robustness
from devinterp.transitions.signals import transition_signals

__all__ = [
    "EssentialDynamics", "MOVER_METRICS", "Mover", "StageRobustness", "describe_movers", "detect_transitions",
    "essential_dynamics", "mark_chain_spread", "mark_robustness", "smoothed_curve", "stage_movers", "stage_robustness",
    "transition_signals",
]
