import pandas as pd

from devinterp.store.atomic import atomic_write_json
from devinterp.store.metrics import MetricsWriter, metric_series, read_metrics


def test_metrics_round_trip_and_dedup(tmp_path):
    writer = MetricsWriter(tmp_path, flush_every=3)
    writer.add(0, {"a": 1.0, "b": 2.0})
    writer.add(1, {"a": 3.0})  # third row: flushes
    writer.add(1, {"a": 4.0})  # a re-computed row (as after a resume) wins
    writer.flush()
    frame = read_metrics(tmp_path)
    assert list(frame.columns) == ["step", "name", "value", "callback", "settings"]
    assert set(frame["callback"]) == {"train"}
    assert len(frame) == 3
    assert metric_series(frame, "a").to_dict() == {0: 1.0, 1: 4.0}
    # pandas reads the dataset directly too
    assert len(pd.read_parquet(tmp_path / "metrics.parquet")) == 4


def test_unflushed_rows_are_not_visible_and_partial_files_are_ignored(tmp_path):
    writer = MetricsWriter(tmp_path, flush_every=100)
    writer.add(0, {"a": 1.0})
    writer.flush()
    writer.add(1, {"a": 2.0})  # not flushed: lost in a crash, never half-written
    (tmp_path / "metrics.parquet" / ".tmp-part-x.parquet").write_bytes(b"garbage")
    assert read_metrics(tmp_path)["step"].tolist() == [0]


def test_read_metrics_of_empty_run(tmp_path):
    assert read_metrics(tmp_path).empty


def test_atomic_write_leaves_no_temporaries(tmp_path):
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    atomic_write_json(tmp_path / "x.json", {"a": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
    assert (tmp_path / "x.json").read_text().strip().endswith("}")
