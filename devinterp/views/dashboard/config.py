"""What the dashboard serves, where, and how often it polls."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DashboardConfig:
    """Dashboard settings; `interval` and `stale_after` are in seconds."""

    runs_dir: Path = Path("runs")
    host: str = "127.0.0.1"
    port: int = 8050
    interval: float = 2.0  # how often the page polls for new points
    stale_after: float = 600.0  # a "training" status older than this is shown as stale
