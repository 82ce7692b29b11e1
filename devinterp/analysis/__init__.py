"""Post-hoc analysis of saved checkpoints (`devinterp-analyze`)."""
from devinterp.analysis.executors import ExecutorConfig, ExecutorName
from devinterp.analysis.posthoc import AnalysisResult, analyze, load_run_data

__all__ = ["analyze", "AnalysisResult", "ExecutorConfig", "ExecutorName", "load_run_data"]
