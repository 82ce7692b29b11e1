"""The post-hoc report: stages, figures, a self-contained HTML page (`devinterp-report`, devinterp.cli.report).

    build.py    build_report: the run's LLC series, its stages and their robustness, figures, HTML
    series.py   the LLC series of a run (one per settings hash) and which one is primary
    figures.py  the report's figures (matplotlib)
"""
from devinterp.views.report.build import Report, build_report, format_stages

__all__ = ["Report", "build_report", "format_stages"]
