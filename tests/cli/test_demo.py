"""`make demo`'s own logic (the runs themselves are the trainer's and the report's, tested there)."""
from pathlib import Path

import pandas as pd

from devinterp.cli.demo import DEMO_RUNS, DemoRun, stages_by_type
from devinterp.cli.train import compose_train_config
from devinterp.training.schedule import checkpoint_schedule
from devinterp.transitions.adaptive import AdaptiveSettings


def test_demo_runs_compose():
    for label, overrides in DEMO_RUNS.items():
        assert compose_train_config(overrides).steps > 0, label


def test_demo_llc_budgets_are_the_strides_they_replaced():
    """The adaptive LLC of each demo run costs what every 9th (induction) / every 4th (grokking) checkpoint
    did, and no more."""
    for label, stride in (("induction", 9), ("grokking", 4)):
        cfg = compose_train_config(DEMO_RUNS[label])
        steps = checkpoint_schedule(cfg.steps, cfg.checkpoints.log, cfg.checkpoints.linear)
        settings = AdaptiveSettings(**cfg.callbacks.llc.schedule.adaptive)
        assert settings.max_estimates(len(steps)) == len({*steps[::stride], steps[-1]}), label


def test_stages_by_type_names_each_run_and_stage():
    def demo(label, types):
        stages = pd.DataFrame({"start_step": range(len(types)), "end_step": range(1, len(types) + 1), "type": types})
        return DemoRun(label, "", stages, [], Path("report/index.html"))

    found = stages_by_type([demo("induction", ["other", "A"]), demo("grokking", ["A", "B"])])
    assert found == {"A": ["induction stage 2 (steps 1-2)", "grokking stage 1 (steps 0-1)"],
                     "B": ["grokking stage 2 (steps 1-2)"]}
    assert stages_by_type([demo("induction", ["other"])]) == {"A": [], "B": []}
