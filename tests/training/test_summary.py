"""The time split the demo prints: callbacks as multiples of the training time."""
from devinterp.training.summary import format_time_split


def test_time_split_gives_each_callback_as_a_multiple_of_training():
    line = format_time_split(40.0, 2000, {"loss": 10.0, "llc": 90.0})
    assert line.startswith("Time: training 40.0 s (50.0 steps/s); callbacks 100.0 s = 2.50x training:")
    assert "loss 10.0 s (0.25x)" in line and "llc 90.0 s (2.25x)" in line
    assert format_time_split(40.0, 2000, {}) == "Time: training 40.0 s (50.0 steps/s)."
    followed = format_time_split(40.0, 2000, {"loss": 10.0}, follower_lag=3.5)
    assert "in a follower process beside training" in followed and "done 3.5 s after training" in followed
