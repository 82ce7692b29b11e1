"""The post-hoc report: stages, figures, a self-contained HTML page."""
from devinterp.report.build import Report, build_report

__all__ = ["Report", "build_report"]
