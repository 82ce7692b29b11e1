"""Stage detection on a real (shortened) induction run: the bump is a type-A stage."""
import pytest

from devinterp.store import metric_series, read_metrics
from devinterp.training.summary import loss_drop_step
from devinterp.cli.train import compose_train_config, run
from devinterp.transitions import detect_transitions


@pytest.mark.slow(seconds=70)
def test_induction_bump_is_inside_a_type_a_stage(tmp_path):
    overrides = ["steps=600", "checkpoints.log=30", "checkpoints.linear=15", "task.eval_size=128",
                 "callbacks=[loss,induction,llc]", "callbacks.llc.schedule.checkpoint_stride=3", "callbacks.llc.num_chains=2",
                 "callbacks.llc.step_size=1e-3", "callbacks.llc.num_draws=50",  # explicit (calibration has its own
                 # tests): cheap chains; the LLC rises ~8x through the bump, far beyond 50 draws' spread
                 "progress=false", f"run_dir={tmp_path / 'run'}"]
    result = run(compose_train_config(overrides), overrides)
    metrics = read_metrics(result.run_dir)
    stages = detect_transitions(metrics, llc="llc/mean", loss="eval/loss", llc_std="llc/std")

    drop = loss_drop_step(metric_series(metrics, "eval/loss_repeated"))
    matching = metric_series(metrics, "induction/prefix_matching_max")
    jump = int(matching[matching > (matching.iloc[0] + matching.max()) / 2].index[0])
    assert drop is not None
    containing = stages[(stages.start_step <= drop) & (drop <= stages.end_step)]
    assert list(containing["type"]) == ["A"], stages.to_string()
    stage = containing.iloc[0]
    assert stage.start_step <= jump <= stage.end_step
    assert stage.llc_end > stage.llc_start and stage.loss_end < stage.loss_start
