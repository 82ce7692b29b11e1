"""The run store: atomic writes, the run directory layout, the long-format metrics table."""
from devinterp.store.metrics import MetricsWriter, metric_series, read_metrics
from devinterp.store.run_dir import read_status, write_status

__all__ = ["MetricsWriter", "read_metrics", "metric_series", "read_status", "write_status"]
